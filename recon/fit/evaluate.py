"""Evaluation and outputs of a fitted scene: per-cell PSNR / SSIM, floater counts against
synthetic ground truth, renders, previews, the .ply sequence and ``metrics.json``.

Floaters (synthetic grids only): a Gaussian is a floater when its world position at the
reference time lies farther than ``tol`` (scene units) from every ground-truth surface: not
inside or within ``tol`` of a foreground object (:meth:`recon.synth.Scene.inside`), not within
``tol`` of the ground plane, not within ``tol`` of the backdrop sphere.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from recon.errors import InputError
from recon.fit.losses import psnr, ssim
from recon.grid import FrameGrid
from recon.io.atomic import atomic_path
from recon.model.scene import DeformableScene

RENDER_BATCH = 4
PREVIEW_VIEWS = 2
"""Held-out views shown in preview.png / preview.mp4 (e.g. a test split's cameras)."""
PREVIEW_FRAMES = 8
"""At most this many times in preview.png (evenly spaced); preview.mp4 has them all."""


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
    c2w = grid.canonical_to_world()
    X = canonical_means.detach().cpu().double().numpy() @ c2w[:3, :3].T + c2w[:3, 3]
    return {"floaters": count_floaters(scene, X, float(grid.times[grid.ref_time]), tol), "floater_tol": tol}


def iter_renders(scene: DeformableScene, cells: list[tuple[int, int]], backend: str = "auto", view_offsets: bool = True,
                 appearance: bool = True):
    """Yield ``((view, time), rgb [H, W, 3])`` in [0, 1] (CPU) for ``cells``, rendered
    :data:`RENDER_BATCH` at a time (a large grid is never held as float renders)."""
    for k in range(0, len(cells), RENDER_BATCH):
        batch = cells[k:k + RENDER_BATCH]
        rgb, _, _, _ = scene.render(batch, backend=backend, view_offsets=view_offsets, appearance=appearance)
        for c, im in zip(batch, rgb.clamp(0, 1).cpu()):
            yield c, im


def summarise(cells: list[dict[str, Any]], grid: FrameGrid, held: list[tuple[int, int]]) -> dict[str, Any]:
    """Means over train / held-out cells, and per held-out camera (named by ``view_names``) when
    whole views are held out (a test split's cameras)."""
    out: dict[str, Any] = {"cells": cells}
    for split in ("train", "heldout"):
        sel = [c for c in cells if c["split"] == split]
        out[split] = {"cells": len(sel), "psnr_mean": float(np.mean([c["psnr"] for c in sel])) if sel else None,
                      "ssim_mean": float(np.mean([c["ssim"] for c in sel])) if sel else None}
    held_views = sorted({i for i, _ in held})
    names = grid.view_names or [str(i) for i in range(grid.num_views)]
    per = {}
    for i in held_views:
        sel = [c for c in cells if c["view"] == i and c["split"] == "heldout"]
        per[names[i]] = {"view": i, "frames": len(sel), "psnr_mean": float(np.mean([c["psnr"] for c in sel])),
                         "ssim_mean": float(np.mean([c["ssim"] for c in sel]))}
    out["heldout"]["per_camera"] = per
    return out


def _cell(grid: FrameGrid, i: int, j: int, im: Tensor, held: list[tuple[int, int]]) -> dict[str, Any]:
    gt = torch.from_numpy(grid.images[i, j]).float().div_(255.0)
    out = {"view": i, "time": j, "split": "heldout" if (i, j) in held else "train",
           "psnr": psnr(im, gt), "ssim": float(ssim(im[None], gt[None])[0])}
    files = grid.meta.get("frame_files")
    if isinstance(files, list) and len(files) == grid.num_views and len(files[i]) == grid.num_times:
        out["file"] = files[i][j]  # readers that know each cell's image file (per test image metrics)
    return out


CONTACT_CELLS = 12
"""At most this many held-out cells in ``heldout.png`` (spread evenly over the held-out ones)."""
ERROR_GAIN = 4.0
"""The error column of ``heldout.png`` shows ``|render - ground truth| x ERROR_GAIN``."""


def _contact_cells(held: list[tuple[int, int]]) -> list[tuple[int, int]]:
    cells = sorted(set(held))
    if len(cells) <= CONTACT_CELLS:
        return cells
    idx = np.linspace(0, len(cells) - 1, CONTACT_CELLS).round().astype(int)
    return [cells[k] for k in idx]


def contact_sheet(grid: FrameGrid, renders: dict, metrics: dict, cells: list[tuple[int, int]], names: list[str]) -> np.ndarray:
    """``uint8`` image: one row per held-out cell, ground truth | render | amplified error, with
    a caption strip (view name, time index, PSNR) above each row."""
    from PIL import Image, ImageDraw

    rows = []
    for i, j in cells:
        gt, im = grid.images[i, j], renders[(i, j)]
        err = np.clip(np.abs(gt.astype(np.float32) - im.astype(np.float32)).mean(-1, keepdims=True) * ERROR_GAIN, 0, 255)
        tile = np.concatenate([gt, im, np.repeat(err.astype(np.uint8), 3, -1)], axis=1)
        caption = Image.new("RGB", (tile.shape[1], 14), (24, 24, 24))
        m = metrics.get((i, j), {})
        text = f"view {names[i]}  time {j}  PSNR {m.get('psnr', float('nan')):.2f} dB  SSIM {m.get('ssim', float('nan')):.3f}"
        ImageDraw.Draw(caption).text((3, 1), text, fill=(235, 235, 235))
        rows += [np.asarray(caption), tile]
    return np.concatenate(rows, axis=0)


@torch.no_grad()
def exported_metrics(grid: FrameGrid, scene: DeformableScene, held: set, backend: str = "auto") -> dict[str, Any]:
    """PSNR of the exported geometry (what ``ply/`` holds: canonical + dp_j^t, no per-view offsets,
    no per-camera colour response) in every grid cell, as means over train / held-out cells."""
    per: dict[str, list[float]] = {"train": [], "heldout": []}
    cells = [(i, j) for i in range(grid.num_views) for j in range(grid.num_times)]
    for (i, j), im in iter_renders(scene, cells, backend, view_offsets=False, appearance=False):
        gt = torch.from_numpy(grid.images[i, j]).float().div_(255.0)
        per["heldout" if (i, j) in held else "train"].append(psnr(im, gt))
    return {"what": "canonical + dp_j^t (the .ply sequence): no per-view offsets dp_i^v, no per-camera colour response",
            **{f"{k}_psnr_mean": (float(np.mean(v)) if v else None) for k, v in per.items()}}


def _u8(x: Tensor) -> np.ndarray:
    return (x.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).numpy()


def world_frame(scene: DeformableScene, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """The exported positions' world frame: ``up`` (unit vector) from the grid's ``meta["world_up"]``
    when the input states it, else the mean up axis (-y, OpenCV) of the grid's cameras; right-handed
    (world-to-camera poses are rotations); ``units`` from ``meta["units"]`` when stated."""
    meta = meta or {}
    c2w = torch.linalg.inv(scene.poses.double().reshape(-1, 4, 4))  # canonical -> ... camera-to-canonical
    R = scene.to_world.double()[:3, :3] @ c2w[:, :3, :3]  # camera axes in the export coordinates
    cam_up = -R[:, :, 1].mean(0)
    cam_up = (cam_up / cam_up.norm().clamp_min(1e-12)).tolist()
    given = meta.get("world_up")
    if isinstance(given, (list, tuple)) and len(given) == 3 and all(isinstance(x, (int, float)) for x in given):
        g = np.asarray(given, np.float64)
        up, src = (g / max(np.linalg.norm(g), 1e-12)).tolist(), "the input's world_up"
    else:
        up, src = cam_up, "mean up axis (-y) of the input cameras"
    return {"up": [round(float(x), 6) for x in up], "up_source": src, "cameras_mean_up": [round(float(x), 6) for x in cam_up],
            "handedness": "right-handed", "units": str(meta.get("units", "the input cameras' units (not stated)"))}


def render_convention() -> dict[str, Any]:
    """How recon rendered the splats while fitting them (what a viewer needs to match its renders)."""
    from recon.render.constants import LOW_PASS

    return {"splats": "isotropic 3D Gaussians, EWA splatting", "screen_low_pass_px2": LOW_PASS,
            "opacity_compensation": False,
            "note": f"the classic 3DGS blur: {LOW_PASS} px^2 added to every screen covariance, opacities not rescaled "
                    "(gsplat antialiased=False); viewers with another blur render the splats softer or sharper"}


def write_ply(scene: DeformableScene, folder: Path, fps: float | None, source: str, time_unit: str, world: bool,
              times: np.ndarray | None = None, meta: dict[str, Any] | None = None, fps_source: str | None = None) -> Path:
    """Write ``folder/ply/frame_XXXX.ply`` (one per grid time: ``canonical + dp_j^t``, without the
    per-view offsets) and ``folder/ply/sequence.json``; returns ``folder/ply``.

    ``world``: positions are in the world of the input cameras (``scene.to_world``); otherwise in
    the central camera's coordinates at the reference time (``to_world`` is then the identity).
    ``times`` (float64) default to the scene's :attr:`~recon.model.scene.DeformableScene.source_times`; ``meta`` (the grid's)
    gives the world's up axis and units when it states them (:func:`world_frame`)."""
    from recon.io.plyseq import write_ply_sequence

    sp = scene.splats
    frames = [scene.positions_at(j).cpu() for j in range(scene.num_times)]
    return write_ply_sequence(
        folder, frames, sp.log_scales.detach().cpu(), sp.opacity_logits.detach().cpu(), sp.rgb().detach().cpu(),
        sh_rest=sp.sh_rest_rgb().detach().cpu() if sp.sh_degree else None,  # (in the world frame the positions are in)
        frame_opacity_logits=[scene.field.opacity_logits_at(sp.opacity_logits, scene.times[j]).detach().cpu()
                              for j in range(scene.num_times)] if scene.field.has_lifespan else None,
        times=scene.source_times.numpy() if times is None else np.asarray(times, np.float64), fps=fps, source=source,
        time_unit=time_unit, world=world_frame(scene, meta), render=render_convention(),
        fps_source=fps_source or "outputs.fps of the run's config (a playback default, not the capture's rate)",
        meta={"positions": "canonical + dp_j^t (temporal deformation); per-view offsets dp_i^v are NOT included "
                           "(they compensate input inconsistency between views, not scene motion)",
              "coordinates": "world of the input cameras" if world else
                             "central camera at the reference time (no cameras were given)"})


def write_outputs(grid: FrameGrid, scene: DeformableScene, run_dir: Path, held: list[tuple[int, int]], config, reports: dict[str, Any],
                  seconds: dict[str, Any]) -> dict[str, Any]:
    """Write renders, preview image/video, the .ply sequence; return the metrics dict."""
    from recon.io.images import write_png

    oc = config.outputs
    V, T = grid.num_views, grid.num_times
    held_set = set(held)
    # preview: the held-out views (else the central one) over time, GT | render; a monocular grid
    # (one view) with held-out times: those times (its test images)
    pviews = sorted({i for i, _ in held})[:PREVIEW_VIEWS] or [int(grid.central_view)]
    ptimes = list(range(T))
    if V == 1 and held:
        ptimes = sorted(j for _, j in held)
    kept: dict[tuple[int, int], Tensor] = {}
    contact = set(_contact_cells(held))
    cells = []
    # renders/ appears only once every cell is in it (an interrupted run leaves no partial folder)
    with (atomic_path(run_dir / "renders") if oc.renders else contextlib.nullcontext()) as rdir:
        if rdir is not None:
            rdir.mkdir(parents=True)
        for (i, j), im in iter_renders(scene, [(i, j) for i in range(V) for j in range(T)], config.backend):
            cells.append(_cell(grid, i, j, im, held_set))
            if rdir is not None:
                write_png(rdir / f"view_{i:02d}_time_{j:04d}.png", _u8(im))
            if i in pviews or (i, j) in contact:
                kept[(i, j)] = _u8(im)
    metrics: dict[str, Any] = summarise(cells, grid, held)
    metrics["geometry"] = ("cells / train / heldout: the fitted model as it renders each grid cell: canonical + dp_i^v "
                           "+ dp_j^t (with the per-view offsets) and each camera's colour response")
    metrics["exported_geometry"] = exported_metrics(grid, scene, held_set, config.backend)
    pv = pviews[0]
    frames = []
    for j in ptimes:
        row = [np.concatenate([grid.images[v, j], kept[(v, j)]], axis=1) for v in pviews]
        frames.append(np.concatenate(row, axis=0))
    step = max(1, len(ptimes) // PREVIEW_FRAMES)
    write_png(run_dir / "preview.png", np.concatenate(frames[::step][:PREVIEW_FRAMES], axis=0))
    names = grid.view_names or [str(i) for i in range(V)]
    if contact:
        by_cell = {(c["view"], c["time"]): c for c in cells}
        write_png(run_dir / "heldout.png", contact_sheet(grid, kept, by_cell, _contact_cells(held), names))
    what = "held-out times (test images)" if len(ptimes) < T else "times"
    files = {"preview": "preview.png", "preview_view": pv, "preview_views": pviews,
             "preview_layout": f"rows: {what} (every {step}), per time one row per view {[names[v] for v in pviews]}; "
                               "columns: ground truth | render"}
    if contact:
        files["heldout_sheet"] = "heldout.png"
        files["heldout_sheet_layout"] = (f"{len(contact)} held-out cells (of {len(held)}), each ground truth | render | "
                                         f"error (|difference| x {ERROR_GAIN:g}), labelled view / time / PSNR")
    if oc.preview_video:
        import warnings

        from recon.io.video import write_video

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            written = write_video(run_dir / "preview.mp4", np.stack(frames), fps=oc.fps)
        files["preview_video"] = Path(written).name
    if oc.ply:
        write_ply(scene, run_dir, fps=oc.fps, source=str(grid.source), time_unit=str(grid.meta.get("time_unit", "s")),
                  world=grid.cameras.w2c is not None, times=grid.times, meta=grid.meta)
        files["ply"] = "ply/sequence.json"
    metrics["files"] = files
    bg = scene.background
    if "background" in grid.meta:  # what the images were composited on, and what the renders are
        metrics["background"] = {"images": grid.meta["background"],
                                 "renders": "black" if bg is None else "rgb " + " ".join(f"{float(x):g}" for x in bg),
                                 "metrics": "renders against the images as read"}
    elif bg is not None:  # learned by the deform stage (recon.fit.deform.DeformConfig.learn_background)
        metrics["background"] = {"images": "not uniform (none named by the reader)",
                                 "renders": "learned rgb " + " ".join(f"{float(x):.4g}" for x in bg),
                                 "metrics": "renders (splats over the learned colour) against the images as read",
                                 "ply": "the .ply holds the splats only: a viewer composites them on its own background"}
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
