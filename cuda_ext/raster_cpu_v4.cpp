// The 16-lane (AVX-512, x86-64-v4) build of the per-tile kernels in raster_cpu_tile.h. Only called after
// a run-time check that the CPU has AVX-512 (raster_cpu_core.cpp); elsewhere this file compiles to
// stubs that are never called.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

#include "common.h"
#include "raster_cpu_core.h"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && !defined(RECON_NO_CLONES)
#define RECON_HAVE_V4 1
#pragma GCC push_options
#pragma GCC target("arch=x86-64-v4")
#define RECON_SIMD_AVX512 1  // simd_cpu.h: use AVX-512 mask / reduce instructions
#include "raster_cpu_tile.h"
#pragma GCC pop_options
#else
#define RECON_HAVE_V4 0
#endif

namespace recon {
namespace cpu {

bool have_v4_kernels() { return RECON_HAVE_V4; }

#if RECON_HAVE_V4
#pragma GCC push_options
#pragma GCC target("arch=x86-64-v4")
void forward_tile_v4(const Frame& f, const Inputs& in, int c, int tile, const int64_t* offsets, const int32_t* ids,
                     const Outputs& out, std::vector<float>& acc) {
  if (f.D == 3)
    Kernel<16>::forward_tile<3>(f, in, c, tile, offsets, ids, out, acc);
  else
    Kernel<16>::forward_tile<0>(f, in, c, tile, offsets, ids, out, acc);
}
void backward_tile_v4(const Frame& f, const Inputs& in, const Upstream& up, int c, int tile, const int64_t* offsets,
                      const int32_t* ids, float* slots, std::vector<float>& scratch) {
  if (f.D == 3)
    Kernel<16>::backward_tile<3>(f, in, up, c, tile, offsets, ids, slots, scratch);
  else
    Kernel<16>::backward_tile<0>(f, in, up, c, tile, offsets, ids, slots, scratch);
}
#pragma GCC pop_options
#else
void forward_tile_v4(const Frame&, const Inputs&, int, int, const int64_t*, const int32_t*, const Outputs&,
                     std::vector<float>&) {}
void backward_tile_v4(const Frame&, const Inputs&, const Upstream&, int, int, const int64_t*, const int32_t*, float*,
                      std::vector<float>&) {}
#endif

}  // namespace cpu
}  // namespace recon
