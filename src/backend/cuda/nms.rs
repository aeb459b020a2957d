//! Launch wrappers for kernels/nms.cu: batched ATSS post-processing (candidate selection,
//! decode, multi-label bitmask NMS, top-N with ties) with fixed-size outputs and a count per
//! image; nothing is read back until [`NmsOutputs::download`].

use super::params::{GlipNmsLevel, GlipNmsParams};
use super::DeviceBuffer;
use super::{to_i32, CudaBackend};
use crate::backend::cpu::nms::{
    bbox_clip, level_offsets, AtssConfig, Candidate, Level, MAX_BATCH, MAX_LEVELS,
};
use crate::error::{Error, Result};
use crate::kernels::names;
use cudarc::driver::LaunchConfig;

const FAMILY: &str = "nms";
/// Per-image candidate capacity the kernels support (num_levels × pre_nms_top_n).
pub const MAX_CANDIDATES: usize = 8192;

/// The image slots of the parameter block (params.h `img_h`, `img_w`): what MAX_BATCH is.
const fn slots<const N: usize>(_: fn(&GlipNmsParams) -> &[f32; N]) -> usize {
    N
}
const _: () = assert!(slots(|p| &p.img_h) == MAX_BATCH && slots(|p| &p.img_w) == MAX_BATCH);

/// Launch parameters for a batch: `image_hw` the (h, w) of each resized, un-padded image.
pub fn params(
    levels: &[Level],
    num_labels: usize,
    image_hw: &[(f32, f32)],
    cfg: &AtssConfig,
) -> Result<GlipNmsParams> {
    let batch = image_hw.len();
    if batch == 0 || batch > MAX_BATCH {
        return Err(Error::shape(
            "nms",
            format!("batch {batch} outside 1..={MAX_BATCH}"),
        ));
    }
    if levels.is_empty() || levels.len() > MAX_LEVELS {
        return Err(Error::shape(
            "nms",
            format!("{} levels outside 1..={MAX_LEVELS}", levels.len()),
        ));
    }
    if cfg.glip_topk_order {
        return Err(Error::Invalid(
            "the CUDA post-processing orders candidates row-major; glip_topk_order is CPU-only"
                .into(),
        ));
    }
    let max_candidates = levels.len() * cfg.pre_nms_top_n;
    if cfg.pre_nms_top_n == 0 || max_candidates > MAX_CANDIDATES {
        return Err(Error::shape(
            "nms",
            format!(
                "{} levels × pre_nms_top_n {} exceeds {MAX_CANDIDATES}",
                levels.len(),
                cfg.pre_nms_top_n
            ),
        ));
    }
    let offsets = level_offsets(levels);
    let n_pos = offsets[levels.len()];
    to_i32(
        "nms",
        "batch * n_pos * num_labels",
        batch * n_pos * num_labels,
    )?;
    let mut p = GlipNmsParams {
        batch: batch as i32,
        num_levels: levels.len() as i32,
        num_labels: to_i32("nms", "num_labels", num_labels)?,
        n_pos: to_i32("nms", "n_pos", n_pos)?,
        pre_nms_top_n: to_i32("nms", "pre_nms_top_n", cfg.pre_nms_top_n)?,
        max_candidates: max_candidates as i32,
        sort_size: max_candidates.next_power_of_two().max(2) as i32,
        col_blocks: max_candidates.div_ceil(64) as i32,
        detections_per_img: to_i32("nms", "detections_per_img", cfg.detections_per_img)?,
        class_agnostic: cfg.class_agnostic as i32,
        score_thresh: cfg.pre_nms_thresh,
        nms_thresh: cfg.nms_thresh,
        min_size: cfg.min_size,
        bbox_clip: bbox_clip(),
        ..Default::default()
    };
    for ((&(h, w), ph), pw) in image_hw.iter().zip(&mut p.img_h).zip(&mut p.img_w) {
        *ph = h;
        *pw = w;
    }
    for (l, lv) in levels.iter().enumerate() {
        p.levels[l] = GlipNmsLevel {
            h: to_i32("nms", "h", lv.h)?,
            w: to_i32("nms", "w", lv.w)?,
            stride: to_i32("nms", "stride", lv.stride)?,
            anchor_offset: to_i32("nms", "anchor_offset", offsets[l])?,
        };
    }
    Ok(p)
}

/// Scratch buffers of one batch, allocated by the caller once and reused.
pub struct NmsWorkspace {
    cand_boxes: DeviceBuffer<f32>,
    cand_scores: DeviceBuffer<f32>,
    cand_labels: DeviceBuffer<i32>,
    cand_pos: DeviceBuffer<i32>,
    level_counts: DeviceBuffer<i32>,
    sort_keys: DeviceBuffer<u64>,
    sorted_count: DeviceBuffer<i32>,
    mask: DeviceBuffer<u64>,
    keep_sorted: DeviceBuffer<u8>,
}

fn dims(p: &GlipNmsParams) -> (usize, usize, usize, usize, usize) {
    (
        p.batch as usize,
        p.max_candidates as usize,
        p.sort_size as usize,
        p.col_blocks as usize,
        p.num_levels as usize,
    )
}

impl NmsWorkspace {
    pub fn new(be: &CudaBackend, p: &GlipNmsParams) -> Result<Self> {
        let (b, mc, ss, cb, nl) = dims(p);
        let s = be;
        Ok(NmsWorkspace {
            cand_boxes: s.alloc_scratch(b * mc * 4)?,
            cand_scores: s.alloc_scratch(b * mc)?,
            cand_labels: s.alloc_scratch(b * mc)?,
            cand_pos: s.alloc_scratch(b * mc)?,
            level_counts: s.alloc_scratch(b * nl)?,
            sort_keys: s.alloc_scratch(b * ss)?,
            sorted_count: s.alloc_scratch(b)?,
            mask: s.alloc_scratch(b * mc * cb)?,
            keep_sorted: s.alloc_scratch(b * mc)?,
        })
    }
    fn fits(&self, p: &GlipNmsParams) -> bool {
        let (b, mc, ss, cb, nl) = dims(p);
        self.cand_boxes.len() >= b * mc * 4
            && self.cand_scores.len() >= b * mc
            && self.cand_labels.len() >= b * mc
            && self.cand_pos.len() >= b * mc
            && self.level_counts.len() >= b * nl
            && self.sort_keys.len() >= b * ss
            && self.sorted_count.len() >= b
            && self.mask.len() >= b * mc * cb
            && self.keep_sorted.len() >= b * mc
    }
}

/// Fixed-size results: per image up to max_candidates rows (more than detections_per_img
/// only with ties at the last score) and a count.
pub struct NmsOutputs {
    /// [B, max_candidates, 4] xyxy.
    pub boxes: DeviceBuffer<f32>,
    /// [B, max_candidates].
    pub scores: DeviceBuffer<f32>,
    /// [B, max_candidates] 1-based labels.
    pub labels: DeviceBuffer<i32>,
    /// [B, max_candidates] packed positions (level offset + anchor index).
    pub pos: DeviceBuffer<i32>,
    /// [B] rows per image.
    pub count: DeviceBuffer<i32>,
}

impl NmsOutputs {
    pub fn new(be: &CudaBackend, p: &GlipNmsParams) -> Result<Self> {
        let (b, mc, ..) = dims(p);
        let s = be;
        Ok(NmsOutputs {
            boxes: s.alloc_scratch(b * mc * 4)?,
            scores: s.alloc_scratch(b * mc)?,
            labels: s.alloc_scratch(b * mc)?,
            pos: s.alloc_scratch(b * mc)?,
            count: s.alloc_scratch(b)?,
        })
    }

    /// Read the detections back (synchronises the stream), as the CPU twin's candidates.
    pub fn download(
        &self,
        be: &CudaBackend,
        p: &GlipNmsParams,
        levels: &[Level],
    ) -> Result<Vec<Vec<Candidate>>> {
        let (b_, mc, ..) = dims(p);
        let count = be.download(&self.count)?;
        let boxes = be.download(&self.boxes)?;
        let scores = be.download(&self.scores)?;
        let labels = be.download(&self.labels)?;
        let pos = be.download(&self.pos)?;
        let offsets = level_offsets(levels);
        let mut out = Vec::with_capacity(b_);
        for (b, &n) in count.iter().enumerate().take(b_) {
            let n = usize::try_from(n)
                .map_err(|_| Error::Cuda(format!("nms: negative count {n}")))?
                .min(mc);
            let mut v = Vec::with_capacity(n);
            for i in b * mc..b * mc + n {
                let gp = usize::try_from(pos[i])
                    .map_err(|_| Error::Cuda(format!("nms: bad position {}", pos[i])))?;
                let level = offsets
                    .partition_point(|&o| o <= gp)
                    .saturating_sub(1)
                    .min(levels.len().saturating_sub(1));
                v.push(Candidate {
                    level,
                    anchor: gp - offsets[level],
                    label: labels[i].max(0) as u32,
                    score: scores[i],
                    bbox: [
                        boxes[4 * i],
                        boxes[4 * i + 1],
                        boxes[4 * i + 2],
                        boxes[4 * i + 3],
                    ],
                });
            }
            out.push(v);
        }
        Ok(out)
    }
}

/// The kernels index with every field of `p`, and `GlipNmsParams` can be built by hand, so
/// the relations [`params`] establishes are re-checked before a launch.
fn check_params(p: &GlipNmsParams) -> Result<()> {
    let (b, nl, top_n) = (p.batch, p.num_levels, p.pre_nms_top_n);
    let mc = i64::from(nl) * i64::from(top_n);
    let ok = (1..=MAX_BATCH as i32).contains(&b)
        && (1..=MAX_LEVELS as i32).contains(&nl)
        && top_n >= 1
        && p.num_labels >= 0
        && p.n_pos >= 0
        && i64::from(p.max_candidates) == mc
        && mc <= MAX_CANDIDATES as i64
        && p.sort_size >= 2
        && (p.sort_size as u32).is_power_of_two()
        && i64::from(p.sort_size) >= mc
        && i64::from(p.col_blocks) == (mc + 63) / 64
        && p.levels[..nl as usize].iter().all(|l| {
            l.h >= 0
                && l.w >= 0
                && l.stride >= 0
                && l.anchor_offset >= 0
                && i64::from(l.anchor_offset) + i64::from(l.h) * i64::from(l.w)
                    <= i64::from(p.n_pos)
        });
    if !ok {
        return Err(Error::shape(
            "nms",
            "inconsistent GlipNmsParams (build them with nms::params)",
        ));
    }
    Ok(())
}

fn cfg(grid: (u32, u32, u32), block: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: grid,
        block_dim: (block, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// The whole post-processing of a batch, five launches, no host synchronisation.
/// scores [B, n_pos, num_labels] f32 (phrase MEAN of sigmoids), centerness [B, n_pos] f32
/// logits, bbox_reg [B, n_pos, 4] f32 deltas; positions packed over the levels in order.
pub fn atss_postprocess(
    be: &CudaBackend,
    p: &GlipNmsParams,
    scores: &DeviceBuffer<f32>,
    centerness: &DeviceBuffer<f32>,
    bbox_reg: &DeviceBuffer<f32>,
    ws: &mut NmsWorkspace,
    out: &mut NmsOutputs,
) -> Result<()> {
    check_params(p)?;
    let (b, mc, _, cb, nl) = dims(p);
    let n = b * p.n_pos as usize;
    if scores.len() < n * p.num_labels as usize || centerness.len() < n || bbox_reg.len() < n * 4 {
        return Err(Error::shape(
            "nms",
            format!(
                "inputs {} / {} / {} for {n} positions",
                scores.len(),
                centerness.len(),
                bbox_reg.len()
            ),
        ));
    }
    if !ws.fits(p) {
        return Err(Error::shape(
            "nms",
            "workspace allocated for a smaller batch or capacity",
        ));
    }
    if out.boxes.len() < b * mc * 4
        || out.scores.len() < b * mc
        || out.labels.len() < b * mc
        || out.pos.len() < b * mc
        || out.count.len() < b
    {
        return Err(Error::shape(
            "nms",
            "outputs allocated for a smaller batch or capacity",
        ));
    }
    if mc > MAX_CANDIDATES || b > MAX_BATCH || nl > MAX_LEVELS {
        return Err(Error::shape("nms", "params beyond the kernels' capacities"));
    }
    let s = be;

    let f = be.function(FAMILY, names::GLIP_NMS_SELECT_F32)?;
    let mut l = s.launch_builder(&f);
    l.arg(p).arg(scores).arg(centerness).arg(bbox_reg);
    l.arg(&mut ws.cand_boxes)
        .arg(&mut ws.cand_scores)
        .arg(&mut ws.cand_labels)
        .arg(&mut ws.cand_pos)
        .arg(&mut ws.level_counts);
    // SAFETY: block (level, image) reads its level's rows of the inputs (extents checked
    // against n_pos and num_labels) and writes slots [level*top_n, level*top_n + top_n) of its
    // image in the candidate buffers (capacity checked by `fits`).
    unsafe { l.launch(cfg((nl as u32, b as u32, 1), 1024)) }?;

    let f = be.function(FAMILY, names::GLIP_NMS_SORT_F32)?;
    let mut l = s.launch_builder(&f);
    l.arg(p)
        .arg(&ws.cand_scores)
        .arg(&ws.cand_labels)
        .arg(&ws.level_counts)
        .arg(&mut ws.sort_keys)
        .arg(&mut ws.sorted_count);
    // SAFETY: block b reads its image's candidate slots and writes sort_keys[b*sort_size..) and
    // sorted_count[b]; capacities checked by `fits`.
    unsafe { l.launch(cfg((b as u32, 1, 1), 1024)) }?;

    let f = be.function(FAMILY, names::GLIP_NMS_MASK_F32)?;
    let mut l = s.launch_builder(&f);
    l.arg(p)
        .arg(&ws.cand_boxes)
        .arg(&ws.cand_labels)
        .arg(&ws.sort_keys)
        .arg(&ws.sorted_count)
        .arg(&mut ws.mask);
    // SAFETY: block (col, row, b) reads sorted boxes < sorted_count[b] <= max_candidates and
    // writes mask rows of image b at word col < col_blocks; capacities checked by `fits`.
    unsafe { l.launch(cfg((cb as u32, cb as u32, b as u32), 64)) }?;

    let f = be.function(FAMILY, names::GLIP_NMS_REDUCE_F32)?;
    let mut l = s.launch_builder(&f);
    l.arg(p)
        .arg(&ws.mask)
        .arg(&ws.sorted_count)
        .arg(&mut ws.keep_sorted);
    // SAFETY: warp b reads the mask words the mask kernel wrote for its image and writes
    // keep_sorted[b*max_candidates + i] for i < sorted_count[b]; col_blocks <= 128 (checked).
    unsafe { l.launch(cfg((b as u32, 1, 1), 32)) }?;

    let f = be.function(FAMILY, names::GLIP_NMS_FINALIZE_F32)?;
    let mut l = s.launch_builder(&f);
    l.arg(p)
        .arg(&ws.cand_boxes)
        .arg(&ws.cand_scores)
        .arg(&ws.cand_labels)
        .arg(&ws.cand_pos);
    l.arg(&ws.sort_keys)
        .arg(&ws.keep_sorted)
        .arg(&ws.sorted_count);
    l.arg(&mut out.boxes)
        .arg(&mut out.scores)
        .arg(&mut out.labels)
        .arg(&mut out.pos)
        .arg(&mut out.count);
    // SAFETY: block b reads its image's workspace rows and writes at most max_candidates rows
    // of its image in the outputs (capacities checked above) and count[b].
    unsafe { l.launch(cfg((b as u32, 1, 1), 1024)) }?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_params_pass_the_launch_check_and_tampered_ones_fail() -> crate::Result<()> {
        let levels = [
            Level {
                h: 100,
                w: 168,
                stride: 8,
            },
            Level {
                h: 7,
                w: 11,
                stride: 128,
            },
        ];
        let p = params(&levels, 80, &[(800.0, 1333.0)], &AtssConfig::default())?;
        check_params(&p)?;
        let bad = [
            GlipNmsParams {
                sort_size: 1536,
                ..p
            },
            GlipNmsParams { col_blocks: 1, ..p },
            GlipNmsParams { n_pos: 100, ..p },
            GlipNmsParams {
                max_candidates: 8192,
                ..p
            },
            GlipNmsParams {
                batch: MAX_BATCH as i32 + 1,
                ..p
            },
        ];
        for q in &bad {
            assert!(check_params(q).is_err());
        }
        Ok(())
    }
}
