//! CPU twin of kernels/nms.cu: GLIP's ATSS post-processing (spec §3.7–3.9): anchors,
//! candidate selection (threshold before centerness, top-k after), BoxCoder decode with the
//! +1 convention, sqrt scores, clipping, multi-label NMS as `csrc/cuda/ml_nms.cu` (kept
//! indices ascending) and the kthvalue top-N that keeps ties.
//!
//! Inputs are "packed" over the pyramid: position n of image b runs over the levels in order
//! (P3 first), each level row-major (anchor index y·w + x), exactly the layout the CUDA
//! kernels read. Every ordering decision is made on integer keys (float bit patterns, then
//! indices) so the kernels can reproduce it exactly.

use super::nn::sigmoid;
use crate::error::{Error, Result};
use rayon::prelude::*;

/// BoxCoder weights (wx, wy, ww, wh) of the head's own coder (vldyhead.py:38-94).
pub const BOX_CODER_WEIGHTS: [f32; 4] = [10.0, 10.0, 5.0, 5.0];
pub use crate::backend::atss::{
    bbox_clip, level_offsets, AtssConfig, Candidate, Level, MAX_BATCH, MAX_LEVELS,
};

/// GLIP's anchors of one level, [h·w] xyxy with index y·w + x (anchor_generator.py:35-181):
/// cell [c − (size−1)/2, c + (size−1)/2] around c = (stride − 1)/2, shifted by (x, y)·stride.
pub fn anchors(level: &Level) -> Vec<[f32; 4]> {
    let s = level.stride as f64;
    let c = (s - 1.0) / 2.0;
    let half = (level.anchor_size() as f64 - 1.0) / 2.0;
    // generate_anchors works in float64 numpy and the result is stored as float32; the
    // shifts are float32 aranges added in float32.
    let cell = [
        (c - half) as f32,
        (c - half) as f32,
        (c + half) as f32,
        (c + half) as f32,
    ];
    let mut out = Vec::with_capacity(level.hw());
    for y in 0..level.h {
        for x in 0..level.w {
            let (sx, sy) = ((x * level.stride) as f32, (y * level.stride) as f32);
            out.push([cell[0] + sx, cell[1] + sy, cell[2] + sx, cell[3] + sy]);
        }
    }
    out
}

/// torch.clamp semantics: NaN passes through (f32::min/max would replace it).
fn clamp_nan(v: f32, lo: f32, hi: f32) -> f32 {
    if v < lo {
        lo
    } else if v > hi {
        hi
    } else {
        v
    }
}

/// BoxCoder.decode of one box (vldyhead.py:61-94), f32 in the same operation order.
pub fn decode(delta: [f32; 4], anchor: [f32; 4]) -> [f32; 4] {
    let [wx, wy, ww, wh] = BOX_CODER_WEIGHTS;
    let clip = bbox_clip();
    let widths = anchor[2] - anchor[0] + 1.0;
    let heights = anchor[3] - anchor[1] + 1.0;
    let ctr_x = (anchor[2] + anchor[0]) / 2.0;
    let ctr_y = (anchor[3] + anchor[1]) / 2.0;
    let dx = delta[0] / wx;
    let dy = delta[1] / wy;
    let dw = clamp_nan(delta[2] / ww, f32::NEG_INFINITY, clip);
    let dh = clamp_nan(delta[3] / wh, f32::NEG_INFINITY, clip);
    let pcx = dx * widths + ctr_x;
    let pcy = dy * heights + ctr_y;
    let pw = dw.exp() * widths;
    let ph = dh.exp() * heights;
    [
        pcx - 0.5 * (pw - 1.0),
        pcy - 0.5 * (ph - 1.0),
        pcx + 0.5 * (pw - 1.0),
        pcy + 0.5 * (ph - 1.0),
    ]
}

/// clip_to_image: x into [0, W − 1], y into [0, H − 1] (bounding_box.py:230-241).
pub fn clip_box(b: [f32; 4], img_h: f32, img_w: f32) -> [f32; 4] {
    let cx = |v: f32| clamp_nan(v, 0.0, img_w - 1.0);
    let cy = |v: f32| clamp_nan(v, 0.0, img_h - 1.0);
    [cx(b[0]), cy(b[1]), cx(b[2]), cy(b[3])]
}

/// IoU with +1 widths, as devIoU in csrc/cuda/ml_nms.cu.
pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let left = a[0].max(b[0]);
    let right = a[2].min(b[2]);
    let top = a[1].max(b[1]);
    let bottom = a[3].min(b[3]);
    let width = (right - left + 1.0).max(0.0);
    let height = (bottom - top + 1.0).max(0.0);
    let inter = width * height;
    let sa = (a[2] - a[0] + 1.0) * (a[3] - a[1] + 1.0);
    let sb = (b[2] - b[0] + 1.0) * (b[3] - b[1] + 1.0);
    inter / (sa + sb - inter)
}

/// The ordering key of a non-negative (or NaN) score: its bit pattern, so that NaN ranks
/// first as in torch.topk and ties are detectable exactly.
fn key(s: f32) -> u32 {
    s.to_bits()
}

/// Packed inputs of [`candidates`] for a batch.
#[derive(Clone, Copy)]
pub struct PackedInputs<'a> {
    /// [batch, n_pos, num_labels] aggregated probabilities (phrase MEAN of sigmoids).
    pub scores: &'a [f32],
    /// [batch, n_pos] centerness logits.
    pub centerness: &'a [f32],
    /// [batch, n_pos, 4] regression deltas (dx, dy, dw, dh).
    pub bbox_reg: &'a [f32],
    pub num_labels: usize,
    pub levels: &'a [Level],
}

impl PackedInputs<'_> {
    /// (batch, positions per image) implied by the buffers, checking that they agree.
    pub fn dims(&self) -> Result<(usize, usize)> {
        if self.levels.is_empty() || self.levels.len() > MAX_LEVELS {
            return Err(Error::shape(
                "atss",
                format!("{} levels (1..={MAX_LEVELS})", self.levels.len()),
            ));
        }
        let n = level_offsets(self.levels)[self.levels.len()];
        let batch = self.centerness.len().checked_div(n).unwrap_or(0);
        if n == 0
            || self.centerness.len() != batch * n
            || self.scores.len() != batch * n * self.num_labels
            || self.bbox_reg.len() != batch * n * 4
        {
            return Err(Error::shape(
                "atss",
                format!(
                    "scores {} centerness {} bbox_reg {} disagree for {n} positions and {} labels",
                    self.scores.len(),
                    self.centerness.len(),
                    self.bbox_reg.len(),
                    self.num_labels
                ),
            ));
        }
        Ok((batch, n))
    }
}

/// The pre-NMS candidates of image `b` (forward_for_single_feature_map, inference.py:620-711),
/// in packed order: levels in order, within a level (anchor, label) row-major. GLIP's own
/// order inside a level is that of topk(sorted=False), which is unspecified; the set is the
/// same. Top-k ties (equal score·centerness) go to the lower (anchor, label) index.
pub fn candidates(
    inp: &PackedInputs,
    b: usize,
    img_hw: (f32, f32),
    cfg: &AtssConfig,
) -> Result<Vec<Candidate>> {
    let (batch, n) = inp.dims()?;
    if b >= batch {
        return Err(Error::shape(
            "atss",
            format!("image {b} of a batch of {batch}"),
        ));
    }
    let nl = inp.num_labels;
    let offsets = level_offsets(inp.levels);
    let mut out = Vec::new();
    for (l, level) in inp.levels.iter().enumerate() {
        let anchors = anchors(level);
        let (p0, p1) = (offsets[l], offsets[l + 1]);
        // (flat index within the level, score·sigmoid(ctr)) of every entry over the threshold.
        let mut cand: Vec<(usize, f32)> = Vec::new();
        for p in p0..p1 {
            let ctr = sigmoid(inp.centerness[b * n + p]);
            let row = &inp.scores[(b * n + p) * nl..(b * n + p + 1) * nl];
            for (c, &s) in row.iter().enumerate() {
                if s > cfg.pre_nms_thresh {
                    cand.push(((p - p0) * nl + c, s * ctr));
                }
            }
        }
        if cfg.glip_topk_order {
            let k = cand.len().min(cfg.pre_nms_top_n);
            let vals: Vec<f32> = cand.iter().map(|c| c.1).collect();
            let order = topk_unsorted_order(&vals, k).ok_or_else(|| {
                Error::Invalid(format!(
                    "level {l}: torch's topk order needs libstdc++'s heap-select fallback, which is not emulated; \
                     use glip_topk_order = false"
                ))
            })?;
            cand = order.into_iter().map(|i| cand[i]).collect();
        } else if cand.len() > cfg.pre_nms_top_n {
            cand.sort_by(|x, y| key(y.1).cmp(&key(x.1)).then(x.0.cmp(&y.0)));
            cand.truncate(cfg.pre_nms_top_n);
            cand.sort_by_key(|x| x.0);
        }
        for (flat, s) in cand {
            let (a, c) = (flat / nl, flat % nl);
            let r = &inp.bbox_reg[(b * n + p0 + a) * 4..(b * n + p0 + a + 1) * 4];
            let bbox = clip_box(
                decode([r[0], r[1], r[2], r[3]], anchors[a]),
                img_hw.0,
                img_hw.1,
            );
            // remove_small_boxes(min_size) on xywh with w = x2 − x1 + 1; drops only NaN boxes at 0.
            let (ws, hs) = (bbox[2] - bbox[0] + 1.0, bbox[3] - bbox[1] + 1.0);
            if !(ws >= cfg.min_size && hs >= cfg.min_size) {
                continue;
            }
            out.push(Candidate {
                level: l,
                anchor: a,
                label: c as u32 + 1,
                score: s.sqrt(),
                bbox,
            });
        }
    }
    Ok(out)
}

/// The indices torch's CPU `topk(k, largest=True, sorted=False)` returns, in its order:
/// `std::partial_sort` when k·64 ≤ n, else libstdc++'s `std::nth_element` (introselect:
/// median-of-three pivot, unguarded partition, insertion sort below 4 elements) on
/// (value, index) pairs with NaN largest (aten TopKImpl.h). `None` in the rare case where
/// introselect exhausts its depth budget and would fall back to heap select (not emulated).
pub fn topk_unsorted_order(values: &[f32], k: usize) -> Option<Vec<usize>> {
    let n = values.len();
    if k == 0 {
        return Some(Vec::new());
    }
    let k = k.min(n);
    let comp = |x: usize, y: usize| {
        let (a, b) = (values[x], values[y]);
        (a.is_nan() && !b.is_nan()) || a > b
    };
    let mut q: Vec<usize> = (0..n).collect();
    if k * 64 <= n {
        // partial_sort: the k best, sorted; ties keep no particular order but values are equal.
        q.sort_by(|&x, &y| {
            if comp(x, y) {
                std::cmp::Ordering::Less
            } else if comp(y, x) {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        });
        q.truncate(k);
        return Some(q);
    }
    let nth = k - 1;
    let (mut first, mut last) = (0usize, n);
    let mut depth = 2 * (usize::BITS - 1 - n.leading_zeros()) as i64;
    while last - first > 3 {
        if depth == 0 {
            return None;
        }
        depth -= 1;
        // __unguarded_partition_pivot
        let mid = first + (last - first) / 2;
        let (a, b, c) = (first + 1, mid, last - 1);
        let median = if comp(q[a], q[b]) {
            if comp(q[b], q[c]) {
                b
            } else if comp(q[a], q[c]) {
                c
            } else {
                a
            }
        } else if comp(q[a], q[c]) {
            a
        } else if comp(q[b], q[c]) {
            c
        } else {
            b
        };
        q.swap(first, median);
        let pivot = q[first];
        let (mut lo, mut hi) = (first + 1, last);
        let cut = loop {
            while comp(q[lo], pivot) {
                lo += 1;
            }
            hi -= 1;
            while comp(pivot, q[hi]) {
                hi -= 1;
            }
            if lo >= hi {
                break lo;
            }
            q.swap(lo, hi);
            lo += 1;
        };
        if cut <= nth {
            first = cut;
        } else {
            last = cut;
        }
    }
    // __insertion_sort(first, last)
    for i in first + 1..last {
        let v = q[i];
        if comp(v, q[first]) {
            q.copy_within(first..i, first + 1);
            q[first] = v;
        } else {
            let mut j = i;
            while comp(v, q[j - 1]) {
                q[j] = q[j - 1];
                j -= 1;
            }
            q[j] = v;
        }
    }
    q.truncate(k);
    Some(q)
}

/// Multi-label greedy NMS as csrc/cuda/ml_nms.cu: visit by score descending (ties: lower
/// index first), suppress a later box whose IoU with a kept box of the same label (any label
/// when `class_agnostic`) is > `thresh`. Returns kept indices ASCENDING.
pub fn ml_nms(dets: &[Candidate], thresh: f32, class_agnostic: bool) -> Vec<usize> {
    let mut order: Vec<usize> = (0..dets.len()).collect();
    order.sort_by(|&i, &j| key(dets[j].score).cmp(&key(dets[i].score)).then(i.cmp(&j)));
    let mut removed = vec![false; dets.len()];
    let mut keep = Vec::new();
    for (oi, &i) in order.iter().enumerate() {
        if removed[i] {
            continue;
        }
        keep.push(i);
        for &j in &order[oi + 1..] {
            if !removed[j]
                && (class_agnostic || dets[j].label == dets[i].label)
                && iou(&dets[i].bbox, &dets[j].bbox) > thresh
            {
                removed[j] = true;
            }
        }
    }
    keep.sort_unstable();
    keep
}

/// inference.py:756-766: with more than `n` detections, thr = kthvalue(scores, len − n + 1)
/// (the n-th largest) and every detection with score ≥ thr stays, in the given order.
pub fn top_n_keep_ties(dets: Vec<Candidate>, n: usize) -> Vec<Candidate> {
    if dets.len() <= n || n == 0 {
        return if n == 0 { Vec::new() } else { dets };
    }
    let mut keys: Vec<u32> = dets.iter().map(|d| key(d.score)).collect();
    keys.sort_unstable_by(|a, b| b.cmp(a));
    let thr = keys[n - 1];
    dets.into_iter().filter(|d| key(d.score) >= thr).collect()
}

/// The whole ATSS post-processing of every image: candidates, NMS, top-N, in GLIP's output
/// order up to the unspecified order within a level (here (anchor, label) row-major).
pub fn postprocess(
    inp: &PackedInputs,
    image_hw: &[(f32, f32)],
    cfg: &AtssConfig,
) -> Result<Vec<Vec<Candidate>>> {
    let (batch, _) = inp.dims()?;
    if image_hw.len() != batch {
        return Err(Error::shape(
            "atss",
            format!("{} image sizes for a batch of {batch}", image_hw.len()),
        ));
    }
    image_hw
        .par_iter()
        .enumerate()
        .map(|(b, &hw)| {
            let cand = candidates(inp, b, hw, cfg)?;
            let kept: Vec<Candidate> = ml_nms(&cand, cfg.nms_thresh, cfg.class_agnostic)
                .into_iter()
                .map(|i| cand[i])
                .collect();
            Ok(top_n_keep_ties(kept, cfg.detections_per_img))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchors_match_the_spec_cells() {
        let a = anchors(&Level {
            h: 2,
            w: 3,
            stride: 8,
        });
        assert_eq!(a[0], [-28.0, -28.0, 35.0, 35.0]);
        assert_eq!(a[4], [-20.0, -20.0, 43.0, 43.0]);
        let a = anchors(&Level {
            h: 1,
            w: 1,
            stride: 128,
        });
        assert_eq!(a[0], [-448.0, -448.0, 575.0, 575.0]);
    }

    #[test]
    fn zero_delta_decodes_to_the_anchor() {
        let a = [-28.0, -28.0, 35.0, 35.0];
        assert_eq!(decode([0.0; 4], a), a);
    }

    #[test]
    fn nms_is_per_label_and_returns_ascending_indices() {
        let d = |label, score, x: f32| Candidate {
            level: 0,
            anchor: 0,
            label,
            score,
            bbox: [x, 0.0, x + 10.0, 10.0],
        };
        let dets = vec![
            d(1, 0.5, 0.0),
            d(1, 0.9, 1.0),
            d(2, 0.7, 0.0),
            d(1, 0.3, 50.0),
        ];
        assert_eq!(ml_nms(&dets, 0.6, false), vec![1, 2, 3]);
        assert_eq!(ml_nms(&dets, 0.6, true), vec![1, 3]);
    }

    #[test]
    fn top_n_keeps_ties() {
        let d = |score| Candidate {
            level: 0,
            anchor: 0,
            label: 1,
            score,
            bbox: [0.0; 4],
        };
        let v = vec![d(0.1), d(0.5), d(0.5), d(0.9)];
        assert_eq!(top_n_keep_ties(v.clone(), 2).len(), 3);
        assert_eq!(top_n_keep_ties(v, 1).len(), 1);
    }
}
