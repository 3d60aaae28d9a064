"""Camera paths around a fitted scene, for videos (``recon render --path``) and the viewer.

All poses are ``w2c [4, 4]`` from the scene's canonical frame to the camera (OpenCV: x right,
y down, z forward), like :attr:`recon.model.scene.DeformableScene.poses`. A path is a list of
:class:`PathFrame` (pose, intrinsics, time value); its geometry comes from the grid's cameras:

* the *centre* every camera looks at: the least-squares point nearest to all optical axes (the
  cameras of a rig or an orbit converge on the subject); the splats' median when the axes are
  near-parallel;
* the *up* direction: the mean of the cameras' up axes (-y in OpenCV);
* azimuths of the cameras around the up axis through the centre.

Paths (``PATHS``):

* ``orbit``: a full turn around the centre at a fixed time, at the cameras' mean distance and
  elevation, starting at the central camera;
* ``bullet-time``: time frozen, the camera sweeps across the grid's cameras (from the first to
  the last azimuth and back) -- the 4Real-Video freeze-time demo;
* ``spiral``: time plays from the first to the last frame while the camera circles the central
  camera's position (radius a tenth of its distance to the centre), looking at the centre;
* ``grid-views``: time plays while the camera moves through the grid's cameras in azimuth order.

:func:`render_path` renders a path with a fitted scene (``recon render --path``, the bench's
novel-view frames).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from recon.model.scene import DeformableScene

PATHS = ("orbit", "bullet-time", "spiral", "grid-views")
RENDER_BYTES_PER_PIXEL = 64
"""Memory one rendered pixel takes at most (colour, alpha, depth and the kernel's per-pixel state)."""


@dataclass
class PathFrame:
    w2c: np.ndarray  # [4, 4] canonical -> camera, OpenCV
    K: np.ndarray  # [3, 3] pixels for the path's image size
    time: float  # continuous time value (the grid's unit)


@dataclass
class Rig:
    """What the paths are built from: camera-to-canonical ``c2w [M, 4, 4]`` of the distinct grid
    cameras, the central one's index, ``centre [3]``, unit ``up [3]``."""

    c2w: np.ndarray
    central: int
    centre: np.ndarray
    up: np.ndarray


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray) -> np.ndarray:
    """``w2c [4, 4]`` (OpenCV) of a camera at ``eye`` looking at ``target`` with ``up`` roughly up."""
    z = target - eye
    z = z / max(np.linalg.norm(z), 1e-12)
    x = np.cross(z, up)  # right-handed with y = z x x pointing down (away from up)
    if np.linalg.norm(x) < 1e-9:  # looking straight along up: any perpendicular will do
        x = np.cross(z, np.array([1.0, 0.0, 0.0]) if abs(z[0]) < 0.9 else np.array([0.0, 1.0, 0.0]))
    x = x / np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z])  # rows: camera axes in canonical coordinates
    w2c = np.eye(4)
    w2c[:3, :3] = R
    w2c[:3, 3] = -R @ eye
    return w2c


def rig_of(poses: np.ndarray, central: int | None = None, points: np.ndarray | None = None) -> Rig:
    """The :class:`Rig` of a scene's ``poses [V, T, 4, 4]`` (distinct cameras over views and
    times); ``points [N, 3]`` (the splats) give the centre when the cameras' axes do not converge."""
    flat = np.asarray(poses, np.float64).reshape(-1, 4, 4)
    c2w = np.linalg.inv(flat)
    keep: list[int] = []
    for k in range(len(c2w)):
        if all(np.abs(c2w[k] - c2w[q]).max() > 1e-6 for q in keep):
            keep.append(k)
    c2w = c2w[keep]
    V, T = poses.shape[:2]
    if central is None:
        central = V // 2
    central_flat = central * T
    central = keep.index(central_flat) if central_flat in keep else 0
    origins, dirs = c2w[:, :3, 3], c2w[:, :3, 2]
    up = -c2w[:, :3, 1].mean(0)
    up = up / max(np.linalg.norm(up), 1e-12)
    centre = None
    if len(c2w) >= 2:
        centre, cond = axes_focus(origins, dirs)
        if cond > 1e6 or np.any(((centre - origins) * dirs).sum(1) <= 0):  # parallel axes, or behind a camera
            centre = None
    if centre is None:
        if points is not None and len(points):
            centre = np.median(np.asarray(points, np.float64), axis=0)
        else:
            centre = origins[central] + dirs[central] * 1.0
    return Rig(c2w=c2w, central=central, centre=centre, up=up)


def axes_focus(origins: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, float]:
    """The point nearest to every camera axis (``origins [M, 3]``, unit ``dirs [M, 3]``) in the
    least-squares sense, ``min_p sum |(I - d d^T)(p - o)|^2``, and the condition number of that
    system (large: near-parallel axes, no focus)."""
    A = np.zeros((3, 3))
    b = np.zeros(3)
    for o, d in zip(origins, dirs):
        P = np.eye(3) - np.outer(d, d)
        A += P
        b += P @ o
    return np.linalg.lstsq(A, b, rcond=None)[0], float(np.linalg.cond(A))


def _frame(up: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors spanning the plane perpendicular to ``up``."""
    a = np.array([1.0, 0.0, 0.0]) if abs(up[0]) < 0.9 else np.array([0.0, 0.0, 1.0])
    e1 = np.cross(up, a)
    e1 /= np.linalg.norm(e1)
    return e1, np.cross(up, e1)


def _polar(rig: Rig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per camera: azimuth (radians, unwrapped around the central camera's), horizontal radius,
    height above the centre along up."""
    e1, e2 = _frame(rig.up)
    rel = rig.c2w[:, :3, 3] - rig.centre
    h = rel @ rig.up
    flat = rel - h[:, None] * rig.up
    az = np.arctan2(flat @ e2, flat @ e1)
    az = (az - az[rig.central] + math.pi) % (2 * math.pi) - math.pi + az[rig.central]
    return az, np.linalg.norm(flat, axis=1), h


def _on_circle(rig: Rig, az: float, radius: float, height: float) -> np.ndarray:
    e1, e2 = _frame(rig.up)
    eye = rig.centre + radius * (math.cos(az) * e1 + math.sin(az) * e2) + height * rig.up
    return look_at(eye, rig.centre, rig.up)


def camera_path(kind: str, rig: Rig, K: np.ndarray, n: int, times: np.ndarray, time: float | None = None) -> list[PathFrame]:
    """``n`` frames of path ``kind`` (:data:`PATHS`). ``K [3, 3]``: the output intrinsics;
    ``times [T]``: the scene's time values; ``time``: the frozen time of orbit / bullet-time
    (default: the first)."""
    if kind not in PATHS:
        raise ValueError(f"unknown path {kind!r}; expected one of {', '.join(PATHS)}")
    n = max(1, int(n))
    t0, t1 = float(times[0]), float(times[-1])
    frozen = t0 if time is None else float(time)
    playing = np.linspace(t0, t1, n) if n > 1 else np.array([t0])
    az, rad, h = _polar(rig)
    s = np.linspace(0.0, 1.0, n, endpoint=kind == "grid-views") if n > 1 else np.zeros(1)
    frames: list[PathFrame] = []
    if kind == "orbit":
        r, hh = float(np.mean(rad)), float(np.mean(h))
        for u in s:
            frames.append(PathFrame(_on_circle(rig, az[rig.central] + 2 * math.pi * u, r, hh), K, frozen))
    elif kind in ("bullet-time", "grid-views"):
        order = np.argsort(az)
        a, r, hh = az[order], rad[order], h[order]
        if len(a) == 1 or a[-1] - a[0] < 1e-3:  # one camera: a +-15 degree arc around it
            a, r, hh = np.array([a[0] - 0.26, a[0] + 0.26]), np.repeat(r[:1], 2), np.repeat(hh[:1], 2)
        u = 1.0 - np.abs(2.0 * s - 1.0) if kind == "bullet-time" else s  # there and back / once across
        knots = np.linspace(0.0, 1.0, len(a))
        for k, x in enumerate(u):
            w2c = _on_circle(rig, float(np.interp(x, knots, a)), float(np.interp(x, knots, r)), float(np.interp(x, knots, hh)))
            frames.append(PathFrame(w2c, K, frozen if kind == "bullet-time" else float(playing[k])))
    else:  # spiral
        c2w = rig.c2w[rig.central]
        eye0 = c2w[:3, 3]
        radius = 0.1 * float(np.linalg.norm(rig.centre - eye0))
        right, down = c2w[:3, 0], c2w[:3, 1]
        for k, u in enumerate(np.linspace(0.0, 1.0, n, endpoint=False) if n > 1 else np.zeros(1)):
            ang = 2 * math.pi * 2 * u  # two turns over the clip
            eye = eye0 + radius * (math.cos(ang) * right + math.sin(ang) * down)
            frames.append(PathFrame(look_at(eye, rig.centre, rig.up), K, float(playing[k])))
    return frames


def path_intrinsics(K: np.ndarray, size: tuple[int, int], out: tuple[int, int]) -> np.ndarray:
    """The grid camera's ``K [3, 3]`` (for images of ``size = (H, W)``) for ``out = (h, w)``
    output images: the same horizontal field of view, square pixels, the centre in the middle."""
    H, W = size
    h, w = out
    f = float(K[0, 0]) * w / W
    return np.array([[f, 0.0, w / 2.0], [0.0, f, h / 2.0], [0.0, 0.0, 1.0]])


def render_path(scene: DeformableScene, path: str, view: int, time: int, size: tuple[int, int] | None, n: int,
                progress: bool = True) -> tuple[np.ndarray, float]:
    """Render ``n`` frames of camera path ``path`` (:mod:`recon.render.paths`) -> (``uint8
    [n, h, w, 3]``, seconds the rendering took). Frozen-time paths deform the splats once."""
    from time import perf_counter

    import torch
    from rich.progress import Progress

    from recon.io import check_memory

    H, W = scene.size
    h, w = (int(size[0]), int(size[1])) if size is not None else (H, W)
    check_memory(n * h * w * 3 + h * w * RENDER_BYTES_PER_PIXEL, f"{n} video frames at {w}x{h}", None, hint="use a smaller --size or --seconds")
    rig = rig_of(scene.poses.cpu().numpy(), central=view, points=scene.splats.means.detach().cpu().numpy())
    K = path_intrinsics(scene.Ks[view, time].cpu().numpy(), (H, W), (h, w))
    times = scene.times.cpu().numpy()
    cams = camera_path(path, rig, K, n, times, time=float(times[time]))
    out = np.zeros((len(cams), h, w, 3), np.uint8)
    cache: dict[float, torch.Tensor] = {}
    t0 = perf_counter()
    with torch.no_grad(), Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(f"render {path}", total=len(cams))
        for k, c in enumerate(cams):
            if c.time not in cache:
                cache.clear()
                cache[c.time] = scene.means_at_time(c.time)
            rgb = scene.render_camera(torch.from_numpy(c.w2c), torch.from_numpy(c.K), (h, w), c.time, means=cache[c.time])
            out[k] = (rgb.clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()
            bar.advance(task)
    return out, max(perf_counter() - t0, 1e-9)
