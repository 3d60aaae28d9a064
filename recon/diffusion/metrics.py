"""Quality of generated grids against procedural ground truth.

Images here are ``float`` numpy arrays ``[V, T, H, W, 3]`` in [0, 1]; ``given`` is ``bool [V, T]``
(True on conditioning frames, which the metrics leave out).
"""

from __future__ import annotations

import numpy as np


def psnr_generated(pred: np.ndarray, truth: np.ndarray, given: np.ndarray) -> float:
    """PSNR (dB, peak 1) of the mean squared error pooled over every pixel of the generated cells."""
    from recon.fit.losses import mse_to_psnr

    sel = ~given
    return mse_to_psnr(float(np.mean((pred[sel] - truth[sel]) ** 2)))


def nearest_given(given: np.ndarray, rule: str = "nearest") -> np.ndarray:
    """For each cell ``(v, t)`` the given cell nearest in grid distance ``|dv| + |dt|`` -> ``int [V, T, 2]``.

    Ties go to the same view (a frame of the same camera at another time), then to the earlier time.
    ``rule="same_view"`` prefers any given frame of the same view (nearest in time) to other views.
    """
    V, T = given.shape
    cells = np.argwhere(given)  # [K, 2]
    if len(cells) == 0:
        raise ValueError("no given cell to copy from")
    out = np.zeros((V, T, 2), dtype=np.int64)
    for v in range(V):
        for t in range(T):
            d = np.abs(cells[:, 0] - v) + np.abs(cells[:, 1] - t)
            key = d * 4 + (cells[:, 0] != v) * 2  # distance first, then same view
            if rule == "same_view":
                key = key + (cells[:, 0] != v) * 4 * (V + T)
            out[v, t] = cells[np.lexsort((cells[:, 1], key))[0]]
    return out


def copy_nearest_baseline(images: np.ndarray, given: np.ndarray, rule: str = "nearest") -> np.ndarray:
    """The trivial generator: every cell copies its nearest given frame (see :func:`nearest_given`).

    ``rule="same_view"`` is the copy-same-view baseline: each cell copies its own camera's nearest
    given frame (for the 4D task, the freeze-time frame of its view), a stronger heuristic when the
    cameras move more between views than the scene moves between times.
    """
    idx = nearest_given(given, rule)
    return images[idx[..., 0], idx[..., 1]]


def _pixel_rays(K: np.ndarray, H: int, W: int) -> np.ndarray:
    """Camera-frame directions with z = 1 through pixel centres, ``[H, W, 3]`` (OpenCV, centre at +0.5)."""
    u, v = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    pix = np.stack([u, v, np.ones_like(u)], -1)
    return pix @ np.linalg.inv(K).T


def correspondences(depth: np.ndarray, K: np.ndarray, w2c: np.ndarray, a: tuple[int, int], b: tuple[int, int], rel_tol: float = 0.03) -> tuple[np.ndarray, np.ndarray]:
    """Pixels of frame ``a`` whose scene point is visible in frame ``b``.

    ``depth [V, T, H, W]`` z-depth (0 = no surface), ``K [V, T, 3, 3]``, ``w2c [V, T, 4, 4]`` (OpenCV).
    A point counts as visible when its depth in ``b`` agrees with ``b``'s depth map at the nearest
    pixel within ``rel_tol`` (relative). Returns flat pixel indices into ``a`` and into ``b`` ``[M]``.
    """
    H, W = depth.shape[2:]
    za = depth[a]
    pts = _pixel_rays(K[a], H, W) * za[..., None]  # [H, W, 3] in camera a
    rel = w2c[b] @ np.linalg.inv(w2c[a])
    pb = pts.reshape(-1, 3) @ rel[:3, :3].T + rel[:3, 3]
    ok = (za.reshape(-1) > 0) & (pb[:, 2] > 1e-6)
    uvw = pb @ K[b].T
    with np.errstate(divide="ignore", invalid="ignore"):
        u, v = uvw[:, 0] / uvw[:, 2], uvw[:, 1] / uvw[:, 2]
    ok &= (u >= 0) & (u < W) & (v >= 0) & (v < H)
    iu = np.clip(np.floor(np.nan_to_num(u)), 0, W - 1).astype(np.int64)
    iv = np.clip(np.floor(np.nan_to_num(v)), 0, H - 1).astype(np.int64)
    zb = depth[b][iv, iu]
    ok &= (zb > 0) & (np.abs(zb - pb[:, 2]) < rel_tol * zb)
    src = np.nonzero(ok)[0]
    return src, (iv * W + iu)[ok]


def multiview_consistency(images: np.ndarray, depth: np.ndarray, K: np.ndarray, w2c: np.ndarray, given: np.ndarray | None = None) -> float:
    """Mean absolute colour difference (in [0, 1] units) between corresponding pixels of two views at
    the same time, over all ordered view pairs where at least one frame is generated.

    Correspondences come from the ground-truth depth and cameras (:func:`correspondences`), so a
    perfectly consistent grid of a Lambertian scene scores near 0 (resampling error only).
    """
    V, T = images.shape[:2]
    given = np.zeros((V, T), bool) if given is None else given
    total, count = 0.0, 0
    for t in range(T):
        for va in range(V):
            for vb in range(V):
                if va == vb or (given[va, t] and given[vb, t]):
                    continue
                src, dst = correspondences(depth, K, w2c, (va, t), (vb, t))
                if len(src) == 0:
                    continue
                ca = images[va, t].reshape(-1, 3)[src]
                cb = images[vb, t].reshape(-1, 3)[dst]
                total += float(np.abs(ca - cb).mean(axis=1).sum())
                count += len(src)
    return total / max(count, 1)
