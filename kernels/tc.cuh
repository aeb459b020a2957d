// Tensor-core and async-copy instructions as inline PTX, each with an emulated twin behind
// GLIP_EMULATED (kernels/emu/ptx_emu.h) so kernels that use them run in the emulated device
// too. Fragment layouts are PTX's documented ones ("Matrix Fragments for mma.m16n8k16",
// "ldmatrix"); the twin implements exactly those, so a layout mistake in a kernel fails its
// parity test on the CPU as it would on the GPU.
#pragma once
#include "common.cuh"

#ifdef GLIP_EMULATED
#include "ptx_emu.h"
#else
// d[4] (f32) = A (16x16 f16, row) * B (16x8 f16, col) + c[4]. Lane l = 4*g + t holds
// a = {A[g][2t..2t+1], A[g+8][2t..], A[g][2t+8..], A[g+8][2t+8..]}, b = {B[2t..2t+1][g],
// B[2t+8..2t+9][g]}, c/d = {C[g][2t], C[g][2t+1], C[g+8][2t], C[g+8][2t+1]}.
GLIP_DEVICE void glip_mma_m16n8k16_f16f32(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4]) {
#if __CUDA_ARCH__ >= 800
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%10,%11,%12,%13};\n"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]),
          "f"(c[3]));
#else
    __trap();  // sm_75 has no m16n8k16 f16 mma; callers require sm_80+
#endif
}

// Four 8x8 b16 matrices from shared memory; lane 8j + i gives the address of row i of
// matrix j (16-byte aligned); r[j] of lane l = 4g + t holds row g, columns 2t, 2t+1.
GLIP_DEVICE void glip_ldmatrix_x4(uint32_t r[4], const void* smem_row) {
    const unsigned a = (unsigned)__cvta_generic_to_shared(smem_row);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}
// As glip_ldmatrix_x4, transposed: r[j] of lane 4g + t holds rows 2t, 2t+1 of column g.
GLIP_DEVICE void glip_ldmatrix_x4_trans(uint32_t r[4], const void* smem_row) {
    const unsigned a = (unsigned)__cvta_generic_to_shared(smem_row);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}
// Two 8x8 matrices (lanes 0..15 give the row addresses).
GLIP_DEVICE void glip_ldmatrix_x2(uint32_t r[2], const void* smem_row) {
    const unsigned a = (unsigned)__cvta_generic_to_shared(smem_row);
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n" : "=r"(r[0]), "=r"(r[1]) : "r"(a));
}

// 16 bytes global -> shared, asynchronous (sm_80+); complete after commit + wait.
GLIP_DEVICE void glip_cp_async_16(void* smem, const void* gmem) {
#if __CUDA_ARCH__ >= 800
    const unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gmem));
#else
    *reinterpret_cast<uint4*>(smem) = *reinterpret_cast<const uint4*>(gmem);
#endif
}
GLIP_DEVICE void glip_cp_async_commit() {
#if __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;\n" ::);
#endif
}
// Waits until at most N of this thread's committed groups are still in flight.
template <int N>
GLIP_DEVICE void glip_cp_async_wait() {
#if __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
#endif
}
#endif
