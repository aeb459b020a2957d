// Modulated deformable convolution (DCNv2) 3x3, pad 1, dilation 1, groups 1, one deformable
// group, NCHW, as a fused implicit GEMM:
//   y[b, o, p] = bias[o] + sum_{kk = c*9 + tap} W[o, kk] * col[b, kk, p]
//   col[b, c*9+tap, p] = mask[tap, p] * bilinear(x[b, c], py, px)
// The columns are never written to global memory: each block gathers the bilinear samples of
// its K-chunk into shared memory as f16 and multiplies them with tensor cores (wmma
// 16x16x16, f16 inputs, f32 accumulation).
//
// Sampling rule (torchvision deform_conv2d / mmcv / GLIP's CUDA op): for output (oy, ox) and
// tap k = 3i + j: py = oy*stride - 1 + i + offset[2k], px = ox*stride - 1 + j + offset[2k+1];
// value 0 unless -1 < py < H and -1 < px < W; floor corners, corners outside the map count 0.
//
// GLIP's coarser-level branch reads each image's offset/mask buffer as [18|9, out_h, out_w]
// starting at b * offset_batch_stride / b * mask_batch_stride (spec 3.5.3): the kernel only
// ever indexes offsets with the OUTPUT's position count, exactly like GLIP's kernel.
#include "common.cuh"
#include <mma.h>

using namespace nvcuda;

#define DCN_TAPS 9
#define DCN_BM 64        // output channels per block
#define DCN_BN 64        // output positions per block
#define DCN_BK 32        // K (cin*9) per step
#define DCN_THREADS 128  // 4 warps, each a 32x32 sub-tile (2x2 wmma fragments)
#define DCN_A_LD (DCN_BK + 8)   // halves; multiple of 8 and keeps 32-byte fragment alignment
#define DCN_B_LD (DCN_BN + 8)   // halves
#define DCN_C_LD (DCN_BN + 4)   // floats

struct DcnSmem {
    // Bilinear corners of every (tap, position) of the block: flat index into one [H, W]
    // plane (0 when the corner is outside: its weight is then 0) and weight * mask.
    int idx[DCN_TAPS][4][DCN_BN];
    float wt[DCN_TAPS][4][DCN_BN];
    union {
        struct {
            __half a[DCN_BM][DCN_A_LD];  // W tile [o, kk]
            __half b[DCN_BK][DCN_B_LD];  // column tile [kk, p]
        } ab;
        float c[DCN_BM][DCN_C_LD];       // accumulators staged for the f16 store
    } u;
};

// p: geometry; x: [B, Cin, H, W] f16; offset: image b at b*offset_batch_stride, read as
// [18, out_h, out_w] f16 (2k = dy, 2k+1 = dx); mask: image b at b*mask_batch_stride, read as
// [9, out_h, out_w] f16, already sigmoided; weight: [Cout, Cin*9] f16 (= PyTorch's
// [Cout, Cin, 3, 3] flattened, no transpose); bias: [Cout] f32; y: [B, Cout, out_h, out_w] f16.
// Grid (ceil(out_h*out_w / 64), ceil(Cout / 64), B), block 128.
extern "C" __global__ void glip_deform_conv_fwd_f16(GlipDeformConvParams p, const __half* __restrict__ x, const __half* __restrict__ offset, const __half* __restrict__ mask, const __half* __restrict__ weight, const float* __restrict__ bias, __half* __restrict__ y) {
    __shared__ __align__(32) DcnSmem sm;
    const int tid = threadIdx.x;
    const int warp = tid >> 5;
    const int b = blockIdx.z;
    const int o0 = blockIdx.y * DCN_BM;
    const int p0 = blockIdx.x * DCN_BN;
    const int H = p.in_h, W = p.in_w, cin = p.in_channels, cout = p.out_channels;
    const int npos = p.out_h * p.out_w;
    const int K = cin * DCN_TAPS;
    const int64_t plane = (int64_t)H * W;

    // 1. Sampling coefficients for the block's 64 positions x 9 taps (shared by all channels).
    const __half* off_b = offset + (int64_t)b * p.offset_batch_stride;
    const __half* msk_b = mask + (int64_t)b * p.mask_batch_stride;
    for (int e = tid; e < DCN_TAPS * DCN_BN; e += DCN_THREADS) {
        const int tap = e / DCN_BN, q = e % DCN_BN;
        const int pp = p0 + q;
        int i0 = 0, i1 = 0, i2 = 0, i3 = 0;
        float w0 = 0.f, w1 = 0.f, w2 = 0.f, w3 = 0.f;
        if (pp < npos) {
            const int oy = pp / p.out_w, ox = pp % p.out_w;
            const float dy = __half2float(off_b[(int64_t)(2 * tap) * npos + pp]);
            const float dx = __half2float(off_b[(int64_t)(2 * tap + 1) * npos + pp]);
            const float m = __half2float(msk_b[(int64_t)tap * npos + pp]);
            const float py = (float)(oy * p.stride - p.pad + tap / 3) + dy;
            const float px = (float)(ox * p.stride - p.pad + tap % 3) + dx;
            if (py > -1.f && py < (float)H && px > -1.f && px < (float)W) {
                const float fy = floorf(py), fx = floorf(px);
                const int y0 = (int)fy, x0 = (int)fx, y1 = y0 + 1, x1 = x0 + 1;
                const float ly = py - fy, lx = px - fx, hy = 1.f - ly, hx = 1.f - lx;
                if (y0 >= 0 && x0 >= 0) { i0 = y0 * W + x0; w0 = hy * hx * m; }
                if (y0 >= 0 && x1 <= W - 1) { i1 = y0 * W + x1; w1 = hy * lx * m; }
                if (y1 <= H - 1 && x0 >= 0) { i2 = y1 * W + x0; w2 = ly * hx * m; }
                if (y1 <= H - 1 && x1 <= W - 1) { i3 = y1 * W + x1; w3 = ly * lx * m; }
            }
        }
        sm.idx[tap][0][q] = i0; sm.idx[tap][1][q] = i1; sm.idx[tap][2][q] = i2; sm.idx[tap][3][q] = i3;
        sm.wt[tap][0][q] = w0; sm.wt[tap][1][q] = w1; sm.wt[tap][2][q] = w2; sm.wt[tap][3][q] = w3;
    }

    // Warp w computes rows [wm, wm+32) x cols [wn, wn+32) of the 64x64 tile.
    const int wm = (warp >> 1) * 32, wn = (warp & 1) * 32;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2][2];
#pragma unroll
    for (int i = 0; i < 2; i++)
#pragma unroll
        for (int j = 0; j < 2; j++) wmma::fill_fragment(acc[i][j], 0.f);

    const __half* x_b = x + (int64_t)b * cin * plane;
    for (int k0 = 0; k0 < K; k0 += DCN_BK) {
        __syncthreads();  // coefficients ready (first step) / previous tiles consumed
        // 2a. Weight tile W[o0 .. o0+64, k0 .. k0+32], zero outside.
        for (int e = tid; e < DCN_BM * DCN_BK; e += DCN_THREADS) {
            const int r = e / DCN_BK, kq = e % DCN_BK;
            const int o = o0 + r, kk = k0 + kq;
            sm.u.ab.a[r][kq] = (o < cout && kk < K) ? weight[(int64_t)o * K + kk] : __float2half(0.f);
        }
        // 2b. Column tile: consecutive threads take consecutive positions (coalesced smem).
        for (int e = tid; e < DCN_BK * DCN_BN; e += DCN_THREADS) {
            const int kq = e / DCN_BN, q = e % DCN_BN;
            const int kk = k0 + kq;
            float v = 0.f;
            if (kk < K) {
                const int c = kk / DCN_TAPS, tap = kk % DCN_TAPS;
                const __half* xc = x_b + (int64_t)c * plane;
                v = sm.wt[tap][0][q] * __half2float(xc[sm.idx[tap][0][q]]) +
                    sm.wt[tap][1][q] * __half2float(xc[sm.idx[tap][1][q]]) +
                    sm.wt[tap][2][q] * __half2float(xc[sm.idx[tap][2][q]]) +
                    sm.wt[tap][3][q] * __half2float(xc[sm.idx[tap][3][q]]);
            }
            sm.u.ab.b[kq][q] = __float2half_rn(v);
        }
        __syncthreads();
        // 3. Tensor-core MMA over the 32-wide K step.
#pragma unroll
        for (int ks = 0; ks < DCN_BK; ks += 16) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> fa[2];
            wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::row_major> fb[2];
#pragma unroll
            for (int i = 0; i < 2; i++) wmma::load_matrix_sync(fa[i], &sm.u.ab.a[wm + 16 * i][ks], DCN_A_LD);
#pragma unroll
            for (int j = 0; j < 2; j++) wmma::load_matrix_sync(fb[j], &sm.u.ab.b[ks][wn + 16 * j], DCN_B_LD);
#pragma unroll
            for (int i = 0; i < 2; i++)
#pragma unroll
                for (int j = 0; j < 2; j++) wmma::mma_sync(acc[i][j], fa[i], fb[j], acc[i][j]);
        }
    }
    __syncthreads();  // the C staging area aliases the A/B tiles
#pragma unroll
    for (int i = 0; i < 2; i++)
#pragma unroll
        for (int j = 0; j < 2; j++)
            wmma::store_matrix_sync(&sm.u.c[wm + 16 * i][wn + 16 * j], acc[i][j], DCN_C_LD, wmma::mem_row_major);
    __syncthreads();
    // 4. Bias, f16 store; consecutive threads write consecutive positions of one channel.
    __half* y_b = y + (int64_t)b * cout * npos;
    for (int e = tid; e < DCN_BM * DCN_BN; e += DCN_THREADS) {
        const int r = e / DCN_BN, q = e % DCN_BN;
        const int o = o0 + r, pp = p0 + q;
        if (o < cout && pp < npos) y_b[(int64_t)o * npos + pp] = __float2half_rn(sm.u.c[r][q] + bias[o]);
    }
}
