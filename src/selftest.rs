//! GPU-vs-CPU self-checks of every compiled kernel family, run by `glip doctor` on a
//! machine with a GPU. Each check draws random inputs, runs the CUDA kernel and its CPU
//! twin, and reports the error figure against the family's tolerance.

use crate::backend::cpu;
use crate::backend::cuda::{self, CudaBackend};
use crate::error::Result;
use crate::testing::{max_abs_diff, Rng};
use half::f16;

pub struct Check {
    pub family: &'static str,
    pub passed: bool,
    /// What was measured, e.g. "max |diff| 0.0e0 (tol 0)".
    pub figure: String,
}

type CheckFn = fn(&CudaBackend) -> Result<Check>;

/// (family, check) for every family that has a self-check.
pub fn checks() -> Vec<(&'static str, CheckFn)> {
    vec![("elementwise", elementwise as CheckFn)]
}

pub fn run_all(be: &CudaBackend) -> Vec<Check> {
    checks()
        .into_iter()
        .map(|(family, f)| {
            f(be).unwrap_or_else(|e| Check {
                family,
                passed: false,
                figure: format!("error: {e}"),
            })
        })
        .collect()
}

fn elementwise(be: &CudaBackend) -> Result<Check> {
    let n = 100_003;
    let mut rng = Rng::new(7);
    let a: Vec<f16> = rng
        .normal_vec(n, 3.0)
        .into_iter()
        .map(f16::from_f32)
        .collect();
    let b: Vec<f16> = rng
        .normal_vec(n, 3.0)
        .into_iter()
        .map(f16::from_f32)
        .collect();
    let want = cpu::elementwise::axpby_f16(0.75, &a, -1.25, &b)?;
    let (da, db) = (be.upload_f16(&a)?, be.upload_f16(&b)?);
    let mut y = be.filled_f16(n, f16::NAN)?;
    cuda::elementwise::axpby_f16(be, 0.75, &da, -1.25, &db, &mut y, n)?;
    let got = be.download(&y)?;
    let g: Vec<f32> = got.iter().map(|v| v.to_f32()).collect();
    let w: Vec<f32> = want.iter().map(|v| v.to_f32()).collect();
    let d = max_abs_diff(&g, &w);
    // Both round the same f32 value once: results must be bitwise equal.
    let passed = g.iter().all(|v| !v.is_nan()) && d == 0.0;
    Ok(Check {
        family: "elementwise",
        passed,
        figure: format!("max |diff| {d:.1e} (tol 0: same rounding)"),
    })
}
