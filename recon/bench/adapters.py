"""Adapters for the feed-forward baselines the paper tried first: Dust3R and Splatt3R.

Neither is vendored (both are non-commercial licences) and nothing is downloaded: the user points
an adapter at a local clone and a local checkpoint (``--dust3r-repo/--dust3r-ckpt``,
``--splatt3r-repo/--splatt3r-ckpt``). Without them :meth:`status` says "not available (needs
...)" and the benchmark reports exactly that -- no numbers are made up.

What runs (on the freeze-time frames, the views at ``ref_time``):

* **Dust3R** (naver/dust3r, its README's Python API): ``load_images(paths, size=512)``,
  ``make_pairs(scene_graph="complete", symmetrize=True)``, ``inference``, then
  ``global_aligner(mode=PointCloudOptimizer).compute_global_alignment(init="mst")``. Its outputs:
  ``scene.get_pts3d()`` -- a list of V pointmaps ``[h, w, 3]`` in Dust3R's world frame,
  ``scene.get_im_poses()`` -- ``[V, 4, 4]`` camera-to-world (OpenCV axes), ``scene.get_masks()``
  -- confident pixels ``[h, w]``, ``scene.imgs`` -- the resized images ``[h, w, 3]`` in [0, 1].
* **Splatt3R** (btsmart/splatt3r, its ``demo.py``): ``main.MAST3RGaussians.load_from_checkpoint``,
  ``load_images([central, partner], size=512)``, ``pred1, pred2 = model(view1, view2)``. Per
  view, ``[1, h, w, ...]`` maps: ``pred1["means"]`` / ``pred2["means_in_other_view"]`` (Gaussian
  centres, both in view 1's camera frame; ``pts3d`` / ``pts3d_in_other_view`` without the learnt
  offsets), ``sh`` ``[1, h, w, 3, n]`` (``sh[..., 0]`` is the degree-0 coefficient),
  ``opacities`` ``[1, h, w, 1]`` in (0, 1), ``scales`` ``[1, h, w, 3]``.

Conversion to our canonical initialisation (:func:`dust3r_to_tracks`, :func:`splatt3r_to_tracks`):
points go to the central camera's frame (Dust3R: ``inv(c2w[central])``; Splatt3R: view 1 *is*
the central view), are scaled to the grid's units by the ratio of median depths against the
tracking stage's depth provider on the central frame (:func:`depth_scale`), subsampled to a point
budget, and placed rigidly in every freeze-time frame (:func:`recon.bench.baselines.tracks_from_canonical`).
Our fit then continues from them exactly as for every other initialisation. Splatt3R's
anisotropic scales and opacities are not carried over: the canonical stage re-initialises
isotropic scales from point spacing and a common opacity, as for every method, so the comparison
is about where the points are.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from recon.bench.baselines import reference_poses, tracks_from_canonical
from recon.grid import FrameGrid
from recon.io.ply import SH_C0
from recon.tracking.types import Tracks


def _np(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().float().numpy()
    return np.asarray(x)


def depth_scale(points_cam: np.ndarray, ref_depth: np.ndarray) -> float:
    """Scale that maps a method's points in the central camera frame ``[N, 3]`` (z forward) to the
    grid's units: ``median(ref_depth > 0) / median(points z > 0)``. 1.0 when either is empty."""
    z = np.asarray(points_cam, np.float64).reshape(-1, 3)[:, 2]
    z = z[np.isfinite(z) & (z > 0)]
    d = np.asarray(ref_depth, np.float64)
    d = d[np.isfinite(d) & (d > 0)]
    if len(z) == 0 or len(d) == 0:
        return 1.0
    return float(np.median(d) / np.median(z))


def _subsample(n: int, budget: int, rng: np.random.Generator) -> np.ndarray:
    return np.arange(n) if n <= budget else np.sort(rng.choice(n, budget, replace=False))


def dust3r_to_tracks(
    grid: FrameGrid,
    pts3d: list,
    cam2world: Any,
    images: list,
    masks: list | None,
    ref_depth: np.ndarray,
    max_points: int,
    seed: int = 0,
) -> tuple[Tracks, dict[str, float]]:
    """Dust3R's globally aligned output -> rigid tracks in our canonical frame.

    Args:
        pts3d: V pointmaps ``[h, w, 3]`` (Dust3R world), in the grid's view order.
        cam2world: ``[V, 4, 4]`` Dust3R camera-to-world (OpenCV axes).
        images: V images ``[h, w, 3]`` in [0, 1] (``scene.imgs``) for the colours.
        masks: V confidence masks ``[h, w]`` bool, or None (all points).
        ref_depth: ``[H, W]`` the grid's z-depth of the central freeze-time frame (for the scale).
        max_points: point budget (uniform random subset above it).

    Returns ``(tracks, info)`` with ``info = {"scale", "points_in", "points"}``.
    """
    V = grid.num_views
    if len(pts3d) != V or len(images) != V:
        raise ValueError(f"expected {V} pointmaps and images (one per view), got {len(pts3d)} and {len(images)}")
    c2w = _np(cam2world).astype(np.float64).reshape(V, 4, 4)
    w2c_c = np.linalg.inv(c2w[int(grid.central_view)])
    pts, cols, seeds = [], [], []
    for v in range(V):
        p = _np(pts3d[v]).astype(np.float64).reshape(-1, 3)
        col = _np(images[v]).astype(np.float32).reshape(-1, 3)
        keep = np.isfinite(p).all(1)
        if masks is not None:
            keep &= _np(masks[v]).astype(bool).reshape(-1)
        p, col = p[keep], col[keep]
        pts.append(p @ w2c_c[:3, :3].T + w2c_c[:3, 3])  # Dust3R world -> central camera (its scale)
        cols.append(col)
        seeds.append(np.full(len(p), v, np.int64))
    X, C, S = np.concatenate(pts), np.concatenate(cols), np.concatenate(seeds)
    if len(X) == 0:
        raise ValueError("Dust3R output has no confident points")
    c = int(grid.central_view)
    s = depth_scale(X[S == c], ref_depth)
    idx = _subsample(len(X), max_points, np.random.default_rng(seed))
    tracks = tracks_from_canonical(X[idx] * s, C[idx], S[idx], reference_poses(grid))
    return tracks, {"scale": s, "points_in": int(len(X)), "points": int(len(idx))}


def splatt3r_to_tracks(
    grid: FrameGrid,
    pred1: dict,
    pred2: dict,
    partner_view: int,
    ref_depth: np.ndarray,
    max_points: int,
    seed: int = 0,
    min_opacity: float = 0.05,
) -> tuple[Tracks, dict[str, float]]:
    """Splatt3R's Gaussians for (central view, ``partner_view``) -> rigid tracks in our canonical frame.

    ``pred1`` / ``pred2`` are Splatt3R's output dicts (see the module docstring; batch size 1).
    Centres are taken from ``means`` (falling back to ``pts3d``), colours from the degree-0 SH
    coefficient (``0.5 + C0 * sh[..., 0]``), Gaussians with opacity below ``min_opacity`` are
    dropped. View 1 must be the grid's central freeze-time frame, whose camera frame is our
    canonical frame up to scale (:func:`depth_scale` against ``ref_depth [H, W]``).
    """

    def take(pred: dict, keys: tuple[str, ...]) -> np.ndarray:
        for k in keys:
            if k in pred:
                return _np(pred[k])
        raise KeyError(f"Splatt3R output lacks all of {keys}")

    parts = []
    for pred, keys in ((pred1, ("means", "pts3d")), (pred2, ("means_in_other_view", "pts3d_in_other_view"))):
        X = take(pred, keys).astype(np.float64).reshape(-1, 3)
        sh = take(pred, ("sh",))
        dc = sh[..., 0] if sh.ndim >= 5 else sh  # [1, h, w, 3, n] -> [1, h, w, 3]
        col = (0.5 + SH_C0 * dc.astype(np.float32)).reshape(-1, 3)
        op = take(pred, ("opacities",)).astype(np.float32).reshape(-1) if "opacities" in pred else np.ones(len(X), np.float32)
        keep = np.isfinite(X).all(1) & (op >= min_opacity)
        parts.append((X[keep], col[keep]))
    c = int(grid.central_view)
    X = np.concatenate([parts[0][0], parts[1][0]])
    C = np.concatenate([parts[0][1], parts[1][1]])
    S = np.concatenate([np.full(len(parts[0][0]), c), np.full(len(parts[1][0]), int(partner_view))]).astype(np.int64)
    if len(X) == 0:
        raise ValueError("Splatt3R output has no Gaussians above the opacity threshold")
    s = depth_scale(parts[0][0], ref_depth)
    idx = _subsample(len(X), max_points, np.random.default_rng(seed))
    tracks = tracks_from_canonical(X[idx] * s, C[idx], S[idx], reference_poses(grid))
    return tracks, {"scale": s, "points_in": int(len(X)), "points": int(len(idx))}


# --- running the upstream code -----------------------------------------------------------------

@contextlib.contextmanager
def _on_path(paths: list[Path]) -> Iterator[None]:
    """Put ``paths`` first on ``sys.path`` for the duration (upstream code imports by top-level name)."""
    added = [str(p) for p in paths if str(p) not in sys.path]
    sys.path[:0] = added
    try:
        yield
    finally:
        for p in added:
            if p in sys.path:
                sys.path.remove(p)


def _write_frames(grid: FrameGrid, views: list[int], folder: Path) -> list[str]:
    from recon.io.images import write_png

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for v in views:
        p = folder / f"view_{v:03d}.png"
        write_png(p, grid.images[v, grid.ref_time])
        out.append(str(p))
    return out


@dataclass
class Dust3rAdapter:
    """Runs a local Dust3R clone + checkpoint on the freeze-time frames (see module docstring)."""

    repo: Path | None = None
    ckpt: Path | None = None
    image_size: int = 512
    niter: int = 300
    max_points: int = 20000
    name: str = "dust3r"

    def status(self) -> tuple[bool, str]:
        if self.repo is None or self.ckpt is None:
            return False, "not available (needs --dust3r-repo DIR, a local clone of naver/dust3r, and --dust3r-ckpt FILE, a local checkpoint)"
        repo, ckpt = Path(self.repo), Path(self.ckpt)
        if not (repo / "dust3r" / "inference.py").is_file():
            return False, f"not available (--dust3r-repo {repo} is not a Dust3R clone: no dust3r/inference.py)"
        if not ckpt.is_file():
            return False, f"not available (--dust3r-ckpt {ckpt} does not exist)"
        return True, f"dust3r at {repo}"

    def run(self, grid: FrameGrid, workdir: Path, ref_depth: np.ndarray, device: torch.device) -> tuple[Tracks, dict[str, float]]:
        ok, why = self.status()
        if not ok:
            raise RuntimeError(f"Dust3R {why}")
        paths = _write_frames(grid, list(range(grid.num_views)), Path(workdir) / "dust3r_input")
        repo = Path(self.repo)
        with _on_path([repo, repo / "croco"]):
            from dust3r.cloud_opt import GlobalAlignerMode, global_aligner  # type: ignore[import-not-found]
            from dust3r.image_pairs import make_pairs  # type: ignore[import-not-found]
            from dust3r.inference import inference, load_model  # type: ignore[import-not-found]
            from dust3r.utils.image import load_images  # type: ignore[import-not-found]

            model = load_model(str(self.ckpt), str(device))
            images = load_images(paths, size=self.image_size, verbose=False)
            pairs = make_pairs(images, scene_graph="complete", prefilter=None, symmetrize=True)
            output = inference(pairs, model, str(device), batch_size=1, verbose=False)
            scene = global_aligner(output, device=str(device), mode=GlobalAlignerMode.PointCloudOptimizer)
            scene.compute_global_alignment(init="mst", niter=self.niter, schedule="cosine", lr=0.01)
            pts3d = scene.get_pts3d()
            poses = scene.get_im_poses()
            masks = scene.get_masks()
            imgs = scene.imgs
        return dust3r_to_tracks(grid, pts3d, poses, imgs, masks, ref_depth, self.max_points)


@dataclass
class Splatt3rAdapter:
    """Runs a local Splatt3R clone + checkpoint on (central view, its neighbour) at ref_time."""

    repo: Path | None = None
    ckpt: Path | None = None
    image_size: int = 512
    max_points: int = 20000
    name: str = "splatt3r"

    def status(self) -> tuple[bool, str]:
        if self.repo is None or self.ckpt is None:
            return False, "not available (needs --splatt3r-repo DIR, a local clone of btsmart/splatt3r, and --splatt3r-ckpt FILE, a local checkpoint)"
        repo, ckpt = Path(self.repo), Path(self.ckpt)
        if not (repo / "main.py").is_file() or not (repo / "src" / "mast3r_src").is_dir():
            return False, f"not available (--splatt3r-repo {repo} is not a Splatt3R clone: no main.py / src/mast3r_src)"
        if not ckpt.is_file():
            return False, f"not available (--splatt3r-ckpt {ckpt} does not exist)"
        return True, f"splatt3r at {repo}"

    def partner_view(self, grid: FrameGrid) -> int:
        c = int(grid.central_view)
        return c + 1 if c + 1 < grid.num_views else c - 1

    def run(self, grid: FrameGrid, workdir: Path, ref_depth: np.ndarray, device: torch.device) -> tuple[Tracks, dict[str, float]]:
        ok, why = self.status()
        if not ok:
            raise RuntimeError(f"Splatt3R {why}")
        c, n = int(grid.central_view), self.partner_view(grid)
        paths = _write_frames(grid, [c, n], Path(workdir) / "splatt3r_input")
        repo = Path(self.repo)
        with _on_path([repo, repo / "src" / "mast3r_src", repo / "src" / "mast3r_src" / "dust3r", repo / "src" / "pixelsplat_src"]):
            import main as splatt3r_main  # type: ignore[import-not-found]
            from dust3r.utils.image import load_images  # type: ignore[import-not-found]

            model = splatt3r_main.MAST3RGaussians.load_from_checkpoint(str(self.ckpt), device).to(device).eval()
            imgs = load_images(paths, size=self.image_size, verbose=False)
            for im in imgs:
                im["img"] = im["img"].to(device)
                im["original_img"] = im["original_img"].to(device)
                im["true_shape"] = torch.from_numpy(im["true_shape"])
            with torch.no_grad():
                pred1, pred2 = model(imgs[0], imgs[1])
        return splatt3r_to_tracks(grid, pred1, pred2, n, ref_depth, self.max_points)
