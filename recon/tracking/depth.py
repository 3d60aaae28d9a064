"""Depth per frame behind one interface: :func:`estimate_depth` with the providers of
:data:`DEPTH_PROVIDERS` (``gt``, ``mvs``, ``file``, and ``mono-sim``: ground truth degraded like
a monocular estimator, :mod:`recon.tracking.monosim`).

All providers return z-depth (distance along the camera's +z axis, OpenCV) in the grid's camera
units, float32 ``[N, H, W]`` for N requested cells ``(view, time)``, with 0 where depth is unknown.

``file`` format (depth maps computed elsewhere, e.g. by a monocular depth model):

* one ``.npy`` array, or ``.npz`` with key ``depth``: ``[V, T, H, W]`` (every cell) or
  ``[V, H, W]`` (the freeze-time frames only, i.e. time ``grid.ref_time``);
* or a folder with one file per cell: ``view_XX/depth_YYYY.npy`` (float, any dtype) or
  ``view_XX/depth_YYYY.png`` (16-bit grey PNG, depth = value / ``png_scale``; the scale is read
  from ``depth.json`` ``{"png_scale": ...}`` in the folder, default :data:`PNG_DEPTH_SCALE`,
  i.e. millimetres when the scene unit is metres); 0 means unknown.
* ``kind`` (argument, or ``depth.json`` ``{"kind": ...}``): ``metric`` (used as is),
  ``relative`` (affine-invariant depth: ``z = a * d + b``) or ``disparity`` (affine-invariant
  inverse depth: ``1 / z = a * d + b``). Relative kinds are aligned per frame to sparse,
  confident MVS depth by robust least squares (:func:`align_scale_shift`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from recon import schema as S
from recon.errors import InputError
from recon.grid import FrameGrid

FILE_KINDS = ("metric", "relative", "disparity")
PNG_DEPTH_SCALE = 1000.0
"""Default 16-bit PNG depth scale: stored value = depth * 1000 (millimetres for metre scenes)."""

Cell = tuple[int, int]


@dataclass(frozen=True)
class DepthRequest:
    """What a provider is asked for besides the grid and the cells (see :func:`estimate_depth`)."""

    device: torch.device
    path: str | os.PathLike | None = None
    kind: str | None = None
    w2c: np.ndarray | None = None
    mvs_range: str = "auto"


@dataclass(frozen=True)
class DepthProvider:
    """A row of :data:`DEPTH_PROVIDERS`."""

    compute: Callable[[FrameGrid, list[Cell], DepthRequest], torch.Tensor]
    """``(grid, cells, request) -> float32 [len(cells), H, W]`` z-depth (0: unknown), any device."""
    auto: Callable[[FrameGrid], bool] | None = None
    """Whether ``auto`` may pick this provider for a grid (tried in table order); None: never."""
    needs_poses: bool = False
    """Needs camera poses: for a grid without them, :func:`estimate_depth` estimates them first
    (:func:`recon.tracking.cameras.estimate_cameras`) unless the caller passes ``w2c``."""


def _mvs(grid: FrameGrid, cells: list[Cell], req: DepthRequest) -> torch.Tensor:
    from recon.tracking.mvs import mvs_depth

    return mvs_depth(grid, cells, device=req.device, w2c=req.w2c, depth_range=req.mvs_range)


def _file(grid: FrameGrid, cells: list[Cell], req: DepthRequest) -> torch.Tensor:
    if req.path is None:
        raise InputError("the 'file' depth provider needs a depth path", field="depth_path")
    depth, file_kind = read_depth_file(grid, cells, req.path)
    kind = req.kind or file_kind or "metric"
    if kind not in FILE_KINDS:
        raise InputError(f"unknown depth kind {kind!r}; expected one of {', '.join(FILE_KINDS)}", req.path, "kind")
    depth = torch.from_numpy(depth)
    if kind != "metric":
        from recon.tracking.mvs import mvs_depth

        w2c = req.w2c if req.w2c is not None or grid.cameras.w2c is not None else _estimated_poses(grid)
        anchor = mvs_depth(grid, cells, device=torch.device("cpu"), w2c=w2c, depth_range=req.mvs_range)
        depth = torch.stack([align_scale_shift(depth[i], anchor[i], kind, source=f"{req.path} cell {c}")
                             for i, c in enumerate(cells)])
    return depth


DEPTH_PROVIDERS: dict[str, DepthProvider] = {
    "gt": DepthProvider(lambda grid, cells, req: gt_depth(grid, cells), auto=lambda grid: "depth" in grid.extras),
    "mvs": DepthProvider(_mvs, auto=lambda grid: True, needs_poses=True),
    "file": DepthProvider(_file),
    "mono-sim": DepthProvider(lambda grid, cells, req: _mono_sim(grid, cells)),
}
"""Depth providers by name (module docstring). ``auto`` picks the first row whose ``auto`` accepts
the grid: ``gt`` when the grid carries synthetic depth, else ``mvs``. A new provider is one
function plus one row here (or :func:`register_depth_provider`)."""


def _mono_sim(grid: FrameGrid, cells: list[Cell]) -> torch.Tensor:
    from recon.tracking.monosim import mono_sim_depth

    return mono_sim_depth(grid, cells)


def provider_names() -> tuple[str, ...]:
    """The values the ``tracking.depth`` config field accepts: ``auto`` and the table's names."""
    return ("auto", *DEPTH_PROVIDERS)


def register_depth_provider(name: str, provider: DepthProvider) -> None:
    """Add (or replace) a row of :data:`DEPTH_PROVIDERS`."""
    if not name or name == "auto":
        raise ValueError(f"a depth provider cannot be called {name!r}")
    DEPTH_PROVIDERS[name] = provider


def resolve_depth_provider(grid: FrameGrid, provider: str) -> str:
    """A provider name, with ``auto`` resolved for ``grid`` (see :data:`DEPTH_PROVIDERS`)."""
    if provider not in provider_names():
        raise InputError(f"unknown depth provider {provider!r}; expected one of {', '.join(provider_names())}", field="depth")
    if provider == "auto":
        return next(name for name, p in DEPTH_PROVIDERS.items() if p.auto is not None and p.auto(grid))
    return provider


def _estimated_poses(grid: FrameGrid) -> np.ndarray:
    from recon.tracking.cameras import estimate_cameras

    return estimate_cameras(grid).w2c


def _check_cells(grid: FrameGrid, cells: list[Cell]) -> list[Cell]:
    V, T = grid.num_views, grid.num_times
    out = []
    for c in cells:
        v, t = int(c[0]), int(c[1])
        if not (0 <= v < V and 0 <= t < T):
            raise InputError(f"cell (view {v}, time {t}) is outside the grid (V={V}, T={T})", grid.source, "cells")
        out.append((v, t))
    return out


def estimate_depth(
    grid: FrameGrid,
    cells: list[Cell],
    provider: str = "auto",
    device: torch.device = torch.device("cpu"),
    path: str | os.PathLike | None = None,
    kind: str | None = None,
    w2c: np.ndarray | None = None,
    mvs_range: str = "auto",
) -> torch.Tensor:
    """Z-depth of the given grid cells.

    Args:
        grid: the frame grid.
        cells: list of ``(view, time)`` index pairs.
        provider: ``auto`` or a name of :data:`DEPTH_PROVIDERS` (see module docstring).
        device: torch device for the computation (MVS); the result lives there.
        path: depth file or folder (``file`` provider only).
        kind: ``metric`` | ``relative`` | ``disparity`` for ``file`` (default: ``depth.json`` or metric).
        w2c: optional ``[V, T, 4, 4]`` or ``[V, 4, 4]`` world-to-camera poses to use instead of the
            grid's; a provider that needs poses gets estimated ones on a grid without cameras.
        mvs_range: how MVS bounds its sweep: ``auto`` (flow triangulation, rig fallback) or ``rig``
            (rig geometry only; calibrated wide-baseline rigs), see :mod:`recon.tracking.mvs`.

    Returns:
        float32 ``[len(cells), H, W]`` on ``device``, 0 where depth is unknown.
    """
    cells = _check_cells(grid, cells)
    name = resolve_depth_provider(grid, provider)
    row = DEPTH_PROVIDERS[name]
    if row.needs_poses and w2c is None and grid.cameras.w2c is None:
        w2c = _estimated_poses(grid)
    req = DepthRequest(device=device, path=path, kind=kind, w2c=w2c, mvs_range=mvs_range)
    return row.compute(grid, cells, req).to(device)


def gt_depth(grid: FrameGrid, cells: list[Cell]) -> torch.Tensor:
    """Synthetic ground-truth depth ``extras["depth"]`` for ``cells``: float32 ``[N, H, W]``."""
    if "depth" not in grid.extras:
        raise InputError("no ground-truth depth in this grid (extras['depth']); use --depth mvs or file", grid.source, "extras.depth")
    d = np.asarray(grid.extras["depth"])
    if d.shape != grid.shape:
        raise InputError(f"expected depth {list(grid.shape)}, got {list(d.shape)}", grid.source, "extras.depth")
    out = np.stack([d[v, t] for v, t in cells]).astype(np.float32)
    out[~np.isfinite(out) | (out < 0)] = 0.0
    return torch.from_numpy(out)


# --- depth files ---------------------------------------------------------------------------------
def _load_array(path: Path) -> np.ndarray:
    try:
        if path.suffix == ".npz":
            with np.load(path) as z:
                if "depth" not in z.files:
                    raise InputError(f"no array named 'depth' (found {', '.join(z.files) or 'none'})", path, "depth")
                return np.asarray(z["depth"])
        if path.suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if path.suffix == ".png":
            import cv2

            a = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            if a is None:
                raise InputError("cannot decode PNG depth", path)
            if a.ndim != 2 or a.dtype != np.uint16:
                raise InputError(f"expected a 16-bit single-channel PNG, got {a.dtype} with shape {list(a.shape)}", path)
            return a
    except InputError:
        raise
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read depth file: {e}", path) from None
    raise InputError("unsupported depth file; expected .npy, .npz or a folder of .npy / 16-bit .png", path)


DEPTH_JSON = S.Obj({"png_scale": S.Optional(S.Num(gt=0.0)), "kind": S.Optional(S.Str(FILE_KINDS))})
"""``depth.json`` next to a folder of depth maps (both fields optional)."""


def read_depth_file(grid: FrameGrid, cells: list[Cell], path: str | os.PathLike) -> tuple[np.ndarray, str | None]:
    """Read depth for ``cells`` from ``path`` (format in the module docstring).

    Returns ``(depth float32 [N, H, W] with 0 = unknown, kind or None)``. Every size mismatch is an
    :class:`InputError` naming the file.
    """
    path = Path(path)
    V, T, H, W = grid.shape
    if not path.exists():
        raise InputError("depth file or folder does not exist", path)
    kind = None
    if path.is_dir():
        cfg = path / "depth.json"
        scale = PNG_DEPTH_SCALE
        if cfg.is_file():
            info = S.read_json(cfg, DEPTH_JSON, "depth.json")
            scale = info["png_scale"] if info["png_scale"] is not None else scale
            kind = info.get("kind")
        out = []
        for v, t in cells:
            base = path / f"view_{v:02d}" / f"depth_{t:04d}"
            f = next((base.with_suffix(s) for s in (".npy", ".png") if base.with_suffix(s).is_file()), None)
            if f is None:
                raise InputError(f"missing depth for view {v}, time {t} (expected {base.name}.npy or .png)", base.parent)
            a = _load_array(f)
            a = a.astype(np.float64) / scale if f.suffix == ".png" else a
            if a.shape != (H, W):
                raise InputError(f"depth map has size {list(a.shape)}, the grid's frames are [{H}, {W}]", f)
            out.append(a)
        arr = np.stack(out)
    else:
        a = _load_array(path)
        if a.shape == (V, T, H, W):
            arr = np.stack([a[v, t] for v, t in cells])
        elif a.shape == (V, H, W):
            bad = [c for c in cells if c[1] != grid.ref_time]
            if bad:
                raise InputError(f"file holds freeze-time depth [V, H, W] only (time {grid.ref_time}), but cell {bad[0]} was asked for", path)
            arr = np.stack([a[v] for v, _ in cells])
        else:
            raise InputError(f"depth array has shape {list(a.shape)}; expected [V={V}, T={T}, H={H}, W={W}] or [V={V}, H={H}, W={W}]", path)
    arr = np.asarray(arr, dtype=np.float32)
    arr[~np.isfinite(arr)] = 0.0
    return arr, kind


def align_scale_shift(
    depth: torch.Tensor, anchor: torch.Tensor, kind: str = "relative", iters: int = 8, source: str = "depth"
) -> torch.Tensor:
    """Align a relative depth (or disparity) map to sparse metric ``anchor`` depth.

    ``depth, anchor``: ``[H, W]``; ``anchor`` is 0 where unknown. ``kind="relative"`` fits
    ``z = a * depth + b``; ``"disparity"`` fits ``1 / z = a * depth + b``. Robust: iteratively
    re-weighted least squares with Huber weights (scale 1.4826 x MAD). Returns metric z-depth
    ``[H, W]`` float32 with 0 where the input was 0 or the result is not positive.
    """
    d = depth.double().flatten()
    z = anchor.double().flatten()
    ok = (z > 0) & torch.isfinite(d) & (d != 0)
    if int(ok.sum()) < 10:
        raise InputError(f"only {int(ok.sum())} pixels with confident MVS depth; cannot align relative depth", source)
    x = d[ok]
    y = 1.0 / z[ok] if kind == "disparity" else z[ok]
    A = torch.stack([x, torch.ones_like(x)], 1)
    w = torch.ones_like(x)
    for _ in range(iters):
        sw = w.sqrt()[:, None]
        coef = torch.linalg.lstsq(A * sw, (y * sw[:, 0])[:, None]).solution[:, 0]
        r = y - A @ coef
        s = 1.4826 * r.abs().median().clamp_min(1e-12)
        w = torch.where(r.abs() <= 1.345 * s, torch.ones_like(r), 1.345 * s / r.abs())
    pred = coef[0] * d + coef[1]
    if kind == "disparity":
        pred = torch.where(pred > 0, 1.0 / pred.clamp_min(1e-12), torch.zeros_like(pred))
    pred = torch.where((d != 0) & (pred > 0), pred, torch.zeros_like(pred))
    return pred.reshape(depth.shape).float()
