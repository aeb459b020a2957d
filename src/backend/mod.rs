//! Backends: the CPU reference (f32 arithmetic) and CUDA (f16 storage, f32 accumulation),
//! both implementing the op interface of [`ops`].
//!
//! Every op exists on the CPU; the CPU twin of a kernel family is the reference its parity
//! test compares against, and the fallback when there is no GPU.

pub mod atss;
pub mod clock;
pub mod cpu;
pub mod cuda;
pub mod executor;
pub mod frames;
pub mod ops;
pub mod optable;
pub mod plan;

pub use ops::{Backend, SelfAttention};

use crate::error::{Error, Result};
use std::sync::Arc;

/// A backend a model can own and share across threads.
pub type SharedBackend = Arc<dyn Backend + Send + Sync>;

/// The host backend (the CPU twins, f32): where checkpoints and keys-only walks live.
pub fn host() -> &'static (dyn Backend + Send + Sync) {
    static HOST: cpu::CpuBackend = cpu::CpuBackend;
    &HOST
}

/// [`host`] as a backend a model can own.
pub fn host_shared() -> SharedBackend {
    Arc::new(cpu::CpuBackend)
}

/// Which device a detector (or `glip --device`) should run on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeviceChoice {
    /// CUDA device 0 when this build has kernels and a GPU answers (ops without a kernel
    /// fall back to the CPU); otherwise the CPU. Either way [`Selected::notice`] says which.
    #[default]
    Auto,
    Cpu,
    /// CUDA device `i` (an error if it is absent).
    Cuda(usize),
    /// The emulated CUDA device: the same kernels as host C++ with checks; slow, for tests.
    Emulated,
}

impl DeviceChoice {
    /// `auto`, `cpu`, `cuda`, `cuda:N` or `emu`.
    pub fn parse(s: &str) -> Result<DeviceChoice> {
        match s {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" => Ok(DeviceChoice::Cuda(0)),
            "emu" | "emulated" => Ok(DeviceChoice::Emulated),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse::<usize>().ok())
                .map(DeviceChoice::Cuda)
                .ok_or_else(|| {
                    Error::Config(format!(
                        "device `{s}`: expected auto, cpu, cuda, cuda:N or emu"
                    ))
                }),
        }
    }
}

/// The backend a [`DeviceChoice`] resolved to.
pub struct Selected {
    pub backend: SharedBackend,
    /// For `Auto`: which device was chosen and why, for the caller to say once
    /// (`Detector::device_notice`; the CLI prints it on stderr).
    pub notice: Option<String>,
}

/// Resolves a device choice. An explicit CUDA choice fails if this build has no kernels or
/// the device is absent; Auto then uses the CPU and says why. On a CUDA device, ops without
/// a kernel run on the CPU (counted) unless `allow_fallback` is false or
/// `GLIP_NO_FALLBACK=1`, when they fail naming themselves.
pub fn select(choice: DeviceChoice, allow_fallback: bool) -> Result<Selected> {
    let cuda = |mut be: cuda::CudaBackend| -> Selected {
        if !allow_fallback {
            be.set_fallback(false);
        }
        Selected {
            backend: Arc::new(be),
            notice: None,
        }
    };
    let cpu = |notice: Option<String>| Selected {
        backend: Arc::new(cpu::CpuBackend),
        notice,
    };
    let no_kernels = "this build has no CUDA kernels (nvcc was not found at build time; \
                      scripts/install-cuda-toolchain.sh, then rebuild)";
    match choice {
        DeviceChoice::Cpu => Ok(cpu(None)),
        DeviceChoice::Cuda(_) if !crate::kernels::COMPILED => {
            Err(Error::NoDevice(no_kernels.into()))
        }
        DeviceChoice::Cuda(i) => Ok(cuda(cuda::CudaBackend::new(i)?)),
        DeviceChoice::Emulated if !cuda::emu::EMULATOR_BUILT => Err(Error::NoDevice(
            "this build has no emulated CUDA device (feature `emulator`, x86-64 hosts only)".into(),
        )),
        DeviceChoice::Emulated => Ok(cuda(cuda::CudaBackend::emulated())),
        DeviceChoice::Auto => {
            if !crate::kernels::COMPILED {
                return Ok(cpu(Some(format!("running on the CPU: {no_kernels}"))));
            }
            match cuda::CudaBackend::new(0) {
                Err(e) => Ok(cpu(Some(format!("running on the CPU: {e}")))),
                Ok(be) => {
                    let name = be.name().unwrap_or_else(|_| "CUDA device 0".into());
                    let mut s = cuda(be);
                    s.notice = Some(format!("running on {name} (cuda:0)"));
                    Ok(s)
                }
            }
        }
    }
}
