// Reductions over rows and planes: LayerNorm (last axis) and the global average pool.
// One block per row / plane (grid-stride over rows), f16 storage, f32 accumulation; CPU
// twins: backend/cpu/nn.rs layer_norm (f64 sums), backend/cpu/ops.rs avg_pool (f64 sums).
#include "common.cuh"

#define RD_THREADS 256

// The sum of v over the block, returned to every thread. `sh` holds one partial per warp;
// the first barrier keeps a previous call's readers ahead of this call's writers.
GLIP_DEVICE float glip_block_sum(float v, float* sh) {
    v = glip_warp_sum(v);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    float t = 0.f;
    for (int i = 0; i < (int)(blockDim.x >> 5); ++i) t += sh[i];
    return t;
}

// x, y: [rows, width] f16; w, b: [width] f32. Two passes (mean, then the biased variance
// of x - mean), as the twin: y = (x - mean) / sqrt(var + eps) * w + b.
extern "C" __global__ void __launch_bounds__(RD_THREADS) glip_reduce_layer_norm_f16(GlipReduceParams p, const __half* x, const float* w, const float* b, __half* y) {
    __shared__ float sh[RD_THREADS / 32];
    for (int64_t row = blockIdx.x; row < p.rows; row += gridDim.x) {
        const __half* xr = x + row * p.width;
        float s = 0.f;
        for (int64_t j = threadIdx.x; j < p.width; j += blockDim.x) s += __half2float(xr[j]);
        const float mean = glip_block_sum(s, sh) / (float)p.width;
        float q = 0.f;
        for (int64_t j = threadIdx.x; j < p.width; j += blockDim.x) {
            const float d = __half2float(xr[j]) - mean;
            q += d * d;
        }
        const float inv = rsqrtf(glip_block_sum(q, sh) / (float)p.width + p.eps);
        for (int64_t j = threadIdx.x; j < p.width; j += blockDim.x) {
            y[row * p.width + j] = __float2half_rn((__half2float(xr[j]) - mean) * inv * w[j] + b[j]);
        }
    }
}

// x: [planes, width] f16 -> y: [planes] f16, the mean of each plane.
extern "C" __global__ void __launch_bounds__(RD_THREADS) glip_reduce_avg_pool_f16(GlipReduceParams p, const __half* x, __half* y) {
    __shared__ float sh[RD_THREADS / 32];
    for (int64_t plane = blockIdx.x; plane < p.rows; plane += gridDim.x) {
        const __half* xp = x + plane * p.width;
        float s = 0.f;
        for (int64_t j = threadIdx.x; j < p.width; j += blockDim.x) s += __half2float(xp[j]);
        s = glip_block_sum(s, sh);
        if (threadIdx.x == 0) y[plane] = __float2half_rn(s / (float)p.width);
    }
}
