//! GLIP's ATSS post-processing of the head outputs (spec §3.7–3.10, `modeling/rpn/inference.py`
//! 592-789): phrase MEAN of token sigmoids, threshold, centerness, top-k per level, decode,
//! clip, multi-label NMS, top-100 with ties; and the mapping back to the original image.
//!
//! The arithmetic is the CPU twins of the `logits` and `nms` kernel families.

use super::head::HeadOutputs;
use crate::backend::atss::{AtssConfig, PositiveMapCsr};
use crate::backend::Backend;
use crate::error::{Error, Result};

pub use crate::backend::atss::Candidate as Detection;

/// GLIP-T's anchor strides, P3..P7 (anchor sizes are 8 × stride).
pub const GLIP_T_STRIDES: [usize; 5] = [8, 16, 32, 64, 128];

/// Post-processing settings: ATSSPostProcessor's thresholds plus the anchor strides.
#[derive(Clone, Debug, PartialEq)]
pub struct PostprocessConfig {
    pub atss: AtssConfig,
    /// One anchor stride per level, P3 first.
    pub anchor_strides: Vec<usize>,
}

impl Default for PostprocessConfig {
    fn default() -> Self {
        PostprocessConfig {
            atss: AtssConfig::default(),
            anchor_strides: GLIP_T_STRIDES.to_vec(),
        }
    }
}

/// The detections of one image, in GLIP's output order (ascending concatenation index:
/// levels in order, within a level (anchor, label) row-major — GLIP's own within-level order
/// comes from topk(sorted=False) and is unspecified).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Detections {
    /// (h, w) of the resized, un-padded network input the boxes refer to.
    pub image_hw: (usize, usize),
    pub detections: Vec<Detection>,
}

fn image_sizes(image_sizes: &[(usize, usize)], batch: usize) -> Result<Vec<(f32, f32)>> {
    if image_sizes.len() != batch {
        return Err(Error::shape(
            "postprocess",
            format!("{} image sizes for a batch of {batch}", image_sizes.len()),
        ));
    }
    Ok(image_sizes
        .iter()
        .map(|&(h, w)| (h as f32, w as f32))
        .collect())
}

/// Final detections of every image, computed on the backend that holds `outputs` (on CUDA
/// the kernels of the logits and nms families: only the final rows come to the host).
/// `positive_map`: (1-based label, token indices) pairs (GLIP's
/// positive_map_label_to_token); `image_sizes`: (h, w) of each resized, un-padded input
/// (boxes are clipped to it).
pub fn postprocess(
    be: &dyn Backend,
    outputs: &HeadOutputs,
    positive_map: &[(u32, Vec<usize>)],
    image_sizes: &[(usize, usize)],
    config: &PostprocessConfig,
) -> Result<Vec<Detections>> {
    let hw = self::image_sizes(image_sizes, outputs.batch)?;
    let levels = outputs.levels(&config.anchor_strides)?;
    let map = PositiveMapCsr::new(positive_map, outputs.num_labels, outputs.num_tokens)?;
    let (ctr, reg, logits) = outputs.packed(be)?;
    let scores = be.phrase_scores(&logits, &map, outputs.num_labels)?;
    drop(logits);
    let per = be.atss_postprocess(&scores, &ctr, &reg, &levels, &hw, &config.atss)?;
    Ok(per
        .into_iter()
        .zip(image_sizes)
        .map(|(detections, &image_hw)| Detections {
            image_hw,
            detections,
        })
        .collect())
}

/// BoxList.resize to the original image (spec §3.10, bounding_box.py:110-146): with equal
/// ratios every coordinate × ratio, otherwise x × (W0 / W) and y × (H0 / H); no +1 adjustment.
/// `to_hw` is the original image's (h, w).
pub fn to_original_image(dets: &Detections, to_hw: (usize, usize)) -> Detections {
    let (h, w) = dets.image_hw;
    let rw = to_hw.1 as f64 / w as f64;
    let rh = to_hw.0 as f64 / h as f64;
    let (rx, ry) = if rw == rh {
        (rw as f32, rw as f32)
    } else {
        (rw as f32, rh as f32)
    };
    let detections = dets
        .detections
        .iter()
        .map(|d| {
            let b = d.bbox;
            Detection {
                bbox: [b[0] * rx, b[1] * ry, b[2] * rx, b[3] * ry],
                ..*d
            }
        })
        .collect();
    Detections {
        image_hw: to_hw,
        detections,
    }
}

/// COCO-style [x, y, w, h] of an xyxy box with GLIP's +1 widths (bounding_box.py:85-90).
pub fn xyxy_to_xywh(b: [f32; 4]) -> [f32; 4] {
    [b[0], b[1], b[2] - b[0] + 1.0, b[3] - b[1] + 1.0]
}
