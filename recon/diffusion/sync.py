"""Synchronisation layers: merge the cross-view and cross-time token updates of one block.

Every layer maps the two updates ``y_v`` (after cross-view attention) and ``y_t`` (after
cross-time attention), both ``[..., D]``, to the two token streams ``(x_v, x_t)`` of the next
block. Modes (4Real-Video supplementary, section 1.2):

* ``hard``    eq. 1: ``x = (y_v + y_t) / 2`` for both streams;
* ``soft``    eq. 2: ``x_v = (1 - w_l) y_v + w_l y_t``, ``x_t = (1 - w_l) y_t + w_l y_v`` with
  ``w_l = 0.1 + l / L * 0.4`` (``l`` the 0-based block index, ``L`` the number of blocks); the two
  streams stay separate until the next block;
* ``learned`` one linear layer ``[y_v, y_t] -> x`` per block, initialised to the average (so an
  untrained learned layer equals ``hard``), its output scaled and shifted by the noise level;
* ``none``    the streams pass through unmerged (used for blocks whose sync layer is dropped).
"""

from __future__ import annotations

import torch
from torch import nn

SYNC_MODES = ("hard", "soft", "learned")


def soft_weight(layer: int, num_layers: int) -> float:
    """``w_l = 0.1 + l / L * 0.4`` (seed eq. 2); ``layer`` is 0-based."""
    return 0.1 + layer / num_layers * 0.4


class HardSync(nn.Module):
    """Eq. 1: both streams become the average of the two updates."""

    def forward(self, y_v: torch.Tensor, y_t: torch.Tensor, temb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = 0.5 * (y_v + y_t)
        return x, x


class SoftSync(nn.Module):
    """Eq. 2: weighted exchange between the two streams with a fixed weight ``w``."""

    def __init__(self, weight: float):
        super().__init__()
        self.weight = float(weight)

    def forward(self, y_v: torch.Tensor, y_t: torch.Tensor, temb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.weight
        return (1.0 - w) * y_v + w * y_t, (1.0 - w) * y_t + w * y_v


class LearnedSync(nn.Module):
    """``x = (W [y_v, y_t] + b) * (1 + s(temb)) + h(temb)``, ``W = [I/2, I/2]``, ``b = s = h = 0`` at init.

    ``temb`` is the noise-level embedding ``[B, E]``; tokens are ``[B, ..., D]``.
    """

    def __init__(self, dim: int, temb_dim: int):
        super().__init__()
        self.mix = nn.Linear(2 * dim, dim)
        self.modulation = nn.Linear(temb_dim, 2 * dim)
        with torch.no_grad():
            eye = torch.eye(dim)
            self.mix.weight.copy_(torch.cat([0.5 * eye, 0.5 * eye], dim=1))
            self.mix.bias.zero_()
            self.modulation.weight.zero_()
            self.modulation.bias.zero_()

    def forward(self, y_v: torch.Tensor, y_t: torch.Tensor, temb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.mix(torch.cat([y_v, y_t], dim=-1))
        scale, shift = self.modulation(temb).chunk(2, dim=-1)  # [B, D] each
        shape = (temb.shape[0],) + (1,) * (x.ndim - 2) + (x.shape[-1],)
        x = x * (1.0 + scale.view(shape)) + shift.view(shape)
        return x, x


class NoSync(nn.Module):
    """A dropped sync layer: the two streams continue independently."""

    def forward(self, y_v: torch.Tensor, y_t: torch.Tensor, temb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return y_v, y_t


def make_sync(mode: str, layer: int, num_layers: int, dim: int, temb_dim: int) -> nn.Module:
    """The sync layer of block ``layer`` (0-based) for ``mode`` in ``hard | soft | learned | none``."""
    if mode == "hard":
        return HardSync()
    if mode == "soft":
        return SoftSync(soft_weight(layer, num_layers))
    if mode == "learned":
        return LearnedSync(dim, temb_dim)
    if mode == "none":
        return NoSync()
    raise ValueError(f"unknown sync mode {mode!r}; expected one of {', '.join(SYNC_MODES)} or none")
