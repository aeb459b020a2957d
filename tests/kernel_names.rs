//! CPU-only checks of the kernel table build.rs generates: every kernel symbol the Rust
//! launch wrappers name exists in kernels/, names follow `glip_<family>_<op>_<dtype>`, and
//! (when nvcc was present at build time) every family has an embedded fatbin.

use glip_rt::kernels;
use std::path::Path;

#[test]
fn every_launched_kernel_exists_in_the_sources() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/backend/cuda");
    let mut used = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if !path.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let mut rest = text.as_str();
        while let Some(i) = rest.find("names::") {
            rest = &rest[i + 7..];
            let c: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            used.push((path.file_name().unwrap().to_string_lossy().into_owned(), c));
        }
    }
    assert!(
        !used.is_empty(),
        "no kernel launches found in src/backend/cuda"
    );
    for (file, c) in used {
        let sym = c.to_lowercase();
        assert!(
            kernels::has_kernel(&sym),
            "{file} launches `{sym}`, which no kernels/*.cu defines"
        );
    }
}

#[test]
fn kernel_names_follow_the_convention() {
    assert!(!kernels::KERNELS.is_empty());
    for (family, name) in kernels::KERNELS {
        let prefix = format!("glip_{family}_");
        assert!(
            name.starts_with(&prefix),
            "kernel `{name}` in {family}.cu must start with `{prefix}`"
        );
        let dtype_ok = ["_f16", "_f32", "_i32", "_u8"]
            .iter()
            .any(|d| name.contains(d));
        assert!(dtype_ok, "kernel `{name}` must name its dtype");
    }
}

#[test]
fn compiled_builds_embed_every_family() {
    if !kernels::COMPILED {
        println!("skipped: kernels not compiled in this build (no nvcc); CPU-only build");
        return;
    }
    for family in kernels::families() {
        let fb = kernels::fatbin(family).unwrap_or_else(|| panic!("family {family} has no fatbin"));
        // A fatbin starts with the magic 0xBA55ED50 (little endian).
        assert!(
            fb.len() > 16 && fb[..4] == [0x50, 0xED, 0x55, 0xBA],
            "{family}: not a fatbin"
        );
    }
    for arch in ["75", "80", "86", "89", "90"] {
        if std::env::var("GLIP_CUDA_ARCHS").is_err() {
            assert!(
                kernels::ARCHS.split(',').any(|a| a == arch),
                "sm_{arch} missing from {}",
                kernels::ARCHS
            );
        }
    }
}
