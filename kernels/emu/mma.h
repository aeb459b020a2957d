// Emulated <mma.h>: nvcuda::wmma fragments for the kernels compiled as host C++.
// CUDA leaves the element-to-lane mapping of a fragment unspecified; here lane l holds
// elements [l*E, (l+1)*E) of the tile in row-major order (E = M*N/32 resp. M*K/32, K*N/32),
// so per-element loops over frag.x[] work as on the GPU. load/store/mma are warp
// collectives: every lane of the warp must call them with the same pointer and leading
// dimension (checked), pointers must be 256-bit aligned and ldm a multiple of 16 bytes
// (checked), as the CUDA programming guide requires.
#pragma once
#include "cuda_emu.h"

namespace nvcuda {
namespace wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K>
struct tile_dims;
template <int M, int N, int K> struct tile_dims<matrix_a, M, N, K> { static constexpr int rows = M, cols = K; };
template <int M, int N, int K> struct tile_dims<matrix_b, M, N, K> { static constexpr int rows = K, cols = N; };
template <int M, int N, int K> struct tile_dims<accumulator, M, N, K> { static constexpr int rows = M, cols = N; };

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
    static_assert((M == 16 && N == 16 && K == 16) || (M == 32 && N == 8 && K == 16) || (M == 8 && N == 32 && K == 16),
                  "emulated wmma supports the f16 shapes m16n16k16, m32n8k16, m8n32k16");
    static constexpr int rows = tile_dims<Use, M, N, K>::rows;
    static constexpr int cols = tile_dims<Use, M, N, K>::cols;
    static constexpr int num_elements = rows * cols / 32;
    typedef T element_type;
    T x[num_elements];
};

namespace detail {
struct LoadSlot {
    const void* ptr;
    unsigned ldm;
    int layout;  // 0 row-major, 1 col-major
    int lane;
    void* frag;
};
inline void agree_complete(void* const* slots, unsigned mask) {
    const LoadSlot* first = nullptr;
    for (int l = 0; l < 32; l++) {
        if (!(mask & (1u << l))) continue;
        const LoadSlot* s = static_cast<const LoadSlot*>(slots[l]);
        if (!first) first = s;
        else if (s->ptr != first->ptr || s->ldm != first->ldm || s->layout != first->layout)
            glip_emu::fail("wmma: lanes of one warp pass different pointers or ldm (lane %d: %p ldm %u, lane %d: %p ldm %u)", first->lane, first->ptr, first->ldm, l, s->ptr, s->ldm);
    }
}
template <typename T>
inline void check_ptr(const void* p, unsigned ldm, const char* op) {
    if (((uintptr_t)p) % 32 != 0) glip_emu::fail_class(glip_emu::ERR_ALIGN, "%s: pointer %p is not 256-bit aligned", op, p);
    if ((ldm * sizeof(T)) % 16 != 0) glip_emu::fail_class(glip_emu::ERR_ALIGN, "%s: ldm %u is not a multiple of 16 bytes", op, ldm);
}
}  // namespace detail

template <typename Use, int M, int N, int K, typename T, typename L, typename V>
inline void fill_fragment(fragment<Use, M, N, K, T, L>& f, const V& v) {
    for (int i = 0; i < f.num_elements; i++) f.x[i] = T(v);
}

template <typename Use, int M, int N, int K, typename T, typename L, typename S>
inline void wmma_load(fragment<Use, M, N, K, T, L>& f, const S* p, unsigned ldm, int col_major) {
    detail::check_ptr<S>(p, ldm, "wmma::load_matrix_sync");
    detail::LoadSlot s{p, ldm, col_major, glip_emu::g_thread->lane, &f};
    glip_emu::warp_collective(0xffffffffu, "wmma::load_matrix_sync", __FILE__, __LINE__, &s, detail::agree_complete);
    typedef fragment<Use, M, N, K, T, L> F;
    const int e0 = glip_emu::g_thread->lane * F::num_elements;
    for (int i = 0; i < F::num_elements; i++) {
        const int e = e0 + i, r = e / F::cols, c = e % F::cols;
        f.x[i] = T(col_major ? p[(size_t)c * ldm + r] : p[(size_t)r * ldm + c]);
    }
}

template <int M, int N, int K, typename T>
inline void load_matrix_sync(fragment<matrix_a, M, N, K, T, row_major>& f, const T* p, unsigned ldm) { wmma_load(f, p, ldm, 0); }
template <int M, int N, int K, typename T>
inline void load_matrix_sync(fragment<matrix_a, M, N, K, T, col_major>& f, const T* p, unsigned ldm) { wmma_load(f, p, ldm, 1); }
template <int M, int N, int K, typename T>
inline void load_matrix_sync(fragment<matrix_b, M, N, K, T, row_major>& f, const T* p, unsigned ldm) { wmma_load(f, p, ldm, 0); }
template <int M, int N, int K, typename T>
inline void load_matrix_sync(fragment<matrix_b, M, N, K, T, col_major>& f, const T* p, unsigned ldm) { wmma_load(f, p, ldm, 1); }
template <int M, int N, int K, typename T>
inline void load_matrix_sync(fragment<accumulator, M, N, K, T, void>& f, const T* p, unsigned ldm, layout_t l) {
    wmma_load(f, p, ldm, l == mem_col_major);
}

template <int M, int N, int K, typename T>
inline void store_matrix_sync(T* p, const fragment<accumulator, M, N, K, T, void>& f, unsigned ldm, layout_t l) {
    detail::check_ptr<T>(p, ldm, "wmma::store_matrix_sync");
    detail::LoadSlot s{p, ldm, l == mem_col_major, glip_emu::g_thread->lane, nullptr};
    glip_emu::warp_collective(0xffffffffu, "wmma::store_matrix_sync", __FILE__, __LINE__, &s, detail::agree_complete);
    typedef fragment<accumulator, M, N, K, T, void> F;
    const int e0 = glip_emu::g_thread->lane * F::num_elements;
    for (int i = 0; i < F::num_elements; i++) {
        const int e = e0 + i, r = e / F::cols, c = e % F::cols;
        if (l == mem_col_major) p[(size_t)c * ldm + r] = f.x[i];
        else p[(size_t)r * ldm + c] = f.x[i];
    }
}

namespace detail {
template <int M, int N, int K, typename TA, typename LA, typename LB, typename TC>
struct MmaSlot {
    fragment<accumulator, M, N, K, TC, void>* d;
    const fragment<matrix_a, M, N, K, TA, LA>* a;
    const fragment<matrix_b, M, N, K, TA, LB>* b;
    const fragment<accumulator, M, N, K, TC, void>* c;
};
// D = A B + C for the whole tile, f32 accumulation in ascending k (products of f16 are exact).
template <int M, int N, int K, typename TA, typename LA, typename LB, typename TC>
inline void mma_complete(void* const* slots, unsigned mask) {
    typedef MmaSlot<M, N, K, TA, LA, LB, TC> S;
    if (mask != 0xffffffffu) glip_emu::fail("wmma::mma_sync needs the full warp");
    float A[M * K], B[K * N], C[M * N];
    const int ea = M * K / 32, eb = K * N / 32, ec = M * N / 32;
    for (int l = 0; l < 32; l++) {
        const S* s = static_cast<const S*>(slots[l]);
        for (int i = 0; i < ea; i++) A[l * ea + i] = (float)s->a->x[i];
        for (int i = 0; i < eb; i++) B[l * eb + i] = (float)s->b->x[i];
        for (int i = 0; i < ec; i++) C[l * ec + i] = (float)s->c->x[i];
    }
    float D[M * N];
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            float acc = C[i * N + j];
            for (int k = 0; k < K; k++) acc += A[i * K + k] * B[k * N + j];
            D[i * N + j] = acc;
        }
    for (int l = 0; l < 32; l++) {
        const S* s = static_cast<const S*>(slots[l]);
        for (int i = 0; i < ec; i++) s->d->x[i] = TC(D[l * ec + i]);
    }
}
}  // namespace detail

template <int M, int N, int K, typename TA, typename LA, typename LB, typename TC>
inline void mma_sync(fragment<accumulator, M, N, K, TC, void>& d, const fragment<matrix_a, M, N, K, TA, LA>& a,
                     const fragment<matrix_b, M, N, K, TA, LB>& b, const fragment<accumulator, M, N, K, TC, void>& c) {
    detail::MmaSlot<M, N, K, TA, LA, LB, TC> s{&d, &a, &b, &c};
    glip_emu::warp_collective(0xffffffffu, "wmma::mma_sync", __FILE__, __LINE__, &s, detail::mma_complete<M, N, K, TA, LA, LB, TC>);
}
}  // namespace wmma
}  // namespace nvcuda
