//! Device-vs-CPU self-checks of every kernel family, run by `glip doctor` on a GPU or on the
//! emulated device (`glip doctor --emulate`: it runs every launch six times on one core).
//! Each family's check is its rows of the op table (backend/optable.rs): every op that family
//! runs, on the device and on the CPU backend from the same random inputs, within the row's
//! tolerance; on a GPU also the rows at GLIP-T's sizes (`optable::glip_t_rows`); and the
//! family's kernel rows (backend/cuda/kernel_rows: the wrappers' own parameters against the
//! CPU twins, at reduced sizes). The `ops` line is the whole op table.

use crate::backend::cuda::kernel_rows::{self, Scale};
use crate::backend::cuda::CudaBackend;
use crate::backend::optable::{self, Row};
use crate::error::Result;

pub struct Check {
    pub family: &'static str,
    pub passed: bool,
    /// What was measured, e.g. "op table: 5 rows of 2 ops, worst nse 1.4e-7".
    pub figure: String,
}

pub type CheckFn = fn(&CudaBackend) -> Result<Check>;

/// (family, check) for every kernel family, then `ops` (every row).
pub fn checks() -> Vec<(&'static str, CheckFn)> {
    vec![
        ("elementwise", |be| family(be, "elementwise")),
        ("gemm", |be| family(be, "gemm")),
        ("bi_attn", |be| family(be, "bi_attn")),
        ("deform_conv", |be| family(be, "deform_conv")),
        ("group_norm", |be| family(be, "group_norm")),
        ("logits", |be| family(be, "logits")),
        ("nms", |be| family(be, "nms")),
        ("layout", |be| family(be, "layout")),
        ("reduce", |be| family(be, "reduce")),
        ("attention", |be| family(be, "attention")),
        ("ops", |be| family(be, "ops")),
    ]
}

pub fn run_all(be: &CudaBackend) -> Vec<Check> {
    checks()
        .into_iter()
        .map(|(family, f)| run_one(be, family, f))
        .collect()
}

/// One check; an error (e.g. a kernel check of the emulated device) is a failed check.
pub fn run_one(be: &CudaBackend, family: &'static str, f: CheckFn) -> Check {
    f(be).unwrap_or_else(|e| Check {
        family,
        passed: false,
        figure: format!("error: {e}"),
    })
}

/// The rows of `family` (a row of "layout+gemm" belongs to both) — on a GPU with those at
/// GLIP-T's sizes — or for "ops" every CI-sized row (the GLIP-T ones ran in their families).
fn family(be: &CudaBackend, family: &'static str) -> Result<Check> {
    let mut rows = optable::rows(1)?;
    if family != "ops" && !be.is_emulated() {
        rows.extend(optable::glip_t_rows(2)?);
    }
    let rows: Vec<Row> = rows
        .into_iter()
        .filter(|r| family == "ops" || r.family.split('+').any(|f| f == family))
        .collect();
    let mut verdicts: Vec<optable::Verdict> = rows.iter().map(|r| optable::check(r, be)).collect();
    // The family's kernel rows (the wrappers' own parameters) at their reduced sizes: their
    // GLIP-T-sized twins take minutes of CPU, so those run in the op-table test on a GPU.
    if family != "ops" {
        verdicts.extend(
            kernel_rows::rows(Scale::Reduced)
                .iter()
                .filter(|r| r.family == family)
                .map(|r| kernel_rows::check(r, be)),
        );
    }
    let mut worst = 0.0f64;
    let mut failed = Vec::new();
    for v in &verdicts {
        worst = worst.max(v.nse);
        if !v.passed {
            failed.push(format!(
                "{} {}: {}",
                v.op,
                v.case,
                v.problem.clone().unwrap_or_default()
            ));
        }
    }
    let mut ops: Vec<&str> = rows.iter().map(|r| r.op).collect();
    ops.sort_unstable();
    ops.dedup();
    Ok(Check {
        family,
        passed: failed.is_empty() && !verdicts.is_empty(),
        figure: if failed.is_empty() {
            format!(
                "op table: {} rows of {} ops and {} kernel rows, worst nse {worst:.1e} (each within its row's tolerance)",
                rows.len(),
                ops.len(),
                verdicts.len() - rows.len()
            )
        } else {
            format!(
                "op table: {} of {} rows fail: {}",
                failed.len(),
                verdicts.len(),
                failed.join("; ")
            )
        },
    })
}
