// The per-tile compositing kernels (forward and backward) as a template on the SIMD width L. Internal to
// the CPU kernels: included by raster_cpu_core.cpp (L = 8, baseline build) and, through
// raster_cpu_level.inc, by raster_cpu_v3.cpp (L = 8, AVX2) and raster_cpu_v4.cpp (L = 16, AVX-512),
// each compiled under its own `#pragma GCC target`. Everything here has internal linkage, so each
// translation unit keeps its own instruction set.
//
// (Why translation units rather than a target attribute on one function: GCC lowers the vector
// comparisons of an always-inline callee for the callee's own, baseline target before inlining, which
// turns every 16-lane compare into 16 scalar ones.)
#ifndef RECON_RASTER_CPU_TILE_H_
#define RECON_RASTER_CPU_TILE_H_

#include <algorithm>
#include <cstdint>
#include <vector>

#include "common.h"
#include "raster_cpu_core.h"
#include "simd_cpu.h"

namespace recon {
namespace cpu {
namespace {

constexpr int kTilePixels = kTileSize * kTileSize;
// Splat records are gathered in tile order, i.e. at random (about a megabyte for 20k splats): each loop
// prefetches the record it will need this many entries later (measured: 2 to 12 work alike; none is
// about 15 % slower at 2 threads on the headline scene).
constexpr int kPrefetchAhead = 4;

#if defined(__GNUC__)
#define RECON_INLINE inline __attribute__((always_inline))
#else
#define RECON_INLINE inline
#endif

// A SIMD vector of L lanes holds a block of kBlockW x (L / kBlockW) pixels (4 x 2 for 8 lanes, 4 x 4
// for 16), so a splat's footprint box (typically 5-9 px square) needs far fewer vector steps than
// with one-row vectors. Per-tile pixel state is stored block by block: blocked(x, y) below.
constexpr int kBlockW = 4;
constexpr int kBlocksX = kTileSize / kBlockW;

template <int L>
struct Kernel {
  using S = recon::simd::Simd<L>;
  using vf = typename S::vf;
  using vi = typename S::vi;
  static constexpr int kBlockH = L / kBlockW;
  static_assert(L % kBlockW == 0 && kTileSize % kBlockW == 0 && kTileSize % kBlockH == 0,
                "SIMD blocks must tile a tile");

  // tile-local pixel (lx, ly) -> index into the per-tile state
  static RECON_INLINE int blocked(int lx, int ly) {
    return ((ly / kBlockH) * kBlocksX + lx / kBlockW) * L + (ly % kBlockH) * kBlockW + lx % kBlockW;
  }
  static RECON_INLINE vi lane_x() {
    vi v{};
    for (int i = 0; i < L; ++i) v[i] = i % kBlockW;
    return v;
  }
  static RECON_INLINE vi lane_y() {
    vi v{};
    for (int i = 0; i < L; ++i) v[i] = i / kBlockW;
    return v;
  }

  // A splat's footprint box clipped to a tile, in SIMD blocks, with per-lane masks and offsets.
  struct Footprint {
    int bc0, bc1, br0, br1;  // block columns / rows [bc0, bc1] x [br0, br1] (inclusive)
    vi y_lo, y_hi;           // box rows in tile-local pixels: lanes outside are masked
    vf dy0;                  // pixel centre minus splat centre, y, for block row 0, per lane
    vi col_in[kBlocksX];     // per block column in [bc0, bc1]: lanes inside the box's columns
    vf dx[kBlocksX];         // per block column in [bc0, bc1]: pixel centre minus splat centre, x
  };

  // false when the box does not meet the tile
  static RECON_INLINE bool footprint(const int32_t* b, int x0, int y0, const Frame& f, float mx, float my,
                                     Footprint& fp) {
    const int bx0 = std::max(b[0], x0) - x0, by0 = std::max(b[1], y0) - y0;
    const int bx1 = std::min({b[2], x0 + kTileSize, f.W}) - x0, by1 = std::min({b[3], y0 + kTileSize, f.H}) - y0;
    if (bx0 >= bx1 || by0 >= by1) return false;
    fp.bc0 = bx0 / kBlockW;
    fp.bc1 = (bx1 - 1) / kBlockW;
    fp.br0 = by0 / kBlockH;
    fp.br1 = (by1 - 1) / kBlockH;
    fp.y_lo = S::splat_i(by0);
    fp.y_hi = S::splat_i(by1);
    fp.dy0 = __builtin_convertvector(lane_y(), vf) + (static_cast<float>(y0) + 0.5f - my);
    const vi x_lo = S::splat_i(bx0), x_hi = S::splat_i(bx1), lx0 = lane_x();
    const vf dx0 = __builtin_convertvector(lx0, vf) + (static_cast<float>(x0) + 0.5f - mx);
    for (int bc = fp.bc0; bc <= fp.bc1; ++bc) {
      const vi lx = lx0 + bc * kBlockW;
      fp.col_in[bc] = (lx >= x_lo) & (lx < x_hi);
      fp.dx[bc] = dx0 + static_cast<float>(bc * kBlockW);
    }
    return true;
  }

  static RECON_INLINE void prefetch_splat(const Inputs& in, int64_t g, int D) {
    __builtin_prefetch(in.bbox + g * 4);
    __builtin_prefetch(in.means2d + g * 2);
    __builtin_prefetch(in.conics + g * 3);
    __builtin_prefetch(in.opacities + g);
    __builtin_prefetch(in.depths + g);
    __builtin_prefetch(in.colors + g * D);
  }

  // One splat's compositing record (conic, opacity, depth, colour). With DC = 3 the colour is a local
  // copy the compiler keeps in registers; with DC = 0 (runtime D) it stays in the input array.
  template <int DC>
  struct Splat {
    float ca, cb, cc, o, z;
    float col_local[DC > 0 ? DC : 1];
    const float* col_in;
    RECON_INLINE Splat(const Inputs& in, int64_t g, int D)
        : ca(in.conics[g * 3]), cb(in.conics[g * 3 + 1]), cc(in.conics[g * 3 + 2]), o(in.opacities[g]),
          z(in.depths[g]), col_in(in.colors + g * D) {
      for (int d = 0; d < DC; ++d) col_local[d] = col_in[d];
    }
    RECON_INLINE const float* colour() const { return DC > 0 ? col_local : col_in; }
  };

  // (Comparisons are written vector against vector: GCC 12 scalarises a 16-lane vector compared with a
  // scalar when the result is used as a mask.)
  // recon::conic_quad for a block, with the row terms hoisted: bdy = 2 b dy, cdy2 = c dy^2. The forward
  // and the backward must both use this one expression, so their hit tests agree bit for bit.
  static RECON_INLINE vf block_quad(float ca, vf bdy, vf cdy2, vf dx) { return (ca * dx + bdy) * dx + cdy2; }

  // Colour channels: a compile-time count (the common D = 3, kept in registers) or, with DC = 0,
  // the runtime f.D.
  template <int DC>
  static RECON_INLINE int channels(const Frame& f) {
    return DC > 0 ? DC : f.D;
  }

  template <int DC>
  static RECON_INLINE void forward_tile(const Frame& f, const Inputs& in, int c, int tile, const int64_t* offsets,
                                        const int32_t* ids, const Outputs& out, std::vector<float>& acc_buf) {
    const int D = channels<DC>(f);
    const int x0 = (tile % f.tiles_x) * kTileSize, y0 = (tile / f.tiles_x) * kTileSize;
    const int tw = std::min(kTileSize, f.W - x0), th = std::min(kTileSize, f.H - y0);
    alignas(64) float T[kTilePixels];
    alignas(64) float acc_z[kTilePixels];
    alignas(64) int32_t last_k[kTilePixels];
    alignas(64) int32_t done[kTilePixels];
    std::fill(T, T + kTilePixels, 1.0f);
    std::fill(acc_z, acc_z + kTilePixels, 0.0f);
    std::fill(last_k, last_k + kTilePixels, -1);
    std::fill(done, done + kTilePixels, 0);
    acc_buf.assign(static_cast<size_t>(kTilePixels) * D, 0.0f);  // [D][kTilePixels], blocked
    float* acc = acc_buf.data();
    // Pixels outside the image (partial tiles) start done, so the early exit can trigger there too.
    if (tw < kTileSize || th < kTileSize)
      for (int ly = 0; ly < kTileSize; ++ly)
        for (int lx = 0; lx < kTileSize; ++lx)
          if (lx >= tw || ly >= th) done[blocked(lx, ly)] = -1;
    int n_live = tw * th;
    const int64_t cN = static_cast<int64_t>(c) * f.N;
    const int64_t begin = offsets[static_cast<int64_t>(c) * f.n_tiles + tile];
    const int64_t end = offsets[static_cast<int64_t>(c) * f.n_tiles + tile + 1];
    const vi ly0 = lane_y();
    const vf zero = S::splat(0.0f);

    for (int64_t k = begin; k < end && n_live > 0; ++k) {
      if (k + kPrefetchAhead < end) prefetch_splat(in, cN + ids[k + kPrefetchAhead], D);
      const int64_t g = cN + ids[k];
      const float mx = in.means2d[g * 2], my = in.means2d[g * 2 + 1];
      Footprint fp;
      if (!footprint(in.bbox + g * 4, x0, y0, f, mx, my, fp)) continue;
      const Splat<DC> sp(in, g, D);
      const float ca = sp.ca, cb = sp.cb, cc = sp.cc, o = sp.o, z = sp.z;
      const float* col = sp.colour();
      const vi kk = S::splat_i(static_cast<int32_t>(k));
      vi stops = S::splat_i(0);
      for (int br = fp.br0; br <= fp.br1; ++br) {
        const vi ly = ly0 + br * kBlockH;
        const vi row_in = (ly >= fp.y_lo) & (ly < fp.y_hi);
        const vf dy = fp.dy0 + static_cast<float>(br * kBlockH);
        const vf cdy2 = cc * dy * dy, bdy = 2.0f * cb * dy;
        for (int bc = fp.bc0; bc <= fp.bc1; ++bc) {
          const int p = (br * kBlocksX + bc) * L;
          const vi dn = S::load_i(done + p);
          const vf dx = fp.dx[bc];
          const vf q = block_quad(ca, bdy, cdy2, dx);
          // lanes inside the box, not yet done and inside the 3-sigma ellipse; a block without any
          // (a corner of the box, about one in eight) changes nothing and is skipped before the exp
          const vi near = row_in & fp.col_in[bc] & (dn == S::splat_i(0)) & (q <= S::splat(kMahalanobisMax));
          if (!S::any(near)) continue;
          const vf a = S::vmin(S::splat(kAlphaMax), o * S::exp_nonpositive(-0.5f * q));
          const vi hit = near & (a >= S::splat(kAlphaMin));
          const vf Tp = S::load(T + p);
          const vf t_next = Tp * (1.0f - a);
          const vi stop = hit & (t_next < S::splat(kTransmittanceMin));
          const vi use = hit & ~stop;
          const vf w = S::select(use, a * Tp, zero);
          S::store(acc_z + p, S::load(acc_z + p) + w * z);
          S::store(T + p, S::select(use, t_next, Tp));
          S::store_i(last_k + p, S::select_i(use, kk, S::load_i(last_k + p)));
          S::store_i(done + p, dn | stop);
          for (int d = 0; d < D; ++d) {
            float* ad = acc + d * kTilePixels + p;
            S::store(ad, S::load(ad) + w * col[d]);
          }
          stops -= stop;  // masks are -1: this counts the lanes that stopped
        }
      }
      if (S::any(stops)) n_live -= S::lane_sum(stops);  // stops are rare: skip the lane count
    }
    for (int ly = 0; ly < th; ++ly)
      for (int lx = 0; lx < tw; ++lx) {
        const int p = blocked(lx, ly);
        const int64_t pix = (static_cast<int64_t>(c) * f.H + y0 + ly) * f.W + x0 + lx;
        for (int d = 0; d < D; ++d) out.rgb[pix * D + d] = acc[d * kTilePixels + p];
        out.alpha[pix] = 1.0f - T[p];
        out.depth[pix] = acc_z[p];
        out.t_final[pix] = T[p];
        out.last[pix] = last_k[p];
      }
  }

  template <int DC>
  static RECON_INLINE void backward_tile(const Frame& f, const Inputs& in, const Upstream& up, int c, int tile,
                                         const int64_t* offsets, const int32_t* ids, float* slots,
                                         std::vector<float>& scratch) {
    const int D = channels<DC>(f);
    const int K = kSlotFixed + D;
    const int x0 = (tile % f.tiles_x) * kTileSize, y0 = (tile / f.tiles_x) * kTileSize;
    const int tw = std::min(kTileSize, f.W - x0), th = std::min(kTileSize, f.H - y0);
    const int64_t begin = offsets[static_cast<int64_t>(c) * f.n_tiles + tile];
    const int64_t end = offsets[static_cast<int64_t>(c) * f.n_tiles + tile + 1];
    alignas(64) float T[kTilePixels];       // transmittance behind the splat being visited
    alignas(64) float rest_z[kTilePixels];  // sum over the splats behind it of w_j z_j
    alignas(64) float g_zp[kTilePixels];    // upstream dL/d depth
    alignas(64) float g_at[kTilePixels];    // upstream dL/d alpha times T_final
    alignas(64) int32_t last_k[kTilePixels];
    std::fill(T, T + kTilePixels, 1.0f);
    std::fill(rest_z, rest_z + kTilePixels, 0.0f);
    std::fill(g_zp, g_zp + kTilePixels, 0.0f);
    std::fill(g_at, g_at + kTilePixels, 0.0f);
    std::fill(last_k, last_k + kTilePixels, -1);  // pixels outside the image take no splat
    // scratch = [upstream dL/d rgb: D][kTilePixels] [rest_c: D][kTilePixels] [dL/d colour: D][L]
    scratch.assign(static_cast<size_t>(2 * kTilePixels + L) * D, 0.0f);
    float* g_c = scratch.data();
    float* rest_c = g_c + static_cast<size_t>(kTilePixels) * D;
    float* g_col_mem = rest_c + static_cast<size_t>(kTilePixels) * D;
    int64_t k_max = -1;
    for (int ly = 0; ly < th; ++ly)
      for (int lx = 0; lx < tw; ++lx) {
        const int p = blocked(lx, ly);
        const int64_t y = y0 + ly, x = x0 + lx;
        const int64_t pix = (static_cast<int64_t>(c) * f.H + y) * f.W + x;
        T[p] = up.t_final[pix];
        g_zp[p] = up.g_depth[c * up.depth_stride[0] + y * up.depth_stride[1] + x * up.depth_stride[2]];
        g_at[p] = up.g_alpha[c * up.alpha_stride[0] + y * up.alpha_stride[1] + x * up.alpha_stride[2]] * up.t_final[pix];
        last_k[p] = up.last[pix];
        const float* g_rgb = up.g_rgb + c * up.rgb_stride[0] + y * up.rgb_stride[1] + x * up.rgb_stride[2];
        for (int d = 0; d < D; ++d) g_c[d * kTilePixels + p] = g_rgb[d * up.rgb_stride[3]];
        k_max = std::max<int64_t>(k_max, last_k[p]);
      }
    const int64_t cN = static_cast<int64_t>(c) * f.N;
    const vf zero = S::splat(0.0f);
    const vi ly0 = lane_y();
    // Entries behind every pixel's last splat get no gradient (slots are not pre-zeroed).
    std::fill(slots + (k_max + 1 > begin ? k_max + 1 : begin) * K, slots + end * K, 0.0f);
    for (int64_t k = k_max; k >= begin; --k) {
      if (k - kPrefetchAhead >= begin) prefetch_splat(in, cN + ids[k - kPrefetchAhead], D);
      const int64_t g = cN + ids[k];
      float* out = slots + k * K;
      const float mx = in.means2d[g * 2], my = in.means2d[g * 2 + 1];
      Footprint fp;
      if (!footprint(in.bbox + g * 4, x0, y0, f, mx, my, fp)) {  // cannot happen: binned by this box
        std::fill(out, out + K, 0.0f);
        continue;
      }
      const Splat<DC> sp(in, g, D);
      const float ca = sp.ca, cb = sp.cb, cc = sp.cc, o = sp.o, z = sp.z;
      const float* col = sp.colour();
      const vi kk = S::splat_i(static_cast<int32_t>(k));
      // dL/dq sums: s_x = sum g_q dx, s_y = sum g_q dy, s_xx = sum g_q dx^2, s_xy = sum g_q dx dy,
      // s_yy = sum g_q dy^2, from which the conic and mean gradients follow once per entry. Inside a
      // block row dy is fixed per lane, so the row keeps r0 = sum g_q, r1 = sum g_q dx, r2 = sum g_q dx^2.
      vf s_x = zero, s_y = zero, s_xx = zero, s_xy = zero, s_yy = zero, g_o = zero, g_z = zero;
      vf g_col[DC > 0 ? DC : 1];  // dL/d colour lanes when DC > 0 (registers); else g_col_mem
      for (int d = 0; d < (DC > 0 ? DC : 1); ++d) g_col[d] = zero;
      if (DC == 0) std::fill(g_col_mem, g_col_mem + L * D, 0.0f);
      for (int br = fp.br0; br <= fp.br1; ++br) {
        const vi ly = ly0 + br * kBlockH;
        const vi row_in = (ly >= fp.y_lo) & (ly < fp.y_hi);
        const vf dy = fp.dy0 + static_cast<float>(br * kBlockH);
        const vf cdy2 = cc * dy * dy, bdy = 2.0f * cb * dy;
        vf r0 = zero, r1 = zero, r2 = zero;
        for (int bc = fp.bc0; bc <= fp.bc1; ++bc) {
          const int p = (br * kBlocksX + bc) * L;
          const vf dx = fp.dx[bc];
          const vf q = block_quad(ca, bdy, cdy2, dx);
          // as in the forward: lanes the splat can touch, else skip the block
          const vi near = row_in & fp.col_in[bc] & (kk <= S::load_i(last_k + p)) & (q <= S::splat(kMahalanobisMax));
          if (!S::any(near)) continue;
          const vf gauss = S::exp_nonpositive(-0.5f * q);
          const vf raw = o * gauss;
          const vf a = S::vmin(S::splat(kAlphaMax), raw);
          const vi hit = near & (a >= S::splat(kAlphaMin));
          const vf inv = S::recip(1.0f - a);
          const vf Tp = S::load(T + p);
          const vf t_i = Tp * inv;  // transmittance in front of this splat
          const vf w = S::select(hit, a * t_i, zero);
          // dL/dalpha_i = sum_ch g (T_i c_i - rest_i / (1 - alpha_i)) + g_A T_final / (1 - alpha_i)
          vf g_a = zero;
          for (int d = 0; d < D; ++d) {
            const float cd = col[d];
            float* rc = rest_c + d * kTilePixels + p;
            const vf gc = S::load(g_c + d * kTilePixels + p);
            const vf r = S::load(rc);
            if (DC > 0) {
              g_col[DC > 0 ? d : 0] += gc * w;
            } else {
              S::store(g_col_mem + d * L, S::load(g_col_mem + d * L) + gc * w);
            }
            g_a += gc * (t_i * cd - r * inv);
            S::store(rc, r + w * cd);
          }
          const vf gz = S::load(g_zp + p), rz = S::load(rest_z + p);
          g_a += gz * (t_i * z - rz * inv) + S::load(g_at + p) * inv;
          g_z += gz * w;
          S::store(rest_z + p, rz + w * z);
          S::store(T + p, S::select(hit, t_i, Tp));
          // alpha clamped at kAlphaMax depends on neither opacity nor position
          const vf coef = S::select(hit & (raw <= S::splat(kAlphaMax)), g_a, zero);
          g_o += coef * gauss;
          const vf g_q = -0.5f * raw * coef;
          const vf g_qdx = g_q * dx;
          r0 += g_q;
          r1 += g_qdx;
          r2 += g_qdx * dx;
        }
        const vf r0dy = r0 * dy;
        s_x += r1;
        s_xx += r2;
        s_y += r0dy;
        s_xy += r1 * dy;
        s_yy += r0dy * dy;
      }
      // q = a dx^2 + 2 b dx dy + c dy^2 with dx = px - mx, dy = py - my
      const float sx = S::sum(s_x), sy = S::sum(s_y);
      out[0] = -2.0f * (ca * sx + cb * sy);
      out[1] = -2.0f * (cb * sx + cc * sy);
      out[2] = S::sum(s_xx);
      out[3] = 2.0f * S::sum(s_xy);
      out[4] = S::sum(s_yy);
      out[5] = S::sum(g_o);
      out[6] = S::sum(g_z);
      for (int d = 0; d < D; ++d)
        out[kSlotFixed + d] = S::sum(DC > 0 ? g_col[DC > 0 ? d : 0] : S::load(g_col_mem + d * L));
    }
  }
};

}  // namespace

// The forward / backward of one tile, as called by composite_forward / composite_backward.
using ForwardTile = void (*)(const Frame&, const Inputs&, int, int, const int64_t*, const int32_t*, const Outputs&,
                             std::vector<float>&);
using BackwardTile = void (*)(const Frame&, const Inputs&, const Upstream&, int, int, const int64_t*,
                              const int32_t*, float*, std::vector<float>&);

}  // namespace cpu
}  // namespace recon

#endif  // RECON_RASTER_CPU_TILE_H_
