"""The pure-PyTorch twin of the compositing kernels (backend ``torch``).

Readable and tile-free, differentiable by autograd, and bound to the same rules as the C++
and CUDA kernels: a splat touches a pixel inside its footprint box where
``q <= MAHALANOBIS_MAX`` and ``alpha = min(ALPHA_MAX, opacity * exp(-q / 2)) >= ALPHA_MIN``;
splats are composited front to back in the shared depth ``order``; a pixel stops *before* the
splat that would bring its transmittance below ``TRANSMITTANCE_MIN``.

Instead of a per-pixel loop it forms every (pixel, splat) pair inside the footprint boxes,
sorts the pairs by (pixel, depth rank) and gets each pair's transmittance from a segmented
cumulative sum of ``log(1 - alpha)`` (in float64) -- the same product the kernels take one
factor at a time.
"""

from __future__ import annotations

import torch
from torch import Tensor

from recon.render.constants import ALPHA_MAX, ALPHA_MIN, MAHALANOBIS_MAX, TRANSMITTANCE_MIN


def composite_reference(
    means2d: Tensor,  # [C, N, 2] pixel coordinates
    conics: Tensor,  # [C, N, 3] inverse covariance [a, b, c]
    opacities: Tensor,  # [C, N] in (0, 1)
    colors: Tensor,  # [C, N, D]
    depths: Tensor,  # [C, N] camera-space z
    bbox: Tensor,  # [C, N, 4] int32 [x0, y0, x1, y1) pixel boxes, empty when culled
    order: Tensor,  # [C, N] int64 front-to-back order
    width: int,
    height: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """Composite on black. Returns rgb [C, H, W, D], alpha [C, H, W, 1] and the
    unnormalised expected depth ``sum_i w_i z_i`` [C, H, W, 1]."""
    outs = [
        _composite_one(means2d[c], conics[c], opacities[c], colors[c], depths[c], bbox[c], order[c], width, height)
        for c in range(means2d.shape[0])
    ]
    return tuple(torch.stack(parts, dim=0) for parts in zip(*outs))  # type: ignore[return-value]


def _composite_one(
    means2d: Tensor,  # [N, 2]
    conics: Tensor,  # [N, 3]
    opacities: Tensor,  # [N]
    colors: Tensor,  # [N, D]
    depths: Tensor,  # [N]
    bbox: Tensor,  # [N, 4]
    order: Tensor,  # [N]
    width: int,
    height: int,
) -> tuple[Tensor, Tensor, Tensor]:
    device, dtype = means2d.device, means2d.dtype
    D = colors.shape[-1]
    n_pix = width * height

    # Visible splats front to back; a splat's position in this list is its depth rank.
    boxes = bbox[order].long()  # [N, 4]
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    ids = order[keep]  # [M] original indices, front to back
    boxes = boxes[keep]
    box_w = boxes[:, 2] - boxes[:, 0]
    counts = box_w * (boxes[:, 3] - boxes[:, 1])  # [M] pixels in each box

    # Every (pixel, splat) pair inside the boxes.
    rank = torch.repeat_interleave(torch.arange(ids.numel(), device=device), counts)  # [P]
    first = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    local = torch.arange(rank.numel(), device=device) - first
    px = boxes[rank, 0] + local % box_w[rank]
    py = boxes[rank, 1] + local // box_w[rank]
    g = ids[rank]

    dx = px.to(dtype) + 0.5 - means2d[g, 0]
    dy = py.to(dtype) + 0.5 - means2d[g, 1]
    a, b, c = conics[g].unbind(-1)
    q = a * dx * dx + 2.0 * b * dx * dy + c * dy * dy
    alpha = torch.clamp(opacities[g] * torch.exp(-0.5 * q), max=ALPHA_MAX)
    hit = (q <= MAHALANOBIS_MAX) & (alpha >= ALPHA_MIN)
    pix = (py * width + px)[hit]
    rank, g, alpha = rank[hit], g[hit], alpha[hit]

    # Sort pairs by (pixel, depth rank): each pixel's splats become one contiguous run.
    perm = torch.argsort(pix * max(ids.numel(), 1) + rank)
    pix, g, alpha = pix[perm], g[perm], alpha[perm]

    # Transmittance after each pair = prod over its run so far of (1 - alpha).
    log_t = torch.log1p(-alpha.double())
    csum = torch.cumsum(log_t, 0)
    run_start = torch.ones_like(pix, dtype=torch.bool)
    run_start[1:] = pix[1:] != pix[:-1]
    start_idx = torch.cummax(torch.where(run_start, torch.arange(pix.numel(), device=device), 0), 0).values
    before_run = csum[start_idx] - log_t[start_idx]
    t_after = torch.exp(csum - before_run)
    t_before = torch.exp(csum - log_t - before_run)
    # The first pair that would push T below the floor ends the pixel; later pairs follow it.
    used = t_after >= TRANSMITTANCE_MIN
    weight = (alpha.double() * t_before)[used].to(dtype)  # [P'] w_i = alpha_i T_i
    pix, g = pix[used], g[used]

    rgb = torch.zeros(n_pix, D, device=device, dtype=dtype).index_add(0, pix, weight[:, None] * colors[g])
    acc = torch.zeros(n_pix, device=device, dtype=dtype).index_add(0, pix, weight)
    depth = torch.zeros(n_pix, device=device, dtype=dtype).index_add(0, pix, weight * depths[g])
    return rgb.view(height, width, D), acc.view(height, width, 1), depth.view(height, width, 1)
