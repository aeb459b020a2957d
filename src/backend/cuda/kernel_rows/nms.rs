//! nms: the batched ATSS post-processing kernels (candidates, per-level radix top-k, batched
//! NMS, the final top-N) against the CPU twin, kept sets compared exactly: batch 16 with
//! multi-label NMS, batch 2 class-agnostic, the no-cut path, random centerness with sparse
//! candidates. GLIP-T's 800×1344 padded (22 400 positions, 80 labels, 5 000 candidates per
//! image) on a GPU; 200×336 on the emulated device (1 430 positions, still over the per-level
//! top-k, so the radix select runs).

use super::{kernel_row, twin, Compared, KernelRow, Scale, Tol};
use crate::backend::cpu::nms::{
    self as cpu, iou, AtssConfig, Candidate, Level, PackedInputs, MAX_BATCH,
};
use crate::backend::cuda::nms::{self as gpu, NmsOutputs, NmsWorkspace};
use crate::backend::cuda::CudaBackend;
use crate::error::{Error, Result};
use crate::testing::Rng;

const LABELS: usize = 80;

fn levels(scale: Scale) -> Vec<Level> {
    let l: &[(usize, usize, usize)] = match scale {
        Scale::GlipT => &[
            (100, 168, 8),
            (50, 84, 16),
            (25, 42, 32),
            (13, 21, 64),
            (7, 11, 128),
        ],
        Scale::Reduced => &[
            (25, 42, 8),
            (13, 21, 16),
            (7, 11, 32),
            (4, 6, 64),
            (2, 3, 128),
        ],
    };
    l.iter()
        .map(|&(h, w, stride)| Level { h, w, stride })
        .collect()
}

struct Inputs {
    scores: Vec<f32>,
    ctr: Vec<f32>,
    reg: Vec<f32>,
}

/// How the inputs are drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Draw {
    /// Dense scores (~37% of the entries pass 0.05, so every level needs the radix select,
    /// with many equal values), centerness logits 0 and dw = dh = 0: sigmoid(0) = 0.5 and
    /// exp(0) = 1 are exact in both implementations and every other operation is IEEE basic
    /// arithmetic in the same order, so the kernels must reproduce the twin bit for bit,
    /// ties included.
    Exact,
    /// Random centerness and dw, dh (expf may differ by an ulp from the CPU), sparse
    /// candidates (~600 per level, no top-k cut); the draw is retried until every decision
    /// is > 1e-6 relative from flipping.
    Sparse,
}

fn draw(batch: usize, levels: &[Level], seed: u64, how: Draw) -> Inputs {
    let offsets = cpu::level_offsets(levels);
    let n = offsets[levels.len()];
    let mut rng = Rng::new(seed);
    match how {
        Draw::Exact => {
            let mut reg = rng.normal_vec(batch * n * 4, 0.8);
            reg.chunks_mut(4).for_each(|r| {
                r[2] = 0.0;
                r[3] = 0.0;
            });
            Inputs {
                scores: rng.uniform_vec(batch * n * LABELS, 0.0, 0.08),
                ctr: vec![0.0; batch * n],
                reg,
            }
        }
        Draw::Sparse => {
            let mut scores = rng.uniform_vec(batch * n * LABELS, 0.0, 0.05);
            for b in 0..batch {
                for l in 0..offsets.len() - 1 {
                    let (p0, p1) = (offsets[l], offsets[l + 1]);
                    let entries = (p1 - p0) * LABELS;
                    for _ in 0..600.min(entries / 2) {
                        let e = (rng.next_u64() % entries as u64) as usize;
                        scores[(b * n + p0) * LABELS + e] = rng.range(0.0501, 0.9);
                    }
                }
            }
            Inputs {
                scores,
                ctr: rng.normal_vec(batch * n, 1.5),
                reg: rng.normal_vec(batch * n * 4, 0.8),
            }
        }
    }
}

/// Smallest relative gap of the decisions the CPU twin made that a 1-ulp difference in
/// sigmoid/exp could flip: the top-k cut, same-label overlapping order, IoU vs threshold
/// and the top-N cut. Tie-free inputs need all of them well above f32 rounding.
fn margin(inp: &PackedInputs, hw: (f32, f32), b: usize, cfg: &AtssConfig) -> Result<f64> {
    let rel = |a: f32, c: f32| ((a - c).abs() / a.abs().max(c.abs()).max(1e-30)) as f64;
    let mut m = f64::INFINITY;
    let (_, n) = inp.dims()?;
    let offsets = cpu::level_offsets(inp.levels);
    for l in 0..inp.levels.len() {
        let mut s: Vec<f32> = Vec::new();
        for p in offsets[l]..offsets[l + 1] {
            let c = 1.0 / (1.0 + (-inp.centerness[b * n + p]).exp());
            for k in 0..inp.num_labels {
                let v = inp.scores[(b * n + p) * inp.num_labels + k];
                if v > cfg.pre_nms_thresh {
                    s.push(v * c);
                }
            }
        }
        if s.len() > cfg.pre_nms_top_n {
            s.sort_by(|a, c| c.total_cmp(a));
            m = m.min(rel(s[cfg.pre_nms_top_n - 1], s[cfg.pre_nms_top_n]));
        }
    }
    let cand = cpu::candidates(inp, b, hw, cfg)?;
    let mut order: Vec<usize> = (0..cand.len()).collect();
    order.sort_by(|&i, &j| cand[j].score.total_cmp(&cand[i].score).then(i.cmp(&j)));
    let mut removed = vec![false; cand.len()];
    let mut kept_scores = Vec::new();
    for (oi, &i) in order.iter().enumerate() {
        if removed[i] {
            continue;
        }
        kept_scores.push(cand[i].score);
        for &j in &order[oi + 1..] {
            if removed[j] || !(cfg.class_agnostic || cand[j].label == cand[i].label) {
                continue;
            }
            let v = iou(&cand[i].bbox, &cand[j].bbox);
            m = m.min(((v - cfg.nms_thresh).abs() / cfg.nms_thresh) as f64);
            if v > cfg.nms_thresh {
                m = m.min(rel(cand[i].score, cand[j].score));
                removed[j] = true;
            }
        }
    }
    if kept_scores.len() > cfg.detections_per_img {
        kept_scores.sort_by(|a, c| c.total_cmp(a));
        m = m.min(rel(
            kept_scores[cfg.detections_per_img - 1],
            kept_scores[cfg.detections_per_img],
        ));
    }
    Ok(m)
}

pub(super) fn rows(scale: Scale, t: &mut Vec<KernelRow>) {
    let cases = [
        // The largest batch one call takes (MAX_BATCH images, each its own size).
        (
            "multi-label",
            MAX_BATCH,
            AtssConfig::default(),
            1,
            Draw::Exact,
        ),
        (
            "class-agnostic",
            2,
            AtssConfig {
                class_agnostic: true,
                ..AtssConfig::default()
            },
            2,
            Draw::Exact,
        ),
        (
            // detections_per_img above the kept count: the no-cut path of the finalize kernel.
            "every detection kept",
            1,
            AtssConfig {
                detections_per_img: 100_000,
                ..AtssConfig::default()
            },
            3,
            Draw::Exact,
        ),
        (
            "random centerness, sparse",
            2,
            AtssConfig::default(),
            4,
            Draw::Sparse,
        ),
    ];
    for (what, batch, cfg, seed, how) in cases {
        t.push(kernel_row(
            "atss_postprocess",
            "nms",
            format!("batch {batch}, {what} ({how:?} draw), {scale:?}"),
            move |be| case(be, scale, batch, &cfg, seed, how),
        ));
    }
}

fn case(
    be: &CudaBackend,
    scale: Scale,
    batch: usize,
    cfg: &AtssConfig,
    seed0: u64,
    how: Draw,
) -> Result<Vec<Compared>> {
    let levels = levels(scale);
    // Image sizes below the padded size, one per image (boxes are clipped to them).
    let (h0, w0, dh, dw) = match scale {
        Scale::Reduced => (200.0, 333.0, 4.0, 10.0),
        Scale::GlipT => (800.0, 1333.0, 16.0, 40.0),
    };
    let hw: Vec<(f32, f32)> = (0..batch)
        .map(|b| (h0 - dh * b as f32, w0 - dw * b as f32))
        .collect();
    let mut seed = seed0;
    let inp = loop {
        let inp = draw(batch, &levels, seed, how);
        if how == Draw::Exact {
            break inp;
        }
        let mut m = f64::INFINITY;
        for (b, &hw) in hw.iter().enumerate() {
            m = m.min(twin(margin(&packed(&inp, &levels), hw, b, cfg))?);
        }
        if m > 1e-6 {
            break inp;
        }
        seed += 1000;
        if seed >= seed0 + 20_000 {
            return Err(Error::Invalid("no tie-free draw found".into()));
        }
    };
    let want = twin(cpu::postprocess(&packed(&inp, &levels), &hw, cfg))?;

    let p = gpu::params(&levels, LABELS, &hw, cfg)?;
    let mut ws = NmsWorkspace::new(be, &p)?;
    let mut out = NmsOutputs::new(be, &p)?;
    // Poison: a stale row would show as NaN boxes or label -1.
    out.boxes = be.filled_f32(out.boxes.len(), f32::NAN)?;
    out.scores = be.filled_f32(out.scores.len(), f32::NAN)?;
    out.labels = be.upload_i32(&vec![-1; out.labels.len()])?;
    out.count = be.upload_i32(&vec![-1; out.count.len()])?;
    let (s, c, r) = (
        be.upload_f32(&inp.scores)?,
        be.upload_f32(&inp.ctr)?,
        be.upload_f32(&inp.reg)?,
    );
    gpu::atss_postprocess(be, &p, &s, &c, &r, &mut ws, &mut out)?;
    let got = out.download(be, &p, &levels)?;

    // The exact draw must match bit for bit; the random one within expf's ulp.
    let (score_tol, box_tol) = match how {
        Draw::Exact => (Tol::EXACT, Tol::EXACT),
        Draw::Sparse => (Tol::new(1e-10, 1e-5), Tol::new(1e-10, 1e-3)),
    };
    let (gk, gs, gb) = columns(&got);
    let (wk, ws_, wb) = columns(&want);
    Ok(vec![
        Compared {
            name: "kept (image, level, anchor, label) in order".into(),
            device: gk,
            twin: wk,
            tol: Tol::EXACT,
        },
        Compared {
            name: "scores".into(),
            device: gs,
            twin: ws_,
            tol: score_tol,
        },
        Compared {
            name: "boxes".into(),
            device: gb,
            twin: wb,
            tol: box_tol,
        },
    ])
}

/// The twin's view of the inputs.
fn packed<'a>(inp: &'a Inputs, levels: &'a [Level]) -> PackedInputs<'a> {
    PackedInputs {
        scores: &inp.scores,
        centerness: &inp.ctr,
        bbox_reg: &inp.reg,
        num_labels: LABELS,
        levels,
    }
}

/// The kept detections of a batch as (keys, scores, boxes), in order.
fn columns(kept: &[Vec<Candidate>]) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (mut k, mut s, mut b) = (Vec::new(), Vec::new(), Vec::new());
    for (img, dets) in kept.iter().enumerate() {
        for d in dets {
            k.extend([img as f32, d.level as f32, d.anchor as f32, d.label as f32]);
            s.push(d.score);
            b.extend(d.bbox);
        }
    }
    (k, s, b)
}
