"""Photometric losses and image metrics for the fitting stages.

Images are float tensors ``[B, H, W, 3]`` (or ``[H, W, 3]``) in [0, 1]. SSIM uses the standard
11x11 Gaussian window (sigma 1.5) with C1 = 0.01^2, C2 = 0.03^2 and valid-region ('same' with
zero padding excluded) averaging, as in 3DGS's training loss.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_WEIGHT = 0.2
"""Weight lambda of the D-SSIM term in ``(1 - lambda) L1 + lambda (1 - SSIM)`` (3DGS's value)."""


def _window(device: torch.device, dtype: torch.dtype) -> Tensor:
    x = torch.arange(SSIM_WINDOW, dtype=dtype, device=device) - (SSIM_WINDOW - 1) / 2
    g = torch.exp(-(x**2) / (2 * SSIM_SIGMA**2))
    g = g / g.sum()
    return g


def _blur(x: Tensor, g: Tensor) -> Tensor:
    """Separable Gaussian blur of ``[B, C, H, W]`` with valid padding."""
    C = x.shape[1]
    kx = g.view(1, 1, 1, -1).expand(C, 1, 1, -1)
    ky = g.view(1, 1, -1, 1).expand(C, 1, -1, 1)
    return F.conv2d(F.conv2d(x, kx, groups=C), ky, groups=C)


def ssim_map(a: Tensor, b: Tensor) -> Tensor:
    """Per-pixel SSIM ``[B, H', W']`` (valid region, channels averaged) of images ``[B, H, W, 3]``.

    The five local moments are blurred in two batched calls: ``[a, a^2, a b]`` (what a gradient
    flows through when ``a`` is a render) and ``[b, b^2]`` (no gradient when ``b`` is a target),
    instead of five -- the same numbers, a third of the convolutions' fixed cost in a fit step."""
    if a.dim() == 3:
        a, b = a[None], b[None]
    x = a.permute(0, 3, 1, 2)
    y = b.permute(0, 3, 1, 2)
    if min(x.shape[-2:]) < SSIM_WINDOW:  # tiny images: shrink to a window that fits
        pad = SSIM_WINDOW - min(x.shape[-2:])
        x = F.pad(x, (pad, pad, pad, pad), mode="replicate")
        y = F.pad(y, (pad, pad, pad, pad), mode="replicate")
    g = _window(x.device, x.dtype)
    C = x.shape[1]
    mx, exx, exy = _blur(torch.cat([x, x * x, x * y], 1), g).split(C, 1)
    my, eyy = _blur(torch.cat([y, y * y], 1), g).split(C, 1)
    sxx = exx - mx * mx
    syy = eyy - my * my
    sxy = exy - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return s.mean(1)


def ssim(a: Tensor, b: Tensor) -> Tensor:
    """Mean SSIM per image ``[B]`` of images ``[B, H, W, 3]``."""
    return ssim_map(a, b).flatten(1).mean(1)


def photometric_loss(pred: Tensor, target: Tensor, ssim_weight: float = SSIM_WEIGHT, weight: Tensor | None = None) -> Tensor:
    """``(1 - w) L1 + w (1 - SSIM)`` averaged over the batch (scalar). ``pred``, ``target`` ``[B, H, W, 3]``.

    ``weight [B, H, W, 1]`` (optional) weights the L1 term per pixel (e.g. 0 outside an image's valid area)."""
    l1 = (pred - target).abs()
    l1 = (l1 * weight).sum() / (weight.sum() * pred.shape[-1]).clamp_min(1e-8) if weight is not None else l1.mean()
    if ssim_weight <= 0:
        return l1
    return (1.0 - ssim_weight) * l1 + ssim_weight * (1.0 - ssim(pred, target).mean())


PSNR_CAP_DB = 100.0
"""PSNR of identical images (MSE 0) and the ceiling of every PSNR: 100 dB is MSE 1e-10, far
below the 8-bit quantisation floor, so the cap only ever bites on (near-)identical images."""


def mse_to_psnr(mse: float) -> float:
    """PSNR in dB for a mean squared error of [0, 1] images, capped at :data:`PSNR_CAP_DB` (NaN
    for a NaN or infinite error). Every PSNR recon reports goes through this function."""
    if not math.isfinite(mse):
        return float("nan")
    if mse <= 10.0 ** (-PSNR_CAP_DB / 10.0):
        return PSNR_CAP_DB
    return float(-10.0 * math.log10(mse))


def psnr(pred: Tensor, target: Tensor) -> float:
    """PSNR in dB of two images ``[H, W, 3]`` in [0, 1], ``pred`` clamped to [0, 1] (:func:`mse_to_psnr`)."""
    return mse_to_psnr(float(((pred.clamp(0, 1) - target) ** 2).mean()))


# --- named loss terms of the fit engine (recon.fit.engine.Term) ------------------------------
def photometric_term(ssim_weight: float = SSIM_WEIGHT):
    """``photometric``: :func:`photometric_loss` of the step's render against its target."""
    from recon.fit.engine import Term

    return Term("photometric", lambda ctx: photometric_loss(ctx.rgb, ctx.target, ssim_weight))


def mean_opacity_term(opacity_logits: Tensor, weight: float):
    """``opacity``: mean peak opacity (pulls Gaussians no view needs towards transparency)."""
    from recon.fit.engine import Term

    return Term("opacity", lambda ctx: torch.sigmoid(opacity_logits).mean(), weight)


def view_offset_term(field, unit: float, weight: float):
    """``view_offset``: mean ``|learned correction of dp_i^v|^2 / unit^2`` (reads ``field`` at each step,
    so it follows density control's replacement of the tensor)."""
    from recon.fit.engine import Term

    def fn(ctx) -> Tensor:
        c = field.view_correction  # [P, V, 3]: one square and one sum (the mean over P x V, written out)
        return c.square().sum() / (unit * unit * max(1, c.numel() // 3))

    return Term("view_offset", fn, weight)


def time_smooth_term(field, splats, times: Tensor, unit: float, weight: float, generator: torch.Generator, start: int = 0):
    """``time_smooth``: mean ``|dp^t(x, t + dt) - dp^t(x, t)|^2 / unit^2`` over up to 1024 random
    dynamic Gaussians at a random time, ``dt`` = half the mean time step."""
    from recon.fit.engine import Term

    dt = 0.5 * float(times.max() - times.min()) / max(1, len(times) - 1)
    lo, span = float(times.min()), float(times.max() - times.min())

    def fn(ctx) -> Tensor:
        dyn = field.dynamic.nonzero().squeeze(1)
        if len(dyn) == 0:
            return splats.means.new_zeros(())
        idx = dyn[torch.randint(0, len(dyn), (min(1024, len(dyn)),), generator=generator).to(dyn.device)]
        t0 = lo + float(torch.rand((), generator=generator)) * span
        x = splats.means[idx]
        d = field.time_offset(x, t0 + dt) - field.time_offset(x, t0)
        return (d / unit).pow(2).sum(-1).mean()

    return Term("time_smooth", fn, weight, start=start)


RIGIDITY_REBUILD = 100
"""Steps between rebuilds of the rigidity term's neighbour graph (sooner when the rows change)."""


def rigidity_term(field, splats, times: Tensor, unit: float, weight: float, generator: torch.Generator, start: int = 0,
                  anchors: int = 1024, neighbours: int = 4, robust: float = 0.0):
    """``rigidity``: neighbouring Gaussians move together, at *any* time of the grid's range, not only
    at the training times (a monocular capture's test frames lie in gaps between them, where the
    photometric loss says nothing and the MLP's per-point offsets tore a rigid ball apart; measured
    in BENCHMARKS.md).

    At a time drawn uniformly from ``[times.min(), times.max()]``, for up to ``anchors`` random
    dynamic Gaussians and their ``neighbours`` nearest dynamic Gaussians in canonical space: the
    weighted mean of ``rho(|dp^t_a - dp^t_b|^2 / unit^2)``, weights
    ``w = exp(-|x_a - x_b|^2 / (2 (2 unit)^2))`` (distant "neighbours", e.g. across a gap between two
    objects, count less). ``rho(d) = d`` (``robust`` 0) or Geman-McClure ``d / (1 + d / robust^2)``,
    which costs at most ``robust^2`` per pair: small tearing (a lumpy ball) is pulled together, a
    large difference is left alone -- two objects side by side that move apart, or a canonical
    smear (an object that moved during the reference window) that the MLP gathers differently at
    each time; with the quadratic, weight 0.01 already kept the test scene's moving ball a smear
    (BENCHMARKS.md). Local rotation costs ~ (angle x spacing)^2, so a rolling or bending object is
    barely held back. The neighbours are found among the current Gaussians (k-d tree, rebuilt every
    :data:`RIGIDITY_REBUILD` steps and whenever density control changes the rows).

    ``times``: the grid's times (its range is sampled); ``unit``: the length unit (median splat
    scale); ``anchors`` / ``neighbours``: the sample per step. Returns an engine
    :class:`~recon.fit.engine.Term` active from step ``start``."""
    from recon.fit.engine import Term

    lo, span = float(times.min()), float(times.max() - times.min())
    sigma2 = 2.0 * (2.0 * unit) ** 2
    cache: dict[str, Any] = {}

    def graph(x: Tensor, dyn: Tensor, step: int) -> Tensor:
        """``[D, k]`` rows of each dynamic Gaussian's nearest dynamic neighbours (a k-d tree, rebuilt
        when the rows change and every :data:`RIGIDITY_REBUILD` steps as the positions move)."""
        key = (x.data_ptr(), x.shape[0], len(dyn))
        if cache.get("key") != key or step - cache.get("step", -10**9) >= RIGIDITY_REBUILD:
            from scipy.spatial import cKDTree

            pts = x.detach()[dyn].cpu().double().numpy()
            _, nn = cKDTree(pts).query(pts, k=neighbours + 1)
            cache.update(key=key, step=step, nbr=dyn[torch.from_numpy(nn[:, 1:]).to(dyn.device)])
        return cache["nbr"]

    def fn(ctx) -> Tensor:
        dyn = field.dynamic.nonzero().squeeze(1)
        if len(dyn) <= neighbours:
            return splats.means.sum() * 0.0
        x = splats.means
        nbr = graph(x, dyn, int(getattr(ctx, "step", 0)))
        pick = torch.randint(0, len(dyn), (min(anchors, len(dyn)),), generator=generator).to(dyn.device)
        a, b = dyn[pick], nbr[pick]  # [A], [A, k]
        with torch.no_grad():
            w = torch.exp(-(x[a][:, None] - x[b]).pow(2).sum(-1) / sigma2)
        t0 = lo + float(torch.rand((), generator=generator)) * span
        uniq, inv = torch.unique(torch.cat([a, b.reshape(-1)]), return_inverse=True)
        off = field.motion_rows(x[uniq], t0, uniq)
        rel = off[inv[: len(a)]][:, None] - off[inv[len(a):]].reshape(len(a), neighbours, 3)  # [A, k, 3]
        diff = (rel / unit).pow(2).sum(-1)
        if robust > 0:  # Geman-McClure: a large difference (a motion boundary) costs at most robust^2
            diff = diff / (1.0 + diff / robust**2)
        return (w * diff).sum() / w.sum().clamp_min(1e-12)

    return Term("rigidity", fn, weight, start=start)


def silhouette_term(scene, distance: Tensor, weight: float, start: int = 0, subset: Callable[[], Tensor] | None = None):
    """``silhouette``: every Gaussian that a training image sees should project onto its occupied
    (non-background) pixels -- a visual-hull constraint with long-range pull, for grids on a
    uniform background (see :func:`recon.fit.monocular.background_distance`) or, with
    ``subset``, for the dynamic Gaussians on the foreground masks of a real capture
    (:func:`recon.fit.deform.mask_distance`).

    ``distance [V, T, H, W]`` (CPU float): per training cell, each pixel's distance in pixels to
    the nearest occupied pixel (0 on them). The term is the mean, over the Gaussians in front of
    each rendered camera and inside its image, of that distance at their projected centres
    (bilinear) divided by the image width; only positions get its gradient (the centres are
    projected here in torch from the cell's deformed positions, so density control's view-space
    statistics are not affected; the render's ``meta["cell_means"]`` is reused when the context has
    it; when that render left out the splats not alive at its time, :meth:`DeformableScene.alive_rows`,
    the term applies to the alive ones). ``subset() -> bool [N]``, when given, picks the Gaussians the
    term applies to (evaluated every step: density control changes the rows)."""
    from recon.fit.engine import Term

    V, T, H, W = distance.shape

    def fn(ctx) -> Tensor:
        rows = None if subset is None else subset()
        if rows is not None and not bool(rows.any()):
            return scene.splats.means.sum() * 0.0
        rendered = getattr(ctx, "meta", None) or {}
        # the render's positions (the temporal MLP runs once per step); a bare context computes them
        means = rendered["cell_means"] if "cell_means" in rendered else scene.cell_means(ctx.batch, view_offsets=True)
        if "cell_means" in rendered and "rows" in rendered:  # the render left the splats not alive then out
            if rows is not None:
                means = means[:, rows.to(means.device)[rendered["rows"]]]
        elif rows is not None:
            means = means[:, rows.to(means.device)]  # [C, R, 3]
        dev = means.device
        iv = torch.tensor([i for i, _ in ctx.batch])
        it = torch.tensor([j for _, j in ctx.batch])
        A = scene.poses[iv, it].to(dev)
        K = scene.Ks[iv, it].to(dev)
        Xc = means @ A[:, :3, :3].transpose(1, 2) + A[:, None, :3, 3]
        z = Xc[..., 2]
        ok = z > 1e-6
        zs = z.clamp_min(1e-6)
        u = K[:, None, 0, 0] * Xc[..., 0] / zs + K[:, None, 0, 2]
        v = K[:, None, 1, 1] * Xc[..., 1] / zs + K[:, None, 1, 2]
        ok = ok & (u >= 0) & (u <= W - 1) & (v >= 0) & (v <= H - 1)
        grid = torch.stack([2.0 * u / max(W - 1, 1) - 1.0, 2.0 * v / max(H - 1, 1) - 1.0], -1)[:, :, None]  # [C, N, 1, 2]
        d = distance[iv, it].to(dev)[:, None]  # [C, 1, H, W]
        s = F.grid_sample(d, grid, mode="bilinear", align_corners=True)[:, 0, :, 0]  # [C, N]
        n = ok.sum().clamp_min(1)
        return (s * ok).sum() / n / W

    return Term("silhouette", fn, weight, start=start)


def coverage_term(occupied: Tensor, weight: float, start: int = 0):
    """``coverage``: mean ``|alpha - occupied|`` of the rendered opacity against each training
    image's occupied (non-background) pixels, ``occupied [V, T, H, W]`` (bool, CPU). On a uniform
    background this is the silhouette of everything in the image (objects and shadows): splats
    that lost their object cannot fade into the background colour to lower the photometric loss --
    they keep a reason to follow it -- and the colour does not decide where the splats are."""
    from recon.fit.engine import Term

    def fn(ctx) -> Tensor:
        iv = torch.tensor([i for i, _ in ctx.batch])
        it = torch.tensor([j for _, j in ctx.batch])
        alpha = ctx.meta["alpha"][..., 0]
        return (alpha - occupied[iv, it].to(alpha.device, alpha.dtype)).abs().mean()

    return Term("coverage", fn, weight, start=start)
