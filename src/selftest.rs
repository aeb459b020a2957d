//! Device-vs-CPU self-checks of every kernel family, run by `glip doctor` on a GPU (at
//! GLIP-T's sizes) or on the emulated device (`glip doctor --emulate`, at reduced sizes: it
//! runs every launch six times on one core). Each check draws random inputs, runs the CUDA
//! kernel and its CPU twin, and reports the error figure against the family's tolerance.

use crate::backend::cpu;
use crate::backend::cuda::{self, CudaBackend};
use crate::backend::Backend;
use crate::error::Result;
use crate::tensor::Tensor;
use crate::testing::{max_abs_diff, Rng};
use half::f16;

pub struct Check {
    pub family: &'static str,
    pub passed: bool,
    /// What was measured, e.g. "max |diff| 0.0e0 (tol 0)".
    pub figure: String,
}

pub type CheckFn = fn(&CudaBackend) -> Result<Check>;

/// (family, check) for every family that has a self-check.
pub fn checks() -> Vec<(&'static str, CheckFn)> {
    vec![
        ("elementwise", elementwise as CheckFn),
        ("gemm", gemm as CheckFn),
        ("bi_attn", bi_attn as CheckFn),
        ("deform_conv", deform_conv as CheckFn),
        ("group_norm", group_norm as CheckFn),
        ("logits", logits as CheckFn),
        ("nms", nms as CheckFn),
        ("layout", layout as CheckFn),
        ("reduce", reduce as CheckFn),
        ("attention", attention as CheckFn),
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

/// Whether `be` is the emulated device, which runs the reduced shapes.
fn reduced(be: &CudaBackend) -> bool {
    be.is_emulated()
}

/// The five FPN levels (h, w, stride) of GLIP-T at 800×1344, or of a 200×336 image on the
/// emulated device.
fn fpn_levels(be: &CudaBackend) -> [(usize, usize, usize); 5] {
    if reduced(be) {
        [
            (25, 42, 8),
            (13, 21, 16),
            (7, 11, 32),
            (4, 6, 64),
            (2, 3, 128),
        ]
    } else {
        [
            (100, 168, 8),
            (50, 84, 16),
            (25, 42, 32),
            (13, 21, 64),
            (7, 11, 128),
        ]
    }
}

/// The tensor-core GEMM with bias (kernels/gemm.cu) against the CPU GEMM, both B layouts:
/// NSE ≤ 1e-6 (one f16 rounding of an f32 sum).
fn gemm(be: &CudaBackend) -> Result<Check> {
    let (m, n, k) = if reduced(be) {
        (100, 72, 96)
    } else {
        (22_400, 256, 256)
    };
    let mut rng = Rng::new(5);
    let (ah, af) = f16_rounded(rng.normal_vec(m * k, 1.0));
    let (bh, bf) = f16_rounded(rng.normal_vec(n * k, 0.1));
    let bias = rng.normal_vec(n, 1.0);
    let (da, db, dbias) = (
        be.upload_f16(&ah)?,
        be.upload_f16(&bh)?,
        be.upload_f32(&bias)?,
    );
    let mut worst = 0f64;
    let mut finite = true;
    for bt in [true, false] {
        let bm = if bt {
            cpu::gemm::Mat::transposed(&bf, k)
        } else {
            cpu::gemm::Mat::rows(&bf, n)
        };
        let mut want = vec![0f32; m * n];
        if !cpu::gemm::gemm(
            m,
            n,
            k,
            cpu::gemm::Mat::rows(&af, k),
            bm,
            &mut want,
            1.0,
            false,
        ) {
            return Err(crate::error::Error::shape(
                "selftest gemm",
                "CPU GEMM shape",
            ));
        }
        want.iter_mut()
            .enumerate()
            .for_each(|(i, v)| *v += bias[i % n]);
        let mut c = be.filled_f16(m * n, f16::NAN)?;
        cuda::gemm::gemm_bias_f16(be, m, n, k, &da, &db, bt, &dbias, &mut c)?;
        let got: Vec<f32> = be.download(&c)?.iter().map(|v| v.to_f32()).collect();
        finite &= got.iter().all(|v| v.is_finite());
        worst = worst.max(crate::testing::nse(&got, &want));
    }
    Ok(Check {
        family: "gemm",
        passed: finite && worst <= 1e-6,
        figure: format!("nse {worst:.1e} over nt and nn (tol 1e-6), {m}x{n}x{k}"),
    })
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

/// bi_attn at GLIP-T's image size (22 400 positions, 8 heads of 256; emulated: 329
/// positions, 2 heads) with 64 tokens, 50 real.
fn bi_attn(be: &CudaBackend) -> Result<Check> {
    use crate::backend::cpu::bi_attn::BiAttnShape;
    use crate::testing::nse;
    let n_img = fpn_levels(be).iter().map(|&(h, w, _)| h * w).sum();
    let s = BiAttnShape {
        batch: 1,
        heads: if reduced(be) { 2 } else { 8 },
        head_dim: 256,
        n_img,
        n_txt: 64,
    };
    let mut rng = Rng::new(11);
    let h = |v: Vec<f32>| -> Vec<f16> { v.into_iter().map(f16::from_f32).collect() };
    let f = |v: &[f16]| -> Vec<f32> { v.iter().map(|x| x.to_f32()).collect() };
    let (q, k) = (
        h(rng.normal_vec(s.img_len(), 0.125)),
        h(rng.normal_vec(s.txt_len(), 1.0)),
    );
    let (vl, vv) = (
        h(rng.normal_vec(s.txt_len(), 1.0)),
        h(rng.normal_vec(s.img_len(), 1.0)),
    );
    let mask: Vec<i32> = (0..s.n_txt).map(|j| i32::from(j < 50)).collect();
    let (want_v, want_t) = cpu::bi_attn::bi_attn(&s, &f(&q), &f(&k), &f(&vl), &f(&vv), &mask)?;
    let (dq, dk, dvl, dvv) = (
        be.upload_f16(&q)?,
        be.upload_f16(&k)?,
        be.upload_f16(&vl)?,
        be.upload_f16(&vv)?,
    );
    let dm = be.upload_i32(&mask)?;
    let mut ws =
        cuda::bi_attn::BiAttnWorkspace::new(be, &s, cuda::bi_attn::default_img_splits(s.n_img))?;
    let mut ov = be.filled_f16(s.img_len(), f16::NAN)?;
    let mut ot = be.filled_f16(s.txt_len(), f16::NAN)?;
    cuda::bi_attn::bi_attn_f16(be, &s, &dq, &dk, &dvl, &dvv, &dm, &mut ws, &mut ov, &mut ot)?;
    let (gv, gt) = (f(&be.download(&ov)?), f(&be.download(&ot)?));
    let (ev, et) = (nse(&gv, &want_v), nse(&gt, &want_t));
    let finite = gv.iter().chain(&gt).all(|x| x.is_finite());
    let passed = finite && ev <= 1e-4 && et <= 1e-4;
    Ok(Check {
        family: "bi_attn",
        passed,
        figure: format!("nse o_v {ev:.1e}, o_t {et:.1e} (tol 1e-4)"),
    })
}

fn f16_rounded(v: Vec<f32>) -> (Vec<f16>, Vec<f32>) {
    let h: Vec<f16> = v.into_iter().map(f16::from_f32).collect();
    let f = h.iter().map(|x| x.to_f32()).collect();
    (h, f)
}

/// NSE ≤ 1e-4 (f16 storage) and no unwritten (NaN-poisoned) output.
fn f16_verdict(family: &'static str, got: &[f32], want: &[f32]) -> Check {
    let e = crate::testing::nse(got, want);
    let d = max_abs_diff(got, want);
    let passed = got.iter().all(|v| v.is_finite()) && e <= 1e-4;
    Check {
        family,
        passed,
        figure: format!("nse {e:.2e} (tol 1e-4), max |diff| {d:.2e}"),
    }
}

/// Stride 1, stride 2 and GLIP's coarser-level offset reuse, batch 2, 64 channels
/// (emulated: 16 channels at a quarter of the area).
fn deform_conv(be: &CudaBackend) -> Result<Check> {
    use cpu::deform_conv::{modulated_deform_conv3x3, DeformConvShape};
    let mut rng = Rng::new(11);
    let (mut got_all, mut want_all) = (Vec::new(), Vec::new());
    let (c, h, w) = if reduced(be) {
        (16, 20, 28)
    } else {
        (64, 40, 56)
    };
    for s in [
        DeformConvShape::new(2, c, c, h, w, 1),
        DeformConvShape::new(2, c, c, h, w, 2),
        DeformConvShape::new(2, c, c, h / 2, w / 2, 1).with_offset_source(h, w),
    ] {
        let (lx, lo, lm, lw, ly) = s.required_lens();
        let (xh, xf) = f16_rounded(rng.normal_vec(lx, 1.0));
        let (oh, of) = f16_rounded(rng.normal_vec(lo, 2.5));
        let (mh, mf) = f16_rounded(rng.uniform_vec(lm, 0.0, 1.0));
        let (wh, wf) = f16_rounded(rng.normal_vec(lw, 1.0 / 24.0));
        let bias = rng.normal_vec(s.out_channels, 0.5);
        want_all.extend(modulated_deform_conv3x3(
            &s,
            &xf,
            &of,
            &mf,
            &wf,
            Some(&bias),
        )?);
        let mut y = be.filled_f16(ly, f16::NAN)?;
        cuda::deform_conv::deform_conv_fwd_f16(
            be,
            &s,
            &be.upload_f16(&xh)?,
            &be.upload_f16(&oh)?,
            &be.upload_f16(&mh)?,
            &be.upload_f16(&wh)?,
            &be.upload_f32(&bias)?,
            &mut y,
        )?;
        got_all.extend(be.download(&y)?.iter().map(|v| v.to_f32()));
    }
    Ok(f16_verdict("deform_conv", &got_all, &want_all))
}

/// The five FPN level sizes in one call, batch 2, 256 channels, 16 groups.
fn group_norm(be: &CudaBackend) -> Result<Check> {
    use cpu::group_norm::{group_norm_levels, GnLevel, GroupNormShape};
    let s = GroupNormShape::glip(2, 256);
    let mut levels = Vec::new();
    let mut n = 0;
    for (h, w, _) in fpn_levels(be) {
        levels.push(GnLevel {
            offset: n,
            hw: h * w,
        });
        n += 2 * 256 * h * w;
    }
    let mut rng = Rng::new(12);
    let (xh, xf) = f16_rounded(
        rng.normal_vec(n, 2.0)
            .into_iter()
            .map(|v| v + 1.5)
            .collect(),
    );
    let (gw, gb) = (rng.normal_vec(256, 1.0), rng.normal_vec(256, 0.5));
    let mut want = vec![0.0f32; n];
    group_norm_levels(&s, &levels, &xf, &gw, &gb, &mut want)?;
    let mut ws = be.filled_f32(cuda::group_norm::workspace_len(&s, &levels), f32::NAN)?;
    let mut y = be.filled_f16(n, f16::NAN)?;
    cuda::group_norm::group_norm_levels_f16(
        be,
        &s,
        &levels,
        &be.upload_f16(&xh)?,
        &be.upload_f32(&gw)?,
        &be.upload_f32(&gb)?,
        &mut ws,
        &mut y,
    )?;
    let got: Vec<f32> = be.download(&y)?.iter().map(|v| v.to_f32()).collect();
    Ok(f16_verdict("group_norm", &got, &want))
}

/// Dot-product logits (P3-sized level, T = 256, NCHW features) and the phrase MEAN, against
/// the CPU twin: NSE ≤ 1e-4 (f16 features) and ≤ 1e-8 for the f32 aggregation.
fn logits(be: &CudaBackend) -> Result<Check> {
    use crate::backend::cpu::logits::{self as cl, PositiveMapCsr, VisualLayout};
    use crate::backend::cuda::logits::{self as gl, DevicePositiveMap, DotShape};
    let (h, w, _) = fpn_levels(be)[0];
    let (n, t, dim, labels) = (h * w, 256, 256, 80);
    let mut rng = Rng::new(17);
    let vis: Vec<f16> = rng
        .normal_vec(dim * n, 1.0)
        .into_iter()
        .map(f16::from_f32)
        .collect();
    let proj = rng.normal_vec(t * dim, 0.06);
    let tok_bias = rng.normal_vec(t, 1.0);
    let visf: Vec<f32> = vis.iter().map(|v| v.to_f32()).collect();
    let want = cl::dot_logits(
        &visf,
        VisualLayout::ChannelMajor,
        &proj,
        &tok_bias,
        1,
        n,
        t,
        dim,
        1.0,
        cl::LOGIT_CLAMP,
    )?;
    let mut out = be.filled_f32(n * t, f32::NAN)?;
    let s = DotShape {
        batch: 1,
        n_pos: n,
        n_txt: t,
        dim,
        channel_major: true,
        out_rows: n,
        out_row0: 0,
    };
    gl::dot(
        be,
        &s,
        &be.upload_f16(&vis)?,
        &be.upload_f32(&proj)?,
        &be.upload_f32(&tok_bias)?,
        1.0,
        cl::LOGIT_CLAMP,
        &mut out,
    )?;
    let got = be.download(&out)?;
    let e_dot = crate::testing::nse(&got, &want);
    let map: Vec<(u32, Vec<usize>)> = (1..=labels as u32)
        .map(|l| (l, vec![3 * l as usize - 2, 3 * l as usize - 1]))
        .collect();
    let csr = PositiveMapCsr::new(&map, labels, t)?;
    let want_s = cl::phrase_mean(&want, n, t, &csr, labels)?;
    let dmap = DevicePositiveMap::upload(be, &csr, labels, t)?;
    let mut sc = be.filled_f32(n * labels, f32::NAN)?;
    gl::phrase_mean_f32(be, n, &be.upload_f32(&want)?, &dmap, &mut sc)?;
    let got_s = be.download(&sc)?;
    let e_mean = crate::testing::nse(&got_s, &want_s);
    let finite = got.iter().chain(&got_s).all(|v| !v.is_nan());
    let passed = finite && e_dot <= 1e-4 && e_mean <= 1e-8;
    Ok(Check {
        family: "logits",
        passed,
        figure: format!("dot nse {e_dot:.1e} (tol 1e-4), phrase mean nse {e_mean:.1e} (tol 1e-8)"),
    })
}

/// ATSS post-processing of 2 images at GLIP-T sizes (emulated: 200×336) against the CPU
/// twin: kept sets, scores and boxes equal.
fn nms(be: &CudaBackend) -> Result<Check> {
    use crate::backend::cpu::nms::{self as cn, AtssConfig, Level, PackedInputs};
    use crate::backend::cuda::nms::{self as gn, NmsOutputs, NmsWorkspace};
    let levels: Vec<Level> = fpn_levels(be)
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
    let (h0, w0) = (levels[0].h as f32 * 8.0, levels[0].w as f32 * 8.0);
    let hw = [(h0, w0 - 3.0), (h0 - 16.0, w0 - 43.0)];
    let cfg = AtssConfig::default();
    let packed = PackedInputs {
        scores: &scores,
        centerness: &ctr,
        bbox_reg: &reg,
        num_labels: labels,
        levels: &levels,
    };
    let want = cn::postprocess(&packed, &hw, &cfg)?;
    let p = gn::params(&levels, labels, &hw, &cfg)?;
    let mut ws = NmsWorkspace::new(be, &p)?;
    let mut out = NmsOutputs::new(be, &p)?;
    gn::atss_postprocess(
        be,
        &p,
        &be.upload_f32(&scores)?,
        &be.upload_f32(&ctr)?,
        &be.upload_f32(&reg)?,
        &mut ws,
        &mut out,
    )?;
    let got = out.download(be, &p, &levels)?;
    let key = |v: &Vec<cn::Candidate>| {
        v.iter()
            .map(|d| (d.level, d.anchor, d.label))
            .collect::<Vec<_>>()
    };
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

/// An f16-rounded random host tensor (what both backends then see).
fn rounded(rng: &mut Rng, shape: &[usize], std: f32, mean: f32) -> Result<Tensor> {
    let n = shape.iter().product();
    let v = rng
        .normal_vec(n, std)
        .into_iter()
        .map(|x| x + mean)
        .collect();
    Tensor::from_f32(shape, v)?.to_f16()?.to_f32()
}

/// The worst NSE of `op` on the device (f16 in, `params` f32) against the CPU backend.
fn op_nse(
    be: &CudaBackend,
    inputs: &[&Tensor],
    params: &[&Tensor],
    op: impl Fn(&dyn Backend, &[Tensor], &[Tensor]) -> Result<Tensor>,
) -> Result<(f64, bool)> {
    let dev_in = inputs
        .iter()
        .map(|t| be.upload(&t.to_f16()?))
        .collect::<Result<Vec<_>>>()?;
    let dev_par = params
        .iter()
        .map(|t| be.upload(t))
        .collect::<Result<Vec<_>>>()?;
    let host_in = inputs
        .iter()
        .map(|t| t.try_clone())
        .collect::<Result<Vec<_>>>()?;
    let host_par = params
        .iter()
        .map(|t| t.try_clone())
        .collect::<Result<Vec<_>>>()?;
    let got = be.to_host(&op(be, &dev_in, &dev_par)?)?.to_f32()?;
    let want = op(&cpu::CpuBackend, &host_in, &host_par)?;
    let (g, w) = (got.f32s()?, want.f32s()?);
    let finite = g.iter().all(|v| v.is_finite()) && got.shape() == want.shape();
    Ok((crate::testing::nse(g, w), finite))
}

/// The gathers of Swin and the FPN at stage-1 sizes (emulated: a 100×100 token map): the
/// shifted window partition and merge, patch merging, bilinear and nearest upsampling,
/// packing the pyramid into tokens, im2col under a 3×3 stride-2 conv. Gathers copy, so the
/// NSE is 0 but for bilinear (tol 1e-6) and the conv's GEMM (tol 1e-5).
fn layout(be: &CudaBackend) -> Result<Check> {
    let (h, w, c) = if reduced(be) {
        (23, 30, 8)
    } else {
        (200, 336, 96)
    };
    let mut rng = Rng::new(13);
    let x = rounded(&mut rng, &[1, h, w, c], 1.0, 0.0)?;
    let planes = rounded(&mut rng, &[1, c, h / 2, w / 2], 1.0, 0.0)?;
    let mut worst = 0.0f64;
    let mut finite = true;
    let mut note = |r: (f64, bool)| {
        worst = worst.max(r.0);
        finite &= r.1;
    };
    note(op_nse(be, &[&x], &[], |b, i, _| {
        let win = b.window_partition(&i[0], 7, 3)?;
        b.window_merge_add(b.duplicate(&i[0])?, &win, 7, 3)
    })?);
    note(op_nse(be, &[&x], &[], |b, i, _| {
        b.patch_merge_gather(&i[0])
    })?);
    note(op_nse(be, &[&planes], &[], |b, i, _| {
        b.upsample_bilinear_ac(&i[0], h, w)
    })?);
    note(op_nse(be, &[&planes], &[], |b, i, _| {
        let up = b.upsample_nearest(&i[0], h, w)?;
        b.levels_to_tokens(&[&up, &i[0]])
    })?);
    // im2col through a conv2d (with the tensor-core GEMM): the FPN's 3×3 stride-2 conv.
    let wc = rounded(&mut rng, &[16, c, 3, 3], 0.2, 0.0)?;
    let bc = rounded(&mut rng, &[16], 0.5, 0.0)?;
    let (conv, conv_ok) = op_nse(be, &[&planes, &wc], &[&bc], |b, i, p| {
        b.conv2d(&i[0], &i[1], Some(&p[0]), 2, 1)
    })?;
    let passed = finite && conv_ok && worst <= 1e-6 && conv <= 1e-5;
    let worst = worst.max(conv);
    Ok(Check {
        family: "layout",
        passed,
        figure: format!(
            "worst nse {worst:.1e} (gathers copy; bilinear 1e-6, conv 1e-5), {h}x{w}x{c}"
        ),
    })
}

/// LayerNorm over BERT-width rows and the average pool over an FPN level.
fn reduce(be: &CudaBackend) -> Result<Check> {
    let (rows, hw) = if reduced(be) {
        (40, (25, 42))
    } else {
        (4096, (100, 168))
    };
    let mut rng = Rng::new(14);
    let x = rounded(&mut rng, &[rows, 768], 2.0, 3.0)?;
    let (wt, bs) = (
        rounded(&mut rng, &[768], 1.0, 0.0)?,
        rounded(&mut rng, &[768], 0.5, 0.0)?,
    );
    let (ln, ln_ok) = op_nse(be, &[&x], &[&wt, &bs], |b, i, p| {
        b.layer_norm(&i[0], &p[0], &p[1], 1e-12)
    })?;
    let planes = rounded(&mut rng, &[2, 256, hw.0, hw.1], 1.0, 0.5)?;
    let (ap, ap_ok) = op_nse(be, &[&planes], &[], |b, i, _| b.avg_pool(&i[0]))?;
    Ok(Check {
        family: "reduce",
        passed: ln_ok && ap_ok && ln <= 1e-5 && ap <= 1e-5,
        figure: format!("nse layer_norm {ln:.1e}, avg_pool {ap:.1e} (tol 1e-5)"),
    })
}

/// BERT self-attention at GLIP's 256 tokens (12 heads of 64, 200 real; emulated: 64 tokens,
/// 2 heads) with the ±50000 clamp, and shifted Swin window attention (3 heads of 32 over
/// 7×7 windows of a stage-1 map; emulated: 4 windows).
fn attention(be: &CudaBackend) -> Result<Check> {
    use crate::backend::ops::{SelfAttention, WindowGrid, GLIP_CLAMP};
    let (t, heads, real, map) = if reduced(be) {
        (64, 2, 50, (9, 11))
    } else {
        (256, 12, 200, (200, 336))
    };
    let mut rng = Rng::new(15);
    let h = heads * 64;
    let (q, k, v) = (
        rounded(&mut rng, &[1, t, h], 1.0, 0.0)?,
        rounded(&mut rng, &[1, t, h], 1.0, 0.0)?,
        rounded(&mut rng, &[1, t, h], 1.0, 0.0)?,
    );
    let mask = Tensor::from_i32(&[1, t], (0..t).map(|j| i32::from(j < real)).collect())?;
    let spec = SelfAttention {
        heads,
        clamp: Some(GLIP_CLAMP),
    };
    let (sa, sa_ok) = op_nse(be, &[&q, &k, &v], &[&mask], |b, i, p| {
        b.self_attention(&i[0], &i[1], &i[2], &p[0], spec)
    })?;
    let g = WindowGrid::new(map.0, map.1, 7);
    let qkv = rounded(&mut rng, &[g.num_windows(), 49, 3 * 96], 1.0, 0.0)?;
    let bias = rounded(&mut rng, &[3, 49, 49], 1.0, 0.0)?;
    let ids = Tensor::from_i32(&[g.num_windows(), 49], g.region_ids(3))?;
    let (wa, wa_ok) = op_nse(be, &[&qkv, &bias], &[&ids], |b, i, p| {
        b.window_attention(&i[0], &i[1], Some(&p[0]), 3)
    })?;
    Ok(Check {
        family: "attention",
        passed: sa_ok && wa_ok && sa <= 1e-5 && wa <= 1e-5,
        figure: format!(
            "nse self {sa:.1e} (T {t}, {heads} heads), window {wa:.1e} ({} windows) (tol 1e-5)",
            g.num_windows()
        ),
    })
}
