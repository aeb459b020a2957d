//! The kernels build.rs compiled and embedded: fatbins per family, and the symbol table
//! generated from the sources (present even in a CPU-only build).

include!(concat!(env!("OUT_DIR"), "/kernels_gen.rs"));

/// The embedded fatbin of a kernel family, if the build compiled kernels.
pub fn fatbin(family: &str) -> Option<&'static [u8]> {
    FATBINS.iter().find(|(f, _)| *f == family).map(|(_, b)| *b)
}

/// Families present in kernels/ (from the sources).
pub fn families() -> Vec<&'static str> {
    let mut v: Vec<&'static str> = KERNELS.iter().map(|(f, _)| *f).collect();
    v.dedup();
    v
}

/// Whether a kernel symbol exists in the sources.
pub fn has_kernel(name: &str) -> bool {
    KERNELS.iter().any(|(_, n)| *n == name)
}
