// Torch-level entry points of the compositing kernels (recon._C). The projection of the
// Gaussians runs in PyTorch (recon/render/projection.py) for the torch and cuda backends and in
// C++ for the cpu backend (project_cpu.cpp, tested against projection.py); these functions
// composite the projected 2D splats front to back and differentiate that.
//
// Shapes (C cameras, N splats, D colour channels, H x W pixels, E tile-splat intersections):
//   means2d [C,N,2] f32, conics [C,N,3] f32, opacities [C,N] f32, colors [C,N,D] f32,
//   depths [C,N] f32, bbox [C,N,4] i32 pixel box [x0,y0,x1,y1), order [C,N] i32 front to back.
// forward returns {rgb [C,H,W,D], alpha [C,H,W,1], depth [C,H,W,1], t_final [C,H,W] f32,
//   last [C,H,W] i32 (index into tile_ids of the last splat a pixel used, -1 if none),
//   tile_offsets [C*tiles+1] i64, tile_ids [E] i32}; backward returns the gradients
//   {means2d, conics, opacities, colors, depths} of the inputs' shapes.
#pragma once

#include <torch/extension.h>

#include <vector>

// Threads the CPU kernels (compositing and projection) use: the value set by set_kernel_threads,
// or torch's intra-op thread count when that is 0 (the default). Lets a fit run torch's many small
// ops on one thread (they lose to thread wake-ups) while the heavy kernels use every core.
int kernel_threads();
void set_kernel_threads(int threads);

std::vector<at::Tensor> composite_forward_cpu(const at::Tensor& means2d, const at::Tensor& conics,
                                              const at::Tensor& opacities, const at::Tensor& colors,
                                              const at::Tensor& depths, const at::Tensor& bbox,
                                              const at::Tensor& order, int64_t width, int64_t height);

std::vector<at::Tensor> composite_backward_cpu(const at::Tensor& means2d, const at::Tensor& conics,
                                               const at::Tensor& opacities, const at::Tensor& colors,
                                               const at::Tensor& depths, const at::Tensor& bbox,
                                               const at::Tensor& t_final, const at::Tensor& last,
                                               const at::Tensor& tile_offsets, const at::Tensor& tile_ids,
                                               const at::Tensor& g_rgb, const at::Tensor& g_alpha,
                                               const at::Tensor& g_depth, int64_t width, int64_t height);

// EWA projection on the CPU (project_cpu.cpp), mirroring recon/render/projection.py:
// means [N,3] or [C,N,3], log_scales [N], opacity_logits [N], viewmats [C,4,4], Ks [C,3,3] ->
// {means2d [C,N,2], conics [C,N,3], opacities [C,N], depths [C,N], bbox [C,N,4] i32,
//  radii [C,N] i32, order [C,N] i32, visible [C,N] bool}; backward -> {g_means (means' shape), g_log_scales, g_logits}.
std::vector<at::Tensor> project_forward_cpu(const at::Tensor& means, const at::Tensor& log_scales,
                                            const at::Tensor& opacity_logits, const at::Tensor& viewmats,
                                            const at::Tensor& Ks, int64_t width, int64_t height);

std::vector<at::Tensor> project_backward_cpu(const at::Tensor& means, const at::Tensor& log_scales,
                                             const at::Tensor& opacity_logits, const at::Tensor& viewmats,
                                             const at::Tensor& Ks, int64_t width, int64_t height,
                                             const at::Tensor& g_means2d, const at::Tensor& g_conics,
                                             const at::Tensor& g_opacities, const at::Tensor& g_depths);

#ifdef RECON_WITH_CUDA
std::vector<at::Tensor> composite_forward_cuda(const at::Tensor& means2d, const at::Tensor& conics,
                                               const at::Tensor& opacities, const at::Tensor& colors,
                                               const at::Tensor& depths, const at::Tensor& bbox,
                                               const at::Tensor& order, int64_t width, int64_t height);

std::vector<at::Tensor> composite_backward_cuda(const at::Tensor& means2d, const at::Tensor& conics,
                                                const at::Tensor& opacities, const at::Tensor& colors,
                                                const at::Tensor& depths, const at::Tensor& bbox,
                                                const at::Tensor& t_final, const at::Tensor& last,
                                                const at::Tensor& tile_offsets, const at::Tensor& tile_ids,
                                                const at::Tensor& g_rgb, const at::Tensor& g_alpha,
                                                const at::Tensor& g_depth, int64_t width, int64_t height);
#endif
