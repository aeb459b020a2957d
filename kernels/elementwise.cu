// Elementwise glue: casts between f32 and f16, y = alpha*a + beta*b, and the unary
// activations (ReLU, clamp, h_sigmoid, exact GELU).
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

// Unary activations, x, y: [n] f16, f32 arithmetic (the CPU twins: backend/cpu/nn.rs).
// Comparisons are written so that NaN behaves as on the CPU: clamp keeps it, relu gives 0.

// y = max(x, 0)
extern "C" __global__ void glip_elementwise_relu_f16(GlipElementwiseParams p, const __half* x, __half* y) {
    GLIP_GRID_STRIDE(i, p.n) {
        float v = __half2float(x[i]);
        y[i] = __float2half_rn(v > 0.0f ? v : 0.0f);
    }
}

// y = clamp(x, -alpha, alpha) (GLIP's ±50000)
extern "C" __global__ void glip_elementwise_clamp_f16(GlipElementwiseParams p, const __half* x, __half* y) {
    GLIP_GRID_STRIDE(i, p.n) {
        float v = __half2float(x[i]);
        v = v < -p.alpha ? -p.alpha : (v > p.alpha ? p.alpha : v);
        y[i] = __float2half_rn(v);
    }
}

// y = ReLU6(x + 3) / 6 (DyReLU's h_sigmoid)
extern "C" __global__ void glip_elementwise_h_sigmoid_f16(GlipElementwiseParams p, const __half* x, __half* y) {
    GLIP_GRID_STRIDE(i, p.n) {
        float t = __half2float(x[i]) + 3.0f;
        t = t < 0.0f ? 0.0f : (t > 6.0f ? 6.0f : t);
        y[i] = __float2half_rn(t / 6.0f);
    }
}

// y = 0.5 x (1 + erf(x / sqrt 2)) (exact GELU, as BERT's)
extern "C" __global__ void glip_elementwise_gelu_f16(GlipElementwiseParams p, const __half* x, __half* y) {
    GLIP_GRID_STRIDE(i, p.n) {
        float v = __half2float(x[i]);
        y[i] = __float2half_rn(0.5f * v * (1.0f + erff(v / 1.41421356f)));
    }
}
