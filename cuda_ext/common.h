// Constants shared by the CPU and CUDA rasterizer kernels (and mirrored, with a
// test that parses this file, in recon/render/constants.py for the PyTorch twin).
// Forward and backward must use the same values, so they live in exactly one place.
// Plain C++ only: this header is included by .cpp files (g++) and .cu files (nvcc).
#pragma once

#if defined(__CUDACC__)
#define RECON_HD __host__ __device__ __forceinline__
#else
#define RECON_HD inline
#endif

namespace recon {

// Square screen tiles in pixels: the unit of binning, sorting and parallel work.
constexpr int kTileSize = 16;
// A splat whose alpha at a pixel is below 1/255 cannot change an 8-bit image: skip it.
constexpr float kAlphaMin = 1.0f / 255.0f;
// Clamp alpha below 1 so 1 - alpha stays invertible (the backward divides by it).
constexpr float kAlphaMax = 0.99f;
// Stop compositing a pixel when its transmittance would fall below this.
constexpr float kTransmittanceMin = 1e-4f;
// 2D low-pass filter added to every screen covariance (px^2): a splat covers ~1 px at least.
constexpr float kLowPass = 0.3f;
// Camera-space depth below which a splat is culled (behind or too close to the camera).
constexpr float kNearPlane = 0.01f;
// x/z and y/z are clamped to this multiple of the field of view before forming the
// projection Jacobian, so splats far outside the image do not get absurd footprints.
constexpr float kFovClamp = 1.3f;
// Footprint cut in standard deviations: a splat touches a pixel only where its
// squared Mahalanobis distance q <= kSigmaCut^2 (and alpha >= kAlphaMin).
constexpr float kSigmaCut = 3.0f;
constexpr float kMahalanobisMax = kSigmaCut * kSigmaCut;

// Squared Mahalanobis distance of (dx, dy) under the conic (inverse covariance) [a, b, c].
RECON_HD float conic_quad(float a, float b, float c, float dx, float dy) {
  return a * dx * dx + 2.0f * b * dx * dy + c * dy * dy;
}

}  // namespace recon
