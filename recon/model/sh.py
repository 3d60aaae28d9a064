"""View-dependent colour: real spherical harmonics of degree 1-3, as the 3DGS family uses them.

A splat's colour seen along the unit direction ``d = (x, y, z)`` (from the camera centre to the
splat, in the coordinates its coefficients are expressed in) is

    rgb(d) = base + sum_{k = 1 .. K} Y_k(d) c_k,        K = (degree + 1)^2 - 1

with ``base`` the splat's colour (its degree-0 term, ``0.5 + C0 f_dc`` in a graphdeco ``.ply``),
``c_k [3]`` the coefficients (``sh_rest [N, K, 3]``) and ``Y_k`` the real spherical harmonics in
the order and with the signs that graphdeco's 3DGS viewers evaluate (so an exported ``f_rest_*``
renders the same there): band 1 ``(-y, z, -x) C1``, band 2 ``xy, yz, 2z^2 - x^2 - y^2, xz,
x^2 - y^2`` (times its normalisation constants), band 3 likewise. The constants are the
normalisations of the real spherical harmonics, ``sqrt((2l + 1) / 4 pi ...)``.

The **shading** form (``sh_rest [N, K, 1]``: one gain per harmonic, shared by the three channels)
scales the base colour instead of adding to it:

    rgb(d) = base * (1 + sum_k Y_k(d) g_k)

With degree 1 that is ``base * (1 + a . d)``: diffuse shading under a light that moves with the
camera (MuJoCo's and Blender's headlight renders), where a splat's brightness follows the angle
between its surface and the view. It cannot change a splat's hue -- a coloured splat cannot turn
the (white) background colour from the views that contradict it, which the additive form let the
monocular fits do (BENCHMARKS.md). It is the additive form with ``c_k = base g_k``
(:func:`rgb_coefficients`), so it exports as ordinary ``f_rest_*`` columns.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

C1 = 0.4886025119029199  # sqrt(3 / (4 pi))
C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154, -0.4570457994644658,
      1.445305721320277, -0.5900435899266435)
MAX_DEGREE = 3


def num_coefficients(degree: int) -> int:
    """``K = (degree + 1)^2 - 1``: the coefficients beyond the base colour (0, 3, 8, 15)."""
    if not 0 <= int(degree) <= MAX_DEGREE:
        raise ValueError(f"spherical-harmonic degree must be 0..{MAX_DEGREE}, got {degree!r}")
    return (int(degree) + 1) ** 2 - 1


def degree_of(k: int) -> int:
    """Inverse of :func:`num_coefficients` (``K`` must be 0, 3, 8 or 15)."""
    d = round(math.sqrt(int(k) + 1)) - 1
    if num_coefficients(max(0, min(d, MAX_DEGREE))) != k:
        raise ValueError(f"expected (degree + 1)^2 - 1 spherical-harmonic coefficients (0, 3, 8, 15), got {k}")
    return d


def sh_basis(dirs: Tensor, degree: int) -> Tensor:
    """``Y_1 .. Y_K`` of unit directions ``dirs [..., 3]`` -> ``[..., K]`` (module docstring)."""
    K = num_coefficients(degree)
    x, y, z = dirs.unbind(-1)
    out = []
    if degree >= 1:
        out += [-C1 * y, C1 * z, -C1 * x]
    if degree >= 2:
        xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
        out += [C2[0] * xy, C2[1] * yz, C2[2] * (2 * zz - xx - yy), C2[3] * xz, C2[4] * (xx - yy)]
    if degree >= 3:
        out += [C3[0] * y * (3 * xx - yy), C3[1] * xy * z, C3[2] * y * (4 * zz - xx - yy),
                C3[3] * z * (2 * zz - 3 * xx - 3 * yy), C3[4] * x * (4 * zz - xx - yy), C3[5] * z * (xx - yy),
                C3[6] * x * (xx - 3 * yy)]
    return torch.stack(out, -1) if K else dirs.new_zeros(*dirs.shape[:-1], 0)


def rgb_coefficients(base: Tensor, sh_rest: Tensor) -> Tensor:
    """The additive coefficients ``[N, K, 3]`` equal to ``sh_rest``: itself when it is ``[N, K, 3]``;
    ``clamp(base, 0, 1) * g`` for shading gains ``[N, K, 1]`` (module docstring), which is what a
    graphdeco ``.ply`` stores so that a viewer renders the same colours."""
    if sh_rest.shape[-1] == 3:
        return sh_rest
    return base.clamp(0.0, 1.0)[:, None, :] * sh_rest


def view_colours(base: Tensor, sh_rest: Tensor, means: Tensor, centres: Tensor, rotation: Tensor | None = None) -> Tensor:
    """Colours ``[C, N, 3]`` in [0, 1] of ``N`` splats seen from ``C`` cameras.

    ``base [N, 3]`` (the degree-0 colour), ``sh_rest [N, K, 3]`` (additive) or ``[N, K, 1]``
    (shading gains: ``clamp(base) * (1 + Y . g)``; module docstring), positions ``means [N, 3]`` or
    ``[C, N, 3]`` and camera centres ``centres [C, 3]`` in one frame; ``rotation [3, 3]`` (optional)
    maps that frame's directions to the frame the coefficients are expressed in (recon: the
    canonical frame -> the world of the input cameras, which the exported ``.ply`` uses). The
    directions are not differentiated (the colour's gradient goes to ``base`` and ``sh_rest``)."""
    K = sh_rest.shape[1]
    C = centres.shape[0]
    if K == 0:
        return base.clamp(0.0, 1.0).expand(C, *base.shape)
    with torch.no_grad():
        d = (means if means.dim() == 3 else means[None]) - centres[:, None, :]
        if rotation is not None:
            d = d @ rotation.T.to(d)
        d = d / d.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        Y = sh_basis(d, degree_of(K))  # [C, N, K]
    if sh_rest.shape[-1] == 1:
        return (base.clamp(0.0, 1.0) * (1.0 + torch.einsum("cnk,nkd->cnd", Y, sh_rest))).clamp(0.0, 1.0)
    return (base + torch.einsum("cnk,nkd->cnd", Y, sh_rest)).clamp(0.0, 1.0)


def camera_centres(viewmats: Tensor) -> Tensor:
    """Camera centres ``[C, 3]`` of world-to-camera matrices ``viewmats [C, 4, 4]`` (``-R^T t``)."""
    R, t = viewmats[:, :3, :3], viewmats[:, :3, 3]
    return -(R.transpose(1, 2) @ t[..., None])[..., 0]
