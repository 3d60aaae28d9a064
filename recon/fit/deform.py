"""Deform stage: fit the temporal deformation field (and fine-tune the splats) on the whole grid.

Cell (view i, time j) is rendered with positions ``canonical + dp_i^v + dp_j^t`` (see
:mod:`recon.model.deform`), viewmat ``poses[i, j]`` and ``K[i, j]``; the loss is 3DGS's
``(1 - 0.2) L1 + 0.2 (1 - SSIM)`` over the training cells (held-out cells are never rendered
during the fit). Schedule: ``warmup`` steps on the freeze-time cells only (the MLP, zero at
start, is not used, so the canonical splats settle first), then random batches of training
cells (each batch: views at one time); position and MLP learning rates decay log-linearly (3DGS / Deformable-3DGS).

Regularisers (weights in :class:`DeformConfig`, lengths measured in ``unit`` = the median
Gaussian scale, so the weights do not depend on the scene's units):

* ``time_smooth``: mean ``|dp^t(x, t) - dp^t(x, t + dt)|^2 / unit^2`` over 1024 random points at a
  random time, ``dt`` = half the mean time step -- motion between grid times stays smooth;
* ``view_offset``: mean ``|correction|^2 / unit^2`` of the learnable part of dp_i^v -- it stays a
  small correction of the tracked offsets.

Optional pruning during the fit: every ``prune_every`` steps, Gaussians with opacity below
``prune_opacity`` are removed (Adam moments of the rest are kept). Densification is not done:
the tracks already give a dense point set at the input resolution.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor, nn

from recon.fit.canonical import Canonical
from recon.fit.losses import photometric_loss
from recon.fit.schedule import exp_decay, prune_adam_state, time_batches
from recon.grid import FrameGrid
from recon.model.deform import DeformField
from recon.model.scene import DeformableScene


@dataclass
class DeformConfig:
    """Options of the deform stage (learning rates for Adam)."""

    iterations: int = 1000
    """Total optimisation steps (warm-up included)."""
    warmup: int = 100
    """First steps on freeze-time cells only, without the temporal MLP."""
    cells_per_step: int = 3
    """Grid cells rendered per step (views of one time, so the MLP runs once per step)."""
    lr_means: float = 2e-4
    """Canonical positions, in units of the scene radius (median distance to the central camera)."""
    lr_means_final: float = 2e-6
    lr_mlp: float = 1e-3
    lr_mlp_final: float = 1e-5
    lr_colors: float = 5e-3
    lr_opacity: float = 0.03
    lr_scales: float = 5e-3
    lr_view_correction: float = 1e-4
    """Learnable view-offset correction, in units of the scene radius."""
    learn_view_offsets: bool = True
    """Optimise a correction of the tracked dp_i^v (regularised by ``view_offset_reg``)."""
    view_offset_reg: float = 0.01
    time_smooth_reg: float = 0.01
    ssim_weight: float = 0.2
    pos_freqs: int = 6
    time_freqs: int = 4
    mlp_width: int = 64
    mlp_depth: int = 3
    prune_every: int = 0
    """Prune faded Gaussians every this many steps (0: never)."""
    prune_opacity: float = 0.005


def scene_from_canonical(grid: FrameGrid, canonical: Canonical, config: DeformConfig, view_offsets: bool = True) -> DeformableScene:
    """A :class:`DeformableScene` at the start of the deform stage: canonical splats, tracked
    offsets (zeros when ``view_offsets`` is False), identity temporal field."""
    means = canonical.splats.means.detach()
    dist = means.norm(dim=1)
    radius = float(dist.median()) if len(dist) else 1.0
    center = means.median(dim=0).values if len(means) else torch.zeros(3)
    offsets = canonical.view_offsets if view_offsets else torch.zeros_like(canonical.view_offsets)
    t = torch.as_tensor(grid.times, dtype=torch.float32)
    field = DeformField(offsets, center, radius, (float(t.min()), float(t.max())), config.pos_freqs, config.time_freqs,
                        config.mlp_width, config.mlp_depth, learn_view_offsets=config.learn_view_offsets and view_offsets)
    to_world = torch.eye(4)
    if grid.cameras.w2c is not None:
        to_world = torch.linalg.inv(torch.from_numpy(grid.cameras.w2c[int(grid.central_view), grid.ref_time])).float()
    splats = type(canonical.splats)(*(v for v in canonical.splats.tensors().values()))
    return DeformableScene(splats, field, canonical.poses, torch.from_numpy(grid.cameras.K).float(), t, (grid.height, grid.width), to_world)


def fit_deform(
    grid: FrameGrid,
    scene: DeformableScene,
    train_cells: list[tuple[int, int]],
    config: DeformConfig,
    device: torch.device,
    seed: int,
    backend: str = "auto",
    progress: Callable[[int, int, float], None] | None = None,
) -> dict[str, Any]:
    """Fit ``scene`` (in place, moved to ``device``) to the ``train_cells`` of ``grid``.

    Returns a report: loss trace (every 10 steps), first/last loss, Gaussian count at the end,
    Gaussians pruned during the fit.
    """
    if not train_cells:
        raise ValueError("no training cells")
    g = torch.Generator().manual_seed(seed)
    scene.splats.to(device)
    scene.field.to(device)
    sp, field = scene.splats, scene.field
    radius = float(field.radius)
    unit = float(sp.log_scales.detach().exp().median())
    images = grid.float_images()  # [V, T, H, W, 3] CPU
    groups = [
        {"params": [sp.means], "lr": config.lr_means * radius, "name": "means"},
        {"params": [sp.colors], "lr": config.lr_colors, "name": "colors"},
        {"params": [sp.opacity_logits], "lr": config.lr_opacity, "name": "opacity"},
        {"params": [sp.log_scales], "lr": config.lr_scales, "name": "scales"},
        {"params": list(field.mlp.parameters()), "lr": config.lr_mlp, "name": "mlp"},
    ]
    if field.learn_view_offsets:
        groups.append({"params": [field.view_correction], "lr": config.lr_view_correction * radius, "name": "view"})
    opt = torch.optim.Adam(groups, eps=1e-15)

    ref_cells = [c for c in train_cells if c[1] == grid.ref_time]
    warm = min(config.warmup, config.iterations) if ref_cells else 0
    batches = time_batches(ref_cells, warm, config.cells_per_step, g) if warm else []
    batches += time_batches(train_cells, config.iterations - warm, config.cells_per_step, g)
    times = scene.times.to(device)
    dt = 0.5 * float(times.max() - times.min()) / max(1, scene.num_times - 1)
    trace: list[float] = []
    pruned_total = 0
    for step, batch in enumerate(batches):
        for grp in opt.param_groups:
            if grp["name"] == "means":
                grp["lr"] = exp_decay(config.lr_means * radius, config.lr_means_final * radius, step, len(batches))
            elif grp["name"] == "mlp":
                grp["lr"] = 0.0 if step < warm else exp_decay(config.lr_mlp, config.lr_mlp_final, step - warm, len(batches) - warm)
        rgb, _, _, _ = scene.render(batch, backend=backend)
        target = images[[i for i, _ in batch], [j for _, j in batch]].to(device)
        loss = photometric_loss(rgb, target, config.ssim_weight)
        total = loss
        if step >= warm and config.time_smooth_reg > 0 and dt > 0:
            n = min(1024, sp.num)
            idx = torch.randint(0, sp.num, (n,), generator=g).to(device)
            t0 = float(times.min()) + float(torch.rand((), generator=g)) * float(times.max() - times.min())
            x = sp.means[idx]
            d = field.time_offset(x, t0 + dt) - field.time_offset(x, t0)
            total = total + config.time_smooth_reg * (d / unit).pow(2).sum(-1).mean()
        if field.learn_view_offsets and config.view_offset_reg > 0:
            total = total + config.view_offset_reg * (field.view_correction / unit).pow(2).sum(-1).mean()
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        if step % 10 == 0 or step == len(batches) - 1:
            trace.append(float(loss.detach()))
        if config.prune_every > 0 and step > 0 and step % config.prune_every == 0 and step < 0.8 * len(batches):
            pruned_total += _prune(scene, opt, sp.opacities().detach() >= config.prune_opacity)
        if progress is not None:
            progress(step + 1, len(batches), float(loss.detach()))
    return {"loss_first": trace[0], "loss_last": trace[-1], "loss_trace_every_10": trace, "gaussians": sp.num,
            "pruned_during_fit": pruned_total, "warmup_steps": warm, "steps": len(batches)}


def _prune(scene: DeformableScene, opt: torch.optim.Adam, keep: Tensor) -> int:
    """Remove Gaussians where ``keep`` is False from the scene and the optimiser; returns how many."""
    n = int((~keep).sum())
    if n == 0:
        return 0
    sp, field = scene.splats, scene.field
    for name in ("means", "log_scales", "opacity_logits", "colors"):
        old = getattr(sp, name)
        new = nn.Parameter(old.detach()[keep].clone())
        prune_adam_state(opt, old, new, keep)
        setattr(sp, name, new)
    old = field.view_correction
    field.select(keep)
    prune_adam_state(opt, old, field.view_correction, keep)
    return n
