"""nerfstudio ``transforms.json`` and D-NeRF ``transforms_{train,val,test}.json`` with a time per frame.

Accepted json (one file; a folder is resolved to ``transforms.json``, else ``transforms_<split>.json``)::

    {  # intrinsics, top level or per frame (a frame's own value wins):
       "fl_x", "fl_y", "cx", "cy" (pixels), "w", "h"      nerfstudio; fl_y defaults to fl_x,
                                                          cx, cy to the image centre, w, h to the image
       "camera_angle_x" (radians, horizontal field of view)  D-NeRF / Blender: fx = fy = w / (2 tan(a/2))
       "camera_model": PINHOLE / OPENCV / SIMPLE_PINHOLE (fisheye models are refused);
                       distortion (k1, k2, p1, p2, ...) is not undone: non-zero values are noted in meta
       "frames": [ { "file_path": image path relative to the json (".png" is tried when it has no suffix),
                     "transform_matrix": 4x4 camera-to-world, OpenGL / Blender (x right, y up, z back),
                     "time": float (seconds or normalised [0, 1]),
                     optional "camera_id" | "camera_idx" | "cam_id" | "view_id" | "camera": view key,
                     optional "mask_path": foreground mask } ] }

Poses are converted to recon's OpenCV world-to-camera: ``w2c = inv(c2w_gl @ diag(1, -1, -1, 1))``.

Grouping into a V x T grid (``meta["grouping"]`` records which rule applied):

1. ``view_key``: every frame has a view key: views = distinct keys (sorted), times = distinct times
   (sorted, equal within 1e-6); every (view, time) cell needs exactly one frame.
2. ``monocular``: no view key and every time distinct (D-NeRF, a moving phone): V = 1 and T = the
   frames sorted by time. FrameGrid cameras are per cell ``[V, T]``, so the moving camera is exact.
3. ``pose``: times repeat and frames sharing a pose (same transform_matrix and intrinsics, to 1e-6)
   form a complete grid: views = distinct poses (in order of first appearance).
4. otherwise an InputError asks for a view key.

``meta["frame_index"][v][t]`` is the index of each cell's frame in the json's ``frames`` list.
Without any ``time`` field the frames are one time step of a static scene (V = frames, T = 1).
``meta["time_unit"]`` is "normalised" when every time lies in [0, 1], else "s".
RGBA images (D-NeRF) are composited on white and their alpha becomes the masks; ``mask_path``
images, when every frame has one, take precedence. :attr:`LoadOptions.views` holds view indices
after grouping; :attr:`LoadOptions.split` picks ``transforms_<split>.json`` for folders.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from recon import schema as S
from recon.errors import InputError
from recon.grid import Cameras, FrameGrid, focal_from_fov
from recon.io import LoadOptions, central_camera, parse_frames, read_image_grid, scale_intrinsics, scaled_size

VIEW_KEYS = ("camera_id", "camera_idx", "cam_id", "view_id", "camera")
GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])
"""Flips camera y and z: OpenGL / Blender camera axes (y up, z back) -> OpenCV (y down, z forward)."""
_TIME_TOL = 1e-6
_FISHEYE = ("OPENCV_FISHEYE", "FISHEYE", "EQUIRECTANGULAR", "THIN_PRISM_FISHEYE")
_DISTORTION = ("k1", "k2", "k3", "k4", "p1", "p2")


def resolve_transforms(path: str | os.PathLike, split: str = "train") -> Path:
    """The transforms json for ``path`` (a json file, or a folder holding one; see the module docstring)."""
    p = Path(path)
    if p.is_file():
        return p
    if not p.exists():
        raise InputError("path does not exist", p)
    for name in ("transforms.json", f"transforms_{split}.json"):
        if (p / name).is_file():
            return p / name
    have = sorted(f.name for f in p.glob("transforms*.json"))
    raise InputError(f"no transforms.json or transforms_{split}.json (found: {have or 'none'})", p, "--split")


def _number(d: dict, key: str, src: Path, where: str, positive: bool = False) -> float:
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or (positive and v <= 0):
        raise InputError(f"expected a {'positive ' if positive else ''}finite number, got {v!r}", src, f"{where}{key}")
    return float(v)


def _read_on_white(path: Path) -> np.ndarray:
    """``uint8 [H, W, 4]``: RGB composited on white by its alpha, and the alpha (255 where the file
    has none). Compositing before any resize keeps edges free of the hidden colour; errors name the file."""
    from recon.io.images import read_pixels

    a = read_pixels(path, "RGBA")
    out = np.array(a, dtype=np.uint8)
    if (a[..., 3] < 255).any():
        alpha = a[..., 3:].astype(np.float32) / 255.0
        out[..., :3] = np.round(a[..., :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    return out


class _Frame:
    def __init__(self, i: int, f: Any, head: dict, src: Path) -> None:
        where = f"frames[{i}]."
        if not isinstance(f, dict):
            raise InputError("expected an object", src, f"frames[{i}]")
        self.index = i
        if "file_path" not in f:
            raise InputError("missing field", src, f"{where}file_path")
        self.image = self._resolve(src.parent / S.PathStr().check(f["file_path"], src, f"{where}file_path"))
        mask = S.Optional(S.PathStr()).check(f.get("mask_path"), src, f"{where}mask_path")
        self.mask = None if mask is None else src.parent / mask
        if "transform_matrix" not in f:
            raise InputError("missing field", src, f"{where}transform_matrix")
        try:
            c2w = np.asarray(f["transform_matrix"], dtype=np.float64)
        except (TypeError, ValueError):
            c2w = np.zeros(0)
        if c2w.shape == (3, 4):
            c2w = np.vstack([c2w, [0, 0, 0, 1]])
        if c2w.shape != (4, 4):
            raise InputError(f"expected a 4x4 matrix of numbers, got {json.dumps(f['transform_matrix'])[:80]}", src, f"{where}transform_matrix")
        if not np.isfinite(c2w).all():
            raise InputError("contains NaN or inf", src, f"{where}transform_matrix")
        S.check_poses(c2w, src, f"{where}transform_matrix")
        self.c2w_gl = c2w
        self.time: float | None = None
        if "time" in f:
            self.time = _number(f, "time", src, where)
        self.view = next((f[k] for k in VIEW_KEYS if k in f), None)
        if self.view is not None and not isinstance(self.view, (int, str)):
            raise InputError(f"expected an integer or string view key, got {self.view!r}", src, f"{where}camera_id")
        # intrinsics: a frame's own value wins over the top level
        self.intr = {k: (f[k] if k in f else head[k]) for k in
                     ("fl_x", "fl_y", "cx", "cy", "w", "h", "camera_angle_x", "camera_angle_y", "camera_model", *_DISTORTION)
                     if k in f or k in head}
        self.intr_where = {k: (where if k in f else "") for k in self.intr}
        model = str(self.intr.get("camera_model", "PINHOLE")).upper()
        if model in _FISHEYE:
            raise InputError(f"camera model {model} is not supported (pinhole only)", src, f"{self.intr_where['camera_model']}camera_model")
        if "fl_x" not in self.intr and "camera_angle_x" not in self.intr:
            raise InputError("missing intrinsics: need fl_x (nerfstudio) or camera_angle_x (D-NeRF)", src, f"{where}fl_x")
        for k in ("fl_x", "fl_y", "w", "h", "camera_angle_x", "camera_angle_y"):
            if k in self.intr:
                _number(self.intr, k, src, self.intr_where[k], positive=True)
        for k in ("cx", "cy", *_DISTORTION):
            if k in self.intr:
                _number(self.intr, k, src, self.intr_where[k])
        for k in ("camera_angle_x", "camera_angle_y"):
            if k in self.intr and not self.intr[k] < math.pi:
                raise InputError(f"field of view {self.intr[k]} must be below pi (radians)", src, f"{self.intr_where[k]}{k}")

    @staticmethod
    def _resolve(p: Path) -> Path:
        if p.suffix == "" and not p.is_file() and p.with_suffix(".png").is_file():
            return p.with_suffix(".png")
        return p

    def K(self, w: int, h: int) -> np.ndarray:
        """Intrinsics ``[3, 3]`` for an image of ``w x h`` pixels (the size found on disk)."""
        d = self.intr
        if "fl_x" in d:
            fx = float(d["fl_x"])
            fy = float(d.get("fl_y", fx))
        else:
            fx = focal_from_fov(w, d["camera_angle_x"])
            fy = focal_from_fov(h, d["camera_angle_y"]) if "camera_angle_y" in d else fx
        return np.array([[fx, 0.0, float(d.get("cx", w / 2))], [0.0, fy, float(d.get("cy", h / 2))], [0.0, 0.0, 1.0]])

    def pose_key(self) -> np.ndarray:
        return np.concatenate([self.c2w_gl[:3].ravel(), [float(self.intr.get(k, 0)) for k in ("fl_x", "fl_y", "cx", "cy", "camera_angle_x")]])


def _cluster_times(times: list[float]) -> tuple[np.ndarray, list[int]]:
    """Distinct times (ascending; values within 1e-6 of the range merged) and each input's index."""
    order = np.argsort(times, kind="stable")
    span = max(1.0, max(times) - min(times))
    uniq: list[float] = []
    idx = [0] * len(times)
    for o in order:
        if not uniq or times[o] - uniq[-1] > _TIME_TOL * span:
            uniq.append(times[o])
        idx[o] = len(uniq) - 1
    return np.asarray(uniq), idx


def _group(frames: list[_Frame], src: Path) -> tuple[list[list[_Frame]], list[str], np.ndarray, str]:
    """-> (cells[v][t], view names, times [T], grouping rule)."""
    timed = [f.time is not None for f in frames]
    if any(timed) and not all(timed):
        i = timed.index(False)
        raise InputError("missing field (other frames have a time; all or none must)", src, f"frames[{i}].time")
    if not any(timed):  # a static capture: every frame is a view at one time
        return [[f] for f in frames], [f.image.stem for f in frames], np.zeros(1), "static"
    times, tidx = _cluster_times([f.time for f in frames])
    T = len(times)
    keyed = [f.view is not None for f in frames]
    if all(keyed):
        keys = sorted({f.view for f in frames}, key=lambda k: (isinstance(k, str), k))
        vidx = [keys.index(f.view) for f in frames]
        rule = "view_key"
    elif any(keyed):
        i = keyed.index(False)
        raise InputError(f"missing view key (other frames have one of {', '.join(VIEW_KEYS)})", src, f"frames[{i}].camera_id")
    elif T == len(frames):
        order = sorted(range(len(frames)), key=lambda i: tidx[i])
        return [[frames[i] for i in order]], ["camera"], times, "monocular"
    else:
        poses = np.stack([f.pose_key() for f in frames])
        scale = max(1.0, float(np.abs(poses).max()))
        keys, vidx = [], []
        for p in poses:
            for k, q in enumerate(keys):
                if np.abs(p - q).max() <= 1e-6 * scale:
                    vidx.append(k)
                    break
            else:
                keys.append(p)
                vidx.append(len(keys) - 1)
        if len(keys) * T != len(frames) or len(set(zip(vidx, tidx))) != len(frames):
            raise InputError(
                f"{len(frames)} frames at {T} distinct times with no view key, and their poses do not form a "
                f"views x times grid; add a camera_id to each frame", src, "frames")
        keys = list(range(len(keys)))
        rule = "pose"
    V = len(keys)
    cells: list[list[_Frame | None]] = [[None] * T for _ in range(V)]
    for f, v, t in zip(frames, vidx, tidx):
        if cells[v][t] is not None:
            raise InputError(f"two frames for view {keys[v]!r} at time {times[t]:g} (frames[{cells[v][t].index}] and this)", src, f"frames[{f.index}]")
        cells[v][t] = f
    for v in range(V):
        for t in range(T):
            if cells[v][t] is None:
                raise InputError(f"no frame for view {keys[v]!r} at time {times[t]:g} (the grid needs every view at every time)", src, "frames")
    names = [str(k) if rule == "view_key" else f"view_{k:02d}" for k in keys]
    return cells, names, times, rule  # type: ignore[return-value]


def read_transforms(path: str | os.PathLike, options: LoadOptions | None = None) -> FrameGrid:
    """Read a nerfstudio / D-NeRF transforms json into a FrameGrid (see the module docstring).

    ``path`` is the json or its folder. Only selected frames are decoded. Raises
    :class:`InputError` naming the json and field (``frames[i].transform_matrix`` ...) or the image.
    """
    options = (options or LoadOptions()).check()
    src = resolve_transforms(path, options.split or "train")
    head = S.read_json(src, what="transforms json")
    if not isinstance(head, dict):
        raise InputError("expected a JSON object with a frames list", src)
    if "frames" not in head:
        raise InputError("missing field", src, "frames")
    if not isinstance(head["frames"], list) or not head["frames"]:
        raise InputError("expected a non-empty list", src, "frames")
    frames = [_Frame(i, f, head, src) for i, f in enumerate(head["frames"])]
    cells, names, times, rule = _group(frames, src)

    views = list(range(len(cells))) if options.views is None else list(options.views)
    bad = [v for v in views if not 0 <= v < len(cells)]
    if bad:
        raise InputError(f"view indices {bad} outside [0, {len(cells)})", src, "--views")
    tsel = parse_frames(options.frames, len(times))
    sel = [[cells[v][t] for t in tsel] for v in views]

    first = sel[0][0]
    H, W = _read_on_white(first.image).shape[:2]
    for row in sel:
        for f in row:
            if "w" in f.intr and "h" in f.intr and (int(f.intr["w"]), int(f.intr["h"])) != (W, H):
                raise InputError(f"says {f.intr['w']}x{f.intr['h']}, but image {first.image} is {W}x{H} "
                                 "(all frames must have one size)", src, f"{f.intr_where['w'] or f.intr_where['h']}w/h")
    rgba = read_image_grid([[f.image for f in row] for row in sel], options.scale, (H, W), f"size of {first.image.name}",
                           reader=_read_on_white)
    img = np.ascontiguousarray(rgba[..., :3])
    masks = None
    background = "none (opaque images)"
    if (rgba[..., 3] < 255).any():
        masks = rgba[..., 3] > 127
        background = "white (RGBA composited; masks from alpha)"
    if all(f.mask is not None for row in sel for f in row):
        masks = read_image_grid([[f.mask for f in row] for row in sel], options.scale, (H, W), f"size of {first.image.name}", masks=True)

    h, w = scaled_size(H, W, options.scale)
    K = np.stack([np.stack([f.K(W, H) for f in row]) for row in sel])
    K = scale_intrinsics(K, w / W, h / H)
    w2c = np.linalg.inv(np.stack([np.stack([f.c2w_gl @ GL_TO_CV for f in row]) for row in sel]))
    distorted = sorted({k for row in sel for f in row for k in _DISTORTION if float(f.intr.get(k, 0) or 0) != 0})
    normalised = float(times.min()) >= 0 and float(times.max()) <= 1
    meta: dict[str, Any] = {
        "source": str(src),
        "kind": "dnerf" if "camera_angle_x" in first.intr and "fl_x" not in first.intr else "nerfstudio",
        "grouping": rule,
        "time_unit": "normalised" if normalised else "s",
        "frame_files": [[str(f.image.relative_to(src.parent)) if f.image.is_relative_to(src.parent) else str(f.image) for f in row] for row in sel],
        "frame_index": [[f.index for f in row] for row in sel],
        "camera_model": sorted({str(f.intr.get("camera_model", "PINHOLE")).upper() for row in sel for f in row}),
        "image_size": [W, H],
        "background": background,
        "scale": options.scale,
    }
    if distorted:
        meta["distortion_ignored"] = distorted
    return FrameGrid(
        images=img,
        cameras=Cameras(K=K, w2c=w2c),
        times=times[tsel],
        masks=masks,
        ref_time=0,
        central_view=central_camera(w2c[:, 0]),
        view_names=[names[v] for v in views],
        meta=meta,
        source=str(src),
    )
