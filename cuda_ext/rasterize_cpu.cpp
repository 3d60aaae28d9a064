// Torch wrappers of the CPU compositing kernels (raster_cpu_core.cpp): allocation, pointers,
// thread count (kernel_threads(): set_kernel_threads, else torch.get_num_threads()).
#include <ATen/Parallel.h>

#include <atomic>

#include "raster_cpu_core.h"
#include "rasterize.h"

namespace {
std::atomic<int> g_kernel_threads{0};
}  // namespace

int kernel_threads() {
  const int n = g_kernel_threads.load();
  return n > 0 ? n : at::get_num_threads();
}

void set_kernel_threads(int threads) {
  TORCH_CHECK(threads >= 0, "set_kernel_threads: threads must be >= 0 (0 follows torch), got ", threads);
  g_kernel_threads.store(threads);
}

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

// A tensor that takes over a vector's buffer (no copy).
template <typename T>
at::Tensor own(std::vector<T>&& v, at::ScalarType dtype) {
  if (v.empty()) return at::empty({0}, at::TensorOptions().dtype(dtype));
  auto* holder = new std::vector<T>(std::move(v));
  return at::from_blob(holder->data(), {static_cast<int64_t>(holder->size())},
                       [holder](void*) { delete holder; }, at::TensorOptions().dtype(dtype));
}

}  // namespace

std::vector<at::Tensor> composite_forward_cpu(const at::Tensor& means2d, const at::Tensor& conics,
                                              const at::Tensor& opacities, const at::Tensor& colors,
                                              const at::Tensor& depths, const at::Tensor& bbox,
                                              const at::Tensor& order, int64_t width, int64_t height) {
  const auto f = frame_of(colors, width, height);
  const int threads = kernel_threads();
  std::vector<int64_t> offsets;
  std::vector<int32_t> ids;
  auto fopt = colors.options();
  at::Tensor rgb = at::empty({f.C, f.H, f.W, f.D}, fopt);
  at::Tensor alpha = at::empty({f.C, f.H, f.W, 1}, fopt);
  at::Tensor depth = at::empty({f.C, f.H, f.W, 1}, fopt);
  at::Tensor t_final = at::empty({f.C, f.H, f.W}, fopt);
  at::Tensor last = at::empty({f.C, f.H, f.W}, fopt.dtype(at::kInt));
  const recon::cpu::Outputs out{rgb.data_ptr<float>(), alpha.data_ptr<float>(), depth.data_ptr<float>(),
                                t_final.data_ptr<float>(), last.data_ptr<int32_t>()};
  recon::cpu::composite_forward(f, inputs_of(means2d, conics, opacities, colors, depths, bbox),
                                order.data_ptr<int32_t>(), offsets, ids, out, threads);
  return {rgb, alpha, depth, t_final, last, own(std::move(offsets), at::kLong), own(std::move(ids), at::kInt)};
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
  // the upstream gradients may have any strides (a sum loss gives expanded, stride-0 ones)
  recon::cpu::Upstream up{g_rgb.data_ptr<float>(), g_alpha.data_ptr<float>(), g_depth.data_ptr<float>(),
                          t_final.data_ptr<float>(), last.data_ptr<int32_t>(), {}, {}, {}};
  for (int i = 0; i < 4; ++i) up.rgb_stride[i] = g_rgb.stride(i);
  for (int i = 0; i < 3; ++i) {
    up.alpha_stride[i] = g_alpha.stride(i);
    up.depth_stride[i] = g_depth.stride(i);
  }
  // every element is written by composite_backward
  at::Tensor g_means2d = at::empty_like(means2d), g_conics = at::empty_like(conics);
  at::Tensor g_opac = at::empty_like(opacities), g_colors = at::empty_like(colors), g_depths = at::empty_like(depths);
  const recon::cpu::Gradients grads{g_means2d.data_ptr<float>(), g_conics.data_ptr<float>(), g_opac.data_ptr<float>(),
                                    g_colors.data_ptr<float>(), g_depths.data_ptr<float>()};
  recon::cpu::composite_backward(f, inputs_of(means2d, conics, opacities, colors, depths, bbox), up,
                                 tile_offsets.data_ptr<int64_t>(), tile_ids.data_ptr<int32_t>(), slots.data_ptr<float>(),
                                 grads, kernel_threads());
  return {g_means2d, g_conics, g_opac, g_colors, g_depths};
}
