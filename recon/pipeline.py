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

Run folder layout: ``run.json`` (format, version, command, input, seed, device, per-stage status,
seconds and report), ``config.json`` (the full :class:`ReconstructConfig`), ``checkpoints/``,
``ply/`` (``frame_0000.ply ...`` + ``sequence.json``), ``renders/``, ``preview.png``,
``preview.mp4`` (or .gif), ``metrics.json``.

Determinism: every stage seeds torch from ``seed`` and the stage's index, torch runs with
``config.threads`` threads, and every stage continues from what the previous one *saved*, so a
resumed run computes exactly what an uninterrupted one does (on the same device).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from recon.errors import InputError
from recon.fit.canonical import Canonical, CanonicalConfig, build_canonical
from recon.fit.deform import DeformConfig, fit_deform, scene_from_canonical
from recon.fit.monocular import MonocularConfig, init_monocular, is_monocular, reference_window
from recon.fit.prune import PruneConfig, prune_floaters
from recon.grid import FrameGrid
from recon.io.atomic import atomic_path, write_json
from recon.model.scene import DeformableScene
from recon.tracking.types import Tracks

RUN_FORMAT = "recon-run"
RUN_VERSION = 1
STAGES = ("tracks", "canonical", "prune", "deform", "outputs")


@dataclass
class TrackConfig:
    """Options of the tracking stage (see :func:`recon.tracking.build_tracks`)."""

    tracks: str = "auto"
    """auto | gt | flow | rig (depth + given poses, calibrated wide-baseline rigs) | file."""
    depth: str = "auto"
    """auto | gt | mvs | file (for flow and rig tracks)."""
    tracks_path: str | None = None
    depth_path: str | None = None
    keyframes: int = 3
    stride: int = 2


@dataclass
class OutputConfig:
    """What the outputs stage writes."""

    renders: bool = True
    """renders/view_XX_time_YYYY.png for every grid cell."""
    preview_video: bool = True
    """preview.mp4 (GT | render of the preview view over time)."""
    ply: bool = True
    """ply/frame_XXXX.ply + sequence.json."""
    fps: float = 8.0
    floater_tol: float = 0.05
    """Synthetic grids: distance (scene units) from every GT surface beyond which a Gaussian is a floater."""


@dataclass
class ReconstructConfig:
    """Everything that determines a reconstruction (saved as ``config.json``)."""

    tracking: TrackConfig = field(default_factory=TrackConfig)
    canonical: CanonicalConfig = field(default_factory=CanonicalConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    deform: DeformConfig = field(default_factory=DeformConfig)
    monocular: MonocularConfig = field(default_factory=MonocularConfig)
    """Canonical initialisation of monocular grids (one view per time), which replaces stages 1-3."""
    outputs: OutputConfig = field(default_factory=OutputConfig)
    holdout_views: list[int] = field(default_factory=list)
    """Held-out cells are the cross product holdout_views x holdout_times (never trained on)."""
    holdout_times: list[int] = field(default_factory=list)
    seed: int = 0
    threads: int = 0
    """torch CPU threads; 0: the cores this process may use (at most 8), recorded in run.json. A
    fixed count gives reproducible results. The CLI makes OpenMP wait passively
    (``OMP_WAIT_POLICY=PASSIVE``): spinning waits made a 2-thread fit 40x slower on a busy machine."""
    backend: str = "auto"
    """Rasterizer backend: auto | torch | cpu | cuda."""


def resolve_threads(n: int) -> int:
    """``n`` >= 1 as is; 0: the cores available to this process, at most 8."""
    import os

    if int(n) >= 1:
        return int(n)
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(8, cores))


def config_to_dict(config: ReconstructConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)


def config_from_dict(data: dict[str, Any], base: ReconstructConfig | None = None, source: str = "config") -> ReconstructConfig:
    """Apply a (possibly partial, nested) dict of overrides to ``base`` (default config).
    Unknown keys and wrongly typed values raise :class:`InputError` naming the key."""
    base = base or ReconstructConfig()

    def apply(obj: Any, d: dict[str, Any], prefix: str) -> Any:
        if not isinstance(d, dict):
            raise InputError(f"expected an object, got {type(d).__name__}", source, prefix or "config")
        names = {f.name: f for f in dataclasses.fields(obj)}
        changes = {}
        for k, v in d.items():
            key = f"{prefix}{k}"
            if k not in names:
                raise InputError(f"unknown option (known: {', '.join(names)})", source, key)
            cur = getattr(obj, k)
            if dataclasses.is_dataclass(cur):
                changes[k] = apply(cur, v, key + ".")
            else:
                changes[k] = _coerce(cur, v, source, key)
        return dataclasses.replace(obj, **changes)

    return apply(base, data, "")


def _coerce(cur: Any, v: Any, source: str, key: str) -> Any:
    if cur is None or v is None:
        return v
    if isinstance(cur, bool):
        if not isinstance(v, bool):
            raise InputError(f"expected true/false, got {v!r}", source, key)
        return v
    if isinstance(cur, (int, float)) and not isinstance(cur, bool):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise InputError(f"expected a number, got {v!r}", source, key)
        return type(cur)(v) if isinstance(cur, float) or float(v).is_integer() else v
    if isinstance(cur, list):
        if not isinstance(v, list):
            raise InputError(f"expected a list, got {v!r}", source, key)
        return v
    if isinstance(cur, str) and not isinstance(v, str):
        raise InputError(f"expected a string, got {v!r}", source, key)
    return v


def load_config_file(path: Path, base: ReconstructConfig | None = None) -> ReconstructConfig:
    """Overrides from a JSON file (same nesting as ``config.json``)."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError("config file does not exist", path) from None
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"not a readable JSON file ({e})", path) from None
    return config_from_dict(data, base, str(path))


@dataclass
class Result:
    """What :func:`reconstruct` returns."""

    run_dir: Path
    metrics: dict[str, Any]
    scene: DeformableScene


class Progress:
    """Progress hooks (no-op); the CLI passes a rich implementation."""

    def stage_start(self, name: str, total: int | None) -> None: ...

    def stage_advance(self, name: str, done: int, total: int, loss: float | None = None) -> None: ...

    def stage_end(self, name: str, seconds: float, loaded: bool) -> None: ...


# --- run folder -----------------------------------------------------------------------------
class RunFolder:
    """``run.json`` bookkeeping and checkpoint paths of one run folder."""

    def __init__(self, path: Path, info: dict[str, Any]):
        self.path = Path(path)
        self.info = info

    @staticmethod
    def read_info(path: Path) -> dict[str, Any]:
        f = Path(path) / "run.json"
        try:
            info = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise InputError(f"unreadable run.json ({e})", f) from None
        if not isinstance(info, dict) or info.get("format") != RUN_FORMAT:
            raise InputError(f"not a recon run folder (format {info.get('format') if isinstance(info, dict) else None!r})", f, "format")
        if info.get("version") != RUN_VERSION:
            raise InputError(f"run folder version {info.get('version')!r} is not supported by this recon "
                             f"(expects {RUN_VERSION}); start a new run with another --out", f, "version")
        return info

    def checkpoint(self, stage: str) -> Path:
        return self.path / "checkpoints" / f"{stage}.safetensors"

    def status(self, stage: str) -> str:
        return self.info["stages"].get(stage, {}).get("status", "pending")

    def set(self, stage: str, **kw: Any) -> None:
        self.info["stages"].setdefault(stage, {}).update(kw)
        self.info["updated"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        write_json(self.path / "run.json", self.info)


def open_run(run_dir: Path, resume: bool, header: dict[str, Any], config: ReconstructConfig) -> tuple[RunFolder, ReconstructConfig]:
    """Create a new run folder or reopen one for ``resume``; returns it and the config to use
    (a resumed run keeps its saved config). Never deletes anything already there."""
    run_dir = Path(run_dir)
    if (run_dir / "run.json").exists():
        info = RunFolder.read_info(run_dir)
        if not resume:
            raise InputError("run folder already exists; pass --resume to continue it, or choose another --out", run_dir)
        config = load_config_file(run_dir / "config.json")
        info.update({k: v for k, v in header.items() if k in ("device",)})
        info.setdefault("resumed", 0)
        info["resumed"] += 1
        return RunFolder(run_dir, info), config
    if resume:
        raise InputError("nothing to resume: no run.json in this folder", run_dir)
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise InputError("output exists and is not an empty folder nor a recon run; choose another --out", run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    info = {"format": RUN_FORMAT, "version": RUN_VERSION, **header, "seed": config.seed,
            "threads": resolve_threads(config.threads),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "stages": {s: {"status": "pending"} for s in STAGES}}
    write_json(run_dir / "config.json", config_to_dict(config))
    run = RunFolder(run_dir, info)
    run.set("tracks", status="pending")
    return run, config


def holdout_cells(grid: FrameGrid, config: ReconstructConfig) -> list[tuple[int, int]]:
    """Held-out cells (cross product), validated against the grid.

    Holding out the reference time of a view makes that view *unseen*: it is left out of
    tracking, the canonical and the prune stages too (its dp_i^v is zero plus the learned
    correction), which needs known cameras for its pose. The central view cannot be unseen."""
    V, T = grid.num_views, grid.num_times
    for name, vals, n in (("holdout_views", config.holdout_views, V), ("holdout_times", config.holdout_times, T)):
        bad = [v for v in vals if not 0 <= int(v) < n]
        if bad:
            raise InputError(f"indices {bad} outside [0, {n})", field=name)
    if unseen_views(grid, config):
        if grid.cameras.w2c is None:
            raise InputError(f"holding out the reference time {grid.ref_time} of a view needs known cameras (its pose cannot "
                             "be tracked); hold out other times", field="holdout_times")
        if int(grid.central_view) in config.holdout_views:
            raise InputError(f"the central view {grid.central_view} cannot be held out at the reference time "
                             f"{grid.ref_time} (it defines the canonical frame)", field="holdout_views")
    cells = [(int(i), int(j)) for i in config.holdout_views for j in config.holdout_times]
    if len(set(cells)) >= V * T:
        raise InputError("every cell is held out; nothing left to train on", field="holdout")
    return cells


def unseen_views(grid: FrameGrid, config: ReconstructConfig) -> list[int]:
    """Views held out at the reference time: excluded from tracking (see :func:`holdout_cells`)."""
    return sorted({int(v) for v in config.holdout_views}) if grid.ref_time in config.holdout_times else []


# --- checkpoints ----------------------------------------------------------------------------
def _save(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp),
                  metadata={"format": RUN_FORMAT, "version": str(RUN_VERSION), **{k: json.dumps(v) for k, v in meta.items()}})


def _load(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
            t = {k: f.get_tensor(k) for k in f.keys()}
    except (OSError, RuntimeError, ValueError, SafetensorError) as e:
        raise InputError(f"unreadable checkpoint ({e}); re-run without --resume in a new folder", path) from None
    if raw.get("format") != RUN_FORMAT or raw.get("version") != str(RUN_VERSION):
        raise InputError(f"checkpoint from an incompatible recon (version {raw.get('version')!r})", path, "version")
    return t, {k: json.loads(v) for k, v in raw.items() if k not in ("format", "version")}


def _tracks_tensors(tr: Tracks) -> dict[str, torch.Tensor]:
    t = {"points": tr.points, "visible": tr.visible.to(torch.uint8), "colors": tr.colors, "seed_view": tr.seed_view}
    if tr.time_points is not None:
        t["time_points"] = tr.time_points
        t["time_visible"] = tr.time_visible.to(torch.uint8)
    return t


def _tracks_from(t: dict[str, torch.Tensor]) -> Tracks:
    return Tracks(points=t["points"], visible=t["visible"].bool(), colors=t["colors"], seed_view=t["seed_view"],
                  time_points=t.get("time_points"), time_visible=t["time_visible"].bool() if "time_visible" in t else None)


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
    held = holdout_cells(grid, config)
    tracked_views = [v for v in range(grid.num_views) if v not in unseen_views(grid, config)]
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
    reports: dict[str, Any] = {}

    def stage(name: str, k: int, compute: Callable[[], tuple[dict[str, torch.Tensor], dict[str, Any]]]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        ck = run.checkpoint(name)
        if run.status(name) == "done" and ck.is_file():
            progress.stage_start(name, None)
            t, meta = _load(ck)
            progress.stage_end(name, 0.0, True)
            reports[name] = run.info["stages"][name].get("report", {})
            return t, meta
        torch.manual_seed(config.seed * 1000 + k)
        np.random.seed((config.seed * 1000 + k) % 2**32)
        run.set(name, status="running")
        t0 = time.perf_counter()
        try:
            tensors, meta = compute()
            _save(ck, tensors, meta)
        except KeyboardInterrupt:
            run.set(name, status="interrupted")
            raise
        except BaseException as e:
            run.set(name, status="failed", error=str(e)[:500])
            raise
        seconds = time.perf_counter() - t0
        report = meta.get("report", {})
        run.set(name, status="done", seconds=round(seconds, 3), report=report)
        reports[name] = report
        progress.stage_end(name, seconds, False)
        return _load(ck)  # continue from what was saved: resumed and uninterrupted runs agree

    tc = config.tracking
    mono = is_monocular(grid, tracked_views)
    if mono:
        return _run_monocular(grid, held, train, config, run, device, progress, stage, reports)

    def do_tracks():
        from recon.tracking import build_tracks

        progress.stage_start("tracks", None)
        tr = build_tracks(tgrid, depth=tc.depth, tracks=tc.tracks, tracks_path=tc.tracks_path, depth_path=tc.depth_path,
                          keyframes=tc.keyframes, stride=tc.stride, device=device)
        return _tracks_tensors(tr), {"report": {"points": tr.num_points, "visible_fraction": float(tr.visible.float().mean()),
                                                "source": tr.source}}

    t, _ = stage("tracks", 1, do_tracks)
    tracks = _tracks_from(t)

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
                         lambda d, n, loss: progress.stage_advance("deform", d, n, loss), held_cells=held)
        return scene.tensors(), {"field": scene.field_config(), "size": list(scene.size), "report": rep}

    stage("deform", 4, do_deform)
    return _outputs(grid, held, config, run, device, progress, reports)


SKIPPED_MONOCULAR = {
    "tracks": "monocular grid (one view per time): no freeze-time video to track",
    "prune": "monocular grid: pruning re-renders the freeze-time frames, which need several views at one time "
             "(floaters are left to density control's opacity pruning in the deform stage)",
}


def _run_monocular(grid: FrameGrid, held: list[tuple[int, int]], train: list[tuple[int, int]], config: ReconstructConfig,
                   run: RunFolder, device: torch.device, progress: Progress, stage: Callable, reports: dict[str, Any]) -> Result:
    """Stages of a monocular grid (module docstring): tracks and prune skipped, carved canonical splats."""
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
                                 mlp_activation=config.monocular.mlp_activation)
        scene = scene_from_canonical(grid, canonical, dc, False, [0])
        progress.stage_start("deform", config.deform.iterations or None)
        rep = fit_deform(grid, scene, train, dc, device, config.seed * 1000 + 4, config.backend,
                         lambda d, n, loss: progress.stage_advance("deform", d, n, loss), held_cells=held,
                         monocular=reference_window(grid, train, config.monocular.window))
        rep["monocular"] = ("one view per time: no view offsets dp_i^v (tracked or learned), no per-camera colour "
                            "response, no time-smoothness term, no opacity resets; static warm-up on the reference "
                            "window's frames")
        return scene.tensors(), {"field": scene.field_config(), "size": list(scene.size), "report": rep}

    stage("deform", 4, do_deform)
    return _outputs(grid, held, config, run, device, progress, reports)


def _outputs(grid: FrameGrid, held: list[tuple[int, int]], config: ReconstructConfig, run: RunFolder, device: torch.device,
             progress: Progress, reports: dict[str, Any]) -> Result:
    """The outputs stage (renders, previews, .ply, metrics.json); a finished one is read back."""
    from recon.fit import evaluate

    scene = DeformableScene.load(run.checkpoint("deform"), device)
    if run.status("outputs") != "done" or not (run.path / "metrics.json").is_file():
        run.set("outputs", status="running")
        progress.stage_start("outputs", None)
        t0 = time.perf_counter()
        try:
            with torch.no_grad():
                metrics = evaluate.write_outputs(grid, scene, run.path, held, config, reports,
                                                 {s: run.info["stages"][s].get("seconds") for s in STAGES[:-1]})
        except KeyboardInterrupt:
            run.set("outputs", status="interrupted")
            raise
        seconds = time.perf_counter() - t0
        metrics["seconds"]["outputs"] = round(seconds, 3)
        # flat summary keys (read by `recon info RUN`)
        metrics.update(psnr_train=metrics["train"]["psnr_mean"], psnr_holdout=metrics["heldout"]["psnr_mean"],
                       ssim_holdout=metrics["heldout"]["ssim_mean"], num_gaussians=metrics["gaussians"]["final"],
                       stage_seconds=metrics["seconds"])
        write_json(run.path / "metrics.json", metrics)
        run.set("outputs", status="done", seconds=round(seconds, 3))
        progress.stage_end("outputs", seconds, False)
    else:
        metrics = json.loads((run.path / "metrics.json").read_text())
    return Result(run.path, metrics, scene)
