//! The kernel rows of the op table (backend/optable.rs): the launch wrappers' own parameters,
//! which the op interface does not reach, each against its CPU twin. Image-axis splits of
//! bi_attn, logits written level by level into one packed buffer (`out_row0`), batch-16 ATSS
//! post-processing with kept sets compared exactly, GEMM tails in m, n and k, the five GLIP-T
//! GroupNorm levels in one launch, the deformable conv reading a finer level's offsets.
//!
//! A row builds its inputs when it runs (a GLIP-T-sized row holds hundreds of MB), then runs
//! the wrapper on the device with poisoned outputs and the CPU twin on the same f16-rounded
//! values. [`Scale::Reduced`] is what the emulated device runs in CI, [`Scale::GlipT`] a GPU's
//! (800×1344 padded: 22 400 positions). [`check`] gives the op table's [`Verdict`].

mod bi_attn;
mod deform_conv;
mod elementwise;
mod gemm;
mod group_norm;
mod logits;
mod nms;

use crate::backend::cuda::CudaBackend;
use crate::backend::optable::Verdict;
use crate::error::{Error, Result};
use crate::testing::{max_abs_diff, nse};
use half::f16;

/// The sizes a row runs at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scale {
    /// Small enough for the emulated device (ragged tiles kept).
    Reduced,
    /// GLIP-T's sizes, for a GPU.
    GlipT,
}

impl Scale {
    /// Reduced on the emulated device, GLIP-T's sizes on a GPU; reduced everywhere under
    /// `GLIP_TABLE_SCALE=reduced` (compute-sanitizer's run, where every launch is slow).
    pub fn of(be: &CudaBackend) -> Scale {
        if be.is_emulated() || std::env::var("GLIP_TABLE_SCALE").is_ok_and(|v| v == "reduced") {
            Scale::Reduced
        } else {
            Scale::GlipT
        }
    }
}

/// How close one output must be to the twin's.
#[derive(Clone, Copy, Debug)]
pub struct Tol {
    /// The largest NSE (0 with `max_abs` 0: bit-exact).
    pub nse: f64,
    /// The largest |device − twin| of any element.
    pub max_abs: f32,
}

impl Tol {
    pub const EXACT: Tol = Tol {
        nse: 0.0,
        max_abs: 0.0,
    };
    pub const fn new(nse: f64, max_abs: f32) -> Tol {
        Tol { nse, max_abs }
    }
}

/// One output of a row: what the device gave, what the twin gave, and how close they must be.
pub struct Compared {
    pub name: String,
    pub device: Vec<f32>,
    pub twin: Vec<f32>,
    pub tol: Tol,
}

type RunFn = dyn Fn(&CudaBackend) -> Result<Vec<Compared>> + Send + Sync;

/// One kernel row: a launch wrapper at one shape.
pub struct KernelRow {
    /// The launch wrapper (backend/cuda/<family>.rs) the row runs.
    pub kernel: &'static str,
    /// The kernel family (kernels/<family>.cu).
    pub family: &'static str,
    /// The shape and parameters, for people.
    pub case: String,
    pub run: Box<RunFn>,
}

fn kernel_row(
    kernel: &'static str,
    family: &'static str,
    case: impl Into<String>,
    f: impl Fn(&CudaBackend) -> Result<Vec<Compared>> + Send + Sync + 'static,
) -> KernelRow {
    KernelRow {
        kernel,
        family,
        case: case.into(),
        run: Box::new(f),
    }
}

/// Every kernel row at `scale` (the same inputs for a given scale).
pub fn rows(scale: Scale) -> Vec<KernelRow> {
    let mut t = Vec::new();
    elementwise::rows(scale, &mut t);
    gemm::rows(scale, &mut t);
    bi_attn::rows(scale, &mut t);
    deform_conv::rows(scale, &mut t);
    group_norm::rows(scale, &mut t);
    logits::rows(scale, &mut t);
    nms::rows(scale, &mut t);
    t
}

/// Runs `row` on `be` and compares every output with the twin's.
pub fn check(row: &KernelRow, be: &CudaBackend) -> Verdict {
    let mut v = Verdict {
        op: row.kernel,
        family: row.family,
        case: row.case.clone(),
        nse: 0.0,
        max_abs: 0.0,
        tol: 0.0,
        passed: false,
        problem: None,
    };
    let outs = match (row.run)(be) {
        Ok(o) => o,
        Err(e) => {
            v.problem = Some(e.to_string());
            return v;
        }
    };
    let mut problems = Vec::new();
    for o in &outs {
        v.tol = v.tol.max(o.tol.nse);
        if o.device.len() != o.twin.len() {
            problems.push(format!(
                "{}: {} values, the twin gave {}",
                o.name,
                o.device.len(),
                o.twin.len()
            ));
            continue;
        }
        // A poisoned element the kernel never wrote is NaN; a twin's ±inf (an f16 overflow
        // both make) must be matched exactly.
        if o.device
            .iter()
            .zip(&o.twin)
            .any(|(d, w)| !d.is_finite() && d.to_bits() != w.to_bits())
        {
            problems.push(format!("{}: non-finite values", o.name));
            continue;
        }
        let (e, d) = finite_diff(&o.device, &o.twin);
        v.nse = v.nse.max(e);
        v.max_abs = v.max_abs.max(d);
        if e > o.tol.nse || d > o.tol.max_abs {
            problems.push(format!(
                "{}: nse {e:.2e} max |diff| {d:.2e} over tolerance (nse {:e}, max |diff| {:e})",
                o.name, o.tol.nse, o.tol.max_abs
            ));
        }
    }
    if outs.is_empty() {
        problems.push("the row compared nothing".into());
    }
    v.passed = problems.is_empty();
    if !v.passed {
        v.problem = Some(problems.join("; "));
    }
    v
}

/// NSE and max |diff| over the elements where both are finite (equal infinities excluded).
fn finite_diff(got: &[f32], want: &[f32]) -> (f64, f32) {
    if got.iter().chain(want).all(|x| x.is_finite()) {
        return (nse(got, want), max_abs_diff(got, want));
    }
    let (g, w): (Vec<f32>, Vec<f32>) = got
        .iter()
        .zip(want)
        .filter(|(a, b)| a.is_finite() && b.is_finite())
        .map(|(a, b)| (*a, *b))
        .unzip();
    (nse(&g, &w), max_abs_diff(&g, &w))
}

/// Values rounded to f16: as f16 for the device, as f32 for the twin.
fn halves(v: Vec<f32>) -> (Vec<f16>, Vec<f32>) {
    let h: Vec<f16> = v.into_iter().map(f16::from_f32).collect();
    let f = h.iter().map(|x| x.to_f32()).collect();
    (h, f)
}

fn to_f32(v: &[f16]) -> Vec<f32> {
    v.iter().map(|x| x.to_f32()).collect()
}

/// The twin's error, named as such (a device error is the wrapper's own).
fn twin<T>(r: Result<T>) -> Result<T> {
    r.map_err(|e| Error::Invalid(format!("the CPU twin: {e}")))
}
