// CPU EWA projection of isotropic Gaussians (forward and backward), fused per element: the
// same maths, in the same float32 order, as recon/render/projection.py (the reference, also
// used by the torch / cuda backends). See that file for the conventions.
#include <ATen/Parallel.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "common.h"
#include "rasterize.h"

namespace {

struct Camera {
  float R[9], t[3], fx, fy, cx, cy;
  float lim_x_lo, lim_x_hi, lim_y_lo, lim_y_hi;  // x/z and y/z clamp range for the Jacobian
};

Camera camera_of(const float* viewmat, const float* K, int W, int H) {
  Camera cam;
  for (int i = 0; i < 3; ++i) {
    for (int j = 0; j < 3; ++j) cam.R[i * 3 + j] = viewmat[i * 4 + j];
    cam.t[i] = viewmat[i * 4 + 3];
  }
  cam.fx = K[0];
  cam.cx = K[2];
  cam.fy = K[4];
  cam.cy = K[5];
  const float margin = 0.5f * (recon::kFovClamp - 1.0f);  // image fraction added on each side
  cam.lim_x_lo = -(cam.cx + margin * W) / cam.fx;
  cam.lim_x_hi = (W - cam.cx + margin * W) / cam.fx;
  cam.lim_y_lo = -(cam.cy + margin * H) / cam.fy;
  cam.lim_y_hi = (H - cam.cy + margin * H) / cam.fy;
  return cam;
}

// Intermediate values of one projection, kept for the backward.
struct Proj {
  float x, y, z, zs, rx, ry, tx, ty, ja, jb, jc, jd, s2, cxx, cxy, cyy, det;
  bool in_front;
};

// Slightly above exp(kMahalanobisMax / 2): from there on 2 ln(255 o) >= kMahalanobisMax for certain (with a
// margin far above float rounding), so the clamped footprint cut is kMahalanobisMax without the log.
const float kOpaqueCut = std::exp(0.5f * recon::kMahalanobisMax) * 1.0001f;

// Camera-independent per-splat values (computed once per splat when there are several cameras).
struct SplatConst {
  float s2;     // exp(2 log_scale)
  float o;      // sigmoid(opacity_logit)
  float q_max;  // footprint cut on q: min(9, 2 ln(255 o)), >= 0
};

inline SplatConst splat_constant(float log_scale, float logit) {
  const float o = 1.0f / (1.0f + std::exp(-logit));
  // at or above kOpaqueCut, 2 ln(255 o) > kMahalanobisMax for certain: the clamped cut needs no log
  const float q = 255.0f * o >= kOpaqueCut ? recon::kMahalanobisMax
                                           : std::min(std::max(2.0f * std::log(255.0f * std::max(o, recon::kAlphaMin)), 0.0f),
                                                      recon::kMahalanobisMax);
  return SplatConst{std::exp(2.0f * log_scale), o, q};
}

// The backward needs no footprint cut (q_max left 0).
inline SplatConst splat_scale_opacity(float log_scale, float logit) {
  return SplatConst{std::exp(2.0f * log_scale), 1.0f / (1.0f + std::exp(-logit)), 0.0f};
}

// Inside an OpenMP parallel region: calls body(i, c, n, constants) for every (camera, splat) pair
// i = c N + n, split over the threads (so one camera uses all of them too). The per-splat constants
// make(n) are computed once up front into sc (sized N) when there are several cameras, else inline.
template <typename Make, typename Body>
inline void for_each_pair(int C, int N, std::vector<SplatConst>& sc, Make make, Body body) {
  if (C > 1) {
#pragma omp for schedule(static)
    for (int n = 0; n < N; ++n) sc[n] = make(n);
  }
  const int64_t total = static_cast<int64_t>(C) * N;
#pragma omp for schedule(static)
  for (int64_t i = 0; i < total; ++i) {
    const int n = static_cast<int>(i % N);
    body(i, static_cast<int>(i / N), n, C > 1 ? sc[n] : make(n));
  }
}

inline Proj project_one(const Camera& cam, const float* m, float s2) {
  Proj p;
  p.x = cam.R[0] * m[0] + cam.R[1] * m[1] + cam.R[2] * m[2] + cam.t[0];
  p.y = cam.R[3] * m[0] + cam.R[4] * m[1] + cam.R[5] * m[2] + cam.t[1];
  p.z = cam.R[6] * m[0] + cam.R[7] * m[1] + cam.R[8] * m[2] + cam.t[2];
  p.in_front = p.z > recon::kNearPlane;
  p.zs = p.in_front ? p.z : 1.0f;
  p.rx = p.x / p.zs;
  p.ry = p.y / p.zs;
  p.tx = std::min(std::max(p.rx, cam.lim_x_lo), cam.lim_x_hi) * p.zs;
  p.ty = std::min(std::max(p.ry, cam.lim_y_lo), cam.lim_y_hi) * p.zs;
  p.ja = cam.fx / p.zs;
  p.jb = -cam.fx * p.tx / (p.zs * p.zs);
  p.jc = cam.fy / p.zs;
  p.jd = -cam.fy * p.ty / (p.zs * p.zs);
  p.s2 = s2;
  p.cxx = p.s2 * (p.ja * p.ja + p.jb * p.jb) + recon::kLowPass;
  p.cxy = p.s2 * (p.jb * p.jd);
  p.cyy = p.s2 * (p.jc * p.jc + p.jd * p.jd) + recon::kLowPass;
  p.det = p.cxx * p.cyy - p.cxy * p.cxy;
  return p;
}

// Depth-order key: visible splats by depth (positive floats order like their bit patterns),
// culled ones last (+inf).
inline uint32_t order_key(float z, bool visible) {
  uint32_t bits = 0x7f800000u;
  if (visible) std::memcpy(&bits, &z, sizeof(bits));
  return bits;
}

// Stable LSD radix sort (3 passes of 11 bits) of 0..n-1 by key: ties keep index order, as
// torch.sort(stable=True) in projection.py does. Writes the sorted indices to `order`.
void radix_order(std::vector<uint32_t>& keys, std::vector<uint32_t>& keys_tmp, std::vector<int32_t>& idx,
                 std::vector<int32_t>& idx_tmp, int32_t* order) {
  const size_t n = keys.size();
  idx.resize(n);
  keys_tmp.resize(n);
  idx_tmp.resize(n);
  for (size_t i = 0; i < n; ++i) idx[i] = static_cast<int32_t>(i);
  for (int shift = 0; shift < 32; shift += 11) {
    size_t count[2049] = {0};
    for (size_t i = 0; i < n; ++i) ++count[((keys[i] >> shift) & 2047u) + 1];
    for (int b = 0; b < 2048; ++b) count[b + 1] += count[b];
    for (size_t i = 0; i < n; ++i) {
      const size_t pos = count[(keys[i] >> shift) & 2047u]++;
      keys_tmp[pos] = keys[i];
      idx_tmp[pos] = idx[i];
    }
    keys.swap(keys_tmp);
    idx.swap(idx_tmp);
  }
  std::memcpy(order, idx.data(), n * sizeof(int32_t));
}

}  // namespace

std::vector<at::Tensor> project_forward_cpu(const at::Tensor& means, const at::Tensor& log_scales,
                                            const at::Tensor& opacity_logits, const at::Tensor& viewmats,
                                            const at::Tensor& Ks, int64_t width, int64_t height) {
  const bool per_camera = means.dim() == 3;
  const int C = static_cast<int>(viewmats.size(0)), N = static_cast<int>(log_scales.size(0));
  const int W = static_cast<int>(width), H = static_cast<int>(height);
  auto fopt = log_scales.options();
  at::Tensor means2d = at::empty({C, N, 2}, fopt), conics = at::empty({C, N, 3}, fopt);
  at::Tensor opacities = at::empty({C, N}, fopt), depths = at::empty({C, N}, fopt);
  at::Tensor bbox = at::empty({C, N, 4}, fopt.dtype(at::kInt)), radii = at::empty({C, N}, fopt.dtype(at::kInt));
  at::Tensor order = at::empty({C, N}, fopt.dtype(at::kInt)), visible = at::empty({C, N}, fopt.dtype(at::kBool));
  const float *pm = means.data_ptr<float>(), *pls = log_scales.data_ptr<float>(), *pl = opacity_logits.data_ptr<float>();
  const float *pv = viewmats.data_ptr<float>(), *pk = Ks.data_ptr<float>();
  float *o_m2 = means2d.data_ptr<float>(), *o_con = conics.data_ptr<float>(), *o_op = opacities.data_ptr<float>();
  float* o_z = depths.data_ptr<float>();
  int32_t *o_bb = bbox.data_ptr<int32_t>(), *o_r = radii.data_ptr<int32_t>(), *o_ord = order.data_ptr<int32_t>();
  bool* o_vis = visible.data_ptr<bool>();
  const float big = 4.0f * std::max(W, H) + 8.0f;
  const int threads = kernel_threads();
  std::vector<Camera> cams;
  for (int c = 0; c < C; ++c) cams.push_back(camera_of(pv + c * 16, pk + c * 9, W, H));
  const int64_t total = static_cast<int64_t>(C) * N;
  std::vector<uint32_t> all_keys(static_cast<size_t>(total));
  std::vector<SplatConst> sc(C > 1 ? N : 0);
  // One parallel region (waking the threads costs more than a small loop): every (camera, splat) pair,
  // then one sort per camera.
#pragma omp parallel num_threads(threads)
  {
    for_each_pair(C, N, sc, [&](int n) { return splat_constant(pls[n], pl[n]); },
                  [&](int64_t i, int c, int n, const SplatConst& k) {
      const Camera& cam = cams[c];
      const Proj p = project_one(cam, pm + (per_camera ? i : n) * 3, k.s2);
      const float u = cam.fx * p.x / p.zs + cam.cx, v = cam.fy * p.y / p.zs + cam.cy;
      const float o = k.o;
      o_m2[i * 2] = u;
      o_m2[i * 2 + 1] = v;
      o_con[i * 3] = p.cyy / p.det;
      o_con[i * 3 + 1] = -p.cxy / p.det;
      o_con[i * 3 + 2] = p.cxx / p.det;
      o_op[i] = o;
      o_z[i] = p.z;
      // Footprint box: pixels whose centres lie in the AABB of q <= min(9, 2 ln(255 o)).
      const float q_max = k.q_max;
      const float ext_x = std::sqrt(q_max * p.cxx), ext_y = std::sqrt(q_max * p.cyy);
      auto clampf = [](float a, float lo, float hi) { return std::min(std::max(a, lo), hi); };
      const float x0 = clampf(std::ceil(clampf(u - ext_x - 0.5f, -big, big)), 0.0f, static_cast<float>(W));
      const float x1 = clampf(std::floor(clampf(u + ext_x - 0.5f, -big, big)) + 1.0f, 0.0f, static_cast<float>(W));
      const float y0 = clampf(std::ceil(clampf(v - ext_y - 0.5f, -big, big)), 0.0f, static_cast<float>(H));
      const float y1 = clampf(std::floor(clampf(v + ext_y - 0.5f, -big, big)) + 1.0f, 0.0f, static_cast<float>(H));
      const bool vis = p.in_front && o >= recon::kAlphaMin && x0 < x1 && y0 < y1;
      int32_t* b = o_bb + i * 4;
      b[0] = vis ? static_cast<int32_t>(x0) : 0;
      b[1] = vis ? static_cast<int32_t>(y0) : 0;
      b[2] = vis ? static_cast<int32_t>(x1) : 0;
      b[3] = vis ? static_cast<int32_t>(y1) : 0;
      o_r[i] = vis ? static_cast<int32_t>(std::ceil(std::max(ext_x, ext_y))) : 0;
      o_vis[i] = vis;
      all_keys[i] = order_key(p.z, vis);
    });
    std::vector<uint32_t> keys, keys_tmp;
    std::vector<int32_t> idx, idx_tmp;
#pragma omp for schedule(static)
    for (int c = 0; c < C; ++c) {
      keys.assign(all_keys.begin() + static_cast<int64_t>(c) * N, all_keys.begin() + static_cast<int64_t>(c + 1) * N);
      radix_order(keys, keys_tmp, idx, idx_tmp, o_ord + static_cast<int64_t>(c) * N);
    }
  }
  return {means2d, conics, opacities, depths, bbox, radii, order, visible};
}

std::vector<at::Tensor> project_backward_cpu(const at::Tensor& means, const at::Tensor& log_scales,
                                             const at::Tensor& opacity_logits, const at::Tensor& viewmats,
                                             const at::Tensor& Ks, int64_t width, int64_t height,
                                             const at::Tensor& g_means2d, const at::Tensor& g_conics,
                                             const at::Tensor& g_opacities, const at::Tensor& g_depths) {
  const bool per_camera = means.dim() == 3;
  const int C = static_cast<int>(viewmats.size(0)), N = static_cast<int>(log_scales.size(0));
  const int W = static_cast<int>(width), H = static_cast<int>(height);
  // Per-camera partial gradients (every element written); shared parameters are summed over cameras
  // afterwards (one camera: a view, no sum).
  at::Tensor g_means = at::empty({C, N, 3}, log_scales.options());
  at::Tensor g_ls = at::empty({C, N}, log_scales.options()), g_lg = at::empty({C, N}, log_scales.options());
  const float *pm = means.data_ptr<float>(), *pls = log_scales.data_ptr<float>(), *pl = opacity_logits.data_ptr<float>();
  const float *pv = viewmats.data_ptr<float>(), *pk = Ks.data_ptr<float>();
  const float *gm2 = g_means2d.data_ptr<float>(), *gcon = g_conics.data_ptr<float>();
  const float *gop = g_opacities.data_ptr<float>(), *gdz = g_depths.data_ptr<float>();
  float *o_gm = g_means.data_ptr<float>(), *o_gls = g_ls.data_ptr<float>(), *o_glg = g_lg.data_ptr<float>();
  const int threads = kernel_threads();
  std::vector<Camera> cams;
  for (int c = 0; c < C; ++c) cams.push_back(camera_of(pv + c * 16, pk + c * 9, W, H));
  std::vector<SplatConst> sc(C > 1 ? N : 0);
#pragma omp parallel num_threads(threads)
  for_each_pair(C, N, sc, [&](int n) { return splat_scale_opacity(pls[n], pl[n]); },
                [&](int64_t i, int c, int n, const SplatConst& k) {
    const Camera& cam = cams[c];
    const Proj p = project_one(cam, pm + (per_camera ? i : n) * 3, k.s2);
    // conic = inverse(cov): dL/dcov = -M G M with M the conic matrix, G = [[gA, gB/2], [gB/2, gC]]
    const float a = p.cyy / p.det, b = -p.cxy / p.det, cc = p.cxx / p.det;
    const float gA = gcon[i * 3], gB = 0.5f * gcon[i * 3 + 1], gC = gcon[i * 3 + 2];
    const float P00 = a * gA + b * gB, P01 = a * gB + b * gC, P10 = b * gA + cc * gB, P11 = b * gB + cc * gC;
    const float g_cxx = -(P00 * a + P01 * b), g_cxy = -2.0f * (P00 * b + P01 * cc), g_cyy = -(P10 * b + P11 * cc);
    // cov = s^2 J J^T + low-pass
    const float g_s2 = g_cxx * (p.ja * p.ja + p.jb * p.jb) + g_cxy * (p.jb * p.jd) + g_cyy * (p.jc * p.jc + p.jd * p.jd);
    const float g_ja = 2.0f * g_cxx * p.s2 * p.ja;
    const float g_jb = 2.0f * g_cxx * p.s2 * p.jb + g_cxy * p.s2 * p.jd;
    const float g_jc = 2.0f * g_cyy * p.s2 * p.jc;
    const float g_jd = 2.0f * g_cyy * p.s2 * p.jd + g_cxy * p.s2 * p.jb;
    o_gls[i] = 2.0f * p.s2 * g_s2;
    const float zs2 = p.zs * p.zs, zs3 = zs2 * p.zs;
    float g_zs = -g_ja * cam.fx / zs2 + 2.0f * g_jb * cam.fx * p.tx / zs3 - g_jc * cam.fy / zs2 +
                 2.0f * g_jd * cam.fy * p.ty / zs3;
    const float g_tx = -g_jb * cam.fx / zs2, g_ty = -g_jd * cam.fy / zs2;
    // t = clamp(x / z) z
    g_zs += g_tx * (p.tx / p.zs) + g_ty * (p.ty / p.zs);
    const bool free_x = p.rx >= cam.lim_x_lo && p.rx <= cam.lim_x_hi;
    const bool free_y = p.ry >= cam.lim_y_lo && p.ry <= cam.lim_y_hi;
    const float g_rx = free_x ? g_tx * p.zs : 0.0f, g_ry = free_y ? g_ty * p.zs : 0.0f;
    // means2d = f x / z + c
    const float gu = gm2[i * 2], gv = gm2[i * 2 + 1];
    const float g_x = (g_rx + gu * cam.fx) / p.zs;
    const float g_y = (g_ry + gv * cam.fy) / p.zs;
    g_zs -= (g_rx * p.x + gu * cam.fx * p.x) / zs2 + (g_ry * p.y + gv * cam.fy * p.y) / zs2;
    const float g_z = gdz[i] + (p.in_front ? g_zs : 0.0f);
    float* gm = o_gm + i * 3;
    for (int j = 0; j < 3; ++j) gm[j] = cam.R[0 * 3 + j] * g_x + cam.R[1 * 3 + j] * g_y + cam.R[2 * 3 + j] * g_z;
    o_glg[i] = gop[i] * k.o * (1.0f - k.o);
  });
  if (C == 1) return {per_camera ? g_means : g_means.view({N, 3}), g_ls.view({N}), g_lg.view({N})};
  return {per_camera ? g_means : g_means.sum(0), g_ls.sum(0), g_lg.sum(0)};
}
