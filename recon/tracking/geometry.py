"""Small pinhole-camera helpers shared by the tracking modules (numpy, float64 unless noted).

Pixel convention (recon-wide): the top-left pixel centre is at (0.5, 0.5), ``u = fx x / z + cx``.
Pixel (row i, column j) has centre ``(u, v) = (j + 0.5, i + 0.5)`` and a point at ``(u, v)``
falls in pixel ``(floor(v), floor(u))``.
"""

from __future__ import annotations

import numpy as np


def unproject(uv: np.ndarray, z: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Camera points ``[N, 3]`` of pixels ``uv [N, 2]`` at z-depths ``z [N]`` with intrinsics ``K [3, 3]``."""
    y = (uv[:, 1] - K[1, 2]) / K[1, 1]
    x = (uv[:, 0] - K[0, 2] - K[0, 1] * y) / K[0, 0]  # with skew s: u = fx x + s y + cx
    return np.stack([x * z, y * z, z], 1)


def project(X: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixels ``uv [N, 2]`` and depths ``z [N]`` of camera points ``X [N, 3]`` (uv is NaN where z <= 0)."""
    z = X[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        p = X @ K.T
        uv = p[:, :2] / p[:, 2:3]
    uv[~(z > 0)] = np.nan
    return uv, z


def transform(T: np.ndarray, X: np.ndarray) -> np.ndarray:
    """Apply a 4x4 rigid transform ``T`` to points ``X [N, 3]``."""
    return X @ T[:3, :3].T + T[:3, 3]


def pixel_index(uv: np.ndarray, H: int, W: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row / column indices ``[N]`` of the pixel containing ``uv [N, 2]`` and an ``inside [N]`` mask."""
    finite = np.isfinite(uv).all(1)
    uvf = np.where(finite[:, None], uv, -1.0)
    col = np.floor(uvf[:, 0]).astype(np.int64)
    row = np.floor(uvf[:, 1]).astype(np.int64)
    inside = finite & (col >= 0) & (col < W) & (row >= 0) & (row < H)
    return np.clip(row, 0, H - 1), np.clip(col, 0, W - 1), inside


def depth_edges(depth: np.ndarray, ratio: float = 1.05) -> np.ndarray:
    """``bool [H, W]``: pixels whose 3x3 neighbourhood spans a depth ratio above ``ratio`` or
    touches unknown depth (0). Lifting a flow position there is unreliable (boundary floaters)."""
    import cv2

    d = depth.astype(np.float32)
    big = np.where(d > 0, d, np.float32(np.inf))
    k = np.ones((3, 3), np.uint8)
    mx = cv2.dilate(np.where(d > 0, d, 0).astype(np.float32), k, borderType=cv2.BORDER_REPLICATE)
    mn = cv2.erode(big, k, borderType=cv2.BORDER_REPLICATE)
    return ~(np.isfinite(mn) & (mn > 0) & (mx <= ratio * mn))


def rigid_inverse(T: np.ndarray) -> np.ndarray:
    """Inverse of a 4x4 rigid transform."""
    R, t = T[:3, :3], T[:3, 3]
    out = np.eye(4)
    out[:3, :3] = R.T
    out[:3, 3] = -R.T @ t
    return out


def similarity_matrix(scale: float, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """4x4 matrix of ``x -> scale R x + t``."""
    T = np.eye(4)
    T[:3, :3] = scale * R
    T[:3, 3] = t
    return T


def default_intrinsics(height: int, width: int, fov_deg: float = 60.0) -> np.ndarray:
    """A field-of-view guess ``K [3, 3]``: horizontal FoV ``fov_deg``, square pixels, centred
    principal point (pixel-centre convention above). Used when a source gives no intrinsics."""
    from recon.grid import fov_intrinsics

    return fov_intrinsics(height, width, fov_deg)
