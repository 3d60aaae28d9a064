"""Floater pruning: fit per-point opacity (and colour) by re-rendering the freeze-time frames in
their own camera coordinates, then drop the points that fade.

The seed's trick (4Real-Video supp. section 3): every tracked point has a position in every
freeze-time frame's camera coordinates (``Canonical.frame_points [P, V, 3]``), so frame
``(i, ref)`` is rendered with an identity extrinsic, intrinsics ``K[i, ref]`` and those
positions -- no camera poses and no alignment are involved, which keeps the stage robust to
multi-view inconsistency. Only opacity logits and colours are optimised (positions and scales
stay fixed). A small L1 pull on the opacities (``opacity_reg``) lets points that no frame
needs fade out; points below ``threshold`` are removed.

Where the pruned points were is reported: by canonical depth band (terciles of the distance from
the central camera) and whether they lie at a depth discontinuity (among their 8 nearest
neighbours in the central image plane, the depth ratio exceeds ``EDGE_RATIO``), the classic
home of boundary floaters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from recon.fit.canonical import Canonical
from recon.fit.engine import FitEngine, ParamGroup, Rows
from recon.fit.losses import mean_opacity_term, photometric_term
from recon.fit.schedule import cell_order
from recon.grid import FrameGrid
from recon.render import rasterize

EDGE_RATIO = 1.1
"""Depth ratio among image-plane neighbours above which a point counts as at a depth discontinuity."""


@dataclass
class PruneConfig:
    """Options of the floater-pruning stage."""

    enabled: bool = True
    """Run the stage (False: keep every point, the ablation)."""
    iterations: int = 150
    """Optimisation steps."""
    views_per_step: int = 2
    """Freeze-time frames rendered per step."""
    lr_opacity: float = 0.05
    """Adam learning rate of the opacity logits."""
    lr_colors: float = 0.001
    """Adam learning rate of the colours: small on purpose -- a floater whose colour may move
    freely blends into the background instead of fading."""
    opacity_reg: float = 0.01
    """Weight of the mean-opacity penalty (pulls unneeded points down)."""
    threshold: float = 0.1
    """Points whose opacity ends below this are pruned."""
    ssim_weight: float = 0.2
    """D-SSIM weight of the rendering loss."""


def discontinuity_mask(points: np.ndarray, K: np.ndarray, k: int = 8, ratio: float = EDGE_RATIO) -> np.ndarray:
    """``bool [N]``: camera points ``[N, 3]`` whose ``k`` nearest neighbours in the image plane
    (projected with ``K [3, 3]``) span a depth ratio above ``ratio``."""
    from scipy.spatial import cKDTree

    z = points[:, 2]
    front = z > 1e-6
    out = np.zeros(len(points), bool)
    if front.sum() < 2:
        return out
    p = points[front]
    uv = (p[:, :2] / p[:, 2:3]) * np.array([K[0, 0], K[1, 1]]) + K[:2, 2]
    kk = min(k + 1, len(p))
    _, idx = cKDTree(uv).query(uv, k=kk)
    zn = p[:, 2][idx]
    out[front] = zn.max(1) / np.maximum(zn.min(1), 1e-9) > ratio
    return out


def prune_floaters(
    grid: FrameGrid,
    canonical: Canonical,
    config: PruneConfig,
    device: torch.device,
    seed: int,
    backend: str = "auto",
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Canonical, dict[str, Any]]:
    """Optimise opacities/colours on the freeze-time frames and prune (see module docstring).

    Returns the pruned :class:`Canonical` (with the fitted opacities and colours) and a report:
    counts before/after, pruned counts by depth band and at depth discontinuities, loss trace.
    """
    V, H, W = grid.num_views, grid.height, grid.width
    r, c = grid.ref_time, int(grid.central_view)
    P = canonical.splats.num
    g = torch.Generator().manual_seed(seed)
    frame_pts = canonical.frame_points.to(device)  # [P, V, 3]
    log_scales = canonical.splats.log_scales.detach().to(device)
    opac = canonical.splats.opacity_logits.detach().clone().to(device).requires_grad_(True)
    cols = canonical.splats.colors.detach().clone().to(device).requires_grad_(True)
    # a Gaussian's scale is set in canonical units; frame coordinates share that unit
    K = torch.as_tensor(grid.cameras.K[:, r], dtype=torch.float32, device=device)
    images = torch.from_numpy(grid.images)
    eye = torch.eye(4, device=device)
    engine = FitEngine(Rows({}), [ParamGroup("opacity", [opac], config.lr_opacity), ParamGroup("colors", [cols], config.lr_colors)])

    def render(batch):
        views = [v for v, _ in batch]
        means = frame_pts[:, views].permute(1, 0, 2).contiguous()  # [C, P, 3]
        rgb, _, _, meta = rasterize(means, log_scales, opac, cols.clamp(0, 1), eye.expand(len(views), 4, 4).contiguous(),
                                    K[views], W, H, backend=backend)
        return rgb, meta

    def target(batch):
        return images[[v for v, _ in batch], r].to(device).float().div_(255.0)

    terms = [photometric_term(config.ssim_weight), mean_opacity_term(opac, config.opacity_reg)]
    batches = cell_order([(v, r) for v in range(V)], config.iterations, config.views_per_step, g)
    losses = engine.run(batches, render, target, terms, None if progress is None else lambda d, n, _l: progress(d, n),
                        trace_every=1)["trace"]
    opacity = torch.sigmoid(opac.detach()).cpu()
    keep = opacity >= config.threshold
    canon_pts = canonical.splats.means.detach().cpu().double().numpy()
    dist = np.linalg.norm(canon_pts, axis=1)
    edges = np.quantile(dist, [1 / 3, 2 / 3]) if P else np.zeros(2)
    band = np.digitize(dist, edges)  # 0 near, 1 mid, 2 far
    edge = discontinuity_mask(canon_pts, grid.cameras.K[c, r])
    pruned = ~keep.numpy()
    report = {
        "before": P,
        "after": int(keep.sum()),
        "pruned": int(pruned.sum()),
        "threshold": config.threshold,
        "depth_band_edges": [float(e) for e in edges],
        "pruned_by_depth_band": {name: int((pruned & (band == b)).sum()) for b, name in enumerate(("near", "mid", "far"))},
        "pruned_at_depth_discontinuity": int((pruned & edge).sum()),
        "points_at_depth_discontinuity": int(edge.sum()),
        "pruned_by_seed_view": {int(v): int((pruned & (canonical.seed_view.numpy() == v)).sum()) for v in np.unique(canonical.seed_view.numpy())},
        "loss_first": losses[0] if losses else None,
        "loss_last": losses[-1] if losses else None,
    }
    fitted = Canonical(
        splats=type(canonical.splats)(canonical.splats.means.detach(), canonical.splats.log_scales.detach(),
                                      opac.detach().cpu(), cols.detach().cpu()),
        view_offsets=canonical.view_offsets, poses=canonical.poses, frame_points=canonical.frame_points,
        visible=canonical.visible, seed_view=canonical.seed_view, pose_source=canonical.pose_source,
    )
    return fitted.select(keep), report
