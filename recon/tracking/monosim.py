"""``mono-sim``: a depth provider that errs like a monocular depth estimator (synthetic grids only).

The seed's tracker lifts pixels with *monocular* depth (4Real-Video, supplementary section 3,
via DELTA), whose errors are what the seed's pruning and view offsets are there to absorb. The
synthetic grids carry exact depth (``extras["depth"]``); this provider degrades it, per cell
``(view, time)``, the way a per-frame estimator's output (aligned to metric scale) is wrong:

1. **Smoothed depth edges with flying pixels.** An estimator regresses depth at its network
   resolution and upsamples, so a discontinuity becomes a ramp: inverse depth is blurred with a
   Gaussian of ``EDGE_SIGMA_FRAC x width`` pixels (at least 1 px), which leaves flat regions
   untouched and puts pixels *between* the foreground and the background in a band about
   ``4 x sigma`` wide around every occlusion edge -- the boundary floaters the seed prunes.
2. **Smooth low-frequency error.** A multiplicative field ``exp(e(x, y))``, ``e`` a random
   smooth field (a ``LOWFREQ_CELLS x LOWFREQ_CELLS`` grid of normal values, bicubically
   upsampled) with RMS ``LOWFREQ_RMS``: the shape error that remains after an affine alignment.
3. **Per-frame affine drift.** Each frame's inverse depth is mapped by ``a * d + b`` with
   ``log a ~ N(0, SCALE_SPREAD)`` and ``b ~ N(0, SHIFT_SPREAD) x`` the frame's median inverse
   depth: frames estimated one by one do not share one scale and shift.

Where the numbers come from (fixed before any ablation was run; never tuned on its outcome):

* ``LOWFREQ_RMS = 0.06``: the zero-shot AbsRel of current relative-depth models after a
  per-image scale-and-shift alignment is 0.04-0.08 on real benchmarks (Depth Anything, Yang et
  al. CVPR 2024, Table 2, ViT-L: NYUv2 0.043, KITTI 0.076); 0.06 is the middle of that range.
* ``SCALE_SPREAD = 0.05`` and ``SHIFT_SPREAD = 0.02``: the frame-to-frame residual of aligning
  each frame on its own is of the order of that AbsRel; no published per-frame drift statistic was
  at hand, so the spread is set to the same order (5 %), smaller in the shift. Stated as a choice.
* ``EDGE_SIGMA_FRAC = 1 / 256``: those models predict at ~518 px and are upsampled; a 1-2 px
  ramp at network resolution is ~1 / 256 of the image width (1 px at 256 px, 2 px at 512).

Deterministic: the noise of cell ``(v, t)`` is seeded from the grid's synthetic seed and the cell,
so every call (tracking, pointmap-init, the tests) sees the same estimate.
"""

from __future__ import annotations

import numpy as np
import torch

from recon.errors import InputError
from recon.grid import FrameGrid

LOWFREQ_RMS = 0.06
"""RMS of the log-depth low-frequency error (see the module docstring for the source)."""
LOWFREQ_CELLS = 4
"""The low-frequency field varies over a ``4 x 4`` grid of control values across the image."""
SCALE_SPREAD = 0.05
"""Standard deviation of each frame's log scale of inverse depth."""
SHIFT_SPREAD = 0.02
"""Standard deviation of each frame's inverse-depth shift, in units of its median inverse depth."""
EDGE_SIGMA_FRAC = 1.0 / 256.0
"""Edge blur (standard deviation, pixels) as a fraction of the image width (at least 1 px)."""


def _rng(grid: FrameGrid, v: int, t: int) -> np.random.Generator:
    seed = int((grid.meta.get("synth") or {}).get("seed", 0))
    return np.random.default_rng([seed, 7919, int(v), int(t)])


def edge_sigma(width: int) -> float:
    """The edge blur in pixels for images ``width`` pixels wide."""
    return max(1.0, EDGE_SIGMA_FRAC * width)


def degrade(depth: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One frame's estimate: ``depth [H, W]`` (z, > 0 where known, 0 unknown) -> ``[H, W]`` float32
    with the three errors of the module docstring (0 stays 0)."""
    import cv2

    H, W = depth.shape
    known = depth > 0
    if not known.any():
        return np.zeros((H, W), np.float32)
    inv = np.where(known, 1.0 / np.where(known, depth, 1.0), 0.0).astype(np.float64)
    # 1. edge ramps: a blur of inverse depth (normalised by the known pixels' weight)
    s = edge_sigma(W)
    k = int(2 * round(3 * s) + 1)
    num = cv2.GaussianBlur(inv, (k, k), s, borderType=cv2.BORDER_REPLICATE)
    den = cv2.GaussianBlur(known.astype(np.float64), (k, k), s, borderType=cv2.BORDER_REPLICATE)
    inv = np.where(known, num / np.maximum(den, 1e-12), 0.0)
    # 2. smooth multiplicative error of depth (= of inverse depth, with the sign flipped)
    coarse = rng.normal(0.0, 1.0, (LOWFREQ_CELLS, LOWFREQ_CELLS))
    field = cv2.resize(coarse, (W, H), interpolation=cv2.INTER_CUBIC)
    field *= LOWFREQ_RMS / max(float(np.sqrt(np.mean(field ** 2))), 1e-12)
    inv = inv * np.exp(-field)
    # 3. per-frame affine drift of inverse depth
    a = float(np.exp(rng.normal(0.0, SCALE_SPREAD)))
    b = float(rng.normal(0.0, SHIFT_SPREAD)) * float(np.median(inv[known]))
    inv = a * inv + b
    out = np.where(known & (inv > 0), 1.0 / np.maximum(inv, 1e-12), 0.0)
    return out.astype(np.float32)


def mono_sim_depth(grid: FrameGrid, cells: list[tuple[int, int]], req=None) -> torch.Tensor:
    """The ``mono-sim`` provider (a row of :data:`recon.tracking.depth.DEPTH_PROVIDERS`):
    ``float32 [len(cells), H, W]`` estimates of the grid's GT depth."""
    if "depth" not in grid.extras:
        raise InputError("the mono-sim depth provider degrades a synthetic grid's ground-truth depth "
                         "(extras['depth']); this grid has none (use --tracking.depth mvs or file)", grid.source,
                         "extras.depth")
    from recon.tracking.depth import gt_depth

    gt = gt_depth(grid, cells).numpy()
    return torch.from_numpy(np.stack([degrade(gt[i], _rng(grid, v, t)) for i, (v, t) in enumerate(cells)]))
