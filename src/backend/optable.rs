//! The one table of the op interface (in the manner of ggml's test-backend-ops): each row is
//! an op of [`Backend`] at shapes that stress it (odd sizes, padded windows, T = 1 and 256,
//! batch 2), random inputs (never zeros, f16-rounded so both backends see the same values)
//! and a tolerance. [`check`] runs a row on a device backend and on the CPU backend and
//! compares; [`time`] times it (perf mode). The same rows run on the emulated device in CI
//! (tests/op_table.rs), on a GPU in scripts/gpu-check.sh and in `glip doctor`, and
//! `glip bench --ops` times them; a test fails when an op of the interface has no row.

use crate::backend::atss::{AtssConfig, Candidate, Level, PositiveMapCsr};
use crate::backend::cpu::CpuBackend;
use crate::backend::ops::{Backend, SelfAttention, WindowGrid, DEFORM_TAPS, GLIP_CLAMP};
use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};
use crate::testing::{max_abs_diff, nse, Rng};
use std::time::{Duration, Instant};

/// How an input reaches a backend.
pub enum Arg {
    /// An activation: f16 on CUDA, f32 on the CPU (same values: generated f16-rounded).
    Act(Tensor),
    /// A model parameter, through [`Backend::weight`] (CUDA: f16 matrices, f32 vectors).
    Weight(Tensor),
    /// Uploaded as it is (f32 logits and features, i32 masks and region ids).
    Upload(Tensor),
    /// Passed as the host tensor it is (token ids).
    Host(Tensor),
}

impl Arg {
    /// `x` as an f16 activation, or uploaded as f32 (the ops that take either).
    fn of(dtype: DType, x: Tensor) -> Arg {
        if dtype == DType::F16 {
            Arg::Act(x)
        } else {
            Arg::Upload(x)
        }
    }
}

/// What a row's op gives back, to compare.
pub type Outputs = Vec<Tensor>;
type RunFn = dyn Fn(&dyn Backend, &[Tensor]) -> Result<Outputs> + Send + Sync;

/// One row: an op at one shape.
pub struct Row {
    /// The [`Backend`] method.
    pub op: &'static str,
    /// The kernel family that runs it on CUDA.
    pub family: &'static str,
    /// The shape, for people.
    pub case: String,
    /// The largest NSE of any output against the CPU backend (0: bit-exact values).
    pub tol: f64,
    pub args: Vec<Arg>,
    pub run: Box<RunFn>,
}

/// A row's verdict on one backend.
#[derive(Clone, Debug)]
pub struct Verdict {
    pub op: &'static str,
    pub family: &'static str,
    pub case: String,
    /// The worst NSE over the outputs (0 when equal).
    pub nse: f64,
    pub max_abs: f32,
    pub tol: f64,
    pub passed: bool,
    /// Why it failed, when it did.
    pub problem: Option<String>,
}

/// Random values, f16-rounded, mean `mean`: what both backends see.
fn rounded(rng: &mut Rng, shape: &[usize], std: f32, mean: f32) -> Result<Tensor> {
    let n = shape.iter().product();
    let v: Vec<f32> = rng
        .normal_vec(n, std)
        .into_iter()
        .map(|x| half::f16::from_f32(x + mean).to_f32())
        .collect();
    Tensor::from_f32(shape, v)
}

/// Uniform values in [lo, hi), f16-rounded.
fn uniform(rng: &mut Rng, shape: &[usize], lo: f32, hi: f32) -> Result<Tensor> {
    let n = shape.iter().product();
    let v: Vec<f32> = rng
        .uniform_vec(n, lo, hi)
        .into_iter()
        .map(|x| half::f16::from_f32(x).to_f32())
        .collect();
    Tensor::from_f32(shape, v)
}

fn i32s(shape: &[usize], v: Vec<i32>) -> Result<Tensor> {
    Tensor::from_i32(shape, v)
}

/// The `i`th argument of a row (rows are built with as many as they read).
fn at(a: &[Tensor], i: usize) -> Result<&Tensor> {
    a.get(i)
        .ok_or_else(|| Error::Invalid(format!("op table: argument {i} missing")))
}

/// A row of one output.
fn row(
    op: &'static str,
    family: &'static str,
    case: impl Into<String>,
    tol: f64,
    args: Vec<Arg>,
    f: impl Fn(&dyn Backend, &[Tensor]) -> Result<Tensor> + Send + Sync + 'static,
) -> Row {
    rows_of(op, family, case, tol, args, move |b, a| Ok(vec![f(b, a)?]))
}

/// A row of several outputs.
fn rows_of(
    op: &'static str,
    family: &'static str,
    case: impl Into<String>,
    tol: f64,
    args: Vec<Arg>,
    f: impl Fn(&dyn Backend, &[Tensor]) -> Result<Outputs> + Send + Sync + 'static,
) -> Row {
    Row {
        op,
        family,
        case: case.into(),
        tol,
        args,
        run: Box::new(f),
    }
}

/// The detections of a batch as one tensor [Σ n, 9] (image, level, anchor, label, score,
/// box), so that kept sets compare exactly.
fn detections(kept: Vec<Vec<Candidate>>) -> Result<Tensor> {
    let mut v = Vec::new();
    for (img, c) in kept.iter().enumerate() {
        for d in c {
            v.extend_from_slice(&[
                img as f32,
                d.level as f32,
                d.anchor as f32,
                d.label as f32,
                d.score,
                d.bbox[0],
                d.bbox[1],
                d.bbox[2],
                d.bbox[3],
            ]);
        }
    }
    Tensor::from_f32(&[v.len() / 9, 9], v)
}

/// Every row of the table (the same inputs for a given `seed`).
pub fn rows(seed: u64) -> Result<Vec<Row>> {
    use Arg::{Act, Host, Upload, Weight};
    let mut r = Rng::new(seed);
    let rng = &mut r;
    let mut t: Vec<Row> = Vec::new();

    // --- transfers and parameters ---
    t.push(row(
        "upload",
        "memory",
        "[3, 5, 7] f32 round trip",
        0.0,
        vec![Host(rounded(rng, &[3, 5, 7], 1.0, 0.0)?)],
        |b, a| b.to_host(&b.upload(at(a, 0)?)?),
    ));
    t.push(row(
        "to_host",
        "memory",
        "[2, 9] f16 activation",
        0.0,
        vec![Act(rounded(rng, &[2, 9], 1.0, 0.0)?)],
        |b, a| b.to_host(at(a, 0)?),
    ));
    t.push(row(
        "weight",
        "memory",
        "[6, 10] matrix",
        0.0,
        vec![Host(rounded(rng, &[6, 10], 1.0, 0.0)?)],
        |b, a| b.weight(at(a, 0)?),
    ));

    // --- GEMMs ---
    for (m, k, n, bt) in [(37, 24, 40, true), (5, 48, 17, false)] {
        let bs = if bt { [n, k] } else { [k, n] };
        t.push(row(
            "matmul",
            "gemm",
            format!("{m}x{k} · {bs:?} transposed {bt}"),
            1e-5,
            vec![
                Act(rounded(rng, &[m, k], 1.0, 0.0)?),
                Act(rounded(rng, &bs, 0.3, 0.0)?),
            ],
            move |b, a| b.matmul(at(a, 0)?, at(a, 1)?, bt),
        ));
    }
    for bias in [true, false] {
        t.push(row(
            "linear",
            "gemm",
            format!("[2, 5, 32] -> 24, bias {bias}"),
            1e-5,
            vec![
                Act(rounded(rng, &[2, 5, 32], 1.0, 0.0)?),
                Weight(rounded(rng, &[24, 32], 0.2, 0.0)?),
                Weight(rounded(rng, &[24], 0.5, 0.0)?),
            ],
            move |b, a| b.linear(at(a, 0)?, at(a, 1)?, bias.then_some(at(a, 2)?)),
        ));
    }
    // conv2d: Swin's patch embedding, the FPN's 3×3 and stride 2, cin·k² = 45 (padded
    // columns), 1×1 head convs with one output and without bias.
    let convs: [([usize; 4], usize, usize, usize, usize, bool); 6] = [
        ([1, 3, 17, 22], 16, 4, 4, 0, true),
        ([2, 8, 9, 11], 24, 3, 1, 1, true),
        ([1, 16, 9, 11], 8, 3, 2, 1, true),
        ([2, 5, 6, 7], 8, 3, 1, 1, true),
        ([2, 32, 5, 6], 1, 1, 1, 0, true),
        ([1, 16, 4, 5], 12, 1, 1, 0, false),
    ];
    for (xs, cout, k, stride, pad, bias) in convs {
        t.push(row(
            "conv2d",
            "layout+gemm",
            format!("{xs:?} -> {cout}, {k}x{k} stride {stride} pad {pad} bias {bias}"),
            1e-5,
            vec![
                Act(rounded(rng, &xs, 1.0, 0.0)?),
                Weight(rounded(rng, &[cout, xs[1], k, k], 0.2, 0.0)?),
                Weight(rounded(rng, &[cout], 0.5, 0.0)?),
            ],
            move |b, a| {
                let bias = bias.then_some(at(a, 2)?);
                b.conv2d(at(a, 0)?, at(a, 1)?, bias, stride, pad)
            },
        ));
    }

    // --- elementwise ---
    t.push(row(
        "cast",
        "elementwise",
        "[4, 33] f32 -> f16 -> f32",
        0.0,
        vec![Upload(rounded(rng, &[4, 33], 2.0, 0.0)?)],
        |b, a| b.cast(&b.cast(at(a, 0)?, DType::F16)?, DType::F32),
    ));
    t.push(row(
        "axpby",
        "elementwise",
        "[2, 5, 32] 0.75 a - 1.25 b",
        1e-6,
        vec![
            Act(rounded(rng, &[2, 5, 32], 1.0, 0.0)?),
            Act(rounded(rng, &[2, 5, 32], 1.0, 0.0)?),
        ],
        |b, a| b.axpby(0.75, at(a, 0)?, -1.25, at(a, 1)?),
    ));
    t.push(row(
        "add",
        "elementwise",
        "[2, 5, 32]",
        1e-6,
        vec![
            Act(rounded(rng, &[2, 5, 32], 1.0, 0.0)?),
            Act(rounded(rng, &[2, 5, 32], 1.0, 0.0)?),
        ],
        |b, a| b.add(b.duplicate(at(a, 0)?)?, at(a, 1)?),
    ));
    t.push(row(
        "scale",
        "elementwise",
        "[3, 7, 41] 0.75 x - 0.5",
        1e-6,
        vec![Act(rounded(rng, &[3, 7, 41], 1.0, 0.0)?)],
        |b, a| b.scale(b.duplicate(at(a, 0)?)?, 0.75, -0.5),
    ));
    // Spread wide enough that h_sigmoid's and the clamp's bounds bind.
    type Unary = fn(&dyn Backend, Tensor) -> Result<Tensor>;
    let unary: [(&str, Unary); 4] = [
        ("relu", |b, x| b.relu(x)),
        ("clamp", |b, x| b.clamp(x, 1.5)),
        ("h_sigmoid", |b, x| b.h_sigmoid(x)),
        ("gelu", |b, x| b.gelu(x)),
    ];
    for (op, f) in unary {
        t.push(row(
            op,
            "elementwise",
            "[3, 7, 41] std 3",
            1e-6,
            vec![Act(rounded(rng, &[3, 7, 41], 3.0, 0.0)?)],
            move |b, a| f(b, b.duplicate(at(a, 0)?)?),
        ));
    }
    t.push(row(
        "scale_images",
        "elementwise",
        "[3, 4, 5, 6] by [3, 1]",
        1e-6,
        vec![
            Act(rounded(rng, &[3, 4, 5, 6], 1.0, 0.0)?),
            Act(rounded(rng, &[3, 1], 1.0, 0.0)?),
        ],
        |b, a| b.scale_images(b.duplicate(at(a, 0)?)?, at(a, 1)?),
    ));
    t.push(row(
        "add_channel_scaled",
        "elementwise",
        "[2, 7, 24] + gamma [24]",
        1e-6,
        vec![
            Act(rounded(rng, &[2, 7, 24], 1.0, 0.0)?),
            Weight(rounded(rng, &[24], 0.5, 0.0)?),
            Act(rounded(rng, &[2, 7, 24], 1.0, 0.0)?),
        ],
        |b, a| b.add_channel_scaled(b.duplicate(at(a, 0)?)?, at(a, 1)?, at(a, 2)?),
    ));
    t.push(row(
        "dyrelu_apply",
        "elementwise",
        "[2, 6, 5, 3] with z [2, 24] in (0, 1)",
        1e-6,
        vec![
            Act(rounded(rng, &[2, 6, 5, 3], 1.5, 0.0)?),
            Act(uniform(rng, &[2, 24], 0.0, 1.0)?),
        ],
        |b, a| b.dyrelu_apply(b.duplicate(at(a, 0)?)?, at(a, 1)?),
    ));
    t.push(rows_of(
        "split_offset_mask",
        "elementwise",
        format!("[2, {}, 3, 5]", 3 * DEFORM_TAPS),
        1e-6,
        vec![Act(rounded(rng, &[2, 3 * DEFORM_TAPS, 3, 5], 3.0, 0.0)?)],
        |b, a| {
            let (o, m) = b.split_offset_mask(at(a, 0)?)?;
            Ok(vec![o, m])
        },
    ));

    // --- reductions ---
    for (rows, c) in [(37, 96), (5, 768), (3, 45)] {
        t.push(row(
            "layer_norm",
            "reduce",
            format!("{rows} rows of {c}"),
            1e-5,
            vec![
                Act(rounded(rng, &[rows, c], 2.0, 3.0)?),
                Weight(rounded(rng, &[c], 1.0, 0.0)?),
                Weight(rounded(rng, &[c], 0.5, 0.0)?),
            ],
            |b, a| b.layer_norm(at(a, 0)?, at(a, 1)?, at(a, 2)?, 1e-5),
        ));
    }
    for shape in [[2, 5, 3, 7], [1, 3, 25, 17]] {
        t.push(row(
            "avg_pool",
            "reduce",
            format!("{shape:?}"),
            1e-6,
            vec![Act(rounded(rng, &shape, 1.0, 0.0)?)],
            |b, a| b.avg_pool(at(a, 0)?),
        ));
    }
    t.push(rows_of(
        "group_norm",
        "group_norm",
        "[2, 32, 5, 7], 16 groups",
        1e-4,
        vec![
            Weight(rounded(rng, &[32], 1.0, 0.0)?),
            Weight(rounded(rng, &[32], 0.5, 0.0)?),
            Act(rounded(rng, &[2, 32, 5, 7], 2.0, 1.5)?),
        ],
        |b, a| b.group_norm(&[at(a, 2)?], at(a, 0)?, at(a, 1)?, 16, 1e-5),
    ));
    t.push(rows_of(
        "group_norm",
        "group_norm",
        "levels [2, 32, 5, 7] [2, 32, 3, 4] [2, 32, 1, 1] in one launch, 8 groups",
        1e-4,
        vec![
            Weight(rounded(rng, &[32], 1.0, 0.0)?),
            Weight(rounded(rng, &[32], 0.5, 0.0)?),
            Act(rounded(rng, &[2, 32, 5, 7], 2.0, 1.5)?),
            Act(rounded(rng, &[2, 32, 3, 4], 1.0, -0.5)?),
            Act(rounded(rng, &[2, 32, 1, 1], 3.0, 0.0)?),
        ],
        |b, a| {
            let xs = [at(a, 2)?, at(a, 3)?, at(a, 4)?];
            b.group_norm(&xs, at(a, 0)?, at(a, 1)?, 8, 1e-5)
        },
    ));

    // --- gathers and layout ---
    type Gather = fn(&dyn Backend, &Tensor) -> Result<Tensor>;
    let gathers: [(&str, &[usize], Gather); 13] = [
        ("pad_to_multiple", &[2, 3, 9, 6], |b, x| {
            b.pad_to_multiple(x, 4)
        }),
        ("pad_to_multiple", &[1, 3, 8, 4], |b, x| {
            b.pad_to_multiple(x, 4)
        }),
        ("nchw_to_nhwc", &[2, 5, 3, 7], |b, x| b.nchw_to_nhwc(x)),
        ("nhwc_to_nchw", &[2, 3, 7, 5], |b, x| b.nhwc_to_nchw(x)),
        ("duplicate", &[3, 5, 7], |b, x| b.duplicate(x)),
        ("repeat_batch", &[1, 9, 6], |b, x| b.repeat_batch(x, 3)),
        ("window_partition", &[2, 9, 11, 6], |b, x| {
            b.window_partition(x, 7, 0)
        }),
        ("window_partition", &[2, 9, 11, 6], |b, x| {
            b.window_partition(x, 7, 3)
        }),
        ("window_merge_add", &[2, 9, 11, 6], |b, x| {
            let w = b.scale(b.window_partition(x, 7, 3)?, -0.5, 0.25)?;
            b.window_merge_add(b.duplicate(x)?, &w, 7, 3)
        }),
        ("patch_merge_gather", &[2, 7, 5, 6], |b, x| {
            b.patch_merge_gather(x)
        }),
        ("upsample_nearest", &[2, 3, 5, 7], |b, x| {
            b.upsample_nearest(x, 10, 13)
        }),
        ("upsample_bilinear_ac", &[2, 3, 5, 7], |b, x| {
            b.upsample_bilinear_ac(x, 9, 13)
        }),
        ("upsample_bilinear_ac", &[1, 2, 5, 7], |b, x| {
            b.upsample_bilinear_ac(x, 1, 1)
        }),
    ];
    for (op, shape, f) in gathers {
        // Gathers copy (exact); bilinear interpolates; the merge adds a scaled copy.
        let tol = if op.starts_with("upsample_bilinear") || op == "window_merge_add" {
            1e-6
        } else {
            0.0
        };
        t.push(row(
            op,
            "layout",
            format!("{shape:?}"),
            tol,
            vec![Act(rounded(rng, shape, 1.0, 0.0)?)],
            move |b, a| f(b, at(a, 0)?),
        ));
    }
    // The pyramid packed into tokens and back (f16 activations; f32 for the logits).
    for dtype in [DType::F16, DType::F32] {
        let x = rounded(rng, &[2, 6, 4, 5], 1.0, 0.0)?;
        let arg = Arg::of(dtype, x);
        t.push(row(
            "levels_to_tokens",
            "layout",
            format!("3 levels of [2, 6, ·, ·] {}", dtype.name()),
            0.0,
            vec![arg],
            |b, a| {
                let x = at(a, 0)?;
                let (l0, l1) = (b.upsample_nearest(x, 8, 10)?, b.duplicate(x)?);
                b.levels_to_tokens(&[&l0, &l1, x])
            },
        ));
        let x = rounded(rng, &[2, 26, 6], 1.0, 0.0)?;
        let arg = Arg::of(dtype, x);
        t.push(rows_of(
            "tokens_to_levels",
            "layout",
            format!("[2, 26, 6] into 4x5 and 2x3 {}", dtype.name()),
            0.0,
            vec![arg],
            |b, a| b.tokens_to_levels(at(a, 0)?, &[(4, 5), (2, 3)]),
        ));
        let x = rounded(rng, &[2, 5, 5], 1.0, 0.0)?;
        let arg = Arg::of(dtype, x);
        t.push(row(
            "concat_positions",
            "layout",
            format!("3 parts of [2, 5, 5] {}", dtype.name()),
            0.0,
            vec![arg],
            |b, a| {
                let x = at(a, 0)?;
                // Parts that differ: x and its per-image transpose.
                let tr = b.nhwc_to_nchw(&b.duplicate(x)?.reshape(&[2, 5, 1, 5])?)?;
                b.concat_positions(&[x, &tr.reshape(&[2, 5, 5])?, x])
            },
        ));
    }

    // --- attention ---
    // (batch, T, heads, head width, real tokens, clamp)
    // Head widths 16, 32, 64 run on tensor cores, 8 (the small goldens') on the SIMT kernel.
    let bert: [(usize, usize, usize, usize, usize, Option<f32>); 5] = [
        (1, 1, 2, 8, 1, None),
        (2, 45, 2, 8, 40, Some(GLIP_CLAMP)),
        (2, 9, 2, 16, 6, Some(GLIP_CLAMP)),
        (1, 256, 2, 64, 200, Some(GLIP_CLAMP)),
        (2, 37, 3, 32, 37, None),
    ];
    for (b, tk, heads, hd, real, clamp) in bert {
        let h = heads * hd;
        let mask = i32s(
            &[b, tk],
            (0..b * tk).map(|i| i32::from(i % tk < real)).collect(),
        )?;
        t.push(row(
            "self_attention",
            "attention",
            format!("B{b} T{tk} {heads}x{hd}, {real} real, clamp {clamp:?}"),
            1e-5,
            vec![
                Act(rounded(rng, &[b, tk, h], 1.0, 0.0)?),
                Act(rounded(rng, &[b, tk, h], 1.0, 0.0)?),
                Act(rounded(rng, &[b, tk, h], 1.0, 0.0)?),
                Upload(mask),
            ],
            move |be, a| {
                let spec = SelfAttention { heads, clamp };
                be.self_attention(at(a, 0)?, at(a, 1)?, at(a, 2)?, at(a, 3)?, spec)
            },
        ));
    }
    let g = WindowGrid::new(9, 11, 7);
    let nw = g.num_windows();
    for (shift, heads, hd) in [(0, 3, 32), (3, 3, 32), (3, 2, 8)] {
        let c = heads * hd;
        let mut args = vec![
            Act(rounded(rng, &[2 * nw, 49, 3 * c], 1.0, 0.0)?),
            Weight(rounded(rng, &[heads, 49, 49], 1.0, 0.0)?),
        ];
        if shift > 0 {
            args.push(Upload(i32s(&[nw, 49], g.region_ids(shift))?));
        }
        t.push(row(
            "window_attention",
            "attention",
            format!(
                "{} windows of 7x7, {heads} heads of {hd}, shift {shift}",
                2 * nw
            ),
            1e-5,
            args,
            move |b, a| b.window_attention(at(a, 0)?, at(a, 1)?, a.get(2), heads),
        ));
    }
    t.push(row(
        "bert_embeddings",
        "layout",
        "ids [2, 7] into a 50 x 24 table",
        1e-6,
        vec![
            Host(i32s(&[2, 7], (0..14).map(|i| (i * 7 + 3) % 50).collect())?),
            Weight(rounded(rng, &[50, 24], 1.0, 0.0)?),
            Weight(rounded(rng, &[12, 24], 1.0, 0.0)?),
            Weight(rounded(rng, &[24], 1.0, 0.0)?),
        ],
        |b, a| b.bert_embeddings(at(a, 0)?, at(a, 1)?, at(a, 2)?, at(a, 3)?),
    ));
    // VLFuse: 2 heads of 256, 37 positions, 9 tokens of which 6 real.
    t.push(rows_of(
        "bi_attn",
        "bi_attn",
        "[1, 37, 512] x [1, 9, 512], 2 heads, 6 real",
        1e-4,
        vec![
            Act(rounded(rng, &[1, 37, 512], 0.06, 0.0)?),
            Act(rounded(rng, &[1, 9, 512], 1.0, 0.0)?),
            Act(rounded(rng, &[1, 9, 512], 1.0, 0.0)?),
            Act(rounded(rng, &[1, 37, 512], 1.0, 0.0)?),
            Upload(i32s(&[1, 9], (0..9).map(|j| i32::from(j < 6)).collect())?),
        ],
        |b, a| {
            let (v, l) = b.bi_attn(at(a, 0)?, at(a, 1)?, at(a, 2)?, at(a, 3)?, at(a, 4)?, 2)?;
            Ok(vec![v, l])
        },
    ));

    // --- DyConv ---
    for stride in [1, 2] {
        let (oh, ow) = ((9 - 1) / stride + 1, (11 - 1) / stride + 1);
        t.push(row(
            "deform_conv3x3",
            "deform_conv",
            format!("[1, 16, 9, 11] stride {stride}"),
            1e-4,
            vec![
                Act(rounded(rng, &[1, 16, 9, 11], 1.0, 0.0)?),
                Act(rounded(rng, &[1, 2 * DEFORM_TAPS, oh, ow], 2.0, 0.0)?),
                Act(uniform(rng, &[1, DEFORM_TAPS, oh, ow], 0.0, 1.0)?),
                Weight(rounded(rng, &[16, 16, 3, 3], 0.08, 0.0)?),
                Weight(rounded(rng, &[16], 0.5, 0.0)?),
            ],
            move |b, a| {
                b.deform_conv3x3(
                    at(a, 0)?,
                    at(a, 1)?,
                    at(a, 2)?,
                    at(a, 3)?,
                    at(a, 4)?,
                    stride,
                    (oh, ow),
                )
            },
        ));
    }

    // --- the head and post-processing ---
    t.push(rows_of(
        "text_projection",
        "logits",
        "[1, 6, 64] -> 32",
        1e-6,
        vec![
            Act(rounded(rng, &[1, 6, 64], 1.0, 0.0)?),
            Weight(rounded(rng, &[32, 64], 0.1, 0.0)?),
            Weight(rounded(rng, &[32], 0.1, 0.0)?),
            Weight(rounded(rng, &[64], 0.05, 0.0)?),
        ],
        |b, a| {
            let (p, tb) = b.text_projection(at(a, 0)?, at(a, 1)?, at(a, 2)?, at(a, 3)?, -4.6)?;
            Ok(vec![p, tb])
        },
    ));
    for dtype in [DType::F16, DType::F32] {
        // f32 features large enough to reach the ±50000 clamp, as golden 07's last level.
        let big = dtype == DType::F32;
        let v = rounded(rng, &[1, 32, 4, 5], if big { 1e3 } else { 1.0 }, 0.0)?;
        t.push(rows_of(
            "dot_logits",
            "logits",
            format!("[1, 32, 4, 5] {} x 6 tokens", dtype.name()),
            1e-5,
            vec![
                Arg::of(dtype, v),
                Upload(rounded(
                    rng,
                    &[1, 6, 32],
                    if big { 10.0 } else { 1.0 },
                    0.0,
                )?),
                Upload(rounded(rng, &[1, 6], 1.0, 0.0)?),
            ],
            |b, a| b.dot_logits(&[at(a, 0)?], at(a, 1)?, at(a, 2)?, 0.8, GLIP_CLAMP),
        ));
    }
    // Three levels of both dtypes in one op (an f16 launch for two, an f32 one for the
    // third), batch 2, 70 tokens (two token tiles), levels of 1, 65 and 130 positions (tile
    // edges).
    t.push(rows_of(
        "dot_logits",
        "logits",
        "levels [2, 32, 5, 13] f16, [2, 32, 1, 1] f16, [2, 32, 10, 13] f32 x 70 tokens",
        1e-5,
        vec![
            Upload(rounded(rng, &[2, 70, 32], 1.0, 0.0)?),
            Upload(rounded(rng, &[2, 70], 1.0, 0.0)?),
            Act(rounded(rng, &[2, 32, 5, 13], 1.0, 0.0)?),
            Act(rounded(rng, &[2, 32, 1, 1], 1.0, 0.0)?),
            Upload(rounded(rng, &[2, 32, 10, 13], 1.0, 0.0)?),
        ],
        |b, a| {
            let vs = [at(a, 2)?, at(a, 3)?, at(a, 4)?];
            b.dot_logits(&vs, at(a, 0)?, at(a, 1)?, 0.8, GLIP_CLAMP)
        },
    ));
    t.push(row(
        "phrase_scores",
        "logits",
        "[2, 30, 9] logits, labels 1, 3, 4 of 5",
        1e-6,
        vec![Upload(rounded(rng, &[2, 30, 9], 3.0, 0.0)?)],
        |b, a| {
            let map =
                PositiveMapCsr::new(&[(1, vec![1, 2]), (3, vec![4]), (4, vec![5, 6, 7])], 5, 9)?;
            b.phrase_scores(at(a, 0)?, &map, 5)
        },
    ));
    let levels = [
        Level {
            h: 25,
            w: 42,
            stride: 8,
        },
        Level {
            h: 13,
            w: 21,
            stride: 16,
        },
    ];
    let n = levels.iter().map(Level::hw).sum::<usize>();
    for batch in [1, 2] {
        t.push(row(
            "atss_postprocess",
            "nms",
            format!("{batch} images, 2 levels ({n} positions), 8 labels, dense scores"),
            0.0,
            vec![
                Upload(uniform(rng, &[batch, n, 8], 0.0, 0.08)?),
                Upload(rounded(rng, &[batch, n, 1], 1.0, 0.0)?),
                Upload(rounded(rng, &[batch, n, 4], 0.5, 0.0)?),
            ],
            move |b, a| {
                let hw = vec![(190.0, 330.0); batch];
                let cfg = AtssConfig::default();
                detections(b.atss_postprocess(
                    at(a, 0)?,
                    at(a, 1)?,
                    at(a, 2)?,
                    &levels,
                    &hw,
                    &cfg,
                )?)
            },
        ));
    }
    Ok(t)
}

/// Rows at GLIP-T's sizes (800×1344 input: P3 100×168, 22 400 positions over the pyramid,
/// Swin stage 1 200×336, 256 tokens), for a GPU: `glip doctor` and scripts/gpu-check.sh run
/// them next to [`rows`]. Too slow for the emulated device.
pub fn glip_t_rows(seed: u64) -> Result<Vec<Row>> {
    use Arg::{Act, Upload, Weight};
    let mut r = Rng::new(seed);
    let rng = &mut r;
    let mut t: Vec<Row> = Vec::new();
    let p3 = [1, 256, 100, 168];
    t.push(row(
        "linear",
        "gemm",
        "VLFuse projection [1, 22400, 256] -> 2048",
        1e-5,
        vec![
            Act(rounded(rng, &[1, 22_400, 256], 1.0, 0.0)?),
            Weight(rounded(rng, &[2048, 256], 0.06, 0.0)?),
            Weight(rounded(rng, &[2048], 0.5, 0.0)?),
        ],
        |b, a| b.linear(at(a, 0)?, at(a, 1)?, Some(at(a, 2)?)),
    ));
    t.push(row(
        "conv2d",
        "layout+gemm",
        "Swin patch embedding [1, 3, 800, 1344] -> 96, 4x4 stride 4",
        1e-5,
        vec![
            Act(rounded(rng, &[1, 3, 800, 1344], 1.0, 0.0)?),
            Weight(rounded(rng, &[96, 3, 4, 4], 0.2, 0.0)?),
            Weight(rounded(rng, &[96], 0.5, 0.0)?),
        ],
        |b, a| b.conv2d(at(a, 0)?, at(a, 1)?, Some(at(a, 2)?), 4, 0),
    ));
    t.push(row(
        "conv2d",
        "layout+gemm",
        "FPN output conv P3 [1, 256, 100, 168], 3x3 pad 1",
        1e-5,
        vec![
            Act(rounded(rng, &p3, 1.0, 0.0)?),
            Weight(rounded(rng, &[256, 256, 3, 3], 0.02, 0.0)?),
            Weight(rounded(rng, &[256], 0.5, 0.0)?),
        ],
        |b, a| b.conv2d(at(a, 0)?, at(a, 1)?, Some(at(a, 2)?), 1, 1),
    ));
    t.push(row(
        "layer_norm",
        "reduce",
        "Swin stage 1: 67200 rows of 96",
        1e-5,
        vec![
            Act(rounded(rng, &[67_200, 96], 2.0, 1.0)?),
            Weight(rounded(rng, &[96], 1.0, 0.0)?),
            Weight(rounded(rng, &[96], 0.5, 0.0)?),
        ],
        |b, a| b.layer_norm(at(a, 0)?, at(a, 1)?, at(a, 2)?, 1e-5),
    ));
    t.push(row(
        "window_partition",
        "layout",
        "Swin stage 1 [1, 200, 336, 96], window 7, shift 3",
        0.0,
        vec![Act(rounded(rng, &[1, 200, 336, 96], 1.0, 0.0)?)],
        |b, a| b.window_partition(at(a, 0)?, 7, 3),
    ));
    let g = WindowGrid::new(200, 336, 7);
    t.push(row(
        "window_attention",
        "attention",
        format!(
            "Swin stage 1: {} windows of 7x7, 3 heads of 32, shift 3",
            g.num_windows()
        ),
        1e-5,
        vec![
            Act(rounded(rng, &[g.num_windows(), 49, 288], 1.0, 0.0)?),
            Weight(rounded(rng, &[3, 49, 49], 1.0, 0.0)?),
            Upload(i32s(&[g.num_windows(), 49], g.region_ids(3))?),
        ],
        |b, a| b.window_attention(at(a, 0)?, at(a, 1)?, a.get(2), 3),
    ));
    t.push(row(
        "self_attention",
        "attention",
        "BERT-base: T 256, 12 heads of 64, 200 real",
        1e-5,
        vec![
            Act(rounded(rng, &[1, 256, 768], 1.0, 0.0)?),
            Act(rounded(rng, &[1, 256, 768], 1.0, 0.0)?),
            Act(rounded(rng, &[1, 256, 768], 1.0, 0.0)?),
            Upload(i32s(
                &[1, 256],
                (0..256).map(|j| i32::from(j < 200)).collect(),
            )?),
        ],
        |b, a| {
            let spec = SelfAttention {
                heads: 12,
                clamp: Some(GLIP_CLAMP),
            };
            b.self_attention(at(a, 0)?, at(a, 1)?, at(a, 2)?, at(a, 3)?, spec)
        },
    ));
    t.push(rows_of(
        "bi_attn",
        "bi_attn",
        "VLFuse: 22400 positions x 256 tokens (200 real), 8 heads of 256",
        1e-4,
        vec![
            Act(rounded(rng, &[1, 22_400, 2048], 0.06, 0.0)?),
            Act(rounded(rng, &[1, 256, 2048], 1.0, 0.0)?),
            Act(rounded(rng, &[1, 256, 2048], 1.0, 0.0)?),
            Act(rounded(rng, &[1, 22_400, 2048], 1.0, 0.0)?),
            Upload(i32s(
                &[1, 256],
                (0..256).map(|j| i32::from(j < 200)).collect(),
            )?),
        ],
        |b, a| {
            let (v, l) = b.bi_attn(at(a, 0)?, at(a, 1)?, at(a, 2)?, at(a, 3)?, at(a, 4)?, 8)?;
            Ok(vec![v, l])
        },
    ));
    t.push(row(
        "deform_conv3x3",
        "deform_conv",
        "DyConv P3 [1, 256, 100, 168], stride 1",
        1e-4,
        vec![
            Act(rounded(rng, &p3, 1.0, 0.0)?),
            Act(rounded(rng, &[1, 2 * DEFORM_TAPS, 100, 168], 2.0, 0.0)?),
            Act(uniform(rng, &[1, DEFORM_TAPS, 100, 168], 0.0, 1.0)?),
            Weight(rounded(rng, &[256, 256, 3, 3], 0.02, 0.0)?),
            Weight(rounded(rng, &[256], 0.5, 0.0)?),
        ],
        |b, a| {
            b.deform_conv3x3(
                at(a, 0)?,
                at(a, 1)?,
                at(a, 2)?,
                at(a, 3)?,
                at(a, 4)?,
                1,
                (100, 168),
            )
        },
    ));
    t.push(rows_of(
        "group_norm",
        "group_norm",
        "DyConv P3..P7 of 800x1344 (256 channels), 16 groups, one launch",
        1e-4,
        vec![
            Weight(rounded(rng, &[256], 1.0, 0.0)?),
            Weight(rounded(rng, &[256], 0.5, 0.0)?),
            Act(rounded(rng, &p3, 2.0, 1.5)?),
            Act(rounded(rng, &[1, 256, 50, 84], 2.0, 1.5)?),
            Act(rounded(rng, &[1, 256, 25, 42], 2.0, 1.5)?),
            Act(rounded(rng, &[1, 256, 13, 21], 2.0, 1.5)?),
            Act(rounded(rng, &[1, 256, 7, 11], 2.0, 1.5)?),
        ],
        |b, a| {
            let xs = [at(a, 2)?, at(a, 3)?, at(a, 4)?, at(a, 5)?, at(a, 6)?];
            b.group_norm(&xs, at(a, 0)?, at(a, 1)?, 16, 1e-5)
        },
    ));
    t.push(rows_of(
        "dot_logits",
        "logits",
        "P3..P7 of 800x1344 (256 channels) x 256 tokens, one launch",
        1e-5,
        vec![
            Upload(rounded(rng, &[1, 256, 256], 0.06, 0.0)?),
            Upload(rounded(rng, &[1, 256], 1.0, 0.0)?),
            Act(rounded(rng, &p3, 1.0, 0.0)?),
            Act(rounded(rng, &[1, 256, 50, 84], 1.0, 0.0)?),
            Act(rounded(rng, &[1, 256, 25, 42], 1.0, 0.0)?),
            Act(rounded(rng, &[1, 256, 13, 21], 1.0, 0.0)?),
            Act(rounded(rng, &[1, 256, 7, 11], 1.0, 0.0)?),
        ],
        |b, a| {
            let vs = [at(a, 2)?, at(a, 3)?, at(a, 4)?, at(a, 5)?, at(a, 6)?];
            b.dot_logits(&vs, at(a, 0)?, at(a, 1)?, 0.8, GLIP_CLAMP)
        },
    ));
    let levels: Vec<Level> = [
        (100, 168, 8),
        (50, 84, 16),
        (25, 42, 32),
        (13, 21, 64),
        (7, 11, 128),
    ]
    .into_iter()
    .map(|(h, w, stride)| Level { h, w, stride })
    .collect();
    let n = levels.iter().map(Level::hw).sum::<usize>();
    t.push(row(
        "atss_postprocess",
        "nms",
        format!("GLIP-T: 5 levels ({n} positions), 80 labels"),
        0.0,
        vec![
            Upload(uniform(rng, &[1, n, 80], 0.0, 0.06)?),
            Upload(rounded(rng, &[1, n, 1], 1.0, 0.0)?),
            Upload(rounded(rng, &[1, n, 4], 0.5, 0.0)?),
        ],
        move |b, a| {
            let cfg = AtssConfig::default();
            let hw = [(800.0, 1333.0)];
            detections(b.atss_postprocess(at(a, 0)?, at(a, 1)?, at(a, 2)?, &levels, &hw, &cfg)?)
        },
    ));
    Ok(t)
}

/// The methods of [`Backend`] that compute nothing (they describe the backend, hand the
/// executor its memory planning, or read a caller's device memory).
pub const NOT_OPS: &[&str] = &[
    "device",
    "activation_dtype",
    "describe",
    "fallbacks",
    "device_arena",
    "stage_clock",
    "device_frames",
];

/// The ops of the interface, read from the trait's source (so a new op without a row fails
/// the coverage test).
pub fn interface_ops() -> Vec<&'static str> {
    let src = include_str!("ops.rs");
    let start = src.find("pub trait Backend {").unwrap_or(0);
    let end = src[start..].find("\n}\n").map_or(src.len(), |e| start + e);
    src[start..end]
        .split("\n    fn ")
        .skip(1)
        .filter_map(|f| f.split(['(', '<']).next())
        .filter(|name| !NOT_OPS.contains(name))
        .collect()
}

/// The row's inputs on `be`.
fn inputs(be: &dyn Backend, args: &[Arg]) -> Result<Vec<Tensor>> {
    args.iter()
        .map(|a| match a {
            Arg::Act(t) => match be.activation_dtype() {
                DType::F16 => be.upload(&t.to_f16()?),
                _ => be.upload(t),
            },
            Arg::Weight(t) => be.weight(t),
            Arg::Upload(t) => be.upload(t),
            Arg::Host(t) => t.try_clone(),
        })
        .collect()
}

/// Runs `row` on `dev` and on the CPU backend and compares every output.
pub fn check(row: &Row, dev: &dyn Backend) -> Verdict {
    let mut v = Verdict {
        op: row.op,
        family: row.family,
        case: row.case.clone(),
        nse: 0.0,
        max_abs: 0.0,
        tol: row.tol,
        passed: false,
        problem: None,
    };
    let got = inputs(dev, &row.args).and_then(|i| (row.run)(dev, &i));
    let want = inputs(&CpuBackend, &row.args).and_then(|i| (row.run)(&CpuBackend, &i));
    let (got, want) = match (got, want) {
        (Ok(g), Ok(w)) => (g, w),
        (Err(e), _) => {
            v.problem = Some(format!("on the device: {e}"));
            return v;
        }
        (_, Err(e)) => {
            v.problem = Some(format!("on the CPU: {e}"));
            return v;
        }
    };
    if got.len() != want.len() {
        v.problem = Some(format!(
            "{} outputs, the CPU gave {}",
            got.len(),
            want.len()
        ));
        return v;
    }
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        let host = dev.to_host(g).and_then(|t| t.to_f32_vec());
        let (g_vals, w_vals) = match (host, w.to_f32_vec()) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => {
                v.problem = Some(format!("output {i}: {e}"));
                return v;
            }
        };
        if g.shape() != w.shape() {
            v.problem = Some(format!(
                "output {i}: shape {:?}, the CPU's {:?}",
                g.shape(),
                w.shape()
            ));
            return v;
        }
        if g_vals.iter().any(|x| !x.is_finite()) {
            v.problem = Some(format!("output {i}: non-finite values"));
            return v;
        }
        v.nse = v.nse.max(nse(&g_vals, &w_vals));
        v.max_abs = v.max_abs.max(max_abs_diff(&g_vals, &w_vals));
    }
    let exact_ok = row.tol > 0.0 || v.max_abs == 0.0;
    v.passed = exact_ok && v.nse <= row.tol;
    if !v.passed {
        v.problem = Some(format!(
            "nse {:.2e} max |diff| {:.2e} over tolerance {:e}",
            v.nse, v.max_abs, row.tol
        ));
    }
    v
}

/// The mean time of `row` on `be` over `runs` runs after one warm-up (inputs already there;
/// outputs read back to the host, which waits for the device).
pub fn time(row: &Row, be: &dyn Backend, runs: usize) -> Result<Duration> {
    let i = inputs(be, &row.args)?;
    let sync = |out: Outputs| -> Result<()> {
        for t in &out {
            be.to_host(t)?;
        }
        Ok(())
    };
    sync((row.run)(be, &i)?)?;
    let t0 = Instant::now();
    for _ in 0..runs.max(1) {
        sync((row.run)(be, &i)?)?;
    }
    Ok(t0.elapsed() / runs.max(1) as u32)
}
