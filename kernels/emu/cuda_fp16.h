// Emulated <cuda_fp16.h>: __half and __half2 for the kernels compiled as host C++
// (kernels/emu/README in docs/kernels.md). Bit-exact with the GPU for conversions (round to
// nearest even, canonical NaN 0x7fff) and for + - * / and fma: computing in float (or double
// for fma) and rounding once to half is exact, since 24 >= 2*11 + 2 (no double-rounding error).
#pragma once
#include <stdint.h>
#include <string.h>

namespace glip_emu {
inline unsigned short f32_to_f16_bits(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    const uint32_t sign = (x >> 16) & 0x8000u;
    const uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return 0x7fffu;                 // NaN (the GPU's canonical NaN)
    if (ax >= 0x477ff000u) return (unsigned short)(sign | 0x7c00u);  // rounds to +-inf
    if (ax < 0x38800000u) {                               // half subnormal or zero
        if (ax < 0x33000000u) return (unsigned short)sign;  // <= 2^-25 rounds to 0
        const uint32_t e = ax >> 23, m = (ax & 0x7fffffu) | 0x800000u;
        const uint32_t s = 126u - e;                       // 14..24
        uint32_t q = m >> s;
        const uint32_t rem = m & ((1u << s) - 1u), half = 1u << (s - 1u);
        if (rem > half || (rem == half && (q & 1u))) q++;
        return (unsigned short)(sign | q);
    }
    const uint32_t r = ax - 0x38000000u;  // rebias 127 -> 15
    uint32_t h = r >> 13;
    const uint32_t rem = r & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++;
    return (unsigned short)(sign | h);
}
inline float f16_bits_to_f32(unsigned short h) {
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    const uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    uint32_t x;
    if (e == 0) {
        if (m == 0) {
            x = sign;
        } else {  // subnormal: m * 2^-24
            float v = (float)m * (1.0f / 16777216.0f);
            memcpy(&x, &v, 4);
            x |= sign;
        }
    } else if (e == 31) {
        x = sign | 0x7f800000u | (m << 13);
    } else {
        x = sign | ((e + 112u) << 23) | (m << 13);
    }
    float f;
    memcpy(&f, &x, 4);
    return f;
}
}  // namespace glip_emu

struct __half {
    unsigned short __x;
    __half() = default;
    __half(float f) : __x(glip_emu::f32_to_f16_bits(f)) {}
    __half(double f) : __x(glip_emu::f32_to_f16_bits((float)f)) {}
    __half(int v) : __x(glip_emu::f32_to_f16_bits((float)v)) {}
    operator float() const { return glip_emu::f16_bits_to_f32(__x); }
};
struct __attribute__((aligned(4))) __half2 {
    __half x, y;
    __half2() = default;
    __half2(__half a, __half b) : x(a), y(b) {}
};
typedef __half half;
typedef __half2 half2;

inline __half glip_emu_raw_half(unsigned short b) { __half h; h.__x = b; return h; }
inline float __half2float(__half h) { return glip_emu::f16_bits_to_f32(h.__x); }
inline __half __float2half(float f) { return glip_emu_raw_half(glip_emu::f32_to_f16_bits(f)); }
inline __half __float2half_rn(float f) { return __float2half(f); }
inline __half2 __float2half2_rn(float f) { return __half2(__float2half(f), __float2half(f)); }
inline __half2 __floats2half2_rn(float a, float b) { return __half2(__float2half(a), __float2half(b)); }
inline __half2 __halves2half2(__half a, __half b) { return __half2(a, b); }
inline __half2 __half2half2(__half a) { return __half2(a, a); }
inline __half __low2half(__half2 v) { return v.x; }
inline __half __high2half(__half2 v) { return v.y; }
inline float __low2float(__half2 v) { return __half2float(v.x); }
inline float __high2float(__half2 v) { return __half2float(v.y); }
inline unsigned short __half_as_ushort(__half h) { return h.__x; }
inline __half __ushort_as_half(unsigned short b) { return glip_emu_raw_half(b); }
inline short __half_as_short(__half h) { return (short)h.__x; }
inline __half __short_as_half(short b) { return glip_emu_raw_half((unsigned short)b); }
inline __half __int2half_rn(int v) { return __float2half((float)v); }
inline int __half2int_rn(__half h) { return (int)__builtin_rintf(__half2float(h)); }
inline int __half2int_rz(__half h) { return (int)__half2float(h); }

inline __half __hadd(__half a, __half b) { return __float2half(__half2float(a) + __half2float(b)); }
inline __half __hsub(__half a, __half b) { return __float2half(__half2float(a) - __half2float(b)); }
inline __half __hmul(__half a, __half b) { return __float2half(__half2float(a) * __half2float(b)); }
inline __half __hdiv(__half a, __half b) { return __float2half(__half2float(a) / __half2float(b)); }
inline __half __hneg(__half a) { return glip_emu_raw_half((unsigned short)(a.__x ^ 0x8000u)); }
inline __half __habs(__half a) { return glip_emu_raw_half((unsigned short)(a.__x & 0x7fffu)); }
inline __half __hfma(__half a, __half b, __half c) {
    return __float2half((float)((double)__half2float(a) * (double)__half2float(b) + (double)__half2float(c)));
}
inline __half __hmax(__half a, __half b) {
    const float x = __half2float(a), y = __half2float(b);
    return x != x ? b : (y != y ? a : (x > y ? a : b));
}
inline __half __hmin(__half a, __half b) {
    const float x = __half2float(a), y = __half2float(b);
    return x != x ? b : (y != y ? a : (x < y ? a : b));
}
inline bool __hisnan(__half a) { return (a.__x & 0x7fffu) > 0x7c00u; }
inline bool __heq(__half a, __half b) { return __half2float(a) == __half2float(b); }
inline bool __hlt(__half a, __half b) { return __half2float(a) < __half2float(b); }
inline bool __hgt(__half a, __half b) { return __half2float(a) > __half2float(b); }
inline __half2 __hadd2(__half2 a, __half2 b) { return __half2(__hadd(a.x, b.x), __hadd(a.y, b.y)); }
inline __half2 __hsub2(__half2 a, __half2 b) { return __half2(__hsub(a.x, b.x), __hsub(a.y, b.y)); }
inline __half2 __hmul2(__half2 a, __half2 b) { return __half2(__hmul(a.x, b.x), __hmul(a.y, b.y)); }
inline __half2 __hfma2(__half2 a, __half2 b, __half2 c) { return __half2(__hfma(a.x, b.x, c.x), __hfma(a.y, b.y, c.y)); }
inline __half2 __hmax2(__half2 a, __half2 b) { return __half2(__hmax(a.x, b.x), __hmax(a.y, b.y)); }

#ifndef GLIP_EMU_VECTOR_TYPES
#error "include kernels/emu/cuda_emu.h first (build.rs force-includes it)"
#endif
inline float2 __half22float2(__half2 v) { return make_float2(__half2float(v.x), __half2float(v.y)); }
inline __half2 __float22half2_rn(float2 v) { return __floats2half2_rn(v.x, v.y); }

inline __half operator+(__half a, __half b) { return __hadd(a, b); }
inline __half operator-(__half a, __half b) { return __hsub(a, b); }
inline __half operator*(__half a, __half b) { return __hmul(a, b); }
inline __half operator/(__half a, __half b) { return __hdiv(a, b); }
inline __half operator-(__half a) { return __hneg(a); }
inline __half& operator+=(__half& a, __half b) { a = __hadd(a, b); return a; }
inline __half& operator*=(__half& a, __half b) { a = __hmul(a, b); return a; }
inline __half2 operator+(__half2 a, __half2 b) { return __hadd2(a, b); }
inline __half2 operator*(__half2 a, __half2 b) { return __hmul2(a, b); }
