"""Differentiable rasterizer for isotropic Gaussians: one API, several backends.

``rasterize(means, log_scales, opacity_logits, colors, viewmats, Ks, width, height,
background=None, backend="auto") -> (rgb [C,H,W,D], alpha [C,H,W,1], depth [C,H,W,1], meta)``.
Backends: ``torch`` (pure-PyTorch twin), ``cpu`` and ``cuda`` (recon._C kernels), ``gsplat``
(optional, CUDA only), ``auto`` (cuda > cpu > torch).
"""

from recon.render.api import rasterize
from recon.render.backends import BACKENDS, extension_status, select_backend

__all__ = ["BACKENDS", "extension_status", "rasterize", "select_backend"]
