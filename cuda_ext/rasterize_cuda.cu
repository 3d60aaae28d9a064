// CUDA compositing kernels: tile binning by sorted (tile, depth-rank) keys, one 16x16 thread
// block per tile, splats staged through shared memory in batches, early exit once every pixel
// of the tile is saturated, and a backward that walks each tile back to front (recovering
// T_i = T_{i+1} / (1 - alpha_i) from the saved final transmittance), reduces each splat's
// gradient across the warp with shuffles and adds it with one atomic per warp.
// Same rules and constants (common.h) as the CPU kernel in raster_cpu_core.cpp.
#include <cuda_runtime.h>

#include <cstdint>

#include "common.h"
#include "rasterize_cuda.h"

namespace recon {
namespace cuda {
namespace {

constexpr int kBlock = kTileSize * kTileSize;  // one thread per pixel of a tile
constexpr unsigned kFullMask = 0xffffffffu;

struct __align__(16) SplatShared {
  float mx, my, ca, cb, cc, o, z;
  int x0, y0, x1, y1;
  int id;  // splat index within its camera
};

__device__ __forceinline__ SplatShared load_splat(const float* means2d, const float* conics, const float* opacities,
                                                  const float* depths, const int32_t* bbox, int64_t g, int id) {
  SplatShared s;
  s.mx = means2d[g * 2];
  s.my = means2d[g * 2 + 1];
  s.ca = conics[g * 3];
  s.cb = conics[g * 3 + 1];
  s.cc = conics[g * 3 + 2];
  s.o = opacities[g];
  s.z = depths[g];
  s.x0 = bbox[g * 4];
  s.y0 = bbox[g * 4 + 1];
  s.x1 = bbox[g * 4 + 2];
  s.y1 = bbox[g * 4 + 3];
  s.id = id;
  return s;
}

__global__ void count_tiles_kernel(const int32_t* bbox, int CN, int tiles_x, int32_t* counts) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= CN) return;
  const int32_t* b = bbox + static_cast<int64_t>(i) * 4;
  if (b[2] <= b[0] || b[3] <= b[1]) {
    counts[i] = 0;
    return;
  }
  const int nx = (b[2] + kTileSize - 1) / kTileSize - b[0] / kTileSize;
  const int ny = (b[3] + kTileSize - 1) / kTileSize - b[1] / kTileSize;
  counts[i] = nx * ny;
}

__global__ void emit_keys_kernel(const int32_t* bbox, const int32_t* rank, const int64_t* offsets, int C, int N,
                                 int tiles_x, int n_tiles, int64_t* keys, int32_t* values) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= C * N) return;
  const int32_t* b = bbox + static_cast<int64_t>(i) * 4;
  if (b[2] <= b[0] || b[3] <= b[1]) return;
  const int c = i / N, n = i % N;
  int64_t out = offsets[i];
  const int tx1 = (b[2] + kTileSize - 1) / kTileSize, ty1 = (b[3] + kTileSize - 1) / kTileSize;
  for (int ty = b[1] / kTileSize; ty < ty1; ++ty)
    for (int tx = b[0] / kTileSize; tx < tx1; ++tx) {
      const int64_t tile = static_cast<int64_t>(c) * n_tiles + ty * tiles_x + tx;
      keys[out] = (tile << 32) | static_cast<int64_t>(static_cast<uint32_t>(rank[i]));
      values[out] = n;
      ++out;
    }
}

__global__ void tile_ranges_kernel(const int64_t* keys, int64_t E, int n_ranges, int64_t* tile_offsets) {
  const int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e >= E) return;
  const int64_t cur = keys[e] >> 32;
  const int64_t prev = e == 0 ? -1 : (keys[e - 1] >> 32);
  for (int64_t t = prev + 1; t <= cur; ++t) tile_offsets[t] = e;  // tiles up to this one start here
  if (e == E - 1)
    for (int64_t t = cur + 1; t <= n_ranges; ++t) tile_offsets[t] = E;
}

// kMaxD: compile-time bound on the channel count D (register arrays).
template <int kMaxD>
__global__ void __launch_bounds__(kBlock) forward_kernel(
    const float* __restrict__ means2d, const float* __restrict__ conics, const float* __restrict__ opacities,
    const float* __restrict__ colors, const float* __restrict__ depths, const int32_t* __restrict__ bbox,
    const int64_t* __restrict__ tile_offsets, const int32_t* __restrict__ tile_ids, int N, int D, int W, int H,
    float* __restrict__ rgb, float* __restrict__ alpha, float* __restrict__ depth, float* __restrict__ t_final,
    int32_t* __restrict__ last) {
  __shared__ SplatShared batch[kBlock];
  const int c = blockIdx.y, tile = blockIdx.x;
  const int tiles_x = (W + kTileSize - 1) / kTileSize, n_tiles = gridDim.x;
  const int x = (tile % tiles_x) * kTileSize + threadIdx.x % kTileSize;
  const int y = (tile / tiles_x) * kTileSize + threadIdx.x / kTileSize;
  const bool inside = x < W && y < H;
  const int64_t cN = static_cast<int64_t>(c) * N;
  const int64_t begin = tile_offsets[static_cast<int64_t>(c) * n_tiles + tile];
  const int64_t end = tile_offsets[static_cast<int64_t>(c) * n_tiles + tile + 1];
  const float px = x + 0.5f, py = y + 0.5f;

  float T = 1.0f, acc_z = 0.0f, acc[kMaxD];
#pragma unroll
  for (int d = 0; d < kMaxD; ++d) acc[d] = 0.0f;
  int32_t last_k = -1;
  bool done = !inside;
  for (int64_t start = begin; start < end; start += kBlock) {
    if (__syncthreads_count(done) == kBlock) break;  // every pixel of the tile is saturated
    const int64_t mine = start + threadIdx.x;
    if (mine < end) {
      const int id = tile_ids[mine];
      batch[threadIdx.x] = load_splat(means2d, conics, opacities, depths, bbox, cN + id, id);
    }
    __syncthreads();
    const int n_batch = static_cast<int>(end - start < kBlock ? end - start : kBlock);
    for (int j = 0; j < n_batch && !done; ++j) {
      const SplatShared& s = batch[j];
      if (x < s.x0 || x >= s.x1 || y < s.y0 || y >= s.y1) continue;
      const float dx = px - s.mx, dy = py - s.my;
      const float q = conic_quad(s.ca, s.cb, s.cc, dx, dy);
      if (q > kMahalanobisMax) continue;
      const float a = fminf(kAlphaMax, s.o * __expf(-0.5f * q));
      if (a < kAlphaMin) continue;
      const float t_next = T * (1.0f - a);
      if (t_next < kTransmittanceMin) {
        done = true;
        break;
      }
      const float w = a * T;
      const float* col = colors + (cN + s.id) * D;
#pragma unroll
      for (int d = 0; d < kMaxD; ++d)
        if (d < D) acc[d] += w * __ldg(col + d);
      acc_z += w * s.z;
      T = t_next;
      last_k = static_cast<int32_t>(start + j);
    }
    __syncthreads();  // the batch is overwritten next
  }
  if (!inside) return;
  const int64_t pix = (static_cast<int64_t>(c) * H + y) * W + x;
#pragma unroll
  for (int d = 0; d < kMaxD; ++d)
    if (d < D) rgb[pix * D + d] = acc[d];
  alpha[pix] = 1.0f - T;
  depth[pix] = acc_z;
  t_final[pix] = T;
  last[pix] = last_k;
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(kFullMask, v, offset);
  return v;
}

template <int kMaxD>
__global__ void __launch_bounds__(kBlock) backward_kernel(
    const float* __restrict__ means2d, const float* __restrict__ conics, const float* __restrict__ opacities,
    const float* __restrict__ colors, const float* __restrict__ depths, const int32_t* __restrict__ bbox,
    const int64_t* __restrict__ tile_offsets, const int32_t* __restrict__ tile_ids, const float* __restrict__ t_final,
    const int32_t* __restrict__ last, const float* __restrict__ g_rgb, const float* __restrict__ g_alpha,
    const float* __restrict__ g_depth, int N, int D, int W, int H, float* __restrict__ g_means2d,
    float* __restrict__ g_conics, float* __restrict__ g_opacities, float* __restrict__ g_colors,
    float* __restrict__ g_depths) {
  __shared__ SplatShared batch[kBlock];
  __shared__ int s_last;
  const int c = blockIdx.y, tile = blockIdx.x;
  const int tiles_x = (W + kTileSize - 1) / kTileSize, n_tiles = gridDim.x;
  const int x = (tile % tiles_x) * kTileSize + threadIdx.x % kTileSize;
  const int y = (tile / tiles_x) * kTileSize + threadIdx.x / kTileSize;
  const bool inside = x < W && y < H;
  const int64_t cN = static_cast<int64_t>(c) * N;
  const int64_t begin = tile_offsets[static_cast<int64_t>(c) * n_tiles + tile];
  const int64_t pix = (static_cast<int64_t>(c) * H + y) * W + x;
  const float px = x + 0.5f, py = y + 0.5f;

  const float t_end = inside ? t_final[pix] : 1.0f;
  const int32_t last_k = inside ? last[pix] : -1;
  float T = t_end, rest_z = 0.0f, rest[kMaxD], g_c[kMaxD];
#pragma unroll
  for (int d = 0; d < kMaxD; ++d) {
    rest[d] = 0.0f;
    g_c[d] = (inside && d < D) ? g_rgb[pix * D + d] : 0.0f;
  }
  const float g_z = inside ? g_depth[pix] : 0.0f;
  const float g_at = inside ? g_alpha[pix] * t_end : 0.0f;

  if (threadIdx.x == 0) s_last = -1;
  __syncthreads();
  atomicMax(&s_last, last_k);
  __syncthreads();
  const int64_t k_max = s_last;  // the block walks from the deepest entry any pixel used

  for (int64_t stop = k_max + 1; stop > begin; stop -= kBlock) {
    const int64_t start = stop - kBlock > begin ? stop - kBlock : begin;
    const int64_t mine = stop - 1 - threadIdx.x;  // batch[j] holds entry stop - 1 - j (back to front)
    if (mine >= start) {
      const int id = tile_ids[mine];
      batch[threadIdx.x] = load_splat(means2d, conics, opacities, depths, bbox, cN + id, id);
    }
    __syncthreads();
    const int n_batch = static_cast<int>(stop - start);
    for (int j = 0; j < n_batch; ++j) {
      const SplatShared& s = batch[j];
      const int64_t k = stop - 1 - j;
      float g_m[2] = {0.0f, 0.0f}, g_q3[3] = {0.0f, 0.0f, 0.0f}, g_o = 0.0f, g_zs = 0.0f, g_col[kMaxD];
#pragma unroll
      for (int d = 0; d < kMaxD; ++d) g_col[d] = 0.0f;
      bool hit = inside && k <= last_k && x >= s.x0 && x < s.x1 && y >= s.y0 && y < s.y1;
      const float dx = px - s.mx, dy = py - s.my;
      const float q = conic_quad(s.ca, s.cb, s.cc, dx, dy);
      const float gauss = __expf(-0.5f * q);
      const float raw = s.o * gauss;
      const float a = fminf(kAlphaMax, raw);
      hit = hit && q <= kMahalanobisMax && a >= kAlphaMin;
      if (hit) {
        const float inv = 1.0f / (1.0f - a);
        const float t_i = T * inv;
        const float w = a * t_i;
        const float* col = colors + (cN + s.id) * D;
        float g_a = 0.0f;
#pragma unroll
        for (int d = 0; d < kMaxD; ++d) {
          if (d < D) {
            const float cd = __ldg(col + d);
            g_col[d] = g_c[d] * w;
            g_a += g_c[d] * (t_i * cd - rest[d] * inv);
            rest[d] += w * cd;
          }
        }
        g_zs = g_z * w;
        g_a += g_z * (t_i * s.z - rest_z * inv) + g_at * inv;
        rest_z += w * s.z;
        T = t_i;
        if (raw <= kAlphaMax) {  // alpha clamped at kAlphaMax depends on neither opacity nor position
          g_o = g_a * gauss;
          const float g_q = -0.5f * raw * g_a;
          g_q3[0] = g_q * dx * dx;
          g_q3[1] = 2.0f * g_q * dx * dy;
          g_q3[2] = g_q * dy * dy;
          g_m[0] = -2.0f * g_q * (s.ca * dx + s.cb * dy);
          g_m[1] = -2.0f * g_q * (s.cb * dx + s.cc * dy);
        }
      }
      // One atomic per warp and value: reduce across the warp first.
      if (__any_sync(kFullMask, hit)) {
        const int lane = threadIdx.x % 32;
        const int64_t g = cN + s.id;
        const float v_m0 = warp_sum(g_m[0]), v_m1 = warp_sum(g_m[1]);
        const float v_c0 = warp_sum(g_q3[0]), v_c1 = warp_sum(g_q3[1]), v_c2 = warp_sum(g_q3[2]);
        const float v_o = warp_sum(g_o), v_z = warp_sum(g_zs);
        if (lane == 0) {
          atomicAdd(g_means2d + g * 2, v_m0);
          atomicAdd(g_means2d + g * 2 + 1, v_m1);
          atomicAdd(g_conics + g * 3, v_c0);
          atomicAdd(g_conics + g * 3 + 1, v_c1);
          atomicAdd(g_conics + g * 3 + 2, v_c2);
          atomicAdd(g_opacities + g, v_o);
          atomicAdd(g_depths + g, v_z);
        }
#pragma unroll
        for (int d = 0; d < kMaxD; ++d) {
          if (d < D) {
            const float v = warp_sum(g_col[d]);
            if (lane == 0) atomicAdd(g_colors + g * D + d, v);
          }
        }
      }
    }
    __syncthreads();  // the batch is overwritten next
  }
}

constexpr int kThreads1D = 256;

inline unsigned blocks_for(int64_t n) { return static_cast<unsigned>((n + kThreads1D - 1) / kThreads1D); }

}  // namespace

void launch_count_tiles(const int32_t* bbox, int C, int N, int W, int H, int32_t* counts, cudaStream_t stream) {
  (void)H;
  if (C * N == 0) return;
  count_tiles_kernel<<<blocks_for(static_cast<int64_t>(C) * N), kThreads1D, 0, stream>>>(
      bbox, C * N, (W + kTileSize - 1) / kTileSize, counts);
}

void launch_emit_keys(const int32_t* bbox, const int32_t* rank, const int64_t* offsets, int C, int N, int W, int H,
                      int64_t* keys, int32_t* values, cudaStream_t stream) {
  if (C * N == 0) return;
  const int tiles_x = (W + kTileSize - 1) / kTileSize, tiles_y = (H + kTileSize - 1) / kTileSize;
  emit_keys_kernel<<<blocks_for(static_cast<int64_t>(C) * N), kThreads1D, 0, stream>>>(
      bbox, rank, offsets, C, N, tiles_x, tiles_x * tiles_y, keys, values);
}

void launch_tile_ranges(const int64_t* sorted_keys, int64_t E, int n_ranges, int64_t* tile_offsets,
                        cudaStream_t stream) {
  if (E == 0) {
    cudaMemsetAsync(tile_offsets, 0, sizeof(int64_t) * (n_ranges + 1), stream);
    return;
  }
  tile_ranges_kernel<<<blocks_for(E), kThreads1D, 0, stream>>>(sorted_keys, E, n_ranges, tile_offsets);
}

void launch_forward(const float* means2d, const float* conics, const float* opacities, const float* colors,
                    const float* depths, const int32_t* bbox, const int64_t* tile_offsets, const int32_t* tile_ids,
                    int C, int N, int D, int W, int H, float* rgb, float* alpha, float* depth, float* t_final,
                    int32_t* last, cudaStream_t stream) {
  const dim3 grid(((W + kTileSize - 1) / kTileSize) * ((H + kTileSize - 1) / kTileSize), C);
  if (D <= 3)
    forward_kernel<3><<<grid, kBlock, 0, stream>>>(means2d, conics, opacities, colors, depths, bbox, tile_offsets,
                                                   tile_ids, N, D, W, H, rgb, alpha, depth, t_final, last);
  else
    forward_kernel<kMaxChannelsCuda><<<grid, kBlock, 0, stream>>>(means2d, conics, opacities, colors, depths, bbox,
                                                                  tile_offsets, tile_ids, N, D, W, H, rgb, alpha,
                                                                  depth, t_final, last);
}

void launch_backward(const float* means2d, const float* conics, const float* opacities, const float* colors,
                     const float* depths, const int32_t* bbox, const int64_t* tile_offsets, const int32_t* tile_ids,
                     const float* t_final, const int32_t* last, const float* g_rgb, const float* g_alpha,
                     const float* g_depth, int C, int N, int D, int W, int H, float* g_means2d, float* g_conics,
                     float* g_opacities, float* g_colors, float* g_depths, cudaStream_t stream) {
  const dim3 grid(((W + kTileSize - 1) / kTileSize) * ((H + kTileSize - 1) / kTileSize), C);
  if (D <= 3)
    backward_kernel<3><<<grid, kBlock, 0, stream>>>(means2d, conics, opacities, colors, depths, bbox, tile_offsets,
                                                    tile_ids, t_final, last, g_rgb, g_alpha, g_depth, N, D, W, H,
                                                    g_means2d, g_conics, g_opacities, g_colors, g_depths);
  else
    backward_kernel<kMaxChannelsCuda><<<grid, kBlock, 0, stream>>>(
        means2d, conics, opacities, colors, depths, bbox, tile_offsets, tile_ids, t_final, last, g_rgb, g_alpha,
        g_depth, N, D, W, H, g_means2d, g_conics, g_opacities, g_colors, g_depths);
}

}  // namespace cuda
}  // namespace recon
