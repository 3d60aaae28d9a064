"""Rigid / similarity alignment of corresponding 3D point sets (Umeyama 1991), plain and robust.

Used to get the pose of freeze-time frame i relative to the central frame from the tracked
points (``dst ~ s R src + t``); what a rigid fit leaves over is the per-view offset dp_i^v.
"""

from __future__ import annotations

import numpy as np
import torch

from recon.errors import InputError

ArrayLike = np.ndarray | torch.Tensor


def _as_np(a: ArrayLike | None, name: str) -> np.ndarray | None:
    if a is None:
        return None
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=np.float64)


def umeyama(
    src: ArrayLike,
    dst: ArrayLike,
    weights: ArrayLike | None = None,
    with_scale: bool = False,
    robust: str | None = None,
    iters: int = 10,
    inlier_threshold: float | None = None,
    ransac_trials: int = 100,
) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares transform with ``dst ~ scale * R @ src + t``.

    Args:
        src: ``[N, 3]`` source points (numpy or torch; any float dtype).
        dst: ``[N, 3]`` corresponding destination points.
        weights: optional ``[N]`` non-negative weights (e.g. visibility); zero rows are ignored.
        with_scale: fit a similarity (uniform scale) instead of a rigid transform (scale = 1).
        robust: None (plain weighted least squares); ``"irls"``: ``iters`` rounds of
            iteratively re-weighted least squares with Cauchy weights ``1 / (1 + (r / c)^2)``,
            ``c`` = ``inlier_threshold`` or 2.5 x (1.4826 x median residual), starting from the
            plain fit (fine for moderate outliers, can lock onto a wrong fit when a few gross
            outliers pull the start far off); ``"ransac"``: the best of ``ransac_trials``
            minimal 3-point fits (most points within ``inlier_threshold``, default 2 % of the
            destination cloud's median spread), refitted on its inliers, then IRLS as above.
        iters: IRLS rounds (``"irls"`` and ``"ransac"``).
        inlier_threshold: residual scale in the points' units (robust modes).
        ransac_trials: number of minimal samples (``"ransac"``; deterministic, seeded).

    Returns:
        ``(scale, R [3, 3], t [3])`` as float64 numpy; ``R`` is a proper rotation (det = +1).

    Raises:
        InputError: shapes differ, fewer than 3 points with positive weight, or non-finite input.
    """
    s = _as_np(src, "src")
    d = _as_np(dst, "dst")
    if s.ndim != 2 or s.shape[1] != 3 or s.shape != d.shape:
        raise InputError(f"expected src and dst [N, 3] of the same shape, got {list(s.shape)} and {list(d.shape)}", field="umeyama")
    w = np.ones(len(s)) if weights is None else _as_np(weights, "weights").reshape(-1)
    if w.shape != (len(s),):
        raise InputError(f"expected weights [{len(s)}], got {list(w.shape)}", field="umeyama")
    ok = np.isfinite(s).all(1) & np.isfinite(d).all(1) & np.isfinite(w) & (w > 0)
    if ok.sum() < 3:
        raise InputError(f"need at least 3 finite point pairs with positive weight, got {int(ok.sum())}", field="umeyama")
    s, d, w = s[ok], d[ok], w[ok]
    if robust is None:
        return _weighted_umeyama(s, d, w, with_scale)
    if robust not in ("irls", "ransac"):
        raise InputError(f"unknown robust mode {robust!r}; expected None, 'irls' or 'ransac'", field="umeyama")
    if robust == "ransac":
        if inlier_threshold is None:
            inlier_threshold = 0.02 * float(np.median(np.linalg.norm(d - np.median(d, 0), axis=1)))
        scale, R, t = _ransac(s, d, w, with_scale, max(inlier_threshold, 1e-12), ransac_trials)
    else:
        scale, R, t = _weighted_umeyama(s, d, w, with_scale)
    for _ in range(iters):
        r = np.linalg.norm(d - (scale * s @ R.T + t), axis=1)
        c = inlier_threshold if inlier_threshold is not None else 2.5 * 1.4826 * float(np.median(r))
        c = max(c, 1e-12)
        rw = 1.0 / (1.0 + (r / c) ** 2)
        scale, R, t = _weighted_umeyama(s, d, w * rw, with_scale)
    return scale, R, t


def _ransac(s: np.ndarray, d: np.ndarray, w: np.ndarray, with_scale: bool, thr: float, trials: int) -> tuple[float, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    n = len(s)
    best, best_count = None, -1
    for _ in range(trials):
        idx = rng.choice(n, 3, replace=False)
        # skip (near-)collinear samples: the rotation about their line is undefined
        if np.linalg.norm(np.cross(s[idx[1]] - s[idx[0]], s[idx[2]] - s[idx[0]])) < 1e-12:
            continue
        try:
            sc, R, t = _weighted_umeyama(s[idx], d[idx], np.ones(3), with_scale)
        except InputError:
            continue
        count = int((np.linalg.norm(d - (sc * s @ R.T + t), axis=1) <= thr).sum())
        if count > best_count:
            best, best_count = (sc, R, t), count
    if best is None:
        return _weighted_umeyama(s, d, w, with_scale)
    sc, R, t = best
    inl = np.linalg.norm(d - (sc * s @ R.T + t), axis=1) <= thr
    return _weighted_umeyama(s[inl], d[inl], w[inl], with_scale) if inl.sum() >= 3 else best


def _weighted_umeyama(s: np.ndarray, d: np.ndarray, w: np.ndarray, with_scale: bool) -> tuple[float, np.ndarray, np.ndarray]:
    w = w / w.sum()
    mu_s = w @ s
    mu_d = w @ d
    sc = s - mu_s
    dc = d - mu_d
    cov = (dc * w[:, None]).T @ sc  # [3, 3] = sum w d s^T
    U, S, Vt = np.linalg.svd(cov)
    D = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        D[2, 2] = -1.0
    R = U @ D @ Vt
    if with_scale:
        var_s = float(w @ (sc**2).sum(1))
        if var_s <= 1e-30:
            raise InputError("source points are all identical; scale is undefined", field="umeyama")
        scale = float(np.trace(np.diag(S) @ D) / var_s)
    else:
        scale = 1.0
    t = mu_d - scale * R @ mu_s
    return scale, R, t


def apply_transform(scale: float, R: np.ndarray, t: np.ndarray, points: ArrayLike) -> np.ndarray:
    """``scale * R @ p + t`` for points ``[N, 3]``; returns float64 numpy ``[N, 3]``."""
    p = _as_np(points, "points")
    return scale * p @ np.asarray(R).T + np.asarray(t)
