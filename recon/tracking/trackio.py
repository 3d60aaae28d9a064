"""Reading and writing tracks, so tracks from an external tracker can replace the tracking stage.

Formats (chosen by :func:`read_tracks` from the file):

``recon-tracks`` (``.npz``, written by :func:`write_tracks`), arrays named like the
:class:`~recon.tracking.types.Tracks` fields:

* ``format`` = ``"recon-tracks"``, ``version`` = 1;
* ``points`` float32 ``[P, V, 3]``: camera coordinates (OpenCV) of each point in freeze-time frame
  (view i, ``ref_time``); ``visible`` bool ``[P, V]``; ``colors`` float32 ``[P, 3]`` in [0, 1];
  ``seed_view`` int64 ``[P]``; optional ``time_points`` float32 ``[P, T, 3]`` and
  ``time_visible`` bool ``[P, T]``.

DELTA (snap-research/DELTA_densetrack3d, ``demo.py``) dense 3D output, run on the freeze-time video
(the views at ``ref_time`` in view order, so DELTA's frame axis is our view axis): a pickle
``dense_3d_track.pkl`` (or an ``.npz`` with the same names) holding

* ``coords`` ``[V, N, 3]``: per frame, ``z * K_delta^-1 [u, v, 1]`` with DELTA's tracked pixel
  ``(u, v)`` (0-based pixel centres) and depth ``z``, i.e. camera coordinates under DELTA's
  intrinsics; ``colors`` ``[N, 3]`` (0-255 from its demo); ``vis`` bool ``[V, N]``.

``coords`` are in the frame of DELTA's intrinsics. Its demo uses ``K_delta = [[W, 0, W // 2],
[0, W, H // 2], [0, 0, 1]]`` unless ``predefined_intrs`` is passed; :func:`read_delta` therefore
re-projects with that ``K_delta`` and re-lifts with the grid's ``K`` (shifting DELTA's 0-based
pixel centres by +0.5 to recon's convention); pass ``delta_intrinsics="grid"`` when DELTA was
given the grid's intrinsics. Every DELTA point is seeded at frame ``query_frame`` (demo: 0).
Pickles are read with an unpickler that only admits numpy arrays, never arbitrary objects.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import numpy as np
import torch

from recon.errors import InputError
from recon.grid import FrameGrid
from recon.io.atomic import atomic_path
from recon.tracking.types import Tracks

FORMAT = "recon-tracks"
VERSION = 1


def write_tracks(path: str | os.PathLike, tracks: Tracks) -> Path:
    """Write ``tracks`` as a ``recon-tracks`` ``.npz`` atomically; returns the path."""
    path = Path(path)
    arrays = {
        "format": np.array(FORMAT),
        "version": np.array(VERSION),
        "points": tracks.points.detach().cpu().float().numpy(),
        "visible": tracks.visible.detach().cpu().bool().numpy(),
        "colors": tracks.colors.detach().cpu().float().numpy(),
        "seed_view": tracks.seed_view.detach().cpu().long().numpy(),
    }
    if tracks.time_points is not None:
        arrays["time_points"] = tracks.time_points.detach().cpu().float().numpy()
        arrays["time_visible"] = (
            tracks.time_visible.detach().cpu().bool().numpy()
            if tracks.time_visible is not None
            else np.ones(tracks.time_points.shape[:2], bool)
        )
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
    return path


def read_tracks(path: str | os.PathLike, grid: FrameGrid | None = None, **delta_options) -> Tracks:
    """Read tracks from ``path`` (recon-tracks ``.npz``, or DELTA ``.pkl`` / ``.npz``; see the
    module docstring) and check them against ``grid`` when given (number of views, times).
    DELTA files need ``grid`` (for the intrinsics); ``delta_options`` go to :func:`read_delta`."""
    path = Path(path)
    if not path.is_file():
        raise InputError("tracks file does not exist", path)
    data = _load(path)
    if "format" in data and str(data["format"]) == FORMAT:
        tracks = _from_recon(data, path)
    elif {"coords", "vis"} <= set(data):
        if grid is None:
            raise InputError("DELTA tracks need the frame grid (for its intrinsics) to be read", path)
        tracks = read_delta(data, grid, path, **delta_options)
    else:
        raise InputError(
            f"unrecognised tracks file (arrays: {', '.join(sorted(data)) or 'none'}); expected a recon-tracks .npz "
            "(format, points, visible, colors, seed_view) or DELTA output (coords, colors, vis)",
            path,
        )
    if grid is not None:
        if tracks.num_views != grid.num_views:
            raise InputError(f"tracks cover {tracks.num_views} views, the grid has {grid.num_views}", path, "points")
        if tracks.time_points is not None and tracks.time_points.shape[1] != grid.num_times:
            raise InputError(f"time_points cover {tracks.time_points.shape[1]} times, the grid has {grid.num_times}", path, "time_points")
    return tracks


class _NumpyOnlyUnpickler(pickle.Unpickler):
    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("builtins", "dict"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED or (module == "numpy" and name.endswith("Dtype")) or module == "numpy.dtypes":
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only numpy arrays are allowed)")


def _load(path: Path) -> dict[str, np.ndarray]:
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        if path.suffix in (".pkl", ".pickle"):
            obj = _NumpyOnlyUnpickler(io.BytesIO(path.read_bytes())).load()
            if not isinstance(obj, dict):
                raise InputError(f"expected a pickled dict of arrays, got {type(obj).__name__}", path)
            return {str(k): np.asarray(v) for k, v in obj.items()}
    except InputError:
        raise
    except (OSError, ValueError, EOFError, pickle.UnpicklingError, AttributeError, ImportError) as e:
        raise InputError(f"cannot read tracks file: {e}", path) from None
    raise InputError("unsupported tracks file; expected .npz (recon-tracks or DELTA) or .pkl (DELTA)", path)


def _array(data: dict, key: str, path: Path, ndim: int, dtype) -> np.ndarray:
    if key not in data:
        raise InputError("missing array", path, key)
    a = np.asarray(data[key])
    if a.ndim != ndim:
        raise InputError(f"expected {ndim} dimensions, got shape {list(a.shape)}", path, key)
    if dtype is bool:
        return a.astype(bool)
    if not np.isfinite(a.astype(np.float64)).all():
        raise InputError("contains NaN or inf", path, key)
    return a.astype(dtype)


def _from_recon(data: dict, path: Path) -> Tracks:
    version = int(data.get("version", -1))
    if version != VERSION:
        raise InputError(f"unsupported recon-tracks version {version} (this build reads {VERSION})", path, "version")
    points = _array(data, "points", path, 3, np.float32)
    P, V = points.shape[:2]
    shapes = {"visible": (P, V), "colors": (P, 3), "seed_view": (P,)}
    visible = _array(data, "visible", path, 2, bool)
    colors = _array(data, "colors", path, 2, np.float32)
    seed = _array(data, "seed_view", path, 1, np.int64)
    for k, a in (("visible", visible), ("colors", colors), ("seed_view", seed)):
        if a.shape != shapes[k]:
            raise InputError(f"expected shape {list(shapes[k])}, got {list(a.shape)}", path, k)
    if points.shape[2] != 3:
        raise InputError(f"expected points [P, V, 3], got {list(points.shape)}", path, "points")
    if ((seed < 0) | (seed >= V)).any():
        raise InputError(f"seed views must lie in [0, {V})", path, "seed_view")
    tp = tv = None
    if "time_points" in data:
        tp_np = _array(data, "time_points", path, 3, np.float32)
        if tp_np.shape[0] != P or tp_np.shape[2] != 3:
            raise InputError(f"expected [P={P}, T, 3], got {list(tp_np.shape)}", path, "time_points")
        tv_np = _array(data, "time_visible", path, 2, bool) if "time_visible" in data else np.ones(tp_np.shape[:2], bool)
        if tv_np.shape != tp_np.shape[:2]:
            raise InputError(f"expected {list(tp_np.shape[:2])}, got {list(tv_np.shape)}", path, "time_visible")
        tp, tv = torch.from_numpy(tp_np), torch.from_numpy(tv_np)
    return Tracks(torch.from_numpy(points), torch.from_numpy(visible), torch.from_numpy(colors), torch.from_numpy(seed), tp, tv)


def delta_default_intrinsics(height: int, width: int) -> np.ndarray:
    """The intrinsics DELTA's demo assumes when none are given: focal = W px, centre (W // 2, H // 2)."""
    return np.array([[width, 0.0, width // 2], [0.0, width, height // 2], [0.0, 0.0, 1.0]])


def read_delta(
    data: dict[str, np.ndarray],
    grid: FrameGrid,
    path: Path,
    delta_intrinsics: str = "default",
    query_frame: int = 0,
) -> Tracks:
    """Tracks from DELTA's ``trajs_3d_dict`` arrays (see module docstring).

    ``delta_intrinsics``: ``"default"`` (DELTA's own guess, re-lifted with the grid's ``K``) or
    ``"grid"`` (DELTA was given the grid's intrinsics: coordinates are used as they are).
    ``query_frame``: the frame DELTA seeded its dense grid in (``grid_query_frame``)."""
    V, r = grid.num_views, grid.ref_time
    H, W = grid.height, grid.width
    coords = _array(data, "coords", path, 3, np.float64)
    vis = _array(data, "vis", path, 2, bool)
    if coords.shape[0] != V or coords.shape[2] != 3:
        raise InputError(f"expected coords [V={V}, N, 3] (one frame per view of the freeze-time video), got {list(coords.shape)}", path, "coords")
    N = coords.shape[1]
    if vis.shape != (V, N):
        raise InputError(f"expected vis [{V}, {N}], got {list(vis.shape)}", path, "vis")
    if not 0 <= query_frame < V:
        raise InputError(f"query_frame {query_frame} outside [0, {V})", path, "query_frame")
    if delta_intrinsics not in ("default", "grid"):
        raise InputError(f"unknown delta_intrinsics {delta_intrinsics!r}; expected 'default' or 'grid'", path, "delta_intrinsics")
    pts = coords.transpose(1, 0, 2).copy()  # [N, V, 3]
    if delta_intrinsics == "default":
        Kd = delta_default_intrinsics(H, W)
        for v in range(V):
            z = pts[:, v, 2]
            with np.errstate(divide="ignore", invalid="ignore"):
                uv = (pts[:, v] @ Kd.T)[:, :2] / z[:, None] + 0.5
            Kv = grid.cameras.K[v, r]
            y = (uv[:, 1] - Kv[1, 2]) / Kv[1, 1]
            x = (uv[:, 0] - Kv[0, 2] - Kv[0, 1] * y) / Kv[0, 0]
            pts[:, v] = np.stack([x * z, y * z, z], 1)
    visible = vis.T & (pts[..., 2] > 0) & np.isfinite(pts).all(2)
    visible[:, query_frame] &= pts[:, query_frame, 2] > 0
    keep = visible[:, query_frame]
    if not keep.any():
        raise InputError(f"no DELTA track has positive depth in its query frame {query_frame}", path, "coords")
    pts, visible = pts[keep], visible[keep]
    pts[~np.isfinite(pts)] = 0.0
    if "colors" in data:
        colors = np.asarray(data["colors"], np.float64).reshape(-1, 3)
        if colors.shape[0] != N:
            raise InputError(f"expected colors [{N}, 3], got {list(np.asarray(data['colors']).shape)}", path, "colors")
        colors = colors[keep]
        if colors.max(initial=0.0) > 1.0:
            colors = colors / 255.0
    else:
        colors = np.full((len(pts), 3), 0.5)
    return Tracks(
        points=torch.from_numpy(pts).float(),
        visible=torch.from_numpy(visible),
        colors=torch.from_numpy(np.clip(colors, 0, 1)).float(),
        seed_view=torch.full((len(pts),), query_frame, dtype=torch.long),
    )
