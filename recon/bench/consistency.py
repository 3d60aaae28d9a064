"""A weights-free multi-view consistency score: a small OpenCV structure-from-motion run.

For grids without ground truth (generated grids), the question "are these views of one 3D
scene?" is answered the classical way, per time step: SIFT features, ratio-test matches between
neighbouring views, an essential matrix + cheirality check on the seed pair (the central view
and its neighbour), triangulation, then incremental PnP registration of the other views outward
from the centre, triangulating new points as the chain grows. A consistent grid registers every
view with sub-pixel to pixel reprojection error; generator-like inconsistency (warps, drift)
shows as unregistered views and larger errors. No learned weights, no network.

Scores (per time step, then averaged): ``registration_rate`` (registered views / V, in [0, 1]),
``reprojection_px`` (mean reprojection error of the PnP inliers of registered views, pixels),
``seed_inlier_ratio`` (essential-matrix inliers / matches of the seed pair).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from recon.bench.metrics import summarize

RATIO_TEST = 0.75
"""Lowe's ratio for accepting a SIFT match."""
RANSAC_PX = 2.0
"""Inlier threshold of the essential-matrix and PnP RANSAC, pixels."""
MIN_INLIERS = 10
"""A view is registered when PnP keeps at least this many inliers (and a quarter of its matches)."""
MAX_FEATURES = 4000
DETECT_SIZE = 512
"""Images whose long side is shorter are upsampled to about this size before SIFT (small renders
have too few scale-space extrema otherwise); keypoints are mapped back to the original pixels."""
NEIGHBOURS = 2
"""A new view is matched against the registered views up to this many indices away."""


def _features(gray: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    up = max(1, int(round(DETECT_SIZE / max(gray.shape))))
    img = cv2.resize(gray, None, fx=up, fy=up, interpolation=cv2.INTER_CUBIC) if up > 1 else gray
    kps, desc = cv2.SIFT_create(nfeatures=MAX_FEATURES).detectAndCompute(img, None)
    # keypoints are in OpenCV pixel coordinates (centre of the top-left pixel at 0); ours put it at 0.5
    pts = (np.array([k.pt for k in kps], np.float64).reshape(-1, 2) + 0.5) / up
    return pts, desc


def _match(d1: np.ndarray | None, d2: np.ndarray | None) -> np.ndarray:
    """Ratio-test, mutual-consistent matches ``[M, 2]`` (index in 1, index in 2)."""
    if d1 is None or d2 is None or len(d1) < 2 or len(d2) < 2:
        return np.zeros((0, 2), np.int64)
    bf = cv2.BFMatcher(cv2.NORM_L2)
    fwd = bf.knnMatch(d1, d2, k=2)
    good = {m.queryIdx: m.trainIdx for m, n in (p for p in fwd if len(p) == 2) if m.distance < RATIO_TEST * n.distance}
    back = bf.match(d2, d1)
    back_map = {m.queryIdx: m.trainIdx for m in back}
    pairs = [(i, j) for i, j in good.items() if back_map.get(j) == i]
    return np.array(pairs, np.int64).reshape(-1, 2)


def _normalize(pts: np.ndarray, K: np.ndarray) -> np.ndarray:
    return (pts - K[:2, 2]) / np.array([K[0, 0], K[1, 1]])


def _triangulate(P1: np.ndarray, P2: np.ndarray, x1: np.ndarray, x2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Normalised image points -> 3D points ``[N, 3]`` and a validity mask (in front of both cameras)."""
    if len(x1) == 0:
        return np.zeros((0, 3)), np.zeros(0, bool)
    Xh = cv2.triangulatePoints(P1, P2, x1.T.astype(np.float64), x2.T.astype(np.float64))
    w = Xh[3]
    ok = np.abs(w) > 1e-12
    X = np.zeros((Xh.shape[1], 3))
    X[ok] = (Xh[:3, ok] / w[ok]).T
    z1 = X @ P1[:, :3].T + P1[:, 3]
    z2 = X @ P2[:, :3].T + P2[:, 3]
    ok &= (z1[:, 2] > 0) & (z2[:, 2] > 0)
    return X, ok


def sfm_consistency(images: np.ndarray, Ks: np.ndarray, center: int | None = None) -> dict[str, float]:
    """Register ``V`` views of one time step: ``images [V, H, W, 3]`` uint8, ``Ks [V, 3, 3]`` pixels.

    Returns ``registration_rate``, ``reprojection_px`` (NaN when fewer than two views register),
    ``seed_inlier_ratio`` and ``points`` (triangulated points). ``center`` (default ``V // 2``)
    seeds the reconstruction with its next view.
    """
    V = images.shape[0]
    nan = float("nan")
    if V < 2:
        return {"registration_rate": nan, "reprojection_px": nan, "seed_inlier_ratio": nan, "points": 0}
    c = V // 2 if center is None else int(center)
    feats = [_features(cv2.cvtColor(np.ascontiguousarray(im), cv2.COLOR_RGB2GRAY)) for im in images]
    Ks = np.asarray(Ks, np.float64)
    poses: dict[int, np.ndarray] = {}  # view -> [3, 4] world (= seed camera) to camera
    track: list[dict[int, int]] = [dict() for _ in range(V)]  # view -> {keypoint index: 3D point id}
    points: list[np.ndarray] = []
    errors: list[float] = []

    # seed pair: the central view and whichever neighbour it matches best
    cands = [x for x in (c + 1, c - 1) if 0 <= x < V]
    matches = {x: _match(feats[c][1], feats[x][1]) for x in cands}
    n = max(cands, key=lambda x: len(matches[x]))
    m = matches[n]
    seed_ratio = 0.0
    if len(m) >= 8:
        x1 = _normalize(feats[c][0][m[:, 0]], Ks[c])
        x2 = _normalize(feats[n][0][m[:, 1]], Ks[n])
        # OpenCV's essential-matrix RANSAC is reliable in pixel units: express both views'
        # points with the seed camera's intrinsics (exact for a pinhole without distortion)
        kc = Ks[c]
        p1 = x1 * np.array([kc[0, 0], kc[1, 1]]) + kc[:2, 2]
        p2 = x2 * np.array([kc[0, 0], kc[1, 1]]) + kc[:2, 2]
        E, inl = cv2.findEssentialMat(p1, p2, kc, method=cv2.RANSAC, prob=0.999, threshold=RANSAC_PX)
        if E is not None and E.shape == (3, 3):
            _, R, t, inl2 = cv2.recoverPose(E, p1, p2, kc, mask=inl.copy())
            keep = inl2.reshape(-1) > 0
            seed_ratio = float(keep.mean())
            if keep.sum() >= MIN_INLIERS:
                P1 = np.hstack([np.eye(3), np.zeros((3, 1))])
                P2 = np.hstack([R, t.reshape(3, 1)])
                X, ok = _triangulate(P1, P2, x1[keep], x2[keep])
                poses[c], poses[n] = P1, P2
                for (i, j), x, good in zip(m[keep], X, ok):
                    if good:
                        track[c][int(i)] = track[n][int(j)] = len(points)
                        points.append(x)

    # grow outward from the seed, each new view matched against registered views near it
    order = sorted((v for v in range(V) if v not in (c, n)), key=lambda v: (abs(v - c), v))
    for v in order if poses else []:
        nbs = sorted((u for u in poses if abs(u - v) <= NEIGHBOURS), key=lambda u: abs(u - v))
        if not nbs:
            continue
        pair = {u: _match(feats[v][1], feats[u][1]) for u in nbs}
        known: dict[int, int] = {}
        for u in nbs:
            for i, j in pair[u]:
                if int(j) in track[u] and int(i) not in known:
                    known[int(i)] = track[u][int(j)]
        if len(known) < 6:
            continue
        kp_idx = np.array(list(known.keys()))
        img_pts = feats[v][0][kp_idx]
        obj_pts = np.array([points[p] for p in known.values()])
        ok, rvec, tvec, inl = cv2.solvePnPRansac(obj_pts, img_pts, Ks[v], None, reprojectionError=RANSAC_PX,
                                                 iterationsCount=300, flags=cv2.SOLVEPNP_EPNP)
        if not ok or inl is None or len(inl) < max(MIN_INLIERS, len(known) // 4):
            continue
        inl = inl.reshape(-1)
        ok, rvec, tvec = cv2.solvePnP(obj_pts[inl], img_pts[inl], Ks[v], None, rvec, tvec, True, cv2.SOLVEPNP_ITERATIVE)
        R = cv2.Rodrigues(rvec)[0]
        poses[v] = np.hstack([R, tvec.reshape(3, 1)])
        proj = cv2.projectPoints(obj_pts[inl], rvec, tvec, Ks[v], None)[0].reshape(-1, 2)
        errors.extend(np.linalg.norm(proj - img_pts[inl], axis=1).tolist())
        pid = list(known.values())
        for k in inl:
            track[v][int(kp_idx[k])] = pid[k]
        nb = nbs[0]
        new = np.array([(i, j) for i, j in pair[nb] if int(j) not in track[nb] and int(i) not in track[v]], np.int64).reshape(-1, 2)
        if len(new):
            x1 = _normalize(feats[v][0][new[:, 0]], Ks[v])
            x2 = _normalize(feats[nb][0][new[:, 1]], Ks[nb])
            X, good = _triangulate(poses[v], poses[nb], x1, x2)
            # keep only new points that reproject well in both views
            for (i, j), x, g in zip(new, X, good):
                if not g:
                    continue
                ok_both = True
                for view, kp in ((v, i), (nb, j)):
                    xc = poses[view][:, :3] @ x + poses[view][:, 3]
                    uv = np.array([Ks[view][0, 0], Ks[view][1, 1]]) * (xc[:2] / xc[2]) + Ks[view][:2, 2]
                    ok_both &= float(np.linalg.norm(uv - feats[view][0][kp])) < RANSAC_PX
                if ok_both:
                    track[v][int(i)] = track[nb][int(j)] = len(points)
                    points.append(x)

    # reprojection error of the seed pair's own points
    for view in (c, n):
        if view in poses and track[view]:
            kp = np.array(list(track[view].keys()))
            X = np.array([points[p] for p in track[view].values()])
            xc = X @ poses[view][:, :3].T + poses[view][:, 3]
            uv = xc[:, :2] / xc[:, 2:3] * np.array([Ks[view][0, 0], Ks[view][1, 1]]) + Ks[view][:2, 2]
            err = np.linalg.norm(uv - feats[view][0][kp], axis=1)
            errors.extend(err[np.isfinite(err)].tolist())
    return {
        "registration_rate": len(poses) / V,
        "reprojection_px": float(np.mean(errors)) if len(poses) >= 2 and errors else nan,
        "seed_inlier_ratio": seed_ratio,
        "points": len(points),
    }


def grid_consistency(images: np.ndarray, Ks: np.ndarray, center: int | None = None, times: list[int] | None = None) -> dict[str, float]:
    """:func:`sfm_consistency` of each time step of ``images [V, T, H, W, 3]`` (``Ks [V, T, 3, 3]``),
    averaged over the time steps (``times`` selects some; default all). Keys as
    :func:`sfm_consistency` plus ``*_std`` over time."""
    T = images.shape[1]
    sel = list(range(T)) if times is None else list(times)
    per = [sfm_consistency(images[:, t], Ks[:, t], center) for t in sel]
    out: dict[str, float] = {}
    for k in ("registration_rate", "reprojection_px", "seed_inlier_ratio"):
        s = summarize([p[k] for p in per])
        out[k], out[k + "_std"] = s["mean"], s["std"]
    out["points"] = float(np.mean([p["points"] for p in per])) if per else math.nan
    return out
