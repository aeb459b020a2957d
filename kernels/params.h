// Launch-parameter structs shared by the CUDA kernels and Rust.
// This is the ONE definition: src/backend/cuda/params.rs is generated from it by
// scripts/gen-params.sh (bindgen) and committed; the sizes are checked on both sides
// (bindgen's layout asserts in Rust, kernels/params_sizes.h static_asserts in CUDA).
// Plain C: fixed-width fields only, no pointers (pointers are separate kernel arguments).
#pragma once
#include <stdint.h>

// elementwise.cu: y = alpha * a + beta * b (b optional), casts, activations, and the
// broadcasts of a per-image / per-channel factor.
typedef struct GlipElementwiseParams {
    int64_t n;         // elements
    float alpha;
    float beta;
    int64_t inner;     // broadcasts: elements per image (scale_images) or per plane (H*W)
    int32_t channels;  // broadcasts: C (a [C] vector over the last axis, or NCHW planes)
    int32_t _pad;
} GlipElementwiseParams;

// reduce.cu: LayerNorm over rows, global average pool over planes.
typedef struct GlipReduceParams {
    int64_t rows;   // rows (LayerNorm) or planes (average pool)
    int64_t width;  // elements per row / plane
    float eps;
    int32_t _pad;
} GlipReduceParams;

// group_norm.cu: GroupNorm over several NCHW levels in one launch. Each level is its own
// tensor, reached through the device addresses below (a grouped launch, as a pointer-array
// batched GEMM).
typedef struct GlipGroupNormLevel {
    uint64_t x;      // device address of the level's input, [B, C, hw] f16
    uint64_t y;      // device address of its output, same shape (may not alias any x)
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

// logits.cu: dot-product region-word logits, text projection, phrase MEAN aggregation.
// One level of a grouped dot-product launch, reached through device addresses.
typedef struct GlipLogitsLevel {
    uint64_t visual;     // [B, dim, n_pos] (channel-major) or [B, n_pos, dim], f16 or f32
    uint64_t out;        // [B, n_pos, n_txt] f32
    int32_t n_pos;       // positions of the level (H * W)
    int32_t first_tile;  // first blockIdx.x of the level (tiles of 64 positions)
} GlipLogitsLevel;

typedef struct GlipLogitsParams {
    int32_t batch;
    int32_t n_pos;          // image positions of this launch (one level, or all levels)
    int32_t n_txt;          // text tokens T
    int32_t dim;            // joint embedding 256
    int32_t lang_dim;       // text hidden size (768), text projection only
    int32_t channel_major;  // 1: visual [B, dim, n_pos] (an NCHW level); 0: [B, n_pos, dim]
    int32_t out_rows;       // rows per image of the logits buffer (>= out_row0 + n_pos)
    int32_t out_row0;       // first row written (level offset in a packed [B, N, T] buffer)
    int32_t num_labels;     // phrase_mean: label columns of the score tensor (80)
    float scale;            // exp(log_scale): GLIP divides the dot product by it
    float clamp;            // 50000
    float bias0;            // text projection: token bias offset
    float eps;              // text projection: F.normalize eps 1e-12
    int32_t num_levels;     // dot_levels: levels of the grouped launch (<= 8)
    GlipLogitsLevel levels[8];
} GlipLogitsParams;

// nms.cu: ATSS candidate selection, decode and multi-label NMS.
typedef struct GlipNmsLevel {
    int32_t h;
    int32_t w;
    int32_t stride;
    int32_t anchor_offset;  // first position of this level in the concatenated axis
} GlipNmsLevel;

typedef struct GlipNmsParams {
    int32_t batch;              // <= 16 (backend/atss.rs MAX_BATCH: img_h, img_w)
    int32_t num_levels;         // <= 8
    int32_t num_labels;         // columns of the score tensor (80)
    int32_t n_pos;              // positions over all levels
    int32_t pre_nms_top_n;      // 1000
    int32_t max_candidates;     // per image capacity: num_levels * pre_nms_top_n (<= 8192)
    int32_t sort_size;          // power of two >= max_candidates (bitonic width)
    int32_t col_blocks;         // ceil(max_candidates / 64): 64-bit words per NMS mask row
    int32_t detections_per_img; // 100
    int32_t class_agnostic;     // 0: multi-label (GLIP), 1: one label space
    float score_thresh;         // 0.05
    float nms_thresh;           // 0.6
    float min_size;             // remove_small_boxes (0)
    float bbox_clip;            // ln(1000/16)
    float img_h[16];            // per image: un-padded resized size
    float img_w[16];
    GlipNmsLevel levels[8];
} GlipNmsParams;

// gemm.cu: C[m, n] = A[m, k] · op(B) + bias[n] on tensor cores.
typedef struct GlipGemmParams {
    int32_t m;
    int32_t n;
    int32_t k;
    int32_t _pad;
} GlipGemmParams;

// layout.cu: index-map gathers. Each output element is read from one source element (or is
// zero padding), so every op of the family is one grid-stride launch over its output.
// "Rows" are [B, rows, C] token sequences; "planes" are NCHW [B, C, H*W].
typedef struct GlipLayoutParams {
    int64_t n;          // output elements of this launch
    int64_t src_rows;   // rows per image of a rows-side source (0: every image reads image 0)
    int64_t dst_rows;   // rows per image of a rows-side destination
    int64_t row0;       // first row of this part in the packed rows side
    int32_t batch;
    int32_t channels;   // C: width of a row (copy_rows: elements per image and row)
    int32_t h;          // source spatial size (rows side: the level's H, W)
    int32_t w;
    int32_t oh;         // destination spatial size (padded grid, window grid, upsampled)
    int32_t ow;
    int32_t window;     // Swin window M
    int32_t shift;      // Swin cyclic shift (roll by -shift)
    float scale_h;      // upsampling: source step per output row / column, computed on the
    float scale_w;      // host exactly as the CPU twin computes it
    int32_t ksize;      // im2col: square kernel size k
    int32_t stride;     // im2col: convolution stride
    int32_t pad;        // im2col: zero padding on every side
    int32_t cols;       // im2col: row width of the column matrix (cin*k*k rounded up to 8)
} GlipLayoutParams;

// attention.cu: softmax attention of T queries over T keys per (sequence, head), one warp
// per query, online softmax (scores stay in registers). q, k, v rows live in buffers of
// row stride `ld` at column offsets q_off/k_off/v_off + head * head_dim (BERT: three
// [B, T, H] tensors; Swin: one packed [B*nW, M*M, 3C] qkv); out is [seqs, T, out_ld].
typedef struct GlipAttnParams {
    int32_t seqs;         // sequences (BERT: batch; Swin: B * nW windows)
    int32_t tokens;       // T (queries = keys)
    int32_t heads;
    int32_t head_dim;     // <= 128
    int32_t ld;           // row stride of q, k, v
    int32_t q_off;
    int32_t k_off;
    int32_t v_off;
    int32_t out_ld;       // row stride of the output (heads * head_dim)
    int32_t num_windows;  // Swin: windows per image, for the region ids (0: no shift mask)
    float scale;          // BERT: divide the product by it (sqrt hd); Swin: multiply q by it
    float clamp;          // BERT: clamp the scaled score to +-clamp (0: none)
    float mask_fill;      // BERT: (1 - mask) * mask_fill added for every key
    float shift_mask;     // Swin: added between tokens of different regions (-100)
} GlipAttnParams;
