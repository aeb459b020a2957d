// Elementwise glue: casts between f32 and f16, and y = alpha*a + beta*b.
// f16 storage, f32 arithmetic. One thread per element, grid-stride.
#include "common.cuh"

// x: [n] f32 -> y: [n] f16 (round to nearest even)
extern "C" __global__ void glip_elementwise_cast_f32_f16(GlipElementwiseParams p, const float* x, __half* y) {
    GLIP_GRID_STRIDE(i, p.n) { y[i] = __float2half_rn(x[i]); }
}

// x: [n] f16 -> y: [n] f32
extern "C" __global__ void glip_elementwise_cast_f16_f32(GlipElementwiseParams p, const __half* x, float* y) {
    GLIP_GRID_STRIDE(i, p.n) { y[i] = __half2float(x[i]); }
}

// a, b, y: [n] f16; y = alpha*a + beta*b (y may alias a or b)
extern "C" __global__ void glip_elementwise_axpby_f16(GlipElementwiseParams p, const __half* a, const __half* b, __half* y) {
    GLIP_GRID_STRIDE(i, p.n) {
        float v = p.alpha * __half2float(a[i]) + p.beta * __half2float(b[i]);
        y[i] = __float2half_rn(v);
    }
}

// a, y: [n] f16; y = alpha*a + beta (scale and shift)
extern "C" __global__ void glip_elementwise_scale_f16(GlipElementwiseParams p, const __half* a, __half* y) {
    GLIP_GRID_STRIDE(i, p.n) { y[i] = __float2half_rn(p.alpha * __half2float(a[i]) + p.beta); }
}
