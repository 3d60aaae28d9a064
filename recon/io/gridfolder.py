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

import os
import zipfile
import zlib
from pathlib import Path

import numpy as np

from recon import schema as S
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


def _check_header(head: dict, src: Path, _at: str) -> None:
    if head["version"] > VERSION:
        raise InputError(f"grid version {head['version']} is newer than this recon supports ({VERSION})", src, "version")
    V, T = head["views"], head["times"].shape[0]
    if T < 1:
        raise InputError("empty grid (no times)", src, "times")
    for key, n in (("ref_time", T), ("central_view", V)):
        if head[key] is not None and head[key] >= n:
            raise InputError(f"{head[key]} outside [0, {n})", src, key)
    if head["view_names"] is not None and len(head["view_names"]) not in (0, V):
        raise InputError(f"expected {V} view names, got {len(head['view_names'])}", src, "view_names")


GRID_SCHEMA = S.Obj(
    {
        "format": S.Str(choices=(FORMAT,)),
        "version": S.Int(min=0),
        "views": S.Int(min=1),
        "times": S.Array((-1,)),
        "height": S.Int(min=1),
        "width": S.Int(min=1),
        "ref_time": S.Optional(S.Int(min=0)),
        "central_view": S.Optional(S.Int(min=0)),
        "view_names": S.Optional(S.List(S.Str())),
        "cameras": S.Obj({"K": S.Array(), "w2c": S.Optional(S.Array())}),
        "masks": S.Bool(),
        "extras": S.List(S.Str()),
        "meta": S.Optional(S.Obj()),
    },
    defaults={"format": FORMAT, "version": VERSION, "masks": False, "extras": []},
    post=_check_header,
)
"""grid.json: types, ranges and cross-field checks (see the module docstring for the fields)."""


def read_grid(path: str | os.PathLike) -> FrameGrid:
    """Read a grid folder written by :func:`write_grid` (or by hand, following the layout above)."""
    from recon.io import check_memory

    root = Path(path)
    if not root.exists():
        raise InputError("path does not exist", root)
    src = root / "grid.json"
    if not src.is_file():
        raise InputError("not a grid folder (no grid.json)", root)
    head = S.read_json(src, GRID_SCHEMA, "grid.json")
    V, T, H, W = head["views"], head["times"].shape[0], head["height"], head["width"]
    times = head["times"]
    cams = Cameras.broadcast(head["cameras"]["K"], head["cameras"]["w2c"], V, T, str(src))
    has_masks = head["masks"]
    check_memory(V * T * H * W * (4 if has_masks else 3), f"{V} views x {T} frames at {W}x{H}", src)
    K, w2c = cams.K, cams.w2c

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
    extras = _read_extras(root / "extras.npz", head["extras"], (V, T)) if head["extras"] else {}
    grid_kw = dict(
        ref_time=head["ref_time"] or 0,
        central_view=head["central_view"],
        view_names=head["view_names"] or None,
        meta=head["meta"] or {},
        extras=extras,
    )
    cameras = Cameras.broadcast(K, w2c, V, T, str(src))
    grid = FrameGrid(images=images, cameras=cameras, times=times, masks=masks, source=str(src), **grid_kw)
    if "synth" in grid.meta and "depth" in extras and "object_id" in extras and "surface" not in extras:
        _restore_ground_truth(grid, src)
    return grid


def _read_extras(ef: Path, names: list[str], VT: tuple[int, int]) -> dict[str, np.ndarray]:
    """The arrays ``names`` of ``extras.npz``; each one's .npy header is checked (numeric dtype,
    leading ``[V, T]``, a size that fits in memory) before its data is decoded."""
    from recon.io import check_memory

    out: dict[str, np.ndarray] = {}
    try:
        with np.load(ef, allow_pickle=False) as z:
            for k in names:
                if k not in z.files:
                    raise InputError(f"no array {k!r} (grid.json lists it in extras; the file has {z.files})", ef, k)
                with z.zip.open(k + ".npy") as f:
                    major, _ = np.lib.format.read_magic(f)
                    read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
                    shape, _, dtype = read_header(f)
                if dtype.kind not in "biuf" or tuple(shape[:2]) != VT:
                    raise InputError(f"expected a numeric array [V={VT[0]}, T={VT[1]}, ...], got {dtype} {list(shape)}", ef, k)
                check_memory(int(np.prod(shape, dtype=np.float64)) * dtype.itemsize, f"extras array {k!r}", ef)
                out[k] = z[k]
    except InputError:
        raise
    except (OSError, KeyError, ValueError, EOFError, NotImplementedError, zipfile.BadZipFile, zlib.error) as e:
        raise InputError(f"cannot read extras ({type(e).__name__}: {e})", ef) from None
    return out


def _restore_ground_truth(grid: FrameGrid, src: Path) -> None:
    """Compact synthetic grids (e.g. data/sample) leave out the per-pixel rest points: they follow
    exactly from depth + object id and the scene in ``meta.synth``, so they are restored here and
    every reader sees the full ground truth. A scene description that cannot be rebuilt (a
    hand-edited grid.json) is an InputError naming ``meta.synth``."""
    from recon.synth import ensure_ground_truth

    V, T, H, W = grid.shape
    for k, kinds in (("depth", "iuf"), ("object_id", "iu")):
        a = grid.extras[k]
        if a.shape != (V, T, H, W) or a.dtype.kind not in kinds:
            raise InputError(f"expected {'integer' if k == 'object_id' else 'numeric'} [V, T, H, W] = {[V, T, H, W]}, got "
                             f"{a.dtype} {list(a.shape)}", src.parent / "extras.npz", k)
    if grid.cameras.w2c is None:
        raise InputError("a synthetic grid's ground truth needs its camera poses", src, "cameras.w2c")
    try:
        ensure_ground_truth(grid)
    except InputError as e:
        raise (e if e.path is not None else InputError(e.message, src, e.field)) from None
    except (TypeError, ValueError, IndexError, KeyError, AttributeError, ArithmeticError) as e:
        raise InputError(f"the synthetic scene cannot be rebuilt ({type(e).__name__}: {e})", src, "meta.synth") from None
