// recon._C: Python bindings; the device dispatch of the compositing kernels happens here only.
#include <torch/extension.h>

#include <utility>

#include "common.h"
#include "raster_cpu_core.h"
#include "rasterize.h"

namespace {

void check_inputs(const std::vector<at::Tensor>& ts, bool cuda) {
  for (const auto& t : ts) {
    TORCH_CHECK(t.is_contiguous(), "recon._C: inputs must be contiguous");
    TORCH_CHECK(t.is_cuda() == cuda, "recon._C: all inputs must be on the same device");
  }
}

std::vector<at::Tensor> composite_forward(const at::Tensor& means2d, const at::Tensor& conics,
                                          const at::Tensor& opacities, const at::Tensor& colors,
                                          const at::Tensor& depths, const at::Tensor& bbox, const at::Tensor& order,
                                          int64_t width, int64_t height) {
  const bool cuda = means2d.is_cuda();
  check_inputs({means2d, conics, opacities, colors, depths, bbox, order}, cuda);
  if (cuda) {
#ifdef RECON_WITH_CUDA
    return composite_forward_cuda(means2d, conics, opacities, colors, depths, bbox, order, width, height);
#else
    TORCH_CHECK(false, "recon._C was built without CUDA kernels");
#endif
  }
  return composite_forward_cpu(means2d, conics, opacities, colors, depths, bbox, order, width, height);
}

std::vector<at::Tensor> composite_backward(const at::Tensor& means2d, const at::Tensor& conics,
                                           const at::Tensor& opacities, const at::Tensor& colors,
                                           const at::Tensor& depths, const at::Tensor& bbox,
                                           const at::Tensor& t_final, const at::Tensor& last,
                                           const at::Tensor& tile_offsets, const at::Tensor& tile_ids,
                                           const at::Tensor& g_rgb, const at::Tensor& g_alpha,
                                           const at::Tensor& g_depth, int64_t width, int64_t height) {
  const bool cuda = means2d.is_cuda();
  check_inputs({means2d, conics, opacities, colors, depths, bbox, t_final, last, tile_offsets, tile_ids}, cuda);
  // upstream gradients: any strides on the CPU (an expanded gradient is read in place)
  using Expected = std::pair<const at::Tensor*, int64_t>;  // a gradient and its channel count
  for (const auto& [g, channels] : {Expected{&g_rgb, colors.size(2)}, Expected{&g_alpha, 1}, Expected{&g_depth, 1}}) {
    TORCH_CHECK(g->is_cuda() == cuda, "recon._C: all inputs must be on the same device");
    TORCH_CHECK(g->dim() == 4 && g->size(0) == colors.size(0) && g->size(1) == height && g->size(2) == width &&
                    g->size(3) == channels,
                "recon._C: upstream gradients must be [C, H, W, D] (rgb) and [C, H, W, 1] (alpha, depth)");
  }
  if (cuda) {
#ifdef RECON_WITH_CUDA
    return composite_backward_cuda(means2d, conics, opacities, colors, depths, bbox, t_final, last, tile_offsets,
                                   tile_ids, g_rgb.contiguous(), g_alpha.contiguous(), g_depth.contiguous(), width,
                                   height);
#else
    TORCH_CHECK(false, "recon._C was built without CUDA kernels");
#endif
  }
  return composite_backward_cpu(means2d, conics, opacities, colors, depths, bbox, t_final, last, tile_offsets,
                                tile_ids, g_rgb, g_alpha, g_depth, width, height);
}

std::vector<at::Tensor> project_forward(const at::Tensor& means, const at::Tensor& log_scales,
                                        const at::Tensor& opacity_logits, const at::Tensor& viewmats,
                                        const at::Tensor& Ks, int64_t width, int64_t height) {
  check_inputs({means, log_scales, opacity_logits, viewmats, Ks}, false);
  return project_forward_cpu(means, log_scales, opacity_logits, viewmats, Ks, width, height);
}

std::vector<at::Tensor> project_backward(const at::Tensor& means, const at::Tensor& log_scales,
                                         const at::Tensor& opacity_logits, const at::Tensor& viewmats,
                                         const at::Tensor& Ks, int64_t width, int64_t height,
                                         const at::Tensor& g_means2d, const at::Tensor& g_conics,
                                         const at::Tensor& g_opacities, const at::Tensor& g_depths) {
  check_inputs({means, log_scales, opacity_logits, viewmats, Ks, g_means2d, g_conics, g_opacities, g_depths}, false);
  return project_backward_cpu(means, log_scales, opacity_logits, viewmats, Ks, width, height, g_means2d, g_conics,
                              g_opacities, g_depths);
}

bool has_cuda() {
#ifdef RECON_WITH_CUDA
  return true;
#else
  return false;
#endif
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "recon compositing kernels for isotropic Gaussian splats (CPU, and CUDA when built)";
  m.def("composite_forward", &composite_forward, "front-to-back compositing of projected splats");
  m.def("composite_backward", &composite_backward, "gradients of composite_forward");
  m.def("project_forward", &project_forward, "EWA projection of isotropic Gaussians (CPU)");
  m.def("project_backward", &project_backward, "gradients of project_forward (CPU)");
  m.def("kernel_threads", &kernel_threads, "threads the CPU kernels use (set_kernel_threads, else torch's)");
  m.def("set_kernel_threads", &set_kernel_threads, pybind11::arg("threads"),
        "threads for the CPU kernels; 0 follows torch.get_num_threads()");
  m.def("has_cuda", &has_cuda, "whether the CUDA kernels were compiled in");
  m.def("tile_size", []() { return recon::kTileSize; }, "screen tile size in pixels");
  m.def("cpu_kernel", &recon::cpu::cpu_kernel, pybind11::arg("request") = "",
        "the CPU compositing build in use (x86-64-v4 | x86-64-v3 | baseline); a supported name switches to it");
  m.def("cpu_kernels_supported", &recon::cpu::cpu_kernels_supported, "the CPU compositing builds this CPU can run");
}
