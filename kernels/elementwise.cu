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

// Broadcasts of a factor over f16 activations (f32 arithmetic; CPU twins in
// backend/cpu/ops.rs).

// y[i] = x[i] * a[i / inner]: x [N, ...], a [N] (DyFuse's per-image attention).
extern "C" __global__ void glip_elementwise_scale_images_f16(GlipElementwiseParams p, const __half* x, const __half* a, __half* y) {
    GLIP_GRID_STRIDE(i, p.n) { y[i] = __float2half_rn(__half2float(x[i]) * __half2float(a[i / p.inner])); }
}

// y = a + g ⊙ b with g [C] f32 over the last axis (VLFuse's gamma residuals).
extern "C" __global__ void glip_elementwise_add_channel_scaled_f16(GlipElementwiseParams p, const __half* a, const float* g, const __half* b, __half* y) {
    GLIP_GRID_STRIDE(i, p.n) {
        y[i] = __float2half_rn(__half2float(a[i]) + g[i % p.channels] * __half2float(b[i]));
    }
}

// DyReLU's application on NCHW x (planes of `inner` = H*W) with z [N, 4C] = (a1, b1, a2, b2)
// after h_sigmoid: y = max(x a1' + b1', x a2' + b2'), a1' = (a1 - 0.5) 2 + 1, b' = b - 0.5,
// a2' = (a2 - 0.5) 2 (dyrelu.py:88-95).
extern "C" __global__ void glip_elementwise_dyrelu_apply_f16(GlipElementwiseParams p, const __half* x, const __half* z, __half* y) {
    GLIP_GRID_STRIDE(i, p.n) {
        const int64_t plane = i / p.inner, c = p.channels;
        const int64_t b = plane / c, ch = plane % c;
        const __half* zb = z + b * 4 * c;
        const float a1 = (__half2float(zb[ch]) - 0.5f) * 2.0f + 1.0f;
        const float b1 = __half2float(zb[c + ch]) - 0.5f;
        const float a2 = (__half2float(zb[2 * c + ch]) - 0.5f) * 2.0f;
        const float b2 = __half2float(zb[3 * c + ch]) - 0.5f;
        const float v = __half2float(x[i]);
        const float u1 = v * a1 + b1, u2 = v * a2 + b2;
        y[i] = __float2half_rn(u1 > u2 ? u1 : u2);
    }
}

// DyConv's offset conv output om [B, channels = 3 taps, H*W]: the first 2 taps planes -> off [B, 2 taps, H*W], the last taps
// planes -> sigmoid -> mask [B, taps, H*W]. One thread per element of om.
extern "C" __global__ void glip_elementwise_split_offset_mask_f16(GlipElementwiseParams p, const __half* om, __half* off, __half* mask) {
    GLIP_GRID_STRIDE(i, p.n) {
        const int64_t hw = p.inner, c = p.channels, taps = c / 3;
        const int64_t pos = i % hw, ch = (i / hw) % c, b = i / (hw * c);
        const __half v = om[i];
        if (ch < 2 * taps) {
            off[(b * 2 * taps + ch) * hw + pos] = v;
        } else {
            mask[(b * taps + ch - 2 * taps) * hw + pos] = __float2half_rn(glip_sigmoid(__half2float(v)));
        }
    }
}
