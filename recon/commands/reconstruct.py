"""``recon reconstruct [INPUT] --out RUN``: frame grid -> deformable 4D Gaussian splats (a run folder)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated

import tyro

from recon.config import parse_holdout
from recon.errors import InputError
from recon.io import LoadOptions

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample"
"""The bundled sample grid (repository checkout: ``data/sample``)."""
SAMPLE_HOLDOUT = ([7], [3, 6])
"""Held-out cells used for the bundled sample when ``--holdout`` is not given."""


def reconstruct(
    input: Path | None = None,
    /,
    out: Path = Path("run"),
    device: str = "auto",
    seed: int | None = None,
    resume: bool = False,
    config: Path | None = None,
    holdout: str | None = None,
    no_view_offsets: bool = False,
    no_prune: bool = False,
    load: Annotated[LoadOptions, tyro.conf.OmitArgPrefixes] = LoadOptions(),
    eval_split: str | None = None,
) -> None:
    """Reconstruct a deformable 4D Gaussian-splat scene from a multi-view x multi-time frame grid.

    Stages: tracks -> canonical splats -> floater pruning -> temporal deformation -> outputs
    (renders, preview, ply/frame_XXXX.ply + sequence.json, metrics.json), each checkpointed in
    the run folder. Ctrl-C leaves a resumable run (--resume).

    Args:
        input: A grid folder, Panoptic folder, transforms json or folder of videos; default: the
            bundled sample (data/sample).
        out: Run folder to create (must not exist, or be empty), or to resume.
        device: auto, cpu, cuda or cuda:N.
        seed: Random seed (default 0, or the --config file's).
        resume: Continue the run in --out: finished stages are loaded from their checkpoints, its
            saved config is used (INPUT defaults to the run's input).
        config: JSON file of config overrides (nested like the run's config.json). Any config
            field is also a flag, dotted as in config.json, applied on top of this file: e.g.
            --deform.iterations 3000 --prune.enabled false --tracking.tracks rig (see
            recon/config.py and a run's config.json for the fields).
        holdout: Held-out cells as views=...,times=... (the cross product), e.g. views=7,times=3,6.
        no_view_offsets: Ablation: no per-view offsets dp_i^v (tracked nor learned).
        no_prune: Ablation: skip floater pruning.
        load: What to read (--views, --frames, --scale, --split; the same flags as recon info).
        eval_split: The standard protocol: train on --split and evaluate on this split's cameras at
            every frame (e.g. test: Panoptic test_meta.json's cameras; D-NeRF transforms_test.json's
            images at their times). Those cameras / images are held out (never trained on);
            metrics.json and the summary name them by id / file.
    """
    from rich.console import Console

    from recon.device import resolve_device, seed_everything
    from recon.io import load_grid
    from recon.config import ReconstructConfig, config_from_dict, load_config_file
    from recon.run import RunFolder
    from recon.pipeline import reconstruct as run_pipeline

    from recon.io.atomic import check_writable

    console = Console(stderr=True)
    out = Path(out)
    check_writable(out)
    dev = resolve_device(device)
    load = dataclasses.asdict(load)  # recorded in run.json (a resumed run reads its input the same way)
    if eval_split is not None:
        load["eval_split"] = eval_split
    if resume and input is None and (out / "run.json").is_file():
        info = RunFolder.read_info(out)
        input = Path(info["input"]) if info.get("input") else None
        load = info.get("load") or load
    bundled = input is None
    if bundled:
        if not (SAMPLE / "grid.json").is_file() and not SAMPLE.is_dir():
            raise InputError("no INPUT given and the bundled sample is missing (expected a repository checkout with "
                             "data/sample); pass a grid path", SAMPLE)
        input = SAMPLE
    input = Path(input)
    if not input.exists():
        raise InputError("input does not exist", input)
    cfg = load_config_file(config) if config is not None else ReconstructConfig()
    flags: dict = {}  # the command-line overrides, checked before any input is read
    if seed is not None:
        flags["seed"] = seed
    if no_view_offsets:
        flags["canonical"] = {"view_offsets": False}
    if no_prune:
        flags["prune"] = {"enabled": False}
    cfg = config_from_dict(flags, cfg, "command line")
    from recon.config import cli_overrides

    if resume and (cli_overrides() or config is not None):
        raise InputError("a resumed run keeps its saved config.json; drop --config and the config flags, or start "
                         "a new run with another --out", field="--resume")
    cfg = config_from_dict(cli_overrides(), cfg, "command line")  # --section.field flags, on top of --config
    load_opts = {k: v for k, v in load.items() if k != "eval_split"}
    protocol = None
    if load.get("eval_split") is not None:
        if holdout is not None:
            raise InputError("--eval-split holds out the evaluation split's cameras; do not also pass --holdout", field="--holdout")
        from recon.io.protocol import load_protocol

        grid, protocol = load_protocol(input, LoadOptions(**load_opts), load["eval_split"])
    else:
        grid = load_grid(input, LoadOptions(**load_opts))
    over: dict = {}
    if protocol is not None:
        over["holdout_views"], over["holdout_times"] = protocol["views"], protocol.get("times", list(range(grid.num_times)))
    elif holdout is not None:
        over["holdout_views"], over["holdout_times"] = parse_holdout(holdout)
    elif bundled and not cfg.holdout_views:
        over["holdout_views"], over["holdout_times"] = list(SAMPLE_HOLDOUT[0]), list(SAMPLE_HOLDOUT[1])
    cfg = config_from_dict(over, cfg, "command line")
    seed_everything(cfg.seed)
    if grid.extras.get("depth") is not None and "object_id" in grid.extras and "surface" not in grid.extras:
        try:  # compact synthetic grids (the bundled sample): restore exact GT for gt tracks / floater counts
            from recon.synth import ensure_ground_truth

            ensure_ground_truth(grid)
        except InputError:
            pass
    header = {"command": "recon reconstruct", "input": str(input.resolve()), "load": load, "device": str(dev),
              "time_unit": str(grid.meta.get("time_unit", "s"))}
    if protocol is not None:
        header["protocol"] = protocol
    from recon.pipeline import holdout_cells

    if not resume:  # a resumed run checks its saved config itself
        holdout_cells(grid, cfg, "--eval-split" if protocol is not None else "--holdout" if holdout is not None
                      else str(config) if config is not None else None)
    banner = (f"reconstructing {grid.num_views}x{grid.num_times} grid ({grid.height}x{grid.width}) from {input} "
              f"into {out} on {dev}")
    with (_RichProgress(console, banner) if console.is_terminal else _LineProgress(console, banner)) as progress:
        result = run_pipeline(grid, cfg, out, device=dev, resume=resume, header=header, progress=progress)
    m = result.metrics
    parts = [f"train PSNR {m['train']['psnr_mean']:.2f} dB"]
    if m["heldout"]["cells"]:
        images = protocol is not None and "images" in protocol  # D-NeRF: test images at their own times
        what = "held-out" if protocol is None else f"{protocol['split']} {'images' if images else 'cameras'}"
        parts.append(f"{what} PSNR {m['heldout']['psnr_mean']:.2f} dB, SSIM {m['heldout']['ssim_mean']:.3f} "
                     f"({m['heldout']['cells']} {'images' if images else 'cells'})")
        per = m["heldout"].get("per_camera", {})
        if protocol is not None and per and not images:
            parts.append("; ".join(f"camera {k}: PSNR {v['psnr_mean']:.2f} dB, SSIM {v['ssim_mean']:.3f}" for k, v in per.items()))
    parts.append(f"{m['gaussians']['final']} Gaussians")
    if "floaters" in m:
        parts.append(f"floaters {m['floaters']['canonical']} -> {m['floaters']['final']}")
    console.print("done: " + ", ".join(parts) + f"; see {out / 'metrics.json'}")
    print(json.dumps({"run": str(out), "train_psnr": m["train"]["psnr_mean"], "heldout_psnr": m["heldout"]["psnr_mean"]}))


class _LineProgress:
    """Progress as log lines (every 10 % of a stage, with rate and ETA) when stderr is not a terminal
    (a log file, CI), where a live bar would print nothing until the end."""

    def __init__(self, console, banner: str):
        self.console, self.banner = console, banner
        self.start: dict[str, float] = {}
        self.next: dict[str, int] = {}

    def run_start(self, run_dir, resumed: bool) -> None:
        self.console.print(self.banner + (" (resumed)" if resumed else ""))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def stage_start(self, name: str, total: int | None) -> None:
        import time

        self.start[name] = time.perf_counter()
        self.next[name] = 0

    def stage_advance(self, name: str, done: int, total: int, loss: float | None = None) -> None:
        import time

        if done < self.next.get(name, 0) and done != total:
            return
        self.next[name] = done + max(1, total // 10)
        el = time.perf_counter() - self.start.get(name, time.perf_counter())
        eta = el / max(done, 1) * (total - done)
        note = "" if loss is None else f", loss {loss:.4f}"
        self.console.print(f"{name}: {done}/{total} ({el:.0f} s, ETA {eta:.0f} s{note})")

    def stage_end(self, name: str, seconds: float, loaded: bool) -> None:
        self.console.print(f"{name}: {'loaded from checkpoint' if loaded else f'done in {seconds:.1f} s'}")


class _RichProgress:
    """rich progress bars for :class:`recon.pipeline.Progress`."""

    def __init__(self, console, banner: str):
        self.console, self.banner = console, banner
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn("{task.description:<10}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.fields[note]}"), console=console,
                            transient=False)
        self.tasks: dict[str, int] = {}

    def __enter__(self):
        self.bar.start()
        return self

    def __exit__(self, *exc):
        self.bar.stop()
        return False

    def run_start(self, run_dir, resumed: bool) -> None:
        self.console.print(self.banner + (" (resumed)" if resumed else ""))

    def stage_start(self, name: str, total: int | None) -> None:
        if name not in self.tasks:
            self.tasks[name] = self.bar.add_task(name, total=total, note="")

    def stage_advance(self, name: str, done: int, total: int, loss: float | None = None) -> None:
        self.bar.update(self.tasks[name], completed=done, total=total, note="" if loss is None else f"loss {loss:.4f}")

    def stage_end(self, name: str, seconds: float, loaded: bool) -> None:
        t = self.tasks[name]
        total = self.bar.tasks[[x.id for x in self.bar.tasks].index(t)].total or 1
        self.bar.update(t, total=total, completed=total, note="loaded from checkpoint" if loaded else f"{seconds:.1f} s")
