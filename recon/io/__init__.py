"""Readers and writers. :func:`load_grid` detects the input kind and dispatches.

Input kinds (see each module for its layout):

* ``grid``      a recon grid folder (``grid.json``)                 -> :mod:`recon.io.gridfolder`
* ``panoptic``  Dynamic-3DGS / CMU Panoptic (``train_meta.json``)   -> :mod:`recon.io.panoptic`
* ``nerfstudio``/``dnerf`` ``transforms*.json`` with a time field   -> :mod:`recon.io.nerfstudio`
* ``videos``    a folder of one video per view (+ cameras.json)     -> :mod:`recon.io.video`
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from recon.errors import InputError
from recon.grid import FrameGrid

VIDEO_EXTS = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".gif")


@dataclass
class LoadOptions:
    """Selection applied while reading (readers that support it read only what is selected)."""

    views: list[int] | None = None
    """Indices (or camera ids, for Panoptic) of the views to keep; None keeps all."""
    frames: str | None = None
    """Frame range as ``start:stop[:step]`` over the time axis (Python slice semantics)."""
    scale: float = 1.0
    """Resolution scale applied to images, masks and intrinsics (0.5 = half size)."""
    split: str = "train"
    """For multi-split datasets (Panoptic, D-NeRF): train, test or val."""


def parse_frames(spec: str | None, n: int, field: str = "--frames") -> list[int]:
    """``"start:stop[:step]"`` (or ``"i"``) -> list of frame indices within ``range(n)``."""
    if spec is None or spec == "":
        return list(range(n))
    try:
        parts = [int(p) if p.strip() else None for p in spec.split(":")]
    except ValueError:
        raise InputError(f"expected start:stop[:step] with integers, got {spec!r}", field=field) from None
    if len(parts) == 1:
        idx = [parts[0]] if parts[0] is not None and 0 <= parts[0] < n else []
    elif len(parts) in (2, 3):
        if len(parts) == 3 and parts[2] == 0:
            raise InputError("step must not be 0", field=field)
        idx = list(range(n))[slice(*parts)]
    else:
        raise InputError(f"expected start:stop[:step], got {spec!r}", field=field)
    if not idx:
        raise InputError(f"selects no frames out of {n}", field=field)
    return idx


def detect_kind(path: str | os.PathLike) -> str:
    """Return the input kind of ``path`` (see module docstring) or raise InputError."""
    p = Path(path)
    if not p.exists():
        raise InputError("path does not exist", p)
    if p.is_file():
        if p.suffix.lower() == ".json":
            return "nerfstudio"
        raise InputError("expected a folder or a transforms json", p)
    if (p / "grid.json").is_file():
        return "grid"
    if (p / "train_meta.json").is_file() or (p / "test_meta.json").is_file():
        return "panoptic"
    if any((p / n).is_file() for n in ("transforms.json", "transforms_train.json")):
        return "nerfstudio"
    if any(f.suffix.lower() in VIDEO_EXTS for f in p.iterdir() if f.is_file()):
        return "videos"
    if not any(p.iterdir()):
        raise InputError("folder is empty", p)
    raise InputError("unrecognised input: expected grid.json, train_meta.json, transforms*.json or videos", p)


def load_grid(path: str | os.PathLike, options: LoadOptions | None = None) -> FrameGrid:
    """Read any supported input into a :class:`FrameGrid`, applying ``options`` (selection, scale)."""
    options = options or LoadOptions()
    kind = detect_kind(path)
    if kind == "grid":
        from recon.io.gridfolder import read_grid

        grid = read_grid(path)
        return apply_options(grid, options, Path(path))
    if kind == "panoptic":
        from recon.io.panoptic import read_panoptic

        return read_panoptic(path, options)
    if kind == "nerfstudio":
        from recon.io.nerfstudio import read_transforms

        return read_transforms(path, options)
    from recon.io.video import read_videos

    return read_videos(path, options)


def apply_options(grid: FrameGrid, options: LoadOptions, src: Path) -> FrameGrid:
    """Apply view / frame selection and scale to an already-loaded grid."""
    views = options.views
    if views is not None:
        bad = [v for v in views if not 0 <= v < grid.num_views]
        if bad:
            raise InputError(f"view indices {bad} outside [0, {grid.num_views})", src, "--views")
    times = parse_frames(options.frames, grid.num_times)
    if views is not None or len(times) != grid.num_times:
        grid = grid.subset(views, times)
    if options.scale != 1.0:
        grid = rescale(grid, options.scale)
    return grid


def rescale(grid: FrameGrid, scale: float) -> FrameGrid:
    """Resize images (area), masks (nearest), intrinsics and image-aligned extras by ``scale``."""
    import cv2
    import numpy as np

    if not (0.0 < scale <= 8.0):
        raise InputError(f"scale must be in (0, 8], got {scale}", field="--scale")
    V, T, H, W = grid.shape
    h, w = max(1, round(H * scale)), max(1, round(W * scale))
    sx, sy = w / W, h / H
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    imgs = np.stack([np.stack([cv2.resize(grid.images[v, t], (w, h), interpolation=interp) for t in range(T)]) for v in range(V)])
    masks = None
    if grid.masks is not None:
        masks = np.stack(
            [np.stack([cv2.resize(grid.masks[v, t].astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0 for t in range(T)]) for v in range(V)]
        )
    K = grid.cameras.K.copy()
    K[..., 0, :] *= sx
    K[..., 1, :] *= sy
    K[..., 2, :] = [0.0, 0.0, 1.0]
    extras = {}
    for k, a in grid.extras.items():
        if a.shape[2:4] == (H, W):
            extras[k] = np.stack(
                [np.stack([cv2.resize(a[v, t], (w, h), interpolation=cv2.INTER_NEAREST) for t in range(T)]) for v in range(V)]
            )
    from recon.grid import Cameras

    return FrameGrid(
        images=imgs, cameras=Cameras(K=K, w2c=grid.cameras.w2c), times=grid.times, masks=masks, ref_time=grid.ref_time,
        central_view=grid.central_view, view_names=grid.view_names, meta={**grid.meta, "scale": scale}, extras=extras,
        source=grid.source,
    )
