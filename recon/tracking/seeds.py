"""Keyframes, seed pixels and visibility tests shared by the ``gt`` and ``flow`` trackers.

Tracks are seeded in a few keyframes of the freeze-time video (the views at ``ref_time``, ordered
by view index) on a stride grid; a later keyframe only seeds pixels that the tracks of earlier
keyframes do not already cover there, so the aggregate covers what the central view cannot see
without duplicating what it can.
"""

from __future__ import annotations

import numpy as np

from recon.tracking.geometry import pixel_index, project

DEPTH_TOL = 0.01
"""Relative z tolerance of the depth test (1 %): a point is visible in a frame when its depth
matches the frame's depth map there."""


def keyframe_views(num_views: int, central: int, count: int) -> list[int]:
    """``count`` view indices spread evenly over ``[0, num_views)``, the central one included and
    listed first (it seeds first, so its pixels own the points they see). Order after the
    central view: by distance from it."""
    count = max(1, min(int(count), num_views))
    even = np.linspace(0, num_views - 1, count).round().astype(int).tolist()
    # swap the evenly spaced view closest to the central view for the central view itself
    j = int(np.argmin([abs(v - central) for v in even]))
    even[j] = central
    views = sorted(set(even), key=lambda v: (abs(v - central), v))
    return views


def seed_pixels(depth: np.ndarray, stride: int, blocked: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Seed positions on a ``stride`` grid (pixel centres ``(j + 0.5, i + 0.5)`` for
    ``i, j = stride // 2 + k * stride``) with known depth (> 0) and not ``blocked`` (``bool [H, W]``).

    Returns ``uv [N, 2]`` float64 and the flat pixel indices ``[N]`` (``i * W + j``)."""
    H, W = depth.shape
    s = max(1, int(stride))
    ii, jj = np.meshgrid(np.arange(s // 2, H, s), np.arange(s // 2, W, s), indexing="ij")
    ii, jj = ii.ravel(), jj.ravel()
    ok = depth[ii, jj] > 0
    if blocked is not None:
        ok &= ~blocked[ii, jj]
    ii, jj = ii[ok], jj[ok]
    uv = np.stack([jj + 0.5, ii + 0.5], 1).astype(np.float64)
    return uv, ii * W + jj


def coverage(points: np.ndarray, K: np.ndarray, H: int, W: int, stride: int) -> np.ndarray:
    """``bool [H, W]``: pixels within ``stride`` of the projection of camera points ``[N, 3]``."""
    import cv2

    mask = np.zeros((H, W), np.uint8)
    if len(points):
        uv, _ = project(points, K)
        r, c, inside = pixel_index(uv, H, W)
        mask[r[inside], c[inside]] = 1
    s = max(1, int(stride))
    if s > 1:
        mask = cv2.dilate(mask, np.ones((s, s), np.uint8))
    return mask.astype(bool)


def depth_test(points: np.ndarray, depth: np.ndarray, K: np.ndarray, tol: float = DEPTH_TOL) -> np.ndarray:
    """``bool [N]``: camera points ``[N, 3]`` that project inside the frame onto a surface at their
    own depth (``depth [H, W]`` z-depth, 0 = none), i.e. are not occluded nor off-screen.

    The point's z must lie within ``tol`` (relative) of the depth of the pixel it falls in, or of
    the range spanned by the 2x2 pixel centres around it when those agree within 10 % (so that
    slanted surfaces, where depth changes across one pixel, still pass)."""
    H, W = depth.shape
    uv, z = project(points, K)
    r, c, inside = pixel_index(uv, H, W)
    dn = depth[r, c]
    vis = inside & (z > 0) & (dn > 0) & (np.abs(dn - z) <= tol * z)
    # 2x2 bracket of pixel centres around uv
    uvf = np.where(np.isfinite(uv), uv, 0.0)
    c0 = np.clip(np.floor(uvf[:, 0] - 0.5).astype(np.int64), 0, W - 1)
    r0 = np.clip(np.floor(uvf[:, 1] - 0.5).astype(np.int64), 0, H - 1)
    c1, r1 = np.clip(c0 + 1, 0, W - 1), np.clip(r0 + 1, 0, H - 1)
    q = np.stack([depth[r0, c0], depth[r0, c1], depth[r1, c0], depth[r1, c1]], 1)
    lo, hi = q.min(1), q.max(1)
    smooth = (lo > 0) & (hi <= 1.1 * lo)
    vis |= inside & (z > 0) & smooth & (z >= lo * (1 - tol)) & (z <= hi * (1 + tol))
    return vis
