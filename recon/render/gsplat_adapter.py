"""Optional ``gsplat`` backend: gsplat.rasterization on the same isotropic scene.

For cross-checks and benchmarks only (CUDA tensors; gsplat has no CPU rasterizer). The isotropic
scale is repeated on 3 axes with identity quaternions; ``render_mode="RGB+D"`` gives the same
unnormalised expected depth ``sum_i w_i z_i`` as recon's kernels. gsplat's footprint and culling
rules are close to, not identical with, recon's (common.h), so images agree to within a few
boundary pixels, not bit for bit. Install with the ``gsplat`` extra: ``pip install -e ".[gsplat]"``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from recon.render.constants import LOW_PASS, NEAR_PLANE


def _gsplat():
    try:
        import gsplat
    except ImportError as exc:
        raise RuntimeError(
            "backend='gsplat' needs the optional gsplat package, which is not installed; install the "
            "`gsplat` extra (pip install --no-build-isolation -e \".[gsplat]\") on a CUDA machine, or use "
            "backend='auto'"
        ) from exc
    return gsplat


def render_gsplat(means: Tensor, log_scales: Tensor, opacity_logits: Tensor, colors: Tensor, viewmats: Tensor,
                  Ks: Tensor, width: int, height: int, backend: str = "gsplat") -> tuple[Tensor, Tensor, Tensor, dict[str, Any]]:
    """The render function of the ``gsplat`` backend (:data:`recon.render.backends.BACKENDS`)."""
    return rasterize_gsplat(means, log_scales, opacity_logits, colors, viewmats, Ks, width, height)


def rasterize_gsplat(
    means: Tensor,  # [N, 3] or [C, N, 3]
    log_scales: Tensor,  # [N]
    opacity_logits: Tensor,  # [N]
    colors: Tensor,  # [N, D] or [C, N, D]
    viewmats: Tensor,  # [C, 4, 4] world-to-camera, OpenCV
    Ks: Tensor,  # [C, 3, 3]
    width: int,
    height: int,
) -> tuple[Tensor, Tensor, Tensor, dict[str, Any]]:
    """Render on black with gsplat. Returns rgb [C,H,W,D], alpha [C,H,W,1], depth [C,H,W,1], meta
    with ``means2d`` [C,N,2], ``radii`` [C,N] int32 and ``visible`` [C,N]."""
    gsplat = _gsplat()
    C = viewmats.shape[0]
    N = log_scales.shape[0]
    scales = torch.exp(log_scales)[:, None].expand(N, 3)
    quats = torch.zeros(N, 4, device=means.device, dtype=means.dtype)
    quats[:, 0] = 1.0  # gsplat quaternions are (w, x, y, z)
    opacities = torch.sigmoid(opacity_logits)

    def call(m: Tensor, col: Tensor, vm: Tensor, K: Tensor) -> tuple[Tensor, Tensor, dict]:
        out, alpha, meta = gsplat.rasterization(
            m, quats, scales, opacities, col, vm, K, width, height,
            near_plane=NEAR_PLANE, eps2d=LOW_PASS, packed=False, tile_size=16,
            render_mode="RGB+D", rasterize_mode="classic",
        )
        return out, alpha, meta

    if means.dim() == 2:  # one Gaussian set seen by all cameras: a single call
        out, alpha, meta = call(means, colors, viewmats, Ks)
        means2d, radii = meta["means2d"], meta["radii"]
    else:  # per-camera sets: one call per camera
        parts = [call(means[c], colors[c] if colors.dim() == 3 else colors, viewmats[c : c + 1], Ks[c : c + 1])
                 for c in range(C)]
        out = torch.cat([p[0] for p in parts], dim=0)
        alpha = torch.cat([p[1] for p in parts], dim=0)
        means2d = torch.cat([p[2]["means2d"] for p in parts], dim=0)
        radii = torch.cat([p[2]["radii"] for p in parts], dim=0)
    if radii.dim() == 3:  # gsplat >= 1.5 reports per-axis radii [C, N, 2]
        radii = radii.amax(dim=-1)
    meta_out: dict[str, Any] = {"means2d": means2d, "radii": radii.to(torch.int32), "visible": radii > 0}
    return out[..., :-1], alpha, out[..., -1:], meta_out
