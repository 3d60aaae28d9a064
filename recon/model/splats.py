"""Isotropic Gaussian splats: the canonical 3D representation of the reconstruction.

Each Gaussian has a centre ``means [N, 3]`` (canonical coordinates: the central view's camera
frame at ``ref_time``, OpenCV), one natural-log standard deviation ``log_scales [N]``, a peak
opacity logit ``opacity_logits [N]`` and a colour ``colors [N, 3]`` in [0, 1] (stored raw and
clamped when rendered, so a colour fitted outside the range does not get stuck), plus optional
view-dependent terms ``sh_rest [N, K, 3]`` (real spherical harmonics of degree 1-3 beyond that
base colour, :mod:`recon.model.sh`; ``K = 0``: none, the colour is the same from every side), or
``[N, K, 1]``: one gain per harmonic that scales the base colour (the shading form, same module).
Isotropy is deliberate (4Real-Video, supplementary section 3): without an orientation the splats
cannot smear along a training ray, which reduces artefacts from unseen viewpoints.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from recon.errors import InputError

PARAM_NAMES = ("means", "log_scales", "opacity_logits", "colors")
OPTIONAL_PARAMS = ("sh_rest",)
"""Parameters a checkpoint may lack (older ones; splats without view-dependent colour)."""


class Splats(nn.Module):
    """Learnable isotropic Gaussians. Shapes: means [N, 3], log_scales [N], opacity_logits [N], colors [N, 3],
    sh_rest [N, K, 3] or, shading gains, [N, K, 1] (K = 0, 3, 8 or 15; None: 0)."""

    def __init__(self, means: Tensor, log_scales: Tensor, opacity_logits: Tensor, colors: Tensor,
                 sh_rest: Tensor | None = None):
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
        if sh_rest is None:
            sh_rest = torch.zeros(N, 0, 3, device=means.device)
        if sh_rest.dim() != 3 or sh_rest.shape[0] != N or sh_rest.shape[2] not in (1, 3):
            raise ValueError(f"inconsistent splat shapes: sh_rest {list(sh_rest.shape)} for {N} splats "
                             "(expected [N, K, 3], or [N, K, 1] shading gains)")
        from recon.model.sh import degree_of

        degree_of(sh_rest.shape[1])
        self.sh_rest = nn.Parameter(sh_rest.detach().float().clone())

    @property
    def num(self) -> int:
        return int(self.means.shape[0])

    def rgb(self) -> Tensor:
        """Colours clamped to [0, 1], ``[N, 3]``."""
        return self.colors.clamp(0.0, 1.0)

    @property
    def sh_degree(self) -> int:
        """Degree of the view-dependent colour (0: none)."""
        from recon.model.sh import degree_of

        return degree_of(self.sh_rest.shape[1])

    @property
    def sh_shading(self) -> bool:
        """True when :attr:`sh_rest` holds shading gains ``[N, K, 1]`` (:mod:`recon.model.sh`)."""
        return self.sh_rest.shape[2] == 1

    def set_sh_degree(self, degree: int, shading: bool | None = None) -> None:
        """Give the splats ``degree`` bands of view-dependent colour (new coefficients zero: the
        colours render unchanged); a lower degree drops the higher bands. ``shading``: gains that
        scale the base colour (``[N, K, 1]``) instead of additive coefficients; None keeps the
        current form. Changing the form starts from zero (the same colours). Call before building an optimiser."""
        from recon.model.sh import num_coefficients

        shading = self.sh_shading if shading is None else bool(shading)
        K, old = num_coefficients(degree), self.sh_rest.detach()
        new = torch.zeros(self.num, K, 1 if shading else 3, device=old.device)
        if shading == self.sh_shading:
            k = min(K, old.shape[1])
            new[:, :k] = old[:, :k]
        self.sh_rest = nn.Parameter(new)

    def sh_rest_rgb(self) -> Tensor:
        """The additive coefficients ``[N, K, 3]`` that render the same colours (for export; the
        shading gains times the clamped base colour, :func:`recon.model.sh.rgb_coefficients`)."""
        from recon.model.sh import rgb_coefficients

        return rgb_coefficients(self.colors, self.sh_rest)

    def view_rgb(self, means: Tensor, centres: Tensor, rotation: Tensor | None = None) -> Tensor:
        """Colours ``[C, N, 3]`` seen from camera centres ``centres [C, 3]`` (positions ``means [N, 3]``
        or ``[C, N, 3]``; see :func:`recon.model.sh.view_colours`), or ``[N, 3]`` (:meth:`rgb`)
        without view-dependent terms."""
        from recon.model.sh import view_colours

        if self.sh_rest.shape[1] == 0:
            return self.rgb()
        return view_colours(self.colors, self.sh_rest, means, centres, rotation)

    def opacities(self) -> Tensor:
        """Peak opacities in (0, 1), ``[N]``."""
        return torch.sigmoid(self.opacity_logits)

    def tensors(self) -> dict[str, Tensor]:
        """Detached CPU copies of the parameters, keyed by :data:`PARAM_NAMES` (for checkpoints;
        plus ``sh_rest`` when the splats have view-dependent colour)."""
        out = {k: getattr(self, k).detach().cpu().contiguous() for k in PARAM_NAMES}
        if self.sh_rest.shape[1]:
            out["sh_rest"] = self.sh_rest.detach().cpu().contiguous()
        return out

    @classmethod
    def from_tensors(cls, t: dict[str, Tensor], prefix: str = "", source: str = "checkpoint") -> "Splats":
        """Inverse of :meth:`tensors` (keys optionally prefixed)."""
        try:
            return cls(*(t[prefix + k] for k in PARAM_NAMES), t.get(prefix + "sh_rest"))
        except KeyError as e:
            raise InputError(f"missing tensor {e.args[0]!r}", source, "splats") from None
        except ValueError as e:
            raise InputError(str(e), source, "splats") from None

    def select(self, keep: Tensor) -> "Splats":
        """A new :class:`Splats` with only the Gaussians where ``keep [N]`` (bool) is True."""
        return Splats(*(getattr(self, k).detach()[keep] for k in PARAM_NAMES + OPTIONAL_PARAMS))


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
