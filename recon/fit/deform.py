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

The learnable correction of dp_i^v is constrained by ``view_correction`` (projected gradient: after
every optimiser step it is projected onto the allowed set):

* ``affine`` (default): per view an affine function of the canonical position (12 numbers per
  view, least-squares projection), zero for the central view, whose frame is the canonical frame.
  It can follow a view's smooth warp (the kind of inconsistency a generator makes; see
  :mod:`recon.fit.canonical`) but not re-place single Gaussians per view. A free per-Gaussian,
  per-view correction (``free``, 3 x P x V numbers) lets every training view be fitted on its own
  -- training PSNR rises while the shared geometry that an unseen view sees gets worse (measured
  in BENCHMARKS.md) -- and the seed predicts dp_i^v from tracking rather than optimising it freely.
* ``centred``: any per-Gaussian, per-view correction that sums to zero over the training views
  (the shared geometry is their consensus);
* ``free``: any per-Gaussian, per-view correction (only the regulariser keeps it small).

After the joint fit, ``view_residual`` x ``iterations`` more steps optimise a free per-Gaussian,
per-view residual of the correction alone, with every shared parameter (positions, colours, opacities,
scales, MLP) frozen: a training view at a time it was not fitted on (same camera) gets the
view-specific detail back, while the shared 4D geometry -- what an unseen view and the exported
.ply show -- is exactly that of the joint fit.

Optional pruning during the fit: every ``prune_every`` steps, Gaussians with opacity below
``prune_opacity`` are removed (Adam moments of the rest are kept). Densification is not done:
the tracks already give a dense point set at the input resolution.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
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
    view_correction: str = "affine"
    """What the learned correction may be during the joint fit: ``affine`` (per view, in the
    canonical position; the central view's is zero), ``centred`` (per Gaussian and view, summing
    to zero over the training views) or ``free`` (per Gaussian and view). See the module docstring."""
    view_residual: float = 0.2
    """Length of the phase after the joint fit that optimises only a free per-Gaussian, per-view
    residual of the correction, everything shared frozen, as a fraction of ``iterations`` (0: none;
    0.2 of the default 1000: 200 steps). See the module docstring."""
    lr_view_residual: float = 1e-4
    """Learning rate of the residual phase, in units of the scene radius."""
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
        to_world = torch.linalg.inv(torch.from_numpy(np.array(grid.cameras.w2c[int(grid.central_view), grid.ref_time]))).float()
    splats = type(canonical.splats)(*(v for v in canonical.splats.tensors().values()))
    return DeformableScene(splats, field, canonical.poses, torch.from_numpy(grid.cameras.K).float(), t, (grid.height, grid.width), to_world)


VIEW_CORRECTIONS = ("affine", "centred", "free")


@torch.no_grad()
def project_affine(correction: Tensor, means: Tensor, fixed_view: int | None = None) -> Tensor:
    """Least-squares projection of ``correction [P, V, 3]`` onto per-view affine functions of the
    positions ``means [P, 3]`` (``[x - mu, 1] @ B_v``), with view ``fixed_view`` set to zero.
    Returns a new tensor; a projection: applying it twice changes nothing."""
    P, V, _ = correction.shape
    out = torch.zeros_like(correction)
    if P < 4:
        return out
    x = means.detach().double()
    mu = x.mean(0)
    span = (x - mu).abs().max().clamp_min(1e-12)
    X = torch.cat([(x - mu) / span, torch.ones(P, 1, dtype=x.dtype, device=x.device)], 1)  # [P, 4]
    Y = correction.detach().double().reshape(P, V * 3)
    B = torch.linalg.lstsq(X, Y).solution  # [4, V*3]
    out = (X @ B).reshape(P, V, 3).to(correction.dtype)
    if fixed_view is not None and 0 <= fixed_view < V:
        out[:, fixed_view] = 0
    return out


@torch.no_grad()
def project_centred(correction: Tensor, views: list[int]) -> Tensor:
    """Remove, per Gaussian, the mean of ``correction [P, V, 3]`` over ``views`` from those views:
    the learned corrections of the training views then sum to zero, so the shared (canonical)
    geometry is their consensus. A projection (applying it twice changes nothing)."""
    out = correction.detach().clone()
    if views:
        idx = torch.as_tensor(sorted(set(views)), device=out.device)
        out[:, idx] -= out[:, idx].mean(1, keepdim=True)
    return out


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
    if config.view_correction not in VIEW_CORRECTIONS:
        from recon.errors import InputError

        raise InputError(f"unknown view correction {config.view_correction!r}; expected one of {', '.join(VIEW_CORRECTIONS)}",
                         field="deform.view_correction")
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
    mode = config.view_correction if field.learn_view_offsets else None
    central = int(grid.central_view)
    trained_views = sorted({i for i, _ in train_cells})

    def project() -> None:  # projected gradient: keep the correction in its allowed set
        if mode == "affine":
            field.view_correction.data.copy_(project_affine(field.view_correction, sp.means, central))
        elif mode == "centred":
            field.view_correction.data.copy_(project_centred(field.view_correction, trained_views))

    project()

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
        project()
        if step % 10 == 0 or step == len(batches) - 1:
            trace.append(float(loss.detach()))
        if config.prune_every > 0 and step > 0 and step % config.prune_every == 0 and step < 0.8 * len(batches):
            pruned_total += _prune(scene, opt, sp.opacities().detach() >= config.prune_opacity)
        if progress is not None:
            progress(step + 1, len(batches), float(loss.detach()))
    residual = _fit_view_residual(scene, grid, train_cells, config, images, unit, g, backend, device,
                                  None if progress is None else lambda k, n, l: progress(len(batches) + k, len(batches) + n, l))
    if residual:
        trace += residual
    return {"loss_first": trace[0], "loss_last": trace[-1], "loss_trace_every_10": trace, "gaussians": sp.num,
            "pruned_during_fit": pruned_total, "warmup_steps": warm, "steps": len(batches),
            "view_residual_steps": int(round(config.view_residual * config.iterations)) if residual else 0}


def _fit_view_residual(scene: DeformableScene, grid: FrameGrid, train_cells: list[tuple[int, int]], config: DeformConfig,
                       images: Tensor, unit: float, g: torch.Generator, backend: str, device: torch.device,
                       progress: Callable[[int, int, float], None] | None) -> list[float]:
    """The per-view residual phase (see module docstring); returns its loss trace (every 10 steps)."""
    field, sp = scene.field, scene.splats
    steps = int(round(config.view_residual * config.iterations))
    if not field.learn_view_offsets or steps <= 0:
        return []
    batches = time_batches(train_cells, steps, config.cells_per_step, g)
    shared = [sp.means, sp.colors, sp.opacity_logits, sp.log_scales, *field.mlp.parameters()]
    flags = [p.requires_grad for p in shared]
    for p in shared:
        p.requires_grad_(False)
    opt = torch.optim.Adam([field.view_correction], lr=config.lr_view_residual * float(field.radius), eps=1e-15)
    trace: list[float] = []
    try:
        for step, batch in enumerate(batches):
            rgb, _, _, _ = scene.render(batch, backend=backend)
            target = images[[i for i, _ in batch], [j for _, j in batch]].to(device)
            loss = photometric_loss(rgb, target, config.ssim_weight)
            total = loss + config.view_offset_reg * (field.view_correction / unit).pow(2).sum(-1).mean()
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
            if step % 10 == 0 or step == len(batches) - 1:
                trace.append(float(loss.detach()))
            if progress is not None:
                progress(step + 1, len(batches), float(loss.detach()))
    finally:
        for p, f in zip(shared, flags):
            p.requires_grad_(f)
    return trace


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
