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
    vec![("elementwise", elementwise as CheckFn), ("logits", logits as CheckFn), ("nms", nms as CheckFn)]
}

pub fn run_all(be: &CudaBackend) -> Vec<Check> {
    checks()
        .into_iter()
        .map(|(family, f)| {
            f(be).unwrap_or_else(|e| Check { family, passed: false, figure: format!("error: {e}") })
        })
        .collect()
}

fn elementwise(be: &CudaBackend) -> Result<Check> {
    let n = 100_003;
    let mut rng = Rng::new(7);
    let a: Vec<f16> = rng.normal_vec(n, 3.0).into_iter().map(f16::from_f32).collect();
    let b: Vec<f16> = rng.normal_vec(n, 3.0).into_iter().map(f16::from_f32).collect();
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
    Ok(Check { family: "elementwise", passed, figure: format!("max |diff| {d:.1e} (tol 0: same rounding)") })
}

/// Dot-product logits (P3-sized level, T = 256, NCHW features) and the phrase MEAN, against
/// the CPU twin: NSE ≤ 1e-4 (f16 features) and ≤ 1e-8 for the f32 aggregation.
fn logits(be: &CudaBackend) -> Result<Check> {
    use crate::backend::cpu::logits::{self as cl, PositiveMapCsr, VisualLayout};
    use crate::backend::cuda::logits::{self as gl, DevicePositiveMap, DotShape};
    let (n, t, dim, labels) = (16_800, 256, 256, 80);
    let mut rng = Rng::new(17);
    let vis: Vec<f16> = rng.normal_vec(dim * n, 1.0).into_iter().map(f16::from_f32).collect();
    let proj = rng.normal_vec(t * dim, 0.06);
    let tok_bias = rng.normal_vec(t, 1.0);
    let visf: Vec<f32> = vis.iter().map(|v| v.to_f32()).collect();
    let want = cl::dot_logits(&visf, VisualLayout::ChannelMajor, &proj, &tok_bias, 1, n, t, dim, 1.0, cl::LOGIT_CLAMP)?;
    let mut out = be.filled_f32(n * t, f32::NAN)?;
    let s = DotShape { batch: 1, n_pos: n, n_txt: t, dim, channel_major: true, out_rows: n, out_row0: 0 };
    gl::dot_f16(be, &s, &be.upload_f16(&vis)?, &be.upload_f32(&proj)?, &be.upload_f32(&tok_bias)?, 1.0, cl::LOGIT_CLAMP, &mut out)?;
    let got = be.download(&out)?;
    let e_dot = crate::testing::nse(&got, &want);
    let map: Vec<(u32, Vec<usize>)> = (1..=labels as u32).map(|l| (l, vec![3 * l as usize - 2, 3 * l as usize - 1])).collect();
    let csr = PositiveMapCsr::new(&map, labels, t)?;
    let want_s = cl::phrase_mean(&want, n, t, &csr, labels)?;
    let dmap = DevicePositiveMap::upload(be, &csr, labels, t)?;
    let mut sc = be.filled_f32(n * labels, f32::NAN)?;
    gl::phrase_mean_f32(be, n, &be.upload_f32(&want)?, &dmap, &mut sc)?;
    let got_s = be.download(&sc)?;
    let e_mean = crate::testing::nse(&got_s, &want_s);
    let finite = got.iter().chain(&got_s).all(|v| !v.is_nan());
    let passed = finite && e_dot <= 1e-4 && e_mean <= 1e-8;
    Ok(Check { family: "logits", passed, figure: format!("dot nse {e_dot:.1e} (tol 1e-4), phrase mean nse {e_mean:.1e} (tol 1e-8)") })
}

/// ATSS post-processing of 2 images at GLIP-T sizes against the CPU twin: kept sets, scores
/// and boxes equal.
fn nms(be: &CudaBackend) -> Result<Check> {
    use crate::backend::cpu::nms::{self as cn, AtssConfig, Level, PackedInputs};
    use crate::backend::cuda::nms::{self as gn, NmsOutputs, NmsWorkspace};
    let levels: Vec<Level> = [(100, 168, 8), (50, 84, 16), (25, 42, 32), (13, 21, 64), (7, 11, 128)]
        .iter()
        .map(|&(h, w, stride)| Level { h, w, stride })
        .collect();
    let (batch, labels) = (2, 80);
    let n = cn::level_offsets(&levels)[levels.len()];
    let mut rng = Rng::new(19);
    let scores = rng.uniform_vec(batch * n * labels, 0.0, 0.08);
    // Centerness 0 and dw = dh = 0 make sigmoid and exp exact on both sides, so the kernels
    // must reproduce the twin bit for bit, ties included.
    let ctr = vec![0.0; batch * n];
    let mut reg = rng.normal_vec(batch * n * 4, 0.8);
    reg.chunks_mut(4).for_each(|r| {
        r[2] = 0.0;
        r[3] = 0.0;
    });
    let hw = [(800.0, 1333.0), (784.0, 1293.0)];
    let cfg = AtssConfig::default();
    let packed = PackedInputs { scores: &scores, centerness: &ctr, bbox_reg: &reg, num_labels: labels, levels: &levels };
    let want = cn::postprocess(&packed, &hw, &cfg)?;
    let p = gn::params(&levels, labels, &hw, &cfg)?;
    let mut ws = NmsWorkspace::new(be, &p)?;
    let mut out = NmsOutputs::new(be, &p)?;
    gn::atss_postprocess(be, &p, &be.upload_f32(&scores)?, &be.upload_f32(&ctr)?, &be.upload_f32(&reg)?, &mut ws, &mut out)?;
    let got = out.download(be, &p, &levels)?;
    let key = |v: &Vec<cn::Candidate>| v.iter().map(|d| (d.level, d.anchor, d.label)).collect::<Vec<_>>();
    let same = got.len() == want.len() && got.iter().zip(&want).all(|(g, w)| key(g) == key(w));
    let mut d = 0f32;
    for (g, w) in got.iter().zip(&want) {
        for (x, y) in g.iter().zip(w) {
            d = d.max((x.score - y.score).abs());
            d = d.max(max_abs_diff(&x.bbox, &y.bbox) * 1e-2);
        }
    }
    let counts: Vec<usize> = got.iter().map(|v| v.len()).collect();
    Ok(Check {
        family: "nms",
        passed: same && d == 0.0,
        figure: format!("kept sets {} ({counts:?} detections), max |score diff| / (|box diff| px / 100) {d:.1e} (tol 0)", if same { "equal" } else { "DIFFER" }),
    })
}
