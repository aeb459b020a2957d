// Gather and layout: every op of this family is an index map — one output element per
// thread (grid-stride), read from one source element or zero padding (`glip_gather` with a
// source and a destination map) — stamped out for f16 and f32 storage by
// GLIP_EXPORT_KERNEL. Bilinear upsampling reads 4 source elements; the BERT embeddings sum
// three rows. CPU twins: backend/cpu/ops.rs (the op of the same name).
//
// Writes are coalesced (consecutive threads, consecutive outputs); the transposes
// (planes <-> rows) read with a stride of C or H*W.
#include "common.cuh"

// Source index of output element i, or -1 for zero padding; one function per map.

// pad: planes [P, h, w] -> [P, oh, ow], zeros at the bottom and right.
GLIP_DEVICE int64_t glip_map_pad(const GlipLayoutParams& p, int64_t i) {
    const int64_t col = i % p.ow, r = (i / p.ow) % p.oh, plane = i / ((int64_t)p.ow * p.oh);
    if (r >= p.h || col >= p.w) return -1;
    return (plane * p.h + r) * p.w + col;
}

// planes_to_rows: planes [B, C, h*w] -> rows [B, dst_rows, C] starting at row0.
// Output index i runs over [B, h*w, C] (the part written); the destination index is
// glip_dst_rows below.
GLIP_DEVICE int64_t glip_map_planes_to_rows(const GlipLayoutParams& p, int64_t i) {
    const int64_t hw = (int64_t)p.h * p.w;
    const int64_t ch = i % p.channels, pos = (i / p.channels) % hw, b = i / (p.channels * hw);
    return (b * p.channels + ch) * hw + pos;
}
GLIP_DEVICE int64_t glip_dst_rows(const GlipLayoutParams& p, int64_t i) {
    const int64_t hw = (int64_t)p.h * p.w;
    const int64_t ch = i % p.channels, pos = (i / p.channels) % hw, b = i / (p.channels * hw);
    return (b * p.dst_rows + p.row0 + pos) * p.channels + ch;
}

// rows_to_planes: rows [B, src_rows, C] from row0 -> planes [B, C, h*w].
GLIP_DEVICE int64_t glip_map_rows_to_planes(const GlipLayoutParams& p, int64_t i) {
    const int64_t hw = (int64_t)p.h * p.w;
    const int64_t pos = i % hw, ch = (i / hw) % p.channels, b = i / (hw * p.channels);
    return (b * p.src_rows + p.row0 + pos) * p.channels + ch;
}

// copy_rows: [B, src_rows, C] -> [B, dst_rows, C] at row0, n / B elements per image
// (src_rows 0 repeats image 0: repeat_batch).
GLIP_DEVICE int64_t glip_map_copy_rows(const GlipLayoutParams& p, int64_t i) {
    const int64_t per = p.n / p.batch;
    return (i / per) * p.src_rows * p.channels + i % per;
}
GLIP_DEVICE int64_t glip_dst_copy_rows(const GlipLayoutParams& p, int64_t i) {
    const int64_t per = p.n / p.batch;
    return ((i / per) * p.dst_rows + p.row0) * p.channels + i % per;
}

// window_partition: tokens [B, h, w, C] -> windows [B*nW, M*M, C] of the padded grid
// (oh, ow), rolled by -shift: window slot (r, c) reads ((r + s) mod oh, (c + s) mod ow)
// (ops.rs WindowGrid::source); slots beyond (h, w) are the zero padding.
GLIP_DEVICE int64_t glip_map_window_partition(const GlipLayoutParams& p, int64_t i) {
    const int64_t m = p.window, mm = m * m, nww = p.ow / m, nw = (int64_t)(p.oh / m) * nww;
    const int64_t ch = i % p.channels, t = (i / p.channels) % mm, wi = i / (p.channels * mm);
    const int64_t img = wi / nw, wl = wi % nw;
    const int64_t r = ((wl / nww) * m + t / m + p.shift) % p.oh;
    const int64_t c = ((wl % nww) * m + t % m + p.shift) % p.ow;
    if (r >= p.h || c >= p.w) return -1;
    return ((img * p.h + r) * p.w + c) * p.channels + ch;
}

// window_merge_add's source: token (r, c) of [B, h, w, C] is window slot
// ((r - s) mod oh, (c - s) mod ow) of [B*nW, M*M, C] (the inverse roll).
GLIP_DEVICE int64_t glip_map_window_merge(const GlipLayoutParams& p, int64_t i) {
    const int64_t m = p.window, mm = m * m, nww = p.ow / m, nw = (int64_t)(p.oh / m) * nww;
    const int64_t ch = i % p.channels, tok = i / p.channels;
    const int64_t col = tok % p.w, r = (tok / p.w) % p.h, img = tok / ((int64_t)p.w * p.h);
    const int64_t rs = (r + p.oh - p.shift % p.oh) % p.oh;
    const int64_t cs = (col + p.ow - p.shift % p.ow) % p.ow;
    const int64_t wl = (rs / m) * nww + cs / m, t = (rs % m) * m + cs % m;
    return ((img * nw + wl) * mm + t) * p.channels + ch;
}

// patch_merge: [B, h, w, C] -> [B, oh, ow, 4C], quarter q = (0,0), (1,0), (0,1), (1,1) as
// (row, col) offsets (Swin's x0, x1, x2, x3); odd sizes read zeros (spec §8.16).
GLIP_DEVICE int64_t glip_map_patch_merge(const GlipLayoutParams& p, int64_t i) {
    const int64_t c4 = 4 * (int64_t)p.channels;
    const int64_t k = i % c4, q = k / p.channels, ch = k % p.channels, pix = i / c4;
    const int64_t ox = pix % p.ow, oy = (pix / p.ow) % p.oh, img = pix / ((int64_t)p.ow * p.oh);
    const int64_t y = 2 * oy + (q & 1), x = 2 * ox + (q >> 1);
    if (y >= p.h || x >= p.w) return -1;
    return ((img * p.h + y) * p.w + x) * p.channels + ch;
}

// upsample_nearest: planes [P, h, w] -> [P, oh, ow], src = min(floor(dst * scale), in - 1)
// (PyTorch's rule for an explicit size; the scale is in/out in f32, from the host).
GLIP_DEVICE int64_t glip_map_nearest(const GlipLayoutParams& p, int64_t i) {
    const int64_t ox = i % p.ow, oy = (i / p.ow) % p.oh, plane = i / ((int64_t)p.ow * p.oh);
    int64_t sy = (int64_t)floorf((float)oy * p.scale_h), sx = (int64_t)floorf((float)ox * p.scale_w);
    sy = sy < p.h - 1 ? sy : p.h - 1;
    sx = sx < p.w - 1 ? sx : p.w - 1;
    return (plane * p.h + sy) * p.w + sx;
}

// im2col: planes [B, cin, h, w] -> the column matrix [B * oh * ow, cols] of a k x k
// convolution (stride, zero pad), column (ci * k + ky) * k + kx as the weight [cout, cin,
// k, k] flattens; columns from cin * k * k to `cols` are zero (16-byte GEMM rows).
GLIP_DEVICE int64_t glip_map_im2col(const GlipLayoutParams& p, int64_t i) {
    const int64_t kk = (int64_t)p.ksize * p.ksize, col = i % p.cols, row = i / p.cols;
    if (col >= p.channels * kk) return -1;
    const int64_t npos = (int64_t)p.oh * p.ow, b = row / npos, pos = row % npos;
    const int64_t ci = col / kk, ky = (col % kk) / p.ksize, kx = col % p.ksize;
    const int64_t iy = (pos / p.ow) * p.stride - p.pad + ky, ix = (pos % p.ow) * p.stride - p.pad + kx;
    if (iy < 0 || iy >= p.h || ix < 0 || ix >= p.w) return -1;
    return ((b * p.channels + ci) * p.h + iy) * p.w + ix;
}

GLIP_DEVICE int64_t glip_dst_same(const GlipLayoutParams&, int64_t i) { return i; }

template <typename T, int64_t (*Src)(const GlipLayoutParams&, int64_t),
          int64_t (*Dst)(const GlipLayoutParams&, int64_t)>
GLIP_DEVICE void glip_gather(const GlipLayoutParams& p, const T* x, T* y) {
    GLIP_GRID_STRIDE(i, p.n) {
        const int64_t s = Src(p, i);
        y[Dst(p, i)] = s < 0 ? glip_from_f32<T>(0.f) : x[s];
    }
}

// upsample_bilinear_ac: F.interpolate(bilinear, align_corners=True) on planes; the scale is
// (in - 1) / (out - 1) in f32 (0 for a size-1 output), from the host; f32 arithmetic.
template <typename T>
GLIP_DEVICE void glip_bilinear_ac(const GlipLayoutParams& p, const T* x, T* y) {
    GLIP_GRID_STRIDE(i, p.n) {
        const int64_t ox = i % p.ow, oy = (i / p.ow) % p.oh, plane = i / ((int64_t)p.ow * p.oh);
        const float fy = (float)oy * p.scale_h, fx = (float)ox * p.scale_w;
        int64_t y0 = (int64_t)floorf(fy), x0 = (int64_t)floorf(fx);
        y0 = y0 < p.h - 1 ? y0 : p.h - 1;
        x0 = x0 < p.w - 1 ? x0 : p.w - 1;
        const int64_t y1 = y0 + 1 < p.h ? y0 + 1 : p.h - 1, x1 = x0 + 1 < p.w ? x0 + 1 : p.w - 1;
        const float ly = fy - (float)y0, lx = fx - (float)x0;
        const T* src = x + plane * p.h * p.w;
        const float v00 = glip_to_f32(src[y0 * p.w + x0]), v01 = glip_to_f32(src[y0 * p.w + x1]);
        const float v10 = glip_to_f32(src[y1 * p.w + x0]), v11 = glip_to_f32(src[y1 * p.w + x1]);
        const float top = (1.f - lx) * v00 + lx * v01, bot = (1.f - lx) * v10 + lx * v11;
        y[i] = glip_from_f32<T>((1.f - ly) * top + ly * bot);
    }
}

// window_merge_add: y = x + (windows gathered back), tokens [B, h, w, C]; y may alias x.
template <typename T>
GLIP_DEVICE void glip_window_merge_add(const GlipLayoutParams& p, const T* x, const T* win, T* y) {
    GLIP_GRID_STRIDE(i, p.n) {
        y[i] = glip_from_f32<T>(glip_to_f32(x[i]) + glip_to_f32(win[glip_map_window_merge(p, i)]));
    }
}

// The gathers, for f16 and f32 storage (build.rs reads the names of GLIP_EXPORT_KERNEL).
#define GLIP_EXPORT_KERNEL(name, T, SRC, DST)                                   \
    extern "C" __global__ void name(GlipLayoutParams p, const T* x, T* y) {     \
        glip_gather<T, SRC, DST>(p, x, y);                                      \
    }

GLIP_EXPORT_KERNEL(glip_layout_pad_f16, __half, glip_map_pad, glip_dst_same)
GLIP_EXPORT_KERNEL(glip_layout_pad_f32, float, glip_map_pad, glip_dst_same)
GLIP_EXPORT_KERNEL(glip_layout_planes_to_rows_f16, __half, glip_map_planes_to_rows, glip_dst_rows)
GLIP_EXPORT_KERNEL(glip_layout_planes_to_rows_f32, float, glip_map_planes_to_rows, glip_dst_rows)
GLIP_EXPORT_KERNEL(glip_layout_rows_to_planes_f16, __half, glip_map_rows_to_planes, glip_dst_same)
GLIP_EXPORT_KERNEL(glip_layout_rows_to_planes_f32, float, glip_map_rows_to_planes, glip_dst_same)
GLIP_EXPORT_KERNEL(glip_layout_copy_rows_f16, __half, glip_map_copy_rows, glip_dst_copy_rows)
GLIP_EXPORT_KERNEL(glip_layout_copy_rows_f32, float, glip_map_copy_rows, glip_dst_copy_rows)
GLIP_EXPORT_KERNEL(glip_layout_window_partition_f16, __half, glip_map_window_partition, glip_dst_same)
GLIP_EXPORT_KERNEL(glip_layout_window_partition_f32, float, glip_map_window_partition, glip_dst_same)
GLIP_EXPORT_KERNEL(glip_layout_patch_merge_f16, __half, glip_map_patch_merge, glip_dst_same)
GLIP_EXPORT_KERNEL(glip_layout_patch_merge_f32, float, glip_map_patch_merge, glip_dst_same)
GLIP_EXPORT_KERNEL(glip_layout_upsample_nearest_f16, __half, glip_map_nearest, glip_dst_same)
GLIP_EXPORT_KERNEL(glip_layout_upsample_nearest_f32, float, glip_map_nearest, glip_dst_same)
GLIP_EXPORT_KERNEL(glip_layout_im2col_f16, __half, glip_map_im2col, glip_dst_same)
GLIP_EXPORT_KERNEL(glip_layout_im2col_f32, float, glip_map_im2col, glip_dst_same)

extern "C" __global__ void glip_layout_upsample_bilinear_ac_f16(GlipLayoutParams p, const __half* x, __half* y) {
    glip_bilinear_ac<__half>(p, x, y);
}
extern "C" __global__ void glip_layout_upsample_bilinear_ac_f32(GlipLayoutParams p, const float* x, float* y) {
    glip_bilinear_ac<float>(p, x, y);
}
extern "C" __global__ void glip_layout_window_merge_add_f16(GlipLayoutParams p, const __half* x, const __half* win, __half* y) {
    glip_window_merge_add<__half>(p, x, win, y);
}
extern "C" __global__ void glip_layout_window_merge_add_f32(GlipLayoutParams p, const float* x, const float* win, float* y) {
    glip_window_merge_add<float>(p, x, win, y);
}

// BERT embeddings before their LayerNorm: y [B*T, H] = (word[id] + token_type0) + position[t]
// (HF's order), ids [B*T] i32 checked against the vocabulary by the host, t = row % T
// (`h` = T, `channels` = H).
extern "C" __global__ void glip_layout_embed_f16(GlipLayoutParams p, const int32_t* ids, const __half* word, const __half* pos, const float* tt, __half* y) {
    GLIP_GRID_STRIDE(i, p.n) {
        const int64_t d = i % p.channels, row = i / p.channels, t = row % p.h;
        const float a = __half2float(word[(int64_t)ids[row] * p.channels + d]) + tt[d];
        y[i] = __float2half_rn(a + __half2float(pos[t * p.channels + d]));
    }
}
