// Bi-directional cross-attention of GLIP's VLFuse (BiMultiHeadAttention,
// utils/fuse_helper.py:171-303), per head, f16 storage, f32 accumulation.
//
// Layouts (C = heads * head_dim; head h is the column block [h*D, (h+1)*D)):
//   q   [B, N_img, C] f16  image queries, already scaled by 1/sqrt(D)
//   k_l [B, T, C]     f16  text keys
//   v_l [B, T, C]     f16  text values
//   v_v [B, N_img, C] f16  image values
//   mask [B, T] i32        non-zero = real token
//   o_v [B, N_img, C] f16, o_t [B, T, C] f16
//
// A = clamp(q k_l^T, +-clamp) is never stored: both directions are flash-style (online
// softmax over key tiles). Image -> text: each block owns 16 image rows and streams all T
// tokens (logit + 1 for real tokens, + text_pad_fill for padding, as GLIP's masked_fill
// of the 0/1 mask). Text -> image: each block owns 16 text rows and streams one chunk of
// the image axis (img_splits chunks), writing partial (max, sum, weighted sum) to the
// workspace; a merge kernel combines the chunks. GLIP's "A^T - rowmax, clamp +-50000,
// softmax" equals the online softmax exactly: the upper clamp cannot bind (A - max <= 0)
// and exp of anything below -104 is already 0 in f32, so the lower clamp changes nothing.
//
// head_dim must be 256 (GLIP hard-codes 8 heads of 256): one thread per output column.
#include "common.cuh"

#define BA_D 256      // head_dim == blockDim.x
#define BA_ROWS 16    // query rows per block
#define BA_KEYS 16    // keys per streamed tile
#define BA_PITCH (BA_D + 1)  // odd pitch: lane j reading row j hits bank (j + c) % 32

struct BaSmem {
    float rows[BA_ROWS][BA_PITCH];  // query rows of this block (f32)
    float kv[BA_KEYS][BA_PITCH];    // key tile, then value tile
    float p[BA_ROWS][BA_KEYS];      // probabilities of the current tile (unnormalised)
    float m[BA_ROWS];               // running max
    float l[BA_ROWS];               // running sum
    float scale[BA_ROWS];           // exp(m_old - m_new) of the current tile
};

// One key/value tile of keys [k0, k0 + BA_KEYS) ∩ [k0, k_end) for this block's rows.
// keys/vals point at element (key 0, channel h*D) of their sequence, row stride ld.
// bias: per key additive term (nullptr = none). acc: this thread's column, per row.
GLIP_DEVICE void ba_tile(BaSmem& s, const __half* keys, const __half* vals, int64_t ld, int k0, int k_end,
                         const int32_t* mask, float pad_fill, float clamp, float acc[BA_ROWS]) {
    const int tid = threadIdx.x;
    __syncthreads();  // previous tile's value reads are done
#pragma unroll 4
    for (int j = 0; j < BA_KEYS; ++j) {
        int k = k0 + j;
        s.kv[j][tid] = k < k_end ? __half2float(keys[(int64_t)k * ld + tid]) : 0.f;
    }
    __syncthreads();

    // Logit of (row r, key j): 16 x 16 = 256 = one per thread; a row is a 16-lane half warp.
    const int r = tid / BA_KEYS, j = tid % BA_KEYS;
    const int k = k0 + j;
    float dot = 0.f;
#pragma unroll 8
    for (int c = 0; c < BA_D; ++c) dot = fmaf(s.rows[r][c], s.kv[j][c], dot);
    float x = fminf(fmaxf(dot, -clamp), clamp);
    if (mask) x += mask[k < k_end ? k : 0] != 0 ? 1.f : pad_fill;
    if (k >= k_end) x = -INFINITY;

    float tmax = x;
#pragma unroll
    for (int o = BA_KEYS / 2; o > 0; o >>= 1) tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, o));
    const float m_old = s.m[r];
    const float m_new = fmaxf(m_old, tmax);  // finite: the tile holds at least one key
    const float e = expf(x - m_new);
    float sum = e;
#pragma unroll
    for (int o = BA_KEYS / 2; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
    s.p[r][j] = e;
    if (j == 0) {
        const float sc = expf(m_old - m_new);  // 0 when m_old = -inf
        s.scale[r] = sc;
        s.l[r] = s.l[r] * sc + sum;
        s.m[r] = m_new;
    }
    __syncthreads();  // logits read the key tile; p/scale are complete

#pragma unroll 4
    for (int jj = 0; jj < BA_KEYS; ++jj) {
        int kk = k0 + jj;
        s.kv[jj][tid] = kk < k_end ? __half2float(vals[(int64_t)kk * ld + tid]) : 0.f;
    }
    __syncthreads();
#pragma unroll
    for (int rr = 0; rr < BA_ROWS; ++rr) {
        float a = acc[rr] * s.scale[rr];
#pragma unroll
        for (int jj = 0; jj < BA_KEYS; ++jj) a = fmaf(s.p[rr][jj], s.kv[jj][tid], a);
        acc[rr] = a;
    }
}

// Loads this block's query rows [r0, r0 + BA_ROWS) ∩ [r0, r_end) and resets the softmax state.
GLIP_DEVICE void ba_init(BaSmem& s, const __half* rows, int64_t ld, int r0, int r_end, float acc[BA_ROWS]) {
    const int tid = threadIdx.x;
#pragma unroll
    for (int r = 0; r < BA_ROWS; ++r) {  // full unroll keeps acc[] in registers
        int rr = r0 + r;
        s.rows[r][tid] = rr < r_end ? __half2float(rows[(int64_t)rr * ld + tid]) : 0.f;
        acc[r] = 0.f;
    }
    if (tid < BA_ROWS) {
        s.m[tid] = -INFINITY;
        s.l[tid] = 0.f;
    }
}

// Image -> text. grid (ceil(n_img / 16), heads, batch), block 256.
// q: [B, N_img, C] f16; k_l, v_l: [B, T, C] f16; mask: [B, T] i32; o_v: [B, N_img, C] f16
extern "C" __global__ void glip_bi_attn_img_f16(GlipBiAttnParams p, const __half* q, const __half* k_l, const __half* v_l, const int32_t* mask, __half* o_v) {
    __shared__ BaSmem s;
    const int b = blockIdx.z, h = blockIdx.y, r0 = blockIdx.x * BA_ROWS;
    const int64_t C = (int64_t)p.heads * BA_D;
    float acc[BA_ROWS];
    ba_init(s, q + ((int64_t)b * p.n_img) * C + h * BA_D, C, r0, p.n_img, acc);
    const __half* kb = k_l + ((int64_t)b * p.n_txt) * C + h * BA_D;
    const __half* vb = v_l + ((int64_t)b * p.n_txt) * C + h * BA_D;
    const int32_t* mb = mask + (int64_t)b * p.n_txt;
    for (int k0 = 0; k0 < p.n_txt; k0 += BA_KEYS) ba_tile(s, kb, vb, C, k0, p.n_txt, mb, p.text_pad_fill, p.clamp, acc);
    __syncthreads();
    __half* ob = o_v + ((int64_t)b * p.n_img) * C + h * BA_D;
#pragma unroll
    for (int r = 0; r < BA_ROWS; ++r) {
        int rr = r0 + r;
        if (rr < p.n_img) ob[(int64_t)rr * C + threadIdx.x] = __float2half_rn(acc[r] / s.l[r]);
    }
}

// Text -> image, partial over one image chunk.
// grid (ceil(T / 16), heads, batch * img_splits), block 256. Chunk = ceil(n_img / img_splits).
// q, v_v: [B, N_img, C] f16; k_l: [B, T, C] f16
// ws_m, ws_l: [B, heads, img_splits, T] f32; ws_acc: [B, heads, img_splits, T, 256] f32
extern "C" __global__ void glip_bi_attn_txt_partial_f16(GlipBiAttnParams p, const __half* q, const __half* k_l, const __half* v_v, float* ws_m, float* ws_l, float* ws_acc) {
    __shared__ BaSmem s;
    const int b = blockIdx.z / p.img_splits, split = blockIdx.z % p.img_splits;
    const int h = blockIdx.y, r0 = blockIdx.x * BA_ROWS;
    const int64_t C = (int64_t)p.heads * BA_D;
    const int chunk = (p.n_img + p.img_splits - 1) / p.img_splits;
    const int i_begin = min(split * chunk, p.n_img), i_end = min(i_begin + chunk, p.n_img);
    float acc[BA_ROWS];
    ba_init(s, k_l + ((int64_t)b * p.n_txt) * C + h * BA_D, C, r0, p.n_txt, acc);
    const __half* kb = q + ((int64_t)b * p.n_img + i_begin) * C + h * BA_D;
    const __half* vb = v_v + ((int64_t)b * p.n_img + i_begin) * C + h * BA_D;
    const int len = i_end - i_begin;
    for (int k0 = 0; k0 < len; k0 += BA_KEYS) ba_tile(s, kb, vb, C, k0, len, nullptr, 0.f, p.clamp, acc);
    __syncthreads();
    const int64_t base = (((int64_t)b * p.heads + h) * p.img_splits + split) * p.n_txt;
#pragma unroll
    for (int r = 0; r < BA_ROWS; ++r) {
        int t = r0 + r;
        if (t < p.n_txt) {
            ws_acc[(base + t) * BA_D + threadIdx.x] = acc[r];
            if (threadIdx.x == 0) {
                ws_m[base + t] = s.m[r];  // -inf for an empty chunk
                ws_l[base + t] = s.l[r];
            }
        }
    }
}

// Text -> image merge of the img_splits partials. grid (T, heads, batch), block 256.
// ws_m, ws_l: [B, heads, img_splits, T] f32; ws_acc: [B, heads, img_splits, T, 256] f32
// o_t: [B, T, C] f16
extern "C" __global__ void glip_bi_attn_txt_merge_f16(GlipBiAttnParams p, const float* ws_m, const float* ws_l, const float* ws_acc, __half* o_t) {
    const int t = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    const int64_t C = (int64_t)p.heads * BA_D;
    const int64_t base = ((int64_t)b * p.heads + h) * p.img_splits * (int64_t)p.n_txt + t;
    float m = -INFINITY;
    for (int sp = 0; sp < p.img_splits; ++sp) m = fmaxf(m, ws_m[base + (int64_t)sp * p.n_txt]);
    float l = 0.f, a = 0.f;
    for (int sp = 0; sp < p.img_splits; ++sp) {
        const int64_t i = base + (int64_t)sp * p.n_txt;
        const float w = expf(ws_m[i] - m);  // 0 for an empty chunk (m_s = -inf)
        l = fmaf(ws_l[i], w, l);
        a = fmaf(ws_acc[i * BA_D + threadIdx.x], w, a);
    }
    o_t[((int64_t)b * p.n_txt + t) * C + h * BA_D + threadIdx.x] = __float2half_rn(a / l);
}
