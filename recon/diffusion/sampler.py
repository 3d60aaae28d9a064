"""Sampling: rectified flow with diffusers' FlowMatchEulerDiscreteScheduler, grid filling, autoregression.

Frames are ``float`` in [-1, 1], ``[B, V, T, 3, H, W]``; masks ``bool [B, V, T]`` (True = given).
"""

from __future__ import annotations

import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from recon.diffusion.model import GridTransformer
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
) -> torch.Tensor:
    """Generate the frames not given: ``[B, V, T, 3, H, W]`` in [-1, 1], given frames copied through.

    ``generator`` is a CPU generator (the initial noise is drawn on the CPU, so results do not depend
    on the device).
    """
    model.eval()
    dev = next(model.parameters()).device
    cond, cond_mask = cond.to(dev), cond_mask.to(dev)
    sched = make_scheduler()
    sched.set_timesteps(steps, device=dev)
    x = torch.randn(cond.shape, generator=generator, dtype=torch.float32).to(dev)
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
) -> torch.Tensor:
    """Fill a ``V x T`` grid ``[V, T, 3, H, W]`` from its first row and first column.

    ``T`` may exceed the model's ``max_times``: the grid is then generated in chunks of
    ``max_times`` time steps, each chunk conditioned on the reference frames of its times and on
    all views of its first ``context`` times, taken from the previous chunk (autoregressive
    extension). The last chunk is aligned to the end of the video and conditions on every time it
    shares with what is already generated. Cell (0, 0) is taken from the reference video.
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
        gen_frames = sample(model, out[None, :, start:stop], known[None], steps=steps, generator=gen)[0].cpu()
        out[:, start:stop] = torch.where(known[:, :, None, None, None], out[:, start:stop], gen_frames)
        done = stop
        start = stop - context
    return out
