"""``rasterize``: the one rasterizer API for isotropic Gaussians (all backends)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from recon.render.backends import KernelComposite, ProjectCPU, renderer, select_backend
from recon.render.projection import Projected, project
from recon.render.reference import composite_reference


def rasterize(
    means: Tensor,  # [N, 3] or [C, N, 3] world-space centres
    log_scales: Tensor,  # [N] log of the isotropic standard deviation
    opacity_logits: Tensor,  # [N] logit of the peak opacity
    colors: Tensor,  # [N, D] or [C, N, D] (D = 3 usually; any D >= 1)
    viewmats: Tensor,  # [C, 4, 4] world-to-camera, OpenCV (x right, y down, z forward), rigid
    Ks: Tensor,  # [C, 3, 3] pinhole intrinsics in pixels, zero skew
    width: int,
    height: int,
    background: Tensor | None = None,  # None (black), [D] or [C, D]
    backend: str = "auto",  # auto | torch | cpu | cuda | gsplat
) -> tuple[Tensor, Tensor, Tensor, dict[str, Any]]:
    """Render N isotropic Gaussians into C cameras, differentiably.

    Returns ``rgb [C, H, W, D]``, ``alpha [C, H, W, 1]`` (1 - final transmittance),
    ``depth [C, H, W, 1]`` -- the expected depth ``sum_i w_i z_i`` with ``w_i = alpha_i T_i``,
    NOT normalised by alpha (divide by ``alpha`` where it is > 0 for a surface depth) -- and
    ``meta``:

    * ``means2d`` [C, N, 2]: projected centres in pixels; call ``.retain_grad()`` on it before
      ``backward()`` to get screen-space gradients for densification statistics;
    * ``radii`` [C, N] int32: footprint half-extent in pixels, 0 where culled;
    * ``visible`` [C, N] bool and ``visible_count`` [N] int64 (cameras seeing each Gaussian);
    * ``depths`` [C, N] camera-space z, ``conics`` [C, N, 3], ``opacities`` [C, N];
    * ``backend``: the backend that ran (after ``auto`` resolution).

    Gradients flow to means, log_scales, opacity_logits, colors and background (not to
    viewmats / Ks). Per-camera Gaussian sets are supported: pass ``means [C, N, 3]`` (e.g. each
    grid cell's deformed positions) and/or ``colors [C, N, D]``. Identity ``viewmats`` render in
    each camera's own coordinates. Bad input raises ValueError naming the argument.
    """
    C, N, D = _validate(means, log_scales, opacity_logits, colors, viewmats, Ks, width, height, background)
    chosen = select_backend(backend, means.device, means.dtype)
    rgb, alpha, depth, meta = renderer(chosen)(means, log_scales, opacity_logits, colors, viewmats, Ks, width, height,
                                               chosen)
    meta["visible_count"] = meta["visible"].sum(dim=0)
    meta["backend"] = chosen
    if background is not None:
        bg = background.expand(C, D) if background.dim() == 1 else background
        rgb = rgb + (1.0 - alpha) * bg[:, None, None, :]
    return rgb, alpha, depth, meta


def render_projected(means: Tensor, log_scales: Tensor, opacity_logits: Tensor, colors: Tensor, viewmats: Tensor,
                     Ks: Tensor, width: int, height: int, backend: str) -> tuple[Tensor, Tensor, Tensor, dict[str, Any]]:
    """The render function of the ``torch``, ``cpu`` and ``cuda`` backends (arguments as
    :func:`rasterize` takes them, validated): EWA projection (PyTorch; fused C++ for ``cpu``), then
    front-to-back compositing (the PyTorch twin for ``torch``, recon._C's kernels otherwise)."""
    C, N, D = viewmats.shape[0], log_scales.shape[0], colors.shape[-1]
    means_c = means.expand(C, N, 3) if means.dim() == 2 else means
    # (one camera: a view whose backward is a view too, not the reduction an expand's backward runs)
    colors_c = (colors.unsqueeze(0) if C == 1 else colors.expand(C, N, D)) if colors.dim() == 2 else colors
    if backend == "cpu":
        m2d, con, opac, z, box, radii, order, visible = ProjectCPU.apply(means, log_scales, opacity_logits, viewmats,
                                                                          Ks, width, height)
        proj = Projected(m2d, con, opac, z, box, radii, visible, order)
    else:
        proj = project(means_c, log_scales, opacity_logits, viewmats, Ks, width, height)
    args = (proj.means2d, proj.conics, proj.opacities, colors_c, proj.depths, proj.bbox, proj.order, width, height)
    rgb, alpha, depth = composite_reference(*args) if backend == "torch" else KernelComposite.apply(*args)
    meta = {"means2d": proj.means2d, "radii": proj.radii, "visible": proj.visible, "depths": proj.depths,
            "conics": proj.conics, "opacities": proj.opacities}
    return rgb, alpha, depth, meta


@torch.no_grad()  # the checks build no autograd graph (they run on every render)
def _validate(
    means: Tensor,
    log_scales: Tensor,
    opacity_logits: Tensor,
    colors: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    background: Tensor | None,
) -> tuple[int, int, int]:
    """Check shapes, dtypes, devices, finiteness and camera sanity; return (C, N, D)."""
    named = {"means": means, "log_scales": log_scales, "opacity_logits": opacity_logits, "colors": colors,
             "viewmats": viewmats, "Ks": Ks}
    if background is not None:
        named["background"] = background
    for name, t in named.items():
        if not isinstance(t, Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype not in (torch.float32, torch.float64):
            raise ValueError(f"{name} must be float32 or float64, got {t.dtype}")
    for name, t in named.items():
        if t.dtype != means.dtype or t.device != means.device:
            raise ValueError(f"{name} is {t.dtype} on {t.device} but means is {means.dtype} on {means.device}; "
                             "all inputs must share one dtype and device")
    for name, v in (("width", width), ("height", height)):
        if isinstance(v, bool) or not isinstance(v, int) or not 0 < v <= 32768:
            raise ValueError(f"{name} must be an int in [1, 32768], got {v!r}")

    if viewmats.dim() != 3 or viewmats.shape[1:] != (4, 4) or viewmats.shape[0] < 1:
        raise ValueError(f"viewmats must have shape [C, 4, 4] with C >= 1, got {list(viewmats.shape)}")
    C = viewmats.shape[0]
    if Ks.shape != (C, 3, 3):
        raise ValueError(f"Ks must have shape [C, 3, 3] = [{C}, 3, 3] (C from viewmats), got {list(Ks.shape)}")
    if means.dim() not in (2, 3) or means.shape[-1] != 3 or (means.dim() == 3 and means.shape[0] != C):
        raise ValueError(f"means must have shape [N, 3] or [C, N, 3] with C = {C}, got {list(means.shape)}")
    N = means.shape[-2]
    for name, t in (("log_scales", log_scales), ("opacity_logits", opacity_logits)):
        if t.shape != (N,):
            raise ValueError(f"{name} must have shape [N] = [{N}] (N from means), got {list(t.shape)}")
    if colors.dim() not in (2, 3) or colors.shape[-2] != N or colors.shape[-1] < 1 or (
        colors.dim() == 3 and colors.shape[0] != C
    ):
        raise ValueError(f"colors must have shape [N, D] or [C, N, D] with N = {N}, C = {C}, D >= 1, "
                         f"got {list(colors.shape)}")
    D = colors.shape[-1]
    if background is not None and background.shape not in ((D,), (C, D)):
        raise ValueError(f"background must have shape [D] = [{D}] or [C, D] = [{C}, {D}], got {list(background.shape)}")
    # A NaN or Inf element makes a sum NaN or Inf, so one finite sum of the sums proves every element
    # finite in one cheap pass; only a non-finite total (or an overflow of huge finite values) needs the
    # per-tensor check that names the argument.
    if not bool(torch.isfinite(torch.stack([t.sum() for t in named.values()]).sum())):
        for name, t in named.items():
            if not bool(torch.isfinite(t).all()):
                raise ValueError(f"{name} contains NaN or Inf values")

    # Cameras: one combined test (one sync); the per-camera message only when it fails.
    eye = torch.eye(3, dtype=viewmats.dtype, device=viewmats.device)
    R = viewmats[:, :3, :3]
    bottom = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=viewmats.dtype, device=viewmats.device)
    bad_view = ((R @ R.transpose(1, 2) - eye).abs().amax(dim=(1, 2)) > 1e-3) | (
        (viewmats[:, 3] - bottom).abs().amax(dim=1) > 1e-6
    )
    fx, fy = Ks[:, 0, 0], Ks[:, 1, 1]
    bad_K = (fx <= 0) | (fy <= 0) | (Ks[:, 0, 1].abs() > 1e-6 * fx.abs()) | (Ks[:, 1, 0] != 0) | (
        (Ks[:, 2] - torch.tensor([0.0, 0.0, 1.0], dtype=Ks.dtype, device=Ks.device)).abs().amax(dim=1) > 1e-6
    )
    if bool((bad_view | bad_K).any()):
        if bool(bad_view.any()):
            c = int(bad_view.nonzero()[0, 0])
            raise ValueError(f"viewmats[{c}] must be a rigid world-to-camera [R | t; 0 0 0 1] with orthonormal R, "
                             f"got {viewmats[c].tolist()}")
        c = int(bad_K.nonzero()[0, 0])
        raise ValueError(f"Ks[{c}] must be [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] with fx, fy > 0 (no skew, "
                         f"not singular), got {Ks[c].tolist()}")
    return C, N, D
