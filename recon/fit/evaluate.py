"""Evaluation and outputs of a fitted scene: per-cell PSNR / SSIM, floater counts against
synthetic ground truth, renders, previews, the .ply sequence and ``metrics.json``.

Floaters (synthetic grids only): a Gaussian is a floater when its world position at the
reference time lies farther than ``tol`` (scene units) from every ground-truth surface: not
inside or within ``tol`` of a foreground object (:meth:`recon.synth.Scene.inside`), not within
``tol`` of the ground plane, not within ``tol`` of the backdrop sphere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from recon.errors import InputError
from recon.fit.losses import psnr, ssim
from recon.grid import FrameGrid
from recon.model.scene import DeformableScene

RENDER_BATCH = 4


def synthetic_scene(grid: FrameGrid):
    """The ground-truth :class:`recon.synth.Scene` of a synthetic grid with cameras, else None."""
    if grid.cameras.w2c is None:
        return None
    try:
        from recon.synth import scene_from_meta

        return scene_from_meta(grid.meta)
    except (InputError, ImportError, KeyError, TypeError, ValueError):
        return None


def count_floaters(scene, world: np.ndarray, time: float, tol: float) -> int:
    """Number of world points ``[N, 3]`` farther than ``tol`` from every GT surface at ``time``."""
    ok = scene.inside(world, time, tol)
    if scene.ground is not None:
        ok |= np.abs(world[:, 1] - scene.ground.height) <= tol
    b = scene.backdrop
    ok |= np.abs(np.linalg.norm(world - np.asarray(b.center), axis=1) - b.radius) <= tol
    return int((~ok).sum())


def floater_report(grid: FrameGrid, canonical_means: Tensor, tol: float) -> dict[str, Any]:
    """``{"floaters": n, "floater_tol": tol}`` for canonical positions ``[N, 3]`` (central camera
    coordinates at the reference time) of a synthetic grid; ``{}`` otherwise."""
    scene = synthetic_scene(grid)
    if scene is None:
        return {}
    c2w = np.linalg.inv(grid.cameras.w2c[int(grid.central_view), grid.ref_time])
    X = canonical_means.detach().cpu().double().numpy() @ c2w[:3, :3].T + c2w[:3, 3]
    return {"floaters": count_floaters(scene, X, float(grid.times[grid.ref_time]), tol), "floater_tol": tol}


def render_grid(scene: DeformableScene, backend: str = "auto", view_offsets: bool = True) -> Tensor:
    """Renders of every cell ``[V, T, H, W, 3]`` in [0, 1] (CPU)."""
    V, T = scene.num_views, scene.num_times
    cells = [(i, j) for i in range(V) for j in range(T)]
    out = []
    for k in range(0, len(cells), RENDER_BATCH):
        rgb, _, _, _ = scene.render(cells[k:k + RENDER_BATCH], backend=backend, view_offsets=view_offsets)
        out.append(rgb.clamp(0, 1).cpu())
    H, W = scene.size
    return torch.cat(out).reshape(V, T, H, W, 3)


def cell_metrics(grid: FrameGrid, renders: Tensor, held: list[tuple[int, int]]) -> dict[str, Any]:
    """Per-cell PSNR / SSIM and the means over train and held-out cells."""
    gt = grid.float_images()
    cells = []
    for i in range(grid.num_views):
        for j in range(grid.num_times):
            cells.append({"view": i, "time": j, "split": "heldout" if (i, j) in held else "train",
                          "psnr": psnr(renders[i, j], gt[i, j]), "ssim": float(ssim(renders[i, j][None], gt[i, j][None])[0])})
    out: dict[str, Any] = {"cells": cells}
    for split in ("train", "heldout"):
        sel = [c for c in cells if c["split"] == split]
        out[split] = {"cells": len(sel), "psnr_mean": float(np.mean([c["psnr"] for c in sel])) if sel else None,
                      "ssim_mean": float(np.mean([c["ssim"] for c in sel])) if sel else None}
    return out


def _u8(x: Tensor) -> np.ndarray:
    return (x.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).numpy()


def write_ply(scene: DeformableScene, folder: Path, fps: float | None, source: str, time_unit: str, world: bool) -> Path:
    """Write ``folder/ply/frame_XXXX.ply`` (one per grid time: ``canonical + dp_j^t``, without the
    per-view offsets) and ``folder/ply/sequence.json``; returns ``folder/ply``.

    ``world``: positions are in the world of the input cameras (``scene.to_world``); otherwise in
    the central camera's coordinates at the reference time (``to_world`` is then the identity)."""
    from recon.io.ply import write_ply_sequence

    sp = scene.splats
    frames = [scene.positions_at(j).cpu() for j in range(scene.num_times)]
    return write_ply_sequence(
        folder, frames, sp.log_scales.detach().cpu(), sp.opacity_logits.detach().cpu(), sp.rgb().detach().cpu(),
        times=scene.times.double().numpy(), fps=fps, source=source, time_unit=time_unit,
        meta={"positions": "canonical + dp_j^t (temporal deformation); per-view offsets dp_i^v are NOT included "
                           "(they compensate input inconsistency between views, not scene motion)",
              "coordinates": "world of the input cameras" if world else
                             "central camera at the reference time (no cameras were given)"})


def write_outputs(grid: FrameGrid, scene: DeformableScene, run_dir: Path, held: list[tuple[int, int]], config, reports: dict[str, Any],
                  seconds: dict[str, Any]) -> dict[str, Any]:
    """Write renders, preview image/video, the .ply sequence; return the metrics dict."""
    from recon.io.images import write_png

    oc = config.outputs
    renders = render_grid(scene, config.backend)
    metrics: dict[str, Any] = cell_metrics(grid, renders, held)
    V, T = grid.num_views, grid.num_times
    if oc.renders:
        for i in range(V):
            for j in range(T):
                write_png(run_dir / "renders" / f"view_{i:02d}_time_{j:04d}.png", _u8(renders[i, j]))
    # preview: a held-out view (else the central one) over time, GT | render
    pv = held[0][0] if held else int(grid.central_view)
    gt = grid.float_images()
    pairs = [np.concatenate([_u8(gt[pv, j]), _u8(renders[pv, j])], axis=1) for j in range(T)]
    write_png(run_dir / "preview.png", np.concatenate(pairs, axis=0))
    files = {"preview": "preview.png", "preview_view": pv}
    if oc.preview_video:
        import warnings

        from recon.io.video import write_video

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            written = write_video(run_dir / "preview.mp4", np.stack(pairs), fps=oc.fps)
        files["preview_video"] = Path(written).name
    if oc.ply:
        write_ply(scene, run_dir, fps=oc.fps, source=str(grid.source), time_unit=str(grid.meta.get("time_unit", "s")),
                  world=grid.cameras.w2c is not None)
        files["ply"] = "ply/sequence.json"
    metrics["files"] = files
    metrics["seconds"] = {k: v for k, v in seconds.items()}
    can, pr = reports.get("canonical", {}), reports.get("prune", {})
    metrics["gaussians"] = {"tracked_points": reports.get("tracks", {}).get("points"), "canonical": can.get("gaussians"),
                            "after_prune": pr.get("after", can.get("gaussians")), "final": scene.splats.num}
    metrics["prune"] = pr
    metrics["deform"] = {k: v for k, v in reports.get("deform", {}).items() if k != "loss_trace_every_10"}
    fl = floater_report(grid, scene.positions_at(grid.ref_time, world=False).cpu(), oc.floater_tol)
    if fl:
        metrics["floaters"] = {"canonical": can.get("floaters"), "after_prune": pr.get("floaters", can.get("floaters")),
                               "final": fl["floaters"], "tol": oc.floater_tol}
    return metrics
