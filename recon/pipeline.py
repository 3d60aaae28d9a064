"""``reconstruct(grid, config, run_dir)``: the reconstruction pipeline, stage by stage, resumable.

Stages (each writes a checkpoint under ``RUN/checkpoints/`` when it finishes, and a finished
stage is loaded, not re-run, by a resumed run):

1. ``tracks``    dense 3D tracks of the freeze-time frames (:func:`recon.tracking.build_tracks`);
2. ``canonical`` canonical isotropic splats, poses, view offsets (:mod:`recon.fit.canonical`);
3. ``prune``     floater pruning in each frame's own coordinates (:mod:`recon.fit.prune`);
4. ``deform``    temporal deformation fitted on the training cells (:mod:`recon.fit.deform`);
5. ``outputs``   renders, previews, .ply sequence, metrics (:mod:`recon.fit.evaluate`).

A *monocular* grid (one view per time, e.g. D-NeRF; :func:`recon.fit.monocular.is_monocular`) has
no freeze-time video: stages 1 and 3 are skipped (``run.json`` says why), stage 2 initialises the
splats by space carving (:mod:`recon.fit.monocular`), and the deform stage fits them with the
same engine (density control, temporal MLP) without view offsets.

Held-out cells (``holdout_views`` x ``holdout_times``) are never rendered during a fit. A view
held out at the reference time is *unseen*: it is also left out of tracking and pruning and is
rendered from its given camera (real rigs' test cameras).

Run folder layout, stage statuses and checkpoints: :mod:`recon.run` (every stage, ``outputs``
included, runs through its :class:`~recon.run.StageRunner`).

Determinism: every stage seeds torch from ``seed`` and the stage's index, torch runs with
``config.threads`` threads, and every stage continues from what the previous one *saved*, so a
resumed run computes exactly what an uninterrupted one does (on the same device, with
``threads: 1``; with more threads two runs of one seed differ slightly, see
:attr:`ReconstructConfig.threads`).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from recon.config import ReconstructConfig, resolve_threads
from recon.errors import InputError
from recon.fit.canonical import Canonical, build_canonical
from recon.fit.deform import fit_deform, scene_from_canonical
from recon.fit.monocular import init_monocular, is_monocular, life_windows
from recon.fit.prune import prune_floaters
from recon.grid import FrameGrid
from recon.io.atomic import write_json
from recon.model.scene import DeformableScene
from recon.run import STAGES, RunFolder, StageRunner, load_checkpoint, open_run
from recon.tracking.types import Tracks



@dataclass
class Result:
    """What :func:`reconstruct` returns."""

    run_dir: Path
    metrics: dict[str, Any]
    scene: DeformableScene


class Progress:
    """Progress hooks (no-op); the CLI passes a rich implementation."""

    def run_start(self, run_dir: Path, resumed: bool) -> None:
        """Called once the input, the config and (resumed) the run folder have been checked."""

    def stage_start(self, name: str, total: int | None) -> None: ...

    def stage_advance(self, name: str, done: int, total: int, loss: float | None = None) -> None: ...

    def stage_end(self, name: str, seconds: float, loaded: bool) -> None: ...


def holdout_cells(grid: FrameGrid, config: ReconstructConfig, source: str | None = None) -> list[tuple[int, int]]:
    """Held-out cells (cross product), validated against the grid.

    Holding out the reference time of a view makes that view *unseen*: it is left out of
    tracking, the canonical and the prune stages too (its dp_i^v is zero plus the learned
    correction), which needs known cameras for its pose. The central view cannot be unseen.
    ``source`` (where the config came from) is named in the errors."""
    V, T = grid.num_views, grid.num_times
    for name, vals, n in (("holdout_views", config.holdout_views, V), ("holdout_times", config.holdout_times, T)):
        bad = [v for v in vals if not 0 <= int(v) < n]
        if bad:
            raise InputError(f"indices {bad} outside [0, {n})", source, name)
    if unseen_views(grid, config):
        if grid.cameras.w2c is None:
            raise InputError(f"holding out the reference time {grid.ref_time} of a view needs known cameras (its pose cannot "
                             "be tracked); hold out other times", source, "holdout_times")
        if int(grid.central_view) in config.holdout_views:
            raise InputError(f"the central view {grid.central_view} cannot be held out at the reference time "
                             f"{grid.ref_time} (it defines the canonical frame)", source, "holdout_views")
    cells = [(int(i), int(j)) for i in config.holdout_views for j in config.holdout_times]
    if len(set(cells)) >= V * T:
        raise InputError("every cell is held out; nothing left to train on", source, "holdout")
    return cells


def unseen_views(grid: FrameGrid, config: ReconstructConfig) -> list[int]:
    """Views held out at the reference time: excluded from tracking (see :func:`holdout_cells`)."""
    return sorted({int(v) for v in config.holdout_views}) if grid.ref_time in config.holdout_times else []


# --- the pipeline ---------------------------------------------------------------------------
def reconstruct(
    grid: FrameGrid,
    config: ReconstructConfig,
    run_dir: Path,
    device: torch.device = torch.device("cpu"),
    resume: bool = False,
    header: dict[str, Any] | None = None,
    progress: Progress | None = None,
) -> Result:
    """Reconstruct a deformable 4D splat scene from ``grid`` into ``run_dir`` (see module docstring).

    Args:
        grid: the V x T frame grid.
        config: the reconstruction config (ignored for a resumed run, which keeps its saved one).
        run_dir: the run folder (new or empty; or an existing run with ``resume``).
        device: torch device of the fit.
        resume: continue an interrupted run: finished stages are loaded from their checkpoints.
        header: ``command`` / ``input`` / ``device`` strings recorded in ``run.json``.
        progress: progress hooks.

    Raises :class:`InputError` for bad input (before anything in ``run_dir`` is overwritten).
    KeyboardInterrupt leaves ``run.json`` saying which stage was interrupted; re-run with resume.
    """
    from recon.tracking.build import check_trackable

    progress = progress or Progress()
    header = {"device": str(device), **(header or {})}

    holdout_cells(grid, config)  # validate before touching the folder
    tracked_views = [v for v in range(grid.num_views) if v not in unseen_views(grid, config)]
    if is_monocular(grid, tracked_views):
        if grid.cameras.w2c is None:
            raise InputError("a monocular grid (one view per time) needs camera poses: nothing can be tracked between "
                             "views", grid.source, "w2c")
        held = set(holdout_cells(grid, config))
        if sum((tracked_views[0], j) not in held for j in range(grid.num_times)) < 2:
            raise InputError(f"grid has 1 view and {grid.num_times} time(s); too small (a monocular grid needs at least "
                             "2 training frames)", grid.source, "images")
    else:
        check_trackable(grid.subset(views=tracked_views) if len(tracked_views) < grid.num_views else grid)
    run, config = open_run(Path(run_dir), resume, header, config)
    held = holdout_cells(grid, config, str(Path(run_dir) / "config.json") if resume else None)
    tracked_views = [v for v in range(grid.num_views) if v not in unseen_views(grid, config)]
    if resume:  # every finished stage's checkpoint is checked now, before any work
        dims = {"V": grid.num_views, "W": len(tracked_views), "T": grid.num_times}
        for name in STAGES[:-1]:
            if run.status(name) == "done" and run.checkpoint(name).is_file():
                load_checkpoint(run.checkpoint(name), name, dims)
    progress.run_start(Path(run_dir), resume)
    tgrid = grid.subset(views=tracked_views) if len(tracked_views) < grid.num_views else grid
    threads = torch.get_num_threads()
    torch.set_num_threads(resolve_threads(config.threads))
    try:
        return _run_stages(grid, tgrid, tracked_views, held, config, run, device, progress)
    finally:
        torch.set_num_threads(threads)


def _run_stages(grid: FrameGrid, tgrid: FrameGrid, tracked_views: list[int], held: list[tuple[int, int]],
                config: ReconstructConfig, run: RunFolder, device: torch.device, progress: Progress) -> Result:
    """The stages of :func:`reconstruct` (``tgrid``: the grid of the tracked views)."""
    from recon.fit import evaluate

    train = [(i, j) for i in range(grid.num_views) for j in range(grid.num_times) if (i, j) not in held]
    runner = StageRunner(run, config.seed, {"V": grid.num_views, "W": len(tracked_views), "T": grid.num_times}, progress)
    stage, reports = runner.checkpointed, runner.reports

    tc = config.tracking
    mono = is_monocular(grid, tracked_views)
    if mono:
        return _run_monocular(grid, held, train, config, runner, device, progress)

    def do_tracks():
        from recon.tracking import build_tracks

        progress.stage_start("tracks", None)
        tr = build_tracks(tgrid, depth=tc.depth, tracks=tc.tracks, tracks_path=tc.tracks_path, depth_path=tc.depth_path,
                          keyframes=tc.keyframes, stride=tc.stride, device=device)
        return tr.tensors(), {"report": {"points": tr.num_points, "visible_fraction": float(tr.visible.float().mean()),
                                                "source": tr.source}}

    t, _ = stage("tracks", 1, do_tracks)
    tracks = Tracks.from_tensors(t)

    def do_canonical():
        progress.stage_start("canonical", None)
        can = build_canonical(tgrid, tracks, config.canonical)
        if tgrid is not grid:  # unseen views: poses from the cameras, zero tracked offsets
            from recon.fit.canonical import cell_poses

            off = torch.zeros(can.splats.num, grid.num_views, 3)
            off[:, tracked_views] = can.view_offsets
            can.view_offsets = off
            can.poses = torch.from_numpy(cell_poses(grid)[0]).float()
        rep = {"gaussians": can.splats.num, "pose_source": can.pose_source,
               "view_offset_rms": float(can.view_offsets.pow(2).sum(-1).mean().sqrt())}
        rep.update(evaluate.floater_report(grid, can.splats.means, config.outputs.floater_tol))
        return can.tensors(), {"pose_source": can.pose_source, "report": rep}

    t, meta = stage("canonical", 2, do_canonical)
    canonical = Canonical.from_tensors(t, meta["pose_source"])

    def do_prune():
        if not config.prune.enabled:
            progress.stage_start("prune", None)
            return canonical.tensors(), {"pose_source": canonical.pose_source, "report": {"skipped": True, "pruned": 0}}
        progress.stage_start("prune", config.prune.iterations)
        pruned, rep = prune_floaters(tgrid, canonical, config.prune, device, config.seed * 1000 + 3, config.backend,
                                     lambda d, n: progress.stage_advance("prune", d, n))
        rep.update(evaluate.floater_report(grid, pruned.splats.means, config.outputs.floater_tol))
        return pruned.tensors(), {"pose_source": pruned.pose_source, "report": rep}

    t, meta = stage("prune", 3, do_prune)
    canonical = Canonical.from_tensors(t, meta["pose_source"])

    def do_deform():
        trained_views = sorted({i for i, _ in train})
        dc = config.deform
        if reports.get("tracks", {}).get("source") == "rig" and not dc.view_offsets_on_rigs:
            dc = dataclasses.replace(dc, learn_view_offsets=False)  # a calibrated rig is consistent
        scene = scene_from_canonical(grid, canonical, dc, config.canonical.view_offsets, trained_views)
        progress.stage_start("deform", config.deform.iterations or None)
        rep = fit_deform(grid, scene, train, dc, device, config.seed * 1000 + 4, config.backend,
                         lambda d, n, loss: progress.stage_advance("deform", d, n, loss), held_cells=held,
                         background=config.monocular)
        return scene.tensors(), {**scene.meta(), "report": rep}

    stage("deform", 4, do_deform)
    return _outputs(grid, held, config, runner, device, progress)


SKIPPED_MONOCULAR = {
    "tracks": "monocular grid (one view per time): no freeze-time video to track",
    "prune": "monocular grid: pruning re-renders the freeze-time frames, which need several views at one time "
             "(floaters are left to density control's opacity pruning in the deform stage)",
}


def _run_monocular(grid: FrameGrid, held: list[tuple[int, int]], train: list[tuple[int, int]], config: ReconstructConfig,
                   runner: StageRunner, device: torch.device, progress: Progress) -> Result:
    """Stages of a monocular grid (module docstring): tracks and prune skipped, carved canonical splats."""
    stage = runner.checkpointed
    def skipped(name: str) -> Callable[[], tuple[dict[str, torch.Tensor], dict[str, Any]]]:
        def compute():
            progress.stage_start(name, None)
            rep = {"skipped": True, "reason": SKIPPED_MONOCULAR[name]}
            if name == "prune":
                rep["pruned"] = 0
            return {}, {"report": rep}
        return compute

    stage("tracks", 1, skipped("tracks"))

    def do_canonical():
        progress.stage_start("canonical", None)
        can, rep = init_monocular(grid, train, config.monocular, config.seed)
        return can.tensors(), {"pose_source": can.pose_source, "report": rep}

    t, meta = stage("canonical", 2, do_canonical)
    canonical = Canonical.from_tensors(t, meta["pose_source"])
    stage("prune", 3, skipped("prune"))

    def do_deform():
        # one view: no view offsets, no per-camera response; no time smoothness either (measured: on
        # the rapid-motion scene it held the MLP back and the splats faded instead of following),
        # and no opacity resets (each splat sees one image per step: after a reset the scene was
        # pruned away before it recovered -- 23 Gaussians left at 400x400)
        dc = dataclasses.replace(config.deform, learn_view_offsets=False, appearance=False, static_background=False,
                                 time_smooth_reg=0.0, density=dataclasses.replace(config.deform.density, reset_every=0),
                                 mlp_activation=config.monocular.mlp_activation, rigidity_reg=config.monocular.rigidity_reg,
                                 time_curriculum=config.monocular.curriculum(), sh_degree=config.monocular.sh_degree,
                                 sh_shading=config.monocular.sh_shading)
        scene = scene_from_canonical(grid, canonical, dc, False, [0])
        progress.stage_start("deform", config.deform.iterations or None)
        rep = fit_deform(grid, scene, train, dc, device, config.seed * 1000 + 4, config.backend,
                         lambda d, n, loss: progress.stage_advance("deform", d, n, loss), held_cells=held,
                         background=config.monocular,
                         monocular=sorted({c for w in life_windows(grid, train, config.monocular) for c in w}))
        rep["monocular"] = ("one view per time: no view offsets dp_i^v (tracked or learned), no per-camera colour "
                            "response, no time-smoothness term, no opacity resets; "
                            + (f"splats carved in {config.monocular.windows} windows, each living around its window's "
                               f"time (lifespan {config.monocular.life_width:g} x the window spacing), static warm-up on "
                               "every window's frames; " if config.monocular.windows > 1 else
                               "static warm-up on the reference window's frames; ")
                            + f"rigidity term {dc.rigidity_reg:g} (robust scale {dc.rigidity_robust:g}), "
                            f"temporal curriculum {dc.time_curriculum:g}, view-dependent colour of degree {dc.sh_degree}"
                            + (" (shading gains)" if dc.sh_degree and dc.sh_shading else ""))
        return scene.tensors(), {**scene.meta(), "report": rep}

    stage("deform", 4, do_deform)
    return _outputs(grid, held, config, runner, device, progress)


def _outputs(grid: FrameGrid, held: list[tuple[int, int]], config: ReconstructConfig, runner: StageRunner,
             device: torch.device, progress: Progress) -> Result:
    """The outputs stage (renders, previews, .ply, metrics.json, the last one written)."""
    from recon.fit import evaluate

    run = runner.run
    scene = DeformableScene.load(run.checkpoint("deform"), device)

    def compute() -> dict[str, Any]:
        progress.stage_start("outputs", None)
        t0 = time.perf_counter()
        with torch.no_grad():
            metrics = evaluate.write_outputs(grid, scene, run.path, held, config, runner.reports,
                                             {s: run.info["stages"][s].get("seconds") for s in STAGES[:-1]})
        metrics["seconds"]["outputs"] = round(time.perf_counter() - t0, 3)
        # flat summary keys (read by `recon info RUN`)
        metrics.update(psnr_train=metrics["train"]["psnr_mean"], psnr_holdout=metrics["heldout"]["psnr_mean"],
                       ssim_holdout=metrics["heldout"]["ssim_mean"], num_gaussians=metrics["gaussians"]["final"],
                       stage_seconds=metrics["seconds"])
        write_json(run.path / "metrics.json", metrics)
        return metrics

    metrics = runner.files("outputs", 5, run.path / "metrics.json", compute, lambda f: json.loads(f.read_text()))
    return Result(run.path, metrics, scene)
