"""The run folder: ``run.json`` bookkeeping, stage checkpoints, and the one stage runner.

Layout of a run folder: ``run.json`` (format, version, command, input, seed, device, per-stage
status, seconds and report), ``config.json`` (the full :class:`~recon.config.ReconstructConfig`),
``checkpoints/<stage>.safetensors`` (:mod:`recon.io.checkpoint`), and what the ``outputs``
stage writes (``ply/``, ``renders/``, previews, ``metrics.json``).

Every stage runs through :class:`StageRunner`, with the same statuses (:data:`STATUSES`): a
finished stage is read back, not re-run; a running one records its pid; an interrupted one says
so; one that raised says ``failed`` with the error. A checkpointed stage continues from what it
*saved* (read back from disk), so a resumed run computes what an uninterrupted one does.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from recon import schema as S
from recon.config import ReconstructConfig, config_to_dict, load_config_file, resolve_threads
from recon.errors import InputError
from recon.io.atomic import sweep_temporaries, write_json
from recon.io.checkpoint import FORMAT as RUN_FORMAT
from recon.io.checkpoint import VERSION as RUN_VERSION
from recon.io.checkpoint import read_checkpoint, write_checkpoint
from recon.model.scene import SCENE_TENSORS

STAGES = ("tracks", "canonical", "prune", "deform", "outputs")
INTERRUPT = threading.Event()
"""Set by the command line's Ctrl-C handler (:func:`recon.cli.main`). A KeyboardInterrupt raised where
Python swallows exceptions (a finalizer, a callback) would otherwise let the run finish with status
0 (seen once in tests/test_interrupt.py); :meth:`StageRunner._execute` checks the event when a
stage's body returns and stops there instead."""

STATUSES = ("pending", "running", "done", "failed", "interrupted")
RUN_SCHEMA = S.Obj({
    "format": S.Str((RUN_FORMAT,)),
    "version": S.Int(),
    "input": S.Optional(S.Str()),
    "load": S.Optional(S.Obj({"views": S.Optional(S.List(S.Int(min=0))), "frames": S.Optional(S.Str()),
                              "scale": S.Num(gt=0.0, max=8.0), "split": S.Str()}, optional=("frames", "views"),
                             defaults={"scale": 1.0, "split": "train"})),
    "stages": S.Obj({name: S.Obj({"status": S.Str(STATUSES)}, defaults={"status": "pending"}) for name in STAGES},
                    defaults={name: {"status": "pending"} for name in STAGES}),
}, optional=("input", "load"))
"""``run.json``: what a reader of a run folder relies on (the rest is free-form, kept as is)."""

SPLATS_TENSORS = {k: v for k, v in SCENE_TENSORS.items() if k.startswith("splats.")}
CANONICAL_TENSORS = {**SPLATS_TENSORS, "view_offsets": ("N", "V", 3), "poses": ("V", "T", 4, 4),
                     "frame_points": ("N", "W", 3), "visible": ("N", "W"), "seed_view": ("N",)}
CHECKPOINT_TENSORS: dict[str, dict[str, tuple]] = {
    "tracks": {"points": ("N", "W", 3), "visible": ("N", "W"), "colors": ("N", 3), "seed_view": ("N",),
               "time_points?": ("N", "T", 3), "time_visible?": ("N", "T")},
    "canonical": CANONICAL_TENSORS,
    "prune": CANONICAL_TENSORS,
    "deform": SCENE_TENSORS,
}
"""The tensors each stage's checkpoint must hold (see :func:`recon.schema.check_tensors`): N
splats or tracks, V views and T times of the grid, W tracked views (V less the unseen ones)."""


class RunFolder:
    """``run.json`` bookkeeping and checkpoint paths of one run folder."""

    def __init__(self, path: Path, info: dict[str, Any]):
        self.path = Path(path)
        self.info = info

    @staticmethod
    def read_info(path: Path) -> dict[str, Any]:
        """``run.json`` of the run folder ``path``, checked against :data:`RUN_SCHEMA`."""
        f = Path(path) / "run.json"
        info = S.read_json(f, what="run.json")
        if not isinstance(info, dict) or info.get("format") != RUN_FORMAT:
            raise InputError(f"not a recon run folder (format {info.get('format') if isinstance(info, dict) else None!r})", f, "format")
        if info.get("version") != RUN_VERSION:
            raise InputError(f"run folder version {info.get('version')!r} is not supported by this recon "
                             f"(expects {RUN_VERSION}); start a new run with another --out", f, "version")
        return S.check(info, RUN_SCHEMA, f)

    def checkpoint(self, stage: str) -> Path:
        return self.path / "checkpoints" / f"{stage}.safetensors"

    def status(self, stage: str) -> str:
        return self.info["stages"].get(stage, {}).get("status", "pending")

    def set(self, stage: str, **kw: Any) -> None:
        """Update ``stage``'s entry of run.json (atomically); a running stage records the pid of
        the process that runs it (a stage left "running" by a killed process is resumable)."""
        entry = self.info["stages"].setdefault(stage, {})
        entry.pop("pid", None)
        if kw.get("status") == "running":
            kw = {**kw, "pid": os.getpid()}
        entry.update(kw)
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
        sweep_temporaries(run_dir)  # half-written files of a killed process (never under a final name)
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


def load_checkpoint(path: Path, stage: str, dims: dict[str, int] | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read ``stage``'s checkpoint and check its tensors (:data:`CHECKPOINT_TENSORS`) against
    ``dims`` (``V``, ``W``, ``T`` of the grid); a skipped stage's checkpoint holds no tensors."""
    t, meta = read_checkpoint(path)
    report = meta.get("report")
    if not (isinstance(report, dict) and report.get("skipped")):
        S.check_tensors(t, CHECKPOINT_TENSORS[stage], path, dims)
        if stage in ("canonical", "prune") and not isinstance(meta.get("pose_source"), str):
            raise InputError("missing pose_source (not a checkpoint of this stage)", path, "metadata.pose_source")
    return t, meta


class StageRunner:
    """Runs the stages of one run folder with one set of rules (module docstring).

    ``seed``: stage ``k`` seeds torch and numpy from ``seed * 1000 + k``. ``dims``: the grid's
    ``V``, ``W``, ``T`` for the checkpoint checks. ``progress``: an object with ``stage_start``
    and ``stage_end`` (:class:`recon.pipeline.Progress`). ``reports`` collects each stage's report.
    """

    def __init__(self, run: RunFolder, seed: int, dims: dict[str, int], progress: Any):
        self.run, self.seed, self.dims, self.progress = run, seed, dims, progress
        self.reports: dict[str, Any] = {}

    def _execute(self, name: str, k: int, body: Callable[[], tuple[dict[str, Any], Any]]) -> Any:
        """Run ``body`` (returns the stage's report and its result) under the status rules; returns the result."""
        torch.manual_seed(self.seed * 1000 + k)
        np.random.seed((self.seed * 1000 + k) % 2**32)
        self.run.set(name, status="running")
        t0 = time.perf_counter()
        try:
            report, result = body()
        except KeyboardInterrupt:
            self.run.set(name, status="interrupted")
            raise
        except BaseException as e:
            if INTERRUPT.is_set():  # a Ctrl-C that surfaced as another error (e.g. inside an import it broke)
                self.run.set(name, status="interrupted")
                raise KeyboardInterrupt from e
            self.run.set(name, status="failed", error=str(e)[:500])
            raise
        if INTERRUPT.is_set():  # a Ctrl-C whose KeyboardInterrupt was swallowed inside the stage
            self.run.set(name, status="interrupted")
            raise KeyboardInterrupt
        seconds = time.perf_counter() - t0
        self.run.set(name, status="done", seconds=round(seconds, 3), report=report)
        self.reports[name] = report
        self.progress.stage_end(name, seconds, False)
        return result

    def checkpointed(self, name: str, k: int,
                     compute: Callable[[], tuple[dict[str, torch.Tensor], dict[str, Any]]]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """A stage whose result is a checkpoint: ``compute() -> (tensors, meta)`` (``meta["report"]``
        goes to run.json). Returns the checkpoint as read back from disk."""
        ck = self.run.checkpoint(name)
        if self.run.status(name) == "done" and ck.is_file():
            self.progress.stage_start(name, None)
            out = load_checkpoint(ck, name, self.dims)
            self.progress.stage_end(name, 0.0, True)
            self.reports[name] = self.run.info["stages"][name].get("report", {})
            return out

        def body() -> tuple[dict[str, Any], None]:
            tensors, meta = compute()
            write_checkpoint(ck, tensors, meta)
            return meta.get("report", {}), None

        self._execute(name, k, body)
        return load_checkpoint(ck, name, self.dims)  # continue from what was saved

    def files(self, name: str, k: int, artefact: Path, compute: Callable[[], dict[str, Any]],
              read: Callable[[Path], Any]) -> Any:
        """A stage whose result is files (the last one written: ``artefact``): ``compute()``
        writes them and returns ``artefact``'s content; a finished stage returns ``read(artefact)``."""
        if self.run.status(name) == "done" and artefact.is_file():
            self.reports.setdefault(name, self.run.info["stages"][name].get("report", {}))
            return read(artefact)
        return self._execute(name, k, lambda: ({}, compute()))
