"""EWA projection of isotropic 3D Gaussians to screen-space 2D Gaussians.

The projection of the ``torch`` and ``cuda`` backends (plain PyTorch, differentiable by
autograd); the ``cpu`` backend runs the same maths fused in C++ (``cuda_ext/project_cpu.cpp``,
compared with this module forward and backward in tests/test_render_cpu.py). The cut-offs,
footprints and depth order of every backend are therefore the same; the compiled backends
differ from the PyTorch twin in how they composite.

Conventions: world-to-camera ``viewmats`` in OpenCV convention (x right, y down, z forward),
intrinsics ``Ks`` in pixels, pixel (i, j) covers [i, i+1) x [j, j+1) so its centre is at
(i + 0.5, j + 0.5) -- the OpenCV / gsplat convention.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from recon.render.constants import ALPHA_MIN, FOV_CLAMP, LOW_PASS, MAHALANOBIS_MAX, NEAR_PLANE


@dataclass
class Projected:
    """Screen-space splats of C cameras x N Gaussians (all per camera)."""

    means2d: Tensor  # [C, N, 2] pixel coordinates of the projected centres (differentiable)
    conics: Tensor  # [C, N, 3] inverse 2D covariance [a, b, c]: q = a dx^2 + 2 b dx dy + c dy^2
    opacities: Tensor  # [C, N] sigmoid(opacity_logits) (differentiable)
    depths: Tensor  # [C, N] camera-space z (differentiable)
    bbox: Tensor  # [C, N, 4] int32 pixel box [x0, y0, x1, y1) holding the footprint; empty when culled
    radii: Tensor  # [C, N] int32 footprint half-extent in pixels (max over x, y); 0 when culled
    visible: Tensor  # [C, N] bool: in front of the near plane, opaque enough, footprint on the image
    order: Tensor  # [C, N] int Gaussian indices sorted front to back (stable; culled ones last)


def project(
    means: Tensor,  # [C, N, 3] world-space centres (already broadcast per camera)
    log_scales: Tensor,  # [N] log of the isotropic standard deviation (world units)
    opacity_logits: Tensor,  # [N] logit of the peak opacity
    viewmats: Tensor,  # [C, 4, 4] world-to-camera, rigid (rotation orthonormal)
    Ks: Tensor,  # [C, 3, 3] intrinsics in pixels, zero skew
    width: int,
    height: int,
) -> Projected:
    """Project isotropic Gaussians; ``Sigma_2D = s^2 J J^T + LOW_PASS * I`` (3DGS EWA).

    J is the Jacobian of the pinhole projection at the camera-space centre, with x/z and y/z
    clamped to ``FOV_CLAMP`` times the image's field of view (measured from the principal
    point, 15% margin on each side). Culled (``visible`` False) are splats with z <=
    ``NEAR_PLANE``, peak opacity below ``ALPHA_MIN``, or a footprint box off the image.
    The footprint is the ellipse ``q <= min(SIGMA_CUT^2, 2 ln(255 opacity))`` (beyond it alpha is
    below ALPHA_MIN anyway); ``bbox`` is the box of the pixels whose centres lie in the
    ellipse's axis-aligned bounding box. Every backend evaluates a splat only inside ``bbox``.
    """
    R = viewmats[:, None, :3, :3]  # [C, 1, 3, 3]
    t = viewmats[:, None, :3, 3]  # [C, 1, 3]
    p_cam = (R @ means.unsqueeze(-1)).squeeze(-1) + t  # [C, N, 3]
    x, y, z = p_cam.unbind(-1)
    in_front = z > NEAR_PLANE
    # Culled splats still flow through autograd (masked later): keep their maths finite.
    zs = torch.where(in_front, z, torch.ones_like(z))

    fx = Ks[:, 0, 0, None]  # [C, 1]
    fy = Ks[:, 1, 1, None]
    cx = Ks[:, 0, 2, None]
    cy = Ks[:, 1, 2, None]
    u = fx * x / zs + cx
    v = fy * y / zs + cy

    margin = 0.5 * (FOV_CLAMP - 1.0)  # fraction of the image width added on each side
    tx = torch.minimum(torch.maximum(x / zs, -(cx + margin * width) / fx), (width - cx + margin * width) / fx) * zs
    ty = torch.minimum(torch.maximum(y / zs, -(cy + margin * height) / fy), (height - cy + margin * height) / fy) * zs
    # J = [[ja, 0, jb], [0, jc, jd]]; for a rigid view the isotropic 3D covariance s^2 I stays s^2 I.
    ja = fx / zs
    jb = -fx * tx / (zs * zs)
    jc = fy / zs
    jd = -fy * ty / (zs * zs)
    s2 = torch.exp(2.0 * log_scales)  # [N]
    cov_xx = s2 * (ja * ja + jb * jb) + LOW_PASS
    cov_xy = s2 * (jb * jd)
    cov_yy = s2 * (jc * jc + jd * jd) + LOW_PASS
    det = cov_xx * cov_yy - cov_xy * cov_xy  # >= LOW_PASS^2 > 0
    conics = torch.stack([cov_yy / det, -cov_xy / det, cov_xx / det], dim=-1)

    opacities = torch.sigmoid(opacity_logits).expand_as(z)  # [C, N]
    with torch.no_grad():
        opaque = opacities >= ALPHA_MIN
        q_max = torch.clamp(2.0 * torch.log(255.0 * opacities.clamp_min(ALPHA_MIN)), 0.0, MAHALANOBIS_MAX)
        ext_x = torch.sqrt(q_max * cov_xx)
        ext_y = torch.sqrt(q_max * cov_yy)
        big = 4.0 * max(width, height) + 8.0  # clamp before int conversion: off-screen centres can be huge
        # pixel i (centre i + 0.5) is in the box when |i + 0.5 - u| <= ext_x
        x0 = torch.ceil((u - ext_x - 0.5).clamp(-big, big)).clamp(0, width)
        x1 = (torch.floor((u + ext_x - 0.5).clamp(-big, big)) + 1.0).clamp(0, width)
        y0 = torch.ceil((v - ext_y - 0.5).clamp(-big, big)).clamp(0, height)
        y1 = (torch.floor((v + ext_y - 0.5).clamp(-big, big)) + 1.0).clamp(0, height)
        visible = in_front & opaque & (x0 < x1) & (y0 < y1)
        zero = torch.zeros_like(x0)
        bbox = torch.stack([torch.where(visible, b, zero) for b in (x0, y0, x1, y1)], dim=-1).to(torch.int32)
        radii = torch.where(visible, torch.ceil(torch.maximum(ext_x, ext_y)), zero).to(torch.int32)
        sort_key = torch.where(visible, z, torch.full_like(z, float("inf")))
        order = torch.sort(sort_key, dim=-1, stable=True).indices
    return Projected(
        means2d=torch.stack([u, v], dim=-1),
        conics=conics,
        opacities=opacities,
        depths=z,
        bbox=bbox,
        radii=radii,
        visible=visible,
        order=order,
    )
