// The emulated CUDA device: what kernels/*.cu need to compile unchanged as host C++ and run
// on the CPU (build.rs force-includes this header; runtime in kernels/emu/runtime.cpp).
//
// Model: the blocks of a grid run one after another on the launching OS thread; the threads
// of a block are fibers (own stacks, cooperative switches); every collective (__syncthreads,
// warp shuffles/votes, __syncwarp, wmma and mma.sync fragments, cp.async waits) is a
// scheduling point that releases its waiters when all live participants have arrived. The
// scheduler's order (forward, reverse, random, warps-ahead) is chosen per launch, so a race
// between barrier phases shows as a difference between schedules. `__shared__` variables are
// function statics in one linker section, refilled (0x00 or 0xFF) before every block. Arrays
// of known size (shared tiles, local arrays) are bounds-checked by -fsanitize=bounds with the
// handler in the runtime; global buffers end on a guard page.
#pragma once
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <type_traits>

#define GLIP_EMULATED 1

// ---- qualifiers --------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __shared__ static __attribute__((section("glip_emu_shared")))
#define __constant__ static
#define __CUDACC_EMU__ 1

// ---- vector types ------------------------------------------------------------------------
#define GLIP_EMU_VECTOR_TYPES 1
struct uint3 { unsigned int x, y, z; };
struct dim3 {
    unsigned int x, y, z;
    dim3(unsigned int a = 1, unsigned int b = 1, unsigned int c = 1) : x(a), y(b), z(c) {}
};
struct __attribute__((aligned(8))) float2 { float x, y; };
struct __attribute__((aligned(16))) float4 { float x, y, z, w; };
struct __attribute__((aligned(8))) int2 { int x, y; };
struct __attribute__((aligned(16))) int4 { int x, y, z, w; };
struct __attribute__((aligned(8))) uint2 { unsigned int x, y; };
struct __attribute__((aligned(16))) uint4 { unsigned int x, y, z, w; };
inline float2 make_float2(float x, float y) { return float2{x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }
inline int2 make_int2(int x, int y) { return int2{x, y}; }
inline int4 make_int4(int x, int y, int z, int w) { return int4{x, y, z, w}; }
inline uint2 make_uint2(unsigned x, unsigned y) { return uint2{x, y}; }
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return uint4{x, y, z, w}; }

// ---- the runtime's view of the current thread ----------------------------------------------
namespace glip_emu {
struct ThreadCtx {
    uint3 idx;     // threadIdx
    int linear;    // x + y*bx + z*bx*by
    int lane;      // linear % 32
    int warp;      // linear / 32
};
extern ThreadCtx* g_thread;  // the fiber running now
extern uint3 g_block_idx;
extern dim3 g_block_dim, g_grid_dim;

// Block barrier; kind 0 plain, 1 count, 2 and, 3 or. Returns the reduction for 1..3.
int block_barrier(int kind, int pred, const char* file, int line);

// A warp collective: every lane of `mask` posts `slot` (its own data); when the last one
// arrives, `complete(slots, mask)` runs once with all lanes' slots (slots[l] for l in mask),
// then all are released. `op` names the collective (lanes must agree on it and on mask).
typedef void (*CollectiveFn)(void* const* slots, unsigned mask);
void warp_collective(unsigned mask, const char* op, const char* file, int line, void* slot, CollectiveFn complete);

// Ends the launch with an error naming kernel, block and thread (does not return). The class
// is the launch's return code (EmuCheck in src/backend/cuda/emu.rs); plain fail() is ERR_WARP.
enum ErrorClass { ERR_LAUNCH = 2, ERR_BOUNDS = 3, ERR_BARRIER = 4, ERR_WARP = 5, ERR_ALIGN = 6 };
[[noreturn]] void fail(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
[[noreturn]] void fail_class(int cls, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

// The block's dynamic shared memory (extern __shared__ arrays are rewritten to this).
void* dynamic_shared();
}  // namespace glip_emu

#define threadIdx (static_cast<const uint3&>(glip_emu::g_thread->idx))
#define blockIdx (static_cast<const uint3&>(glip_emu::g_block_idx))
#define blockDim (static_cast<const dim3&>(glip_emu::g_block_dim))
#define gridDim (static_cast<const dim3&>(glip_emu::g_grid_dim))
#define warpSize 32

#define __syncthreads() ((void)glip_emu::block_barrier(0, 0, __FILE__, __LINE__))
#define __syncthreads_count(p) glip_emu::block_barrier(1, (p) != 0, __FILE__, __LINE__)
#define __syncthreads_and(p) glip_emu::block_barrier(2, (p) != 0, __FILE__, __LINE__)
#define __syncthreads_or(p) glip_emu::block_barrier(3, (p) != 0, __FILE__, __LINE__)
#define __syncwarp(...) glip_emu::syncwarp(__FILE__, __LINE__, ##__VA_ARGS__)
#define __threadfence() ((void)0)
#define __threadfence_block() ((void)0)

// ---- warp shuffles and votes (PTX shfl.sync semantics, including width) ---------------------
namespace glip_emu {
struct ShflSlot {
    uint64_t value;
    uint64_t result;
    int mode;  // 0 idx, 1 up, 2 down, 3 bfly
    int b;     // source lane / delta / lane mask
    int c;     // ((32 - width) << 8) | clamp, as PTX's c operand
    int lane;
};
void shfl_complete(void* const* slots, unsigned mask);
inline void syncwarp_complete(void* const*, unsigned) {}
inline void syncwarp(const char* file, int line, unsigned mask = 0xffffffffu) {
    warp_collective(mask, "__syncwarp", file, line, nullptr, syncwarp_complete);
}

template <typename T>
inline T shfl(unsigned mask, T v, int mode, int b, int width, const char* file, int line) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "shuffle of a type wider than 64 bits");
    if (width <= 0 || width > 32 || (width & (width - 1)) != 0) fail_class(ERR_WARP, "%s:%d: shuffle width %d is not a power of two in 1..32", file, line, width);
    ShflSlot s;
    s.value = 0;
    memcpy(&s.value, &v, sizeof(T));
    s.result = 0;
    s.mode = mode;
    s.b = b;
    s.c = ((32 - width) << 8) | (mode == 1 ? 0 : 0x1f);
    s.lane = g_thread->lane;
    static const char* const names[4] = {"__shfl_sync", "__shfl_up_sync", "__shfl_down_sync", "__shfl_xor_sync"};
    warp_collective(mask, names[mode], file, line, &s, shfl_complete);
    T out;
    memcpy(&out, &s.result, sizeof(T));
    return out;
}

struct VoteSlot {
    int pred;
    unsigned result;
};
void ballot_complete(void* const* slots, unsigned mask);
inline unsigned ballot(unsigned mask, int pred, const char* op, const char* file, int line) {
    VoteSlot s{pred != 0, 0u};
    warp_collective(mask, op, file, line, &s, ballot_complete);
    return s.result;
}
unsigned active_mask();
}  // namespace glip_emu

#define __shfl_sync(m, v, l, ...) glip_emu::shfl((m), (v), 0, (l), glip_emu_width(__VA_ARGS__), __FILE__, __LINE__)
#define __shfl_up_sync(m, v, d, ...) glip_emu::shfl((m), (v), 1, (d), glip_emu_width(__VA_ARGS__), __FILE__, __LINE__)
#define __shfl_down_sync(m, v, d, ...) glip_emu::shfl((m), (v), 2, (d), glip_emu_width(__VA_ARGS__), __FILE__, __LINE__)
#define __shfl_xor_sync(m, v, x, ...) glip_emu::shfl((m), (v), 3, (x), glip_emu_width(__VA_ARGS__), __FILE__, __LINE__)
inline int glip_emu_width() { return 32; }
inline int glip_emu_width(int w) { return w; }
#define __ballot_sync(m, p) glip_emu::ballot((m), (p), "__ballot_sync", __FILE__, __LINE__)
#define __any_sync(m, p) (glip_emu::ballot((m), (p), "__any_sync", __FILE__, __LINE__) != 0u)
#define __all_sync(m, p) (glip_emu::ballot((m), !(p), "__all_sync", __FILE__, __LINE__) == 0u)
#define __activemask() glip_emu::active_mask()

// ---- atomics: fibers switch only at collectives, so a plain read-modify-write is atomic ----
template <typename T> inline T atomicAdd(T* p, T v) { T o = *p; *p = o + v; return o; }
template <typename T> inline T atomicSub(T* p, T v) { T o = *p; *p = o - v; return o; }
template <typename T> inline T atomicExch(T* p, T v) { T o = *p; *p = v; return o; }
template <typename T> inline T atomicMax(T* p, T v) { T o = *p; *p = o < v ? v : o; return o; }
template <typename T> inline T atomicMin(T* p, T v) { T o = *p; *p = v < o ? v : o; return o; }
template <typename T> inline T atomicAnd(T* p, T v) { T o = *p; *p = o & v; return o; }
template <typename T> inline T atomicOr(T* p, T v) { T o = *p; *p = o | v; return o; }
template <typename T> inline T atomicXor(T* p, T v) { T o = *p; *p = o ^ v; return o; }
template <typename T> inline T atomicCAS(T* p, T cmp, T v) { T o = *p; if (o == cmp) *p = v; return o; }
inline unsigned atomicInc(unsigned* p, unsigned lim) { unsigned o = *p; *p = o >= lim ? 0u : o + 1u; return o; }
#define atomicAdd_block atomicAdd

// ---- device math and intrinsics ----------------------------------------------------------
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __powf(float x, float y) { return powf(x, y); }
inline float __fdividef(float x, float y) { return x / y; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return sqrtf(x); }
inline float __saturatef(float x) { return x != x ? 0.f : (x < 0.f ? 0.f : (x > 1.f ? 1.f : x)); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline unsigned __float_as_uint(float f) { unsigned u; memcpy(&u, &f, 4); return u; }
inline int __float_as_int(float f) { int u; memcpy(&u, &f, 4); return u; }
inline float __uint_as_float(unsigned u) { float f; memcpy(&f, &u, 4); return f; }
inline float __int_as_float(int u) { float f; memcpy(&f, &u, 4); return f; }
inline long long __double_as_longlong(double d) { long long u; memcpy(&u, &d, 8); return u; }
inline double __longlong_as_double(long long u) { double d; memcpy(&d, &u, 8); return d; }
inline int __float2int_rn(float x) { return (int)rintf(x); }
inline int __float2int_rz(float x) { return (int)x; }
inline int __float2int_rd(float x) { return (int)floorf(x); }
inline int __float2int_ru(float x) { return (int)ceilf(x); }
inline float __int2float_rn(int x) { return (float)x; }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }
inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll((unsigned long long)x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline unsigned __brev(unsigned x) {
    x = ((x >> 1) & 0x55555555u) | ((x & 0x55555555u) << 1);
    x = ((x >> 2) & 0x33333333u) | ((x & 0x33333333u) << 2);
    x = ((x >> 4) & 0x0f0f0f0fu) | ((x & 0x0f0f0f0fu) << 4);
    x = ((x >> 8) & 0x00ff00ffu) | ((x & 0x00ff00ffu) << 8);
    return (x >> 16) | (x << 16);
}
template <typename T> inline T __ldg(const T* p) { return *p; }

// CUDA's min/max overloads (same-type arguments, as in device code).
#define GLIP_EMU_MINMAX(T)                                  \
    inline T min(T a, T b) { return b < a ? b : a; }        \
    inline T max(T a, T b) { return a < b ? b : a; }
GLIP_EMU_MINMAX(int)
GLIP_EMU_MINMAX(unsigned int)
GLIP_EMU_MINMAX(long)
GLIP_EMU_MINMAX(unsigned long)
GLIP_EMU_MINMAX(long long)
GLIP_EMU_MINMAX(unsigned long long)
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline double max(double a, double b) { return fmax(a, b); }
#undef GLIP_EMU_MINMAX

#include "cuda_fp16.h"

// Pairs each trampoline's argument list with the kernel's signature (see build.rs).
namespace glip_emu {
template <typename... A, size_t... I>
inline void invoke_impl(void (*f)(A...), void** args, std::index_sequence<I...>) {
    f(*static_cast<typename std::remove_reference<A>::type*>(args[I])...);
}
template <typename... A>
inline void invoke(void (*f)(A...), void** args) {
    invoke_impl(f, args, std::index_sequence_for<A...>{});
}
template <typename... A>
constexpr int arity(void (*)(A...)) { return (int)sizeof...(A); }
}  // namespace glip_emu

// The tensor-core twins too, so they are declared at file scope before any kernel source
// (build.rs wraps mutant copies of a family in an unnamed namespace).
#include "ptx_emu.h"
