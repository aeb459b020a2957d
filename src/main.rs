//! The `glip` binary.

#[macro_use]
mod cli;

use clap::Parser;

use std::process::ExitCode;

/// Bytes of large freed blocks kept for reuse: 2 GiB (what a GLIP-T frame on the CPU reuses),
/// at most an eighth of the machine's memory; GLIP_BLOCK_CACHE_MIB overrides, 0 turns it off.
const BLOCK_CACHE_DEFAULT: usize = 2 << 30;

/// The CPU backend's large op outputs are kept by size for the next frame's op of the same
/// shape instead of being unmapped and faulted in again (src/block_cache.rs).
#[global_allocator]
static ALLOC: glip_rt::block_cache::BlockCache =
    glip_rt::block_cache::BlockCache::new(BLOCK_CACHE_DEFAULT);

/// MemTotal of /proc/meminfo in bytes (None where there is none).
fn physical_memory() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib.saturating_mul(1024))
}

/// A size in units of `unit` bytes from the environment variable `name` (None when unset).
fn env_size(name: &str, unit: usize) -> Result<Option<usize>, String> {
    let Some(v) = std::env::var_os(name) else {
        return Ok(None);
    };
    v.to_str()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .map(|n| Some(n.saturating_mul(unit)))
        .ok_or_else(|| format!("{name}={v:?} is not a whole number"))
}

/// The block cache's size from GLIP_BLOCK_CACHE_MIB (else the default) and its smallest
/// block from GLIP_BLOCK_CACHE_MIN_KIB.
fn set_up_block_cache() -> Result<(), String> {
    match env_size("GLIP_BLOCK_CACHE_MIB", 1 << 20)? {
        Some(cap) => ALLOC.set_cap(cap),
        None => {
            if let Some(m) = physical_memory() {
                ALLOC.set_cap(BLOCK_CACHE_DEFAULT.min(m / 8));
            }
        }
    }
    if let Some(min) = env_size("GLIP_BLOCK_CACHE_MIN_KIB", 1 << 10)? {
        ALLOC.set_min(min);
    }
    Ok(())
}

/// What the block cache did so far (`glip bench` reports it).
pub fn block_cache_stats() -> glip_rt::block_cache::BlockCacheStats {
    ALLOC.stats()
}

/// Called by each command once its model is built: the loading buffers freed by then
/// (file contents, f16 → f32 copies) have sizes no frame asks for again, so the block cache
/// gives them back instead of holding them.
pub fn model_loaded() {
    ALLOC.flush();
}

fn main() -> ExitCode {
    if let Err(e) = set_up_block_cache() {
        say!("error: {e}");
        return ExitCode::FAILURE;
    }
    // GLIP_LOG, else RUST_LOG, as the filter (e.g. `debug`, `glip_rt=trace`).
    let var = if std::env::var_os("GLIP_LOG").is_some() {
        "GLIP_LOG"
    } else {
        "RUST_LOG"
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env(var))
        .with_writer(std::io::stderr)
        .init();
    // clap's own exit path drops a failed write of --help to stdout; route it through the
    // stdout policy instead.
    let args = match cli::Cli::try_parse() {
        Ok(a) => a,
        Err(e) => return cli::out::clap_exit(e),
    };
    match cli::run(args) {
        Ok(code) => code,
        // The reader of our results left: nothing more can be delivered, and that is theirs
        // to decide, not a failure (`glip … | head`).
        Err(glip_rt::Error::StdoutClosed) => ExitCode::SUCCESS,
        Err(e) => {
            say!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
