"""FrameGrid: a V x T grid of frames (views x time steps) with cameras and metadata.

Conventions (used everywhere in recon):

* images are ``uint8`` ``[V, T, H, W, 3]`` RGB; :meth:`FrameGrid.float_images` gives float in [0, 1];
* masks (optional) are ``bool`` ``[V, T, H, W]``, True on the foreground;
* intrinsics ``K`` are ``float64`` ``[V, T, 3, 3]`` in pixels, the pixel centre of the top-left
  pixel at (0.5, 0.5) as in OpenCV / 3DGS: ``u = fx * x / z + cx``;
* extrinsics ``w2c`` (optional) are ``float64`` ``[V, T, 4, 4]`` world-to-camera in the OpenCV
  convention (x right, y down, z forward). Per-view cameras are stored broadcast over time.
* ``times`` are ``float64`` ``[T]`` in seconds (or normalised units; the unit is in ``meta``);
* ``ref_time`` indexes the time of the freeze-time frames; ``central_view`` the view whose camera
  coordinates are the canonical frame of the reconstruction.
* ``extras`` holds per-frame arrays aligned with the grid, e.g. ground-truth ``depth`` ``[V, T, H, W]``
  (z-depth in camera units, 0 where there is no surface) from :mod:`recon.synth`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from recon.errors import InputError


def focal_from_fov(side_px: float, fov_rad: float) -> float:
    """Focal length in pixels of an image side of ``side_px`` pixels that spans ``fov_rad`` radians."""
    import math

    return 0.5 * side_px / math.tan(0.5 * fov_rad)


def fov_intrinsics(height: int, width: int, fov_deg: float, axis: str = "x") -> np.ndarray:
    """Pinhole ``K [3, 3]`` (float64) with field of view ``fov_deg`` degrees across the image
    ``width`` (``axis="x"``) or ``height`` (``"y"``), square pixels, the principal point at the
    image centre (pixel-centre convention of this module)."""
    import math

    f = focal_from_fov(width if axis == "x" else height, math.radians(fov_deg))
    return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])


@dataclass
class Cameras:
    """Per-frame pinhole cameras. ``K [V, T, 3, 3]``, ``w2c [V, T, 4, 4]`` or None (unknown poses)."""

    K: np.ndarray
    w2c: np.ndarray | None = None

    @classmethod
    def broadcast(cls, K: np.ndarray, w2c: np.ndarray | None, V: int, T: int, source: str = "cameras") -> "Cameras":
        """Accept ``K`` as ``[3,3]``, ``[V,3,3]`` or ``[V,T,3,3]`` (same for ``w2c`` with 4x4) and broadcast."""

        def _bc(a: np.ndarray | None, n: int, name: str) -> np.ndarray | None:
            if a is None:
                return None
            a = np.asarray(a, dtype=np.float64)
            if a.shape == (n, n):
                a = np.broadcast_to(a, (V, T, n, n))
            elif a.shape == (V, n, n):
                a = np.broadcast_to(a[:, None], (V, T, n, n))
            elif a.shape != (V, T, n, n):
                raise InputError(f"expected shape [{n},{n}], [V={V},{n},{n}] or [V,T={T},{n},{n}], got {list(a.shape)}", source, name)
            return np.ascontiguousarray(a)

        return cls(K=_bc(K, 3, "K"), w2c=_bc(w2c, 4, "w2c"))

    def c2w(self) -> np.ndarray:
        """Camera-to-world ``[V, T, 4, 4]``; requires known poses."""
        if self.w2c is None:
            raise InputError("camera poses are unknown", field="w2c")
        return np.linalg.inv(self.w2c)


@dataclass
class FrameGrid:
    """A V x T grid of RGB frames with cameras. See the module docstring for conventions."""

    images: np.ndarray  # [V, T, H, W, 3] uint8
    cameras: Cameras
    times: np.ndarray  # [T] float64
    masks: np.ndarray | None = None  # [V, T, H, W] bool
    ref_time: int = 0
    central_view: int | None = None
    view_names: list[str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    source: str = field(default="FrameGrid", repr=False, compare=False)  # file named in errors

    def __post_init__(self) -> None:
        if self.central_view is None:
            self.central_view = self.num_views // 2 if self.images.ndim == 5 else 0
        if self.view_names is None and self.images.ndim == 5:
            self.view_names = [f"view_{i:02d}" for i in range(self.num_views)]
        self.validate()

    # --- shape helpers ---------------------------------------------------------------------
    @property
    def num_views(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_times(self) -> int:
        return int(self.images.shape[1])

    @property
    def height(self) -> int:
        return int(self.images.shape[2])

    @property
    def width(self) -> int:
        return int(self.images.shape[3])

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """``(V, T, H, W)``."""
        return self.num_views, self.num_times, self.height, self.width

    def canonical_to_world(self) -> np.ndarray | None:
        """``[4, 4]`` float64: canonical coordinates (the central view's camera at ``ref_time``,
        OpenCV) to world coordinates, i.e. ``inv(w2c[central_view, ref_time])``; None without cameras."""
        if self.cameras.w2c is None:
            return None
        return np.linalg.inv(np.asarray(self.cameras.w2c[int(self.central_view), self.ref_time], np.float64))

    def float_images(self):
        """Images as a float32 torch tensor ``[V, T, H, W, 3]`` in [0, 1] (CPU)."""
        import torch

        return torch.from_numpy(self.images).float().div_(255.0)

    # --- validation --------------------------------------------------------------------------
    def validate(self, source: str | None = None) -> None:
        """Check shapes, dtypes and finiteness; raise :class:`InputError` naming ``source`` and the field."""
        source = source or self.source
        im = self.images
        if not isinstance(im, np.ndarray) or im.ndim != 5 or im.shape[-1] != 3:
            raise InputError(f"expected an array [V, T, H, W, 3], got {getattr(im, 'shape', type(im))}", source, "images")
        if im.dtype != np.uint8:
            raise InputError(f"expected uint8 images, got {im.dtype}", source, "images")
        V, T, H, W = self.shape
        if min(V, T, H, W) < 1:
            raise InputError(f"empty grid (V={V}, T={T}, H={H}, W={W})", source, "images")
        self.cameras = Cameras.broadcast(self.cameras.K, self.cameras.w2c, V, T, source)
        K = self.cameras.K
        if not np.isfinite(K).all():
            raise InputError("intrinsics contain NaN or inf", source, "K")
        fx, fy = K[..., 0, 0], K[..., 1, 1]
        if (np.abs(fx) < 1e-8).any() or (np.abs(fy) < 1e-8).any() or (np.abs(np.linalg.det(K)) < 1e-12).any():
            raise InputError("singular intrinsics (zero focal length)", source, "K")
        if (fx < 0).any() or (fy < 0).any():
            raise InputError("negative focal length (a mirrored camera); expected fx, fy > 0", source, "K")
        if np.abs(K[..., 2, :] - np.array([0.0, 0.0, 1.0])).max() > 1e-6 or np.abs(K[..., 1, 0]).max() > 1e-9:
            raise InputError("intrinsics are not upper-triangular with a last row [0, 0, 1]", source, "K")
        if self.cameras.w2c is not None:
            from recon.schema import check_poses

            check_poses(self.cameras.w2c, source, "w2c")
        self.times = np.asarray(self.times, dtype=np.float64).reshape(-1)
        if self.times.shape != (T,):
            raise InputError(f"expected {T} times, got {self.times.shape[0]}", source, "times")
        if not np.isfinite(self.times).all():
            raise InputError("times contain NaN or inf", source, "times")
        if self.masks is not None:
            m = np.asarray(self.masks)
            if m.shape != (V, T, H, W):
                raise InputError(f"expected masks [{V}, {T}, {H}, {W}], got {list(m.shape)}", source, "masks")
            self.masks = m.astype(bool, copy=False)
        if not 0 <= self.ref_time < T:
            raise InputError(f"ref_time {self.ref_time} outside [0, {T})", source, "ref_time")
        if not 0 <= int(self.central_view) < V:
            raise InputError(f"central_view {self.central_view} outside [0, {V})", source, "central_view")
        if self.view_names is not None and len(self.view_names) != V:
            raise InputError(f"expected {V} view names, got {len(self.view_names)}", source, "view_names")
        for k, a in self.extras.items():
            if not isinstance(a, np.ndarray) or a.shape[:2] != (V, T):
                raise InputError(f"extra array must start with [V={V}, T={T}], got {getattr(a, 'shape', None)}", source, f"extras.{k}")

    # --- slicing -----------------------------------------------------------------------------
    def subset(self, views: list[int] | None = None, times: list[int] | None = None) -> "FrameGrid":
        """A new grid with only the given view / time indices (ref_time and central_view remapped)."""
        vi = list(range(self.num_views)) if views is None else list(views)
        ti = list(range(self.num_times)) if times is None else list(times)
        w2c = None if self.cameras.w2c is None else self.cameras.w2c[vi][:, ti]
        ref = ti.index(self.ref_time) if self.ref_time in ti else 0
        cen = vi.index(self.central_view) if self.central_view in vi else len(vi) // 2
        return FrameGrid(
            images=self.images[vi][:, ti],
            cameras=Cameras(K=self.cameras.K[vi][:, ti], w2c=w2c),
            times=self.times[ti],
            masks=None if self.masks is None else self.masks[vi][:, ti],
            ref_time=ref,
            central_view=cen,
            view_names=[self.view_names[i] for i in vi] if self.view_names else None,
            meta=dict(self.meta),
            extras={k: a[vi][:, ti] for k, a in self.extras.items()},
            source=self.source,
        )

    def summary(self) -> dict[str, Any]:
        """A small JSON-able description (used by ``recon info``)."""
        V, T, H, W = self.shape
        return {
            "views": V,
            "times": T,
            "height": H,
            "width": W,
            "ref_time": self.ref_time,
            "central_view": self.central_view,
            "has_masks": self.masks is not None,
            "has_poses": self.cameras.w2c is not None,
            "time_range": [float(self.times.min()), float(self.times.max())],
            "focal_px": [float(np.median(self.cameras.K[..., 0, 0])), float(np.median(self.cameras.K[..., 1, 1]))],
            "extras": {k: list(a.shape) for k, a in self.extras.items()},
            "view_names": self.view_names,
            "source": self.meta.get("source"),
        }
