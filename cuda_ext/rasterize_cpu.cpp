// Torch wrappers of the CPU compositing kernels (raster_cpu_core.cpp): allocation, pointers,
// thread count (torch.get_num_threads()).
#include <ATen/Parallel.h>

#include "raster_cpu_core.h"
#include "rasterize.h"

namespace {

recon::cpu::Frame frame_of(const at::Tensor& colors, int64_t width, int64_t height) {
  return recon::cpu::make_frame(static_cast<int>(colors.size(0)), static_cast<int>(colors.size(1)),
                                static_cast<int>(colors.size(2)), static_cast<int>(width), static_cast<int>(height));
}

recon::cpu::Inputs inputs_of(const at::Tensor& means2d, const at::Tensor& conics, const at::Tensor& opacities,
                             const at::Tensor& colors, const at::Tensor& depths, const at::Tensor& bbox) {
  return recon::cpu::Inputs{means2d.data_ptr<float>(), conics.data_ptr<float>(), opacities.data_ptr<float>(),
                            colors.data_ptr<float>(), depths.data_ptr<float>(), bbox.data_ptr<int32_t>()};
}

}  // namespace

std::vector<at::Tensor> composite_forward_cpu(const at::Tensor& means2d, const at::Tensor& conics,
                                              const at::Tensor& opacities, const at::Tensor& colors,
                                              const at::Tensor& depths, const at::Tensor& bbox,
                                              const at::Tensor& order, int64_t width, int64_t height) {
  const auto f = frame_of(colors, width, height);
  const int threads = at::get_num_threads();
  std::vector<int64_t> offsets;
  std::vector<int32_t> ids;
  recon::cpu::bin_tiles(f, bbox.data_ptr<int32_t>(), order.data_ptr<int32_t>(), offsets, ids, threads);

  auto fopt = colors.options();
  at::Tensor rgb = at::empty({f.C, f.H, f.W, f.D}, fopt);
  at::Tensor alpha = at::empty({f.C, f.H, f.W, 1}, fopt);
  at::Tensor depth = at::empty({f.C, f.H, f.W, 1}, fopt);
  at::Tensor t_final = at::empty({f.C, f.H, f.W}, fopt);
  at::Tensor last = at::empty({f.C, f.H, f.W}, fopt.dtype(at::kInt));
  const recon::cpu::Outputs out{rgb.data_ptr<float>(), alpha.data_ptr<float>(), depth.data_ptr<float>(),
                                t_final.data_ptr<float>(), last.data_ptr<int32_t>()};
  recon::cpu::composite_forward(f, inputs_of(means2d, conics, opacities, colors, depths, bbox), offsets, ids, out,
                                threads);
  at::Tensor tile_offsets = at::from_blob(offsets.data(), {static_cast<int64_t>(offsets.size())}, at::kLong).clone();
  at::Tensor tile_ids = at::from_blob(ids.data(), {static_cast<int64_t>(ids.size())}, at::kInt).clone();
  return {rgb, alpha, depth, t_final, last, tile_offsets, tile_ids};
}

std::vector<at::Tensor> composite_backward_cpu(const at::Tensor& means2d, const at::Tensor& conics,
                                               const at::Tensor& opacities, const at::Tensor& colors,
                                               const at::Tensor& depths, const at::Tensor& bbox,
                                               const at::Tensor& t_final, const at::Tensor& last,
                                               const at::Tensor& tile_offsets, const at::Tensor& tile_ids,
                                               const at::Tensor& g_rgb, const at::Tensor& g_alpha,
                                               const at::Tensor& g_depth, int64_t width, int64_t height) {
  const auto f = frame_of(colors, width, height);
  at::Tensor slots = at::empty({tile_ids.numel(), recon::cpu::kSlotFixed + f.D}, colors.options());
  const recon::cpu::Upstream up{g_rgb.data_ptr<float>(), g_alpha.data_ptr<float>(), g_depth.data_ptr<float>(),
                                t_final.data_ptr<float>(), last.data_ptr<int32_t>()};
  at::Tensor g_means2d = at::zeros_like(means2d), g_conics = at::zeros_like(conics);
  at::Tensor g_opac = at::zeros_like(opacities), g_colors = at::zeros_like(colors), g_depths = at::zeros_like(depths);
  const recon::cpu::Gradients grads{g_means2d.data_ptr<float>(), g_conics.data_ptr<float>(), g_opac.data_ptr<float>(),
                                    g_colors.data_ptr<float>(), g_depths.data_ptr<float>()};
  recon::cpu::composite_backward(f, inputs_of(means2d, conics, opacities, colors, depths, bbox), up,
                                 tile_offsets.data_ptr<int64_t>(), tile_ids.data_ptr<int32_t>(), slots.data_ptr<float>(),
                                 grads, at::get_num_threads());
  return {g_means2d, g_conics, g_opac, g_colors, g_depths};
}
