"""Exact ("gt") tracks from a synthetic grid's ground truth.

Freeze-time tracks: a seed pixel of keyframe ``k`` is lifted with the GT depth to ``k``'s camera
frame and mapped through the known cameras into every other freeze-time frame; at one time
instant every surface point has one world position, so this is exact (up to float32 depth).
A point is visible in frame ``j`` when it passes the depth test against frame ``j``'s GT depth.

Time tracks (``time_points``, when the grid's ``meta`` holds the synthetic scene): the seed's
object id and rest-frame coordinates (``extras["object_id"]``, ``extras["surface"]``) give its
exact world trajectory (``Scene.world_points``), expressed in the central view's camera at each
time and depth-tested against that frame's GT depth.

When inconsistency was injected (:mod:`recon.synth.inconsistency`), ground truth describes the
clean scene: these tracks carry no view offsets (dp_i^v = 0 is the right answer for them).
"""

from __future__ import annotations

import numpy as np
import torch

from recon.errors import InputError
from recon.grid import FrameGrid
from recon.tracking.geometry import transform
from recon.tracking.rig import lift_with_poses
from recon.tracking.seeds import depth_test
from recon.tracking.types import Tracks


def gt_tracks(grid: FrameGrid, keyframes: int = 3, stride: int = 2, with_time: bool = True) -> Tracks:
    """Exact tracks of a synthetic grid (see module docstring).

    Needs ``extras["depth"]`` and camera poses; ``time_points`` also need ``extras["object_id"]``,
    ``extras["surface"]`` and the scene in ``grid.meta`` (else they are None).
    Returns :class:`Tracks` with every point's exact position in every freeze-time frame
    (visible or not), float32.
    """
    if "depth" not in grid.extras:
        raise InputError("ground-truth tracks need synthetic depth (extras['depth']); use --tracks flow", grid.source, "extras.depth")
    if grid.cameras.w2c is None:
        raise InputError("ground-truth tracks need camera poses (cameras.w2c)", grid.source, "w2c")
    r = grid.ref_time
    depth = np.asarray(grid.extras["depth"], np.float64)[:, r]  # [V, H, W]
    pts_l, vis_l, col_l, seed_l, flat_l = lift_with_poses(grid, depth, keyframes, stride)
    points = np.concatenate(pts_l)
    seed = np.concatenate(seed_l)
    tp = tv = None
    if with_time:
        tp, tv = _gt_time_tracks(grid, seed, np.concatenate(flat_l))
    return Tracks(
        points=torch.from_numpy(points).float(),
        visible=torch.from_numpy(np.concatenate(vis_l)),
        colors=torch.from_numpy(np.concatenate(col_l)).float(),
        seed_view=torch.from_numpy(seed).long(),
        time_points=tp,
        time_visible=tv,
    )


def _scene(grid: FrameGrid):
    """The synthetic scene behind ``grid`` or None when the grid does not describe one."""
    try:
        from recon.synth import scene_from_meta
    except ImportError:  # recon.synth is part of this package; only absent in a partial checkout
        return None
    try:
        return scene_from_meta(grid.meta)
    except (InputError, KeyError, TypeError, ValueError):
        return None


def _gt_time_tracks(grid: FrameGrid, seed: np.ndarray, flat: np.ndarray) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    if "object_id" not in grid.extras or "surface" not in grid.extras:
        return None, None
    scene = _scene(grid)
    if scene is None:
        return None, None
    V, T, H, W = grid.shape
    r, c = grid.ref_time, int(grid.central_view)
    oid = np.empty(len(seed), np.int64)
    surf = np.empty((len(seed), 3))
    for k in np.unique(seed):
        sel = seed == k
        oid[sel] = grid.extras["object_id"][k, r].reshape(-1)[flat[sel]]
        surf[sel] = grid.extras["surface"][k, r].reshape(-1, 3)[flat[sel]]
    depth = np.asarray(grid.extras["depth"], np.float64)
    tp = np.zeros((len(seed), T, 3))
    tv = np.zeros((len(seed), T), bool)
    for t in range(T):
        Xw = scene.world_points(oid, surf, float(grid.times[t]))
        Xc = transform(grid.cameras.w2c[c, t], Xw)
        tp[:, t] = Xc
        tv[:, t] = np.isfinite(Xc).all(1) & depth_test(np.nan_to_num(Xc), depth[c, t], grid.cameras.K[c, t])
    return torch.from_numpy(tp).float(), torch.from_numpy(tv)

