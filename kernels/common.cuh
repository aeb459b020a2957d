// Shared device helpers for every kernel family.
#pragma once
#include <cuda_fp16.h>
#include <stdint.h>
#include "params.h"
#include "params_sizes.h"

#define GLIP_DEVICE __device__ __forceinline__

GLIP_DEVICE float glip_to_f32(float x) { return x; }
GLIP_DEVICE float glip_to_f32(__half x) { return __half2float(x); }
template <typename T> GLIP_DEVICE T glip_from_f32(float x);
template <> GLIP_DEVICE float glip_from_f32<float>(float x) { return x; }
template <> GLIP_DEVICE __half glip_from_f32<__half>(float x) { return __float2half_rn(x); }

// Grid-stride loop over [0, n).
#define GLIP_GRID_STRIDE(i, n) \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); \
         i += (int64_t)blockDim.x * gridDim.x)

GLIP_DEVICE float glip_warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

GLIP_DEVICE float glip_warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

GLIP_DEVICE float glip_sigmoid(float x) { return 1.f / (1.f + expf(-x)); }
