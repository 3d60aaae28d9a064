// CPU compositing kernels: 16x16 tiles, per-tile depth-sorted splat lists, OpenMP over tiles.
//
// Binning walks the splats in the shared front-to-back `order`, so every tile list comes out
// sorted without a per-tile sort. Inside a tile the loop is splat-major: each splat visits only
// the pixels of its footprint box within the tile, one 4 x 2 (8 lanes) or 4 x 4 (16 lanes, AVX-512)
// block of pixels at a time (SIMD lanes; lanes outside the box are masked), updating per-pixel state
// (transmittance, colour, depth); the tile stops once every pixel has hit the transmittance floor.
// The tile kernels themselves are in raster_cpu_tile.h; this file bins, dispatches and reduces.
// The backward walks each tile's list back to front, recovering T_i = T_{i+1} / (1 - alpha_i)
// from the saved final transmittance (no per-pixel lists are stored), writes each
// (tile, splat) entry's gradient into its own slot, then sums the slots per splat
// (deterministic for any thread count).
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include "common.h"
#include "raster_cpu_core.h"
#include "raster_cpu_tile.h"

namespace recon {
namespace cpu {

namespace {

// The pixel loops are compiled for three x86-64 levels and the best one the CPU supports is picked at
// run time: AVX-512 (x86-64-v4, raster_cpu_v4.cpp) with 16-lane vectors, AVX2 + FMA (x86-64-v3,
// raster_cpu_v3.cpp) and the baseline (here) with 8-lane vectors. Other compilers / CPUs use the
// 8-lane baseline build.
void forward_tile_base(const Frame& f, const Inputs& in, int c, int tile, const int64_t* offsets, const int32_t* ids,
                       const Outputs& out, std::vector<float>& acc) {
  if (f.D == 3)
    Kernel<8>::forward_tile<3>(f, in, c, tile, offsets, ids, out, acc);
  else
    Kernel<8>::forward_tile<0>(f, in, c, tile, offsets, ids, out, acc);
}

void backward_tile_base(const Frame& f, const Inputs& in, const Upstream& up, int c, int tile, const int64_t* offsets,
                        const int32_t* ids, float* slots, std::vector<float>& scratch) {
  if (f.D == 3)
    Kernel<8>::backward_tile<3>(f, in, up, c, tile, offsets, ids, slots, scratch);
  else
    Kernel<8>::backward_tile<0>(f, in, up, c, tile, offsets, ids, slots, scratch);
}

bool cpu_has(int level) {
#if RECON_X86_LEVELS
  __builtin_cpu_init();
  return level == 4 ? __builtin_cpu_supports("x86-64-v4") : __builtin_cpu_supports("x86-64-v3");
#else
  (void)level;
  return false;
#endif
}

// Kernel builds by level: 0 baseline (8 lanes), 3 x86-64-v3 (8 lanes, AVX2), 4 x86-64-v4 (16 lanes, AVX-512).
const char* level_name(int level) { return level == 4 ? "x86-64-v4" : level == 3 ? "x86-64-v3" : "baseline"; }

bool level_supported(int level) {
  if (level == 4) return x86_64_v4::available() && cpu_has(4);
  if (level == 3) return x86_64_v3::available() && cpu_has(3);
  return level == 0;
}

// The build in use: the best the CPU supports, or the one RECON_CPU_KERNEL names (if supported).
std::atomic<int>& level_in_use() {
  static std::atomic<int> level([] {
    const char* env = std::getenv("RECON_CPU_KERNEL");
    for (int l : {4, 3, 0})
      if (env && std::string(env) == level_name(l) && level_supported(l)) return l;
    return level_supported(4) ? 4 : level_supported(3) ? 3 : 0;
  }());
  return level;
}

ForwardTile forward_kernel() {
  switch (level_in_use().load(std::memory_order_relaxed)) {
    case 4: return x86_64_v4::forward_tile;
    case 3: return x86_64_v3::forward_tile;
    default: return forward_tile_base;
  }
}

BackwardTile backward_kernel() {
  switch (level_in_use().load(std::memory_order_relaxed)) {
    case 4: return x86_64_v4::backward_tile;
    case 3: return x86_64_v3::backward_tile;
    default: return backward_tile_base;
  }
}

}  // namespace

std::string cpu_kernel(const std::string& request) {
  for (int l : {4, 3, 0})
    if (request == level_name(l) && level_supported(l)) level_in_use().store(l);
  return level_name(level_in_use().load());
}

std::vector<std::string> cpu_kernels_supported() {
  std::vector<std::string> names;
  for (int l : {4, 3, 0})
    if (level_supported(l)) names.push_back(level_name(l));
  return names;
}

// Binning is a stable parallel counting sort: the front-to-back list of (camera, splat) pairs is cut
// into contiguous chunks (one per thread at most); each chunk counts its entries per tile, the counts
// give every chunk its own cursor per tile (after all earlier chunks' entries), and each chunk then
// writes its entries in order. Every tile list comes out front to back, each splat is read once per
// pass, and a single camera uses every thread. Binning and compositing share one parallel region
// (waking the threads of a region costs about as much as a small loop).
void composite_forward(const Frame& f, const Inputs& in, const int32_t* order, std::vector<int64_t>& offsets,
                       std::vector<int32_t>& ids, const Outputs& out, int threads) {
  const int64_t total = static_cast<int64_t>(f.C) * f.N, n_bins = static_cast<int64_t>(f.C) * f.n_tiles;
  const int chunks = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, total / 4096)));
  std::vector<int64_t> counts(static_cast<size_t>(chunks) * n_bins, 0);  // [chunk][camera * n_tiles + tile]
  offsets.assign(static_cast<size_t>(n_bins) + 1, 0);
  // calls visit(bin) for every tile of the k-th pair of the list; the boxes are read in depth order, i.e.
  // at random, so the one 16 pairs ahead is prefetched (A/B at 2 threads: binning + forward -3 % at 20k
  // splats, -15 % at 200k)
  constexpr int64_t kAhead = 16;
  auto for_tiles = [&](int64_t k, auto&& visit) {
    const int c = static_cast<int>(k / f.N);
    if (k + kAhead < total) __builtin_prefetch(in.bbox + ((k + kAhead) / f.N * f.N + order[k + kAhead]) * 4);
    const int n = order[k];
    const int32_t* b = in.bbox + (static_cast<int64_t>(c) * f.N + n) * 4;
    if (b[2] <= b[0] || b[3] <= b[1]) return;
    const int tx1 = (b[2] + kTileSize - 1) / kTileSize, ty1 = (b[3] + kTileSize - 1) / kTileSize;
    const int64_t base = static_cast<int64_t>(c) * f.n_tiles;
    for (int ty = b[1] / kTileSize; ty < ty1; ++ty)
      for (int tx = b[0] / kTileSize; tx < tx1; ++tx) visit(base + ty * f.tiles_x + tx, n);
  };
#pragma omp parallel num_threads(threads)
  {
#pragma omp for schedule(static)
    for (int ch = 0; ch < chunks; ++ch) {
      int64_t* cnt = counts.data() + static_cast<int64_t>(ch) * n_bins;
      for (int64_t k = total * ch / chunks; k < total * (ch + 1) / chunks; ++k)
        for_tiles(k, [&](int64_t bin, int) { cnt[bin]++; });
    }
#pragma omp single
    {
      // offsets[bin] = entries of all earlier bins; counts become each chunk's cursor inside its bin
      int64_t running = 0;
      for (int64_t bin = 0; bin < n_bins; ++bin) {
        offsets[bin] = running;
        for (int ch = 0; ch < chunks; ++ch) {
          int64_t& cnt = counts[static_cast<int64_t>(ch) * n_bins + bin];
          const int64_t n = cnt;
          cnt = running;
          running += n;
        }
      }
      offsets[n_bins] = running;
      ids.resize(static_cast<size_t>(running));
    }
#pragma omp for schedule(static)
    for (int ch = 0; ch < chunks; ++ch) {
      int64_t* cursor = counts.data() + static_cast<int64_t>(ch) * n_bins;
      for (int64_t k = total * ch / chunks; k < total * (ch + 1) / chunks; ++k)
        for_tiles(k, [&](int64_t bin, int n) { ids[cursor[bin]++] = n; });
    }
    std::vector<float> acc;  // per-thread colour accumulators, reused across tiles
    const ForwardTile tile_fn = forward_kernel();
#pragma omp for schedule(dynamic, 1)
    for (int64_t job = 0; job < n_bins; ++job) {
      const int c = static_cast<int>(job / f.n_tiles), tile = static_cast<int>(job % f.n_tiles);
      tile_fn(f, in, c, tile, offsets.data(), ids.data(), out, acc);
    }
  }
}

void composite_backward(const Frame& f, const Inputs& in, const Upstream& up, const int64_t* offsets,
                        const int32_t* ids, float* slots, const Gradients& grads, int threads) {
  const int K = kSlotFixed + f.D;
  const int64_t total = static_cast<int64_t>(f.C) * f.n_tiles;
  // The slot sums: a job owns a range of splat indices of one camera, zeroes their gradients and walks
  // that camera's entries, adding those in range in entry order (deterministic for any thread count).
  const int parts = f.C >= threads ? 1 : threads;
  const int per_part = (f.N + parts - 1) / parts;
#pragma omp parallel num_threads(threads)
  {
    std::vector<float> scratch;  // per-thread colour state, reused across tiles
    const BackwardTile tile_fn = backward_kernel();
#pragma omp for schedule(dynamic, 1)
    for (int64_t job = 0; job < total; ++job) {
      const int c = static_cast<int>(job / f.n_tiles), tile = static_cast<int>(job % f.n_tiles);
      tile_fn(f, in, up, c, tile, offsets, ids, slots, scratch);
    }
#pragma omp for schedule(static)
    for (int job = 0; job < f.C * parts; ++job) {
      const int c = job / parts, lo = std::min(f.N, (job % parts) * per_part), hi = std::min(f.N, lo + per_part);
      const int64_t cN = static_cast<int64_t>(c) * f.N;
      std::fill(grads.means2d + (cN + lo) * 2, grads.means2d + (cN + hi) * 2, 0.0f);
      std::fill(grads.conics + (cN + lo) * 3, grads.conics + (cN + hi) * 3, 0.0f);
      std::fill(grads.opacities + cN + lo, grads.opacities + cN + hi, 0.0f);
      std::fill(grads.depths + cN + lo, grads.depths + cN + hi, 0.0f);
      std::fill(grads.colors + (cN + lo) * f.D, grads.colors + (cN + hi) * f.D, 0.0f);
      for (int64_t k = offsets[static_cast<int64_t>(c) * f.n_tiles];
           k < offsets[static_cast<int64_t>(c + 1) * f.n_tiles]; ++k) {
        const int n = ids[k];
        if (n < lo || n >= hi) continue;
        const float* s = slots + k * K;
        const int64_t g = cN + n;
        grads.means2d[g * 2] += s[0];
        grads.means2d[g * 2 + 1] += s[1];
        grads.conics[g * 3] += s[2];
        grads.conics[g * 3 + 1] += s[3];
        grads.conics[g * 3 + 2] += s[4];
        grads.opacities[g] += s[5];
        grads.depths[g] += s[6];
        for (int d = 0; d < f.D; ++d) grads.colors[g * f.D + d] += s[kSlotFixed + d];
      }
    }
  }
}

}  // namespace cpu
}  // namespace recon
