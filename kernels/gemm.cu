// Tensor-core GEMM with a fused bias epilogue: C[m, n] (f16) = A[m, k] · op(B) + bias[n],
// f16 inputs, f32 accumulation (mma.sync m16n8k16), one rounding to f16.
//   nt: B is [n, k] row-major (PyTorch Linear / 1x1 conv weights): op(B) = Bᵀ.
//   nn: B is [k, n] row-major (activations as the right operand): op(B) = B.
// The plain GEMMs of the model go to cuBLAS; this family exists for GEMMs whose epilogue is
// fused (bias, later activations and residuals) and is the project's first user of the
// tensor-core wrappers in tc.cuh (mma.sync, ldmatrix, cp.async), which the emulated device
// runs with the PTX fragment layouts.
//
// Block 128 threads = 4 warps over a 64x64 tile of C (2x2 warps of 32x32); K in steps of 32,
// double-buffered in shared memory by cp.async (16-byte chunks; rows outside the matrix are
// zero-filled by plain stores, so A and B need k % 8 == 0 (nt) / n % 8 == 0 (nn) and 16-byte
// aligned rows, which the launch wrapper checks). Requires sm_80+ (mma.sync m16n8k16).
#include "common.cuh"
#include "tc.cuh"

#define GM_TILE 64
#define GM_KT 32
#define GM_THREADS 128
// Row pitches in halves: 16-byte multiples (ldmatrix and cp.async alignment) padded off a
// multiple of 128 bytes so the 8 rows one ldmatrix reads fall in different banks.
#define GM_PITCH_K (GM_KT + 8)    // A tile [64][32] and nt B tile [64 n][32 k]
#define GM_PITCH_N (GM_TILE + 8)  // nn B tile [32 k][64 n]
#define GM_B_STAGE (GM_TILE * GM_PITCH_K > GM_KT * GM_PITCH_N ? GM_TILE * GM_PITCH_K : GM_KT * GM_PITCH_N)

// One 16-byte chunk (8 halves) global -> shared: asynchronous when inside the matrix,
// zeros otherwise (rows past m / n, or k past the end).
GLIP_DEVICE void gm_chunk(__half* dst, const __half* src, bool inside) {
    if (inside) {
        glip_cp_async_16(dst, src);
    } else {
        *reinterpret_cast<uint4*>(dst) = make_uint4(0u, 0u, 0u, 0u);
    }
}

// Stage `kt` (columns [kt*32, kt*32+32) of A and the matching rows of op(B)) into shared.
template <bool NT>
GLIP_DEVICE void gm_load(const GlipGemmParams& p, const __half* A, const __half* B, int m0, int n0, int kt,
                         __half* As, __half* Bs) {
    const int tid = threadIdx.x, k0 = kt * GM_KT;
    // A: 64 rows x 4 chunks = 256 chunks, two per thread.
    for (int c = tid; c < GM_TILE * (GM_KT / 8); c += GM_THREADS) {
        const int r = c >> 2, kc = (c & 3) * 8;
        const int gr = m0 + r, gk = k0 + kc;
        const bool in = gr < p.m && gk < p.k;
        gm_chunk(As + r * GM_PITCH_K + kc, in ? A + (int64_t)gr * p.k + gk : A, in);
    }
    if (NT) {  // B [n, k]: 64 n-rows x 4 chunks
        for (int c = tid; c < GM_TILE * (GM_KT / 8); c += GM_THREADS) {
            const int r = c >> 2, kc = (c & 3) * 8;
            const int gn = n0 + r, gk = k0 + kc;
            const bool in = gn < p.n && gk < p.k;
            gm_chunk(Bs + r * GM_PITCH_K + kc, in ? B + (int64_t)gn * p.k + gk : B, in);
        }
    } else {  // B [k, n]: 32 k-rows x 8 chunks
        for (int c = tid; c < GM_KT * (GM_TILE / 8); c += GM_THREADS) {
            const int r = c >> 3, nc = (c & 7) * 8;
            const int gk = k0 + r, gn = n0 + nc;
            const bool in = gk < p.k && gn < p.n;
            gm_chunk(Bs + r * GM_PITCH_N + nc, in ? B + (int64_t)gk * p.n + gn : B, in);
        }
    }
}

// The warp's 32x32 piece of one 32-deep stage: two k16 steps of 2 (m16) x 4 (n8) mma tiles.
template <bool NT>
GLIP_DEVICE void gm_compute(const __half* As, const __half* Bs, int wm, int wn, float acc[2][4][4]) {
    const int lane = threadIdx.x & 31, j = lane >> 3, i = lane & 7;
#pragma unroll
    for (int ks = 0; ks < GM_KT; ks += 16) {
        uint32_t a[2][4], b[4][2];
        // A 16x16 as four 8x8 matrices: (rows 0-7 | 8-15) x (cols 0-7 | 8-15), lane 8j + i
        // giving row i of matrix j, so r[] comes out in mma's a0..a3 order.
#pragma unroll
        for (int mt = 0; mt < 2; ++mt)
            glip_ldmatrix_x4(a[mt], As + (wm + mt * 16 + i + (j & 1) * 8) * GM_PITCH_K + ks + (j >> 1) * 8);
        if (NT) {
            // B[n][k] rows are mma's "col" operand as stored: per n8 tile, matrices k 0-7 and
            // k 8-15 (lanes 0-15 give the addresses).
#pragma unroll
            for (int nt = 0; nt < 4; ++nt)
                glip_ldmatrix_x2(b[nt], Bs + (wn + nt * 8 + i) * GM_PITCH_K + ks + (j & 1) * 8);
        } else {
            // B[k][n] needs the transpose: per pair of n8 tiles, matrices (k 0-7 | 8-15) x
            // (n 0-7 | 8-15), lane 8j + i giving k-row i of matrix j.
#pragma unroll
            for (int np = 0; np < 2; ++np) {
                uint32_t r[4];
                glip_ldmatrix_x4_trans(r, Bs + (ks + i + (j & 1) * 8) * GM_PITCH_N + wn + np * 16 + (j >> 1) * 8);
                b[2 * np][0] = r[0];
                b[2 * np][1] = r[1];
                b[2 * np + 1][0] = r[2];
                b[2 * np + 1][1] = r[3];
            }
        }
#pragma unroll
        for (int mt = 0; mt < 2; ++mt)
#pragma unroll
            for (int nt = 0; nt < 4; ++nt) glip_mma_m16n8k16_f16f32(acc[mt][nt], a[mt], b[nt], acc[mt][nt]);
    }
}

template <bool NT>
GLIP_DEVICE void gm_gemm(const GlipGemmParams& p, const __half* A, const __half* B, const float* bias, __half* C) {
    __shared__ __align__(16) __half As[2][GM_TILE * GM_PITCH_K];
    __shared__ __align__(16) __half Bs[2][GM_B_STAGE];
    const int m0 = blockIdx.y * GM_TILE, n0 = blockIdx.x * GM_TILE;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int wm = (warp >> 1) * 32, wn = (warp & 1) * 32;
    float acc[2][4][4];
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int nt = 0; nt < 4; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[mt][nt][e] = 0.f;

    const int kts = (p.k + GM_KT - 1) / GM_KT;
    gm_load<NT>(p, A, B, m0, n0, 0, As[0], Bs[0]);
    glip_cp_async_commit();
    for (int kt = 0; kt < kts; ++kt) {
        if (kt + 1 < kts) gm_load<NT>(p, A, B, m0, n0, kt + 1, As[(kt + 1) & 1], Bs[(kt + 1) & 1]);
        glip_cp_async_commit();  // possibly empty: keeps one group per iteration
        glip_cp_async_wait<1>();  // stage kt has landed (this thread's copies) ...
        __syncthreads();          // ... and every other thread's
        gm_compute<NT>(As[kt & 1], Bs[kt & 1], wm, wn, acc);
        __syncthreads();  // the next iteration overwrites the stage just read
    }

    // Epilogue: lane 4g + t holds C[g][2t, 2t+1] and C[g+8][2t, 2t+1] of each mma tile.
    const int g = lane >> 2, t = lane & 3;
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int nt = 0; nt < 4; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int row = m0 + wm + mt * 16 + g + (e >> 1) * 8;
                const int col = n0 + wn + nt * 8 + 2 * t + (e & 1);
                if (row < p.m && col < p.n)
                    C[(int64_t)row * p.n + col] = __float2half_rn(acc[mt][nt][e] + bias[col]);
            }
}

// A [m, k], B [n, k], bias [n] f32, C [m, n]; grid (ceil(n/64), ceil(m/64)), block 128.
extern "C" __global__ void __launch_bounds__(GM_THREADS)
    glip_gemm_bias_nt_f16(GlipGemmParams p, const __half* A, const __half* B, const float* bias, __half* C) {
    gm_gemm<true>(p, A, B, bias, C);
}

// A [m, k], B [k, n], bias [n] f32, C [m, n]; grid (ceil(n/64), ceil(m/64)), block 128.
extern "C" __global__ void __launch_bounds__(GM_THREADS)
    glip_gemm_bias_nn_f16(GlipGemmParams p, const __half* A, const __half* B, const float* bias, __half* C) {
    gm_gemm<false>(p, A, B, bias, C);
}
