// The AVX2 + FMA (x86-64-v3, 8-lane) build of the per-tile kernels (raster_cpu_level.inc). Only called after a run-time
// check that the CPU supports x86-64-v3 (raster_cpu_core.cpp); elsewhere `available()` says no.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

#include "raster_cpu_core.h"

#if RECON_X86_LEVELS
#pragma GCC push_options
#pragma GCC target("arch=x86-64-v3")
#define RECON_SIMD_AVX2 1  // simd_cpu.h: use this level's mask / reduce instructions
#define RECON_LEVEL_NS x86_64_v3
#define RECON_LEVEL_LANES 8
#include "raster_cpu_level.inc"
#pragma GCC pop_options
#else
namespace recon {
namespace cpu {
namespace x86_64_v3 {
bool available() { return false; }
void forward_tile(const Frame&, const Inputs&, int, int, const int64_t*, const int32_t*, const Outputs&,
                  std::vector<float>&) {}
void backward_tile(const Frame&, const Inputs&, const Upstream&, int, int, const int64_t*, const int32_t*, float*,
                   std::vector<float>&) {}
}  // namespace x86_64_v3
}  // namespace cpu
}  // namespace recon
#endif
