// CUDA compositing kernels: launchers on raw device pointers (no torch), so rasterize_cuda.cu
// compiles with a plain `nvcc -c`. The torch binding is rasterize_cuda_bind.cpp.
// Layouts as in raster_cpu_core.h; `stream` is a cudaStream_t.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace recon {
namespace cuda {

// The CUDA kernels keep per-pixel colour state in registers: at most this many channels.
constexpr int kMaxChannelsCuda = 16;

// counts[c*N + n] = number of tiles splat n's box touches in camera c (0 when culled).
void launch_count_tiles(const int32_t* bbox, int C, int N, int W, int H, int32_t* counts, cudaStream_t stream);

// For every (camera, splat, touched tile) write key = (c * n_tiles + tile) << 32 | depth rank
// and value = n, at positions [offsets[c*N+n], ...) (offsets = exclusive scan of counts).
void launch_emit_keys(const int32_t* bbox, const int32_t* rank, const int64_t* offsets, int C, int N, int W, int H,
                      int64_t* keys, int32_t* values, cudaStream_t stream);

// tile_offsets [C*n_tiles + 1] from the sorted keys (tiles with no entry get empty ranges).
void launch_tile_ranges(const int64_t* sorted_keys, int64_t E, int n_ranges, int64_t* tile_offsets, cudaStream_t stream);

void launch_forward(const float* means2d, const float* conics, const float* opacities, const float* colors,
                    const float* depths, const int32_t* bbox, const int64_t* tile_offsets, const int32_t* tile_ids,
                    int C, int N, int D, int W, int H, float* rgb, float* alpha, float* depth, float* t_final,
                    int32_t* last, cudaStream_t stream);

// Gradients are accumulated (atomicAdd) into zero-initialised outputs.
void launch_backward(const float* means2d, const float* conics, const float* opacities, const float* colors,
                     const float* depths, const int32_t* bbox, const int64_t* tile_offsets, const int32_t* tile_ids,
                     const float* t_final, const int32_t* last, const float* g_rgb, const float* g_alpha,
                     const float* g_depth, int C, int N, int D, int W, int H, float* g_means2d, float* g_conics,
                     float* g_opacities, float* g_colors, float* g_depths, cudaStream_t stream);

}  // namespace cuda
}  // namespace recon
