// CPU compositing kernels on raw pointers (no torch): the torch wrapper is rasterize_cpu.cpp.
// Layouts (C cameras, N splats, D channels, H x W pixels, E tile-splat entries), all row-major:
//   means2d [C,N,2], conics [C,N,3], opacities [C,N], colors [C,N,D], depths [C,N],
//   bbox [C,N,4] int32 [x0,y0,x1,y1) (empty = culled), order [C,N] int32 front to back.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common.h"

namespace recon {
namespace cpu {

struct Frame {
  int C, N, D, W, H, tiles_x, tiles_y, n_tiles;
};

inline Frame make_frame(int C, int N, int D, int W, int H) {
  const int tx = (W + kTileSize - 1) / kTileSize, ty = (H + kTileSize - 1) / kTileSize;
  return Frame{C, N, D, W, H, tx, ty, tx * ty};
}

struct Inputs {
  const float* means2d;
  const float* conics;
  const float* opacities;
  const float* colors;
  const float* depths;
  const int32_t* bbox;
};

struct Outputs {
  float* rgb;        // [C,H,W,D] composited on black
  float* alpha;      // [C,H,W] 1 - final transmittance
  float* depth;      // [C,H,W] sum_i w_i z_i (not normalised)
  float* t_final;    // [C,H,W] final transmittance (saved for the backward)
  int32_t* last;     // [C,H,W] index into ids of the last splat a pixel used, -1 if none
};

struct Upstream {
  const float* g_rgb;    // [C,H,W,D], element strides rgb_stride (any: e.g. 0 for an expanded gradient)
  const float* g_alpha;  // [C,H,W], element strides alpha_stride
  const float* g_depth;  // [C,H,W], element strides depth_stride
  const float* t_final;  // [C,H,W] contiguous
  const int32_t* last;   // [C,H,W] contiguous
  int64_t rgb_stride[4];
  int64_t alpha_stride[3];
  int64_t depth_stride[3];
};

struct Gradients {  // shapes as the inputs; need not be initialised (composite_backward writes every element)
  float* means2d;
  float* conics;
  float* opacities;
  float* colors;
  float* depths;
};

// Per-entry gradient slot layout: means2d(2), conic(3), opacity(1), depth(1), colour(D).
constexpr int kSlotFixed = 7;

// Bins the splats into tile lists (offsets [C*n_tiles+1]; ids [E] splat indices, front to back per tile,
// in the front-to-back `order` [C,N]) and composites every tile; offsets and ids are kept for the backward.
void composite_forward(const Frame& f, const Inputs& in, const int32_t* order, std::vector<int64_t>& offsets,
                       std::vector<int32_t>& ids, const Outputs& out, int threads);

// slots: scratch [E, kSlotFixed + D] (need not be initialised).
void composite_backward(const Frame& f, const Inputs& in, const Upstream& up, const int64_t* offsets,
                        const int32_t* ids, float* slots, const Gradients& grads, int threads);

// Which build of the tile kernels runs: "x86-64-v4" (16 lanes, AVX-512), "x86-64-v3" (8 lanes, AVX2) or
// "baseline" (8 lanes). cpu_kernel(name) switches to a supported build ("" asks) and returns the one in
// use; the default is the best the CPU supports, or the one the RECON_CPU_KERNEL environment variable
// names. Switch only between renders (a forward and its backward must run the same build: their hit
// tests agree bit for bit only then).
std::string cpu_kernel(const std::string& request);
std::vector<std::string> cpu_kernels_supported();

// The x86-64 level builds of the tile kernels (raster_cpu_v3.cpp, raster_cpu_v4.cpp): call only when
// available() and the CPU supports that level. -DRECON_NO_X86_LEVELS builds the baseline only.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && !defined(RECON_NO_X86_LEVELS)
#define RECON_X86_LEVELS 1
#else
#define RECON_X86_LEVELS 0
#endif
#define RECON_DECLARE_LEVEL(NS)                                                                                    \
  namespace NS {                                                                                                   \
  bool available();                                                                                                \
  void forward_tile(const Frame& f, const Inputs& in, int c, int tile, const int64_t* offsets, const int32_t* ids, \
                    const Outputs& out, std::vector<float>& acc);                                                  \
  void backward_tile(const Frame& f, const Inputs& in, const Upstream& up, int c, int tile,                       \
                     const int64_t* offsets, const int32_t* ids, float* slots, std::vector<float>& scratch);      \
  }
RECON_DECLARE_LEVEL(x86_64_v3)
RECON_DECLARE_LEVEL(x86_64_v4)
#undef RECON_DECLARE_LEVEL

}  // namespace cpu
}  // namespace recon
