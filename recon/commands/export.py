"""``recon export RUN --format ply``: write a finished reconstruction as a .ply sequence."""

from __future__ import annotations

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
    from recon.config import load_config_file
    from recon.io.atomic import check_writable
    from recon.run import RunFolder

    info = RunFolder.read_info(run)
    fps = load_config_file(run / "config.json").outputs.fps if (run / "config.json").is_file() else None
    target = Path(out) if out is not None else run
    if target.exists() and not target.is_dir():
        raise InputError("--out exists and is not a folder (the export writes DIR/ply/)", target, "--out")
    check_writable(target / "ply")
    world = not bool(torch.equal(scene.to_world, torch.eye(4)))
    with torch.no_grad():
        folder = write_ply(scene, target, fps=fps, source=str(info.get("input")),
                           time_unit=str(info.get("time_unit", "s")), world=world)
    print(folder)
