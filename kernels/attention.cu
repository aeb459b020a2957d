// Softmax attention for BERT's self-attention and Swin's window attention: one warp per
// (sequence, head, query), online softmax over keys in chunks of 32 (one key per lane), so
// the scores never leave registers. f16 storage, f32 arithmetic. CPU twins:
// backend/cpu/ops.rs self_attention (two-pass softmax) and window_attention.
//
// SIMT, not tensor cores: the sequences are short (T <= 256 tokens, M*M = 49) and the
// attention is a small share of GLIP-T's time next to its GEMMs.
#include "common.cuh"

#define AT_WARPS 4
#define AT_MAX_DIM 128

// The score of one key, from the raw dot product, by the model's rule.
struct BertScore {
    const int32_t* mask;  // [seqs, T]
    GLIP_DEVICE float operator()(const GlipAttnParams& p, float dot, int64_t seq, int, int j, int) const {
        // HF divides after the product; GLIP then clamps, then adds the key mask.
        float y = dot / p.scale;
        if (p.clamp > 0.f) y = y < -p.clamp ? -p.clamp : (y > p.clamp ? p.clamp : y);
        return y + (1.0f - (float)mask[seq * p.tokens + j]) * p.mask_fill;
    }
};

struct WindowScore {
    const __half* bias;    // [heads, T, T] relative position bias
    const int32_t* ids;    // [num_windows, T] region ids (when num_windows > 0)
    GLIP_DEVICE float operator()(const GlipAttnParams& p, float dot, int64_t seq, int head, int j, int i) const {
        float y = dot + __half2float(bias[((int64_t)head * p.tokens + i) * p.tokens + j]);
        if (p.num_windows > 0) {
            const int32_t* w = ids + (seq % p.num_windows) * p.tokens;
            if (w[j] != w[i]) y += p.shift_mask;
        }
        return y;
    }
};

template <bool ScaleQ, typename Score>
GLIP_DEVICE void glip_attention(const GlipAttnParams& p, const __half* q, const __half* k, const __half* v,
                                Score score, __half* out) {
    __shared__ float qs[AT_WARPS][AT_MAX_DIM];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int64_t rows = (int64_t)p.seqs * p.heads * p.tokens;
    const int hd = p.head_dim;
    // Every warp runs the same number of iterations (the row test is per warp), so the
    // barrier-free loop keeps each warp's shared row its own.
    for (int64_t row = (int64_t)blockIdx.x * AT_WARPS + warp; row < rows; row += (int64_t)gridDim.x * AT_WARPS) {
        const int i = (int)(row % p.tokens);
        const int head = (int)((row / p.tokens) % p.heads);
        const int64_t seq = row / ((int64_t)p.tokens * p.heads);
        const __half* base = q + seq * p.tokens * p.ld;
        __syncwarp(0xffffffffu);  // the previous row's readers are done with qs[warp]
        for (int d = lane; d < hd; d += 32) {
            const float x = __half2float(base[(int64_t)i * p.ld + p.q_off + head * hd + d]);
            qs[warp][d] = ScaleQ ? x * p.scale : x;
        }
        __syncwarp(0xffffffffu);
        float m = -INFINITY, l = 0.f;
        float acc[AT_MAX_DIM / 32];
#pragma unroll
        for (int r = 0; r < AT_MAX_DIM / 32; ++r) acc[r] = 0.f;
        for (int j0 = 0; j0 < p.tokens; j0 += 32) {
            const int j = j0 + lane;
            float s = -INFINITY;
            if (j < p.tokens) {
                const __half* kr = k + (seq * p.tokens + j) * p.ld + p.k_off + head * hd;
                float dot = 0.f;
                for (int d = 0; d < hd; ++d) dot += qs[warp][d] * __half2float(kr[d]);
                s = score(p, dot, seq, head, j, i);
            }
            const float mn = fmaxf(m, glip_warp_max(s));
            const float corr = expf(m - mn);
            const float e = j < p.tokens ? expf(s - mn) : 0.f;
            l = l * corr + glip_warp_sum(e);
#pragma unroll
            for (int r = 0; r < AT_MAX_DIM / 32; ++r) acc[r] *= corr;
            const int n = p.tokens - j0 < 32 ? p.tokens - j0 : 32;
            for (int jj = 0; jj < n; ++jj) {
                const float pj = __shfl_sync(0xffffffffu, e, jj);
                const __half* vr = v + (seq * p.tokens + j0 + jj) * p.ld + p.v_off + head * hd;
#pragma unroll
                for (int r = 0; r < AT_MAX_DIM / 32; ++r) {
                    const int d = lane + 32 * r;
                    if (d < hd) acc[r] += pj * __half2float(vr[d]);
                }
            }
            m = mn;
        }
        const float inv = 1.f / l;
        __half* o = out + (seq * p.tokens + i) * p.out_ld + head * hd;
#pragma unroll
        for (int r = 0; r < AT_MAX_DIM / 32; ++r) {
            const int d = lane + 32 * r;
            if (d < hd) o[d] = __float2half_rn(acc[r] * inv);
        }
    }
}

// BERT self-attention: q, k, v [B, T, H] (ld = H, offsets 0), key mask [B, T] i32.
extern "C" __global__ void __launch_bounds__(AT_WARPS * 32) glip_attention_self_f16(GlipAttnParams p, const __half* q, const __half* k, const __half* v, const int32_t* mask, __half* out) {
    glip_attention<false>(p, q, k, v, BertScore{mask}, out);
}

// Swin window attention: qkv [B*nW, M*M, 3C] (q, k, v at offsets 0, C, 2C), q scaled before
// the product (swint.py:122), relative position bias [heads, M*M, M*M] f16, region ids
// [nW, M*M] i32 for shifted blocks.
extern "C" __global__ void __launch_bounds__(AT_WARPS * 32) glip_attention_window_f16(GlipAttnParams p, const __half* qkv, const __half* bias, const int32_t* ids, __half* out) {
    glip_attention<true>(p, qkv, qkv, qkv, WindowScore{bias, ids}, out);
}
