// CPU compositing kernels: 16x16 tiles, per-tile depth-sorted splat lists, OpenMP over tiles.
//
// Binning walks the splats in the shared front-to-back `order`, so every tile list comes out
// sorted without a per-tile sort. Inside a tile the loop is splat-major: each splat visits only
// the pixels of its footprint box within the tile, four pixels of a row at a time (SIMD lanes;
// lanes outside the box are masked), updating per-pixel state (transmittance, colour, depth);
// the tile stops once every pixel has hit the transmittance floor.
// The backward walks each tile's list back to front, recovering T_i = T_{i+1} / (1 - alpha_i)
// from the saved final transmittance (no per-pixel lists are stored), writes each
// (tile, splat) entry's gradient into its own slot, then sums the slots per splat
// (deterministic for any thread count).
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "common.h"
#include "raster_cpu_core.h"
#include "simd_cpu.h"

namespace recon {
namespace cpu {

void bin_tiles(const Frame& f, const int32_t* bbox, const int32_t* order, std::vector<int64_t>& offsets,
               std::vector<int32_t>& ids, int threads) {
  offsets.assign(static_cast<size_t>(f.C) * f.n_tiles + 1, 0);
  int64_t* counts = offsets.data() + 1;
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int c = 0; c < f.C; ++c) {
    for (int n = 0; n < f.N; ++n) {
      const int32_t* b = bbox + (static_cast<int64_t>(c) * f.N + n) * 4;
      if (b[2] <= b[0] || b[3] <= b[1]) continue;
      const int tx1 = (b[2] + kTileSize - 1) / kTileSize, ty1 = (b[3] + kTileSize - 1) / kTileSize;
      for (int ty = b[1] / kTileSize; ty < ty1; ++ty)
        for (int tx = b[0] / kTileSize; tx < tx1; ++tx) counts[static_cast<int64_t>(c) * f.n_tiles + ty * f.tiles_x + tx]++;
    }
  }
  for (size_t i = 1; i < offsets.size(); ++i) offsets[i] += offsets[i - 1];
  ids.resize(static_cast<size_t>(offsets.back()));
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int c = 0; c < f.C; ++c) {
    std::vector<int64_t> cursor(offsets.begin() + static_cast<int64_t>(c) * f.n_tiles,
                                offsets.begin() + static_cast<int64_t>(c + 1) * f.n_tiles);
    for (int k = 0; k < f.N; ++k) {
      const int n = order[static_cast<int64_t>(c) * f.N + k];
      const int32_t* b = bbox + (static_cast<int64_t>(c) * f.N + n) * 4;
      if (b[2] <= b[0] || b[3] <= b[1]) continue;
      const int tx1 = (b[2] + kTileSize - 1) / kTileSize, ty1 = (b[3] + kTileSize - 1) / kTileSize;
      for (int ty = b[1] / kTileSize; ty < ty1; ++ty)
        for (int tx = b[0] / kTileSize; tx < tx1; ++tx) ids[cursor[ty * f.tiles_x + tx]++] = n;
    }
  }
}

namespace {

constexpr int kTilePixels = kTileSize * kTileSize;
using recon::simd::kLanes;
using recon::simd::vf;
using recon::simd::vi;
namespace sd = recon::simd;
static_assert(kTileSize % kLanes == 0, "SIMD lanes must divide the tile size");
const vi kLaneIndex = sd::lane_index();

// The pixel loops are also compiled for AVX2 + FMA (x86-64-v3) and picked at load time
// (GCC function multi-versioning); other compilers / CPUs use the baseline build.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && !defined(RECON_NO_CLONES)
#define RECON_CPU_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define RECON_CPU_CLONES
#endif

// Pixel range of splat box b inside the tile starting at (x0, y0); false when empty.
inline bool clip_box(const int32_t* b, int x0, int y0, const Frame& f, int& bx0, int& by0, int& bx1, int& by1) {
  bx0 = std::max(b[0], x0);
  by0 = std::max(b[1], y0);
  bx1 = std::min({b[2], x0 + kTileSize, f.W});
  by1 = std::min({b[3], y0 + kTileSize, f.H});
  return bx0 < bx1 && by0 < by1;
}

// The projected splat a tile is visiting, and its box in tile-local columns.
struct Splat {
  float mx, my, ca, cb, cc, o, z;
  const float* col;
  int lx0, lx1;  // box columns [lx0, lx1) in the tile
};

inline Splat load_splat(const Inputs& in, int64_t g, int D, int bx0, int bx1, int x0) {
  return Splat{in.means2d[g * 2], in.means2d[g * 2 + 1], in.conics[g * 3], in.conics[g * 3 + 1], in.conics[g * 3 + 2],
               in.opacities[g], in.depths[g], in.colors + g * D, bx0 - x0, bx1 - x0};
}

// Offsets of a lane group from the splat centre, and its lanes inside [lo, hi).
inline vf lane_dx(const Splat& s, int x0, int cx, int lo, int hi, vi& inside) {
  const vi lx = sd::splat_i(cx) + kLaneIndex;
  inside = (lx >= sd::splat_i(lo)) & (lx < sd::splat_i(hi));
  return (__builtin_convertvector(lx + x0, vf) + 0.5f) - s.mx;
}

// Per-tile pixel state, structure-of-arrays with row stride kTileSize.
struct ForwardState {
  alignas(64) float T[kTilePixels];
  alignas(64) float acc_z[kTilePixels];
  alignas(64) int32_t last[kTilePixels];
  alignas(64) int32_t done[kTilePixels];
  alignas(64) float w[kTileSize];  // the current splat's weights along the current row
};

RECON_CPU_CLONES void forward_tile(const Frame& f, const Inputs& in, int c, int tile, const int64_t* offsets, const int32_t* ids,
                  float* rgb, float* alpha, float* depth, float* t_final, int32_t* last, std::vector<float>& acc) {
  const int D = f.D;
  const int x0 = (tile % f.tiles_x) * kTileSize, y0 = (tile / f.tiles_x) * kTileSize;
  const int tw = std::min(kTileSize, f.W - x0), th = std::min(kTileSize, f.H - y0);
  ForwardState st;
  std::fill(st.T, st.T + kTilePixels, 1.0f);
  std::fill(st.acc_z, st.acc_z + kTilePixels, 0.0f);
  std::fill(st.last, st.last + kTilePixels, -1);
  std::fill(st.done, st.done + kTilePixels, 0);
  acc.assign(static_cast<size_t>(kTilePixels) * D, 0.0f);  // [D][kTilePixels]
  int n_done = 0;
  const int n_pix = tw * th;
  const int64_t cN = static_cast<int64_t>(c) * f.N;
  const int64_t begin = offsets[static_cast<int64_t>(c) * f.n_tiles + tile];
  const int64_t end = offsets[static_cast<int64_t>(c) * f.n_tiles + tile + 1];

  for (int64_t k = begin; k < end && n_done < n_pix; ++k) {
    const int64_t g = cN + ids[k];
    int bx0, by0, bx1, by1;
    if (!clip_box(in.bbox + g * 4, x0, y0, f, bx0, by0, bx1, by1)) continue;
    const Splat s = load_splat(in, g, D, bx0, bx1, x0);
    const vi kk = sd::splat_i(static_cast<int32_t>(k));
    for (int y = by0; y < by1; ++y) {
      const float dy = static_cast<float>(y) + 0.5f - s.my;
      const int lo = s.lx0, hi = s.lx1, cx0 = lo & ~(kLanes - 1);
      const int row = (y - y0) * kTileSize;  // tile pixel p = row + column
      vi stops = sd::splat_i(0);
      bool any_hit = false;
      for (int cx = cx0; cx < hi; cx += kLanes) {
        const int p = row + cx;
        vi inside;
        const vf dx = lane_dx(s, x0, cx, lo, hi, inside);
        const vi done = sd::load_i(st.done + p);
        const vi live = inside & (done == 0);
        if (!sd::any(live)) {
          sd::store(st.w + cx, sd::splat(0.0f));
          continue;
        }
        const vf q = s.ca * dx * dx + 2.0f * s.cb * dx * dy + s.cc * dy * dy;  // recon::conic_quad
        const vf a = sd::vmin(sd::splat(kAlphaMax), s.o * sd::exp_nonpositive(-0.5f * q));
        // (no early-out on an empty `hit` here: the branch costs more than it saves)
        const vi hit = live & (q <= kMahalanobisMax) & (a >= kAlphaMin);
        any_hit = true;
        const vf T = sd::load(st.T + p);
        const vf t_next = T * (1.0f - a);
        const vi stop = hit & (t_next < kTransmittanceMin);
        const vi use = hit & ~stop;
        const vf w = sd::select(use, a * T, sd::splat(0.0f));
        sd::store(st.w + cx, w);
        sd::store(st.acc_z + p, sd::load(st.acc_z + p) + w * s.z);
        sd::store(st.T + p, sd::select(use, t_next, T));
        sd::store_i(st.last + p, sd::select_i(use, kk, sd::load_i(st.last + p)));
        sd::store_i(st.done + p, done | stop);
        stops -= stop;  // masks are -1: this counts the lanes that stopped
      }
      if (!any_hit) continue;
      for (int d = 0; d < D; ++d) {
        float* a_row = acc.data() + d * kTilePixels + row;
        const float cd = s.col[d];
        for (int cx = cx0; cx < hi; cx += kLanes) sd::store(a_row + cx, sd::load(a_row + cx) + sd::load(st.w + cx) * cd);
      }
      n_done += sd::lane_sum(stops);
    }
  }
  for (int y = 0; y < th; ++y)
    for (int x = 0; x < tw; ++x) {
      const int p = y * kTileSize + x;
      const int64_t pix = (static_cast<int64_t>(c) * f.H + y0 + y) * f.W + x0 + x;
      for (int d = 0; d < D; ++d) rgb[pix * D + d] = acc[d * kTilePixels + p];
      alpha[pix] = 1.0f - st.T[p];
      depth[pix] = st.acc_z[p];
      t_final[pix] = st.T[p];
      last[pix] = st.last[p];
    }
}

}  // namespace

namespace {

// Per-tile backward state, structure-of-arrays with row stride kTileSize.
struct BackwardState {
  alignas(64) float T[kTilePixels];       // transmittance behind the splat being visited
  alignas(64) float rest_z[kTilePixels];  // sum over the splats behind it of w_j z_j
  alignas(64) float g_z[kTilePixels];     // upstream dL/d depth
  alignas(64) float g_at[kTilePixels];    // upstream dL/d alpha times T_final
  alignas(64) int32_t last[kTilePixels];
};

RECON_CPU_CLONES void backward_tile(const Frame& f, const Inputs& in, const Upstream& up, int c, int tile, const int64_t* offsets,
                   const int32_t* ids, float* slots, std::vector<float>& scratch) {
  const int D = f.D;
  const int K = kSlotFixed + D;
  const int x0 = (tile % f.tiles_x) * kTileSize, y0 = (tile / f.tiles_x) * kTileSize;
  const int tw = std::min(kTileSize, f.W - x0), th = std::min(kTileSize, f.H - y0);
  const int64_t begin = offsets[static_cast<int64_t>(c) * f.n_tiles + tile];
  BackwardState st;
  // scratch = [upstream dL/d rgb: D][kTilePixels] [rest_c: D][kTilePixels] [dL/d colour: D lanes]
  scratch.assign(static_cast<size_t>(2 * kTilePixels + kLanes) * D, 0.0f);
  float* g_c = scratch.data();
  float* rest_c = g_c + static_cast<size_t>(kTilePixels) * D;
  float* g_col = rest_c + static_cast<size_t>(kTilePixels) * D;
  std::fill(st.T, st.T + kTilePixels, 1.0f);
  std::fill(st.rest_z, st.rest_z + kTilePixels, 0.0f);
  std::fill(st.g_z, st.g_z + kTilePixels, 0.0f);
  std::fill(st.g_at, st.g_at + kTilePixels, 0.0f);
  std::fill(st.last, st.last + kTilePixels, -1);
  int64_t k_max = -1;
  for (int y = 0; y < th; ++y)
    for (int x = 0; x < tw; ++x) {
      const int p = y * kTileSize + x;
      const int64_t pix = (static_cast<int64_t>(c) * f.H + y0 + y) * f.W + x0 + x;
      st.T[p] = up.t_final[pix];
      st.g_z[p] = up.g_depth[pix];
      st.g_at[p] = up.g_alpha[pix] * up.t_final[pix];
      st.last[p] = up.last[pix];
      for (int d = 0; d < D; ++d) g_c[d * kTilePixels + p] = up.g_rgb[pix * D + d];
      k_max = std::max<int64_t>(k_max, st.last[p]);
    }
  const int64_t cN = static_cast<int64_t>(c) * f.N;
  const vf zero = sd::splat(0.0f);
  // Entries behind every pixel's last splat get no gradient (slots are not pre-zeroed).
  const int64_t end = offsets[static_cast<int64_t>(c) * f.n_tiles + tile + 1];
  std::fill(slots + (k_max + 1 > begin ? k_max + 1 : begin) * K, slots + end * K, 0.0f);
  for (int64_t k = k_max; k >= begin; --k) {
    const int64_t g = cN + ids[k];
    int bx0, by0, bx1, by1;
    float* out = slots + k * K;
    if (!clip_box(in.bbox + g * 4, x0, y0, f, bx0, by0, bx1, by1)) {  // cannot happen: binned by this box
      std::fill(out, out + K, 0.0f);
      continue;
    }
    const Splat s = load_splat(in, g, D, bx0, bx1, x0);
    const vi kk = sd::splat_i(static_cast<int32_t>(k));
    vf g_mx = zero, g_my = zero, g_ca = zero, g_cb = zero, g_cc = zero, g_o = zero, g_z = zero;
    std::fill(g_col, g_col + kLanes * D, 0.0f);
    for (int y = by0; y < by1; ++y) {
      const float dy = static_cast<float>(y) + 0.5f - s.my;
      const int lo = s.lx0, hi = s.lx1, cx0 = lo & ~(kLanes - 1);
      const int row = (y - y0) * kTileSize;
      for (int cx = cx0; cx < hi; cx += kLanes) {
        const int p = row + cx;
        vi inside;
        const vf dx = lane_dx(s, x0, cx, lo, hi, inside);
        const vi live = inside & (kk <= sd::load_i(st.last + p));
        if (!sd::any(live)) continue;
        const vf q = s.ca * dx * dx + 2.0f * s.cb * dx * dy + s.cc * dy * dy;  // recon::conic_quad
        const vf gauss = sd::exp_nonpositive(-0.5f * q);
        const vf raw = s.o * gauss;
        const vf a = sd::vmin(sd::splat(kAlphaMax), raw);
        const vi hit = live & (q <= kMahalanobisMax) & (a >= kAlphaMin);
        const vf inv = 1.0f / (1.0f - a);
        const vf t_i = sd::load(st.T + p) * inv;  // transmittance in front of this splat
        const vf w = sd::select(hit, a * t_i, zero);
        // dL/dalpha_i = sum_ch g (T_i c_i - rest_i / (1 - alpha_i)) + g_A T_final / (1 - alpha_i)
        vf g_a = zero;
        for (int d = 0; d < D; ++d) {
          float* rc = rest_c + d * kTilePixels + p;
          const vf gc = sd::load(g_c + d * kTilePixels + p);
          const vf r = sd::load(rc);
          sd::store(g_col + d * kLanes, sd::load(g_col + d * kLanes) + gc * w);
          g_a += gc * (t_i * s.col[d] - r * inv);
          sd::store(rc, r + w * s.col[d]);
        }
        const vf gz = sd::load(st.g_z + p), rz = sd::load(st.rest_z + p);
        g_a += gz * (t_i * s.z - rz * inv) + sd::load(st.g_at + p) * inv;
        g_z += gz * w;
        sd::store(st.rest_z + p, rz + w * s.z);
        sd::store(st.T + p, sd::select(hit, t_i, sd::load(st.T + p)));
        // alpha clamped at kAlphaMax depends on neither opacity nor position
        const vf coef = sd::select(hit & (raw <= kAlphaMax), g_a, zero);
        g_o += coef * gauss;
        const vf g_q = -0.5f * raw * coef;
        g_ca += g_q * dx * dx;
        g_cb += 2.0f * g_q * dx * dy;
        g_cc += g_q * dy * dy;
        g_mx -= 2.0f * g_q * (s.ca * dx + s.cb * dy);
        g_my -= 2.0f * g_q * (s.cb * dx + s.cc * dy);
      }
    }
    out[0] = sd::sum(g_mx);
    out[1] = sd::sum(g_my);
    out[2] = sd::sum(g_ca);
    out[3] = sd::sum(g_cb);
    out[4] = sd::sum(g_cc);
    out[5] = sd::sum(g_o);
    out[6] = sd::sum(g_z);
    for (int d = 0; d < D; ++d) out[kSlotFixed + d] = sd::sum(sd::load(g_col + d * kLanes));
  }
}

}  // namespace

void composite_forward(const Frame& f, const Inputs& in, const std::vector<int64_t>& offsets,
                       const std::vector<int32_t>& ids, const Outputs& out, int threads) {
  const int64_t total = static_cast<int64_t>(f.C) * f.n_tiles;
#pragma omp parallel num_threads(threads)
  {
    std::vector<float> acc;  // per-thread colour accumulators, reused across tiles
#pragma omp for schedule(dynamic, 1)
    for (int64_t job = 0; job < total; ++job) {
      const int c = static_cast<int>(job / f.n_tiles), tile = static_cast<int>(job % f.n_tiles);
      forward_tile(f, in, c, tile, offsets.data(), ids.data(), out.rgb, out.alpha, out.depth, out.t_final, out.last, acc);
    }
  }
}

void composite_backward(const Frame& f, const Inputs& in, const Upstream& up, const int64_t* offsets,
                        const int32_t* ids, float* slots, const Gradients& grads, int threads) {
  const int K = kSlotFixed + f.D;
  const int64_t total = static_cast<int64_t>(f.C) * f.n_tiles;
#pragma omp parallel num_threads(threads)
  {
    std::vector<float> scratch;  // per-thread colour state, reused across tiles
#pragma omp for schedule(dynamic, 1)
    for (int64_t job = 0; job < total; ++job) {
      const int c = static_cast<int>(job / f.n_tiles), tile = static_cast<int>(job % f.n_tiles);
      backward_tile(f, in, up, c, tile, offsets, ids, slots, scratch);
    }
  }
  // Sum the slots per splat (zeroed outputs); cameras own disjoint entry ranges and outputs.
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int c = 0; c < f.C; ++c) {
    const int64_t cN = static_cast<int64_t>(c) * f.N;
    for (int64_t k = offsets[static_cast<int64_t>(c) * f.n_tiles]; k < offsets[static_cast<int64_t>(c + 1) * f.n_tiles];
         ++k) {
      const float* s = slots + k * K;
      const int64_t g = cN + ids[k];
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

}  // namespace cpu
}  // namespace recon
