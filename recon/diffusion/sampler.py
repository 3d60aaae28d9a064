"""Sampling: rectified flow with diffusers' FlowMatchEulerDiscreteScheduler, grid filling, autoregression.

Frames are ``float`` in [-1, 1], ``[B, V, T, 3, H, W]``; masks ``bool [B, V, T]`` (True = given).
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from recon.diffusion.model import SIGMA_MIN, GridTransformer, anchor_frames
from recon.errors import InputError


def make_scheduler() -> FlowMatchEulerDiscreteScheduler:
    """The training / sampling schedule: ``x_sigma = (1 - sigma) x0 + sigma noise``, timesteps ``sigma * 1000``."""
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)


@torch.no_grad()
def sample(
    model: GridTransformer,
    cond: torch.Tensor,  # [B, V, T, 3, H, W] given frames (anything where cond_mask is False)
    cond_mask: torch.Tensor,  # [B, V, T] bool
    steps: int = 20,
    generator: torch.Generator | None = None,
    video_only: bool = False,
    start_sigma: float = 1.0,
) -> torch.Tensor:
    """Generate the frames not given: ``[B, V, T, 3, H, W]`` in [-1, 1], given frames copied through.

    ``steps`` Euler steps of the probability-flow ODE from noise level ``start_sigma`` down to 0 (the
    last step lands on the network's clean-frame prediction). ``start_sigma = 1`` starts from pure
    noise; below 1 the path starts from the anchor frames (:func:`recon.diffusion.model.anchor_frames`,
    the model's anchor rule) noised to that level, ``(1 - s) anchor + s noise`` (SDEdit-style: less
    sample variance, closer to the given frames). ``steps=1, start_sigma=1`` is the network's
    posterior-mean estimate from pure noise.

    ``generator`` is a CPU generator (the initial noise is drawn on the CPU, so results do not depend
    on the device).
    """
    if not SIGMA_MIN < start_sigma <= 1.0:
        raise ValueError(f"start_sigma must be in ({SIGMA_MIN}, 1], got {start_sigma}")
    model.eval()
    dev = next(model.parameters()).device
    cond, cond_mask = cond.to(dev), cond_mask.to(dev)
    sched = make_scheduler()
    if start_sigma >= 1.0:
        sched.set_timesteps(steps, device=dev)
    else:  # the default spacing (uniform in sigma from 1 to SIGMA_MIN), starting at start_sigma
        sched.set_timesteps(sigmas=np.linspace(start_sigma, SIGMA_MIN, steps).tolist(), device=dev)
    x = torch.randn(cond.shape, generator=generator, dtype=torch.float32).to(dev)
    if start_sigma < 1.0:
        rule = model.config.anchor if model.config.prediction != "velocity" else "nearest"
        x = (1.0 - start_sigma) * anchor_frames(cond, cond_mask, rule) + start_sigma * x
    for t in sched.timesteps:
        v = model(x, t.expand(x.shape[0]), cond, cond_mask, video_only=video_only)
        x = sched.step(v, t, x).prev_sample
    m = cond_mask[:, :, :, None, None, None]
    return torch.where(m, cond, x.clamp(-1.0, 1.0))


def check_grid_size(model: GridTransformer, views: int, times: int, height: int, width: int) -> None:
    """:class:`InputError` when the model cannot produce a ``views x times`` grid of ``height x width`` frames."""
    cfg = model.config
    if (height, width) != (cfg.height, cfg.width):
        raise InputError(f"frames are {width}x{height} but this checkpoint generates {cfg.width}x{cfg.height} frames", field="size")
    if views < 2 or views > cfg.max_views:
        raise InputError(f"{views} views requested; this checkpoint generates 2..{cfg.max_views} views (frames of the freeze-time video)", field="views")
    if times < 2:
        raise InputError(f"{times} time steps requested; at least 2 are needed (frames of the reference video)", field="frames")


@torch.no_grad()
def fill_grid(
    model: GridTransformer,
    reference: torch.Tensor,  # [T, 3, H, W] one view over time (view 0)
    freeze_time: torch.Tensor,  # [V, 3, H, W] all views at the first time (time 0)
    steps: int = 20,
    seed: int = 0,
    context: int = 1,
    start_sigma: float = 1.0,
) -> torch.Tensor:
    """Fill a ``V x T`` grid ``[V, T, 3, H, W]`` from its first row and first column.

    ``T`` may exceed the model's ``max_times``: the grid is then generated in chunks of
    ``max_times`` time steps, each chunk conditioned on the reference frames of its times and on
    all views of its first ``context`` times, taken from the previous chunk (autoregressive
    extension). The last chunk is aligned to the end of the video and conditions on every time it
    shares with what is already generated. Cell (0, 0) is taken from the reference video.
    ``steps`` and ``start_sigma``: see :func:`sample`.
    """
    reference, freeze_time = reference.detach().float().cpu(), freeze_time.detach().float().cpu()
    T, V = reference.shape[0], freeze_time.shape[0]
    H, W = reference.shape[-2:]
    if freeze_time.shape[-2:] != (H, W):
        raise InputError(f"reference frames are {W}x{H} but freeze-time frames are {freeze_time.shape[-1]}x{freeze_time.shape[-2]}", field="freeze-time")
    check_grid_size(model, V, T, H, W)
    chunk = model.config.max_times
    if not 1 <= context < chunk:
        raise InputError(f"context {context} must be in [1, {chunk - 1}] for chunks of {chunk} time steps", field="context")
    gen = torch.Generator().manual_seed(seed)
    out = torch.zeros(V, T, 3, H, W)
    out[0] = reference
    out[1:, 0] = freeze_time[1:]
    done = 1  # time steps whose every view is known
    start = 0
    while done < T:
        start = min(start, T - min(chunk, T))
        stop = min(start + chunk, T)
        known = torch.zeros(V, stop - start, dtype=torch.bool)
        known[0] = True
        known[:, : max(done - start, 0)] = True
        gen_frames = sample(model, out[None, :, start:stop], known[None], steps=steps, generator=gen,
                           start_sigma=start_sigma)[0].cpu()
        out[:, start:stop] = torch.where(known[:, :, None, None, None], out[:, start:stop], gen_frames)
        done = stop
        start = stop - context
    return out
