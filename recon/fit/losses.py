"""Photometric losses and image metrics for the fitting stages.

Images are float tensors ``[B, H, W, 3]`` (or ``[H, W, 3]``) in [0, 1]. SSIM uses the standard
11x11 Gaussian window (sigma 1.5) with C1 = 0.01^2, C2 = 0.03^2 and valid-region ('same' with
zero padding excluded) averaging, as in 3DGS's training loss.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_WEIGHT = 0.2
"""Weight lambda of the D-SSIM term in ``(1 - lambda) L1 + lambda (1 - SSIM)`` (3DGS's value)."""


def _window(device: torch.device, dtype: torch.dtype) -> Tensor:
    x = torch.arange(SSIM_WINDOW, dtype=dtype, device=device) - (SSIM_WINDOW - 1) / 2
    g = torch.exp(-(x**2) / (2 * SSIM_SIGMA**2))
    g = g / g.sum()
    return g


def _blur(x: Tensor, g: Tensor) -> Tensor:
    """Separable Gaussian blur of ``[B, C, H, W]`` with valid padding."""
    C = x.shape[1]
    kx = g.view(1, 1, 1, -1).expand(C, 1, 1, -1)
    ky = g.view(1, 1, -1, 1).expand(C, 1, -1, 1)
    return F.conv2d(F.conv2d(x, kx, groups=C), ky, groups=C)


def ssim_map(a: Tensor, b: Tensor) -> Tensor:
    """Per-pixel SSIM ``[B, H', W']`` (valid region, channels averaged) of images ``[B, H, W, 3]``."""
    if a.dim() == 3:
        a, b = a[None], b[None]
    x = a.permute(0, 3, 1, 2)
    y = b.permute(0, 3, 1, 2)
    if min(x.shape[-2:]) < SSIM_WINDOW:  # tiny images: shrink to a window that fits
        pad = SSIM_WINDOW - min(x.shape[-2:])
        x = F.pad(x, (pad, pad, pad, pad), mode="replicate")
        y = F.pad(y, (pad, pad, pad, pad), mode="replicate")
    g = _window(x.device, x.dtype)
    mx, my = _blur(x, g), _blur(y, g)
    sxx = _blur(x * x, g) - mx * mx
    syy = _blur(y * y, g) - my * my
    sxy = _blur(x * y, g) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return s.mean(1)


def ssim(a: Tensor, b: Tensor) -> Tensor:
    """Mean SSIM per image ``[B]`` of images ``[B, H, W, 3]``."""
    return ssim_map(a, b).flatten(1).mean(1)


def photometric_loss(pred: Tensor, target: Tensor, ssim_weight: float = SSIM_WEIGHT, weight: Tensor | None = None) -> Tensor:
    """``(1 - w) L1 + w (1 - SSIM)`` averaged over the batch (scalar). ``pred``, ``target`` ``[B, H, W, 3]``.

    ``weight [B, H, W, 1]`` (optional) weights the L1 term per pixel (e.g. 0 outside an image's valid area)."""
    l1 = (pred - target).abs()
    l1 = (l1 * weight).sum() / (weight.sum() * pred.shape[-1]).clamp_min(1e-8) if weight is not None else l1.mean()
    if ssim_weight <= 0:
        return l1
    return (1.0 - ssim_weight) * l1 + ssim_weight * (1.0 - ssim(pred, target).mean())


def psnr(pred: Tensor, target: Tensor) -> float:
    """PSNR in dB of two images ``[H, W, 3]`` in [0, 1] (inf for identical images)."""
    mse = float(((pred.clamp(0, 1) - target) ** 2).mean())
    return math.inf if mse <= 0 else -10.0 * math.log10(mse)
