"""Run methods on the cases of a suite, score every fit, collect the results.

Methods (:data:`METHODS`): ``recon`` (the full method) and its ablations, each one pipeline run:

* ``no-prune`` -- the floater-pruning stage switched off;
* ``no-view-offsets`` -- dp_i^v = 0 (the tracked per-view offsets are not used);
* ``no-tracking`` -- random initialisation inside the scene bounds (:func:`~recon.bench.baselines.random_tracks`);
* ``pointmap-init`` -- every freeze-time frame's depth unprojected and concatenated, as a
  feed-forward method would produce (:func:`~recon.bench.baselines.pointmap_tracks`);
* ``dust3r`` / ``splatt3r`` -- the real upstream models through :mod:`recon.bench.adapters`
  (only when pointed at a local clone and checkpoint; otherwise reported as not available).

Every non-tracking initialisation is handed to the pipeline as a tracks file, so everything after
the initialisation (canonical stage, pruning, deformation fit) is the same code for all methods.
"""

from __future__ import annotations

import math
import platform
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from recon.bench import evaluate as EV
from recon.bench.adapters import Dust3rAdapter, Splatt3rAdapter
from recon.bench.cost import PeakMemory, Stopwatch, folder_bytes
from recon.bench.suites import Case
from recon.errors import InputError


@dataclass(frozen=True)
class MethodSpec:
    """How a method differs from ``recon``: its initialisation and pipeline switches."""

    init: str = "tracking"  # tracking | random | pointmap | dust3r | splatt3r
    prune: bool = True
    view_offsets: bool = True
    about: str = ""


METHODS: dict[str, MethodSpec] = {
    "recon": MethodSpec(about="full method: dense tracking init, floater pruning, view offsets + temporal MLP"),
    "no-prune": MethodSpec(prune=False, about="floater-pruning stage off"),
    "no-view-offsets": MethodSpec(view_offsets=False, about="per-view offsets dp_i^v = 0"),
    "no-tracking": MethodSpec(init="random", about="random points inside the scene bounds instead of tracks"),
    "pointmap-init": MethodSpec(init="pointmap", about="per-frame depth unprojected and concatenated (feed-forward style)"),
    "dust3r": MethodSpec(init="dust3r", about="Dust3R pointmaps (global alignment) as the initialisation"),
    "splatt3r": MethodSpec(init="splatt3r", about="Splatt3R Gaussians (central view + neighbour) as the initialisation"),
}
DEFAULT_METHODS = ("recon", "no-prune", "no-view-offsets", "no-tracking", "pointmap-init", "dust3r", "splatt3r")


@dataclass
class BenchSettings:
    """Pipeline settings shared by all methods of a bench run."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    keyframes: int = 3
    stride: int = 2
    seed: int = 0
    threads: int = 2
    """torch CPU threads of each fit (the pipeline fixes them for reproducibility)."""
    max_points: int = 20000
    """Point budget of the Dust3R / Splatt3R initialisations."""
    consistency: bool = True
    """Score the SfM consistency (always for grids without ground truth; also on GT suites)."""
    config: dict[str, Any] = field(default_factory=dict)
    """Pipeline config overrides (``recon reconstruct --config`` layout, and the dotted flags of
    ``recon bench`` on top) applied to every method before its own switches (initialisation,
    prune, view offsets) and the settings above. ``tracking.tracks`` / ``tracking.depth`` here
    replace the case's own (:attr:`Case.tracks`: ``flow`` even on synthetic grids, so the tracker
    is measured, not the exact GT tracks; ``rig`` on the Panoptic capture; depth ``auto``: GT on
    synthetic grids, MVS otherwise) for the tracking-initialised methods and ``pointmap-init``."""
    workers: int | None = 1
    """Fits run one after another here (1), or as Ray tasks (None: every CPU; N: N slots;
    see :func:`recon.batch.execute`)."""
    address: str | None = None
    """Ray cluster to join (auto, ray://HOST:PORT); None: a local instance when Ray is used."""
    cpus_per_task: float = 1.0
    """CPUs each Ray task reserves."""


# --- the one place that talks to the pipeline --------------------------------------------------

def sampling(settings: BenchSettings) -> tuple[int, int]:
    """``(keyframes, stride)`` of the tracking seeds (and of the point budget of ``pointmap-init``
    and ``no-tracking``): ``--tracking.keyframes`` / ``--tracking.stride`` when given, else the settings'."""
    tracking = settings.config.get("tracking") or {}
    return int(tracking.get("keyframes", settings.keyframes)), int(tracking.get("stride", settings.stride))


def tracking_of(case: Case, settings: BenchSettings) -> tuple[str, str]:
    """``(tracks, depth)`` for ``case``: the config's ``tracking`` fields when given, else the case's own."""
    tracking = settings.config.get("tracking") or {}
    return tracking.get("tracks") or case.tracks, tracking.get("depth") or case.depth


def fit(grid, spec: MethodSpec, settings: BenchSettings, run_dir: Path, tracks_path: Path | None,
        tracking: tuple[str, str] = ("flow", "auto")) -> tuple[Any, dict[str, Any]]:
    """Run :func:`recon.pipeline.reconstruct` on ``grid`` for one method; returns
    ``(DeformableScene, info)`` with ``info["stages"]`` = wall seconds per pipeline stage,
    ``info["background"]`` (the scene's colour behind the splats, ``float [3]``: the grid's uniform
    background or the one the deform stage learned; None: black) and ``info["pipeline_metrics"]``.
    ``tracking``: ``(track source, depth provider)`` (see :func:`tracking_of`)."""
    from recon import pipeline as P
    from recon.config import ReconstructConfig, check_config, config_from_dict

    cfg = config_from_dict(settings.config, source="--config") if settings.config else ReconstructConfig()
    cfg.tracking.tracks = "file" if tracks_path is not None else tracking[0]
    cfg.tracking.tracks_path = None if tracks_path is None else str(tracks_path)
    cfg.tracking.depth = tracking[1]
    cfg.tracking.keyframes, cfg.tracking.stride = sampling(settings)
    cfg.prune.enabled = spec.prune
    cfg.canonical.view_offsets = spec.view_offsets
    deform = settings.config.get("deform") or {}
    if deform.get("iterations") and "warmup" not in deform:  # a short fit keeps a proportionate warm-up
        cfg.deform.warmup = min(cfg.deform.warmup, max(1, int(deform["iterations"]) // 10))
    # the bench scores held-out views itself; per-cell PNGs and the preview video only cost time
    cfg.outputs.renders = False
    cfg.outputs.preview_video = False
    cfg.seed = settings.seed
    cfg.threads = settings.threads
    check_config(cfg, "recon bench")
    result = P.reconstruct(grid, cfg, Path(run_dir), device=settings.device)
    stages = {k: float(v) for k, v in (result.metrics.get("seconds") or {}).items() if v is not None}
    bg = getattr(result.scene, "background", None)  # learned on grids that name none: score on it, as the fit rendered
    background = None if bg is None else bg.detach().cpu().numpy().astype(np.float32)
    return result.scene, {"stages": stages, "background": background, "pipeline_metrics": result.metrics}


# --- initialisations ---------------------------------------------------------------------------

def initial_tracks(case: Case, spec: MethodSpec, settings: BenchSettings, run_dir: Path, adapters: dict[str, Any]) -> tuple[Path | None, dict[str, Any]]:
    """Write the tracks file of a non-tracking initialisation (None for ``tracking``); returns it and info."""
    from recon.bench import baselines as B
    from recon.tracking.build import mvs_range_for
    from recon.tracking.trackio import write_tracks

    if spec.init == "tracking":
        return None, {}
    g = case.train
    tracks_source, provider = tracking_of(case, settings)
    # the depth the tracking-initialised methods lift (rig tracks: MVS bounded by the rig geometry)
    depth = B.freeze_time_depth(g, provider, settings.device, mvs_range=mvs_range_for(tracks_source, g.num_views))
    info: dict[str, Any] = {}
    if spec.init == "pointmap":
        tracks = B.pointmap_tracks(g, depth, B.pointmap_stride(g, *sampling(settings)))
    elif spec.init == "random":
        count = B.pointmap_tracks(g, depth, B.pointmap_stride(g, *sampling(settings))).num_points
        tracks = B.random_tracks(g, depth, count, settings.seed)
    elif spec.init in ("dust3r", "splatt3r"):
        tracks, info = adapters[spec.init].run(g, run_dir, depth[int(g.central_view)], settings.device)
    else:
        raise ValueError(f"unknown initialisation {spec.init!r}")
    path = Path(run_dir) / "init_tracks.npz"
    path.parent.mkdir(parents=True, exist_ok=True)  # beside, not inside, the pipeline's run folder
    write_tracks(path, tracks)
    info["init_points"] = tracks.num_points
    return path, info


# --- one run -----------------------------------------------------------------------------------

def evaluate_run(case: Case, scene, background, settings: BenchSettings, lpips: Any) -> tuple[dict[str, Any], list, dict]:
    """All metrics of one fitted scene: ``(metrics, per_cell, renders)``; ``renders``: ``{(e, j):
    rgb}`` of the held-out cells and, for synthetic cases, ``"offgrid"``: the off-grid cameras at
    time 0 side by side (uint8)."""
    metrics: dict[str, Any] = {}
    per_cell: list = []
    renders: dict = {}
    if case.has_heldout:
        h = EV.heldout_metrics(case, scene, background, lpips)
        per_cell, renders = h.pop("per_cell"), h.pop("_renders")
        metrics.update(h)
    novel = EV.novel_metrics(case, scene, background, lpips)  # novel_psnr, ..., novel_per_cell
    if novel:
        strip = [novel["_novel_renders"][(e, 0)] for e in range(len(case.novel_images))]
        renders["offgrid"] = np.clip(np.rint(np.concatenate(strip, 1) * 255), 0, 255).astype(np.uint8)
    metrics.update({k: v for k, v in novel.items() if k != "_novel_renders"})
    metrics.update(EV.train_fit_metrics(case, scene, background))
    if case.full is not None and case.scene is not None:
        metrics.update(EV.geometry_metrics(case, scene))
    metrics.update(EV.alpha_iou(case, scene))
    no_gt = not case.has_heldout and case.full is None
    if settings.consistency or no_gt:
        metrics.update(EV.consistency_metrics(case, scene, background))
    metrics["gaussians"] = int(scene.splats.num)
    return metrics, per_cell, renders


def _run_one_job(case: Case, method: str, settings: BenchSettings, out: Path, adapters: dict[str, Any], lpips: Any,
                 slot: int) -> dict[str, Any]:
    """:func:`run_one` as an executor job (:mod:`recon.batch`): a dict with the run and its renders."""
    rec, renders = run_one(case, method, settings, out, adapters, lpips)
    return {"status": rec["status"], "rec": rec, "renders": renders, "slot": slot}


def run_one(case: Case, method: str, settings: BenchSettings, out: Path, adapters: dict[str, Any], lpips: Any) -> tuple[dict[str, Any], dict]:
    """Fit and score one (case, method); failures are recorded in the result, not raised."""
    spec = METHODS[method]
    method_dir = out / "runs" / case.name / method
    run_dir = method_dir / "fit"  # the pipeline's run folder (it must start empty)
    rec: dict[str, Any] = {"case": case.name, "method": method, "tags": case.tags, "group": _group(case), "status": "ok"}
    renders: dict = {}
    try:
        with PeakMemory(settings.device) as mem, Stopwatch() as sw:
            with Stopwatch() as sw_init:
                tracks_path, init_info = initial_tracks(case, spec, settings, method_dir / "init", adapters)
            scene, info = fit(case.train, spec, settings, run_dir, tracks_path, tracking_of(case, settings))
        stages = {"init": sw_init.seconds, **info["stages"]} if tracks_path is not None else dict(info["stages"])
        with Stopwatch() as sw_eval:
            metrics, per_cell, renders = evaluate_run(case, scene, info["background"], settings, lpips)
        renders["novel"] = novel_views(scene)
        metrics.update(
            wall_s=sw.seconds,
            peak_rss_mb=None if mem.peak_rss is None else mem.peak_rss / 2**20,
            added_rss_mb=None if mem.delta_rss is None else mem.delta_rss / 2**20,
            peak_cuda_mb=None if mem.peak_cuda is None else mem.peak_cuda / 2**20,
            # the deliverables: the .ply sequence and the final scene checkpoint
            output_mb=(folder_bytes(run_dir / "ply") + folder_bytes(run_dir / "checkpoints", ("deform.safetensors",))) / 2**20,
            eval_s=sw_eval.seconds,
        )
        rec.update(metrics=metrics, per_cell=per_cell, stages_s=stages, init=init_info,
                   tracking=dict(zip(("tracks", "depth"), tracking_of(case, settings))))
    except Exception as e:  # a method that fails on a case is a result to report, not a reason to stop the bench
        # (InputError included: inside a fit it says what the input cannot support, e.g. MVS
        # depth on widely spaced cameras; bad arguments are rejected before any fit starts)
        rec.update(status="failed", error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc(limit=6), metrics={})
    return rec, renders


NOVEL_SWEEP = 8
"""Novel views in the report: frames 1-3 of an 8-frame bullet-time sweep at time 0 (a quarter,
half and three quarters of the way from the first grid camera to the last)."""


def novel_views(scene) -> np.ndarray:
    """``uint8 [H, 3W, 3]``: three novel-view frames of a fitted scene, side by side (cameras
    between the grid's, time frozen; the exported geometry, no per-view offsets)."""
    from recon.render.paths import render_path

    frames, _ = render_path(scene, "bullet-time", scene.num_views // 2, 0, None, NOVEL_SWEEP, progress=False)
    return np.concatenate(list(frames[1:4]), axis=1)


def _group(case: Case) -> str:
    inc = case.tags.get("inconsistency")
    if inc is None:
        return "all"
    return "clean" if float(inc) == 0 else "inconsistent"


def method_status(methods: list[str], adapters: dict[str, Any]) -> dict[str, dict[str, str]]:
    out = {}
    for m in methods:
        if m not in METHODS:
            raise InputError(f"unknown method {m!r}; expected some of {', '.join(METHODS)}", field="--methods")
        spec = METHODS[m]
        if spec.init in adapters:
            a_ok, a_why = adapters[spec.init].status()
            out[m] = {"status": "ok" if a_ok else "not available", "reason": a_why, "about": spec.about}
        else:
            out[m] = {"status": "ok", "reason": "", "about": spec.about}
    return out


def run_bench(
    suite: str,
    cases: list[Case],
    methods: list[str],
    settings: BenchSettings,
    out: Path,
    adapters: dict[str, Any] | None = None,
    quick: bool = False,
    progress: Callable[[str], None] | None = None,
) -> tuple[dict[str, Any], dict[str, dict[str, np.ndarray]]]:
    """Run every available method on every case; returns ``(results, renders for the contact sheet)``."""
    from recon.bench.metrics import LpipsMetric, lpips_status
    from recon.bench.report import paired_differences, summarise_runs
    from recon.io.atomic import write_json

    adapters = adapters or {"dust3r": Dust3rAdapter(), "splatt3r": Splatt3rAdapter()}
    status = method_status(methods, adapters)
    lp_ok, lp_why = lpips_status()
    lpips = LpipsMetric() if lp_ok else None
    runs: list[dict[str, Any]] = []
    sheet: dict[str, dict[str, np.ndarray]] = {}
    t0 = time.time()
    from recon.batch import Job, execute

    slots: list[dict[str, Any] | None] = []  # the runs in (case, method) order, whatever order they finish in
    jobs: list[Job] = []
    for case in cases:
        if case.has_heldout:
            sheet[case.name] = {"gt": case.eval_images[0, case.eval_images.shape[1] - 1]}
        for m in methods:
            if status[m]["status"] != "ok":
                slots.append({"case": case.name, "method": m, "tags": case.tags, "group": _group(case),
                              "status": "not available", "reason": status[m]["reason"], "metrics": {}})
                continue
            jobs.append(Job(f"{case.name} / {m}", _run_one_job, (case, m, settings, out, adapters, lpips, len(slots))))
            slots.append(None)
    by_name = {c.name: c for c in cases}

    def on_done(job: Job) -> None:
        r = job.result or {}
        case_name, m = job.name.split(" / ", 1)
        case = by_name[case_name]
        rec, renders = r.get("rec"), r.get("renders", {})
        if rec is None:  # the task itself was lost (a killed worker)
            rec = {"case": case.name, "method": m, "tags": case.tags, "group": _group(case), "status": "failed",
                   "error": r.get("error", "failed"), "metrics": {}}
        slots[r.get("slot", job.args[-1])] = rec
        # an interrupted or crashed bench keeps what it measured so far
        write_json(out / "results.partial.json", _finite({"suite": suite, "partial": True, "runs": [x for x in slots if x]}))
        held = (0, case.eval_images.shape[1] - 1) if case.has_heldout else None
        if rec["status"] == "ok" and held is not None and held in renders:
            sheet[case.name][m] = np.clip(np.rint(renders[held] * 255), 0, 255).astype(np.uint8)
        if rec["status"] == "ok" and "novel" in renders:
            sheet.setdefault(case.name, {})[f"novel:{m}"] = renders["novel"]
        if rec["status"] == "ok" and "offgrid" in renders:
            sheet.setdefault(case.name, {})[f"offgrid:{m}"] = renders["offgrid"]
            sheet[case.name]["offgrid:gt"] = np.concatenate(list(case.novel_images[:, 0]), 1)
        if progress:
            progress(f"{job.name}  {rec['status']}" + (f": {rec.get('error')}" if rec["status"] != "ok" else
                                                        f"  psnr {rec['metrics'].get('psnr', float('nan')):.2f}  "
                                                        f"{rec['metrics']['wall_s']:.0f}s"))

    if progress and jobs:
        progress(f"{len(jobs)} fit(s)" + ("" if settings.workers == 1 and settings.address is None else " as Ray tasks"))
    execute(jobs, workers=settings.workers, address=settings.address, cpus=settings.cpus_per_task, on_done=on_done)
    runs = [x for x in slots if x is not None]
    ran = [m for m in methods if status[m]["status"] == "ok"]
    for m in ran:  # a method that failed on every case is reported as failed
        if all(r["status"] != "ok" for r in runs if r["method"] == m):
            err = next((r.get("error") for r in runs if r["method"] == m and r.get("error")), "failed")
            status[m] = {**status[m], "status": "failed", "reason": f"failed ({err})"}
    results: dict[str, Any] = {
        "suite": suite,
        "quick": quick,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join(sys.argv),
        "total_s": time.time() - t0,
        "settings": {k: (str(v) if isinstance(v, torch.device) else v) for k, v in asdict(settings).items()},
        "environment": {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                        "machine": platform.machine(), "lpips": lp_why},
        "methods": status,
        "cases": [{"name": c.name, "tags": c.tags, "shape": list(c.train.shape),
                   "heldout": c.eval_names} for c in cases],
        "runs": runs,
        "summary": summarise_runs(runs, methods),
        "summary_by_group": summarise_runs(runs, methods, group_key="group"),
        "paired": paired_differences(runs, methods) if "recon" in methods else {},
        "notes": [f"LPIPS: {lp_why}"] if not lp_ok else [],
    }
    return _finite(results), sheet


def _finite(obj: Any) -> Any:
    """NaN / inf -> None recursively, so results.json is strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, np.generic):
        return _finite(obj.item())
    return obj
