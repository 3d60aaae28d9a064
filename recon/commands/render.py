"""``recon render RUN``: one grid cell as a PNG (``--view i --time t``), or a camera path around
the scene as a video (``--path orbit|bullet-time|spiral|grid-views --out video.mp4``)."""

from __future__ import annotations

from pathlib import Path

from recon.errors import InputError

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".gif")


def render(
    run: Path,
    /,
    view: int = 0,
    time: int = 0,
    out: Path | None = None,
    no_view_offsets: bool = False,
    path: str | None = None,
    size: tuple[int, int] | None = None,
    fps: float = 24.0,
    seconds: float = 4.0,
    device: str = "auto",
) -> None:
    """Render a cell (view, time) of a reconstruction to a PNG, or a camera path to a video.

    Args:
        run: A run folder written by `recon reconstruct` (its deform stage finished).
        view: View index i (its pose and intrinsics K[i, time]); with --path: the camera the
            spiral circles and whose field of view the path uses.
        time: Time index j; with --path orbit / bullet-time: the frozen time.
        out: Output PNG (default RUN/render_view_XX_time_YYYY.png); with --path a video
            (.mp4 / .webm / .gif ..., default RUN/PATH.mp4) or a folder of PNG frames (no suffix).
        no_view_offsets: Render without the per-view offsets dp_i^v (the exported geometry).
        path: orbit (full turn, time frozen), bullet-time (time frozen, sweep across the grid's
            cameras and back), spiral (time plays, camera circles view --view), grid-views (time
            plays, camera moves through the grid's cameras). Novel cameras render the exported
            geometry (no per-view offsets).
        size: Video frame size H W (default: the grid's image size).
        fps: Video frame rate.
        seconds: Video duration (frames = seconds x fps).
        device: auto, cpu, cuda or cuda:N.
    """
    import math

    import torch

    from recon.device import resolve_device
    from recon.io.atomic import check_writable
    from recon.io.images import write_png

    run = Path(run)
    if path is None:
        if out is not None and Path(out).is_dir():
            raise InputError("--out is a folder; give the PNG file to write", out, "--out")
        check_writable(Path(out) if out is not None else run / "render.png")
        scene = load_run_scene(run, resolve_device(device))
        _check_cell(scene, view, time)
        with torch.no_grad():
            rgb, _, _, _ = scene.render([(view, time)], view_offsets=not no_view_offsets)
        out = Path(out) if out is not None else run / f"render_view_{view:02d}_time_{time:04d}.png"
        write_png(out, (rgb[0].clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy())
        print(out)
        return

    from recon.render.paths import PATHS

    if path not in PATHS:
        raise InputError(f"unknown path {path!r}; expected one of {', '.join(PATHS)}", field="--path")
    if not (math.isfinite(fps) and 0 < fps <= 240):
        raise InputError(f"expected a frame rate in (0, 240], got {fps}", field="--fps")
    if not (math.isfinite(seconds) and 0 < seconds <= 600):
        raise InputError(f"expected a duration in (0, 600] seconds, got {seconds}", field="--seconds")
    if size is not None and not all(16 <= int(x) <= 8192 for x in size):
        raise InputError(f"expected a frame size H W in [16, 8192], got {list(size)}", field="--size")
    out = Path(out) if out is not None else run / f"{path}.mp4"
    if out.suffix and out.suffix.lower() not in VIDEO_SUFFIXES:
        raise InputError(f"unknown video suffix {out.suffix!r} (expected {', '.join(VIDEO_SUFFIXES)}, or a folder "
                         "for PNG frames)", out, "--out")
    if out.is_dir() and out.suffix:
        raise InputError("--out is an existing folder", out, "--out")
    if not out.suffix and out.exists():
        raise InputError("the frames folder exists; choose a new --out", out, "--out")
    check_writable(out)
    scene = load_run_scene(run, resolve_device(device))
    _check_cell(scene, view, time)
    from recon.render.paths import render_path

    frames, seconds_taken = render_path(scene, path, view, time, size, max(1, round(fps * seconds)))
    _write_frames(out, frames, fps)
    print(f"{out} ({len(frames)} frames at {frames.shape[2]}x{frames.shape[1]}, {len(frames) / seconds_taken:.1f} frames/s)")


def _check_cell(scene, view: int, time: int) -> None:
    if not 0 <= view < scene.num_views:
        raise InputError(f"view {view} outside [0, {scene.num_views})", field="--view")
    if not 0 <= time < scene.num_times:
        raise InputError(f"time {time} outside [0, {scene.num_times})", field="--time")


def _write_frames(out: Path, frames, fps: float) -> None:
    """A video (atomic) or, for a suffix-less ``out``, a folder of PNG frames that appears whole."""
    from recon.io.atomic import atomic_path
    from recon.io.images import write_png
    from recon.io.video import write_video

    if out.suffix:
        written = write_video(out, frames, fps=fps)
        if written != out:
            raise InputError(f"ffmpeg could not write {out.suffix}; wrote {written} instead", out, "--out")
        return
    with atomic_path(out) as tmp:
        tmp.mkdir(parents=True)
        for k, f in enumerate(frames):
            write_png(tmp / f"frame_{k:04d}.png", f)


def load_run_scene(run: Path, device):
    """The fitted :class:`~recon.model.scene.DeformableScene` of a run folder (InputError if unfinished)."""
    from recon.model.scene import DeformableScene
    from recon.run import RunFolder

    if not run.is_dir():
        raise InputError("run folder does not exist", run)
    if not (run / "run.json").is_file():
        raise InputError("not a run folder (no run.json)", run)
    info = RunFolder.read_info(run)
    ck = RunFolder(run, info).checkpoint("deform")
    if info.get("stages", {}).get("deform", {}).get("status") != "done" or not ck.is_file():
        raise InputError("the run's deform stage has not finished; resume it with recon reconstruct --resume --out RUN", run)
    from recon.io import check_memory
    from recon.render.paths import RENDER_BYTES_PER_PIXEL

    scene = DeformableScene.load(ck, device)
    H, W = scene.size
    check_memory(H * W * RENDER_BYTES_PER_PIXEL, f"rendering a {W}x{H} image", ck)
    return scene

