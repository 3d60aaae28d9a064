"""Score a fitted :class:`~recon.model.scene.DeformableScene` on a :class:`~recon.bench.suites.Case`.

Held-out cells (view h, time j) are rendered from the per-time geometry without view offsets
(``positions_at(j)``, world coordinates: a held-out view has no dp_i^v) with the held-out camera.
Training cells are rendered exactly as the fit saw them (with dp_i^v), to measure the fit.
Geometry is scored per time step in world coordinates against the synthetic ground truth:

* GT surface samples = every camera's (training and held-out) GT depth at that time, unprojected
  (the surface the rig observes, backdrop and ground included), subsampled to ``GT_SAMPLES``;
* floaters = visible Gaussians in GT free space (:func:`recon.bench.metrics.free_space`, all cameras);
* track error = motion error of the visible Gaussians that sit on a *foreground* GT surface at
  ``ref_time`` (within ``TRACK_MATCH_PX`` pixel footprints), against the exact trajectories of the
  surface points they sit on (``Scene.world_points``); ``track_error_static`` is the error the
  same points would have if nothing moved (the GT motion magnitude), the reference to read it by;
* alpha IoU = the Gaussians inside the visual hull of the training masks, rendered alone in the
  held-out views (in the training views when the held-out ones have no masks), vs the GT masks.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from recon.bench import metrics as M
from recon.bench.suites import Case
from recon.render import rasterize

GT_SAMPLES = 30000
"""GT surface samples per time step for the Chamfer distance."""
TRACK_MATCH_PX = 3.0
"""A Gaussian is matched to a GT surface point within this many pixel footprints (depth / focal)."""
SFM_TIMES = 2
"""Time steps scored by the SfM consistency (first and last); it is the slowest metric."""


def _torch(a: np.ndarray, dev: torch.device) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a), dtype=torch.float32, device=dev)


@torch.no_grad()
def render_world(scene, j: int, K: np.ndarray, w2c: np.ndarray, size: tuple[int, int], background: np.ndarray | None,
                 keep: torch.Tensor | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Render time index ``j`` in cameras ``K [C, 3, 3]``, ``w2c [C, 4, 4]`` (world) -> ``rgb [C, H, W, 3]``,
    ``alpha [C, H, W]`` numpy. ``keep [N]`` renders a subset of the Gaussians."""
    sp = scene.splats
    dev = sp.means.device
    X = scene.positions_at(j, world=True)
    from recon.model.sh import camera_centres

    vm = _torch(w2c, dev)
    ls, op, col = sp.log_scales, sp.opacity_logits, sp.view_rgb(X, camera_centres(vm))  # (positions already in the world)
    if keep is not None:
        X, ls, op, col = X[keep], ls[keep], op[keep], col[..., keep, :]
    H, W = size
    bg = None if background is None else _torch(background, dev)
    rgb, alpha, _, _ = rasterize(X, ls, op, col, vm, _torch(K, dev), W, H, background=bg)
    return rgb.clamp(0, 1).cpu().numpy(), alpha[..., 0].cpu().numpy()


def heldout_metrics(case: Case, scene, background: np.ndarray | None, lpips: Any = None) -> dict[str, Any]:
    """PSNR / SSIM / masked PSNR on the GT foreground and on the background (/ LPIPS) per held-out
    cell; ``per_cell`` lists them, means at the top level."""
    return camera_metrics(scene, case.eval_images, case.eval_K, case.eval_w2c, case.eval_masks, case.eval_names,
                          background, lpips)


def novel_metrics(case: Case, scene, background: np.ndarray | None, lpips: Any = None) -> dict[str, Any]:
    """The metrics of :func:`heldout_metrics` from the off-grid cameras of a synthetic case
    (``case.novel_*``), keys prefixed ``novel_`` (the renders: ``_novel_renders {(e, j): rgb}``);
    ``{}`` without them. Rendered without per-view offsets (no input view looked from there) -- the
    geometry a viewer shows."""
    if case.novel_images is None:
        return {}
    m = camera_metrics(scene, case.novel_images, case.novel_K, case.novel_w2c, case.novel_masks, case.novel_names,
                       background, lpips)
    renames = {"per_cell": "novel_per_cell", "_renders": "_novel_renders"}
    return {renames.get(k, f"novel_{k}"): v for k, v in m.items()}


def camera_metrics(scene, images: np.ndarray, K: np.ndarray, w2c: np.ndarray, masks: np.ndarray | None,
                   names: list[str], background: np.ndarray | None, lpips: Any = None) -> dict[str, Any]:
    """Render ``scene`` from cameras ``K [E, T, 3, 3]``, ``w2c [E, T, 4, 4]`` (world) at every time
    and score it against ``images uint8 [E, T, H, W, 3]`` (``masks [E, T, H, W]``: foreground):
    ``{"per_cell": [...], "psnr", "ssim", ["masked_psnr", "background_psnr"], ["lpips"], "_renders"}``."""
    E, T = images.shape[:2]
    H, W = images.shape[2:4]
    cells, renders = [], {}
    for j in range(T):
        rgb, _ = render_world(scene, j, K[:, j], w2c[:, j], (H, W), background)
        for e in range(E):
            gt = images[e, j].astype(np.float64) / 255.0
            row = {"view": names[e], "time": j, "psnr": M.psnr(rgb[e], gt), "ssim": M.ssim(rgb[e], gt)}
            if masks is not None:
                row["masked_psnr"] = M.masked_psnr(rgb[e], gt, masks[e, j])
                row["background_psnr"] = M.masked_psnr(rgb[e], gt, ~masks[e, j])
            if lpips is not None:
                row["lpips"] = lpips(rgb[e], gt)
            cells.append(row)
            renders[(e, j)] = rgb[e]
    out: dict[str, Any] = {"per_cell": cells}
    for k in ("psnr", "ssim", "masked_psnr", "background_psnr", "lpips"):
        vals = [c[k] for c in cells if k in c]
        if vals:
            out[k] = M.summarize(vals)["mean"]
    out["_renders"] = renders
    return out


@torch.no_grad()
def train_fit_metrics(case: Case, scene, background: np.ndarray | None, max_cells: int = 64) -> dict[str, float]:
    """PSNR / SSIM of the training cells as the fit rendered them (with view offsets; ``scene.render``
    composites on the scene's own background where it has one, else on ``background``)."""
    g = case.train
    V, T = g.num_views, g.num_times
    cells = [(i, j) for j in range(T) for i in range(V)]
    if len(cells) > max_cells:
        idx = np.linspace(0, len(cells) - 1, max_cells).round().astype(int)
        cells = [cells[k] for k in idx]
    ps, ss = [], []
    bg = None if background is None or scene.background is not None else torch.as_tensor(background, dtype=torch.float32)
    for k in range(0, len(cells), 8):
        chunk = cells[k : k + 8]
        rgb, alpha, _, _ = scene.render(chunk)
        rgb = rgb.float()
        if bg is not None:
            rgb = rgb + (1 - alpha) * bg.to(rgb.device)
        rgb = rgb.clamp(0, 1).cpu().numpy()
        for (i, j), r in zip(chunk, rgb):
            gt = g.images[i, j].astype(np.float64) / 255.0
            ps.append(M.psnr(r, gt))
            ss.append(M.ssim(r, gt))
    return {"train_psnr": M.summarize(ps)["mean"], "train_ssim": M.summarize(ss)["mean"]}


def _gt_time(case: Case, j: int) -> dict[str, np.ndarray]:
    """Every camera of the full synthetic grid at time j: depth, K, w2c, object ids, rest points."""
    f = case.full
    return {"depth": f.extras["depth"][:, j], "K": f.cameras.K[:, j], "w2c": f.cameras.w2c[:, j],
            "object_id": f.extras["object_id"][:, j], "surface": f.extras["surface"][:, j]}


def _surface_samples(gt: dict[str, np.ndarray], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unprojected GT depth of all cameras -> (world points [M, 3], object ids [M], rest points [M, 3]), subsampled."""
    pts, ids, rest = [], [], []
    for d, K, w2c, oid, surf in zip(gt["depth"], gt["K"], gt["w2c"], gt["object_id"], gt["surface"]):
        sel = d > 0
        pts.append(M.unproject_depth(d, K, w2c))
        ids.append(oid[sel])
        rest.append(surf[sel])
    P, I, R = np.concatenate(pts), np.concatenate(ids), np.concatenate(rest)
    if len(P) > GT_SAMPLES:
        k = np.sort(rng.choice(len(P), GT_SAMPLES, replace=False))
        P, I, R = P[k], I[k], R[k]
    return P, I, R


@torch.no_grad()
def geometry_metrics(case: Case, scene) -> dict[str, float]:
    """Chamfer (accuracy / completeness), floater ratio and foreground track error (synthetic cases)."""
    from recon.synth import FIRST_OBJECT_ID

    f = case.full
    T = f.num_times
    r = case.train.ref_time
    rng = np.random.default_rng(0)
    opac = scene.splats.opacities().detach().cpu().numpy()
    vis = opac >= M.VISIBLE_OPACITY
    pos = np.stack([scene.positions_at(j, world=True).cpu().numpy() for j in range(T)], 1)[vis]  # [N, T, 3]
    acc, comp, cham, flo = [], [], [], []
    for j in range(T):
        gt = _gt_time(case, j)
        P, _, _ = _surface_samples(gt, rng)
        c = M.chamfer(pos[:, j], P)
        acc.append(c["accuracy"]), comp.append(c["completeness"]), cham.append(c["chamfer"])
        flo.append(float(M.free_space(pos[:, j], gt["depth"], gt["K"], gt["w2c"]).mean()) if len(pos) else float("nan"))
    # trajectories: match at the reference time to foreground GT surface points
    gt = _gt_time(case, r)
    P, I, R = _surface_samples(gt, rng)
    fg = I >= FIRST_OBJECT_ID
    depth_med = float(np.median(gt["depth"][gt["depth"] > 0]))
    tol = TRACK_MATCH_PX * depth_med / float(np.median(gt["K"][:, 0, 0]))
    idx, ok = M.match_to_surface(pos[:, r], P[fg], tol)
    track, still, matched = float("nan"), float("nan"), 0
    if ok.any():
        oid, rest = I[fg][idx[ok]], R[fg][idx[ok]]
        gt_traj = np.stack([case.scene.world_points(oid, rest, float(f.times[j])) for j in range(T)], 1)
        track = M.track_error(pos[ok], gt_traj, ref=r)
        # reference: the error of the same points if they did not move at all
        still = M.track_error(np.repeat(gt_traj[:, r : r + 1], T, axis=1), gt_traj, ref=r)
        matched = int(ok.sum())
    return {
        "chamfer": M.summarize(cham)["mean"], "accuracy": M.summarize(acc)["mean"], "completeness": M.summarize(comp)["mean"],
        "floater_ratio": M.summarize(flo)["mean"], "track_error": track, "track_error_static": still, "track_matched": matched,
    }


@torch.no_grad()
def alpha_iou(case: Case, scene) -> dict[str, Any]:
    """IoU of the rendered alpha of the Gaussians inside the training masks' visual hull vs GT masks."""
    g = case.train
    if g.masks is None or g.cameras.w2c is None:
        return {"alpha_iou": float("nan"), "alpha_iou_on": "n/a (no masks)"}
    on_heldout = case.has_heldout and case.eval_masks is not None
    T = g.num_times
    ious = []
    for j in range(T):
        X = scene.positions_at(j, world=True).cpu().numpy()
        hull = M.inside_mask_hull(X, g.masks[:, j], g.cameras.K[:, j], g.cameras.w2c[:, j])
        if not hull.any():
            ious.append(0.0)
            continue
        keep = torch.from_numpy(hull).to(scene.splats.means.device)
        if on_heldout:
            K, w2c, masks = case.eval_K[:, j], case.eval_w2c[:, j], case.eval_masks[:, j]
        else:
            K, w2c, masks = g.cameras.K[:, j], g.cameras.w2c[:, j], g.masks[:, j]
        _, alpha = render_world(scene, j, K, w2c, masks.shape[1:3], None, keep)
        ious.extend(M.mask_iou(a, m) for a, m in zip(alpha, masks))
    return {"alpha_iou": M.summarize(ious)["mean"], "alpha_iou_on": "held-out views" if on_heldout else "training views"}


@torch.no_grad()
def consistency_metrics(case: Case, scene, background: np.ndarray | None) -> dict[str, float]:
    """SfM consistency of the input grid vs the reconstruction rendered at the training cameras
    (per-time geometry, no view offsets), on the first and last time steps."""
    from recon.bench.consistency import grid_consistency

    g = case.train
    T = g.num_times
    times = sorted({0, T - 1})[:SFM_TIMES]
    inp = grid_consistency(g.images, g.cameras.K, int(g.central_view), times)
    out = {f"input_{k}": v for k, v in inp.items() if k in ("registration_rate", "reprojection_px")}
    # the reconstruction's own consistent geometry, in the fit's cameras (canonical -> cell poses)
    H, W = g.height, g.width
    rend = np.zeros((g.num_views, len(times), H, W, 3), np.uint8)
    for n, j in enumerate(times):
        Xc = scene.splats.means + scene.field.motion(scene.splats.means, scene.times[j])  # dp^t as rendered (static rows: 0)
        sp = scene.splats
        bg = None if background is None else torch.as_tensor(background, dtype=torch.float32, device=Xc.device)
        vm = scene.poses[:, j].to(Xc.device)
        rgb, _, _, _ = rasterize(Xc, sp.log_scales, sp.opacity_logits, scene.colours(Xc, vm), vm,
                                 scene.Ks[:, j].to(Xc.device), W, H, background=bg)
        rend[:, n] = np.clip(np.rint(rgb.clamp(0, 1).cpu().numpy() * 255), 0, 255).astype(np.uint8)
    rec = grid_consistency(rend, g.cameras.K[:, times], int(g.central_view))
    out.update({f"recon_{k}": v for k, v in rec.items() if k in ("registration_rate", "reprojection_px")})
    return out
