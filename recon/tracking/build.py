"""``build_tracks``: the tracking stage's one entry point for the pipeline."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from recon.errors import InputError
from recon.grid import FrameGrid
from recon.tracking.types import Tracks

def resolve_track_source(grid: FrameGrid, tracks: str) -> str:
    """``auto`` -> ``gt`` when the grid carries synthetic surfaces and depth, else ``flow``."""
    if tracks not in track_source_names():
        raise InputError(f"unknown track source {tracks!r}; expected one of {', '.join(track_source_names())}",
                         field="tracks")
    if tracks == "auto":
        has_gt = all(k in grid.extras for k in ("depth", "surface", "object_id")) and grid.cameras.w2c is not None
        return "gt" if has_gt else "flow"
    return tracks


WIDE_BASELINE_DEG = 15.0
"""A calibrated rig whose cameras are, in the median, more than this angle (seen from the point the
cameras look at) from their nearest neighbour is *wide-baseline*: optical flow cannot relate its
neighbouring views, and ``auto`` tracks are ``rig`` tracks (e.g. CMU Panoptic: ~25 degrees)."""
RIG_KEYFRAMES = 8
"""``auto`` rig tracks seed from this many keyframes (each view sees a part of the scene the
others do not; flow tracks keep the caller's count)."""
RIG_STRIDE = 1
"""``auto`` rig tracks seed every pixel with depth (seed stride at most this): MVS finds depth on
~15 % of a real rig's pixels (textureless walls), and the canonical splats are what the fit cannot
invent there -- measured on CMU Panoptic (BENCHMARKS.md): stride 2 -> 1 took the canonical splats
from 3.7k to 16k after pruning and the test-camera mean from 25.8 to 26.3 dB."""


def neighbour_angle(w2c: np.ndarray) -> float:
    """Median over cameras ``w2c [V, 4, 4]`` of the angle (degrees) to the nearest other camera,
    seen from the rig's focus (the point nearest to every optical axis, least squares)."""
    R, t = w2c[:, :3, :3], w2c[:, :3, 3]
    c = -np.einsum("vji,vj->vi", R, t)
    d = R[:, 2, :]  # optical axes in world coordinates
    from recon.render.paths import axes_focus

    focus = axes_focus(c, d)[0]
    u = c - focus
    u /= np.maximum(np.linalg.norm(u, axis=1, keepdims=True), 1e-12)
    cos = np.clip(u @ u.T, -1.0, 1.0)
    np.fill_diagonal(cos, -1.0)
    return float(np.median(np.degrees(np.arccos(cos.max(1)))))


def is_wide_baseline(grid: FrameGrid) -> bool:
    """Calibrated rig with >= 3 views whose :func:`neighbour_angle` exceeds :data:`WIDE_BASELINE_DEG`."""
    if grid.cameras.w2c is None or grid.num_views < 3:
        return False
    return neighbour_angle(np.asarray(grid.cameras.w2c[:, grid.ref_time], np.float64)) > WIDE_BASELINE_DEG


def mvs_range_for(source: str, num_views: int) -> str:
    """How MVS bounds its depth sweep for tracks of ``source``: rig tracks are for calibrated
    wide-baseline rigs, where flow between neighbouring views finds only spurious matches, so MVS
    takes its range from the rig geometry (``rig``, with >= 3 views), not from triangulated flow."""
    return "rig" if source == "rig" and num_views >= 3 else "auto"


def check_trackable(grid: FrameGrid) -> None:
    """Raise :class:`InputError` for grids the tracker cannot work on: fewer than 2 views, or
    freeze-time frames without any image content (all one colour, e.g. all black)."""
    V = grid.num_views
    if V < 2:
        raise InputError(f"grid has {V} view; too small to track (the freeze-time video needs at least 2 views)", grid.source, "images")
    frames = grid.images[:, grid.ref_time]
    flat = [int(v) for v in range(V) if int(frames[v].max()) - int(frames[v].min()) == 0]
    if flat:
        names = ", ".join(grid.view_names[v] if grid.view_names else str(v) for v in flat)
        raise InputError(
            f"freeze-time frame(s) of view(s) {names} are a single flat colour (e.g. all black); nothing to track",
            grid.source,
            "images",
        )


def build_tracks(
    grid: FrameGrid,
    depth: str = "auto",
    tracks: str = "auto",
    tracks_path: str | os.PathLike | None = None,
    depth_path: str | os.PathLike | None = None,
    keyframes: int = 3,
    stride: int = 2,
    device: torch.device = torch.device("cpu"),
    with_time: bool = False,
) -> Tracks:
    """Dense 3D tracks across the freeze-time frames (views at ``grid.ref_time``).

    Args:
        grid: the frame grid (at least 2 views).
        depth: depth provider for ``flow`` and ``rig`` tracks: ``auto`` (``gt`` when ``extras["depth"]``
            exists, else ``mvs``) or a name of :data:`recon.tracking.depth.DEPTH_PROVIDERS`.
        tracks: ``auto`` (``gt`` when synthetic surfaces exist, else ``flow``; on a wide-baseline
            calibrated rig (:func:`is_wide_baseline`) ``rig`` with at least :data:`RIG_KEYFRAMES`
            keyframes and a stride of at most :data:`RIG_STRIDE`; on another grid with camera poses, ``rig`` when flow cannot relate neighbouring views) | ``gt`` (exact,
            synthetic grids) | ``flow`` (DIS optical flow lifted by depth) | ``rig`` (depth lifted
            and moved with the given camera poses, for calibrated wide-baseline rigs; MVS depth then
            takes its sweep range from the rig geometry) | ``file`` (``tracks_path``,
            see :mod:`recon.tracking.trackio`).
        tracks_path: tracks file for ``tracks="file"``.
        depth_path: depth file/folder for ``depth="file"``.
        keyframes: number of keyframes seeding tracks (evenly spaced, central view included).
        stride: seed grid stride in pixels.
        device: torch device for depth estimation; the returned tensors are on the CPU.
        with_time: also track the central view across time (``time_points``) when possible (a depth
            pass over every time step; no pipeline stage reads them, see :class:`Tracks`).

    Returns:
        :class:`Tracks`: ``points [P, V, 3]`` in each freeze-time frame's camera coordinates
        (OpenCV), for every view; where a point is not ``visible`` its position there is the
        rigid prediction (exact for ``gt``). ``colors [P, 3]``, ``seed_view [P]``, optional
        ``time_points [P, T, 3]`` in the central camera's coordinates at each time.
    """
    source = resolve_track_source(grid, tracks)
    if tracks == "auto" and source == "flow" and is_wide_baseline(grid):
        return build_tracks(grid, depth, "rig", tracks_path, depth_path, max(keyframes, min(RIG_KEYFRAMES, grid.num_views)),
                            min(stride, RIG_STRIDE), device, with_time)
    if tracks == "auto" and source == "flow" and grid.cameras.w2c is not None:
        # calibrated grid: when flow cannot relate neighbouring freeze-time views (wide baselines, or
        # frames too small for DIS, e.g. the 32x32 grids of `recon generate`), the given poses do
        try:
            return build_tracks(grid, depth, "flow", tracks_path, depth_path, keyframes, stride, device, with_time)
        except InputError as e:
            if e.field != "tracks":
                raise
        return build_tracks(grid, depth, "rig", tracks_path, depth_path, keyframes, stride, device, with_time)
    req = TrackRequest(depth, tracks_path, depth_path, keyframes, stride, device, with_time)
    return _tag(TRACK_SOURCES[source](grid, req), source)


@dataclass(frozen=True)
class TrackRequest:
    """The arguments of :func:`build_tracks` a track source reads (see there)."""

    depth: str
    tracks_path: str | os.PathLike | None
    depth_path: str | os.PathLike | None
    keyframes: int
    stride: int
    device: torch.device
    with_time: bool


def _file_tracks(grid: FrameGrid, req: TrackRequest) -> Tracks:
    if req.tracks_path is None:
        raise InputError("tracks='file' needs a tracks path", field="tracks_path")
    from recon.tracking.trackio import read_tracks

    return read_tracks(Path(req.tracks_path), grid)


def _gt_tracks(grid: FrameGrid, req: TrackRequest) -> Tracks:
    from recon.tracking.gt import gt_tracks

    check_trackable(grid)
    return gt_tracks(grid, keyframes=req.keyframes, stride=req.stride, with_time=req.with_time)


def _lifted_depth(grid: FrameGrid, req: TrackRequest, source: str) -> tuple[np.ndarray, str, np.ndarray | None]:
    """Depth of the freeze-time frames for tracks of ``source``: ``([V, H, W], provider, w2c)``."""
    from recon.tracking.depth import DEPTH_PROVIDERS, estimate_depth, resolve_depth_provider

    check_trackable(grid)
    provider = resolve_depth_provider(grid, req.depth)
    w2c = None
    if grid.cameras.w2c is None and DEPTH_PROVIDERS[provider].needs_poses:  # estimated once for every pass
        from recon.tracking.cameras import estimate_cameras

        w2c = estimate_cameras(grid).w2c
    d = estimate_depth(grid, [(v, grid.ref_time) for v in range(grid.num_views)], provider=provider, device=req.device,
                       path=req.depth_path, w2c=w2c, mvs_range=mvs_range_for(source, grid.num_views))
    return d.cpu().numpy(), provider, w2c


def _rig_tracks(grid: FrameGrid, req: TrackRequest) -> Tracks:
    from recon.tracking.rig import rig_tracks

    d, _, _ = _lifted_depth(grid, req, "rig")
    return rig_tracks(grid, d, keyframes=req.keyframes, stride=req.stride)


def _flow_tracks(grid: FrameGrid, req: TrackRequest) -> Tracks:
    from recon.tracking.depth import estimate_depth
    from recon.tracking.flow import flow_tracks

    d, provider, w2c = _lifted_depth(grid, req, "flow")
    time_depth = None
    if req.with_time and grid.num_times > 1:
        cells = [(int(grid.central_view), t) for t in range(grid.num_times)]
        try:
            time_depth = estimate_depth(grid, cells, provider=provider, device=req.device, path=req.depth_path,
                                        w2c=w2c).cpu().numpy()
        except InputError:
            time_depth = None  # e.g. a depth file holding freeze-time frames only: no time tracks
    return flow_tracks(grid, d, keyframes=req.keyframes, stride=req.stride, time_depth=time_depth)


TRACK_SOURCES: dict[str, Callable[[FrameGrid, TrackRequest], Tracks]] = {
    "gt": _gt_tracks,
    "flow": _flow_tracks,
    "rig": _rig_tracks,
    "file": _file_tracks,
}
"""Track sources by name (see :func:`build_tracks`): ``(grid, request) -> Tracks``. A new source is
one function plus one row here; ``auto`` (:func:`resolve_track_source`) stays the rule above."""


def track_source_names() -> tuple[str, ...]:
    """The values the ``tracking.tracks`` config field accepts: ``auto`` and the table's names."""
    return ("auto", *TRACK_SOURCES)


def _tag(tracks: Tracks, source: str) -> Tracks:
    tracks.source = source
    return tracks
