// The AVX-512 (x86-64-v4, 16-lane) build of the per-tile kernels (raster_cpu_level.inc). Only called after a run-time
// check that the CPU supports x86-64-v4 (raster_cpu_core.cpp).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

#include "raster_cpu_core.h"

#define RECON_LEVEL_NS x86_64_v4
#define RECON_LEVEL_LANES 16
#if RECON_X86_LEVELS
#pragma GCC push_options
#pragma GCC target("arch=x86-64-v4")
// GCC 12's own avx512fintrin.h reduce helpers trip -Wmaybe-uninitialized when inlined here.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#define RECON_SIMD_AVX512 1  // simd_cpu.h: use this level's test / reduce instructions
#include "raster_cpu_level.inc"
#pragma GCC pop_options
#else
#include "raster_cpu_level.inc"
#endif
