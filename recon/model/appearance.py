"""Per-camera colour response: ``rgb' = rgb * exp(log_gain[i]) + bias[i]`` per channel.

Real rigs' cameras differ in exposure and white balance (Dynamic 3D Gaussians fits a scale and
an offset per camera). The affine starts as the identity (``log_gain = bias = 0``) and is fitted
on the training cameras only, under the constraint that its mean over them stays the identity
(:meth:`CameraAppearance.centre`, a projection after every step): otherwise splat colours and
a common bias trade off freely -- measured on CMU Panoptic, the fit moved +0.13 of bias into every
camera and left the scene 7 % transparent, which the bias hid on training cameras only. A camera
without training images (a test camera) uses the mean of the training cameras' parameters, i.e.
the identity -- the rig's average response, since its own was never observed. ``trained [V]``
records which views were fitted.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class CameraAppearance(nn.Module):
    """``log_gain [V, 3]``, ``bias [V, 3]`` (parameters) and ``trained [V]`` (bool buffer)."""

    def __init__(self, num_views: int, trained: list[int] | Tensor | None = None):
        super().__init__()
        self.log_gain = nn.Parameter(torch.zeros(num_views, 3))
        self.bias = nn.Parameter(torch.zeros(num_views, 3))
        mask = torch.zeros(num_views, dtype=torch.bool)
        if trained is None:
            mask[:] = True
        else:
            mask[torch.as_tensor(trained, dtype=torch.long)] = True
        self.register_buffer("trained", mask)

    def params_for(self, views: Tensor) -> tuple[Tensor, Tensor]:
        """``(log_gain [C, 3], bias [C, 3])`` for view indices ``views [C]``; untrained views get
        the mean over the trained ones (identity when none is trained)."""
        views = views.to(self.log_gain.device)
        if bool(self.trained.all()):
            return self.log_gain[views], self.bias[views]
        t = self.trained
        mg = self.log_gain[t].mean(0) if bool(t.any()) else torch.zeros(3, device=t.device)
        mb = self.bias[t].mean(0) if bool(t.any()) else torch.zeros(3, device=t.device)
        own = t[views][:, None]
        return torch.where(own, self.log_gain[views], mg), torch.where(own, self.bias[views], mb)

    @torch.no_grad()
    def centre(self) -> None:
        """Project onto the constraint: zero mean of ``log_gain`` and ``bias`` over the trained views."""
        t = self.trained
        if bool(t.any()):
            self.log_gain[t] -= self.log_gain[t].mean(0)
            self.bias[t] -= self.bias[t].mean(0)

    def forward(self, rgb: Tensor, views: Tensor) -> Tensor:
        """Apply to renders ``rgb [C, H, W, 3]`` of views ``views [C]``."""
        g, b = self.params_for(views)
        return rgb * g.exp()[:, None, None, :] + b[:, None, None, :]

    def describe(self) -> dict:
        """What metrics.json says about it."""
        return {"model": "per-camera per-channel gain and bias, rgb * exp(log_gain) + bias",
                "trained_views": self.trained.nonzero().squeeze(1).tolist(),
                "untrained_views_use": "mean of the trained views' log_gain and bias",
                "log_gain_rms": float(self.log_gain.detach()[self.trained].pow(2).mean().sqrt()) if bool(self.trained.any()) else 0.0,
                "bias_rms": float(self.bias.detach()[self.trained].pow(2).mean().sqrt()) if bool(self.trained.any()) else 0.0}
