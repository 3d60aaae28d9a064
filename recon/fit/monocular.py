"""Canonical splats without a freeze-time video: monocular grids (one camera image per time).

A D-NeRF-style capture (one moving or teleporting camera, one image per time) has no views
that share a time, so the seed's tracking of the freeze-time frames, its tracked view offsets
and its pruning in the freeze-time frames cannot run: the pipeline skips them (and says so in
``run.json``) and starts the deformation fit from the splats built here.

Initialisation by space carving of silhouettes, window by window. A *window* is ``window``
consecutive training frames (a D-NeRF scene cycles through its 12 camera poses in 12 consecutive
frames, so a window sees the scene from all around at nearly one time). The hull of the whole
sequence would be a smear of every object's trajectory, which a static warm-up can only fit as
transparent fog that then fades; a window's hull is the scene near that window's time.

With ``windows`` 1 the *reference window* (the frames nearest the reference time) is carved and
the deform stage warms up on it and follows the scene outward in time with its temporal
curriculum: an object that is far from where it is at the reference time (a ball thrown off a
cube) must be carried there by the MLP, and on the deformation scene nothing carried it (no
ball at the start and end of the sequence). With ``windows`` > 1 (the default, 9) windows spread
evenly over the sequence are carved, ``points / windows`` splats each, and every window's splats
get a *lifespan* around the window's mean time (:attr:`recon.model.deform.DeformField.lifespan`,
a Gaussian in time of standard deviation ``life_width`` x the window spacing, not learned by
default): each object is present where it is at every window's time from the start, and the
MLP only has to carry it to the neighbouring windows. The warm-up then fits every window's
frames, and there is no curriculum (:attr:`MonocularConfig.time_curriculum`).

For each window:

1. The window's cells are grouped into distinct cameras (same pose and intrinsics, to 1e-6).
2. Per camera, a pixel is *occupied* when, at any of that camera's times, it differs from the
   background colour by more than ``background_tol`` (in any channel), dilated by ``dilate``
   pixels. Without a uniform background (opaque images) every pixel is occupied and only the
   frusta carve. Pixels of exactly the background colour (white parts of an object on white) are
   carved away; density control grows the splats back into them from their neighbours.
3. Candidates on a ``grid``\\ :sup:`3` lattice in a box around the point closest to all optical
   axes (half-size ``box`` x the median camera distance from it) are kept when they fall inside the
   images of at least ``min_seen`` of the cameras and their projection is occupied in at least
   ``vote`` of those. A second pass repeats this on the bounding box of the first pass's
   survivors (finer lattice).
4. ``points`` survivors (jittered within their cell) become isotropic splats: colour = the mean
   of the occupied pixels they project to, scale from the neighbour spacing, opacity
   ``init_opacity`` (low, as Deformable-3DGS's random init: the hull is a volume, the scene a surface).

Positions are in the canonical frame of :mod:`recon.fit.canonical` (the central camera's frame
at ``ref_time``).

The deform stage then runs as for multi-view grids (:mod:`recon.fit.deform`: density control,
temporal MLP) with what one view per time changes,
each measured on the MuJoCo D-NeRF scenes (BENCHMARKS.md): one image per step,
:data:`recon.fit.deform.MONOCULAR_RENDERS_PER_IMAGE` renders per image; a static warm-up on the
carved windows; no view offsets and no per-camera colour response (one camera); no
time-smoothness term (it held the MLP back on fast motion and the splats faded instead of
following); no opacity resets (with one image per step the scene was pruned away before it
recovered); and, on a uniform background, the silhouette and coverage terms
(:func:`recon.fit.losses.silhouette_term`, :func:`recon.fit.losses.coverage_term`), which keep
the splats on each image's occupied pixels and give the MLP a long-range pull towards where an
object has moved; a rigidity term (:func:`recon.fit.losses.rigidity_term`) at random times of
the whole range, which holds neighbouring splats together in the gaps between training times
(where a D-NeRF capture's test frames lie); and with one window a shorter temporal curriculum
(10 % of the steps, not 30 %), so the frames far from the reference time get more of the fit.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from recon.errors import InputError
from recon.fit.canonical import Canonical, cell_poses
from recon.grid import FrameGrid
from recon.model.splats import Splats, logit, neighbour_log_scales


@dataclass
class MonocularConfig:
    """Canonical initialisation of monocular grids (see :mod:`recon.fit.monocular`)."""

    window: int = 12
    """Training frames nearest the reference time whose silhouettes are carved (and which the
    deform stage's static warm-up fits); 0: all training frames."""
    mlp_activation: str = "leaky_relu"
    """Hidden activation of the temporal MLP on monocular grids (multi-view grids keep
    ``deform.mlp_activation``): a ReLU MLP died on the rapid-motion scene at 400x400 (every unit
    negative: one constant offset at all times, the scene faded to white), see BENCHMARKS.md."""
    rigidity_reg: float = 0.1
    """Weight of the deform stage's rigidity term on monocular grids
    (:attr:`recon.fit.deform.DeformConfig.rigidity_reg`): the test frames of a D-NeRF capture lie in
    gaps of the training times, where only this term shapes the motion (BENCHMARKS.md)."""
    time_curriculum: float | None = None
    """The deform stage's temporal curriculum on monocular grids
    (:attr:`recon.fit.deform.DeformConfig.time_curriculum`, 0.3 for multi-view grids); None: 0 with
    several :attr:`windows` (every window's splats start where their objects are, so no frame waits
    for the fit to widen to it), 0.1 with one. With one window the first and last frames, far from
    the reference time, were fitted badly when the curriculum reached them after 30 % of the steps
    (close-proximity scene: train PSNR 12-25 dB on its last ten frames); from 10 % they got more of
    the fit: +2.0 dB on that scene, +3.4 on rapid motion, but -2.7 dB on the collision scene, whose
    balls fly apart from a cluster and needed the slow widening (BENCHMARKS.md)."""
    sh_degree: int = 0
    """Bands of view-dependent colour on monocular grids (:attr:`recon.fit.deform.DeformConfig.sh_degree`).
    Off: degree 2 lost ~1 dB on the close-proximity scene (200x200, two seeds each); degree 1 at
    400x400 gained 0.35-0.8 dB on four scenes and lost 2.6 on the collision scene, whose misplaced
    copies turned white (the background) where contradicted: mean 31.76 against 31.88 (BENCHMARKS.md)."""
    sh_shading: bool = False
    """View-dependent colour as shading gains (:attr:`recon.fit.deform.DeformConfig.sh_shading`). Off:
    with degree 1 at 400x400 the collision scene lost 0.6 dB (additive: 2.3) and the mean was 31.72
    against 31.88 with degree 0 (BENCHMARKS.md)."""
    windows: int = 9
    """Windows carved (1: the reference window only). More: ``windows`` runs of ``window`` training
    frames spread evenly over the sequence (:func:`life_windows`), each carved where its objects are
    at its own time, and every window's splats given a lifespan around its mean time
    (:attr:`recon.model.deform.DeformField.lifespan`): an object far from where it is at the
    reference time is there from the start, instead of having to be carried there by the MLP.
    The static warm-up then fits every window's frames."""
    life_width: float = 1.0
    """Standard deviation of a window's lifespan, x the spacing of the window centres (the lifespans
    are not learned by default, :attr:`recon.fit.deform.DeformConfig.lr_lifespan`). 0.6 and learned:
    ghosts of the objects where two windows' splats overlap (close-proximity scene 28.30 dB at
    200x200, against 31.94 with 1.0 frozen; BENCHMARKS.md). 1.5 at 400x400: mean 32.09 against
    31.88, the collision scene +1.3 dB and the deformation scene -1.2, steps dearer: not adopted."""
    points: int = 20000
    """Splats sampled from the carved hull (with several windows: in all, split evenly)."""
    grid: int = 64
    """Lattice cells per axis of each carving pass."""
    box: float = 0.6
    """Half-size of the first pass's box, x the median camera distance from the look-at point."""
    vote: float = 0.9
    """Keep a candidate whose projection is occupied in at least this fraction of the cameras that see it."""
    min_seen: float = 0.5
    """... and that lie inside the images of at least this fraction of the cameras (a point that few
    cameras see is barely constrained by the carving)."""
    background_tol: float = 0.04
    """Largest per-channel difference from the background colour that still counts as background."""
    dilate: int = 2
    """Occupied pixels are dilated by this many pixels (at the grid's resolution)."""
    init_opacity: float = 0.3
    scale_factor: float = 0.5
    """Initial standard deviation = factor x mean distance to the 3 nearest sampled neighbours."""

    def curriculum(self) -> float:
        """The temporal curriculum the deform stage uses (:attr:`time_curriculum`, its None resolved)."""
        if self.time_curriculum is not None:
            return float(self.time_curriculum)
        return 0.0 if self.windows > 1 else 0.1


def is_monocular(grid: FrameGrid, views: list[int] | None = None) -> bool:
    """True when ``views`` (default all) hold fewer than two views: no freeze-time video."""
    return len(range(grid.num_views) if views is None else views) < 2


def background_colour(grid: FrameGrid) -> np.ndarray | None:
    """``float [3]`` in [0, 1]: the uniform background the images were composited on (readers say
    so in ``meta["background"]``: "white ..." / "black ..."), else None."""
    bg = str(grid.meta.get("background", "")).lower()
    if bg.startswith("white"):
        return np.ones(3)
    if bg.startswith("black"):
        return np.zeros(3)
    return None


def occupancy(images: np.ndarray, bg: np.ndarray, tol: float, dilate: int) -> np.ndarray:
    """``bool [..., H, W]``: pixels of ``uint8 images [..., H, W, 3]`` that differ from the
    background colour ``bg [3]`` (in [0, 1]) by more than ``tol`` in a channel, dilated by ``dilate`` px."""
    import cv2

    occ = (np.abs(images.astype(np.float32) / 255.0 - bg.astype(np.float32)).max(-1) > tol)
    if dilate <= 0:
        return occ
    kernel = np.ones((2 * dilate + 1,) * 2, np.uint8)
    flat = occ.reshape(-1, *occ.shape[-2:])
    return np.stack([cv2.dilate(m.astype(np.uint8), kernel) > 0 for m in flat]).reshape(occ.shape)


def background_distance(grid: FrameGrid, cells: list[tuple[int, int]], tol: float, dilate: int) -> np.ndarray | None:
    """``float32 [V, T, H, W]``: for ``cells`` (others zero), each pixel's distance in pixels to the
    nearest occupied pixel (:func:`occupancy`); None without a uniform background. An image with no
    occupied pixel gets zeros (it constrains nothing)."""
    import cv2

    bg = background_colour(grid)
    if bg is None:
        return None
    V, T, H, W = grid.shape
    out = np.zeros((V, T, H, W), np.float32)
    for i, j in cells:
        occ = occupancy(grid.images[i, j], bg, tol, dilate)
        if occ.any():
            out[i, j] = cv2.distanceTransform((~occ).astype(np.uint8), cv2.DIST_L2, 5)
    return out


def occupancy_grid(grid: FrameGrid, cells: list[tuple[int, int]], tol: float) -> np.ndarray:
    """``bool [V, T, H, W]``: :func:`occupancy` (undilated) of ``cells`` (others False); needs a
    uniform background (:func:`background_colour`)."""
    bg = background_colour(grid)
    assert bg is not None, "occupancy needs a uniform background"
    out = np.zeros(grid.shape, bool)
    for i, j in cells:
        out[i, j] = occupancy(grid.images[i, j], bg, tol, 0)
    return out


def reference_window(grid: FrameGrid, cells: list[tuple[int, int]], n: int) -> list[tuple[int, int]]:
    """The ``n`` cells (all for ``n <= 0``) whose times are nearest ``grid.ref_time``'s, in time order."""
    if n <= 0 or n >= len(cells):
        return sorted(cells, key=lambda c: c[1])
    t0 = float(grid.times[grid.ref_time])
    near = sorted(cells, key=lambda c: (abs(float(grid.times[c[1]]) - t0), c[1]))[:n]
    return sorted(near, key=lambda c: c[1])


def life_windows(grid: FrameGrid, cells: list[tuple[int, int]], config: MonocularConfig) -> list[list[tuple[int, int]]]:
    """The windows whose silhouettes are carved: ``[reference_window(...)]`` for ``config.windows``
    <= 1; else ``windows`` runs of ``config.window`` consecutive training frames (all of them for
    ``window`` 0: then ``windows`` equal runs), centred at evenly spaced quantiles of the training
    times and clipped to the sequence, each in time order."""
    k = int(config.windows)
    if k <= 1:
        return [reference_window(grid, cells, config.window)]
    order = sorted(cells, key=lambda c: (float(grid.times[c[1]]), c[1]))
    n = len(order)
    size = min(n, config.window if config.window > 0 else -(-n // k))
    out = []
    for q in range(k):
        mid = int(round((q + 0.5) * n / k - 0.5))
        lo = min(max(0, mid - size // 2), n - size)
        out.append(order[lo:lo + size])
    return out


def distinct_cameras(grid: FrameGrid, cells: list[tuple[int, int]]) -> list[list[tuple[int, int]]]:
    """``cells`` grouped by camera (identical w2c and K to 1e-6), in order of first appearance."""
    keys: list[np.ndarray] = []
    groups: list[list[tuple[int, int]]] = []
    for i, j in cells:
        k = np.concatenate([grid.cameras.w2c[i, j].ravel(), grid.cameras.K[i, j].ravel()])
        tol = 1e-6 * max(1.0, float(np.abs(k).max()))
        for g, q in enumerate(keys):
            if np.abs(k - q).max() <= tol:
                groups[g].append((i, j))
                break
        else:
            keys.append(k)
            groups.append([(i, j)])
    return groups


def _look_at(c2w: np.ndarray) -> np.ndarray:
    """Least-squares point closest to every camera's optical axis (``c2w [M, 4, 4]``, OpenCV)."""
    A = np.zeros((3, 3))
    b = np.zeros(3)
    for m in c2w:
        d = m[:3, 2] / np.linalg.norm(m[:3, 2])
        P = np.eye(3) - np.outer(d, d)
        A += P
        b += P @ m[:3, 3]
    if np.linalg.cond(A) > 1e8:  # parallel axes: a point in front of the first camera
        return c2w[0, :3, 3] + c2w[0, :3, 2]
    return np.linalg.solve(A, b)


def _carve(X: np.ndarray, cams: list[tuple[np.ndarray, np.ndarray, np.ndarray]], vote: float, min_seen: float) -> np.ndarray:
    """``bool [N]``: world points ``X [N, 3]`` inside the images of >= ``min_seen`` of the cameras
    and occupied in >= ``vote`` of those."""
    seen = np.zeros(len(X), np.int32)
    occ = np.zeros(len(X), np.int32)
    for w2c, K, mask in cams:
        H, W = mask.shape
        Xc = X @ w2c[:3, :3].T + w2c[:3, 3]
        z = Xc[:, 2]
        ok = z > 1e-6
        zs = np.maximum(z, 1e-6)
        u = np.floor(K[0, 0] * Xc[:, 0] / zs + K[0, 2]).astype(np.int64)
        v = np.floor(K[1, 1] * Xc[:, 1] / zs + K[1, 2]).astype(np.int64)
        ok &= (u >= 0) & (u < W) & (v >= 0) & (v < H)
        seen += ok
        occ[ok] += mask[v[ok], u[ok]]
    return (seen >= max(1, int(np.ceil(min_seen * len(cams) - 1e-9)))) & (occ >= np.ceil(vote * seen - 1e-9))


def _lattice(lo: np.ndarray, hi: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    axes = [np.linspace(lo[k], hi[k], n, endpoint=False) + 0.5 * (hi[k] - lo[k]) / n for k in range(3)]
    g = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    return g, (hi - lo) / n


def _carve_cells(grid: FrameGrid, window: list[tuple[int, int]], config: MonocularConfig, rng: np.random.Generator,
                 points: int, bg: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Space carving of the silhouettes of ``window`` (module docstring, steps 1-4): up to
    ``points`` world points ``[n, 3]``, their colours ``[n, 3]`` in [0, 1], and what the carving did."""
    groups = distinct_cameras(grid, window)
    cams = []
    colour_sum = []
    for g in groups:
        u8 = np.stack([grid.images[i, j] for i, j in g])
        ims = u8.astype(np.float32) / 255.0  # [n, H, W, 3]
        occ_t = np.ones(ims.shape[:3], bool) if bg is None else occupancy(u8, bg, config.background_tol, 0)
        occ = occ_t.any(0) if bg is None else occupancy(u8, bg, config.background_tol, config.dilate).any(0)
        occ = occ.astype(np.uint8)
        w = occ_t[..., None].astype(np.float32)
        mean = (ims * w).sum(0) / np.maximum(w.sum(0), 1.0)  # mean colour of the occupied samples per pixel
        i, j = g[0]
        cams.append((grid.cameras.w2c[i, j], grid.cameras.K[i, j], occ))
        colour_sum.append(mean)
    c2w = np.linalg.inv(np.stack([c[0] for c in cams]))
    centre = _look_at(c2w)
    dist = float(np.median(np.linalg.norm(c2w[:, :3, 3] - centre, axis=1)))
    half = config.box * dist
    lo, hi = centre - half, centre + half
    passes = []
    for _ in range(2):
        X, cell = _lattice(lo, hi, config.grid)
        keep = _carve(X, cams, config.vote, config.min_seen)
        passes.append(int(keep.sum()))
        if not keep.any():
            raise InputError("space carving left no point: the cameras share no occupied region (check the poses and "
                             "that the background is uniform)", grid.source, "w2c")
        K_ = X[keep]
        lo, hi = K_.min(0) - cell, K_.max(0) + cell
    n = min(points, max(1, len(K_) * 8))
    pick = rng.integers(0, len(K_), n)
    Xw = K_[pick] + (rng.random((n, 3)) - 0.5) * cell
    # colours: mean over the cameras that see the point of their occupied-sample mean colour
    csum = np.zeros((n, 3))
    cnt = np.zeros(n)
    for (w2c, K, occ), mean in zip(cams, colour_sum):
        H, W = occ.shape
        Xc = Xw @ w2c[:3, :3].T + w2c[:3, 3]
        zs = np.maximum(Xc[:, 2], 1e-6)
        u = np.floor(K[0, 0] * Xc[:, 0] / zs + K[0, 2]).astype(np.int64)
        v = np.floor(K[1, 1] * Xc[:, 1] / zs + K[1, 2]).astype(np.int64)
        ok = (Xc[:, 2] > 1e-6) & (u >= 0) & (u < W) & (v >= 0) & (v < H)
        ok[ok] &= occ[v[ok], u[ok]] > 0
        csum[ok] += mean[v[ok], u[ok]]
        cnt[ok] += 1
    colours = np.where(cnt[:, None] > 0, csum / np.maximum(cnt, 1)[:, None], 0.5)
    info = {"window_frames": len(window), "window_times": [float(grid.times[window[0][1]]), float(grid.times[window[-1][1]])],
            "cameras": len(groups), "carved_cells": passes, "box_half_size": half, "gaussians": n}
    return Xw, colours, info


FALLBACK_VOTES = (0.75, 0.6, 0.5)
"""Votes a window is carved again with when :attr:`MonocularConfig.vote` leaves no point (several
windows only): in a window where objects move fast (the collision scene's balls converge in its
first 12 frames) the cameras' silhouettes, taken at different times, share little."""


def _carve_windows(grid: FrameGrid, windows: list[list[tuple[int, int]]], config: MonocularConfig,
                   rng: np.random.Generator, bg: np.ndarray | None) -> tuple[list, list, list[dict[str, Any]]]:
    """Carve each of several windows (``points / len(windows)`` splats each): a window whose carving
    leaves no point is carved again with the lower votes of :data:`FALLBACK_VOTES`, and dropped
    (said in the report) when none leaves a point; its times are then covered by the neighbouring
    windows' lifespans. Raises :class:`InputError` when every window is empty.
    Returns the parts (points, colours, report; each report with the ``vote`` used), the windows
    kept, and the dropped windows' ``{"window_times": [first, last]}``."""
    per = max(1, config.points // len(windows))
    parts, kept, dropped = [], [], []
    for w in windows:
        for vote in (config.vote, *[v for v in FALLBACK_VOTES if v < config.vote]):
            try:
                X, c, info = _carve_cells(grid, w, dataclasses.replace(config, vote=vote), rng, per, bg)
            except InputError:
                continue
            parts.append((X, c, {**info, "vote": vote}))
            kept.append(w)
            break
        else:
            dropped.append({"window_times": [float(grid.times[w[0][1]]), float(grid.times[w[-1][1]])]})
    if not parts:
        raise InputError("space carving left no point in any window: the cameras share no occupied region (check the "
                         "poses and that the background is uniform)", grid.source, "w2c")
    return parts, kept, dropped


def init_monocular(grid: FrameGrid, train_cells: list[tuple[int, int]], config: MonocularConfig,
                   seed: int = 0) -> tuple[Canonical, dict[str, Any]]:
    """Canonical splats for a monocular grid from its ``train_cells`` (module docstring); returns
    the :class:`Canonical` (zero view offsets, poses from the cameras) and a report."""
    if grid.cameras.w2c is None:
        raise InputError("a monocular grid (one view per time) needs camera poses: nothing can be tracked between views",
                         grid.source, "w2c")
    if not train_cells:
        raise InputError("no training frames", grid.source, "holdout")
    rng = np.random.default_rng(seed)
    bg = background_colour(grid)
    windows = life_windows(grid, train_cells, config)
    if len(windows) == 1:
        parts = [_carve_cells(grid, windows[0], config, rng, config.points, bg)]
    else:
        parts, windows, dropped = _carve_windows(grid, windows, config, rng, bg)
    Xw = np.concatenate([p[0] for p in parts])
    colours = np.concatenate([p[1] for p in parts])
    n = len(Xw)
    life = None
    if len(windows) > 1:  # each window's splats live around its mean time (recon.model.deform.DeformField.lifespan)
        centres = np.array([np.mean([float(grid.times[j]) for _, j in w]) for w in windows])
        gap = float(np.median(np.diff(np.sort(centres)))) if len(centres) > 1 else 1.0
        life = np.concatenate([np.stack([np.full(len(p[0]), c), np.full(len(p[0]), config.life_width * gap)], 1)
                               for p, c in zip(parts, centres)])
    # world -> canonical (the central camera's frame at the reference time)
    A0 = grid.cameras.w2c[int(grid.central_view), grid.ref_time]
    canon = Xw @ A0[:3, :3].T + A0[:3, 3]
    poses, source = cell_poses(grid)
    V = grid.num_views
    bounds = np.cumsum([0] + [len(p[0]) for p in parts])  # scales from each window's own spacing
    scales = np.concatenate([neighbour_log_scales(canon[a:b], 3, config.scale_factor) for a, b in zip(bounds[:-1], bounds[1:])])
    splats = Splats(torch.from_numpy(canon).float(), torch.from_numpy(scales).float(),
                    torch.full((n,), logit(config.init_opacity)), torch.from_numpy(colours).float().clamp(0, 1))
    can = Canonical(splats=splats, view_offsets=torch.zeros(n, V, 3), poses=torch.from_numpy(poses).float(),
                    frame_points=torch.zeros(n, V, 3), visible=torch.ones(n, V, dtype=torch.bool),
                    seed_view=torch.zeros(n, dtype=torch.long), pose_source=source,
                    lifespan=None if life is None else torch.from_numpy(life).float())
    info = parts[0][2]
    report = {"init": "space carving of the reference window's silhouettes" if life is None else
                      f"space carving of {len(windows)} windows' silhouettes, each window's splats living around its time",
              **({k: info[k] for k in ("window_frames", "window_times", "cameras", "carved_cells", "box_half_size")}
                 if life is None else {"windows": [p[2] for p in parts], "life_width": config.life_width,
                                       "windows_dropped": dropped}),
              "background": None if bg is None else [float(x) for x in bg], "gaussians": n}
    return can, report

