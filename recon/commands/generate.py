"""``recon generate``: fill a V x T frame grid with the 4D video generator and write a grid folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recon.errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
DEFAULT_SCENE = "random"


def read_frames(path: Path, what: str) -> np.ndarray:
    """A video file (anything imageio reads: mp4, gif, ...) or a folder of images (sorted by name)
    as ``uint8 [N, H, W, 3]``."""
    from recon.io.images import read_rgb

    path = Path(path)
    if not path.exists():
        raise InputError(f"{what} does not exist", path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise InputError(f"{what} folder holds no images ({', '.join(IMAGE_SUFFIXES)})", path)
        frames = [read_rgb(f) for f in files]
        shapes = {f.shape for f in frames}
        if len(shapes) > 1:
            raise InputError(f"{what} frames differ in size: {sorted(shapes)}", path)
        return np.stack(frames)
    import imageio.v3 as iio

    try:
        arr = np.asarray(iio.imread(path, index=None))
    except Exception as e:  # imageio raises many types for unreadable files; all mean "cannot decode"
        raise InputError(f"cannot read {what} as a video: {e}", path) from None
    if arr.ndim == 3:  # a single image or a greyscale stack: a grey video is [N, H, W]
        arr = arr[None] if arr.shape[-1] in (3, 4) else arr[..., None]
    if arr.ndim != 4:
        raise InputError(f"expected video frames [N, H, W, C], got shape {list(arr.shape)}", path)
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    if arr.dtype != np.uint8:
        raise InputError(f"expected 8-bit frames, got {arr.dtype}", path)
    return np.ascontiguousarray(arr[..., :3])


def generate(
    out: Path,
    checkpoint: Path | None = None,
    reference_video: Path | None = None,
    freeze_time: Path | None = None,
    synthetic_prompt: str | None = None,
    frames: int | None = None,
    views: int | None = None,
    steps: int = 20,
    start_sigma: float = 1.0,
    seed: int = 0,
    context: int = 1,
    device: str = "auto",
    overwrite: bool = False,
) -> None:
    """Generate a V x T grid (V views x T times) from a reference video and a freeze-time video.

    The reference video is view 0 over time (the first row of the grid); the freeze-time video shows
    all V views at the first time (the first column). Without videos the conditioning comes from a
    procedural scene (--synthetic-prompt SCENE, default `random`), whose cameras are written too.
    Grids longer than the checkpoint's chunk are generated autoregressively.

    Args:
        out: Output grid folder (written atomically), readable by `recon reconstruct`.
        checkpoint: Generator checkpoint folder; default: the bundled one (data/diffusion/).
        reference_video: Video file or image folder: one view over time (T frames).
        freeze_time: Video file or image folder: all views at the first time (V frames).
        synthetic_prompt: Take the conditioning from this procedural scene (see `recon synth`).
        frames: Time steps T (default: the reference video's length, or the checkpoint's chunk).
        views: Views V (default: the freeze-time video's length, or the checkpoint's maximum).
        steps: Sampler steps (flow-matching Euler).
        start_sigma: Noise level the sampler starts from, in [0.01, 1]: 1 = pure noise; below 1 = the
            anchor frames noised to that level (closer to the given frames, less sample variance).
        seed: Noise seed (and procedural scene seed).
        context: Time steps carried over between chunks when extending autoregressively.
        device: auto, cpu or cuda[:N].
        overwrite: Replace an existing output folder.
    """
    import torch
    from rich.console import Console

    from recon.device import check_seed, resolve_device
    from recon.diffusion.checkpoint import BUNDLED, load_generator
    from recon.diffusion.data import to_model_range, to_uint8
    from recon.diffusion.sampler import check_grid_size, fill_grid
    from recon.grid import Cameras, FrameGrid
    from recon.io.gridfolder import write_grid

    check_seed(seed)
    out = Path(out)
    if out.exists() and not overwrite:
        raise InputError("output already exists (pass --overwrite to replace it)", out)
    if (reference_video is None) != (freeze_time is None):
        raise InputError("pass both --reference-video and --freeze-time (or neither, for a procedural scene)",
                         field="--reference-video/--freeze-time")
    if reference_video is not None and synthetic_prompt is not None:
        raise InputError("--synthetic-prompt cannot be combined with --reference-video/--freeze-time", field="--synthetic-prompt")
    if steps < 1:
        raise InputError(f"steps must be >= 1, got {steps}", field="--steps")
    if not 0.01 <= start_sigma <= 1.0:
        raise InputError(f"start sigma must be in [0.01, 1], got {start_sigma}", field="--start-sigma")
    dev = resolve_device(device)
    model = load_generator(checkpoint, device=dev)
    cfg = model.config
    H, W = cfg.height, cfg.width

    if reference_video is not None:
        ref = read_frames(reference_video, "reference video")
        frz = read_frames(freeze_time, "freeze-time video")
        if ref.shape[1:3] != frz.shape[1:3]:
            raise InputError(f"reference video frames are {ref.shape[2]}x{ref.shape[1]} but freeze-time frames are "
                             f"{frz.shape[2]}x{frz.shape[1]}; both must have the same size", freeze_time)
        if frames is None and len(ref) != len(frz):
            raise InputError(f"reference video has {len(ref)} frames but freeze-time video has {len(frz)}; a square grid needs "
                             "equal counts (pass --frames N to generate N time steps from a longer reference video)", freeze_time)
        T = len(ref) if frames is None else frames
        if T > len(ref):
            raise InputError(f"--frames {T} but the reference video has only {len(ref)} frames", reference_video, "--frames")
        V = len(frz) if views is None else views
        if V != len(frz):
            raise InputError(f"--views {V} but the freeze-time video has {len(frz)} frames (one per view)", freeze_time, "--views")
        check_grid_size(model, V, T, ref.shape[1], ref.shape[2])
        ref = ref[:T]
        f = float(max(H, W))
        K = np.array([[f, 0, W / 2], [0, f, H / 2], [0, 0, 1]], dtype=np.float64)
        cameras, times = Cameras(K=K, w2c=None), np.arange(T, dtype=np.float64)
        meta = {"source": "recon.generate", "conditioning": {"reference_video": str(reference_video), "freeze_time": str(freeze_time)},
                "intrinsics": "nominal (focal = image size); poses unknown"}
    else:
        from recon.synth import make_grid

        scene = synthetic_prompt or DEFAULT_SCENE
        V = cfg.max_views if views is None else views
        T = cfg.max_times if frames is None else frames
        check_grid_size(model, V, T, H, W)
        try:
            truth = make_grid(scene=scene, views=V, frames=T, size=(H, W), seed=seed)
        except KeyError as e:
            raise InputError(f"unknown procedural scene {scene!r} ({e})", field="--synthetic-prompt") from None
        ref, frz = truth.images[0], truth.images[:, 0]
        cameras, times = truth.cameras, truth.times
        meta = {"source": "recon.generate", "conditioning": {"scene": scene, "seed": seed}}

    import time

    t0 = time.perf_counter()
    with torch.no_grad():
        grid = fill_grid(model, to_model_range(ref), to_model_range(frz), steps=steps, seed=seed, context=context,
                         start_sigma=start_sigma)
    seconds = time.perf_counter() - t0
    meta.update({"generator": {"checkpoint": str(checkpoint or BUNDLED), "steps": steps, "start_sigma": start_sigma, "seed": seed,
                                   "context": context},
                 "given": "row 0 (reference video) and column 0 (freeze-time video)"})
    result = FrameGrid(images=to_uint8(grid), cameras=cameras, times=times, ref_time=0, meta=meta, source=str(out))
    write_grid(result, out)
    Console().print(f"wrote generated {V}x{T} grid ({H}x{W}) to {out} (sampling {seconds:.1f} s, {steps} steps, {dev.type})")
