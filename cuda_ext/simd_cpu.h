// Four-lane (RECON_SIMD_LANES) float/int vectors for the CPU kernels (GCC/Clang vector extensions: SSE on x86,
// NEON on ARM, plain scalar code elsewhere), and a branch-free exp for them.
#pragma once

#include <cstdint>
#include <cstring>

namespace recon {
namespace simd {

#ifndef RECON_SIMD_LANES
#define RECON_SIMD_LANES 4
#endif
constexpr int kLanes = RECON_SIMD_LANES;
typedef float vf __attribute__((vector_size(4 * RECON_SIMD_LANES)));
typedef int32_t vi __attribute__((vector_size(4 * RECON_SIMD_LANES)));  // lane masks: -1 true, 0 false

inline vf splat(float x) { return vf{} + x; }
inline vi splat_i(int32_t x) { return vi{} + x; }
inline vi lane_index() {
  vi v{};
  for (int i = 0; i < kLanes; ++i) v[i] = i;
  return v;
}
inline vf vmin(vf a, vf b) { return a < b ? a : b; }
inline vf vmax(vf a, vf b) { return a > b ? a : b; }
inline vf select(vi mask, vf a, vf b) { return mask ? a : b; }
inline vi select_i(vi mask, vi a, vi b) { return mask ? a : b; }
inline bool any(vi mask) {
  int32_t r = 0;
  for (int i = 0; i < kLanes; ++i) r |= mask[i];
  return r != 0;
}
inline int count(vi mask) {
  int32_t r = 0;
  for (int i = 0; i < kLanes; ++i) r -= mask[i];
  return r;
}
inline int32_t lane_sum(vi x) {
  int32_t r = 0;
  for (int i = 0; i < kLanes; ++i) r += x[i];
  return r;
}
inline float sum(vf x) {
  float r = 0.0f;
  for (int i = 0; i < kLanes; ++i) r += x[i];
  return r;
}

// exp(x) for x <= 0: 2^n * p(r), n = round(x / ln 2), |r| <= ln(2)/2, Taylor to r^7
// (relative error < 1e-7); inputs below -87 are clamped so 2^n stays a normal float.
inline vf exp_nonpositive(vf x) {
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
inline vf load(const float* p) {
  vf v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
inline vi load_i(const int32_t* p) {
  vi v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
inline void store(float* p, vf v) { std::memcpy(p, &v, sizeof(v)); }
inline void store_i(int32_t* p, vi v) { std::memcpy(p, &v, sizeof(v)); }

}  // namespace simd
}  // namespace recon
