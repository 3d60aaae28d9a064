"""Canonical stage: dense 3D tracks of the freeze-time frames -> isotropic canonical splats,
per-view poses and per-view offsets dp_i^v.

Coordinates. The canonical frame is the central view's camera frame at ``ref_time`` (OpenCV).
A *pose* ``A[i, j]`` (4x4, rigid) maps canonical coordinates to the camera coordinates of grid
cell (view i, time j) -- the ``viewmat`` that cell is rendered with.

* Given cameras (``grid.cameras.w2c``): ``A[i, j] = w2c[i, j] @ inv(w2c[c, ref])``.
* Otherwise: ``A[i, j] = A_i`` for every time (a static rig), ``A_i`` the robust rigid
  Umeyama fit from the tracked points in the central frame to the same points in frame i.

Canonical positions. A point's canonical position is its tracked position in the central frame
where it is visible there, else its position in its seed keyframe mapped by ``inv(A_seed)``.

View offsets. The raw remainder ``r_i = inv(A_i)(points[:, i]) - canonical`` where the point is
visible in frame i is the non-rigid part of the tracks after the rigid alignment, in canonical
coordinates. It holds two things: the view's inconsistency (for a generator's views: a smooth,
low-frequency warp; a small image homography is, to first order, a *linear* map of the points in
that camera's frame) and tracking noise (flow errors, depth errors at edges: per point,
uncorrelated). ``offset_model`` decides what dp_i^v keeps:

* ``affine`` (default): per view, an affine function of the canonical position,
  ``dp_i^v(x) = M_i x + b_i``, zero for the central view, whose frame *is* the canonical frame;
  all views' warps are fitted jointly and robustly to every track's remainders
  (:func:`fit_affine_warps`) and evaluated at every point, visible or not. Points anchored in a
  non-central keyframe have that keyframe's warp removed from their canonical position. 12
  numbers per view absorb a view's warp but not the per-point noise, which otherwise becomes
  per-view geometry that fits the training views and moves the shared (canonical) geometry away
  from what an unseen view sees.
* ``free``: the raw remainder per point where visible; where not, interpolated (inverse-distance
  over the ``k`` nearest canonical neighbours visible in frame i), or zero when none is.

Offsets are clipped to ``offset_clip`` x the point's distance from the central camera so one bad
track cannot throw a splat away.

De-duplication. Tracks seeded in different keyframes can land on the same surface spot; points
closer than ``merge_radius`` x the median neighbour spacing are merged (the earlier one -- the
central keyframe's -- is kept).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from recon.grid import FrameGrid
from recon.model.splats import Splats, logit, neighbour_log_scales
from recon.tracking.align import umeyama
from recon.tracking.types import Tracks


@dataclass
class CanonicalConfig:
    """Options of the canonical stage."""

    scale_neighbours: int = 3
    """k of the kNN spacing that initialises each Gaussian's scale."""
    scale_factor: float = 0.5
    """Initial standard deviation = factor x mean distance to the k nearest neighbours (0.5: a
    splat's 1-sigma disc just reaches half-way to its neighbours; sharper first renders than 1.0)."""
    init_opacity: float = 0.9
    """Initial peak opacity of every Gaussian."""
    merge_radius: float = 0.5
    """Merge points closer than this x the median neighbour spacing (0 disables)."""
    view_offsets: bool = True
    """Keep the tracked per-view offsets dp_i^v (False: zero offsets, the ablation)."""
    offset_model: str = "affine"
    """``affine`` (per view, a robust affine function of the canonical position) or ``free`` (per
    point); see the module docstring."""
    offset_neighbours: int = 8
    """Neighbours used to interpolate offsets where a point is not visible."""
    offset_clip: float = 0.05
    """Largest offset as a fraction of the point's canonical depth."""


@dataclass
class Canonical:
    """Result of the canonical stage (P points, V views, T times)."""

    splats: Splats
    view_offsets: Tensor  # [P, V, 3] dp_i^v, canonical coordinates
    poses: Tensor  # [V, T, 4, 4] float32 canonical -> camera (i, j), OpenCV
    frame_points: Tensor  # [P, V, 3] tracked positions in each freeze-time frame's camera coordinates
    visible: Tensor  # [P, V] bool
    seed_view: Tensor  # [P] int64
    pose_source: str  # "cameras" or "tracks"
    lifespan: Tensor | None = None
    """``[P, 2]`` float32 or None: each point's life in grid time units (centre, standard
    deviation), for points initialised at several times (:mod:`recon.fit.monocular`); None: every
    point lives at every time."""

    def tensors(self) -> dict[str, Tensor]:
        """Flat dict of CPU tensors for a safetensors checkpoint."""
        out = {f"splats.{k}": v for k, v in self.splats.tensors().items()}
        out.update(view_offsets=self.view_offsets, poses=self.poses, frame_points=self.frame_points,
                   visible=self.visible.to(torch.uint8), seed_view=self.seed_view)
        if self.lifespan is not None:
            out["lifespan"] = self.lifespan
        return {k: v.detach().cpu().contiguous() for k, v in out.items()}

    @classmethod
    def from_tensors(cls, t: dict[str, Tensor], pose_source: str, source: str = "checkpoint") -> "Canonical":
        return cls(
            splats=Splats.from_tensors(t, "splats.", source),
            view_offsets=t["view_offsets"],
            poses=t["poses"],
            frame_points=t["frame_points"],
            visible=t["visible"].bool(),
            seed_view=t["seed_view"],
            pose_source=pose_source,
            lifespan=t.get("lifespan"),
        )

    def select(self, keep: Tensor) -> "Canonical":
        """Keep the points where ``keep [P]`` is True."""
        return Canonical(self.splats.select(keep), self.view_offsets[keep], self.poses, self.frame_points[keep],
                         self.visible[keep], self.seed_view[keep], self.pose_source,
                         None if self.lifespan is None else self.lifespan[keep])


def cell_poses(grid: FrameGrid, tracks: Tracks | None = None) -> tuple[np.ndarray, str]:
    """Poses ``[V, T, 4, 4]`` float64 (canonical -> camera of cell (i, j)) and their source.

    From the grid's cameras when known, else from a robust rigid fit of the tracks (needs
    ``tracks``). See the module docstring."""
    V, T = grid.num_views, grid.num_times
    c = int(grid.central_view)
    if grid.cameras.w2c is not None:
        return grid.cameras.w2c @ grid.canonical_to_world(), "cameras"
    assert tracks is not None, "poses without cameras need tracks"
    pts = tracks.points.double().numpy()
    vis = tracks.visible.numpy()
    poses = np.tile(np.eye(4), (V, T, 1, 1))
    for i in range(V):
        if i == c:
            continue
        both = vis[:, c] & vis[:, i]
        w = both.astype(np.float64) if both.sum() >= 3 else np.ones(len(pts))
        _, R, t = umeyama(pts[:, c], pts[:, i], weights=w, robust="irls")
        poses[i, :, :3, :3] = R
        poses[i, :, :3, 3] = t
    return poses, "tracks"


def _inverse_rigid(A: np.ndarray, X: np.ndarray) -> np.ndarray:
    """``inv(A) @ X`` for a rigid 4x4 ``A`` and points ``[N, 3]``."""
    R, t = A[:3, :3], A[:3, 3]
    return (X - t) @ R


def merge_duplicates(points: np.ndarray, radius_factor: float) -> np.ndarray:
    """``bool [N]`` keep-mask: drop the later of any two points closer than ``radius_factor`` x the
    median nearest-neighbour distance (earlier points win)."""
    from scipy.spatial import cKDTree

    n = len(points)
    keep = np.ones(n, bool)
    if radius_factor <= 0 or n < 2:
        return keep
    tree = cKDTree(points)
    d, _ = tree.query(points, k=2)
    radius = radius_factor * float(np.median(d[:, 1]))
    if radius <= 0:
        return keep
    pairs = tree.query_pairs(radius, output_type="ndarray")
    if len(pairs) == 0:
        return keep
    pairs = pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]
    for a, b in pairs:  # a < b; greedy in index order
        if keep[a]:
            keep[b] = False
    return keep


def fill_offsets(canon: np.ndarray, offsets: np.ndarray, visible: np.ndarray, k: int) -> np.ndarray:
    """Interpolate ``offsets [P, V, 3]`` where not ``visible [P, V]`` from the ``k`` nearest
    canonical neighbours (``canon [P, 3]``) visible in that view (inverse distance); zero where a
    view has no visible point."""
    from scipy.spatial import cKDTree

    out = np.where(visible[..., None], offsets, 0.0)
    for i in range(offsets.shape[1]):
        src = np.nonzero(visible[:, i])[0]
        dst = np.nonzero(~visible[:, i])[0]
        if len(src) == 0 or len(dst) == 0:
            continue
        kk = min(k, len(src))
        d, idx = cKDTree(canon[src]).query(canon[dst], k=kk)
        d, idx = d.reshape(len(dst), kk), idx.reshape(len(dst), kk)
        w = 1.0 / np.maximum(d, 1e-9)
        out[dst, i] = (w[..., None] * offsets[src[idx], i]).sum(1) / w.sum(1, keepdims=True)
    return out


OFFSET_MODELS = ("affine", "free")
MIN_AFFINE_POINTS = 12
"""Fewer supporting track relations for a view than this: its affine offset is zero."""


class AffineWarps:
    """Per-view affine warps ``dp_i^v(x) = [(x - mu) / span, 1] @ B[i]`` (``B [V, 4, 3]``) of
    canonical positions, each evaluated inside the box of the points that supported its fit
    (no linear extrapolation past the data, e.g. onto a far backdrop only other views saw)."""

    def __init__(self, B: np.ndarray, mu: np.ndarray, span: float, lo: np.ndarray, hi: np.ndarray):
        self.B, self.mu, self.span, self.lo, self.hi = B, mu, span, lo, hi

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Offsets ``[N, V, 3]`` at positions ``x [N, 3]``."""
        x = np.asarray(x, np.float64)
        out = np.zeros((len(x), len(self.B), 3))
        for i in range(len(self.B)):
            q = np.clip(x, self.lo[i], self.hi[i])
            out[:, i] = np.c_[(q - self.mu) / self.span, np.ones(len(q))] @ self.B[i]
        return out


def fit_affine_warps(canon: np.ndarray, raw: np.ndarray, visible: np.ndarray, anchor: np.ndarray,
                     fixed_view: int, iters: int = 20) -> AffineWarps:
    """Robust joint fit of per-view affine warps from the tracks' remainders.

    A point anchored in view ``k`` (its canonical position is its position in frame k) and
    visible in view ``i != k`` measures ``warp_i(x) - warp_k(x) = raw[p, i]``, with
    ``warp_{fixed_view} = 0`` (the central frame is the canonical frame). All these relations are
    solved together (least squares in the 12 numbers per view), so a view far from the central one
    is tied to it through its neighbours' tracks, not only through the few central tracks that
    survive a long flow chain. Robust: tracks seeded on one surface and matched onto another (flow
    errors at depth edges) give remainders 100x the inliers'. The fit starts from zero warps (a
    consistent input) and iterates re-weighted least squares with Tukey's biweight
    (``c = 4.685 s``, ``s`` = 1.4826 x the median residual norm), which gives gross outliers zero
    weight. Views without relations get zero.

    Args: ``canon [P, 3]``, ``raw [P, V, 3]`` (rigidly aligned position in frame i minus canonical),
    ``visible [P, V]``, ``anchor [P]`` (the view each canonical position comes from).
    """
    P, V, _ = raw.shape
    mu = canon.mean(0) if P else np.zeros(3)
    span = max(float(np.abs(canon - mu).max()), 1e-12) if P else 1.0
    B = np.zeros((V, 4, 3))
    lo, hi = np.full((V, 3), np.inf), np.full((V, 3), -np.inf)
    pp, ii = np.nonzero(visible & (np.arange(V)[None] != anchor[:, None]) & np.isfinite(raw).all(-1))
    kk = anchor[pp]
    free = [v for v in range(V) if v != fixed_view]
    col = {v: n for n, v in enumerate(free)}
    if len(pp) < MIN_AFFINE_POINTS or not free:
        return AffineWarps(B, mu, span, np.zeros((V, 3)), np.zeros((V, 3)))
    X = np.c_[(canon[pp] - mu) / span, np.ones(len(pp))]  # [n, 4]
    D = np.zeros((len(pp), 4 * len(free)))
    for v in free:
        j = 4 * col[v]
        D[ii == v, j:j + 4] += X[ii == v]
        D[kk == v, j:j + 4] -= X[kk == v]
    Y = raw[pp, ii]  # [n, 3]
    theta = np.zeros((4 * len(free), 3))
    w = np.ones(len(pp))
    for _ in range(iters):
        r = np.linalg.norm(Y - D @ theta, axis=1)
        s = 1.4826 * max(float(np.median(r)), 1e-12)
        w = np.clip(1.0 - (r / (4.685 * s)) ** 2, 0.0, None) ** 2
        sw = np.sqrt(w)[:, None]
        theta = np.linalg.lstsq(D * sw, Y * sw, rcond=None)[0]
    r = np.linalg.norm(Y - D @ theta, axis=1)
    s = 1.4826 * max(float(np.median(r)), 1e-12)
    inlier = r <= 4.685 * s
    for v in free:
        B[v] = theta[4 * col[v]:4 * col[v] + 4]
        sup = inlier & ((ii == v) | (kk == v))
        if sup.sum() >= MIN_AFFINE_POINTS:
            lo[v], hi[v] = canon[pp[sup]].min(0), canon[pp[sup]].max(0)
        else:  # too little support: no warp for this view
            B[v] = 0
    lo[~np.isfinite(lo)] = 0.0
    hi[~np.isfinite(hi)] = 0.0
    return AffineWarps(B, mu, span, lo, hi)


def build_canonical(grid: FrameGrid, tracks: Tracks, config: CanonicalConfig) -> Canonical:
    """Canonical splats, poses and view offsets from freeze-time ``tracks`` (see module docstring).

    ``tracks.points [P, V, 3]`` must have a position in every frame (the trackers predict
    invisible ones rigidly). Returns a :class:`Canonical` with P' <= P points after merging.
    """
    V = grid.num_views
    c = int(grid.central_view)
    poses, source = cell_poses(grid, tracks)
    A = poses[:, grid.ref_time]  # [V, 4, 4] freeze-time poses
    pts = tracks.points.double().numpy()
    vis = tracks.visible.numpy().copy()
    seed = tracks.seed_view.numpy()
    finite = np.isfinite(pts).all(-1)
    vis &= finite
    pts = np.where(finite[..., None], pts, 0.0)
    anchor = np.where(vis[:, c], c, seed)
    canon = np.empty((len(pts), 3))
    for v in np.unique(anchor):
        sel = anchor == v
        canon[sel] = _inverse_rigid(A[v], pts[sel, v])
    ok = np.isfinite(canon).all(1)
    keep = ok.copy()
    keep[ok] = merge_duplicates(canon[ok], config.merge_radius)
    canon, pts, vis, seed = canon[keep], pts[keep], vis[keep], seed[keep]

    aligned = np.stack([_inverse_rigid(A[i], pts[:, i]) for i in range(V)], 1)  # [P, V, 3]
    raw = aligned - canon[:, None]
    if config.offset_model not in OFFSET_MODELS:
        from recon.errors import InputError

        raise InputError(f"unknown offset model {config.offset_model!r}; expected one of {', '.join(OFFSET_MODELS)}",
                         field="canonical.offset_model")
    if config.view_offsets:
        if config.offset_model == "affine":
            anc = anchor[keep]
            warps = fit_affine_warps(canon, raw, vis, anc, fixed_view=c)
            # a point anchored in another keyframe k carries k's warp in its canonical position: remove it
            canon = canon - warps(canon)[np.arange(len(canon)), anc]
            offsets = warps(canon)
        else:
            offsets = fill_offsets(canon, raw, vis, config.offset_neighbours)
        limit = config.offset_clip * np.linalg.norm(canon, axis=1)[:, None]
        norm = np.linalg.norm(offsets, axis=-1)
        offsets *= np.minimum(1.0, limit / np.maximum(norm, 1e-12))[..., None]
    else:
        offsets = np.zeros_like(raw)

    log_scales = neighbour_log_scales(canon, config.scale_neighbours, config.scale_factor)
    colors = tracks.colors.numpy()[keep]
    P = len(canon)
    splats = Splats(
        torch.from_numpy(canon).float(),
        torch.from_numpy(log_scales).float(),
        torch.full((P,), logit(config.init_opacity)),
        torch.from_numpy(np.asarray(colors, np.float32)),
    )
    return Canonical(
        splats=splats,
        view_offsets=torch.from_numpy(offsets).float(),
        poses=torch.from_numpy(poses).float(),
        frame_points=torch.from_numpy(pts).float(),
        visible=torch.from_numpy(vis),
        seed_view=torch.from_numpy(seed).long(),
        pose_source=source,
    )
