//! Helpers shared by the test suites: GPU gating, golden files, random inputs, error
//! measures. Part of the library so integration tests and benches use one definition.

use crate::backend::cuda::CudaBackend;
use crate::error::Result;
use crate::tensor::Tensor;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Whether GPU tests must run (`GLIP_REQUIRE_GPU=1`): then a missing device is a failure.
pub fn gpu_required() -> bool {
    std::env::var("GLIP_REQUIRE_GPU").is_ok_and(|v| v == "1")
}

/// The CUDA device for a kernel test: a real GPU when one is usable (and the kernels were
/// compiled), otherwise the emulated device, which runs the same kernels through the same
/// wrappers on the CPU. Prints which one (`device: GPU …` / `device: emulated …`).
/// `GLIP_DEVICE=emu` forces the emulated device; under `GLIP_REQUIRE_GPU=1` a missing GPU
/// panics, which fails the test: that is what the GPU check script relies on.
/// Always `Some` (the Option is kept so callers read as before).
pub fn cuda_or_skip(test: &str) -> Option<CudaBackend> {
    Some(cuda_device(test))
}

/// See [`cuda_or_skip`].
pub fn cuda_device(test: &str) -> CudaBackend {
    let forced_emu = std::env::var("GLIP_DEVICE").is_ok_and(|v| v == "emu");
    let why = if forced_emu {
        "GLIP_DEVICE=emu".to_string()
    } else if !crate::kernels::COMPILED {
        "kernels not compiled for a GPU in this build (no nvcc at build time)".to_string()
    } else {
        match CudaBackend::new(0) {
            Ok(be) => {
                println!(
                    "device: GPU {} ({test})",
                    be.name().unwrap_or_else(|_| "?".into())
                );
                return be;
            }
            Err(e) => e.to_string(),
        }
    };
    if gpu_required() {
        panic!("{test}: GLIP_REQUIRE_GPU=1 but no usable CUDA device: {why}");
    }
    println!("device: emulated ({test}: {why})");
    CudaBackend::emulated()
}

/// Whether a kernel test runs on the emulated device: it then uses reduced shapes (the
/// emulator runs every launch six times on one core).
pub fn reduced(be: &CudaBackend) -> bool {
    be.is_emulated()
}

/// The repository's test data directory.
pub fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testdata")
}

/// A golden file's tensors by name, every float upcast to f32 (integers kept).
pub fn load_golden(name: &str) -> Result<HashMap<String, Tensor>> {
    crate::weights::read_safetensors_all(
        &testdata()
            .join("golden")
            .join(format!("{name}.safetensors")),
    )
}

/// A small deterministic PRNG (xorshift64*) so tests need no extra crate.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.uniform()
    }
    /// Approximately standard normal (Box-Muller).
    pub fn normal(&mut self) -> f32 {
        let u1 = self.uniform().max(1e-7);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
    }
    pub fn normal_vec(&mut self, n: usize, std: f32) -> Vec<f32> {
        (0..n).map(|_| self.normal() * std).collect()
    }
    pub fn uniform_vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.range(lo, hi)).collect()
    }
}

/// max |got - want|.
pub fn max_abs_diff(got: &[f32], want: &[f32]) -> f32 {
    got.iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
}

/// Normalised squared error ‖got − want‖² / ‖want‖² (design.md: f32 ≤ 1e-6, f16 ≤ 1e-4).
pub fn nse(got: &[f32], want: &[f32]) -> f64 {
    let num: f64 = got
        .iter()
        .zip(want)
        .map(|(a, b)| ((a - b) as f64).powi(2))
        .sum();
    let den: f64 = want.iter().map(|b| (*b as f64).powi(2)).sum();
    num / den.max(f64::MIN_POSITIVE)
}

/// Assert |got − want| ≤ atol + rtol·|want| elementwise, with NaN failing; reports the worst.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: length {} vs {}",
        got.len(),
        want.len()
    );
    let mut worst = (0usize, 0.0f32);
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        let d = (a - b).abs();
        if d.is_nan() || d > atol + rtol * b.abs() {
            panic!("{what}: element {i}: got {a}, want {b} (|diff| {d} > {atol} + {rtol}*|want|)");
        }
        if d > worst.1 {
            worst = (i, d);
        }
    }
    println!(
        "{what}: max |diff| {:.3e} at {} over {} elements",
        worst.1,
        worst.0,
        got.len()
    );
}
