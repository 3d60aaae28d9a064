"""Camera poses of the freeze-time frames when a grid has none (a small structure-from-motion).

Steps (all views at ``ref_time``; intrinsics from the grid, which always has ``K`` — loaders
without intrinsics use a field-of-view guess, :func:`recon.tracking.geometry.default_intrinsics`):

1. correspondences: textured grid points of a few keyframes carried through the freeze-time
   video by DIS optical flow with a forward-backward check (:func:`feature_tracks`; on the small,
   smoothly textured synthetic frames this gives ~10x more reliable matches than SIFT);
2. each neighbouring pair's correspondences are filtered by an essential matrix (RANSAC,
   :data:`RANSAC_PX` px);
3. the central view is the world frame; the neighbour sharing the most correspondences gets the
   essential-matrix pose (unit baseline), the other views are added outwards by PnP (RANSAC)
   on triangulated points;
4. bundle adjustment of all poses but the central one and all points (:func:`bundle_adjust`:
   Levenberg-Marquardt with a Schur complement, Huber loss), once more after dropping
   observations off by more than :data:`OUTLIER_PX`;
5. scale: the median depth of the sparse points in the central view is set to 1 (the overall scale
   is not observable from images; MVS depth and tracks are then in these units).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from recon.errors import InputError
from recon.grid import FrameGrid

RANSAC_PX = 1.0
"""Essential-matrix RANSAC threshold (pixels)."""
OUTLIER_PX = 2.0
"""Observations off by more than this after the first bundle adjustment are dropped."""
MIN_MATCHES = 20
SEEDS_PER_VIEW = 1500
MAX_BA_POINTS = 1500


@dataclass
class CameraEstimate:
    """Estimated cameras of the freeze-time frames. World frame = the central view's camera."""

    K: np.ndarray
    """[V, 3, 3] intrinsics used (pixels)."""
    w2c: np.ndarray
    """[V, 4, 4] world-to-camera (OpenCV); ``w2c[central] = I``; unit: median central depth = 1."""
    points: np.ndarray
    """[N, 3] sparse points (world frame) that survived bundle adjustment."""
    reprojection_rms: float
    """Root-mean-square reprojection error of the inlier observations after BA, pixels."""
    num_observations: int


def _normalise(uv: np.ndarray, K: np.ndarray) -> np.ndarray:
    return (np.c_[uv, np.ones(len(uv))] @ np.linalg.inv(K).T)[:, :2]


def _textured_seeds(gray: np.ndarray, count: int) -> np.ndarray:
    """About ``count`` seed positions ``[N, 2]`` (recon pixel convention) on a regular grid, keeping
    the textured ones (minimum eigenvalue of the structure tensor above 1e-3 of the image's maximum)."""
    H, W = gray.shape
    step = max(2, int(round(np.sqrt(H * W / max(count, 1)))))
    ii, jj = np.meshgrid(np.arange(step // 2, H, step), np.arange(step // 2, W, step), indexing="ij")
    ev = cv2.cornerMinEigenVal(gray.astype(np.float32) / 255.0, 5)
    ok = ev[ii, jj] > 1e-3 * max(float(ev.max()), 1e-12)
    return np.stack([jj[ok] + 0.5, ii[ok] + 0.5], 1).astype(np.float64)


def _essential(x1: np.ndarray, x2: np.ndarray, f: float) -> tuple[np.ndarray | None, np.ndarray]:
    if len(x1) < 8:
        return None, np.zeros(len(x1), bool)
    E, mask = cv2.findEssentialMat(x1, x2, np.eye(3), method=cv2.RANSAC, prob=0.999, threshold=RANSAC_PX / f)
    if E is None or E.shape != (3, 3):
        return None, np.zeros(len(x1), bool)
    return E, mask.ravel().astype(bool)


def _triangulate(P1: np.ndarray, P2: np.ndarray, x1: np.ndarray, x2: np.ndarray) -> np.ndarray:
    """Points ``[N, 3]`` from normalised observations ``x [N, 2]`` and 3x4 ``P = [R | t]``."""
    X = cv2.triangulatePoints(P1, P2, x1.T.astype(np.float64), x2.T.astype(np.float64))
    return (X[:3] / X[3]).T


def feature_tracks(grid: FrameGrid, keyframes: int = 3, seeds_per_view: int = SEEDS_PER_VIEW) -> tuple[np.ndarray, np.ndarray]:
    """Multi-view correspondences of the freeze-time frames from chained DIS flow.

    Textured grid points of a few keyframes are carried through the freeze-time video with the
    forward-backward check of :func:`recon.tracking.flow.chain_2d`. Returns ``uv [N, V, 2]`` (pixel
    centres convention, NaN where unobserved) and ``observed [N, V]``."""
    from recon.tracking.flow import FlowCache, chain_2d
    from recon.tracking.seeds import keyframe_views

    V, r = grid.num_views, grid.ref_time
    H, W = grid.height, grid.width
    flows = FlowCache([grid.images[v, r] for v in range(V)])
    uv_l, ob_l = [], []
    for k in keyframe_views(V, int(grid.central_view), keyframes):
        seeds = _textured_seeds(flows.gray[k], seeds_per_view)
        if len(seeds) == 0:
            continue
        uv = np.full((len(seeds), V, 2), np.nan)
        ob = np.zeros((len(seeds), V), bool)
        for order in (list(range(k, V)), list(range(k, -1, -1))):
            u, a = chain_2d(flows, seeds, order, H, W)
            uv[:, order] = np.where(a[..., None], u, uv[:, order])
            ob[:, order] |= a
        uv_l.append(uv)
        ob_l.append(ob)
    if not uv_l:
        return np.zeros((0, V, 2)), np.zeros((0, V), bool)
    return np.concatenate(uv_l), np.concatenate(ob_l)


def estimate_cameras(grid: FrameGrid) -> CameraEstimate:
    """Relative poses of the freeze-time frames (views at ``grid.ref_time``), in the central view's
    camera frame, from image matches only (see module docstring).

    Returns :class:`CameraEstimate` with ``w2c [V, 4, 4]``. Raises :class:`InputError` naming the
    view when a view cannot be registered (too few matches: textureless, blank or unrelated frames).
    """
    V = grid.num_views
    if V < 2:
        raise InputError(f"grid has {V} view; camera estimation needs at least 2", grid.source, "images")
    r, c = grid.ref_time, int(grid.central_view)
    K = grid.cameras.K[:, r].copy()
    name = (lambda v: grid.view_names[v]) if grid.view_names else (lambda v: f"view {v}")
    cv2.setRNGSeed(0)  # RANSAC draws: the same grid gives the same cameras
    uv, ob = feature_tracks(grid)
    N = len(uv)
    norm = np.full_like(uv, np.nan)
    for v in range(V):
        norm[ob[:, v], v] = _normalise(uv[ob[:, v], v], K[v])
    f_mean = float(np.mean(K[:, 0, 0]))
    # epipolar check of every neighbouring pair; an observation inconsistent with its
    # neighbour towards the central view is dropped
    for a in range(V - 1):
        b = a + 1
        both = ob[:, a] & ob[:, b]
        E, inl = _essential(norm[both, a], norm[both, b], f_mean)
        if E is None:
            continue
        bad = np.flatnonzero(both)[~inl]
        far = b if abs(b - c) >= abs(a - c) else a
        ob[bad, far] = False
    counts = ob.sum(0)
    for v in range(V):
        if counts[v] < MIN_MATCHES:
            raise InputError(
                f"{name(v)}: only {int(counts[v])} reliable correspondences with its neighbours "
                "(blank, textureless or unrelated frame?); cannot estimate cameras",
                grid.source,
                "images",
            )
    # initial pair: central view and the neighbour sharing the most correspondences
    nbrs = [v for v in (c - 1, c + 1) if 0 <= v < V]
    n = max(nbrs, key=lambda v: int((ob[:, c] & ob[:, v]).sum()))
    both = ob[:, c] & ob[:, n]
    E, inl = _essential(norm[both, c], norm[both, n], f_mean)
    if E is None or inl.sum() < MIN_MATCHES:
        raise InputError(f"{name(c)} (central) and {name(n)}: no consistent relative pose", grid.source, "images")
    _, R, t, _ = cv2.recoverPose(E, norm[both, c][inl], norm[both, n][inl], np.eye(3))
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, t.ravel()
    w2c: dict[int, np.ndarray] = {c: np.eye(4), n: T}
    X = np.full((N, 3), np.nan)

    def triangulate_new() -> None:
        reg = np.array(sorted(w2c))
        todo = ~np.isfinite(X).all(1) & (ob[:, reg].sum(1) >= 2)
        for i in np.flatnonzero(todo):
            vs = reg[ob[i, reg]]
            v1, v2 = int(vs.min()), int(vs.max())  # widest registered pair
            P = _triangulate(w2c[v1][:3], w2c[v2][:3], norm[i, v1][None], norm[i, v2][None])[0]
            z1 = (w2c[v1][:3, :3] @ P + w2c[v1][:3, 3])[2]
            z2 = (w2c[v2][:3, :3] @ P + w2c[v2][:3, 3])[2]
            if np.isfinite(P).all() and z1 > 0 and z2 > 0:
                X[i] = P

    triangulate_new()
    for v in sorted((v for v in range(V) if v not in w2c), key=lambda v: (abs(v - c), v)):
        ids = np.flatnonzero(ob[:, v] & np.isfinite(X).all(1))
        if len(ids) < 6:
            raise InputError(f"{name(v)} shares only {len(ids)} triangulated points with the registered views; cannot estimate its camera", grid.source, "images")
        obj, img = X[ids], norm[ids, v]
        ok, rvec, tvec, inl = cv2.solvePnPRansac(obj, img, np.eye(3), None, reprojectionError=2.0 * RANSAC_PX / f_mean, iterationsCount=200, flags=cv2.SOLVEPNP_EPNP)
        if not ok or inl is None or len(inl) < 6:
            raise InputError(f"{name(v)}: pose could not be estimated from {len(ids)} correspondences", grid.source, "images")
        inl = inl.ravel()
        rvec, tvec = cv2.solvePnPRefineLM(obj[inl], img[inl], np.eye(3), None, rvec, tvec)
        T = np.eye(4)
        T[:3, :3] = cv2.Rodrigues(rvec)[0]
        T[:3, 3] = tvec.ravel()
        w2c[v] = T
        triangulate_new()

    # bundle adjustment (pixels), central pose fixed; at most MAX_BA_POINTS best-observed points
    tids = np.flatnonzero(np.isfinite(X).all(1))
    tids = tids[np.argsort(-ob[tids].sum(1), kind="stable")[:MAX_BA_POINTS]]
    oi, ov = np.nonzero(ob[tids])  # observation -> (point row in tids, view)
    init = np.stack([w2c[v] for v in range(V)])
    poses, P, sel, err = bundle_adjust(K, init, X[tids], ov, oi, uv[tids[oi], ov], fixed=c)
    Rs, ts = poses[:, :3, :3], poses[:, :3, 3]
    # scale: median depth of the sparse points in the central view = 1
    good = np.unique(oi[sel])
    zc = P[good, 2]
    zc = zc[zc > 0]
    s = 1.0 / float(np.median(zc)) if len(zc) else 1.0
    out = np.tile(np.eye(4), (V, 1, 1))
    out[:, :3, :3] = Rs
    out[:, :3, 3] = ts * s
    return CameraEstimate(K=K, w2c=out, points=P[good] * s, reprojection_rms=float(np.sqrt(np.mean(err[sel] ** 2))), num_observations=int(sel.sum()))


def _skew(v: np.ndarray) -> np.ndarray:
    """``[N, 3] -> [N, 3, 3]`` cross-product matrices."""
    z = np.zeros(len(v))
    return np.stack([np.stack([z, -v[:, 2], v[:, 1]], 1), np.stack([v[:, 2], z, -v[:, 0]], 1), np.stack([-v[:, 1], v[:, 0], z], 1)], 1)


def _sum_by(index: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """``out[i] = sum of values[k] with index[k] == i`` for ``values [N, ...]`` -> ``[n, ...]``
    (np.bincount per component: much faster than ``np.add.at``)."""
    flat = values.reshape(len(values), -1)
    out = np.stack([np.bincount(index, weights=flat[:, j], minlength=n) for j in range(flat.shape[1])], 1)
    return out.reshape((n,) + values.shape[1:])


def _rotvec_to_matrix(w: np.ndarray) -> np.ndarray:
    """Rodrigues' formula for rotation vectors ``[N, 3]`` -> ``[N, 3, 3]``."""
    th = np.linalg.norm(w, axis=1)[:, None, None]
    S = _skew(w)
    small = th < 1e-8
    ths = np.where(small, 1.0, th)
    a = np.where(small, 1.0, np.sin(ths) / ths)
    b = np.where(small, 0.5, (1 - np.cos(ths)) / ths**2)
    return np.eye(3)[None] + a * S + b * (S @ S)


def bundle_adjust(
    K: np.ndarray,
    w2c: np.ndarray,
    points: np.ndarray,
    obs_view: np.ndarray,
    obs_point: np.ndarray,
    obs_uv: np.ndarray,
    fixed: int,
    rounds: int = 2,
    iters: int = 50,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Minimise pixel reprojection error over poses (all but view ``fixed``) and points.

    ``K [V, 3, 3]``, ``w2c [V, 4, 4]`` initial poses, ``points [M, 3]``, observations: view ``[O]``,
    point index ``[O]``, pixel ``[O, 2]``. Levenberg-Marquardt on the normal equations with the
    points eliminated (Schur complement: a dense 6(V-1) system, 3x3 blocks per point), poses
    updated as ``R <- exp(dw) R``, Huber weights at 1 px (IRLS). The overall scale is left to the
    damping (it is unobservable). After each round, observations off by more than
    :data:`OUTLIER_PX` are dropped. Returns ``(w2c [V, 4, 4], points [M, 3], inlier [O], error [O] px)``."""
    V, M = len(w2c), len(points)
    free = np.array([v for v in range(V) if v != fixed])
    slot = np.full(V, -1)
    slot[free] = np.arange(len(free))
    F = len(free)
    R = w2c[:, :3, :3].copy()
    t = w2c[:, :3, 3].copy()
    X = points.astype(np.float64).copy()

    def project_all(R, t, X, v, p):
        Xc = np.einsum("nij,nj->ni", R[v], X[p]) + t[v]
        q = np.einsum("nij,nj->ni", K[v], Xc)
        return Xc, q[:, :2] / q[:, 2:3]

    def robust_cost(r: np.ndarray, z: np.ndarray) -> float:
        # Huber at 1 px; an observation behind its camera costs as much as a 1000 px error
        e = np.where(z > 1e-9, np.linalg.norm(r, axis=1), 1e3)
        return float(np.where(e <= 1.0, 0.5 * e**2, e - 0.5).sum())

    sel = np.ones(len(obs_view), bool)
    for _ in range(rounds):
        v, p, uv = obs_view[sel], obs_point[sel], obs_uv[sel]
        # pairs of observations (of free views) of the same point: the Schur complement's blocks
        hv = np.flatnonzero(slot[v] >= 0)
        order = hv[np.argsort(p[hv], kind="stable")]
        starts = np.flatnonzero(np.r_[True, np.diff(p[order]) != 0])
        lens = np.diff(np.r_[starts, len(order)])
        pa, pb = [], []
        for k in np.unique(lens):
            grp = starts[lens == k][:, None] + np.arange(k)[None]  # [groups, k] positions in order
            pa.append(np.repeat(grp, k, 1).ravel())
            pb.append(np.tile(grp, (1, k)).ravel())
        # positions inside the "has" subset (obs of free views), in the same order as hv
        rank = np.empty(len(v), int)
        rank[hv] = np.arange(len(hv))
        pair_a = rank[order[np.concatenate(pa)]] if pa else np.zeros(0, int)
        pair_b = rank[order[np.concatenate(pb)]] if pb else np.zeros(0, int)
        lam = 1e-3
        Xc, pr = project_all(R, t, X, v, p)
        cost = robust_cost(pr - uv, Xc[:, 2])
        converged = False
        for _ in range(iters):
            Xc, pr = project_all(R, t, X, v, p)
            r = pr - uv
            e = np.linalg.norm(r, axis=1)
            wgt = np.where(e <= 1.0, 1.0, 1.0 / np.maximum(e, 1e-12))  # Huber IRLS weights
            z = Xc[:, 2]
            Kv = K[v]
            dproj = np.zeros((len(v), 2, 3))
            dproj[:, 0, 0] = Kv[:, 0, 0] / z
            dproj[:, 0, 1] = Kv[:, 0, 1] / z
            dproj[:, 0, 2] = -(Kv[:, 0, 0] * Xc[:, 0] + Kv[:, 0, 1] * Xc[:, 1]) / z**2
            dproj[:, 1, 1] = Kv[:, 1, 1] / z
            dproj[:, 1, 2] = -Kv[:, 1, 1] * Xc[:, 1] / z**2
            Jp = dproj @ R[v]  # [n, 2, 3] wrt the point
            RX = Xc - t[v]
            Jc = np.concatenate([dproj @ (-_skew(RX)), dproj], 2)  # [n, 2, 6] wrt (dw, dt), left perturbation
            wr = wgt[:, None] * r
            JpT = Jp.transpose(0, 2, 1)
            Vb = _sum_by(p, wgt[:, None, None] * (JpT @ Jp), M)  # point blocks [M, 3, 3]
            gp = _sum_by(p, (JpT @ wr[..., None])[..., 0], M)
            has = slot[v] >= 0
            sv = slot[v][has]
            JcT = Jc[has].transpose(0, 2, 1)
            U = _sum_by(sv, wgt[has, None, None] * (JcT @ Jc[has]), F)
            gc = _sum_by(sv, (JcT @ wr[has][..., None])[..., 0], F)
            Wo = wgt[has, None, None] * (JcT @ Jp[has])  # [n, 6, 3]
            while True:
                Vd = Vb + lam * (Vb * np.eye(3)) + 1e-9 * np.eye(3)
                Vinv = np.linalg.inv(Vd)
                Ud = U + lam * (U * np.eye(6))
                S = np.zeros((6 * F, 6 * F))
                S[np.arange(6 * F), np.arange(6 * F)] += 1e-9
                for f in range(F):
                    S[6 * f : 6 * f + 6, 6 * f : 6 * f + 6] += Ud[f]
                # - sum over points of W_fp V_p^-1 W_gp^T, accumulated per point
                ph = p[has]
                WV = Wo @ Vinv[ph]  # [n, 6, 3]
                rhs = -gc + _sum_by(sv, (WV @ gp[ph][..., None])[..., 0], F)
                blocks = WV[pair_a] @ Wo[pair_b].transpose(0, 2, 1)  # [pairs, 6, 6]
                S4 = _sum_by(sv[pair_a] * F + sv[pair_b], blocks, F * F).reshape(F, F, 6, 6)
                S -= S4.transpose(0, 2, 1, 3).reshape(6 * F, 6 * F)
                try:
                    dc = np.linalg.solve(S, rhs.ravel()).reshape(F, 6)
                except np.linalg.LinAlgError:
                    lam *= 10
                    continue
                # back-substitute the points: V dX = -g_p - W^T dc
                rp = -gp - _sum_by(ph, (Wo.transpose(0, 2, 1) @ dc[sv][..., None])[..., 0], M)
                dX = (Vinv @ rp[..., None])[..., 0]
                R_new, t_new = R.copy(), t.copy()
                R_new[free] = _rotvec_to_matrix(dc[:, :3]) @ R[free]
                t_new[free] = t[free] + dc[:, 3:]
                X_new = X + dX
                Xc_new, pr_new = project_all(R_new, t_new, X_new, v, p)
                new_cost = robust_cost(pr_new - uv, Xc_new[:, 2])
                if new_cost < cost:
                    converged = cost - new_cost < 1e-7 * cost
                    R, t, X, cost = R_new, t_new, X_new, new_cost
                    lam = max(lam / 3, 1e-7)
                    break
                lam *= 4
                if lam > 1e8:
                    break
            if lam > 1e8 or converged:
                break
        _, pr = project_all(R, t, X, obs_view, obs_point)
        err = np.linalg.norm(pr - obs_uv, axis=1)
        sel = err <= OUTLIER_PX
    out = np.tile(np.eye(4), (V, 1, 1))
    out[:, :3, :3], out[:, :3, 3] = R, t
    return out, X, sel, err
