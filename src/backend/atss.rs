//! The shapes of GLIP's ATSS post-processing (spec §3.7–3.9) that every backend and the
//! model share: pyramid levels of the packed position axis, the settings, one detection, and
//! the positive map in compressed form. The arithmetic lives in the backends (the CPU twins
//! in backend/cpu/{nms,logits}.rs, the kernels behind backend/cuda/{nms,logits}.rs) and is
//! reached through the op interface (`Backend::phrase_scores`, `Backend::atss_postprocess`).

use crate::error::{Error, Result};

/// At most this many images per batched kernel launch (GlipNmsParams holds 16 image sizes):
/// a batch of 16 frames is one post-processing call.
pub const MAX_BATCH: usize = 16;
/// At most this many pyramid levels (GlipNmsParams holds 8 levels).
pub const MAX_LEVELS: usize = 8;

/// The dw/dh clip, ln(1000/16), computed in f64 and rounded once as torch.clamp does.
pub fn bbox_clip() -> f32 {
    (1000.0f64 / 16.0).ln() as f32
}

/// One pyramid level of the packed position axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Level {
    pub h: usize,
    pub w: usize,
    pub stride: usize,
}

impl Level {
    pub fn hw(&self) -> usize {
        self.h * self.w
    }
    /// GLIP-T's anchor size for this stride (ANCHOR_SIZES = 8 × ANCHOR_STRIDE).
    pub fn anchor_size(&self) -> usize {
        8 * self.stride
    }
}

/// The first packed position of every level, plus the total as the last element.
pub fn level_offsets(levels: &[Level]) -> Vec<usize> {
    let mut o = Vec::with_capacity(levels.len() + 1);
    let mut acc = 0;
    o.push(0);
    for l in levels {
        acc += l.hw();
        o.push(acc);
    }
    o
}

/// ATSS post-processing settings (GLIP-T defaults: `AtssConfig::default()`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AtssConfig {
    /// Candidates need an aggregated probability strictly above this (before centerness).
    pub pre_nms_thresh: f32,
    /// Per level and image, at most this many candidates (by score × sigmoid(centerness)).
    pub pre_nms_top_n: usize,
    /// A box is suppressed when its IoU (+1 widths) with a kept box exceeds this.
    pub nms_thresh: f32,
    /// Keep this many detections per image (plus ties at the last score).
    pub detections_per_img: usize,
    /// remove_small_boxes' min_size (0 in GLIP: only drops NaN boxes).
    pub min_size: f32,
    /// Suppress across labels (one label space) instead of GLIP's per-label NMS.
    pub class_agnostic: bool,
    /// Order each level's candidates as torch's CPU `topk(sorted=False)` does (libstdc++
    /// nth_element), so the output order is GLIP's own; otherwise (anchor, label) row-major,
    /// the order the CUDA kernels produce. The sets are the same either way.
    pub glip_topk_order: bool,
}

impl Default for AtssConfig {
    fn default() -> Self {
        AtssConfig {
            pre_nms_thresh: 0.05,
            pre_nms_top_n: 1000,
            nms_thresh: 0.6,
            detections_per_img: 100,
            min_size: 0.0,
            class_agnostic: false,
            glip_topk_order: false,
        }
    }
}

/// One detection (or pre-NMS candidate) of one image.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Candidate {
    /// Pyramid level (0 = stride 8).
    pub level: usize,
    /// Anchor index within the level (y·w + x).
    pub anchor: usize,
    /// 1-based label (column + 1).
    pub label: u32,
    /// sqrt(probability × sigmoid(centerness)).
    pub score: f32,
    /// xyxy in pixels of the resized, un-padded network input, clipped to it.
    pub bbox: [f32; 4],
}

/// A positive map in compressed form: label `labels[i]` (1-based) owns the token indices
/// `tokens[offsets[i]..offsets[i + 1]]`. The kernel reads the same three arrays.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PositiveMapCsr {
    pub labels: Vec<u32>,
    pub offsets: Vec<usize>,
    pub tokens: Vec<usize>,
}

impl PositiveMapCsr {
    /// From (label, tokens) pairs; checks labels ≥ 1 and ≤ `num_labels` (GLIP raises an index
    /// error for a label beyond the score tensor, spec §8 item 8) and tokens < `n_txt`.
    pub fn new(map: &[(u32, Vec<usize>)], num_labels: usize, n_txt: usize) -> Result<Self> {
        let mut csr = PositiveMapCsr {
            offsets: vec![0],
            ..Default::default()
        };
        for (label, toks) in map {
            if *label == 0 || *label as usize > num_labels {
                return Err(Error::Prompt(format!(
                    "label {label} is outside 1..={num_labels} (the head has {num_labels} label columns)"
                )));
            }
            if let Some(t) = toks.iter().find(|&&t| t >= n_txt) {
                return Err(Error::Prompt(format!(
                    "label {label} maps to token {t}, but the text has {n_txt} tokens"
                )));
            }
            csr.labels.push(*label);
            csr.tokens.extend_from_slice(toks);
            csr.offsets.push(csr.tokens.len());
        }
        Ok(csr)
    }
}
