"""The grid video transformer: a 4D (views x times) denoiser in pixel space.

Frames are patchified to tokens; each block runs

* spatial attention within one frame (``N`` tokens),
* cross-view attention over the tokens of all frames at the same time step (``V * N`` tokens) and
  cross-time attention over the tokens of all frames of the same view (``T * N`` tokens), computed in
  parallel on two token streams and merged by a synchronisation layer (:mod:`recon.diffusion.sync`),
  or sequentially (cross-view, then cross-time) for the ablation,
* an MLP,

each sub-layer modulated by the noise level (adaLN with a zero-initialised gate). Conditioning frames
are given clean, with a per-frame mask channel. :meth:`GridTransformer.forward` returns the
rectified-flow velocity ``noise - clean`` of every frame (the loss ignores the conditioning frames);
with ``prediction="anchored"`` the network outputs the clean frame as a correction of its *anchor*,
a given frame of the grid (:func:`anchor_frames`: the nearest one, or with ``anchor="same_view"`` the
nearest one of the cell's own view), and the velocity follows from it
(``v = (x_sigma - x0_hat) / sigma``): an untrained network then reproduces the matching copy
baseline and training learns what moves between views and times. ``prediction="blended"`` adds a
skip connection from the noisy input (EDM-style preconditioning, :func:`blend_coefficients`): the network
corrects the per-pixel optimal linear blend of the anchor and the rescaled noisy frame, so it no longer has
to carry pixel values through its narrow tokens to denoise (an ``anchored`` network must output
``x_sigma - anchor`` to use its input at low noise, which a 64-wide model learns badly).
``prediction="velocity"`` is the plain velocity head.

In ``video_only`` mode (the base stage) a grid is a batch of clips ``[B, 1, F]``: blocks run spatial
attention, cross-time attention and the MLP only; the cross-view attention and the sync layers idle.
:meth:`GridTransformer.inherit_cross_view` then copies the trained temporal weights into the
cross-view attention before the grid stage, as the seed inherits both from its base video model.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from recon.diffusion.sync import SYNC_MODES, make_sync

ORDERS = ("parallel", "sequential")
DROP_SYNC = ("none", "first", "last")
PREDICTIONS = ("anchored", "blended", "velocity")
ANCHORS = ("nearest", "same_view")
SIGMA_MIN = 1e-3  # smallest noise level trained and sampled (the scheduler's last step)


def anchor_index(cond_mask: torch.Tensor, rule: str = "nearest") -> torch.Tensor:
    """For ``cond_mask [B, V, T]`` the anchor cell of every cell -> ``long [B, V, T, 2]`` (view, time).

    ``rule="nearest"``: the nearest given cell in grid distance ``|dv| + |dt|``; ties go to the same
    view, then the earlier time. ``rule="same_view"``: the given cell of the same view nearest in time
    (ties: the earlier time), falling back to the ``nearest`` rule for a view with nothing given. Both
    are the rules of :func:`recon.diffusion.metrics.nearest_given`. Cells of a grid with nothing given
    map to -1.
    """
    B, V, T = cond_mask.shape
    dev = cond_mask.device
    vv, tt = torch.meshgrid(torch.arange(V, device=dev), torch.arange(T, device=dev), indexing="ij")
    cells = torch.stack([vv.reshape(-1), tt.reshape(-1)], -1)  # [V*T, 2]
    d = (cells[:, None, 0] - cells[None, :, 0]).abs() + (cells[:, None, 1] - cells[None, :, 1]).abs()  # [cell, cand]
    other_view = (cells[:, None, 0] != cells[None, :, 0]).long()
    key = d * 4 * V * T + other_view * 2 * V * T + cells[None, :, 1]
    if rule == "same_view":
        key = key + other_view * 4 * V * T * (V + T)  # any frame of the same view beats every other view
    elif rule != "nearest":
        raise ValueError(f"unknown anchor rule {rule!r} (expected one of {ANCHORS})")
    key = key[None].expand(B, -1, -1).masked_fill(~cond_mask.reshape(B, 1, V * T), torch.iinfo(torch.long).max)
    best = key.argmin(dim=-1)  # [B, V*T]
    out = cells[best].view(B, V, T, 2)
    return out.masked_fill(~cond_mask.reshape(B, -1).any(-1)[:, None, None, None], -1)


def anchor_frames(cond: torch.Tensor, cond_mask: torch.Tensor, rule: str = "nearest") -> torch.Tensor:
    """The anchor frame of every cell (:func:`anchor_index`), ``[B, V, T, 3, H, W]`` (zeros where nothing is given)."""
    B, V, T = cond_mask.shape
    idx = anchor_index(cond_mask, rule)
    flat = idx[..., 0].clamp_min(0) * T + idx[..., 1].clamp_min(0)  # [B, V, T]
    frames = cond.reshape(B, V * T, *cond.shape[3:])
    out = torch.gather(frames, 1, flat.reshape(B, V * T, 1, 1, 1).expand(-1, -1, *cond.shape[3:]))
    return out.view_as(cond) * (idx[..., :1] >= 0).to(cond.dtype)[..., None, None]


def blend_coefficients(sigma: torch.Tensor, anchor_std: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Coefficients of ``prediction="blended"``: ``x0_hat = c_in * x_sigma + c_anchor * anchor + c_out * F``.

    ``x_sigma = (1 - s) x0 + s noise``. ``x_sigma / (1 - s)`` estimates x0 with error std ``s / (1 - s)``,
    the anchor with error std ``anchor_std`` (an assumed, per-pixel constant); their inverse-variance
    blend is ``(anchor_std^2 (1 - s) x_sigma + s^2 anchor) / den`` with ``den = anchor_std^2 (1 - s)^2 + s^2``,
    whose error std ``anchor_std s / sqrt(den)`` scales the network output ``F``. At ``s = 1`` this is the
    anchor (an untrained network reproduces the copy baseline), at ``s = 0`` the input itself.
    ``sigma`` is broadcastable; returns ``(c_in, c_anchor, c_out)`` of its shape.
    """
    s = sigma.clamp(0.0, 1.0)
    a2 = anchor_std * anchor_std
    den = a2 * (1.0 - s) ** 2 + s * s
    return a2 * (1.0 - s) / den, s * s / den, anchor_std * s / den.sqrt()


def timestep_embedding(sigma: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of the noise level ``sigma`` ``[B]`` in [0, 1] -> ``[B, dim]``."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=sigma.device, dtype=torch.float32) / half)
    args = (sigma.float() * 1000.0)[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class Attention(nn.Module):
    """Multi-head self-attention over ``[B, L, D]`` tokens."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)  # [B, heads, L, D/heads]
        return self.out(y.transpose(1, 2).reshape(B, L, D))


class Modulated(nn.Module):
    """``x + gate * f(norm(x) * (1 + scale) + shift)`` with (shift, scale, gate) from the noise embedding."""

    def __init__(self, dim: int, temb_dim: int, body: nn.Module):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.body = body
        self.ada = nn.Linear(temb_dim, 3 * dim)
        nn.init.zeros_(self.ada.weight)
        nn.init.zeros_(self.ada.bias)

    def forward(self, x: torch.Tensor, temb: torch.Tensor, group: str) -> torch.Tensor:
        """``x [B, V, T, N, D]``; ``group`` chooses the attention set: frame | view | time | token."""
        B, V, T, N, D = x.shape
        shift, scale, gate = (p.view(B, 1, 1, 1, D) for p in self.ada(temb).chunk(3, dim=-1))
        h = self.norm(x) * (1.0 + scale) + shift
        if group == "frame":  # within one frame
            h = self.body(h.reshape(B * V * T, N, D)).view(B, V, T, N, D)
        elif group == "view":  # all frames at one time step
            h = h.permute(0, 2, 1, 3, 4).reshape(B * T, V * N, D)
            h = self.body(h).view(B, T, V, N, D).permute(0, 2, 1, 3, 4)
        elif group == "time":  # all frames of one view
            h = self.body(h.reshape(B * V, T * N, D)).view(B, V, T, N, D)
        else:  # token-wise (MLP)
            h = self.body(h)
        return x + gate * h


class GridBlock(nn.Module):
    """One block: spatial attention, cross-view / cross-time attention (+ sync), MLP."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, temb_dim: int, sync: str, layer: int, depth: int):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.spatial = Modulated(dim, temb_dim, Attention(dim, heads))
        self.cross_view = Modulated(dim, temb_dim, Attention(dim, heads))
        self.cross_time = Modulated(dim, temb_dim, Attention(dim, heads))
        self.mlp = Modulated(dim, temb_dim, nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim)))
        self.sync = make_sync(sync, layer, depth, dim, temb_dim)

    def forward_parallel(self, x_v: torch.Tensor, x_t: torch.Tensor, temb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Two streams ``[B, V, T, N, D]`` in and out; equal streams are computed once."""
        same = x_v is x_t
        h_v = self.spatial(x_v, temb, "frame")
        h_t = h_v if same else self.spatial(x_t, temb, "frame")
        y_v = self.cross_view(h_v, temb, "view")
        y_t = self.cross_time(h_t, temb, "time")
        x_v, x_t = self.sync(y_v, y_t, temb)
        out_v = self.mlp(x_v, temb, "token")
        out_t = out_v if x_t is x_v else self.mlp(x_t, temb, "token")
        return out_v, out_t

    def forward_sequential(self, x: torch.Tensor, temb: torch.Tensor, video_only: bool = False) -> torch.Tensor:
        """One stream ``[B, V, T, N, D]``: spatial, (cross-view,) cross-time, MLP."""
        x = self.spatial(x, temb, "frame")
        if not video_only:
            x = self.cross_view(x, temb, "view")
        x = self.cross_time(x, temb, "time")
        return self.mlp(x, temb, "token")


class GridTransformer(ModelMixin, ConfigMixin):
    """Rectified-flow denoiser of a V x T grid of ``height x width`` RGB frames in [-1, 1].

    Args (the saved config):
        height, width: frame size in pixels (multiples of ``patch_size``).
        patch_size: square patch side; a frame has ``(height / p) * (width / p)`` tokens.
        width_dim: token width D; heads: attention heads; depth: number of blocks L.
        mlp_ratio: MLP hidden width / D.
        max_views, max_times: the largest V and T one forward pass takes (frame-index embeddings).
        sync: ``hard | soft | learned`` (see :mod:`recon.diffusion.sync`); unused when sequential.
        order: ``parallel`` (two streams + sync) or ``sequential`` (cross-view then cross-time).
        drop_sync: ``none | first | last``: blocks of the first / last third have no sync layer.
        prediction: ``anchored`` (clean frame as a correction of its anchor frame), ``blended`` (a
            correction of the blend of the anchor and the noisy input, :func:`blend_coefficients`) or
            ``velocity``.
        anchor: which given frame an anchored prediction corrects (:func:`anchor_index`): ``nearest``
            (grid distance) or ``same_view`` (the same camera's nearest given time: for the 4D task, the
            freeze-time frame of the cell's view).
    """

    config_name = "config.json"
    _supports_gradient_checkpointing = False

    @register_to_config
    def __init__(
        self,
        height: int = 32,
        width: int = 32,
        patch_size: int = 4,
        width_dim: int = 64,
        heads: int = 4,
        depth: int = 6,
        mlp_ratio: float = 2.0,
        max_views: int = 4,
        max_times: int = 4,
        sync: str = "learned",
        order: str = "parallel",
        drop_sync: str = "none",
        prediction: str = "anchored",
        anchor: str = "nearest",
        anchor_std: float = 0.15,
    ):
        super().__init__()
        if height % patch_size or width % patch_size:
            raise ValueError(f"frame size {height}x{width} is not a multiple of patch_size {patch_size}")
        if (sync not in SYNC_MODES or order not in ORDERS or drop_sync not in DROP_SYNC or prediction not in PREDICTIONS
                or anchor not in ANCHORS):
            raise ValueError(f"bad sync/order/drop_sync/prediction/anchor: {sync!r}, {order!r}, {drop_sync!r}, {prediction!r}, {anchor!r}")
        if not anchor_std > 0:
            raise ValueError(f"anchor_std must be > 0, got {anchor_std}")
        if width_dim % heads:
            raise ValueError(f"width_dim {width_dim} is not divisible by heads {heads}")
        D, p = width_dim, patch_size
        self.grid_hw = (height // p, width // p)
        n_tokens = self.grid_hw[0] * self.grid_hw[1]
        self.temb_dim = D
        self.patch_in = nn.Linear(4 * p * p, D)  # RGB + conditioning-mask channel per pixel
        self.pos_embed = nn.Parameter(torch.randn(n_tokens, D) * 0.02)
        self.time_embed = nn.Parameter(torch.randn(max_times, D) * 0.02)
        self.view_embed = nn.Parameter(torch.randn(max_views, D) * 0.02)
        self.noise_mlp = nn.Sequential(nn.Linear(D, D), nn.SiLU(), nn.Linear(D, D))
        third = depth // 3
        blocks = []
        for layer in range(depth):
            dropped = (drop_sync == "first" and layer < third) or (drop_sync == "last" and layer >= depth - third)
            # a sequential block has one stream and nothing to synchronise
            mode = "none" if dropped or order == "sequential" else sync
            blocks.append(GridBlock(D, heads, mlp_ratio, D, mode, layer, depth))
        self.blocks = nn.ModuleList(blocks)
        self.norm_out = nn.LayerNorm(D, elementwise_affine=False, eps=1e-6)
        self.ada_out = nn.Linear(D, 2 * D)
        self.patch_out = nn.Linear(D, 3 * p * p)
        for lin in (self.ada_out, self.patch_out):
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    # --- parameter groups ----------------------------------------------------------------------
    def sync_parameters(self) -> list[nn.Parameter]:
        """Parameters of the sync layers (empty for hard / soft sync)."""
        return [p for b in self.blocks for p in b.sync.parameters()]

    def cross_parameters(self) -> list[nn.Parameter]:
        """Cross-view and cross-time attention parameters plus the view-index embedding."""
        out = [self.view_embed]
        for b in self.blocks:
            out += list(b.cross_view.parameters()) + list(b.cross_time.parameters())
        return out

    @torch.no_grad()
    def inherit_cross_view(self) -> None:
        """Copy the (base-stage trained) cross-time attention and frame-index embedding into the cross-view ones."""
        for b in self.blocks:
            b.cross_view.load_state_dict(b.cross_time.state_dict())
        n = min(self.config.max_views, self.config.max_times)
        self.view_embed[:n].copy_(self.time_embed[:n])

    # --- patches -------------------------------------------------------------------------------
    def _patchify(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, V, T, C, H, W] -> [B, V, T, N, C * p * p]``."""
        B, V, T, C, H, W = x.shape
        p = self.config.patch_size
        x = x.reshape(B, V, T, C, H // p, p, W // p, p).permute(0, 1, 2, 4, 6, 3, 5, 7)
        return x.reshape(B, V, T, (H // p) * (W // p), C * p * p)

    def _unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, V, T, N, 3 * p * p] -> [B, V, T, 3, H, W]``."""
        B, V, T, N, _ = x.shape
        p = self.config.patch_size
        gh, gw = self.grid_hw
        x = x.view(B, V, T, gh, gw, 3, p, p).permute(0, 1, 2, 5, 3, 6, 4, 7)
        return x.reshape(B, V, T, 3, gh * p, gw * p)

    # --- forward -------------------------------------------------------------------------------
    def forward(
        self,
        sample: torch.Tensor,  # [B, V, T, 3, H, W] noisy frames
        timestep: torch.Tensor | float,  # [B] or scalar, scheduler units: sigma * 1000
        cond: torch.Tensor,  # [B, V, T, 3, H, W] clean conditioning frames (ignored where cond_mask is False)
        cond_mask: torch.Tensor,  # [B, V, T] bool, True on conditioning frames
        video_only: bool = False,
        return_x0: bool = False,
    ) -> torch.Tensor:
        """Predicted velocity ``noise - clean`` ``[B, V, T, 3, H, W]`` (or the clean frames with ``return_x0``).

        ``video_only`` (base stage) needs ``V == 1``: the grid is a batch of clips over its T axis.
        """
        B, V, T, C, H, W = sample.shape
        cfg = self.config
        if C != 3 or (H, W) != (cfg.height, cfg.width):
            raise ValueError(f"expected frames [*, 3, {cfg.height}, {cfg.width}], got {list(sample.shape)}")
        if V > cfg.max_views or T > cfg.max_times:
            raise ValueError(f"grid {V}x{T} exceeds the model's {cfg.max_views}x{cfg.max_times}")
        if video_only and V != 1:
            raise ValueError("video_only expects clips as grids with V == 1")
        if cond.shape != sample.shape or cond_mask.shape != (B, V, T):
            raise ValueError(f"cond {list(cond.shape)} / cond_mask {list(cond_mask.shape)} do not match sample {list(sample.shape)}")
        timestep = torch.as_tensor(timestep, device=sample.device, dtype=torch.float32).reshape(-1).expand(B)
        temb = self.noise_mlp(timestep_embedding(timestep / 1000.0, self.temb_dim))  # [B, D]

        m = cond_mask.to(sample.dtype)[:, :, :, None, None, None]
        x_in = m * cond + (1.0 - m) * sample
        x_in = torch.cat([x_in, m.expand(B, V, T, 1, H, W)], dim=3)
        x = self.patch_in(self._patchify(x_in))  # [B, V, T, N, D]
        x = x + self.pos_embed[None, None, None] + self.time_embed[:T][None, None, :, None]
        if not video_only:
            x = x + self.view_embed[:V][None, :, None, None]

        if video_only or cfg.order == "sequential":
            for b in self.blocks:
                x = b.forward_sequential(x, temb, video_only=video_only)
        else:
            x_v = x_t = x
            for b in self.blocks:
                x_v, x_t = b.forward_parallel(x_v, x_t, temb)
            x = x_v if x_v is x_t else 0.5 * (x_v + x_t)

        shift, scale = (p.view(B, 1, 1, 1, -1) for p in self.ada_out(temb).chunk(2, dim=-1))
        out = self._unpatchify(self.patch_out(self.norm_out(x) * (1.0 + scale) + shift))
        sigma = (timestep / 1000.0).clamp_min(SIGMA_MIN).view(B, 1, 1, 1, 1, 1)
        if cfg.prediction == "velocity":
            return sample - sigma * out if return_x0 else out
        anchor = anchor_frames(cond, cond_mask, cfg.anchor)
        if cfg.prediction == "anchored":
            x0 = anchor + out
        else:  # blended
            c_in, c_anchor, c_out = blend_coefficients(timestep.view(B, 1, 1, 1, 1, 1) / 1000.0, cfg.anchor_std)
            x0 = c_in * sample + c_anchor * anchor + c_out * out
        return x0 if return_x0 else (sample - x0) / sigma
