// Float / int SIMD vectors of L lanes for the CPU kernels (GCC/Clang vector extensions): with L = 8,
// one AVX register on x86-64-v3 and two SSE / NEON registers elsewhere; with L = 16, one AVX-512
// register on x86-64-v4. Plain scalar code where no vector unit exists. Plus a branch-free exp.
#pragma once

#include <cstdint>
#include <cstring>
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

namespace recon {
namespace simd {

// Always inlined, so each function takes the instruction set of the kernel it is called from.
#if defined(__GNUC__)
#define RECON_SIMD_FN static inline __attribute__((always_inline))
#else
#define RECON_SIMD_FN static inline
#endif

// The vector types of each supported lane count (spelled out: GCC applies a vector_size that
// depends on a template parameter too late for uses inside the template).
template <int L>
struct Vectors;
template <>
struct Vectors<8> {
  typedef float vf __attribute__((vector_size(32)));
  typedef int32_t vi __attribute__((vector_size(32)));
  typedef float vf_half __attribute__((vector_size(16)));
};
template <>
struct Vectors<16> {
  typedef float vf __attribute__((vector_size(64)));
  typedef int32_t vi __attribute__((vector_size(64)));
  typedef float vf_half __attribute__((vector_size(32)));
};

template <int L>
struct Simd {
  using vf = typename Vectors<L>::vf;
  using vi = typename Vectors<L>::vi;  // lane masks: -1 true, 0 false
  using vf_half = typename Vectors<L>::vf_half;

  RECON_SIMD_FN vf splat(float x) { return vf{} + x; }
  RECON_SIMD_FN vi splat_i(int32_t x) { return vi{} + x; }
  RECON_SIMD_FN vf vmin(vf a, vf b) { return a < b ? a : b; }
  RECON_SIMD_FN vf vmax(vf a, vf b) { return a > b ? a : b; }
  RECON_SIMD_FN vf select(vi mask, vf a, vf b) { return mask ? a : b; }
  RECON_SIMD_FN vi select_i(vi mask, vi a, vi b) { return mask ? a : b; }

  // OR of 64-bit words (one or two instructions per word) instead of a lane-by-lane loop.
  // (Where the including code is compiled for AVX-512 / AVX2 and says so with RECON_SIMD_AVX512 /
  // RECON_SIMD_AVX2 -- `#pragma GCC target` does not define __AVX512F__ -- the reductions use that
  // level's test and reduce instructions: the generic forms below cost 10-25 instructions there.)
  RECON_SIMD_FN bool any(vi mask) {
#if defined(RECON_SIMD_AVX512)
    if constexpr (L == 16) {
      const __m512i m = reinterpret_cast<__m512i>(mask);
      return _mm512_test_epi32_mask(m, m) != 0;
    }
#endif
#if defined(RECON_SIMD_AVX2)
    if constexpr (L == 8) {
      const __m256i m = reinterpret_cast<__m256i>(mask);
      return !_mm256_testz_si256(m, m);
    }
#endif
    static_assert(sizeof(vi) % sizeof(uint64_t) == 0, "mask must be whole 64-bit words");
    uint64_t w[sizeof(vi) / sizeof(uint64_t)];
    std::memcpy(w, &mask, sizeof(vi));
    uint64_t r = 0;
    for (size_t i = 0; i < sizeof(vi) / sizeof(uint64_t); ++i) r |= w[i];
    return r != 0;
  }
  RECON_SIMD_FN int32_t lane_sum(vi x) {
#if defined(RECON_SIMD_AVX512)
    if constexpr (L == 16) return _mm512_reduce_add_epi32(reinterpret_cast<__m512i>(x));
#endif
    int32_t r = 0;
    for (int i = 0; i < L; ++i) r += x[i];
    return r;
  }
  // Horizontal sum by halving: the upper half is added onto the lower half until one lane is left.
  RECON_SIMD_FN float sum(vf x) {
#if defined(RECON_SIMD_AVX512)
    if constexpr (L == 16) return _mm512_reduce_add_ps(reinterpret_cast<__m512>(x));
#endif
#if defined(RECON_SIMD_AVX2)
    if constexpr (L == 8) {
      const __m256 v = reinterpret_cast<__m256>(x);
      __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
      h = _mm_add_ps(h, _mm_movehl_ps(h, h));
      return _mm_cvtss_f32(_mm_add_ss(h, _mm_movehdup_ps(h)));
    }
#endif
    static_assert(L % 2 == 0, "halving needs an even lane count");
    vf_half lo, hi;
    std::memcpy(&lo, &x, sizeof(lo));
    std::memcpy(&hi, reinterpret_cast<const char*>(&x) + sizeof(lo), sizeof(hi));
    float h[L / 2];
    const vf_half s = lo + hi;
    std::memcpy(h, &s, sizeof(h));
    for (int w = L / 4; w >= 1; w /= 2)
      for (int i = 0; i < w; ++i) h[i] += h[i + w];
    return h[0];
  }

  // 1 / x for x in [0.01, 1] (here 1 - alpha): on AVX-512 the 14-bit reciprocal estimate refined by one
  // Newton step (relative error ~1e-8, a fraction of a float ulp off a division) instead of a division,
  // which costs ~10 cycles per 16 lanes; elsewhere a plain division.
  RECON_SIMD_FN vf recip(vf x) {
#if defined(RECON_SIMD_AVX512)
    if constexpr (L == 16) {
      const vf r = reinterpret_cast<vf>(_mm512_rcp14_ps(reinterpret_cast<__m512>(x)));
      return r * (2.0f - x * r);
    }
#endif
    return 1.0f / x;
  }

  // exp(x) for x <= 0: 2^n * p(r), n = round(x / ln 2), |r| <= ln(2)/2, Taylor to r^7
  // (relative error < 1e-7); inputs below -87 are clamped so 2^n stays a normal float.
  RECON_SIMD_FN vf exp_nonpositive(vf x) {
    x = vmax(x, splat(-87.0f));
    const vf t = x * 1.44269504088896341f;
    const vf n = (t + 12582912.0f) - 12582912.0f;  // round to nearest (1.5 * 2^23 trick)
    const vf r = (t - n) * 0.693147180559945309f;
    vf p = splat(1.0f / 5040.0f);
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const vi bits = (__builtin_convertvector(n, vi) + 127) << 23;
    return p * (vf)bits;  // same-size vector cast: reinterpret the bits
  }

  // Unaligned-safe, aliasing-safe loads and stores (compile to single vector moves).
  RECON_SIMD_FN vf load(const float* p) {
    vf v;
    std::memcpy(&v, p, sizeof(v));
    return v;
  }
  RECON_SIMD_FN vi load_i(const int32_t* p) {
    vi v;
    std::memcpy(&v, p, sizeof(v));
    return v;
  }
  RECON_SIMD_FN void store(float* p, vf v) { std::memcpy(p, &v, sizeof(v)); }
  RECON_SIMD_FN void store_i(int32_t* p, vi v) { std::memcpy(p, &v, sizeof(v)); }
};

}  // namespace simd
}  // namespace recon
