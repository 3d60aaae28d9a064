// Torch binding of the CUDA compositing kernels (rasterize_cuda.cu): allocation, the scan and
// sort of the binning keys (torch ops), the current stream. Compiled only with RECON_WITH_CUDA.
#ifdef RECON_WITH_CUDA

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "common.h"
#include "rasterize.h"
#include "rasterize_cuda.h"

namespace {

struct Dims {
  int C, N, D, W, H, n_tiles;
};

Dims dims_of(const at::Tensor& colors, int64_t width, int64_t height) {
  const int W = static_cast<int>(width), H = static_cast<int>(height);
  const int n_tiles = ((W + recon::kTileSize - 1) / recon::kTileSize) * ((H + recon::kTileSize - 1) / recon::kTileSize);
  TORCH_CHECK(colors.size(2) <= recon::cuda::kMaxChannelsCuda, "the CUDA rasterizer supports at most ",
              recon::cuda::kMaxChannelsCuda, " colour channels, got ", colors.size(2));
  return Dims{static_cast<int>(colors.size(0)), static_cast<int>(colors.size(1)), static_cast<int>(colors.size(2)), W,
              H, n_tiles};
}

}  // namespace

std::vector<at::Tensor> composite_forward_cuda(const at::Tensor& means2d, const at::Tensor& conics,
                                               const at::Tensor& opacities, const at::Tensor& colors,
                                               const at::Tensor& depths, const at::Tensor& bbox,
                                               const at::Tensor& order, int64_t width, int64_t height) {
  const c10::cuda::CUDAGuard guard(means2d.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const Dims d = dims_of(colors, width, height);
  auto iopt = bbox.options();

  // Bin: tiles per splat -> exclusive scan -> one (tile << 32 | depth rank) key per entry -> sort.
  at::Tensor counts = at::empty({static_cast<int64_t>(d.C) * d.N}, iopt);
  recon::cuda::launch_count_tiles(bbox.data_ptr<int32_t>(), d.C, d.N, d.W, d.H, counts.data_ptr<int32_t>(), stream);
  at::Tensor inclusive = counts.cumsum(0, at::kLong);
  at::Tensor offsets = inclusive - counts;
  const int64_t E = d.C * d.N > 0 ? inclusive[-1].item<int64_t>() : 0;
  at::Tensor rank = at::empty_like(order);  // rank[c, order[c, k]] = k
  rank.scatter_(1, order.to(at::kLong), at::arange(d.N, iopt).expand({d.C, d.N}).contiguous());
  at::Tensor keys = at::empty({E}, iopt.dtype(at::kLong));
  at::Tensor values = at::empty({E}, iopt);
  recon::cuda::launch_emit_keys(bbox.data_ptr<int32_t>(), rank.data_ptr<int32_t>(), offsets.data_ptr<int64_t>(), d.C,
                                d.N, d.W, d.H, keys.data_ptr<int64_t>(), values.data_ptr<int32_t>(), stream);
  auto sorted = keys.sort();
  at::Tensor sorted_keys = std::get<0>(sorted).contiguous();
  at::Tensor tile_ids = values.index_select(0, std::get<1>(sorted)).contiguous();
  at::Tensor tile_offsets = at::empty({static_cast<int64_t>(d.C) * d.n_tiles + 1}, iopt.dtype(at::kLong));
  recon::cuda::launch_tile_ranges(sorted_keys.data_ptr<int64_t>(), E, d.C * d.n_tiles, tile_offsets.data_ptr<int64_t>(),
                                  stream);

  auto fopt = colors.options();
  at::Tensor rgb = at::empty({d.C, d.H, d.W, d.D}, fopt);
  at::Tensor alpha = at::empty({d.C, d.H, d.W, 1}, fopt);
  at::Tensor depth = at::empty({d.C, d.H, d.W, 1}, fopt);
  at::Tensor t_final = at::empty({d.C, d.H, d.W}, fopt);
  at::Tensor last = at::empty({d.C, d.H, d.W}, iopt);
  recon::cuda::launch_forward(means2d.data_ptr<float>(), conics.data_ptr<float>(), opacities.data_ptr<float>(),
                              colors.data_ptr<float>(), depths.data_ptr<float>(), bbox.data_ptr<int32_t>(),
                              tile_offsets.data_ptr<int64_t>(), tile_ids.data_ptr<int32_t>(), d.C, d.N, d.D, d.W, d.H,
                              rgb.data_ptr<float>(), alpha.data_ptr<float>(), depth.data_ptr<float>(),
                              t_final.data_ptr<float>(), last.data_ptr<int32_t>(), stream);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {rgb, alpha, depth, t_final, last, tile_offsets, tile_ids};
}

std::vector<at::Tensor> composite_backward_cuda(const at::Tensor& means2d, const at::Tensor& conics,
                                                const at::Tensor& opacities, const at::Tensor& colors,
                                                const at::Tensor& depths, const at::Tensor& bbox,
                                                const at::Tensor& t_final, const at::Tensor& last,
                                                const at::Tensor& tile_offsets, const at::Tensor& tile_ids,
                                                const at::Tensor& g_rgb, const at::Tensor& g_alpha,
                                                const at::Tensor& g_depth, int64_t width, int64_t height) {
  const c10::cuda::CUDAGuard guard(means2d.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const Dims d = dims_of(colors, width, height);
  at::Tensor g_means2d = at::zeros_like(means2d), g_conics = at::zeros_like(conics);
  at::Tensor g_opac = at::zeros_like(opacities), g_colors = at::zeros_like(colors), g_depths = at::zeros_like(depths);
  recon::cuda::launch_backward(
      means2d.data_ptr<float>(), conics.data_ptr<float>(), opacities.data_ptr<float>(), colors.data_ptr<float>(),
      depths.data_ptr<float>(), bbox.data_ptr<int32_t>(), tile_offsets.data_ptr<int64_t>(),
      tile_ids.data_ptr<int32_t>(), t_final.data_ptr<float>(), last.data_ptr<int32_t>(), g_rgb.data_ptr<float>(),
      g_alpha.data_ptr<float>(), g_depth.data_ptr<float>(), d.C, d.N, d.D, d.W, d.H, g_means2d.data_ptr<float>(),
      g_conics.data_ptr<float>(), g_opac.data_ptr<float>(), g_colors.data_ptr<float>(), g_depths.data_ptr<float>(),
      stream);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {g_means2d, g_conics, g_opac, g_colors, g_depths};
}

#endif  // RECON_WITH_CUDA
