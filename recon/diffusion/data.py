"""Training data for the grid generator: procedural grids, single-axis clips, pseudo-4D grids, task masks.

Tensors here are frames in [-1, 1], ``float32``, laid out ``[V, T, 3, H, W]`` for one grid and
``[B, V, T, 3, H, W]`` for a batch; a clip is a grid with ``V == 1`` (its frames on the T axis).
Conditioning masks are ``bool [B, V, T]``, True on frames given clean.

Sources:

* :func:`synth_bank` renders procedural grids with :func:`recon.synth.make_grid` (exact ground truth);
* :func:`clip_batch` cuts single-axis clips from them: one view over time (an ordinary video) or all
  views at one time (a freeze-time / camera-sweep video), with the first ``K`` frames given,
  ``K`` uniform in [0, 4] (seed section 1.1, masked video training);
* :func:`pseudo4d_grid` turns any video ``[T, H, W, 3]`` into a V x T grid by a smooth sequence of
  random 2D transforms over the view axis (seed section 1.1), so any video collection can pre-train
  the grid stage;
* :func:`grid_task_mask` is the 4D task: the first row (reference video) and the first ``k`` columns
  (freeze-time video, or the last frames of the previous chunk when extending autoregressively).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def to_model_range(images: np.ndarray) -> torch.Tensor:
    """``uint8 [..., H, W, 3] -> float32 [..., 3, H, W]`` in [-1, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(127.5).sub_(1.0)
    return x.movedim(-1, -3).contiguous()


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    """``float [..., 3, H, W]`` in [-1, 1] -> ``uint8 [..., H, W, 3]``."""
    x = frames.detach().float().clamp(-1.0, 1.0).add(1.0).mul(127.5).round()
    return x.movedim(-3, -1).to(torch.uint8).cpu().numpy()


def synth_bank(seeds: list[int], views: int, frames: int, size: tuple[int, int], scene: str = "random") -> torch.Tensor:
    """Render one procedural grid per seed: ``[len(seeds), views, frames, 3, H, W]`` in [-1, 1]."""
    from recon.synth import make_grid

    out = [to_model_range(make_grid(scene=scene, views=views, frames=frames, size=size, seed=s).images) for s in seeds]
    return torch.stack(out)


def downsample(frames: torch.Tensor, factor: int) -> torch.Tensor:
    """Box-filter ``[..., 3, H, W]`` by an integer ``factor``."""
    if factor == 1:
        return frames
    lead = frames.shape[:-3]
    x = F.avg_pool2d(frames.reshape(-1, *frames.shape[-3:]), factor)
    return x.reshape(*lead, *x.shape[-3:])


# --- masks -----------------------------------------------------------------------------------------
def prefix_mask(batch: int, length: int, k: torch.Tensor) -> torch.Tensor:
    """Clip masks ``[B, 1, length]``: the first ``k[b]`` frames are given."""
    return (torch.arange(length)[None] < k[:, None]).view(batch, 1, length)


def grid_task_mask(views: int, times: int, known_times: int = 1) -> torch.Tensor:
    """``[views, times]`` bool: the first row (reference video) and the first ``known_times`` columns."""
    m = torch.zeros(views, times, dtype=torch.bool)
    m[0] = True
    m[:, :known_times] = True
    return m


def sample_known_times(batch: int, times: int, gen: torch.Generator, fill_frac: float = 0.5) -> torch.Tensor:
    """Columns given per grid, ``[B]``: 1 (fill from a freeze-time video) with probability ``fill_frac``,
    else 2..times-1 (the overlap of an autoregressive extension)."""
    k = torch.ones(batch, dtype=torch.long)
    ext = torch.rand(batch, generator=gen) >= fill_frac
    if times > 2:
        k[ext] = torch.randint(2, times, (int(ext.sum()),), generator=gen)
    return k


def grid_masks(batch: int, views: int, times: int, gen: torch.Generator, fill_frac: float = 0.5) -> torch.Tensor:
    """Task masks ``[B, V, T]`` for a batch of grids (see :func:`sample_known_times`)."""
    k = sample_known_times(batch, times, gen, fill_frac)
    return torch.stack([grid_task_mask(views, times, int(kb)) for kb in k])


# --- batches ---------------------------------------------------------------------------------------
def _augment(grids: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal flip and view-order reversal per grid ``[B, V, T, 3, H, W]``."""
    out = grids.clone()
    flip = torch.rand(grids.shape[0], generator=gen) < 0.5
    out[flip] = out[flip].flip(-1)
    rev = torch.rand(grids.shape[0], generator=gen) < 0.5
    out[rev] = out[rev].flip(1)
    return out


def grid_batch(bank: torch.Tensor, batch: int, views: int, times: int, gen: torch.Generator,
               fill_frac: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Random ``views x times`` windows of banked grids ``[N, V0, T0, 3, H, W]``.

    Returns frames ``[B, views, times, 3, H, W]`` and task masks ``[B, views, times]``.
    """
    N, V0, T0 = bank.shape[:3]
    idx = torch.randint(N, (batch,), generator=gen)
    v0 = torch.randint(V0 - views + 1, (batch,), generator=gen)
    t0 = torch.randint(T0 - times + 1, (batch,), generator=gen)
    x = torch.stack([bank[i, a : a + views, b : b + times] for i, a, b in zip(idx.tolist(), v0.tolist(), t0.tolist())])
    return _augment(x, gen), grid_masks(batch, views, times, gen, fill_frac)


def clip_batch(bank: torch.Tensor, batch: int, length: int, gen: torch.Generator, max_given: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Single-axis clips from banked grids: half videos (one view over time), half freeze-time sweeps.

    Returns clips ``[B, 1, length, 3, H, W]`` and masks ``[B, 1, length]`` keeping the first ``K``
    frames, ``K`` uniform in ``[0, min(max_given, length - 1)]``.
    """
    N, V0, T0 = bank.shape[:3]
    clips = []
    for _ in range(batch):
        i = int(torch.randint(N, (1,), generator=gen))
        if bool(torch.rand(1, generator=gen) < 0.5) and T0 >= length:
            v = int(torch.randint(V0, (1,), generator=gen))
            t = int(torch.randint(T0 - length + 1, (1,), generator=gen))
            clips.append(bank[i, v, t : t + length])
        else:
            t = int(torch.randint(T0, (1,), generator=gen))
            v = int(torch.randint(V0 - length + 1, (1,), generator=gen))
            clips.append(bank[i, v : v + length, t])
    x = torch.stack(clips)[:, None]  # [B, 1, length, 3, H, W]
    k = torch.randint(0, min(max_given, length - 1) + 1, (batch,), generator=gen)
    return _augment(x, gen), prefix_mask(batch, length, k)


# --- pseudo-4D -------------------------------------------------------------------------------------
def random_view_homographies(views: int, gen: torch.Generator, strength: float = 1.0) -> torch.Tensor:
    """``[views, 3, 3]`` homographies in normalised coordinates ([-1, 1] both axes), identity for view 0,
    moving smoothly (linearly in the parameters) to a random end transform at the last view:
    rotation up to 10 deg, scale 0.85..1.2, shift up to 0.25, perspective up to 0.15 (times ``strength``)."""

    def u(lo: float, hi: float) -> float:
        return lo + (hi - lo) * float(torch.rand(1, generator=gen))

    ang = math.radians(u(-10, 10)) * strength
    scale = math.exp(u(math.log(0.85), math.log(1.2)) * strength)
    tx, ty = u(-0.25, 0.25) * strength, u(-0.1, 0.1) * strength
    px, py = u(-0.15, 0.15) * strength, u(-0.05, 0.05) * strength
    out = []
    for v in range(views):
        a = v / max(views - 1, 1)
        s = scale**a
        c, sn = math.cos(ang * a), math.sin(ang * a)
        out.append(torch.tensor([[s * c, -s * sn, tx * a], [s * sn, s * c, ty * a], [px * a, py * a, 1.0]], dtype=torch.float32))
    return torch.stack(out)


def warp_homography(frames: torch.Tensor, H: torch.Tensor) -> torch.Tensor:
    """Warp ``[N, C, h, w]`` by ``H [3, 3]`` (normalised coords, output -> input map); borders replicate."""
    N, C, h, w = frames.shape
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    pts = torch.stack([xs, ys, torch.ones_like(xs)], -1) @ H.T  # [h, w, 3]
    grid = pts[..., :2] / pts[..., 2:].clamp_min(1e-3)
    return F.grid_sample(frames, grid[None].expand(N, h, w, 2), mode="bilinear", padding_mode="border", align_corners=True)


def pseudo4d_grid(video: np.ndarray | torch.Tensor, views: int, gen: torch.Generator, strength: float = 1.0) -> torch.Tensor:
    """A pseudo-4D grid from an ordinary video: view ``v`` is the whole video under the 2D transform ``H_v``.

    Args:
        video: ``uint8 [T, H, W, 3]`` (numpy) or ``float [T, 3, H, W]`` in [-1, 1] (torch).
        views: number of views V; view 0 is the video itself.
        gen: random generator (the transforms).
        strength: scales the transform range (0 gives V copies of the video).

    Returns:
        ``float32 [V, T, 3, H, W]`` in [-1, 1].
    """
    x = to_model_range(video) if isinstance(video, np.ndarray) else video.float()
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected a video [T, H, W, 3] (uint8) or [T, 3, H, W] (float), got {list(x.shape)}")
    Hs = random_view_homographies(views, gen, strength)
    return torch.stack([warp_homography(x, Hs[v]) for v in range(views)])


def pseudo_batch(videos: torch.Tensor, batch: int, views: int, times: int, gen: torch.Generator,
                 fill_frac: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Pseudo-4D grids from videos ``[N, T0, 3, H, W]`` (random time windows): frames and task masks."""
    N, T0 = videos.shape[:2]
    grids = []
    for _ in range(batch):
        i = int(torch.randint(N, (1,), generator=gen))
        t = int(torch.randint(T0 - times + 1, (1,), generator=gen))
        grids.append(pseudo4d_grid(videos[i, t : t + times], views, gen))
    x = torch.stack(grids)
    return _augment(x, gen), grid_masks(batch, views, times, gen, fill_frac)
