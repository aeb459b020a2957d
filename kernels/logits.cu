// Dot-product region-word logits of GLIP's head (spec §3.6, §8 items 7 and 10):
//   text side  E = h / max(|h|, eps), proj = Linear(E / 2), tok_bias = E . bias_lang + bias0
//   logits[b, p, t] = clamp((v[b, p] . proj[b, t]) / scale + tok_bias[b, t], +-clamp)
// and the token -> phrase MEAN of sigmoids through the positive map.
// f16 storage of the big operands (visual features, projection weight), f32 accumulation.
#include "common.cuh"

// torch.clamp keeps NaN (fminf/fmaxf would replace it).
GLIP_DEVICE float glip_clamp_nan(float v, float lo, float hi) { return v < lo ? lo : (v > hi ? hi : v); }

// Sum over a block of blockDim.x (multiple of 32, <= 1024) threads; every thread gets it.
GLIP_DEVICE float glip_logits_block_sum(float v, float* red /* [32] shared */) {
    v = glip_warp_sum(v);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    __syncthreads();  // red may still be read by a previous call
    if (lane == 0) red[warp] = v;
    __syncthreads();
    float s = lane < nwarps ? red[lane] : 0.f;
    return glip_warp_sum(s);
}

#define GLIP_LOGITS_MAX_LANG 1024

// One block (256 threads) per token row r of B*T.
// hidden:    [B*T, lang_dim] f16   final language hidden
// w:         [dim, lang_dim] f16   dot_product_projection_text.weight
// bias:      [dim] f32             dot_product_projection_text.bias
// bias_lang: [lang_dim] f32
// proj:      [B*T, dim] f32        out: Linear(E / 2)
// tok_bias:  [B*T] f32             out: E . bias_lang + bias0
extern "C" __global__ void glip_logits_text_proj_f16(GlipLogitsParams p, const __half* hidden, const __half* w, const float* bias,
                                                      const float* bias_lang, float* proj, float* tok_bias) {
    __shared__ float e[GLIP_LOGITS_MAX_LANG];
    __shared__ float red[32];
    const int64_t r = blockIdx.x;
    const int L = p.lang_dim;
    float ss = 0.f;
    for (int k = threadIdx.x; k < L; k += blockDim.x) {
        float h = __half2float(hidden[r * L + k]);
        e[k] = h;
        ss += h * h;
    }
    const float norm = fmaxf(sqrtf(glip_logits_block_sum(ss, red)), p.eps);
    float bl = 0.f;
    for (int k = threadIdx.x; k < L; k += blockDim.x) {
        float v = e[k] / norm;
        e[k] = v;
        bl += v * bias_lang[k];
    }
    bl = glip_logits_block_sum(bl, red);  // its leading __syncthreads also publishes e[]
    if (threadIdx.x == 0) tok_bias[r] = bl + p.bias0;
    // One warp per output feature: lanes stride the weight row (coalesced).
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    for (int j = warp; j < p.dim; j += nwarps) {
        const __half* wr = w + (int64_t)j * L;
        float acc = 0.f;
        for (int k = lane; k < L; k += 32) acc += __half2float(wr[k]) * (e[k] * 0.5f);
        acc = glip_warp_sum(acc);
        if (lane == 0) proj[r * p.dim + j] = acc + bias[j];
    }
}

// Tiled GEMM with the fused epilogue: a 64 (positions) x 64 (tokens) tile per block of
// 16 x 16 threads, each thread 4 x 4 outputs strided by 16 (conflict-free shared reads),
// K in steps of 32. grid (ceil(n_pos/64), ceil(n_txt/64), batch).
// visual:   [B, dim, n_pos] f16 (channel_major) or [B, n_pos, dim] f16
// proj:     [B, n_txt, dim] f32
// tok_bias: [B, n_txt] f32
// out:      [B, out_rows, n_txt] f32, rows out_row0 .. out_row0 + n_pos written
#define GLIP_LG_BM 64
#define GLIP_LG_BN 64
#define GLIP_LG_BK 32
// The visual operand in f16 (activations) or f32 (features beyond f16's range, e.g. golden
// 07's ×1e6 level: GLIP's answer there is the ±clamp, which f16 storage would turn into NaN).
// One 64-position tile (`tile`) of a level of n_pos positions whose rows land at out_row0..
// of each image's [out_rows, n_txt] block.
template <typename V>
GLIP_DEVICE void glip_logits_dot(const GlipLogitsParams& p, const V* visual, int n_pos, int out_rows, int out_row0,
                                 int tile, const float* proj, const float* tok_bias, float* out) {
    __shared__ float as[GLIP_LG_BK][GLIP_LG_BM + 4];
    __shared__ float bs[GLIP_LG_BK][GLIP_LG_BN + 4];
    const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4, tid = threadIdx.x;
    const int m0 = tile * GLIP_LG_BM, n0 = blockIdx.y * GLIP_LG_BN, b = blockIdx.z;
    const int64_t vbase = (int64_t)b * n_pos * p.dim;
    const int64_t pbase = (int64_t)b * p.n_txt * p.dim;
    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) acc[i][j] = 0.f;

    for (int k0 = 0; k0 < p.dim; k0 += GLIP_LG_BK) {
        for (int idx = tid; idx < GLIP_LG_BM * GLIP_LG_BK; idx += 256) {
            int m, k;
            if (p.channel_major) {  // contiguous along positions
                k = idx / GLIP_LG_BM;
                m = idx % GLIP_LG_BM;
            } else {  // contiguous along channels
                m = idx / GLIP_LG_BK;
                k = idx % GLIP_LG_BK;
            }
            const int gm = m0 + m, gk = k0 + k;
            float v = 0.f;
            if (gm < n_pos && gk < p.dim) {
                v = glip_to_f32(p.channel_major ? visual[vbase + (int64_t)gk * n_pos + gm] : visual[vbase + (int64_t)gm * p.dim + gk]);
            }
            as[k][m] = v;
        }
        for (int idx = tid; idx < GLIP_LG_BN * GLIP_LG_BK; idx += 256) {
            const int n = idx / GLIP_LG_BK, k = idx % GLIP_LG_BK;
            const int gn = n0 + n, gk = k0 + k;
            bs[k][n] = (gn < p.n_txt && gk < p.dim) ? proj[pbase + (int64_t)gn * p.dim + gk] : 0.f;
        }
        __syncthreads();
#pragma unroll 8
        for (int k = 0; k < GLIP_LG_BK; k++) {
            float a[4], c[4];
#pragma unroll
            for (int i = 0; i < 4; i++) a[i] = as[k][ty + 16 * i];
#pragma unroll
            for (int j = 0; j < 4; j++) c[j] = bs[k][tx + 16 * j];
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < 4; j++) acc[i][j] = fmaf(a[i], c[j], acc[i][j]);
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const int gm = m0 + ty + 16 * i;
        if (gm >= n_pos) continue;
        float* orow = out + ((int64_t)b * out_rows + out_row0 + gm) * p.n_txt;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const int gn = n0 + tx + 16 * j;
            if (gn < p.n_txt) orow[gn] = glip_clamp_nan(acc[i][j] / p.scale + tok_bias[(int64_t)b * p.n_txt + gn], -p.clamp, p.clamp);
        }
    }
}

extern "C" __global__ void __launch_bounds__(256) glip_logits_dot_f16(GlipLogitsParams p, const __half* visual, const float* proj, const float* tok_bias, float* out) {
    glip_logits_dot<__half>(p, visual, p.n_pos, p.out_rows, p.out_row0, blockIdx.x, proj, tok_bias, out);
}
extern "C" __global__ void __launch_bounds__(256) glip_logits_dot_f32(GlipLogitsParams p, const float* visual, const float* proj, const float* tok_bias, float* out) {
    glip_logits_dot<float>(p, visual, p.n_pos, p.out_rows, p.out_row0, blockIdx.x, proj, tok_bias, out);
}

// Every pyramid level in one grouped launch: level l's visual features and logits at the
// addresses of p.levels[l]; blockIdx.x runs over the levels' 64-position tiles back to back
// (level l from p.levels[l].first_tile). grid (sum of tiles, ceil(n_txt/64), batch).
template <typename V>
GLIP_DEVICE void glip_logits_dot_levels(const GlipLogitsParams& p, const float* proj, const float* tok_bias) {
    int l = 0;
    while (l + 1 < p.num_levels && l + 1 < 8 && (int)blockIdx.x >= p.levels[l + 1].first_tile) l++;
    const GlipLogitsLevel& lv = p.levels[l];
    const int tile = (int)blockIdx.x - lv.first_tile;
    if (tile * GLIP_LG_BM >= lv.n_pos) return;  // uniform per block
    glip_logits_dot<V>(p, reinterpret_cast<const V*>(lv.visual), lv.n_pos, lv.n_pos, 0, tile, proj, tok_bias,
                       reinterpret_cast<float*>(lv.out));
}
extern "C" __global__ void __launch_bounds__(256) glip_logits_dot_levels_f16(GlipLogitsParams p, const float* proj, const float* tok_bias) {
    glip_logits_dot_levels<__half>(p, proj, tok_bias);
}
extern "C" __global__ void __launch_bounds__(256) glip_logits_dot_levels_f32(GlipLogitsParams p, const float* proj, const float* tok_bias) {
    glip_logits_dot_levels<float>(p, proj, tok_bias);
}

// scores[r, c] = mean over the tokens of the positive-map entry owning column c of
// sigmoid(logits[r, t]); 0 for columns no entry owns. One thread per (row, column),
// rows = batch * n_pos.
// logits:    [rows, n_txt] f32
// col_entry: [num_labels] i32   entry of the positive map owning the column, -1 if none
// offsets:   [entries + 1] i32  token ranges of the entries
// tokens:    [nnz] i32          token indices (< n_txt)
// scores:    [rows, num_labels] f32
extern "C" __global__ void glip_logits_phrase_mean_f32(GlipLogitsParams p, const float* logits, const int32_t* col_entry,
                                                        const int32_t* offsets, const int32_t* tokens, float* scores) {
    const int64_t total = (int64_t)p.batch * p.n_pos * p.num_labels;
    GLIP_GRID_STRIDE(i, total) {
        const int64_t r = i / p.num_labels;
        const int c = (int)(i % p.num_labels);
        const int e = col_entry[c];
        float v = 0.f;
        if (e >= 0) {
            const int t0 = offsets[e], t1 = offsets[e + 1];
            const float* row = logits + r * p.n_txt;
            float s = 0.f;
            for (int t = t0; t < t1; t++) s += glip_sigmoid(row[tokens[t]]);
            v = s / (float)(t1 - t0);
        }
        scores[i] = v;
    }
}
