"""Tracks of a calibrated rig: depth lifted and moved between the freeze-time frames with the
GIVEN camera poses (no optical flow), for captures whose cameras are too far apart for flow (CMU
Panoptic: ~25 degrees between neighbours). :func:`lift_with_poses` is shared with the exact
tracks of synthetic grids (:mod:`recon.tracking.gt`), which lift ground-truth depth the same way.
"""

from __future__ import annotations

import numpy as np
import torch

from recon.errors import InputError
from recon.grid import FrameGrid
from recon.tracking.geometry import transform, unproject
from recon.tracking.seeds import coverage, depth_test, keyframe_views, seed_pixels
from recon.tracking.types import Tracks


def lift_with_poses(grid: FrameGrid, depth: np.ndarray, keyframes: int, stride: int) -> tuple[list, list, list, list, list]:
    """Seed pixels of the keyframes, lifted by ``depth [V, H, W]`` (z-depth of the freeze-time
    frames, 0 = unknown) and mapped through the grid's camera poses into every freeze-time frame.

    Returns per-keyframe lists of points ``[n, V, 3]``, visibility ``[n, V]`` (depth test against
    each frame's ``depth``), colours ``[n, 3]``, seed views ``[n]`` and flat seed pixel indices ``[n]``.
    Raises InputError when no keyframe pixel has depth."""
    V, T, H, W = grid.shape
    r, c = grid.ref_time, int(grid.central_view)
    depth = np.where(np.isfinite(depth), depth, 0.0)
    K = grid.cameras.K[:, r]
    w2c = grid.cameras.w2c[:, r]
    pts_l, vis_l, col_l, seed_l, flat_l = [], [], [], [], []
    for k in keyframe_views(V, c, keyframes):
        prev = np.concatenate(pts_l)[np.concatenate(vis_l)[:, k], k] if pts_l else np.zeros((0, 3))
        uv, flat = seed_pixels(depth[k], stride, coverage(prev, K[k], H, W, stride))
        if len(uv) == 0:
            continue
        Xk = unproject(uv, depth[k].ravel()[flat], K[k])
        Xw = transform(np.linalg.inv(w2c[k]), Xk)
        pts = np.stack([transform(w2c[j], Xw) for j in range(V)], 1)  # [n, V, 3]
        vis = np.stack([depth_test(pts[:, j], depth[j], K[j]) for j in range(V)], 1)
        vis[:, k] = True
        pts_l.append(pts)
        vis_l.append(vis)
        col_l.append(grid.images[k, r].reshape(-1, 3)[flat] / 255.0)
        seed_l.append(np.full(len(uv), k))
        flat_l.append(flat)
    if not pts_l:
        raise InputError("no keyframe pixel has depth; nothing to track", grid.source, "depth")
    return pts_l, vis_l, col_l, seed_l, flat_l


def rig_tracks(grid: FrameGrid, depth: np.ndarray, keyframes: int = 3, stride: int = 2) -> Tracks:
    """Tracks of a calibrated rig: keyframe pixels lifted by estimated depth ``[V, H, W]`` (e.g. MVS)
    and moved between freeze-time frames with the GIVEN camera poses (no flow), for captures whose
    cameras are too far apart for optical flow (e.g. CMU Panoptic). Such tracks carry no view
    offsets beyond depth noise: right for a real, consistent rig; use ``flow`` for generated grids."""
    if grid.cameras.w2c is None:
        raise InputError("rig tracks need camera poses (cameras.w2c)", grid.source, "w2c")
    pts_l, vis_l, col_l, seed_l, _ = lift_with_poses(grid, np.asarray(depth, np.float64), keyframes, stride)
    return Tracks(
        points=torch.from_numpy(np.concatenate(pts_l)).float(),
        visible=torch.from_numpy(np.concatenate(vis_l)),
        colors=torch.from_numpy(np.concatenate(col_l)).float(),
        seed_view=torch.from_numpy(np.concatenate(seed_l)).long(),
    )
