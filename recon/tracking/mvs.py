"""Plane-sweep multi-view stereo in torch (no learned weights): the ``mvs`` depth provider.

For a reference frame (view v, time t) and its neighbouring views at the same time:

1. depth range (``depth_range="auto"``): DIS-flow correspondences with the nearest neighbour,
   triangulated with the known poses; the 2nd-98th percentile of their depths, widened by
   :data:`RANGE_MARGIN` (too few matches: the rig range below). ``depth_range="rig"``: from the
   rig geometry alone (:func:`_rig_depth_range`), for calibrated wide-baseline rigs where flow
   between neighbours finds only spurious matches whose triangulation gives a wrong range;
2. sweep: :data:`NUM_DEPTHS` fronto-parallel planes uniform in inverse depth; each neighbour is
   warped onto the reference through each plane (``grid_sample``), and the photometric cost is
   zero-mean normalised cross-correlation (ZNCC) of grey levels over :data:`WINDOW` x :data:`WINDOW`
   windows; per plane the best half of the neighbours is averaged (robust to occlusion);
3. winner-take-all with parabolic sub-plane refinement (in inverse depth);
4. validity: ZNCC above :data:`MIN_ZNCC`, reference texture above :data:`MIN_STD`, and a
   multi-view consistency check: the depth must agree within :data:`CONSISTENCY_TOL` (relative)
   with at least one neighbour's own sweep after reprojection. Invalid pixels get depth 0.

Poses: ``w2c`` argument, else the grid's cameras, else estimated from the freeze-time frames
(:func:`recon.tracking.cameras.estimate_cameras`, central-view frame, median depth 1), assuming
each view's camera is the same at every time (true of frame grids from a multi-view generator).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from recon.errors import InputError
from recon.grid import FrameGrid

NUM_DEPTHS = 96
WINDOW = 5
NEIGHBOURS = 2
"""Views on each side of the reference used for matching."""
MIN_ZNCC = 0.6
MIN_STD = 2.0 / 255.0
CONSISTENCY_TOL = 0.02
RANGE_MARGIN = (0.7, 10.0)
"""Sweep range = (0.7 x 2nd percentile, 10 x 98th percentile) of the triangulated depths: far,
low-parallax surfaces (a backdrop) rarely survive the flow check, and planes are uniform in inverse
depth, so a far limit costs few planes."""
DEPTH_RANGES = ("auto", "rig")
"""How the sweep range is found: ``auto`` (flow triangulation, rig fallback) or ``rig`` (rig geometry only)."""
RIG_RANGE = (0.3, 2.5)
"""Fallback sweep range as multiples of the rig focus depth (see ``_rig_depth_range``)."""

Cell = tuple[int, int]


def _poses(grid: FrameGrid, w2c: np.ndarray | None) -> np.ndarray:
    """World-to-camera ``[V, T, 4, 4]`` from the argument, the grid, or estimation."""
    V, T = grid.num_views, grid.num_times
    if w2c is None:
        w2c = grid.cameras.w2c
    if w2c is None:
        from recon.tracking.cameras import estimate_cameras

        w2c = estimate_cameras(grid).w2c
    w2c = np.array(w2c, np.float64)  # a writable copy (grids may hold broadcast views)
    if w2c.shape == (V, 4, 4):
        w2c = np.repeat(w2c[:, None], T, 1)
    if w2c.shape != (V, T, 4, 4):
        raise InputError(f"expected poses [V={V}, 4, 4] or [V, T={T}, 4, 4], got {list(w2c.shape)}", field="w2c")
    return w2c


def _neighbours(v: int, V: int, k: int, w2c: np.ndarray | None = None, t: int = 0) -> list[int]:
    """Matching views of ``v``: as many as the index rule ``v-1, v+1, ..., v-k, v+k`` (within
    ``[0, V)``) gives. Without poses, those; with poses ``w2c [V, T, 4, 4]``, the views whose
    camera centres at time ``t`` are nearest (ties in index order), so unordered real rigs match
    neighbouring cameras and evenly spaced rigs in index order keep the index rule."""
    by_index = [n for d in range(1, V) for n in (v - d, v + d) if 0 <= n < V]
    near = [n for n in by_index if abs(n - v) <= k]
    if w2c is None:
        return near
    centres = np.linalg.inv(w2c[:, t])[:, :3, 3]
    dist = np.linalg.norm(centres - centres[v], axis=1)
    dist = dist / max(float(dist.max()), 1e-12)
    rank = {n: i for i, n in enumerate(by_index)}
    order = sorted(by_index, key=lambda n: (round(float(dist[n]), 6), rank[n]))
    return order[: len(near)]


def _gray(img: np.ndarray, device: torch.device) -> torch.Tensor:
    g = torch.from_numpy(img).to(device).float().div_(255.0)
    return (0.299 * g[..., 0] + 0.587 * g[..., 1] + 0.114 * g[..., 2])[None, None]  # [1, 1, H, W]


def _depth_range(grid: FrameGrid, v: int, n: int, t: int, w2c: np.ndarray) -> tuple[float, float]:
    """Depth range of frame (v, t) from flow correspondences with view n, triangulated."""
    import cv2

    from recon.tracking.flow import FlowCache, chain_2d

    H, W = grid.height, grid.width
    K = grid.cameras.K[:, t]
    flows = FlowCache([grid.images[v, t], grid.images[n, t]])
    step = max(2, int(np.sqrt(H * W / 2000)))
    ii, jj = np.meshgrid(np.arange(step // 2, H, step), np.arange(step // 2, W, step), indexing="ij")
    uv0 = np.stack([jj.ravel() + 0.5, ii.ravel() + 0.5], 1).astype(np.float64)
    uv, alive = chain_2d(flows, uv0, [0, 1], H, W)
    ok = alive[:, 1]
    if ok.sum() < 10:
        # widely spaced real rigs (e.g. CMU Panoptic): flow finds too few matches; with known
        # cameras the rig geometry still bounds the depth
        return _rig_depth_range(v, t, w2c)
    x1 = (np.c_[uv[ok, 0], np.ones(ok.sum())] @ np.linalg.inv(K[v]).T)[:, :2]
    x2 = (np.c_[uv[ok, 1], np.ones(ok.sum())] @ np.linalg.inv(K[n]).T)[:, :2]
    rel = w2c[n, t] @ np.linalg.inv(w2c[v, t])
    X = cv2.triangulatePoints(np.eye(4)[:3], rel[:3], x1.T, x2.T)
    z = X[2] / X[3]
    z = z[np.isfinite(z) & (z > 0)]
    if len(z) < 10 and w2c.shape[0] >= 3:
        return _rig_depth_range(v, t, w2c)
    if len(z) < 10:
        raise InputError(f"could not triangulate points between views {v} and {n} at time {t} (cameras wrong or no parallax?)", grid.source, "w2c")
    lo, hi = np.percentile(z, [2, 98])
    return float(lo * RANGE_MARGIN[0]), float(hi * RANGE_MARGIN[1])


def _rig_depth_range(v: int, t: int, w2c: np.ndarray) -> tuple[float, float]:
    """Depth range of view ``v`` at time ``t`` from the rig geometry alone: the least-squares
    point nearest all cameras' optical axes (where an inward-facing rig looks) at z-depth ``d``
    in camera ``v`` gives ``(RIG_RANGE[0] * d, RIG_RANGE[1] * d)``. Used when flow
    correspondences are too few to triangulate (wide baselines)."""
    c2w = np.linalg.inv(w2c[:, t])  # [V, 4, 4]
    centres, axes = c2w[:, :3, 3], c2w[:, :3, 2]
    axes = axes / np.linalg.norm(axes, axis=1, keepdims=True)
    proj = np.eye(3)[None] - axes[:, :, None] * axes[:, None, :]  # [V, 3, 3]
    A, b = proj.sum(0), np.einsum("vij,vj->i", proj, centres)
    focus = np.linalg.lstsq(A, b, rcond=None)[0]
    d = float((w2c[v, t, :3, :3] @ focus + w2c[v, t, :3, 3])[2])
    if not np.isfinite(d) or d <= 0:
        raise InputError(f"views' optical axes do not meet in front of view {v} at time {t}; cannot bound the depth", field="w2c")
    return RIG_RANGE[0] * d, RIG_RANGE[1] * d


def _box(x: torch.Tensor, w: int) -> torch.Tensor:
    return F.avg_pool2d(x, w, stride=1, padding=w // 2, count_include_pad=False)


def sweep(
    ref: torch.Tensor,
    srcs: list[torch.Tensor],
    K_ref: np.ndarray,
    K_src: list[np.ndarray],
    rel: list[np.ndarray],
    depth_range: tuple[float, float],
    num_depths: int = NUM_DEPTHS,
    window: int = WINDOW,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plane sweep for one reference image.

    ``ref`` and ``srcs``: grey ``[1, 1, H, W]`` in [0, 1]; ``rel[i]``: 4x4 reference-camera ->
    source-camera transform; ``depth_range``: (near, far) z-depth. Returns ``(depth [H, W],
    score [H, W])``: the best plane (sub-plane refined) and its aggregated ZNCC."""
    device = ref.device
    _, _, H, W = ref.shape
    near, far = depth_range
    inv = torch.linspace(1.0 / near, 1.0 / far, num_depths, device=device, dtype=torch.float64)
    ys, xs = torch.meshgrid(torch.arange(H, device=device, dtype=torch.float64) + 0.5, torch.arange(W, device=device, dtype=torch.float64) + 0.5, indexing="ij")
    Kinv = torch.as_tensor(np.linalg.inv(K_ref), device=device)
    rays = torch.stack([xs, ys, torch.ones_like(xs)], -1).reshape(-1, 3) @ Kinv.T  # [HW, 3]
    mu_r = _box(ref, window)
    var_r = (_box(ref * ref, window) - mu_r**2).clamp_min(0)
    k_best = max(1, (len(srcs) + 1) // 2)
    z = (1.0 / inv).float()  # [D]
    rays32 = rays.float()
    per_src = []
    for src, Ks, T in zip(srcs, K_src, rel):
        # homography of every plane at once: pixel -> ray * z -> source camera -> source pixel
        P = torch.as_tensor(np.array(Ks), device=device, dtype=torch.float32) @ torch.as_tensor(np.array(T[:3]), device=device, dtype=torch.float32)  # [3, 4]
        q = (rays32 @ P[:, :3].T)[None] * z[:, None, None] + P[:, 3]  # [D, HW, 3]
        zs = q[..., 2].clamp_min(1e-9)
        u, v = q[..., 0] / zs, q[..., 1] / zs
        grid = torch.stack([u / W * 2 - 1, v / H * 2 - 1], -1).reshape(num_depths, H, W, 2)
        warped = F.grid_sample(src.expand(num_depths, 1, H, W), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        inside = ((u >= 0) & (u <= W) & (v >= 0) & (v <= H) & (q[..., 2] > 0)).reshape(num_depths, 1, H, W).float()
        mu_s = _box(warped, window)
        var_s = (_box(warped * warped, window) - mu_s**2).clamp_min(0)
        cov = _box(ref * warped, window) - mu_r * mu_s
        zncc = cov / torch.sqrt(var_r * var_s + 1e-8)
        zncc = torch.where(_box(inside, window) > 0.999, zncc, torch.full_like(zncc, -1.0))
        per_src.append(zncc[:, 0])
    scores = torch.stack(per_src).topk(k_best, dim=0).values.mean(0)  # [D, H, W]
    best = scores.argmax(0)
    s_best = scores.gather(0, best[None])[0]
    # parabola through the neighbouring planes' scores, in plane-index units
    i0 = (best - 1).clamp(0, num_depths - 1)
    i2 = (best + 1).clamp(0, num_depths - 1)
    s0 = scores.gather(0, i0[None])[0]
    s2 = scores.gather(0, i2[None])[0]
    den = s0 - 2 * s_best + s2
    off = torch.where((den < -1e-6) & (best > 0) & (best < num_depths - 1), 0.5 * (s0 - s2) / den, torch.zeros_like(den)).clamp(-0.5, 0.5)
    idx = best.double() + off.double()
    step = (inv[-1] - inv[0]) / (num_depths - 1)
    depth = 1.0 / (inv[0] + idx * step)
    valid = (s_best > MIN_ZNCC) & (torch.sqrt(var_r[0, 0]) > MIN_STD) & (best > 0) & (best < num_depths - 1)
    return torch.where(valid, depth, torch.zeros_like(depth)).float(), s_best


def _consistent(depth_ref: torch.Tensor, depth_src: torch.Tensor, K_ref: np.ndarray, K_src: np.ndarray, T: np.ndarray, tol: float) -> torch.Tensor:
    """``bool [H, W]``: reference depths that, moved into the source camera (``T``: ref -> src),
    agree with the source's depth at the pixel they land in within ``tol`` (relative)."""
    device = depth_ref.device
    H, W = depth_ref.shape
    ys, xs = torch.meshgrid(torch.arange(H, device=device, dtype=torch.float64) + 0.5, torch.arange(W, device=device, dtype=torch.float64) + 0.5, indexing="ij")
    rays = torch.stack([xs, ys, torch.ones_like(xs)], -1).reshape(-1, 3) @ torch.as_tensor(np.linalg.inv(K_ref), device=device).T
    Tt = torch.as_tensor(np.array(T), device=device)
    Xs = rays * depth_ref.reshape(-1, 1).double() @ Tt[:3, :3].T + Tt[:3, 3]
    q = Xs @ torch.as_tensor(np.array(K_src), device=device).T
    zs = q[:, 2]
    u = torch.floor(q[:, 0] / zs.clamp_min(1e-9)).long()
    v = torch.floor(q[:, 1] / zs.clamp_min(1e-9)).long()
    inside = (zs > 0) & (u >= 0) & (u < W) & (v >= 0) & (v < H)
    ds = depth_src[v.clamp(0, H - 1), u.clamp(0, W - 1)].double()
    ok = inside & (ds > 0) & ((ds - zs).abs() <= tol * zs)
    return ok.reshape(H, W) & (depth_ref > 0)


def mvs_depth(
    grid: FrameGrid,
    cells: list[Cell],
    device: torch.device = torch.device("cpu"),
    w2c: np.ndarray | None = None,
    neighbours: int = NEIGHBOURS,
    num_depths: int = NUM_DEPTHS,
    depth_range: str = "auto",
) -> torch.Tensor:
    """Plane-sweep depth of the given cells (see module docstring): float32 ``[N, H, W]`` on
    ``device``, z-depth in the poses' units, 0 where invalid. Needs at least 2 views.
    ``depth_range``: ``auto`` or ``rig`` (see module docstring)."""
    V, T, H, W = grid.shape
    if V < 2:
        raise InputError(f"grid has {V} view; multi-view stereo needs at least 2", grid.source, "images")
    if depth_range not in DEPTH_RANGES:
        raise InputError(f"unknown MVS depth range {depth_range!r}; expected one of {', '.join(DEPTH_RANGES)}", field="depth_range")
    poses = _poses(grid, w2c)
    K = grid.cameras.K
    raw: dict[Cell, torch.Tensor] = {}

    def raw_depth(v: int, t: int) -> torch.Tensor:
        if (v, t) not in raw:
            nb = _neighbours(v, V, neighbours, poses, t)
            rng = _rig_depth_range(v, t, poses) if depth_range == "rig" else _depth_range(grid, v, nb[0], t, poses)
            rel = [poses[n, t] @ np.linalg.inv(poses[v, t]) for n in nb]
            d, _ = sweep(
                _gray(grid.images[v, t], device),
                [_gray(grid.images[n, t], device) for n in nb],
                K[v, t],
                [K[n, t] for n in nb],
                rel,
                rng,
                num_depths=num_depths,
            )
            raw[(v, t)] = d
        return raw[(v, t)]

    out = []
    for v, t in cells:
        d = raw_depth(v, t)
        ok = torch.zeros_like(d, dtype=torch.bool)
        for n in _neighbours(v, V, 1, poses, t):
            T_rn = poses[n, t] @ np.linalg.inv(poses[v, t])
            ok |= _consistent(d, raw_depth(n, t), K[v, t], K[n, t], T_rn, CONSISTENCY_TOL)
        out.append(torch.where(ok, d, torch.zeros_like(d)))
    return torch.stack(out)
