// GLIP's ATSS post-processing on the GPU (spec §3.7-3.9), batched, no host synchronisation:
//   select:   per (image, level) block: radix-select of the pre_nms_top_n largest
//             score*sigmoid(centerness) among entries with score > thresh, ordered compaction
//             (row-major (anchor, label) order), decode (+1 convention), sqrt, clip
//   sort:     per image: bitonic sort of (score bits, ~slot) keys, descending
//   mask:     64 x 64 IoU bitmask blocks as csrc/cuda/ml_nms.cu (same label, IoU > thr)
//   reduce:   per image, one warp: the sequential greedy pass over the bitmask
//   finalize: per image: kthvalue top-N with ties, ordered compaction by slot (ascending
//             concatenation index, GLIP's order)
// Scores and boxes are f32 (small tensors); every ordering decision compares float bit
// patterns and indices, as the CPU twin (src/backend/cpu/nms.rs) does.
#include "common.cuh"

#define GLIP_NMS_THREADS 1024
#define GLIP_NMS_ITEMS 8
#define GLIP_NMS_MAX_CAND 8192
#define GLIP_NMS_MAX_WORDS_PER_LANE 4  // col_blocks <= 128

// torch.clamp keeps NaN (fminf/fmaxf would replace it).
GLIP_DEVICE float glip_nms_clamp(float v, float lo, float hi) { return v < lo ? lo : (v > hi ? hi : v); }

// Exclusive prefix sum over the block (blockDim.x multiple of 32); *total gets the sum.
// sh: [32] shared scratch.
GLIP_DEVICE int glip_nms_block_scan(int v, int* total, int* sh) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    int x = v;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        int y = __shfl_up_sync(0xffffffffu, x, o);
        if (lane >= o) x += y;
    }
    __syncthreads();  // sh may still be read by a previous call
    if (lane == 31) sh[warp] = x;
    __syncthreads();
    if (warp == 0) {
        int w = lane < nwarps ? sh[lane] : 0;
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            int y = __shfl_up_sync(0xffffffffu, w, o);
            if (lane >= o) w += y;
        }
        sh[lane] = w;
    }
    __syncthreads();
    *total = sh[nwarps - 1];
    return (warp > 0 ? sh[warp - 1] : 0) + x - v;
}

// Entry e = anchor * num_labels + label of one level: whether it is a candidate, and its
// ranking value s = score * sigmoid(centerness) with key = its bit pattern (s >= 0 or NaN,
// so unsigned order = float order with NaN first, as torch.topk).
GLIP_DEVICE bool glip_nms_entry(const float* sc, const float* ctr, int nl, float thresh, int64_t e, unsigned& key, float& s) {
    const float v = sc[e];
    if (!(v > thresh)) return false;
    s = __fmul_rn(v, glip_sigmoid(ctr[e / nl]));
    key = __float_as_uint(s);
    return true;
}

// BoxCoder.decode (vldyhead.py:61-94) with explicit rounding so nvcc does not contract into
// FMAs the CPU twin does not use.
GLIP_DEVICE void glip_nms_decode(const float* d, float x1, float y1, float x2, float y2, float clip, float* o) {
    const float widths = __fadd_rn(__fsub_rn(x2, x1), 1.f);
    const float heights = __fadd_rn(__fsub_rn(y2, y1), 1.f);
    const float ctr_x = __fdiv_rn(__fadd_rn(x2, x1), 2.f);
    const float ctr_y = __fdiv_rn(__fadd_rn(y2, y1), 2.f);
    const float dx = __fdiv_rn(d[0], 10.f), dy = __fdiv_rn(d[1], 10.f);
    const float dw = glip_nms_clamp(__fdiv_rn(d[2], 5.f), -INFINITY, clip);
    const float dh = glip_nms_clamp(__fdiv_rn(d[3], 5.f), -INFINITY, clip);
    const float pcx = __fadd_rn(__fmul_rn(dx, widths), ctr_x);
    const float pcy = __fadd_rn(__fmul_rn(dy, heights), ctr_y);
    const float pw = __fmul_rn(expf(dw), widths);
    const float ph = __fmul_rn(expf(dh), heights);
    const float hw = __fmul_rn(0.5f, __fsub_rn(pw, 1.f)), hh = __fmul_rn(0.5f, __fsub_rn(ph, 1.f));
    o[0] = __fsub_rn(pcx, hw);
    o[1] = __fsub_rn(pcy, hh);
    o[2] = __fadd_rn(pcx, hw);
    o[3] = __fadd_rn(pcy, hh);
}

// devIoU of csrc/cuda/ml_nms.cu (+1 widths).
GLIP_DEVICE float glip_nms_iou(const float* a, const float* b) {
    const float left = fmaxf(a[0], b[0]), right = fminf(a[2], b[2]);
    const float top = fmaxf(a[1], b[1]), bottom = fminf(a[3], b[3]);
    const float width = fmaxf(__fadd_rn(__fsub_rn(right, left), 1.f), 0.f);
    const float height = fmaxf(__fadd_rn(__fsub_rn(bottom, top), 1.f), 0.f);
    const float inter = __fmul_rn(width, height);
    const float sa = __fmul_rn(__fadd_rn(__fsub_rn(a[2], a[0]), 1.f), __fadd_rn(__fsub_rn(a[3], a[1]), 1.f));
    const float sb = __fmul_rn(__fadd_rn(__fsub_rn(b[2], b[0]), 1.f), __fadd_rn(__fsub_rn(b[3], b[1]), 1.f));
    return __fdiv_rn(inter, __fsub_rn(__fadd_rn(sa, sb), inter));
}

// grid (num_levels, batch), block 1024.
// scores:       [B, n_pos, num_labels] f32  phrase MEAN of token sigmoids
// centerness:   [B, n_pos] f32              logits
// bbox_reg:     [B, n_pos, 4] f32           deltas (dx, dy, dw, dh)
// cand_boxes:   [B, max_candidates, 4] f32  out; level l owns slots [l*top_n, l*top_n + count)
// cand_scores:  [B, max_candidates] f32     out: sqrt(score * sigmoid(centerness))
// cand_labels:  [B, max_candidates] i32     out: 1-based label, -1 if remove_small_boxes drops it
// cand_pos:     [B, max_candidates] i32     out: packed position (level offset + y*w + x)
// level_counts: [B, num_levels] i32         out: slots written per level
// Launch bounds live on this declaration (the definition keeps the one-line form build.rs reads).
extern "C" __global__ void __launch_bounds__(GLIP_NMS_THREADS) glip_nms_select_f32(GlipNmsParams p, const float* scores, const float* centerness, const float* bbox_reg, float* cand_boxes, float* cand_scores, int32_t* cand_labels, int32_t* cand_pos, int32_t* level_counts);
extern "C" __global__ void glip_nms_select_f32(GlipNmsParams p, const float* scores,
                                                                                   const float* centerness, const float* bbox_reg,
                                                                                   float* cand_boxes, float* cand_scores,
                                                                                   int32_t* cand_labels, int32_t* cand_pos,
                                                                                   int32_t* level_counts) {
    __shared__ unsigned int hist[2048];
    __shared__ int sh[32];
    __shared__ int s_digit, s_k;
    const int lvl = blockIdx.x, b = blockIdx.y, tid = threadIdx.x;
    const GlipNmsLevel L = p.levels[lvl];
    const int nl = p.num_labels;
    const int64_t entries = (int64_t)L.h * L.w * nl;
    const int64_t pos0 = (int64_t)b * p.n_pos + L.anchor_offset;
    const float* sc = scores + pos0 * nl;
    const float* ctr = centerness + pos0;

    // Radix select (11, 11, 10 bits, most significant first) of the K-th largest key.
    unsigned prefix = 0, pmask = 0;
    int k = p.pre_nms_top_n;
    bool take_all = false;
    const int shifts[3] = {21, 10, 0};
    const unsigned digit_masks[3] = {0x7FFu, 0x7FFu, 0x3FFu};
    for (int pass = 0; pass < 3; pass++) {
        const int shift = shifts[pass];
        const unsigned dm = digit_masks[pass];
        for (int i = tid; i < 2048; i += blockDim.x) hist[i] = 0;
        __syncthreads();
        for (int64_t e = tid; e < entries; e += blockDim.x) {
            unsigned key;
            float s;
            if (glip_nms_entry(sc, ctr, nl, p.score_thresh, e, key, s) && (key & pmask) == prefix) {
                atomicAdd(&hist[(key >> shift) & dm], 1u);
            }
        }
        __syncthreads();
        // Thread tid owns the bin pair q = 1023 - tid, so an exclusive scan over tid counts
        // the keys in higher bins.
        const int q = (int)blockDim.x - 1 - tid;
        const int hi = (int)hist[2 * q + 1], lo = (int)hist[2 * q];
        int total;
        int above = glip_nms_block_scan(hi + lo, &total, sh);
        if (pass == 0 && total <= k) {  // block-uniform
            take_all = true;
            break;
        }
        if (above < k && above + hi >= k) {
            s_digit = 2 * q + 1;
            s_k = k - above;
        } else if (above + hi < k && above + hi + lo >= k) {
            s_digit = 2 * q;
            s_k = k - above - hi;
        }
        __syncthreads();
        prefix |= (unsigned)s_digit << shift;
        pmask |= dm << shift;
        k = s_k;
        __syncthreads();
    }
    // Keep keys > T, and the first k keys == T in index order.
    const unsigned T = take_all ? 0u : prefix;
    if (take_all) k = 0x7fffffff;

    const GlipNmsLevel lv = L;
    const float stride = (float)lv.stride;
    const float c = (stride - 1.f) * 0.5f, half = (8.f * stride - 1.f) * 0.5f;
    const float img_h = p.img_h[b], img_w = p.img_w[b];
    const int64_t slot0 = (int64_t)b * p.max_candidates + (int64_t)lvl * p.pre_nms_top_n;
    int written = 0, eq_seen = 0;
    const int64_t chunk = (int64_t)blockDim.x * GLIP_NMS_ITEMS;
    for (int64_t base = 0; base < entries; base += chunk) {
        unsigned gt = 0, eq = 0;
        float sv[GLIP_NMS_ITEMS];
#pragma unroll
        for (int i = 0; i < GLIP_NMS_ITEMS; i++) {
            const int64_t e = base + (int64_t)tid * GLIP_NMS_ITEMS + i;
            unsigned key = 0;
            sv[i] = 0.f;
            if (e < entries && glip_nms_entry(sc, ctr, nl, p.score_thresh, e, key, sv[i])) {
                if (key > T) gt |= 1u << i;
                else if (key == T) eq |= 1u << i;
            }
        }
        if (!__syncthreads_or((int)(gt | eq))) continue;
        int eq_total, sel_total;
        int r = eq_seen + glip_nms_block_scan(__popc(eq), &eq_total, sh);
        unsigned sel = gt;
#pragma unroll
        for (int i = 0; i < GLIP_NMS_ITEMS; i++) {
            if (eq & (1u << i)) {
                if (r < k) sel |= 1u << i;
                r++;
            }
        }
        int o = written + glip_nms_block_scan(__popc(sel), &sel_total, sh);
#pragma unroll
        for (int i = 0; i < GLIP_NMS_ITEMS; i++) {
            if (!(sel & (1u << i))) continue;
            const int64_t e = base + (int64_t)tid * GLIP_NMS_ITEMS + i;
            const int a = (int)(e / nl), lab = (int)(e % nl);
            const int ay = a / lv.w, ax = a % lv.w;
            const float sx = (float)(ax * lv.stride), sy = (float)(ay * lv.stride);
            float box[4];
            glip_nms_decode(bbox_reg + (pos0 + a) * 4, (c - half) + sx, (c - half) + sy, (c + half) + sx, (c + half) + sy,
                            p.bbox_clip, box);
            box[0] = glip_nms_clamp(box[0], 0.f, img_w - 1.f);
            box[1] = glip_nms_clamp(box[1], 0.f, img_h - 1.f);
            box[2] = glip_nms_clamp(box[2], 0.f, img_w - 1.f);
            box[3] = glip_nms_clamp(box[3], 0.f, img_h - 1.f);
            const float ws = __fadd_rn(__fsub_rn(box[2], box[0]), 1.f), hs = __fadd_rn(__fsub_rn(box[3], box[1]), 1.f);
            const bool ok = ws >= p.min_size && hs >= p.min_size;
            const int64_t slot = slot0 + o;
#pragma unroll
            for (int j = 0; j < 4; j++) cand_boxes[slot * 4 + j] = box[j];
            cand_scores[slot] = sqrtf(sv[i]);
            cand_labels[slot] = ok ? lab + 1 : -1;
            cand_pos[slot] = lv.anchor_offset + a;
            o++;
        }
        written += sel_total;
        eq_seen += eq_total;
    }
    if (tid == 0) level_counts[b * p.num_levels + lvl] = written;
}

// grid (batch), block 1024: sort the valid candidates by score descending, slot ascending.
// cand_scores:  [B, max_candidates] f32
// cand_labels:  [B, max_candidates] i32
// level_counts: [B, num_levels] i32
// sort_keys:    [B, sort_size] u64   out: (score bits << 32) | ~slot, 0 for no candidate
// sorted_count: [B] i32              out: valid candidates
// Launch bounds live on this declaration (the definition keeps the one-line form build.rs reads).
extern "C" __global__ void __launch_bounds__(GLIP_NMS_THREADS) glip_nms_sort_f32(GlipNmsParams p, const float* cand_scores, const int32_t* cand_labels, const int32_t* level_counts, unsigned long long* sort_keys, int32_t* sorted_count);
extern "C" __global__ void glip_nms_sort_f32(GlipNmsParams p, const float* cand_scores,
                                                                                 const int32_t* cand_labels,
                                                                                 const int32_t* level_counts,
                                                                                 unsigned long long* sort_keys, int32_t* sorted_count) {
    __shared__ int s_count;
    const int b = blockIdx.x, tid = threadIdx.x;
    const int N = p.sort_size;
    unsigned long long* keys = sort_keys + (int64_t)b * N;
    if (tid == 0) s_count = 0;
    __syncthreads();
    int mine = 0;
    for (int i = tid; i < N; i += blockDim.x) {
        unsigned long long key = 0;
        if (i < p.max_candidates) {
            const int lvl = i / p.pre_nms_top_n, j = i % p.pre_nms_top_n;
            const int64_t slot = (int64_t)b * p.max_candidates + i;
            if (j < level_counts[b * p.num_levels + lvl] && cand_labels[slot] >= 0) {
                key = ((unsigned long long)__float_as_uint(cand_scores[slot]) << 32) | (unsigned long long)(0xFFFFFFFFu - (unsigned)i);
                mine++;
            }
        }
        keys[i] = key;
    }
    atomicAdd(&s_count, mine);
    __syncthreads();
    for (int kk = 2; kk <= N; kk <<= 1) {
        for (int j = kk >> 1; j > 0; j >>= 1) {
            for (int i = tid; i < N; i += blockDim.x) {
                const int ixj = i ^ j;
                if (ixj > i) {
                    const unsigned long long a = keys[i], c = keys[ixj];
                    const bool desc = (i & kk) == 0;
                    if (desc ? (a < c) : (a > c)) {
                        keys[i] = c;
                        keys[ixj] = a;
                    }
                }
            }
            __syncthreads();  // also orders the global-memory keys within the block
        }
    }
    if (tid == 0) sorted_count[b] = s_count;
}

// grid (col_blocks, col_blocks, batch), block 64: bit i of mask[b, r, cb] says sorted box
// cb*64 + i (after r) is suppressed by sorted box r (same label unless class_agnostic, IoU > thr).
// cand_boxes:   [B, max_candidates, 4] f32
// cand_labels:  [B, max_candidates] i32
// sort_keys:    [B, sort_size] u64
// sorted_count: [B] i32
// mask:         [B, max_candidates, col_blocks] u64   out (upper block triangle only)
// Launch bounds live on this declaration (the definition keeps the one-line form build.rs reads).
extern "C" __global__ void __launch_bounds__(64) glip_nms_mask_f32(GlipNmsParams p, const float* cand_boxes, const int32_t* cand_labels, const unsigned long long* sort_keys, const int32_t* sorted_count, unsigned long long* mask);
extern "C" __global__ void glip_nms_mask_f32(GlipNmsParams p, const float* cand_boxes,
                                                                   const int32_t* cand_labels,
                                                                   const unsigned long long* sort_keys,
                                                                   const int32_t* sorted_count, unsigned long long* mask) {
    __shared__ float boxes[64 * 4];
    __shared__ int labels[64];
    const int col = blockIdx.x, row = blockIdx.y, b = blockIdx.z, t = threadIdx.x;
    const int n = sorted_count[b];
    if (row > col) return;
    const int row_size = min(n - row * 64, 64), col_size = min(n - col * 64, 64);
    if (row_size <= 0 || col_size <= 0) return;
    const unsigned long long* keys = sort_keys + (int64_t)b * p.sort_size;
    const int64_t base = (int64_t)b * p.max_candidates;
    if (t < col_size) {
        const int64_t slot = base + (0xFFFFFFFFu - (unsigned)(keys[col * 64 + t] & 0xFFFFFFFFull));
#pragma unroll
        for (int j = 0; j < 4; j++) boxes[t * 4 + j] = cand_boxes[slot * 4 + j];
        labels[t] = cand_labels[slot];
    }
    __syncthreads();
    if (t < row_size) {
        const int cur = row * 64 + t;
        const int64_t slot = base + (0xFFFFFFFFu - (unsigned)(keys[cur] & 0xFFFFFFFFull));
        float cb[4];
#pragma unroll
        for (int j = 0; j < 4; j++) cb[j] = cand_boxes[slot * 4 + j];
        const int cl = cand_labels[slot];
        unsigned long long bits = 0;
        for (int i = (row == col ? t + 1 : 0); i < col_size; i++) {
            if ((p.class_agnostic || labels[i] == cl) && glip_nms_iou(cb, boxes + i * 4) > p.nms_thresh) bits |= 1ull << i;
        }
        mask[(base + cur) * p.col_blocks + col] = bits;
    }
}

// grid (batch), block 32: the greedy pass of ml_nms over the sorted boxes.
// mask:         [B, max_candidates, col_blocks] u64
// sorted_count: [B] i32
// keep_sorted:  [B, max_candidates] u8   out: 1 where the sorted box is kept
// Launch bounds live on this declaration (the definition keeps the one-line form build.rs reads).
extern "C" __global__ void __launch_bounds__(32) glip_nms_reduce_f32(GlipNmsParams p, const unsigned long long* mask, const int32_t* sorted_count, uint8_t* keep_sorted);
extern "C" __global__ void glip_nms_reduce_f32(GlipNmsParams p, const unsigned long long* mask,
                                                                     const int32_t* sorted_count, uint8_t* keep_sorted) {
    const int b = blockIdx.x, lane = threadIdx.x;
    const int n = sorted_count[b];
    const int cb = (n + 63) / 64;
    unsigned long long remv[GLIP_NMS_MAX_WORDS_PER_LANE];
#pragma unroll
    for (int q = 0; q < GLIP_NMS_MAX_WORDS_PER_LANE; q++) remv[q] = 0;
    const int64_t base = (int64_t)b * p.max_candidates;
    for (int i = 0; i < n; i++) {
        const int word = i >> 6, owner = word & 31, r = word >> 5;
        unsigned long long w = 0;
#pragma unroll
        for (int q = 0; q < GLIP_NMS_MAX_WORDS_PER_LANE; q++)
            if (q == r) w = remv[q];
        w = __shfl_sync(0xffffffffu, w, owner);
        const bool removed = (w >> (i & 63)) & 1ull;
        if (lane == 0) keep_sorted[base + i] = removed ? 0 : 1;
        if (removed) continue;
        const unsigned long long* row = mask + (base + i) * p.col_blocks;
#pragma unroll
        for (int q = 0; q < GLIP_NMS_MAX_WORDS_PER_LANE; q++) {
            const int j = lane + 32 * q;
            if (j >= word && j < cb) remv[q] |= row[j];
        }
    }
}

// grid (batch), block 1024: top detections_per_img by score keeping ties (kthvalue), in
// ascending slot order.
// cand_*:       the select kernel's outputs
// sort_keys, keep_sorted, sorted_count: the sort / reduce outputs
// out_boxes:    [B, max_candidates, 4] f32   out
// out_scores:   [B, max_candidates] f32      out
// out_labels:   [B, max_candidates] i32      out
// out_pos:      [B, max_candidates] i32      out: packed position
// out_count:    [B] i32                      out: detections of the image
// Launch bounds live on this declaration (the definition keeps the one-line form build.rs reads).
extern "C" __global__ void __launch_bounds__(GLIP_NMS_THREADS) glip_nms_finalize_f32(GlipNmsParams p, const float* cand_boxes, const float* cand_scores, const int32_t* cand_labels, const int32_t* cand_pos, const unsigned long long* sort_keys, const uint8_t* keep_sorted, const int32_t* sorted_count, float* out_boxes, float* out_scores, int32_t* out_labels, int32_t* out_pos, int32_t* out_count);
extern "C" __global__ void glip_nms_finalize_f32(
    GlipNmsParams p, const float* cand_boxes, const float* cand_scores, const int32_t* cand_labels, const int32_t* cand_pos,
    const unsigned long long* sort_keys, const uint8_t* keep_sorted, const int32_t* sorted_count, float* out_boxes,
    float* out_scores, int32_t* out_labels, int32_t* out_pos, int32_t* out_count) {
    __shared__ uint8_t flag[GLIP_NMS_MAX_CAND];
    __shared__ int sh[32];
    __shared__ unsigned s_thr;
    const int b = blockIdx.x, tid = threadIdx.x;
    const int n = sorted_count[b];
    const int64_t base = (int64_t)b * p.max_candidates;
    const unsigned long long* keys = sort_keys + (int64_t)b * p.sort_size;
    for (int i = tid; i < p.max_candidates; i += blockDim.x) flag[i] = 0;
    if (tid == 0) s_thr = 0;
    __syncthreads();
    // Mark kept slots and find the detections_per_img-th kept score in sorted order.
    int kept_before = 0;
    for (int c0 = 0; c0 < n; c0 += blockDim.x) {
        const int i = c0 + tid;
        const bool kept = i < n && keep_sorted[base + i];
        if (kept) flag[0xFFFFFFFFu - (unsigned)(keys[i] & 0xFFFFFFFFull)] = 1;
        int total;
        const int before = kept_before + glip_nms_block_scan(kept ? 1 : 0, &total, sh);
        if (kept && before + 1 == p.detections_per_img) s_thr = (unsigned)(keys[i] >> 32);
        kept_before += total;
    }
    __syncthreads();
    const bool none = p.detections_per_img <= 0;  // the CPU twin keeps nothing then
    const bool all = kept_before <= p.detections_per_img;
    const unsigned thr = s_thr;
    int written = 0;
    for (int c0 = 0; c0 < p.max_candidates; c0 += blockDim.x) {
        const int i = c0 + tid;
        bool sel = false;
        if (!none && i < p.max_candidates && flag[i]) sel = all || __float_as_uint(cand_scores[base + i]) >= thr;
        int total;
        const int o = written + glip_nms_block_scan(sel ? 1 : 0, &total, sh);
        if (sel) {
            const int64_t dst = base + o, src = base + i;
#pragma unroll
            for (int j = 0; j < 4; j++) out_boxes[dst * 4 + j] = cand_boxes[src * 4 + j];
            out_scores[dst] = cand_scores[src];
            out_labels[dst] = cand_labels[src];
            out_pos[dst] = cand_pos[src];
        }
        written += total;
    }
    if (tid == 0) out_count[b] = written;
}
