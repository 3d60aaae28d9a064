"""Injected multi-view inconsistency, of the kind a 4D video generator produces.

For strength ``s`` in [0, 1], every view except the central one (the generator's conditioning
view stays clean) gets, fixed over time:

* a small homography (shift ~ ``2 s`` px, rotation ~ ``0.6 s`` deg, scale ~ ``1 s`` %, and a
  perspective term changing the scale by ~ ``2 s`` % across the image) applied to its images;
* a colour shift: per-channel gain ``1 + N(0, 0.05 s)`` and bias ``N(0, 0.02 s)``;
* texture drift: the texture is looked up at ``rest + offset`` with ``offset ~ N(0, 0.02 s)``
  scene units per axis (the surface pattern slides a little, geometry does not).

The numbers are standard deviations at ``s = 1``. Ground truth (depth, object ids, rest
coordinates, masks, and ``extras["clean"]``) describes the unperturbed scene.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass
class Perturbation:
    """Per-view perturbation parameters for ``V`` views."""

    homography: np.ndarray
    """[V, 3, 3]: maps clean pixel coordinates to perturbed ones (recon convention, the
    top-left pixel centre at (0.5, 0.5)); identity for unperturbed views."""
    gain: np.ndarray
    """[V, 3] per-channel colour gain."""
    bias: np.ndarray
    """[V, 3] per-channel colour bias (in [0, 1] colour units)."""
    texture_offset: np.ndarray
    """[V, 3] texture lookup offset in rest-frame scene units."""

    def to_meta(self) -> dict:
        return {k: getattr(self, k).tolist() for k in ("homography", "gain", "bias", "texture_offset")}


def draw_perturbation(strength: float, views: int, size: tuple[int, int], seed: int, central_view: int) -> Perturbation:
    """Random per-view perturbations of the given ``strength`` in [0, 1] (deterministic in ``seed``)."""
    H, W = size
    rng = np.random.default_rng([seed, 7919])
    hom = np.tile(np.eye(3), (views, 1, 1))
    gain = np.ones((views, 3))
    bias = np.zeros((views, 3))
    tex = np.zeros((views, 3))
    c = np.array([[1, 0, -W / 2.0], [0, 1, -H / 2.0], [0, 0, 1]])
    half = 0.5 * max(H, W)
    for v in range(views):
        z = rng.normal(size=15)  # always drawn, so a view's values do not depend on which is central
        if v == central_view or strength <= 0:
            continue
        ang = np.radians(0.6 * strength * z[0])
        sc = 1.0 + 0.01 * strength * z[1]
        A = np.eye(3)
        A[:2, :2] = sc * np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
        A[:2, 2] = 2.0 * strength * z[2:4]
        A[2, :2] = 0.02 * strength * z[4:6] / half
        hom[v] = np.linalg.inv(c) @ A @ c
        gain[v] = 1.0 + 0.05 * strength * z[6:9]
        bias[v] = 0.02 * strength * z[9:12]
        tex[v] = 0.02 * strength * z[12:15]
    return Perturbation(hom, gain, bias, tex)


def apply_image(img: np.ndarray, homography: np.ndarray, gain: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Colour-shift then warp one float image ``[H, W, 3]`` in [0, 1]; returns float ``[H, W, 3]``
    (unchanged values for an identity perturbation).

    ``homography [3, 3]`` in recon pixel convention (converted to OpenCV's integer-centre one);
    borders are filled by reflection so the image stays fully textured.
    """
    out = np.clip(img * gain + bias, 0.0, 1.0)
    if not np.allclose(homography, np.eye(3)):
        shift = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]])
        Hcv = np.linalg.inv(shift) @ homography @ shift
        H, W = img.shape[:2]
        out = cv2.warpPerspective(out.astype(np.float32), Hcv, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    return out
