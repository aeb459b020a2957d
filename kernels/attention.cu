// Softmax attention for BERT's self-attention and Swin's window attention, flash-style: the
// scores never leave registers. f16 storage, f32 arithmetic. CPU twins: backend/cpu/ops.rs
// self_attention (two-pass softmax) and window_attention.
//
// Two kernels per model: on tensor cores (`_tc_`: mma.sync m16n8k16, head widths 16, 32, 64
// — GLIP-T's 64 and 32), and SIMT for any other width up to 128 (the small goldens' 8).
#include "tc.cuh"

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

// ---------------------------------------------------------------------------------------
// Tensor cores. A block of 4 warps takes 64 queries of one (sequence, head); each warp 16
// rows. Keys and values stream through shared memory 64 at a time: S = Q K^T (mma, Q's
// fragments kept in registers), the score rule and the online softmax on S's accumulator
// fragments, then O += P V with P re-used from those registers as the A operand (f16).
// grid (ceil(T / 64), heads, seqs), 128 threads; hd = HD in {16, 32, 64}.
#define AT_TC_ROWS 64
#define AT_TC_KEYS 64

// Two f32 as the f16 pair of an mma operand register (lo in the low half).
GLIP_DEVICE uint32_t glip_at_pack(float lo, float hi) {
    return (uint32_t)__half_as_ushort(__float2half_rn(lo)) | ((uint32_t)__half_as_ushort(__float2half_rn(hi)) << 16);
}

// Shared memory of one block at the largest width: Q, K and V tiles of 64 rows.
#define AT_TC_SMEM (3 * 64 * (64 + 8))

template <int HD, bool ScaleQ, typename Score>
GLIP_DEVICE void glip_attention_tc(const GlipAttnParams& p, const __half* q, const __half* k, const __half* v,
                                   Score score, __half* smem, __half* out) {
    constexpr int PITCH = HD + 8;  // halves: 16-byte rows, off a multiple of 128 bytes
    __half* Qs = smem;
    __half* Ks = Qs + AT_TC_ROWS * PITCH;
    __half* Vs = Ks + AT_TC_KEYS * PITCH;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int g = lane >> 2, t = lane & 3, li = lane & 7, lj = lane >> 3;
    const int q0 = blockIdx.x * AT_TC_ROWS, head = blockIdx.y;
    const int64_t seq = blockIdx.z;
    const int64_t base = seq * p.tokens * p.ld;
    const int col = head * HD;

    // Q rows of this block (zeros past T).
    for (int e = tid; e < AT_TC_ROWS * HD; e += blockDim.x) {
        const int r = e / HD, d = e % HD, i = q0 + r;
        Qs[r * PITCH + d] = i < p.tokens ? q[base + (int64_t)i * p.ld + p.q_off + col + d] : __float2half_rn(0.f);
    }
    __syncthreads();
    uint32_t qa[HD / 16][4];
#pragma unroll
    for (int ks = 0; ks < HD / 16; ++ks)
        glip_ldmatrix_x4(qa[ks], Qs + (warp * 16 + li + (lj & 1) * 8) * PITCH + ks * 16 + (lj >> 1) * 8);

    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
    float o[HD / 8][4];
#pragma unroll
    for (int nt = 0; nt < HD / 8; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) o[nt][e] = 0.f;

    for (int k0 = 0; k0 < p.tokens; k0 += AT_TC_KEYS) {
        __syncthreads();  // every warp is done with the previous keys and values
        for (int e = tid; e < AT_TC_KEYS * HD; e += blockDim.x) {
            const int r = e / HD, d = e % HD, j = k0 + r;
            const bool in = j < p.tokens;
            const int64_t row = base + (int64_t)j * p.ld + col + d;
            Ks[r * PITCH + d] = in ? k[row + p.k_off] : __float2half_rn(0.f);
            Vs[r * PITCH + d] = in ? v[row + p.v_off] : __float2half_rn(0.f);
        }
        __syncthreads();

        // S (16 x 64) = Q K^T: lane 4g + t holds rows g, g + 8 and columns 8 nt + 2t, +1.
        float s[AT_TC_KEYS / 8][4];
#pragma unroll
        for (int nt = 0; nt < AT_TC_KEYS / 8; ++nt) {
#pragma unroll
            for (int e = 0; e < 4; ++e) s[nt][e] = 0.f;
#pragma unroll
            for (int ks = 0; ks < HD / 16; ++ks) {
                uint32_t b[2];
                glip_ldmatrix_x2(b, Ks + (nt * 8 + li) * PITCH + ks * 16 + (lj & 1) * 8);
                glip_mma_m16n8k16_f16f32(s[nt], qa[ks], b, s[nt]);
            }
        }
        // The model's score rule; keys past T get -inf.
        float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
        for (int nt = 0; nt < AT_TC_KEYS / 8; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int i = q0 + warp * 16 + g + (e >> 1) * 8, j = k0 + nt * 8 + 2 * t + (e & 1);
                float x = -INFINITY;
                if (j < p.tokens) {
                    const float dot = ScaleQ ? s[nt][e] * p.scale : s[nt][e];
                    x = score(p, dot, seq, head, j, i < p.tokens ? i : p.tokens - 1);
                }
                s[nt][e] = x;
                mx[e >> 1] = fmaxf(mx[e >> 1], x);
            }
        float corr[2];
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 1));
            mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 2));
            const float mn = fmaxf(m[h], mx[h]);
            corr[h] = expf(m[h] - mn);
            m[h] = mn;
        }
        float sum[2] = {0.f, 0.f};
#pragma unroll
        for (int nt = 0; nt < AT_TC_KEYS / 8; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                s[nt][e] = expf(s[nt][e] - m[e >> 1]);
                sum[e >> 1] += s[nt][e];
            }
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            sum[h] += __shfl_xor_sync(0xffffffffu, sum[h], 1);
            sum[h] += __shfl_xor_sync(0xffffffffu, sum[h], 2);
            l[h] = l[h] * corr[h] + sum[h];
        }
#pragma unroll
        for (int nt = 0; nt < HD / 8; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) o[nt][e] *= corr[e >> 1];

        // O += P V: P's accumulator fragments are the A fragments of the next mma (16 keys per
        // step); V [key][dim] is the "col" operand through ldmatrix's transpose.
#pragma unroll
        for (int kk = 0; kk < AT_TC_KEYS / 16; ++kk) {
            uint32_t a[4];
            a[0] = glip_at_pack(s[2 * kk][0], s[2 * kk][1]);
            a[1] = glip_at_pack(s[2 * kk][2], s[2 * kk][3]);
            a[2] = glip_at_pack(s[2 * kk + 1][0], s[2 * kk + 1][1]);
            a[3] = glip_at_pack(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
            for (int np = 0; np < HD / 16; ++np) {
                uint32_t r[4];
                glip_ldmatrix_x4_trans(r, Vs + (kk * 16 + li + (lj & 1) * 8) * PITCH + np * 16 + (lj >> 1) * 8);
                const uint32_t b0[2] = {r[0], r[1]}, b1[2] = {r[2], r[3]};
                glip_mma_m16n8k16_f16f32(o[2 * np], a, b0, o[2 * np]);
                glip_mma_m16n8k16_f16f32(o[2 * np + 1], a, b1, o[2 * np + 1]);
            }
        }
    }
    // Rows past T are not written.
#pragma unroll
    for (int nt = 0; nt < HD / 8; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const int i = q0 + warp * 16 + g + (e >> 1) * 8, d = nt * 8 + 2 * t + (e & 1);
            if (i < p.tokens) out[(seq * p.tokens + i) * p.out_ld + col + d] = __float2half_rn(o[nt][e] / l[e >> 1]);
        }
}

// BERT self-attention on tensor cores (hd 16, 32, 64), layouts as glip_attention_self_f16.
extern "C" __global__ void __launch_bounds__(128) glip_attention_self_tc_f16(GlipAttnParams p, const __half* q, const __half* k, const __half* v, const int32_t* mask, __half* out) {
    __shared__ __align__(16) __half smem[AT_TC_SMEM];
    const BertScore sc{mask};
    switch (p.head_dim) {
        case 16: glip_attention_tc<16, false>(p, q, k, v, sc, smem, out); break;
        case 32: glip_attention_tc<32, false>(p, q, k, v, sc, smem, out); break;
        default: glip_attention_tc<64, false>(p, q, k, v, sc, smem, out); break;
    }
}

// Swin window attention on tensor cores (hd 16, 32, 64), layouts as glip_attention_window_f16.
extern "C" __global__ void __launch_bounds__(128) glip_attention_window_tc_f16(GlipAttnParams p, const __half* qkv, const __half* bias, const int32_t* ids, __half* out) {
    __shared__ __align__(16) __half smem[AT_TC_SMEM];
    const WindowScore sc{bias, ids};
    switch (p.head_dim) {
        case 16: glip_attention_tc<16, true>(p, qkv, qkv, qkv, sc, smem, out); break;
        case 32: glip_attention_tc<32, true>(p, qkv, qkv, qkv, sc, smem, out); break;
        default: glip_attention_tc<64, true>(p, qkv, qkv, qkv, sc, smem, out); break;
    }
}
