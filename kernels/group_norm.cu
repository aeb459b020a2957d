// GroupNorm (nn.GroupNorm: biased variance, affine, optional ReLU) over every pyramid level of
// one GN module at once. Level l is its own tensor [B, C, hw_l], at the device addresses
// levels[l].x (input) and levels[l].y (output) of the parameters. A (level, image, group)
// "slab" is contiguous (cpg * hw_l elements).
//
// Two launches, each covering all levels:
//   stats: one block per CHUNK-element piece of a slab -> (mean, M2) of the piece, f32
//   apply: one block per piece again; combines its slab's partials with Chan's formula
//          (exact parallel variance, no E[x^2] - E[x]^2 cancellation) and normalises.
// Splitting slabs into pieces keeps the GPU full at P3 (a P3 slab is 16*16800 elements, 32
// slabs at B=1 would occupy 32 SMs), and batching all levels keeps P5-P7 (tiny slabs) from
// paying five launches each. The apply pass re-reads x, which is L2-resident right after the
// stats pass for GLIP-T sizes (P3 at B=1 is 8.6 MB of f16).
//
// Requirements checked by the Rust wrapper: every level's buffers hold B * C * hw_l elements
// and start 4-byte aligned, cpg * hw_l even (half2 accesses), at most 8 levels.
#include "common.cuh"

#define GN_THREADS 256
#define GN_CHUNK 8192                 // elements per piece
#define GN_PER_THREAD (GN_CHUNK / 2 / GN_THREADS)  // half2 per thread

struct GnPiece {
    int64_t base;      // first element of the piece in its level
    int64_t slab_len;  // elements in the slab
    int64_t first;     // block index of the slab's first piece (its partials start there)
    int n;             // elements in this piece
    int nch;           // pieces in the slab
    int chunk;         // index of this piece in the slab
    int group;
    int hw;
    int level;
};

// Which piece block `item` handles; false past the last one.
GLIP_DEVICE bool gn_locate(const GlipGroupNormParams& p, int64_t item, GnPiece& g) {
    const int cpg = p.channels / p.groups;
    int64_t start = 0;
    for (int l = 0; l < p.num_levels && l < 8; l++) {
        const int64_t slab_len = (int64_t)cpg * p.levels[l].hw;
        const int64_t nch = (slab_len + GN_CHUNK - 1) / GN_CHUNK;
        const int64_t items = (int64_t)p.batch * p.groups * nch;
        if (item < start + items) {
            const int64_t local = item - start;
            const int64_t slab = local / nch;
            g.chunk = (int)(local % nch);
            g.nch = (int)nch;
            g.slab_len = slab_len;
            g.first = item - g.chunk;
            g.base = slab * slab_len + (int64_t)g.chunk * GN_CHUNK;
            g.n = (int)min((int64_t)GN_CHUNK, slab_len - (int64_t)g.chunk * GN_CHUNK);
            g.group = (int)(slab % p.groups);
            g.hw = p.levels[l].hw;
            g.level = l;
            return true;
        }
        start += items;
    }
    return false;
}

// Sum over the block; every thread gets the result. `sh` holds GN_THREADS/32 floats.
GLIP_DEVICE float gn_block_sum(float v, float* sh) {
    v = glip_warp_sum(v);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();  // sh may still be read by a previous call
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    float t = 0.f;
#pragma unroll
    for (int w = 0; w < GN_THREADS / 32; w++) t += sh[w];
    return t;
}

// p: levels (addresses of each [B, C, hw_l] f16 input) and sizes; partials: [pieces, 2] f32
// (mean, M2 of each piece). Grid (pieces), block 256.
extern "C" __global__ void glip_group_norm_stats_f16(GlipGroupNormParams p, float* __restrict__ partials) {
    __shared__ float sh[GN_THREADS / 32];
    GnPiece g;
    if (!gn_locate(p, blockIdx.x, g)) return;  // uniform per block
    const __half* x = reinterpret_cast<const __half*>(p.levels[g.level].x);
    const __half2* x2 = reinterpret_cast<const __half2*>(x + g.base);
    const int n2 = g.n / 2;
    float2 v[GN_PER_THREAD];
    float s = 0.f;
#pragma unroll
    for (int j = 0; j < GN_PER_THREAD; j++) {
        const int e = threadIdx.x + j * GN_THREADS;
        v[j] = e < n2 ? __half22float2(x2[e]) : make_float2(0.f, 0.f);
        s += v[j].x + v[j].y;
    }
    const float mean = gn_block_sum(s, sh) / (float)g.n;
    float q = 0.f;
#pragma unroll
    for (int j = 0; j < GN_PER_THREAD; j++) {
        const int e = threadIdx.x + j * GN_THREADS;
        if (e < n2) {
            const float a = v[j].x - mean, b = v[j].y - mean;
            q += a * a + b * b;
        }
    }
    const float m2 = gn_block_sum(q, sh);
    if (threadIdx.x == 0) {
        partials[2 * (int64_t)blockIdx.x] = mean;
        partials[2 * (int64_t)blockIdx.x + 1] = m2;
    }
}

// p: levels (addresses of each [B, C, hw_l] f16 input and output) and sizes; partials:
// [pieces, 2] f32 from the stats kernel; weight, bias: [C] f32. Grid (pieces), block 256.
extern "C" __global__ void glip_group_norm_apply_f16(GlipGroupNormParams p, const float* __restrict__ partials, const float* __restrict__ weight, const float* __restrict__ bias) {
    __shared__ float sh[GN_THREADS / 32];
    GnPiece g;
    if (!gn_locate(p, blockIdx.x, g)) return;  // uniform per block
    // Chan's combination of the slab's pieces: mean = sum n_j m_j / N,
    // M2 = sum (M2_j + n_j (m_j - mean)^2).
    const float* part = partials + 2 * g.first;
    float s = 0.f;
    for (int j = threadIdx.x; j < g.nch; j += GN_THREADS) {
        const float nj = (float)min((int64_t)GN_CHUNK, g.slab_len - (int64_t)j * GN_CHUNK);
        s += nj * part[2 * j];
    }
    const float mean = gn_block_sum(s, sh) / (float)g.slab_len;
    float q = 0.f;
    for (int j = threadIdx.x; j < g.nch; j += GN_THREADS) {
        const float nj = (float)min((int64_t)GN_CHUNK, g.slab_len - (int64_t)j * GN_CHUNK);
        const float d = part[2 * j] - mean;
        q += part[2 * j + 1] + nj * d * d;
    }
    const float var = gn_block_sum(q, sh) / (float)g.slab_len;
    const float rstd = rsqrtf(var + p.eps);

    const int cpg = p.channels / p.groups;
    const int64_t first_el = (int64_t)g.chunk * GN_CHUNK;  // element index of the piece in its slab
    const __half* x = reinterpret_cast<const __half*>(p.levels[g.level].x);
    __half* y = reinterpret_cast<__half*>(p.levels[g.level].y);
    const __half2* x2 = reinterpret_cast<const __half2*>(x + g.base);
    __half2* y2 = reinterpret_cast<__half2*>(y + g.base);
    const int n2 = g.n / 2;
    for (int e = threadIdx.x; e < n2; e += GN_THREADS) {
        const float2 v = __half22float2(x2[e]);
        // One 32-bit division per pair (slab_len < 2^31, checked by the wrapper); the second
        // half starts the next channel when the first is a channel's last element (odd hw).
        const unsigned idx = (unsigned)(first_el + 2 * e);
        const unsigned ci = idx / (unsigned)g.hw;
        const unsigned c0 = (unsigned)(g.group * cpg) + ci;
        const unsigned c1 = c0 + ((idx - ci * (unsigned)g.hw) + 1u == (unsigned)g.hw ? 1u : 0u);
        float r0 = (v.x - mean) * rstd * weight[c0] + bias[c0];
        float r1 = (v.y - mean) * rstd * weight[c1] + bias[c1];
        if (p.activation == 1) {
            r0 = fmaxf(r0, 0.f);
            r1 = fmaxf(r1, 0.f);
        }
        y2[e] = __floats2half2_rn(r0, r1);
    }
}
