//! `glip doctor`: what this binary was built with, what the machine has, and whether every
//! compiled kernel family agrees with its CPU twin on this GPU, or (`--emulate`) on the
//! emulated CUDA device, which needs no GPU.

use super::crate_result::Result;
use glip_rt::backend::cuda::{self, CudaBackend};
use glip_rt::kernels;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Device ordinal to check (all devices are listed).
    #[arg(long, default_value_t = 0)]
    pub device: usize,
    /// Run the kernel self-checks on the emulated CUDA device (the same kernels compiled as
    /// host C++, with bounds, barrier, race and uninitialised-shared-memory checks) at
    /// reduced sizes, instead of on a GPU. Needs no GPU and no nvcc.
    #[arg(long)]
    pub emulate: bool,
    /// Fail (exit 1) when no usable GPU is found, instead of reporting a CPU-only machine
    /// (also GLIP_REQUIRE_GPU=1, the gate the GPU check runs under).
    #[arg(long)]
    pub require_gpu: bool,
}

/// The verdict of a machine without a usable GPU: fine for a CPU machine, a failure when
/// a GPU is required.
fn no_gpu(out: &mut super::out::Out, required: bool) -> Result {
    Ok(if required {
        outln!(
            out,
            "result: FAILED: no usable GPU, and one is required (--require-gpu or GLIP_REQUIRE_GPU=1)"
        );
        ExitCode::FAILURE
    } else {
        outln!(out, "result: CPU backend only");
        ExitCode::SUCCESS
    })
}

pub fn run(args: Args) -> Result {
    let mut out = super::out::Out::new();
    outln!(out, "glip-rt {}", env!("CARGO_PKG_VERSION"));
    if args.emulate {
        let mut be = CudaBackend::emulated();
        // The op table's rows: outputs NaN-poisoned, no CPU fallback.
        be.set_poison_outputs(true);
        be.set_fallback(false);
        outln!(
            out,
            "kernel checks on the emulated CUDA device ({} kernels compiled as host C++; every launch \
             also rerun with poisoned shared memory and four other schedules, compared bit for bit; \
             reduced sizes):",
            kernels::KERNELS.len()
        );
        return report(&mut out, &be);
    }
    outln!(out, "build:");
    if kernels::COMPILED {
        outln!(
            out,
            "  CUDA kernels: compiled ({} families: {})",
            kernels::FATBINS.len(),
            kernels::families().join(", ")
        );
        outln!(
            out,
            "  archs: SASS sm_{} + PTX compute_{}",
            kernels::ARCHS.replace(',', ", sm_"),
            newest_arch()
        );
        outln!(
            out,
            "  nvcc: {} ({})",
            kernels::NVCC_VERSION.trim(),
            kernels::NVCC_PATH
        );
        for (fam, bytes) in kernels::FATBINS {
            outln!(out, "    {fam}: {} bytes", bytes.len());
        }
    } else {
        outln!(
            out,
            "  CUDA kernels: NOT compiled (no nvcc at build time): CPU-only build"
        );
        outln!(
            out,
            "  fix: scripts/install-cuda-toolchain.sh && cargo build --release"
        );
    }
    outln!(
        out,
        "  kernel symbols in sources: {}",
        kernels::KERNELS.len()
    );
    outln!(out, "machine:");
    let require_gpu = args.require_gpu || glip_rt::testing::gpu_required();
    if !cuda::driver_present() {
        outln!(
            out,
            "  CUDA driver: not found (libcuda.so not loadable); no GPU checks run"
        );
        return no_gpu(&mut out, require_gpu);
    }
    match cuda::driver_version() {
        Ok((a, b)) => outln!(out, "  CUDA driver: {a}.{b}"),
        Err(e) => outln!(out, "  CUDA driver: version unknown ({e})"),
    }
    let n = match cuda::device_count() {
        Ok(n) => n,
        Err(e) => {
            outln!(out, "  devices: none ({e}); no GPU checks run");
            return no_gpu(&mut out, require_gpu);
        }
    };
    for i in 0..n {
        match CudaBackend::new(i) {
            Ok(be) => {
                let name = be.name().unwrap_or_else(|e| format!("? ({e})"));
                let cc = be
                    .compute_capability()
                    .map(|(a, b)| format!("{a}.{b}"))
                    .unwrap_or_else(|e| format!("? ({e})"));
                let mem = be
                    .total_mem()
                    .map(|m| format!("{:.1} GiB", m as f64 / (1u64 << 30) as f64))
                    .unwrap_or_default();
                outln!(out, "  device {i}: {name}, compute capability {cc}, {mem}");
            }
            Err(e) => outln!(out, "  device {i}: cannot open ({e})"),
        }
    }
    if !kernels::COMPILED {
        outln!(
            out,
            "result: a GPU is present but this binary has no kernels; rebuild with nvcc"
        );
        return Ok(ExitCode::FAILURE);
    }
    let mut be = CudaBackend::new(args.device)?;
    be.set_poison_outputs(true);
    be.set_fallback(false);
    outln!(
        out,
        "kernel checks on device {} (GPU vs CPU twin, random inputs):",
        args.device
    );
    report(&mut out, &be)
}

/// Runs every self-check on `be`, prints one line per family and the verdict.
fn report(out: &mut super::out::Out, be: &CudaBackend) -> Result {
    let mut ok = true;
    for (family, check) in glip_rt::selftest::checks() {
        let t0 = std::time::Instant::now();
        let c = glip_rt::selftest::run_one(be, family, check);
        outln!(
            out,
            "  {:<14} {}  {}  ({:.2} s)",
            c.family,
            if c.passed { "PASS" } else { "FAIL" },
            c.figure,
            t0.elapsed().as_secs_f64()
        );
        ok &= c.passed;
    }
    outln!(
        out,
        "result: {}",
        if ok {
            "all checks passed"
        } else {
            "SOME CHECKS FAILED"
        }
    );
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn newest_arch() -> String {
    kernels::ARCHS
        .split(',')
        .filter_map(|a| a.parse::<u32>().ok())
        .max()
        .map(|a| a.to_string())
        .unwrap_or_default()
}
