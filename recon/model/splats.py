"""Isotropic Gaussian splats: the canonical 3D representation of the reconstruction.

Each Gaussian has a centre ``means [N, 3]`` (canonical coordinates: the central view's camera
frame at ``ref_time``, OpenCV), one natural-log standard deviation ``log_scales [N]``, a peak
opacity logit ``opacity_logits [N]`` and a colour ``colors [N, 3]`` in [0, 1] (stored raw and
clamped when rendered, so a colour fitted outside the range does not get stuck).
Isotropy is deliberate (4Real-Video, supplementary section 3): without an orientation the splats
cannot smear along a training ray, which reduces artefacts from unseen viewpoints.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from recon.errors import InputError

PARAM_NAMES = ("means", "log_scales", "opacity_logits", "colors")


class Splats(nn.Module):
    """Learnable isotropic Gaussians. Shapes: means [N, 3], log_scales [N], opacity_logits [N], colors [N, 3]."""

    def __init__(self, means: Tensor, log_scales: Tensor, opacity_logits: Tensor, colors: Tensor):
        super().__init__()
        N = means.shape[0]
        if means.shape != (N, 3) or log_scales.shape != (N,) or opacity_logits.shape != (N,) or colors.shape != (N, 3):
            raise ValueError(
                f"inconsistent splat shapes: means {list(means.shape)}, log_scales {list(log_scales.shape)}, "
                f"opacity_logits {list(opacity_logits.shape)}, colors {list(colors.shape)}"
            )
        self.means = nn.Parameter(means.detach().float().clone())
        self.log_scales = nn.Parameter(log_scales.detach().float().clone())
        self.opacity_logits = nn.Parameter(opacity_logits.detach().float().clone())
        self.colors = nn.Parameter(colors.detach().float().clone())

    @property
    def num(self) -> int:
        return int(self.means.shape[0])

    def rgb(self) -> Tensor:
        """Colours clamped to [0, 1], ``[N, 3]``."""
        return self.colors.clamp(0.0, 1.0)

    def opacities(self) -> Tensor:
        """Peak opacities in (0, 1), ``[N]``."""
        return torch.sigmoid(self.opacity_logits)

    def tensors(self) -> dict[str, Tensor]:
        """Detached CPU copies of the parameters, keyed by :data:`PARAM_NAMES` (for checkpoints)."""
        return {k: getattr(self, k).detach().cpu().contiguous() for k in PARAM_NAMES}

    @classmethod
    def from_tensors(cls, t: dict[str, Tensor], prefix: str = "", source: str = "checkpoint") -> "Splats":
        """Inverse of :meth:`tensors` (keys optionally prefixed)."""
        try:
            return cls(*(t[prefix + k] for k in PARAM_NAMES))
        except KeyError as e:
            raise InputError(f"missing tensor {e.args[0]!r}", source, "splats") from None
        except ValueError as e:
            raise InputError(str(e), source, "splats") from None

    def select(self, keep: Tensor) -> "Splats":
        """A new :class:`Splats` with only the Gaussians where ``keep [N]`` (bool) is True."""
        return Splats(*(getattr(self, k).detach()[keep] for k in PARAM_NAMES))


def neighbour_log_scales(points: np.ndarray, k: int = 3, factor: float = 1.0, min_scale: float = 1e-4) -> np.ndarray:
    """Log of ``factor`` x the mean distance to the ``k`` nearest neighbours, per point ``[N, 3]`` -> ``[N]``.

    The classic 3DGS initialisation, isotropic: a Gaussian's standard deviation matches the local
    point spacing so neighbouring splats just overlap. Distances are floored at ``min_scale``.
    """
    from scipy.spatial import cKDTree

    points = np.asarray(points, np.float64)
    n = len(points)
    if n < 2:
        return np.full(n, np.log(max(min_scale, 1e-2)), np.float32)
    kk = min(k, n - 1)
    d, _ = cKDTree(points).query(points, k=kk + 1)
    mean = np.maximum(d[:, 1:].mean(1) * factor, min_scale)
    return np.log(mean).astype(np.float32)


def logit(p: float) -> float:
    """``log(p / (1 - p))`` for ``p`` in (0, 1)."""
    return float(np.log(p / (1.0 - p)))
