"""Depth per frame behind one interface: :func:`estimate_depth` with providers ``gt``, ``mvs``, ``file``.

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
from pathlib import Path

import numpy as np
import torch

from recon import schema as S
from recon.errors import InputError
from recon.grid import FrameGrid

PROVIDERS = ("auto", "gt", "mvs", "file")
FILE_KINDS = ("metric", "relative", "disparity")
PNG_DEPTH_SCALE = 1000.0
"""Default 16-bit PNG depth scale: stored value = depth * 1000 (millimetres for metre scenes)."""

Cell = tuple[int, int]


def resolve_depth_provider(grid: FrameGrid, provider: str) -> str:
    """``auto`` -> ``gt`` when the grid carries synthetic depth (``extras["depth"]``), else ``mvs``."""
    if provider not in PROVIDERS:
        raise InputError(f"unknown depth provider {provider!r}; expected one of {', '.join(PROVIDERS)}", field="depth")
    if provider == "auto":
        return "gt" if "depth" in grid.extras else "mvs"
    return provider


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
        provider: ``auto`` | ``gt`` | ``mvs`` | ``file`` (see module docstring).
        device: torch device for the computation (MVS); the result lives there.
        path: depth file or folder (``file`` provider only).
        kind: ``metric`` | ``relative`` | ``disparity`` for ``file`` (default: ``depth.json`` or metric).
        w2c: optional ``[V, T, 4, 4]`` or ``[V, 4, 4]`` world-to-camera poses to use instead of the
            grid's (e.g. from :func:`recon.tracking.cameras.estimate_cameras`); MVS needs poses.
        mvs_range: how MVS bounds its sweep: ``auto`` (flow triangulation, rig fallback) or ``rig``
            (rig geometry only; calibrated wide-baseline rigs), see :mod:`recon.tracking.mvs`.

    Returns:
        float32 ``[len(cells), H, W]`` on ``device``, 0 where depth is unknown.
    """
    cells = _check_cells(grid, cells)
    provider = resolve_depth_provider(grid, provider)
    if provider == "gt":
        return gt_depth(grid, cells).to(device)
    if provider == "mvs":
        from recon.tracking.mvs import mvs_depth

        return mvs_depth(grid, cells, device=device, w2c=w2c, depth_range=mvs_range)
    if path is None:
        raise InputError("the 'file' depth provider needs a depth path", field="depth_path")
    depth, file_kind = read_depth_file(grid, cells, path)
    kind = kind or file_kind or "metric"
    if kind not in FILE_KINDS:
        raise InputError(f"unknown depth kind {kind!r}; expected one of {', '.join(FILE_KINDS)}", path, "kind")
    depth = torch.from_numpy(depth)
    if kind != "metric":
        from recon.tracking.mvs import mvs_depth

        anchor = mvs_depth(grid, cells, device=torch.device("cpu"), w2c=w2c, depth_range=mvs_range)
        depth = torch.stack([align_scale_shift(depth[i], anchor[i], kind, source=f"{path} cell {c}") for i, c in enumerate(cells)])
    return depth.to(device)


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
