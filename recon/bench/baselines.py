"""In-house initialisations for the ablations, delivered as tracks the pipeline reads.

The pipeline's canonical stage starts from :class:`~recon.tracking.types.Tracks` (``points
[P, V, 3]`` in each freeze-time frame's camera coordinates). Any initialisation can therefore be
plugged in without touching the pipeline: build a point set in canonical coordinates, place it
*rigidly* in every freeze-time frame with the reference poses, and hand the tracks over as a
``recon-tracks`` file (``tracks="file"``). Rigid placement means zero view offsets dp_i^v --
which is exactly what a feed-forward reconstruction gives: one consistent point set, no
per-view correction.

* :func:`pointmap_tracks` -- ``pointmap-init``: every freeze-time frame's depth unprojected and
  concatenated (what Dust3R-style methods output), no correspondences across views.
* :func:`random_tracks` -- ``no-tracking``: the same number of points drawn uniformly inside the
  scene bounds (robust box of the pointmap), grey colours.
* :func:`tracks_from_canonical` -- the shared helper (also used by the Dust3R / Splatt3R adapters).

Poses (``[V, 4, 4]`` canonical -> camera of freeze-time frame i) come from the grid's cameras
(``recon.fit.canonical.cell_poses``) or, for a grid without cameras, from
:func:`recon.tracking.estimate_cameras` -- the same estimate the pipeline would make.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from recon.errors import InputError
from recon.grid import FrameGrid
from recon.tracking.types import Tracks


def reference_poses(grid: FrameGrid) -> np.ndarray:
    """``[V, 4, 4]`` float64 canonical -> camera of freeze-time frame (i, ref_time), OpenCV.

    Canonical = the central view's camera frame at ``ref_time``. From the grid's cameras when
    known, else estimated from features (``recon.tracking.estimate_cameras``)."""
    r = grid.ref_time
    w2c = grid.cameras.w2c
    if w2c is None:
        from recon.tracking import estimate_cameras

        return np.asarray(estimate_cameras(grid).w2c, np.float64)  # [V, 4, 4], central = identity
    return w2c[:, r] @ grid.canonical_to_world()


def tracks_from_canonical(points: np.ndarray, colors: np.ndarray, seed_view: np.ndarray, poses: np.ndarray) -> Tracks:
    """Rigid tracks from canonical points.

    Args:
        points: ``[P, 3]`` canonical coordinates (central camera at ref_time, OpenCV).
        colors: ``[P, 3]`` in [0, 1].
        seed_view: ``[P]`` the view each point came from; the point is marked visible there only
            (no cross-view correspondence is claimed).
        poses: ``[V, 4, 4]`` canonical -> freeze-time camera i.

    Returns :class:`Tracks` with ``points [P, V, 3]`` = ``poses[i] @ points`` (so view offsets are 0).
    """
    X = np.asarray(points, np.float64).reshape(-1, 3)
    P, V = len(X), poses.shape[0]
    seed_view = np.asarray(seed_view, np.int64).reshape(P)
    if (seed_view < 0).any() or (seed_view >= V).any():
        raise ValueError(f"seed_view must be in [0, {V})")
    frames = np.einsum("vij,pj->pvi", poses[:, :3, :3], X) + poses[None, :, :3, 3]
    visible = np.zeros((P, V), bool)
    visible[np.arange(P), seed_view] = True
    return Tracks(
        points=torch.from_numpy(frames.astype(np.float32)),
        visible=torch.from_numpy(visible),
        colors=torch.from_numpy(np.clip(np.asarray(colors, np.float32).reshape(P, 3), 0.0, 1.0)),
        seed_view=torch.from_numpy(seed_view),
    )


def unproject(depth: np.ndarray, K: np.ndarray, stride: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """z-depth ``[H, W]`` -> camera points ``[M, 3]`` (OpenCV, pixel centres at +0.5) of the
    pixels on a ``stride`` lattice with depth > 0, and their ``(row, col)`` indices ``[M, 2]``."""
    H, W = depth.shape
    rows, cols = np.meshgrid(np.arange(0, H, stride), np.arange(0, W, stride), indexing="ij")
    rows, cols = rows.ravel(), cols.ravel()
    z = np.asarray(depth, np.float64)[rows, cols]
    ok = np.isfinite(z) & (z > 0)
    rows, cols, z = rows[ok], cols[ok], z[ok]
    x = (cols + 0.5 - K[0, 2]) / K[0, 0] * z
    y = (rows + 0.5 - K[1, 2]) / K[1, 1] * z
    return np.stack([x, y, z], 1), np.stack([rows, cols], 1)


def freeze_time_depth(grid: FrameGrid, provider: str = "auto", device: torch.device = torch.device("cpu"),
                      mvs_range: str = "auto") -> np.ndarray:
    """``[V, H, W]`` z-depth of the freeze-time frames from the tracking stage's depth providers
    (``mvs_range``: how MVS bounds its sweep, ``auto`` or ``rig``; see :mod:`recon.tracking.mvs`)."""
    from recon.tracking import estimate_depth

    cells = [(v, grid.ref_time) for v in range(grid.num_views)]
    return estimate_depth(grid, cells, provider=provider, device=device, mvs_range=mvs_range).cpu().numpy()


def pointmap_stride(grid: FrameGrid, keyframes: int, stride: int) -> int:
    """A stride for all V views that gives about as many points as tracking seeds ``keyframes``
    views at ``stride`` (so the ablation compares initialisations, not point budgets)."""
    return max(1, int(round(stride * math.sqrt(grid.num_views / max(1, keyframes)))))


def pointmap_tracks(grid: FrameGrid, depth: np.ndarray, stride: int) -> Tracks:
    """``pointmap-init``: unproject each freeze-time frame's ``depth [V, H, W]`` (stride lattice),
    map to canonical coordinates with the reference poses and concatenate; colours from the frame."""
    poses = reference_poses(grid)
    r = grid.ref_time
    pts, cols, seeds = [], [], []
    for v in range(grid.num_views):
        Xc, rc = unproject(depth[v], grid.cameras.K[v, r], stride)
        A = poses[v]
        pts.append((Xc - A[:3, 3]) @ A[:3, :3])  # inverse rigid: camera v -> canonical
        cols.append(grid.images[v, r][rc[:, 0], rc[:, 1]].astype(np.float32) / 255.0)
        seeds.append(np.full(len(Xc), v, np.int64))
    P = sum(len(p) for p in pts)
    if P == 0:
        raise InputError("no valid depth in the freeze-time frames; nothing to unproject", grid.source, "depth")
    return tracks_from_canonical(np.concatenate(pts), np.concatenate(cols), np.concatenate(seeds), poses)


def scene_bounds(points: np.ndarray, lo_pct: float = 1.0, hi_pct: float = 99.0) -> tuple[np.ndarray, np.ndarray]:
    """Robust axis-aligned box ``(lo [3], hi [3])`` of points ``[N, 3]`` (percentiles per axis)."""
    if len(points) == 0:
        raise ValueError("no points to bound")
    return np.percentile(points, lo_pct, axis=0), np.percentile(points, hi_pct, axis=0)


def random_tracks(grid: FrameGrid, depth: np.ndarray, count: int, seed: int) -> Tracks:
    """``no-tracking``: ``count`` points uniform in the robust box of the pointmap of ``depth
    [V, H, W]`` (canonical coordinates), grey (0.5), seeded in the central view."""
    poses = reference_poses(grid)
    base = pointmap_tracks(grid, depth, stride=4)
    c = int(grid.central_view)
    canon = base.points[:, c].double().numpy()
    A = poses[c]
    canon = (canon - A[:3, 3]) @ A[:3, :3]
    lo, hi = scene_bounds(canon)
    rng = np.random.default_rng(seed)
    X = lo + rng.random((int(count), 3)) * (hi - lo)
    return tracks_from_canonical(X, np.full((int(count), 3), 0.5, np.float32), np.full(int(count), c), poses)
