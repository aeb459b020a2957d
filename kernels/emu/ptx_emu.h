// Emulated twins of kernels/tc.cuh's inline-PTX wrappers (mma.sync m16n8k16, ldmatrix,
// cp.async), with PTX's documented fragment layouts. Warp-wide ones are warp collectives.
#pragma once
#include "cuda_emu.h"

namespace glip_emu {
void mma_m16n8k16(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4], const char* file, int line);
void ldmatrix(uint32_t* r, int count, bool trans, const void* row, const char* file, int line);
void cp_async(void* dst, const void* src, int bytes, const char* file, int line);
void cp_async_commit();
void cp_async_wait(int n);
}  // namespace glip_emu

#define glip_mma_m16n8k16_f16f32(d, a, b, c) glip_emu::mma_m16n8k16((d), (a), (b), (c), __FILE__, __LINE__)
#define glip_ldmatrix_x4(r, p) glip_emu::ldmatrix((r), 4, false, (p), __FILE__, __LINE__)
#define glip_ldmatrix_x4_trans(r, p) glip_emu::ldmatrix((r), 4, true, (p), __FILE__, __LINE__)
#define glip_ldmatrix_x2(r, p) glip_emu::ldmatrix((r), 2, false, (p), __FILE__, __LINE__)
#define glip_cp_async_16(dst, src) glip_emu::cp_async((dst), (src), 16, __FILE__, __LINE__)
#define glip_cp_async_commit() glip_emu::cp_async_commit()
template <int N>
inline void glip_cp_async_wait() { glip_emu::cp_async_wait(N); }
