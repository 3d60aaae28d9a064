"""Many reconstructions at once: the job executor behind ``recon batch`` and ``recon bench --ray``.

:func:`execute` runs independent jobs either in this process, one after another (``workers=1``,
no Ray needed), or as Ray tasks (``pip install 'recon4d[ray]'``): on a local Ray instance sized to
this machine by default, or on an existing cluster (``address="auto"`` or ``"ray://HOST:PORT"``,
started with ``ray start --head`` as Ray documents). Each task reserves ``cpus`` CPUs (and
``gpus`` GPUs); the jobs set their torch threads from that reservation. A job that fails is a
result (its one-line error), never a reason to stop the others; Ctrl-C cancels the tasks still
queued or running and re-raises.

``recon batch`` jobs are ordinary ``recon reconstruct`` runs (:func:`reconstruct_job`): one run
folder per input, resumed when interrupted, skipped when finished.
"""

from __future__ import annotations

import contextlib
import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from recon.errors import InputError


@dataclass
class Job:
    """One unit of work: ``fn(*args)`` returns a JSON-able dict; ``name`` labels it in progress."""

    name: str
    fn: Callable[..., dict]
    args: tuple = ()
    result: dict | None = field(default=None)


def ray_available() -> tuple[bool, str]:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False, "Ray is not installed: pip install 'recon4d[ray]' (or pip install ray), or pass --workers 1"
    return True, "ok"


def execute(jobs: list[Job], workers: int | None = None, address: str | None = None, cpus: float = 1.0, gpus: float = 0.0,
            on_done: Callable[[Job], None] | None = None, stats: dict | None = None) -> list[Job]:
    """Run ``jobs``; fill each ``job.result`` and call ``on_done(job)`` as each finishes (in
    completion order). ``workers``: 1 runs them here sequentially (no Ray); None or > 1 uses Ray
    (``address``: None starts a local instance with ``workers`` CPUs, default all; "auto" or
    "ray://..." joins a cluster). A job that raises gets ``{"status": "failed", "error": ...}``.
    ``stats`` (optional) receives ``executor`` and, with Ray, ``ray_start_s`` (seconds to start or join it)."""
    stats = {} if stats is None else stats
    if workers is not None and workers < 1:
        raise InputError(f"expected workers >= 1, got {workers}", field="--workers")
    if not cpus > 0 or gpus < 0:
        raise InputError(f"expected cpus per task > 0 and gpus per task >= 0, got {cpus}, {gpus}", field="--cpus-per-task")
    if workers == 1 and address is None:
        stats["executor"] = "sequential"
        for job in jobs:
            job.result = _guarded(job.fn, job.args)
            if on_done:
                on_done(job)
        return jobs
    ok, why = ray_available()
    if not ok:
        raise InputError(why, field="--workers")
    import os

    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # silences a FutureWarning; recon sets no devices
    import ray

    started = not ray.is_initialized()
    if started:
        kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
        if address is not None:
            kw["address"] = address
        elif workers is not None:
            kw["num_cpus"] = int(max(workers, 1) * cpus)
        t0 = time.perf_counter()
        try:
            with contextlib.redirect_stderr(io.StringIO()):
                ray.init(**kw)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise InputError(f"cannot start or join Ray ({' '.join(str(e).split())[:200]})", field="--address") from None
        stats["ray_start_s"] = round(time.perf_counter() - t0, 3)
    stats["executor"] = "ray"
    stats["ray_cpus"] = float(ray.cluster_resources().get("CPU", 0))
    remote = ray.remote(_guarded).options(num_cpus=cpus, num_gpus=gpus, max_retries=0)
    pending = {remote.remote(job.fn, job.args): job for job in jobs}
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                job = pending.pop(ref)
                try:
                    job.result = ray.get(ref)
                except Exception as e:  # the worker died (killed, out of memory)
                    job.result = {"status": "failed", "error": f"task lost: {type(e).__name__}: {' '.join(str(e).split())[:300]}"}
                if on_done:
                    on_done(job)
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    finally:
        if started:
            ray.shutdown()
    return jobs


def _guarded(fn: Callable[..., dict], args: tuple) -> dict:
    """``fn(*args)``, or a failed result with the error's one line (InputError: bad input;
    anything else: an internal error, with its type)."""
    t0 = time.perf_counter()
    try:
        out = dict(fn(*args))
    except InputError as e:
        out = {"status": "failed", "error": str(e), "kind": "input"}
    except MemoryError:
        out = {"status": "failed", "error": "ran out of memory", "kind": "input"}
    except Exception as e:
        out = {"status": "failed", "error": f"internal error: {type(e).__name__}: {' '.join(str(e).split())[:300]}", "kind": "internal"}
    out.setdefault("seconds", round(time.perf_counter() - t0, 3))
    return out


# --- recon batch ------------------------------------------------------------------------------
def list_inputs(items: Iterable[Path]) -> list[Path]:
    """The inputs: paths as given, and for a ``.txt`` file the paths it lists (one per line;
    blank lines and ``#`` comments skipped; relative to the list's folder)."""
    out: list[Path] = []
    for p in items:
        p = Path(p)
        if p.suffix.lower() == ".txt" and p.is_file():
            try:
                lines = p.read_text().splitlines()
            except (OSError, UnicodeDecodeError) as e:
                raise InputError(f"cannot read the input list ({e})", p) from None
            for k, line in enumerate(lines, 1):
                line = line.split("#", 1)[0].strip()
                if line:
                    q = Path(line)
                    out.append(q if q.is_absolute() else p.parent / q)
        else:
            out.append(p)
    if not out:
        raise InputError("no inputs given", field="INPUT")
    return out


def run_names(inputs: list[Path]) -> list[str]:
    """A distinct run-folder name per input (its name; ``_2``, ``_3`` ... when names repeat)."""
    names, seen = [], {}
    for p in inputs:
        base = (p.stem if p.is_file() else p.name) or "input"
        seen[base] = seen.get(base, 0) + 1
        names.append(base if seen[base] == 1 else f"{base}_{seen[base]}")
    return names


def run_state(run: Path) -> str:
    """``new`` (no run.json), ``done`` (every stage done and metrics.json written) or ``partial``."""
    f = run / "run.json"
    if not f.is_file():
        return "new"
    try:
        from recon.run import STAGES, RunFolder

        info = RunFolder.read_info(run)
    except InputError:
        return "partial"
    done = all(info["stages"].get(s, {}).get("status") == "done" for s in STAGES)
    return "done" if done and (run / "metrics.json").is_file() else "partial"


def reconstruct_job(argv: list[str], run: str) -> dict:
    """One ``recon reconstruct`` (``argv`` after the command name) in this process; returns its
    status, one-line error and the headline metrics of ``run``."""
    from recon.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["reconstruct", *argv])
    if code != 0:
        lines = [ln for ln in err.getvalue().splitlines() if ln.startswith("recon:")]
        return {"status": "failed", "error": (lines[-1] if lines else f"exit {code}").removeprefix("recon: error: "),
                "kind": "input" if code == 2 else "internal", "exit": code}
    return {"status": "done", **run_metrics(Path(run))}


def run_metrics(run: Path) -> dict:
    """Headline numbers of a finished run folder (metrics.json)."""
    import json

    try:
        m = json.loads((run / "metrics.json").read_text())
    except (OSError, ValueError):
        return {}
    held = m.get("heldout") or {}
    return {"train_psnr": (m.get("train") or {}).get("psnr_mean"), "heldout_psnr": held.get("psnr_mean"),
            "heldout_ssim": held.get("ssim_mean"), "heldout_cells": held.get("cells"),
            "gaussians": (m.get("gaussians") or {}).get("final"),
            "fit_seconds": round(sum(v for v in (m.get("seconds") or {}).values() if isinstance(v, (int, float))), 3)}
