"""Flow tracks: OpenCV DIS optical flow between neighbouring frames, chained and lifted to 3D by depth.

Freeze-time tracks: seeds on a stride grid in a few keyframes (:mod:`recon.tracking.seeds`) are
carried frame to frame through the freeze-time video (views at ``ref_time`` ordered by view
index), outwards from their keyframe in both directions. At each step ``a -> b``:

* forward-backward check: ``|x_a - (x_b + B(x_b))| <= FB_THRESHOLD`` px with ``x_b = x_a + F(x_a)``,
  else the track is lost from ``b`` on (occluded or mismatched; chains cannot re-find it);
* depth: the point is lifted at ``b`` with the depth of the pixel it lands in; it is *not visible*
  at ``b`` where that depth is unknown or on a depth edge (3x3 depth ratio above
  ``EDGE_RATIO``: the classic source of boundary floaters), but the 2D chain goes on;
* depth consistency: the lifted step must agree with the rigid motion between the two frames
  (fitted robustly from all tracks, :func:`recon.tracking.align.umeyama`) within
  ``DEPTH_TOL`` x depth, else the track is lost from ``b`` on (it slid onto another surface).

Where a point is not visible its position is predicted from its seed frame by the fitted rigid
transforms, so every point has a position in every frame. Time tracks (``time_points``) chain the
central view across time the same way, from the positions of the points visible there.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from recon.errors import InputError
from recon.grid import FrameGrid
from recon.tracking.align import umeyama
from recon.tracking.geometry import depth_edges, pixel_index, project, similarity_matrix, transform, unproject
from recon.tracking.seeds import coverage, keyframe_views, seed_pixels
from recon.tracking.types import Tracks

FB_THRESHOLD = 1.0
"""Forward-backward flow error (pixels) above which a track is dropped."""
EDGE_RATIO = 1.05
"""3x3 depth max/min ratio above which a pixel counts as a depth edge (not lifted)."""
DEPTH_TOL = 0.05
"""Relative 3D deviation from the fitted rigid step above which a track is dropped."""
MIN_FIT_POINTS = 12


def _gray(img: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)


def make_dis(height: int, width: int) -> "cv2.DISOpticalFlow":
    """DIS configured for accuracy rather than speed: the MEDIUM preset stops at half resolution
    (finest scale 1); on the synthetic orbit scene (96 x 128, neighbouring views) going down to
    full resolution with small patches and more variational refinement halves the median
    end-point error (0.93 -> 0.36 px) for ~3x the time (~40 ms a pair)."""
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    dis.setFinestScale(0)
    dis.setPatchSize(4 if min(height, width) < 256 else 8)
    dis.setPatchStride(2)
    dis.setVariationalRefinementIterations(10)
    dis.setGradientDescentIterations(25)
    return dis


class FlowCache:
    """DIS flows between frames of one image sequence, computed on demand.

    ``images``: list of uint8 ``[H, W, 3]``. ``flow(a, b)`` is float32 ``[H, W, 2]``: the pixel
    at ``(u, v)`` in frame ``a`` moves to ``(u, v) + flow`` in frame ``b``."""

    def __init__(self, images: list[np.ndarray]):
        self.gray = [_gray(im) for im in images]
        self.dis = make_dis(*self.gray[0].shape)
        self._cache: dict[tuple[int, int], np.ndarray] = {}

    def flow(self, a: int, b: int) -> np.ndarray:
        if (a, b) not in self._cache:
            self._cache[(a, b)] = self.dis.calc(self.gray[a], self.gray[b], None)
        return self._cache[(a, b)]


def sample_bilinear(field: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear sample of ``field [H, W, C]`` at positions ``uv [N, 2]`` (pixel-centre convention,
    border clamped); returns ``[N, C]``."""
    H, W = field.shape[:2]
    x = np.clip(uv[:, 0] - 0.5, 0, W - 1)
    y = np.clip(uv[:, 1] - 0.5, 0, H - 1)
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    x1, y1 = np.minimum(x0 + 1, W - 1), np.minimum(y0 + 1, H - 1)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    return (field[y0, x0] * (1 - fx) * (1 - fy) + field[y0, x1] * fx * (1 - fy) + field[y1, x0] * (1 - fx) * fy + field[y1, x1] * fx * fy)


def chain_2d(flows: FlowCache, uv0: np.ndarray, order: list[int], H: int, W: int, fb_threshold: float = FB_THRESHOLD) -> tuple[np.ndarray, np.ndarray]:
    """Carry positions ``uv0 [N, 2]`` (in frame ``order[0]``) through frames ``order``.

    Returns ``uv [N, len(order), 2]`` (NaN once lost) and ``alive [N, len(order)]``; a track is lost
    when the forward-backward error exceeds ``fb_threshold`` px or it leaves the frame."""
    n, L = len(uv0), len(order)
    uv = np.full((n, L, 2), np.nan)
    alive = np.zeros((n, L), bool)
    uv[:, 0], alive[:, 0] = uv0, True
    cur, ok = uv0.copy(), np.ones(n, bool)
    for i in range(1, L):
        a, b = order[i - 1], order[i]
        idx = np.flatnonzero(ok)
        if len(idx) == 0:
            break
        p = cur[idx]
        q = p + sample_bilinear(flows.flow(a, b), p)
        back = q + sample_bilinear(flows.flow(b, a), q)
        good = (np.linalg.norm(back - p, axis=1) <= fb_threshold) & (q[:, 0] >= 0) & (q[:, 0] < W) & (q[:, 1] >= 0) & (q[:, 1] < H)
        ok[idx[~good]] = False
        cur[idx[good]] = q[good]
        alive[:, i] = ok
        uv[ok, i] = cur[ok]
    return uv, alive


def lift(uv: np.ndarray, depth: np.ndarray, K: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lift pixel positions ``uv [N, 2]`` with the (bilinearly interpolated) depth there.

    Returns camera points ``[N, 3]`` (NaN where invalid) and ``valid [N]`` (inside, depth > 0,
    not on a depth edge)."""
    H, W = depth.shape
    r, c, inside = pixel_index(uv, H, W)
    valid = inside & (depth[r, c] > 0) & ~edges[r, c]
    # off an edge the 2x2 pixel centres around uv all lie in the 3x3 block that passed the check
    z = sample_bilinear(depth[..., None].astype(np.float64), np.nan_to_num(uv))[:, 0]
    X = unproject(np.nan_to_num(uv), z, K)
    X[~valid] = np.nan
    return X, valid


def _rigid(src: np.ndarray, dst: np.ndarray) -> np.ndarray | None:
    """Robust rigid fit ``dst ~ R src + t`` (RANSAC at 1 % of the median depth, then IRLS)."""
    ok = np.isfinite(src).all(1) & np.isfinite(dst).all(1)
    if ok.sum() < MIN_FIT_POINTS:
        return None
    thr = 0.01 * float(np.median(np.abs(dst[ok, 2])))
    s, R, t = umeyama(src[ok], dst[ok], robust="ransac", inlier_threshold=thr)
    return similarity_matrix(s, R, t)


def flow_tracks(
    grid: FrameGrid,
    depth: np.ndarray,
    keyframes: int = 3,
    stride: int = 2,
    time_depth: np.ndarray | None = None,
    fb_threshold: float = FB_THRESHOLD,
    depth_tol: float = DEPTH_TOL,
) -> Tracks:
    """Freeze-time tracks from DIS flow lifted by ``depth [V, H, W]`` (z-depth of the frames
    ``(v, ref_time)``, 0 = unknown). ``time_depth [T, H, W]``: depth of the central view over time,
    enabling ``time_points``. See the module docstring for the checks. Returns :class:`Tracks`."""
    V, T, H, W = grid.shape
    r, c = grid.ref_time, int(grid.central_view)
    if depth.shape != (V, H, W):
        raise InputError(f"expected freeze-time depth [{V}, {H}, {W}], got {list(depth.shape)}", field="depth")
    K = grid.cameras.K[:, r]
    flows = FlowCache([grid.images[v, r] for v in range(V)])
    edges = [depth_edges(depth[v], EDGE_RATIO) for v in range(V)]
    pts_l, vis_l, seed_l, col_l = [], [], [], []
    for k in keyframe_views(V, c, keyframes):
        prev = np.concatenate(pts_l)[np.concatenate(vis_l)[:, k], k] if pts_l else np.zeros((0, 3))
        blocked = coverage(prev, K[k], H, W, stride) | edges[k]
        uv0, flat = seed_pixels(depth[k], stride, blocked)
        if len(uv0) == 0:
            continue
        pts = np.full((len(uv0), V, 3), np.nan)
        vis = np.zeros((len(uv0), V), bool)
        for order in (list(range(k, V)), list(range(k, -1, -1))):
            uv, alive = chain_2d(flows, uv0, order, H, W, fb_threshold)
            for i, v in enumerate(order):
                X, valid = lift(uv[:, i], depth[v], K[v], edges[v])
                m = alive[:, i] & valid
                pts[m, v] = X[m]
                vis[m, v] = True
        vis[:, k] = True  # seeds are on known, non-edge depth by construction
        pts_l.append(pts)
        vis_l.append(vis)
        seed_l.append(np.full(len(uv0), k))
        col_l.append(grid.images[k, r].reshape(-1, 3)[flat] / 255.0)
    if not pts_l:
        raise InputError("no pixel with valid depth in the keyframes; nothing to track", grid.source, "depth")
    points, visible, seed = np.concatenate(pts_l), np.concatenate(vis_l), np.concatenate(seed_l)
    steps = _check_rigid_steps(points, visible, seed, c, depth_tol)
    _fill_invisible(points, visible, seed, c, steps)
    tp = tv = None
    if time_depth is not None and T > 1:
        tp, tv = _time_tracks(grid, points[:, c], visible[:, c], time_depth, fb_threshold)
    return Tracks(
        points=torch.from_numpy(points).float(),
        visible=torch.from_numpy(visible),
        colors=torch.from_numpy(np.concatenate(col_l)).float(),
        seed_view=torch.from_numpy(seed).long(),
        time_points=tp,
        time_visible=tv,
    )


def _check_rigid_steps(points: np.ndarray, visible: np.ndarray, seed: np.ndarray, central: int, tol: float) -> dict[tuple[int, int], np.ndarray]:
    """Fit the rigid step between neighbouring frames ``(a, a+1)`` from the tracks visible in both;
    drop (in place) tracks whose lifted step deviates by more than ``tol`` x depth, from the frame
    where it happens outward from their seed. Returns the 4x4 steps ``{(a, b): T_ab}`` mapping
    frame ``a`` coordinates to frame ``b`` (both directions)."""
    V = points.shape[1]
    steps: dict[tuple[int, int], np.ndarray] = {}
    for a in range(V - 1):
        b = a + 1
        both = visible[:, a] & visible[:, b]
        T = _rigid(points[both, a], points[both, b])
        if T is None:
            raise InputError(
                f"too few tracks ({int(both.sum())}) shared by views {a} and {b} to relate them; "
                "are neighbouring views too far apart or the frames too different? For a calibrated "
                "capture with wide baselines, use rig tracks (config {\"tracking\": {\"tracks\": \"rig\"}})",
                field="tracks",
            )
        steps[(a, b)], steps[(b, a)] = T, np.linalg.inv(T)
        err = np.linalg.norm(transform(T, np.nan_to_num(points[:, a])) - np.nan_to_num(points[:, b]), axis=1)
        bad = both & (err > tol * np.abs(np.nan_to_num(points[:, b, 2])))
        for p in np.flatnonzero(bad):
            # the step a -> b is wrong: cut the part of the track on the far side from its seed
            far = range(b, V) if seed[p] <= a else range(0, a + 1)
            visible[p, list(far)] = False
    return steps


def _fill_invisible(points: np.ndarray, visible: np.ndarray, seed: np.ndarray, central: int, steps: dict) -> None:
    """Predict (in place) positions where a point is not visible from its seed frame through the
    chained rigid steps."""
    V = points.shape[1]
    for k in np.unique(seed):
        sel = seed == k
        Xk = points[sel, k]
        for v in range(V):
            T = np.eye(4)
            a = k
            while a != v:
                b = a + (1 if v > a else -1)
                T = steps[(a, b)] @ T
                a = b
            miss = ~visible[sel, v]
            pv = points[sel, v]
            pv[miss] = transform(T, Xk[miss])
            points[sel, v] = pv


def _time_tracks(
    grid: FrameGrid, Xc: np.ndarray, vis_c: np.ndarray, depth_t: np.ndarray, fb_threshold: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Chain the central view over time from the points visible there at ``ref_time``."""
    V, T, H, W = grid.shape
    r, c = grid.ref_time, int(grid.central_view)
    Kt = grid.cameras.K[c]
    flows = FlowCache([grid.images[c, t] for t in range(T)])
    edges = [depth_edges(depth_t[t], EDGE_RATIO) for t in range(T)]
    P = len(Xc)
    tp = np.repeat(Xc[:, None], T, 1)  # not tracked: the canonical position (a static guess)
    tv = np.zeros((P, T), bool)
    idx = np.flatnonzero(vis_c)
    uv0, _ = project(Xc[idx], Kt[r])
    for order in (list(range(r, T)), list(range(r, -1, -1))):
        uv, alive = chain_2d(flows, uv0, order, H, W, fb_threshold)
        for i, t in enumerate(order):
            X, valid = lift(uv[:, i], depth_t[t], Kt[t], edges[t])
            m = alive[:, i] & valid
            tp[idx[m], t] = X[m]
            tv[idx[m], t] = True
    tv[idx, r] = True
    tp[idx, r] = Xc[idx]
    return torch.from_numpy(tp).float(), torch.from_numpy(tv)
