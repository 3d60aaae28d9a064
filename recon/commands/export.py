"""``recon export RUN --format ply``: write a finished reconstruction as a .ply sequence."""

from __future__ import annotations

import json
from pathlib import Path

from recon.errors import InputError


def export(run: Path, /, format: str = "ply", out: Path | None = None) -> None:
    """Export a reconstruction: DIR/ply/frame_XXXX.ply (graphdeco 3DGS layout, one per time:
    canonical + temporal deformation, without per-view offsets) and DIR/ply/sequence.json.

    Args:
        run: A run folder written by `recon reconstruct` (its deform stage finished).
        format: Export format (ply).
        out: Output folder DIR (default: the run folder; DIR/ply is replaced atomically).
    """
    import torch

    from recon.commands.render import load_run_scene
    from recon.fit.evaluate import write_ply

    if format != "ply":
        raise InputError(f"unknown format {format!r}; expected ply", field="--format")
    run = Path(run)
    scene = load_run_scene(run, torch.device("cpu"))
    cfg = json.loads((run / "config.json").read_text()) if (run / "config.json").is_file() else {}
    info = json.loads((run / "run.json").read_text())
    fps = cfg.get("outputs", {}).get("fps")
    world = not bool(torch.equal(scene.to_world, torch.eye(4)))
    with torch.no_grad():
        folder = write_ply(scene, Path(out) if out is not None else run, fps=fps, source=str(info.get("input")),
                           time_unit=str(info.get("time_unit", "s")), world=world)
    print(folder)
