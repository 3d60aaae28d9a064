"""The grid folder: recon's own lossless on-disk FrameGrid.

Layout::

    GRID/grid.json                  format, sizes, times, cameras, ref_time, central_view, meta
    GRID/view_XX/frame_YYYY.png     RGB, 8-bit
    GRID/view_XX/mask_YYYY.png      foreground masks (optional)
    GRID/extras.npz                 per-frame arrays aligned with the grid (optional, e.g. GT depth)

``grid.json`` fields: ``format`` ("recon-grid"), ``version`` (1), ``views``, ``times`` (list of T
floats), ``height``, ``width``, ``ref_time``, ``central_view``, ``view_names``, ``cameras.K``
(``[V][T][3][3]``, pixels) and ``cameras.w2c`` (``[V][T][4][4]`` world-to-camera, OpenCV, or null),
``masks`` (bool), ``extras`` (names stored in extras.npz), ``meta`` (free, JSON).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from recon.errors import InputError
from recon.grid import Cameras, FrameGrid
from recon.io.atomic import atomic_path, write_json
from recon.io.images import read_mask, read_rgb, write_png

FORMAT = "recon-grid"
VERSION = 1


def frame_path(root: Path, v: int, t: int, kind: str = "frame") -> Path:
    return root / f"view_{v:02d}" / f"{kind}_{t:04d}.png"


def write_grid(grid: FrameGrid, path: str | os.PathLike) -> Path:
    """Write ``grid`` to folder ``path`` atomically (the folder appears only when complete)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError("output exists and is not a folder", path)
    grid.validate()
    with atomic_path(path) as tmp:
        tmp.mkdir(parents=True)
        V, T = grid.num_views, grid.num_times
        for v in range(V):
            for t in range(T):
                write_png(frame_path(tmp, v, t), grid.images[v, t])
                if grid.masks is not None:
                    write_png(frame_path(tmp, v, t, "mask"), grid.masks[v, t])
        if grid.extras:
            np.savez_compressed(tmp / "extras.npz", **grid.extras)
        header = {
            "format": FORMAT,
            "version": VERSION,
            "views": V,
            "height": grid.height,
            "width": grid.width,
            "times": grid.times.tolist(),
            "ref_time": int(grid.ref_time),
            "central_view": int(grid.central_view),
            "view_names": list(grid.view_names or []),
            "cameras": {
                "K": grid.cameras.K.tolist(),
                "w2c": None if grid.cameras.w2c is None else grid.cameras.w2c.tolist(),
            },
            "masks": grid.masks is not None,
            "extras": sorted(grid.extras),
            "meta": grid.meta,
        }
        write_json(tmp / "grid.json", header)
    return path


def _field(d: dict, key: str, src: Path, kind: type | tuple = object) -> Any:
    if key not in d:
        raise InputError("missing field", src, key)
    val = d[key]
    if not isinstance(val, kind):
        name = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise InputError(f"expected {name}, got {type(val).__name__}", src, key)
    return val


def _array(val: Any, src: Path, key: str) -> np.ndarray:
    try:
        a = np.asarray(val, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError("expected a nested list of numbers", src, key) from None
    return a


def read_grid(path: str | os.PathLike) -> FrameGrid:
    """Read a grid folder written by :func:`write_grid` (or by hand, following the layout above)."""
    root = Path(path)
    if not root.exists():
        raise InputError("path does not exist", root)
    src = root / "grid.json"
    if not src.is_file():
        raise InputError("not a grid folder (no grid.json)", root)
    try:
        head = json.loads(src.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"invalid JSON: {e}", src) from None
    if not isinstance(head, dict):
        raise InputError("expected a JSON object", src)
    fmt = head.get("format", FORMAT)
    if fmt != FORMAT:
        raise InputError(f"unknown format {fmt!r}, expected {FORMAT!r}", src, "format")
    version = head.get("version", VERSION)
    if not isinstance(version, int) or version > VERSION:
        raise InputError(f"grid version {version!r} is newer than this recon supports ({VERSION})", src, "version")
    V = _field(head, "views", src, int)
    times = _array(_field(head, "times", src, list), src, "times")
    if times.ndim != 1:
        raise InputError("expected a flat list of numbers", src, "times")
    T = times.shape[0]
    if V < 1 or T < 1:
        raise InputError(f"empty grid (views={V}, times={T})", src, "views" if V < 1 else "times")
    H = _field(head, "height", src, int)
    W = _field(head, "width", src, int)
    for key, val in (("views", V), ("height", H), ("width", W)):
        if val < 1:
            raise InputError(f"expected a positive integer, got {val}", src, key)
    for key in ("ref_time", "central_view"):
        if head.get(key) is not None and (not isinstance(head[key], int) or isinstance(head[key], bool)):
            raise InputError(f"expected an integer, got {head[key]!r}", src, key)
    cams = _field(head, "cameras", src, dict)
    K = _array(_field(cams, "K", src, list), src, "cameras.K")
    w2c = cams.get("w2c")
    w2c = None if w2c is None else _array(w2c, src, "cameras.w2c")
    has_masks = bool(head.get("masks", False))

    images = np.empty((V, T, H, W, 3), np.uint8)
    masks = np.empty((V, T, H, W), bool) if has_masks else None
    for v in range(V):
        if not (root / f"view_{v:02d}").is_dir():
            raise InputError(f"missing view folder (grid.json says {V} views)", root / f"view_{v:02d}")
        for t in range(T):
            f = frame_path(root, v, t)
            if not f.is_file():
                raise InputError(f"missing frame (grid.json says {T} times)", f)
            im = read_rgb(f)
            if im.shape[:2] != (H, W):
                raise InputError(f"image is {im.shape[1]}x{im.shape[0]}, grid.json says {W}x{H}", f, "width/height")
            images[v, t] = im
            if masks is not None:
                mf = frame_path(root, v, t, "mask")
                m = read_mask(mf)
                if m.shape != (H, W):
                    raise InputError(f"mask is {m.shape[1]}x{m.shape[0]}, expected {W}x{H}", mf)
                masks[v, t] = m
    extras: dict[str, np.ndarray] = {}
    names = head.get("extras", [])
    if names:
        ef = root / "extras.npz"
        try:
            with np.load(ef) as z:
                for k in names:
                    extras[k] = z[k]
        except (OSError, KeyError, ValueError, EOFError) as e:
            raise InputError(f"cannot read extras ({e})", ef) from None
    grid_kw = dict(
        ref_time=int(head.get("ref_time", 0)),
        central_view=head.get("central_view"),
        view_names=head.get("view_names") or None,
        meta=head.get("meta") or {},
        extras=extras,
    )
    cameras = Cameras.broadcast(K, w2c, V, T, str(src))
    grid = FrameGrid(images=images, cameras=cameras, times=times, masks=masks, source=str(src), **grid_kw)
    if "synth" in grid.meta and "depth" in extras and "object_id" in extras and "surface" not in extras:
        # compact synthetic grids (e.g. data/sample) leave out the per-pixel rest points: they follow
        # exactly from depth + object id, so restore them here and every reader sees the full GT.
        from recon.synth import ensure_ground_truth

        ensure_ground_truth(grid)
    return grid
