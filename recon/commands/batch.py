"""``recon batch INPUT... --out DIR``: one ``recon reconstruct`` run per input, as Ray tasks."""

from __future__ import annotations

import json
from pathlib import Path

from recon.errors import InputError


def batch(
    inputs: list[Path],
    /,
    out: Path = Path("batch"),
    config: Path | None = None,
    seed: int | None = None,
    holdout: str | None = None,
    eval_split: str | None = None,
    frames: str | None = None,
    scale: float = 1.0,
    device: str = "cpu",
    workers: int | None = None,
    address: str | None = None,
    cpus_per_task: float = 1.0,
    gpus_per_task: float = 0.0,
) -> None:
    """Reconstruct many inputs: DIR/<input name>/ is an ordinary `recon reconstruct` run folder for
    each, executed as Ray tasks (a local Ray sized to this machine, or a cluster with --address).
    A rerun skips finished runs and resumes interrupted ones; a failing input is recorded with its
    one-line error while the others go on. DIR/batch.json and DIR/batch.md summarise the runs.
    Exit code 0 when every input finished, 2 when some input failed.

    Args:
        inputs: Grid folders, Panoptic folders, transforms json, video folders, or .txt files
            listing them (one per line, # comments).
        out: The batch folder.
        config: JSON config overrides applied to every run (as `recon reconstruct --config`),
            and any config field as a dotted flag on top (--deform.iterations 3000, as for
            `recon reconstruct`); a rerun without either keeps the batch's (DIR/batch_config.json).
            Each run's threads are --cpus-per-task.
        seed: Random seed of every run.
        holdout: Held-out cells of every run, views=...,times=... (as `recon reconstruct`).
        eval_split: The standard protocol's evaluation split for every run (e.g. test).
        frames: Frame range start:stop[:step] of every input.
        scale: Resolution scale of every input.
        device: Device of each task (cpu, cuda, cuda:N, auto).
        workers: 1: run the inputs one after another in this process (no Ray needed); N: a
            local Ray with N task slots; default: a local Ray with every CPU, or the cluster's.
        address: Join a Ray cluster: auto (the one `ray start --head` started here) or
            ray://HOST:PORT.
        cpus_per_task: CPUs each run reserves; its torch threads are set from it.
        gpus_per_task: GPUs each run reserves (use with --device cuda).
    """
    import math
    import time

    from rich.console import Console

    from recon.batch import Job, execute, list_inputs, reconstruct_job, run_metrics, run_names, run_state
    from recon.config import config_to_dict, load_config_file
    from recon.io.atomic import check_writable, write_json, write_text

    console = Console(stderr=True)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError("--out exists and is not a folder", out, "--out")
    check_writable(out)
    if not (math.isfinite(cpus_per_task) and cpus_per_task > 0):
        raise InputError(f"expected a positive number, got {cpus_per_task}", field="--cpus-per-task")
    if not (math.isfinite(gpus_per_task) and gpus_per_task >= 0):
        raise InputError(f"expected a number >= 0, got {gpus_per_task}", field="--gpus-per-task")
    if workers is not None and workers < 1:
        raise InputError(f"expected workers >= 1, got {workers}", field="--workers")
    if not (workers == 1 and address is None):
        from recon.batch import ray_available

        ok, why = ray_available()
        if not ok:
            raise InputError(why, field="--workers")
    items = list_inputs(inputs)
    missing = [p for p in items if not p.exists()]
    if missing:
        raise InputError(f"input does not exist ({len(missing)} of {len(items)} missing)", missing[0])
    cfg_file = out / "batch_config.json"  # what every new run starts from: the --config overrides + its threads
    threads = max(1, int(cpus_per_task))
    from recon.config import ReconstructConfig, cli_overrides, config_from_dict

    if config is not None or cli_overrides() or not cfg_file.is_file():
        cfg = load_config_file(config) if config is not None else ReconstructConfig()
        cfg = config_from_dict(cli_overrides(), cfg, "command line")  # --section.field flags on top
        out.mkdir(parents=True, exist_ok=True)
        write_json(cfg_file, {**config_to_dict(cfg), "threads": threads})
    else:  # a rerun without --config continues with the batch's own config
        load_config_file(cfg_file)

    names = run_names(items)
    rows: dict[str, dict] = {}
    jobs: list[Job] = []
    for p, name in zip(items, names):
        run = out / name
        state = run_state(run)
        rows[name] = {"input": str(p), "run": str(run), "status": "skipped" if state == "done" else "queued"}
        if state == "done":
            rows[name].update(run_metrics(run), note="finished before; not re-run")
            continue
        argv = [str(p), "--out", str(run), "--device", device]
        if state == "partial":
            argv.append("--resume")
        else:
            argv += ["--config", str(cfg_file), "--scale", repr(float(scale))]
            for flag, val in (("--seed", seed), ("--holdout", holdout), ("--eval-split", eval_split), ("--frames", frames)):
                if val is not None:
                    argv += [flag, str(val)]
        rows[name]["resumed"] = state == "partial"
        jobs.append(Job(name, reconstruct_job, (argv, str(run))))

    stats: dict = {}

    def save() -> None:
        write_json(out / "batch.json", {"format": "recon-batch", "version": 1, "runs": rows, **stats,
                                        "workers": workers, "address": address, "cpus_per_task": cpus_per_task,
                                        "gpus_per_task": gpus_per_task})

    save()
    counts = {"done": 0, "failed": 0}

    def on_done(job: Job) -> None:
        r = job.result or {}
        rows[job.name].update(r)
        counts["done" if r.get("status") == "done" else "failed"] += 1
        save()
        msg = (f"heldout PSNR {r['heldout_psnr']:.2f} dB" if r.get("heldout_psnr") is not None else "done") \
            if r.get("status") == "done" else f"failed: {r.get('error')}"
        console.print(f"[{counts['done'] + counts['failed']}/{len(jobs)}] {job.name}: {msg} ({r.get('seconds', 0):.0f} s)",
                      markup=False, highlight=False)

    skipped = len(items) - len(jobs)
    console.print(f"recon batch: {len(jobs)} run(s) to do, {skipped} finished before, into {out}"
                  + ("" if workers == 1 and address is None else " (Ray)"), markup=False, highlight=False)
    t0 = time.perf_counter()
    try:
        execute(jobs, workers=workers, address=address, cpus=cpus_per_task, gpus=gpus_per_task, on_done=on_done, stats=stats)
    except KeyboardInterrupt:  # runs that started are resumable: the same command continues them
        for name, r in rows.items():
            if r["status"] == "queued" and (Path(r["run"]) / "run.json").exists():
                r["status"] = "interrupted"
        save()
        raise
    stats["wall_s"] = round(time.perf_counter() - t0, 3)
    save()
    write_text(out / "batch.md", summary_table(rows))
    print(json.dumps({"batch": str(out), "done": counts["done"], "skipped": skipped, "failed": counts["failed"]}))
    if counts["failed"]:
        raise InputError(f"{counts['failed']} of {len(items)} input(s) failed (see batch.md)", out / "batch.json", "runs")


def summary_table(rows: dict[str, dict]) -> str:
    """Markdown: input, status, held-out / test PSNR, Gaussians, seconds, error."""
    def num(v, fmt):
        return "--" if v is None else format(v, fmt)

    lines = ["| run | input | status | held-out PSNR (dB) | SSIM | Gaussians | seconds | error |", "|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        err = str(r.get("error", "")).replace("|", "\\|")
        lines.append(f"| {name} | {r['input']} | {r['status']} | {num(r.get('heldout_psnr'), '.2f')} | "
                     f"{num(r.get('heldout_ssim'), '.3f')} | {num(r.get('gaussians'), 'd')} | {num(r.get('seconds'), '.1f')} | {err} |")
    return "\n".join(lines) + "\n"
