// Launch-parameter structs shared by the CUDA kernels and Rust.
// This is the ONE definition: src/backend/cuda/params.rs is generated from it by
// scripts/gen-params.sh (bindgen) and committed; the sizes are checked on both sides
// (bindgen's layout asserts in Rust, kernels/params_sizes.h static_asserts in CUDA).
// Plain C: fixed-width fields only, no pointers (pointers are separate kernel arguments).
#pragma once
#include <stdint.h>

// elementwise.cu: y = alpha * a + beta * b (b optional), casts.
typedef struct GlipElementwiseParams {
    int64_t n;     // elements
    float alpha;
    float beta;
} GlipElementwiseParams;

// group_norm.cu: GroupNorm over several NCHW levels in one launch.
typedef struct GlipGroupNormLevel {
    int64_t offset;  // element offset of this level in the packed buffer
    int32_t hw;      // H * W of the level
    int32_t _pad;
} GlipGroupNormLevel;

typedef struct GlipGroupNormParams {
    int32_t batch;
    int32_t channels;
    int32_t groups;
    int32_t num_levels;   // <= 8
    float eps;
    int32_t activation;   // 0 none, 1 relu
    GlipGroupNormLevel levels[8];
} GlipGroupNormParams;

// deform_conv.cu: modulated deformable conv 3x3 (DCNv2), NCHW.
typedef struct GlipDeformConvParams {
    int32_t batch;
    int32_t in_channels;
    int32_t out_channels;
    int32_t in_h;
    int32_t in_w;
    int32_t out_h;
    int32_t out_w;
    int32_t stride;
    int32_t pad;
    // Per-image element stride of the offset (18 ch) and mask (9 ch) buffers. GLIP's quirk:
    // the coarser-level branch reads the current level's buffer as if it were [18, out_h,
    // out_w], so the batch stride can differ from 18 * out_h * out_w.
    int64_t offset_batch_stride;
    int64_t mask_batch_stride;
} GlipDeformConvParams;

// bi_attn.cu: bi-directional cross-attention per head (VLFuse).
typedef struct GlipBiAttnParams {
    int32_t batch;
    int32_t heads;
    int32_t head_dim;
    int32_t n_img;        // image positions (all levels)
    int32_t n_txt;        // text tokens
    int32_t img_splits;   // partitions of the image axis for the text->image direction
    float clamp;          // 50000
    float text_pad_fill;  // -9e15 (GLIP masked_fill); real tokens get +1
} GlipBiAttnParams;

// logits.cu: dot-product region-word logits.
typedef struct GlipLogitsParams {
    int32_t batch;
    int32_t n_pos;        // image positions
    int32_t n_txt;
    int32_t dim;          // 256
    float inv_scale;      // 1 / exp(log_scale)
    float clamp;          // 50000
} GlipLogitsParams;

// nms.cu: ATSS candidate selection, decode and multi-label NMS.
typedef struct GlipNmsLevel {
    int32_t h;
    int32_t w;
    int32_t stride;
    int32_t anchor_offset;  // first position of this level in the concatenated axis
} GlipNmsLevel;

typedef struct GlipNmsParams {
    int32_t batch;
    int32_t num_levels;
    int32_t num_labels;      // columns of the score tensor (80)
    int32_t n_pos;           // positions over all levels
    int32_t pre_nms_top_n;   // 1000
    int32_t max_candidates;  // per image capacity (num_levels * pre_nms_top_n)
    int32_t detections_per_img;  // 100
    int32_t class_agnostic;  // 0: multi-label (GLIP), 1: one label space
    float score_thresh;      // 0.05
    float nms_thresh;        // 0.6
    float img_h;             // un-padded resized size
    float img_w;
    float bbox_clip;         // ln(1000/16)
    int32_t _pad;
    GlipNmsLevel levels[8];
} GlipNmsParams;
