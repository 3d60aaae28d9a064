"""``recon render RUN --view i --time t``: render one grid cell of a finished reconstruction."""

from __future__ import annotations

from pathlib import Path

from recon.errors import InputError


def render(
    run: Path,
    /,
    view: int = 0,
    time: int = 0,
    out: Path | None = None,
    no_view_offsets: bool = False,
    device: str = "auto",
) -> None:
    """Render cell (view, time) of a reconstruction to a PNG.

    Args:
        run: A run folder written by `recon reconstruct` (its deform stage finished).
        view: View index i (its pose and intrinsics K[i, time]).
        time: Time index j.
        out: Output PNG (default RUN/render_view_XX_time_YYYY.png).
        no_view_offsets: Render without the per-view offsets dp_i^v (the exported geometry).
        device: auto, cpu, cuda or cuda:N.
    """
    import torch

    from recon.device import resolve_device
    from recon.io.images import write_png

    from recon.io.atomic import check_writable

    if out is not None and Path(out).is_dir():
        raise InputError("--out is a folder; give the PNG file to write", out, "--out")
    check_writable(Path(out) if out is not None else Path(run) / "render.png")
    scene = load_run_scene(Path(run), resolve_device(device))
    if not 0 <= view < scene.num_views:
        raise InputError(f"view {view} outside [0, {scene.num_views})", field="--view")
    if not 0 <= time < scene.num_times:
        raise InputError(f"time {time} outside [0, {scene.num_times})", field="--time")
    with torch.no_grad():
        rgb, _, _, _ = scene.render([(view, time)], view_offsets=not no_view_offsets)
    out = Path(out) if out is not None else Path(run) / f"render_view_{view:02d}_time_{time:04d}.png"
    write_png(out, (rgb[0].clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy())
    print(out)


def load_run_scene(run: Path, device):
    """The fitted :class:`~recon.model.scene.DeformableScene` of a run folder (InputError if unfinished)."""
    from recon.model.scene import DeformableScene
    from recon.pipeline import RunFolder

    if not run.is_dir():
        raise InputError("run folder does not exist", run)
    if not (run / "run.json").is_file():
        raise InputError("not a run folder (no run.json)", run)
    info = RunFolder.read_info(run)
    ck = RunFolder(run, info).checkpoint("deform")
    if info.get("stages", {}).get("deform", {}).get("status") != "done" or not ck.is_file():
        raise InputError("the run's deform stage has not finished; resume it with recon reconstruct --resume --out RUN", run)
    from recon.io import check_memory

    scene = DeformableScene.load(ck, device)
    H, W = scene.size
    check_memory(H * W * RENDER_BYTES_PER_PIXEL, f"rendering a {W}x{H} image", ck)
    return scene


RENDER_BYTES_PER_PIXEL = 64
"""Memory one rendered pixel takes at most (colour, alpha, depth and the kernel's per-pixel state)."""
