"""``recon info PATH``: summary of a grid (any supported input) or a run folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import tyro

from recon.errors import InputError
from recon.io import LoadOptions
from recon.schema import read_json


def info(
    path: Path,
    /,
    json_out: bool = False,
    load: Annotated[LoadOptions, tyro.conf.OmitArgPrefixes] = LoadOptions(),
) -> None:
    """Print a summary of a frame grid (grid folder, Panoptic, transforms json, videos) or a run folder.

    The grid is read and validated in full (every image is decoded), so ``info`` doubles as an
    input check; on large captures select a part with --frames / --views / --scale.

    Args:
        path: A grid folder, a Panoptic folder, a transforms json, a folder of videos, or a run folder.
        json_out: Print JSON instead of a table.
        load: What to read (the same flags as recon reconstruct).
    """
    from rich.console import Console
    from rich.table import Table

    path = Path(path)
    if not path.exists():
        raise InputError("path does not exist", path)
    if (path / "run.json").is_file():
        summary = _run_summary(path)
        title = f"run folder {path}"
    else:
        from recon.io import detect_kind, load_grid

        kind = detect_kind(path)
        grid = load_grid(path, load)
        summary = {"kind": kind, **grid.summary()}
        title = f"{kind} grid {path}"
    if json_out:
        print(json.dumps(summary, indent=2, default=str))
        return
    table = Table(title=title, show_header=False)
    for k, v in summary.items():
        table.add_row(str(k), json.dumps(v, default=str) if not isinstance(v, str) else v)
    Console().print(table)


def _run_summary(path: Path) -> dict:
    def _load(name: str) -> dict:
        f = path / name
        if not f.is_file():
            return {}
        data = read_json(f, what=name)
        if not isinstance(data, dict):
            raise InputError(f"expected a JSON object, got {type(data).__name__}", f)
        return data

    run = _load("run.json")
    metrics = _load("metrics.json")
    out = {"kind": "run", **{k: v for k, v in run.items() if not isinstance(v, dict)}}
    for k in ("psnr_train", "psnr_holdout", "ssim_holdout", "num_gaussians", "stage_seconds"):
        if k in metrics:
            out[k] = metrics[k]
    plys = sorted((path / "ply").glob("frame_*.ply")) if (path / "ply").is_dir() else []
    out["ply_frames"] = len(plys)
    return out
