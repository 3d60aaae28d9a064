"""Benchmark metrics with documented conventions: images, geometry, motion, floaters.

Images are float arrays or tensors ``[H, W, 3]`` in [0, 1]; masks are ``bool [H, W]``. Points
are ``float [N, 3]`` in one coordinate frame (world units of the grid, e.g. scene units for
``recon.synth``). Every function returns plain Python floats (NaN where a metric is undefined,
e.g. an empty mask), so results serialise to JSON directly.

Conventions worth knowing before reading a table:

* PSNR is capped at :data:`PSNR_CAP_DB` (identical images give exactly the cap, not inf), so
  means over cells stay finite.
* SSIM is the 3DGS training SSIM (:func:`recon.fit.losses.ssim`: 11x11 Gaussian window, sigma
  1.5, valid region), so a benchmark number and a training loss mean the same thing.
* Chamfer distance is the *symmetric mean of unsquared* nearest-neighbour distances,
  ``(accuracy + completeness) / 2`` with accuracy = mean over predicted points of the distance to
  the nearest GT point and completeness the reverse.
* Only Gaussians with peak opacity >= :data:`VISIBLE_OPACITY` count as geometry; fainter ones do
  not show in a render.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.spatial import cKDTree

from recon.fit.losses import PSNR_CAP_DB, mse_to_psnr  # noqa: F401  (one PSNR formula; the cap is re-exported)

VISIBLE_OPACITY = 0.05
"""Gaussians with a peak opacity below this are ignored by the geometric metrics."""
FLOATER_DEPTH_MARGIN = 0.05
"""A centre must sit this fraction of the GT depth in front of the surface to count as floating."""
FLOATER_EDGE_PX = 2
"""GT depth is min-filtered over a (2r+1)^2 window, so a splat on a silhouette edge is not
mistaken for a floater because its centre projects onto the background pixel next to it."""
IOU_ALPHA = 0.5
"""A rendered pixel is foreground where its alpha is at least this."""


# --- images ------------------------------------------------------------------------------------

def _as_np(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _check_pair(pred: np.ndarray, gt: np.ndarray) -> None:
    if pred.shape != gt.shape or pred.ndim != 3 or pred.shape[-1] != 3:
        raise ValueError(f"expected two images [H, W, 3] of one shape, got {list(pred.shape)} and {list(gt.shape)}")


def psnr(pred, gt) -> float:
    """PSNR (dB) of ``pred`` vs ``gt``, both ``[H, W, 3]`` in [0, 1] (pred clipped to [0, 1])."""
    p, g = _as_np(pred), _as_np(gt)
    _check_pair(p, g)
    return mse_to_psnr(float(np.mean((np.clip(p, 0.0, 1.0) - g) ** 2)))


def masked_psnr(pred, gt, mask) -> float:
    """PSNR (dB) over the pixels where ``mask [H, W]`` is True (all three channels); NaN for an empty mask."""
    p, g = _as_np(pred), _as_np(gt)
    _check_pair(p, g)
    m = np.asarray(mask, bool)
    if m.shape != p.shape[:2]:
        raise ValueError(f"mask must be [H, W] = {list(p.shape[:2])}, got {list(m.shape)}")
    if not m.any():
        return float("nan")
    return mse_to_psnr(float(np.mean((np.clip(p[m], 0.0, 1.0) - g[m]) ** 2)))


def ssim(pred, gt) -> float:
    """Mean SSIM of two images ``[H, W, 3]`` in [0, 1] (1.0 for identical images)."""
    from recon.fit.losses import ssim as _ssim

    p, g = _as_np(pred), _as_np(gt)
    _check_pair(p, g)
    pt = torch.from_numpy(np.clip(p, 0.0, 1.0)).float()[None]
    gt_ = torch.from_numpy(g).float()[None]
    return float(_ssim(pt, gt_)[0])


# --- LPIPS (only with local weights) -----------------------------------------------------------

LPIPS_BACKBONE_FILE = "alexnet-owt-7be5be79.pth"
"""The torchvision AlexNet weights the ``lpips`` package's default net loads (torch hub cache)."""


def lpips_status() -> tuple[bool, str]:
    """``(available, reason)``: LPIPS needs the ``lpips`` package and its AlexNet backbone weights
    already in the torch hub cache -- nothing is ever downloaded at run time."""
    import importlib.util

    if importlib.util.find_spec("lpips") is None:
        return False, "not available (needs the `lpips` package and the AlexNet backbone weights in the torch hub cache)"
    from pathlib import Path

    ckpt = Path(torch.hub.get_dir()) / "checkpoints" / LPIPS_BACKBONE_FILE
    if not ckpt.is_file():
        return False, f"not available (needs the AlexNet backbone weights at {ckpt}; nothing is downloaded)"
    return True, "lpips (alex)"


class LpipsMetric:
    """LPIPS (AlexNet) of images ``[H, W, 3]`` in [0, 1]; construct only when :func:`lpips_status` says available."""

    def __init__(self) -> None:
        ok, why = lpips_status()
        if not ok:
            raise RuntimeError(f"LPIPS {why}")
        import lpips  # type: ignore[import-not-found]

        self.net = lpips.LPIPS(net="alex", verbose=False).eval()

    @torch.no_grad()
    def __call__(self, pred, gt) -> float:
        p = torch.from_numpy(np.clip(_as_np(pred), 0, 1)).float().permute(2, 0, 1)[None]
        g = torch.from_numpy(_as_np(gt)).float().permute(2, 0, 1)[None]
        return float(self.net(p * 2 - 1, g * 2 - 1).mean())


# --- geometry ----------------------------------------------------------------------------------

def chamfer(pred_points, gt_points) -> dict[str, float]:
    """Nearest-neighbour distances between point sets ``[N, 3]`` and ``[M, 3]`` (same units).

    Returns ``accuracy`` (mean over predicted points of the distance to the nearest GT point;
    floaters raise it), ``completeness`` (the reverse; holes raise it) and ``chamfer`` (their
    mean). All NaN when either set is empty.
    """
    a, b = _as_np(pred_points).reshape(-1, 3), _as_np(gt_points).reshape(-1, 3)
    if len(a) == 0 or len(b) == 0:
        nan = float("nan")
        return {"accuracy": nan, "completeness": nan, "chamfer": nan}
    acc = float(cKDTree(b).query(a, k=1)[0].mean())
    comp = float(cKDTree(a).query(b, k=1)[0].mean())
    return {"accuracy": acc, "completeness": comp, "chamfer": 0.5 * (acc + comp)}


def track_error(pred_tracks, gt_tracks, ref: int = 0) -> float:
    """Mean 3D displacement error of point trajectories ``[N, T, 3]`` (same units, same order).

    Compares motion, not placement: ``|(pred_t - pred_ref) - (gt_t - gt_ref)|`` averaged over
    points and the times ``t != ref`` (placement is scored by :func:`chamfer`). NaN without
    points or with a single time.
    """
    p, g = _as_np(pred_tracks), _as_np(gt_tracks)
    if p.shape != g.shape or p.ndim != 3 or p.shape[-1] != 3:
        raise ValueError(f"expected two arrays [N, T, 3] of one shape, got {list(p.shape)} and {list(g.shape)}")
    N, T, _ = p.shape
    if N == 0 or T < 2:
        return float("nan")
    dp = p - p[:, ref : ref + 1]
    dg = g - g[:, ref : ref + 1]
    err = np.linalg.norm(dp - dg, axis=-1)
    keep = np.arange(T) != ref
    return float(err[:, keep].mean())


def match_to_surface(points, surface_points, max_dist: float) -> tuple[np.ndarray, np.ndarray]:
    """Nearest GT surface sample for each point: ``(index [N] int64, matched [N] bool)``,
    ``matched`` where the distance is at most ``max_dist`` (points further away have no GT trajectory)."""
    a, b = _as_np(points).reshape(-1, 3), _as_np(surface_points).reshape(-1, 3)
    if len(a) == 0 or len(b) == 0:
        return np.zeros(len(a), np.int64), np.zeros(len(a), bool)
    d, i = cKDTree(b).query(a, k=1)
    return i.astype(np.int64), d <= max_dist


def _project(points_w: np.ndarray, K: np.ndarray, w2c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World points ``[N, 3]`` -> pixel coordinates ``[N, 2]`` (pixel centres at +0.5) and z ``[N]``."""
    Xc = points_w @ w2c[:3, :3].T + w2c[:3, 3]
    z = Xc[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = (Xc[:, :2] / z[:, None]) * np.array([K[0, 0], K[1, 1]]) + np.array([K[0, 2], K[1, 2]])
    return uv, z


def free_space(points, depths, Ks, w2cs, margin: float = FLOATER_DEPTH_MARGIN, edge_px: int = FLOATER_EDGE_PX) -> np.ndarray:
    """``bool [N]``: world points ``[N, 3]`` that some GT camera sees through.

    Args:
        depths: ``[C, H, W]`` GT z-depth per camera (0 or inf = no surface: the ray is free).
        Ks: ``[C, 3, 3]`` intrinsics; w2cs: ``[C, 4, 4]`` OpenCV world-to-camera.
        margin: a point is free when ``z < (1 - margin) * depth`` at its pixel.
        edge_px: depth is min-filtered over ``(2 edge_px + 1)^2`` pixels first (silhouette slack).

    For a scene without background (depth 0 off the object) this is exactly "outside the visual
    hull of the GT masks"; with depth it is the depth-carved hull, which also catches splats
    floating in front of a background.
    """
    from scipy.ndimage import minimum_filter

    X = _as_np(points).reshape(-1, 3)
    free = np.zeros(len(X), bool)
    for depth, K, w2c in zip(np.asarray(depths, np.float64), Ks, w2cs):
        H, W = depth.shape
        d = np.where(depth > 0, depth, np.inf)
        if edge_px > 0:
            d = minimum_filter(d, size=2 * edge_px + 1, mode="nearest")
        uv, z = _project(X, np.asarray(K, np.float64), np.asarray(w2c, np.float64))
        ok = (z > 1e-6) & np.isfinite(uv).all(1)
        ok &= (uv[:, 0] >= 0) & (uv[:, 0] < W) & (uv[:, 1] >= 0) & (uv[:, 1] < H)
        idx = np.nonzero(ok)[0]
        px = np.floor(uv[idx]).astype(np.int64)
        free[idx] |= z[idx] < (1.0 - margin) * d[px[:, 1], px[:, 0]]
    return free


def floater_ratio(points, depths, Ks, w2cs, opacities=None) -> float:
    """Fraction of visible Gaussians (peak opacity >= :data:`VISIBLE_OPACITY`; all when
    ``opacities`` is None) whose centres ``[N, 3]`` lie in GT free space (:func:`free_space`)."""
    X = _as_np(points).reshape(-1, 3)
    if opacities is not None:
        X = X[_as_np(opacities).reshape(-1) >= VISIBLE_OPACITY]
    if len(X) == 0:
        return float("nan")
    return float(free_space(X, depths, Ks, w2cs).mean())


def inside_mask_hull(points, masks, Ks, w2cs, dilate_px: int = 2) -> np.ndarray:
    """``bool [N]``: world points ``[N, 3]`` inside the visual hull of foreground ``masks [C, H, W]``:
    they project inside the (dilated) mask of every camera whose image they fall in, and into
    at least one camera (a point no camera sees is not in the hull)."""
    from scipy.ndimage import binary_dilation

    X = _as_np(points).reshape(-1, 3)
    inside = np.ones(len(X), bool)
    seen = np.zeros(len(X), bool)
    for m, K, w2c in zip(np.asarray(masks, bool), Ks, w2cs):
        H, W = m.shape
        if dilate_px > 0:
            m = binary_dilation(m, iterations=dilate_px)
        uv, z = _project(X, np.asarray(K, np.float64), np.asarray(w2c, np.float64))
        ok = (z > 1e-6) & np.isfinite(uv).all(1)
        ok &= (uv[:, 0] >= 0) & (uv[:, 0] < W) & (uv[:, 1] >= 0) & (uv[:, 1] < H)
        idx = np.nonzero(ok)[0]
        px = np.floor(uv[idx]).astype(np.int64)
        inside[idx] &= m[px[:, 1], px[:, 0]]
        seen |= ok
    return inside & seen


def mask_iou(alpha, mask, threshold: float = IOU_ALPHA) -> float:
    """IoU of ``alpha [H, W] >= threshold`` with ``mask [H, W]``; NaN when both are empty."""
    a = _as_np(alpha).reshape(np.asarray(mask).shape) >= threshold
    m = np.asarray(mask, bool)
    union = int((a | m).sum())
    return float("nan") if union == 0 else float((a & m).sum()) / union


def unproject_depth(depth, K, w2c) -> np.ndarray:
    """GT z-depth ``[H, W]`` of one camera -> world points ``[M, 3]`` of the pixels with depth > 0
    (pixel centres at +0.5, OpenCV ``w2c [4, 4]``), in row-major pixel order."""
    depth = np.asarray(depth, np.float64)
    H, W = depth.shape
    v, u = np.nonzero(depth > 0)
    z = depth[v, u]
    K = np.asarray(K, np.float64)
    x = (u + 0.5 - K[0, 2]) / K[0, 0] * z
    y = (v + 0.5 - K[1, 2]) / K[1, 1] * z
    Xc = np.stack([x, y, z], 1)
    w2c = np.asarray(w2c, np.float64)
    return (Xc - w2c[:3, 3]) @ w2c[:3, :3]


def summarize(values) -> dict[str, float]:
    """``{"mean", "std", "n"}`` over the finite values (population std; NaN mean when none)."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], np.float64)
    if v.size == 0:
        return {"mean": float("nan"), "std": float("nan"), "n": 0}
    return {"mean": float(v.mean()), "std": float(v.std()), "n": int(v.size)}
