"""Deform stage: fit the temporal deformation field (and fine-tune the splats) on the whole grid.

(Over 400 lines on purpose: :class:`DeformConfig`, ~100 lines of field-by-field documentation,
lives next to the one fit that reads it; the loop itself is :mod:`recon.fit.engine`'s.)

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
* ``silhouette`` (grids with foreground masks, e.g. Panoptic's seg/: ``foreground_reg``): every
  *dynamic* Gaussian is pulled onto the foreground of each training image of a masked view (its
  projected centre's distance to the nearest foreground pixel, :func:`mask_distance`). Without it
  a fast object (the thrown ball, ~one diameter per frame) has no photometric gradient towards
  where it went, and its splats fade instead of following it.

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

The loop is the fit engine's (:mod:`recon.fit.engine`), with adaptive density control
(:mod:`recon.fit.density`: clone / split / prune / opacity reset; new Gaussians inherit their
parent's tracked offsets, learned correction and dynamic flag), a per-camera colour response
(:mod:`recon.model.appearance`, fitted after the warm-up) and, where the grid has foreground
masks, a static background: Gaussians outside the masks get no temporal offset at all, and the
dynamic ones get, on top of the MLP's dp^t, a polynomial path each (``trajectory_degree``; the
seed's field is the MLP alone). Why: on CMU Panoptic the ball's ~100 Gaussians, among 28k dynamic
ones, stayed where they were (their projections moved 3 px over 8 frames while the ball moved 84 px)
and faded to opacity ~0.04: their gradients barely change the shared MLP weights, whereas a
coefficient of their own gets a full Adam step from the silhouette term (measured in BENCHMARKS.md).
Targets are converted from the grid's uint8 images per batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field as dc_field
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch
from torch import Tensor

from recon.fit.canonical import Canonical
from recon.fit.density import DensityConfig, DensityControl
from recon.fit.engine import FitEngine, ParamGroup, Rows
from recon.fit.losses import coverage_term, photometric_term, rigidity_term, silhouette_term, time_smooth_term, view_offset_term
from recon.fit.schedule import exp_decay, time_batches
from recon.grid import FrameGrid
from recon.model.appearance import CameraAppearance
from recon.model.deform import DeformField
from recon.model.scene import DeformableScene

if TYPE_CHECKING:
    from recon.fit.monocular import MonocularConfig


@dataclass
class DeformConfig:
    """Options of the deform stage (learning rates for Adam)."""

    iterations: int = 0
    """Total optimisation steps (warm-up included); 0: sized to the grid (:func:`auto_iterations`:
    1654 for the bundled sample, 5760 for Panoptic's 27 cameras x 8 frames, 7560 for a 108-image D-NeRF scene)."""
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
    sh_degree: int = 0
    """Bands of view-dependent colour per splat (real spherical harmonics, :mod:`recon.model.sh`;
    0: one colour from every side). Monocular grids use :attr:`recon.fit.monocular.MonocularConfig.sh_degree`."""
    sh_shading: bool = False
    """The harmonics as gains that scale the base colour (``base * (1 + Y . g)``, :mod:`recon.model.sh`)
    instead of terms added to it: brightness that changes with the view, hue that does not."""
    lr_sh: float = 2.5e-4
    """Learning rate of the spherical-harmonic coefficients (``lr_colors`` / 20, as 3DGS sets its
    higher bands against the base colour); they learn after the warm-up. Shading gains use twice
    it (a gain moves a colour near 0.5 by half as much as an additive coefficient)."""
    lr_scales: float = 5e-3
    lr_lifespan: float = 0.0
    """Adam step of the Gaussians' lifespans (centre and log-width in normalised time; only for
    splats initialised at several times, :attr:`recon.fit.monocular.MonocularConfig.windows`).
    0: frozen. Learned (1e-3) they widened until two windows' copies of an object showed at once
    (ghosts; close-proximity scene 28.30 dB at 200x200 against 31.94 frozen, BENCHMARKS.md)."""
    lr_view_correction: float = 1e-4
    """Learnable view-offset correction, in units of the scene radius."""
    learn_view_offsets: bool = True
    """Optimise a correction of the tracked dp_i^v (regularised by ``view_offset_reg``)."""
    view_offsets_on_rigs: bool = False
    """Also learn that correction when the tracks are ``rig`` tracks (a calibrated rig's views are
    consistent: the seed's offsets absorb a *generator's* inconsistency; on a real rig a per-view
    correction only fits calibration noise, at the cost of a [N, V, 3] tensor in every step)."""
    view_correction: str = "affine"
    """What the learned correction may be during the joint fit: ``affine`` (per view, in the
    canonical position; the central view's is zero), ``centred`` (per Gaussian and view, summing
    to zero over the training views) or ``free`` (per Gaussian and view). See the module docstring."""
    view_residual: float = 0.2
    """Length of the phase after the joint fit that optimises only a free per-Gaussian, per-view
    residual of the correction, everything shared frozen, as a fraction of ``iterations`` (0: none;
    0.2 of the default 1000: 200 steps). Skipped when no held-out cell belongs to a trained view
    (it can only help such cells). See the module docstring."""
    lr_view_residual: float = 1e-4
    """Learning rate of the residual phase, in units of the scene radius."""
    view_offset_reg: float = 0.01
    time_smooth_reg: float = 0.01
    rigidity_reg: float = 0.0
    """Weight of the rigidity term (:func:`recon.fit.losses.rigidity_term`: neighbouring Gaussians move
    together at random times of the whole range, the gaps between training times included; 0: off).
    Monocular grids use :attr:`recon.fit.monocular.MonocularConfig.rigidity_reg`."""
    rigidity_robust: float = 0.3
    """Geman-McClure scale of the rigidity term, in units of the median splat size (0: quadratic;
    see :func:`recon.fit.losses.rigidity_term`)."""
    ssim_weight: float = 0.2
    pos_freqs: int = 6
    time_freqs: int = 4
    mlp_width: int = 64
    mlp_depth: int = 3
    mlp_activation: str = "relu"
    """Hidden activation of the temporal MLP: relu | leaky_relu (:class:`recon.model.deform.DeformField`;
    monocular grids use :attr:`recon.fit.monocular.MonocularConfig.mlp_activation`)."""
    time_curriculum: float = 0.3
    """Temporal curriculum (:func:`recon.fit.schedule.time_batches`): over this fraction of the
    steps after the warm-up, the times drawn widen from the reference time to the whole range (0: off;
    measured in BENCHMARKS.md: sharper moving players on Panoptic, +0.07 dB on the synthetic bench)."""
    appearance: bool = True
    """Fit a per-camera colour gain and bias (:mod:`recon.model.appearance`) on the training views."""
    lr_appearance: float = 1e-3
    learn_background: bool = True
    """Grids whose reader names no uniform background (real captures): fit one colour behind the
    splats on the training views (starting from their mean colour at the reference time) instead of
    compositing on black. Where the splats leave a view partly transparent, a new viewpoint then
    sees a colour of the scene through the gaps, not black (measured in BENCHMARKS.md)."""
    lr_background: float = 1e-3
    trajectory_degree: int = 3
    """Grids with foreground masks (the dynamic Gaussians are known): each dynamic Gaussian's dp^t
    also gets its own polynomial path of this degree (:attr:`recon.model.deform.DeformField.trajectory`,
    Legendre in time, zero at start; 0: off). The silhouette term then moves the few Gaussians of a
    small, fast object directly, which the shared MLP's weights do not (measured in BENCHMARKS.md)."""
    lr_trajectory: float = 4e-4
    """Learning rate of the path coefficients, in units of the scene radius (decays like ``lr_means``,
    from the end of the warm-up)."""
    lr_trajectory_final: float = 4e-6
    static_background: bool = True
    """When the grid has foreground masks: Gaussians that project outside the masks in the
    freeze-time frames are static (dp^t = 0, no MLP), so the background cannot drift in time."""
    density: DensityConfig = dc_field(default_factory=DensityConfig)
    """Adaptive density control (:mod:`recon.fit.density`)."""
    silhouette_reg: float = 0.1
    """Weight of the silhouette term (:func:`recon.fit.losses.silhouette_term`) on grids with a
    uniform background (D-NeRF's white): Gaussians are pulled onto each training image's
    non-background pixels (0: off). It gives the temporal MLP a long-range signal where an
    object has moved beyond its splats' footprint, which the photometric loss cannot."""
    coverage_reg: float = 0.1
    """Weight of the coverage term (:func:`recon.fit.losses.coverage_term`), with the silhouette
    term on grids with a uniform background (0: off)."""
    foreground_reg: float = 0.1
    """Weight of the silhouette term applied to the *dynamic* Gaussians on grids with foreground
    masks (Panoptic's seg/): each is pulled onto the foreground of every training image of a
    masked view (:func:`mask_distance`), which carries the temporal MLP along motion larger than a
    splat's footprint per frame (a thrown ball), where the photometric loss has no gradient (0: off)."""
    monocular_warmup: float = 0.1
    """Monocular grids (one view per time): the warm-up is this fraction of the steps, a static fit
    (no MLP) of the reference window's frames (:attr:`recon.fit.monocular.MonocularConfig.window`),
    which stand in for the freeze-time video (Deformable-3DGS warms up 3k of 40k steps)."""


SILHOUETTE_BYTES = 1 << 30
"""The silhouette term's distance maps (float32 per training image) are built up to this size."""

RENDERS_PER_IMAGE = 80
"""``iterations = 0``: each training image is rendered about this many times (3DGS renders each
of a typical scene's ~200 images ~150 times in 30k steps; a CPU budget affords fewer: 80 keeps
Panoptic's 27 cameras x 8 frames at 320x180 within 20 minutes on two cores, measured in BENCHMARKS.md)."""


MONOCULAR_RENDERS_PER_IMAGE = 70
"""The same for monocular grids (one image per step; a D-NeRF scene's 108 images: 7560 steps, which
keeps a 400x400 scene near 10 minutes on two CPU cores, measured in BENCHMARKS.md)."""


MIN_ITERATIONS = 750
"""The fewest steps ``iterations = 0`` gives (a grid of a few images still gets density control's
window and the learning-rate decay). It was 1000: a 64 x 64 grid of 20 images then rendered each
training image 150 times; at 750 with the density cap its held-out views gain 0.65 dB (BENCHMARKS.md)."""


def auto_iterations(num_images: int, cells_per_step: int, renders_per_image: int = RENDERS_PER_IMAGE) -> int:
    """Steps for ``iterations = 0``: ``renders_per_image`` renders of every training image,
    ``MIN_ITERATIONS``..30000 steps."""
    return int(min(30000, max(MIN_ITERATIONS, math.ceil(renders_per_image * num_images / max(1, cells_per_step)))))


def scene_from_canonical(grid: FrameGrid, canonical: Canonical, config: DeformConfig, view_offsets: bool = True,
                         trained_views: list[int] | None = None) -> DeformableScene:
    """A :class:`DeformableScene` at the start of the deform stage: canonical splats, tracked
    offsets (zeros when ``view_offsets`` is False), identity temporal field, identity camera
    responses (fitted on ``trained_views``, default all), the dynamic flags from the masks, the
    grid's uniform background colour when its reader names one (white for D-NeRF)."""
    means = canonical.splats.means.detach()
    dist = means.norm(dim=1)
    radius = float(dist.median()) if len(dist) else 1.0
    center = means.median(dim=0).values if len(means) else torch.zeros(3)
    offsets = canonical.view_offsets if view_offsets else torch.zeros_like(canonical.view_offsets)
    t = torch.as_tensor(grid.times, dtype=torch.float64)  # the scene keeps float64 copies (exports)
    voters: list[int] = []
    if config.static_background and grid.masks is not None and grid.num_times > 1:
        voters = [v for v in (trained_views if trained_views is not None else range(grid.num_views))
                  if v in grid.meta.get("mask_views", range(grid.num_views))]
    field = DeformField(offsets, center, radius, (float(t.float().min()), float(t.float().max())), config.pos_freqs, config.time_freqs,
                        config.mlp_width, config.mlp_depth, learn_view_offsets=config.learn_view_offsets and view_offsets,
                        activation=config.mlp_activation, trajectory_degree=config.trajectory_degree if voters else 0,
                        lifespan=canonical.lifespan is not None)
    if canonical.lifespan is not None:  # grid time units -> the field's normalised time
        life = canonical.lifespan.detach().double()
        span = float(t.max() - t.min())
        scale = 2.0 / span if span > 0 else 1.0
        with torch.no_grad():
            field.lifespan.copy_(torch.stack([field.norm_time(life[:, 0].float()),
                                              torch.log((life[:, 1] * scale).clamp_min(1e-6)).float()], 1))
    if voters:
        field.dynamic = dynamic_from_masks(grid, canonical, voters)
    c2w = grid.canonical_to_world()
    to_world = torch.eye(4) if c2w is None else torch.from_numpy(c2w).float()
    splats = type(canonical.splats)(*(v for v in canonical.splats.tensors().values()))
    appearance = CameraAppearance(grid.num_views, trained_views) if config.appearance else None
    from recon.fit.monocular import background_colour

    bg = background_colour(grid)
    return DeformableScene(splats, field, canonical.poses, torch.from_numpy(grid.cameras.K).float(), t, (grid.height, grid.width),
                           to_world, appearance, None if bg is None else torch.from_numpy(bg).float())


DYNAMIC_DILATE = 3
"""Foreground masks are dilated by this many pixels (at the grid's resolution) before the vote."""
DYNAMIC_VOTE = 0.5
"""A Gaussian is dynamic when it projects onto the (dilated) foreground in at least this fraction of
the freeze-time frames that see it."""


@torch.no_grad()
def dynamic_from_masks(grid: FrameGrid, canonical: Canonical, views: list[int] | None = None) -> Tensor:
    """``bool [P]``: canonical Gaussians that lie on the foreground of ``grid.masks`` in the
    freeze-time frames of ``views`` (default all): the vote of :data:`DYNAMIC_VOTE` over the frames
    where the Gaussian projects inside the image, masks dilated by :data:`DYNAMIC_DILATE` px."""
    import cv2

    V, T, H, W = grid.shape
    r = grid.ref_time
    views = list(range(V)) if views is None else list(views)
    X = canonical.splats.means.detach().double().numpy()
    fg = np.zeros(len(X))
    seen = np.zeros(len(X))
    kernel = np.ones((2 * DYNAMIC_DILATE + 1,) * 2, np.uint8)
    for i in views:
        A = canonical.poses[i, r].double().numpy()
        Xc = X @ A[:3, :3].T + A[:3, 3]
        K = grid.cameras.K[i, r]
        z = Xc[:, 2]
        ok = z > 1e-6
        u = np.where(ok, K[0, 0] * Xc[:, 0] / np.maximum(z, 1e-6) + K[0, 2], -1)
        v = np.where(ok, K[1, 1] * Xc[:, 1] / np.maximum(z, 1e-6) + K[1, 2], -1)
        ok &= (u >= 0) & (u < W) & (v >= 0) & (v < H)
        m = cv2.dilate(grid.masks[i, r].astype(np.uint8), kernel) > 0
        ui, vi = u[ok].astype(int), v[ok].astype(int)
        fg[ok] += m[vi, ui]
        seen[ok] += 1
    return torch.from_numpy(fg >= DYNAMIC_VOTE * np.maximum(seen, 1)) & torch.from_numpy(seen > 0)


def mask_distance(grid: FrameGrid, cells: list[tuple[int, int]]) -> np.ndarray | None:
    """``float32 [V, T, H, W]``: for the ``cells`` of views with masks (``grid.meta["mask_views"]``,
    default all; other cells zero, i.e. unconstrained), each pixel's distance in pixels to the
    nearest foreground pixel of ``grid.masks``; None without masks. An empty mask gives zeros."""
    import cv2

    if grid.masks is None:
        return None
    masked = set(grid.meta.get("mask_views", range(grid.num_views)))
    out = np.zeros(grid.shape, np.float32)
    for i, j in cells:
        m = grid.masks[i, j]
        if i in masked and m.any():
            out[i, j] = cv2.distanceTransform((~m).astype(np.uint8), cv2.DIST_L2, 5)
    return out


def camera_extent(poses: Tensor, views: list[int], ref_time: int) -> float:
    """3DGS's scene extent: 1.1 x the largest distance of the ``views``' camera centres (at
    ``ref_time``, canonical coordinates, from ``poses [V, T, 4, 4]``) from their mean; 0 for one camera."""
    A = poses[views, ref_time].double()
    centres = -(A[:, :3, :3].transpose(1, 2) @ A[:, :3, 3:4]).squeeze(-1)
    return 1.1 * float((centres - centres.mean(0)).norm(dim=1).max()) if len(views) > 1 else 0.0


VIEW_CORRECTIONS = ("affine", "centred", "free")


@torch.no_grad()
def project_affine(correction: Tensor, means: Tensor, fixed_view: int | None = None) -> Tensor:
    """Least-squares projection of ``correction [P, V, 3]`` onto per-view affine functions of the
    positions ``means [P, 3]`` (``[x - mu, 1] @ B_v``), with view ``fixed_view`` set to zero.
    Returns a new tensor; a projection: applying it twice changes nothing.

    The design ``X = [1, (x - mu) / span]`` is orthonormalised in float64 (QR of a ``[P, 4]``
    matrix; a column whose pivot falls below float64 precision, e.g. the normal of planar points,
    is dropped), then ``Q (Q^T Y)`` runs in the correction's float32 (orthonormal ``Q``: the same
    projection as a float64 least squares to ~1e-9, at a fifth of its cost, which went into
    converting ``[P, V, 3]`` to float64)."""
    P, V, _ = correction.shape
    if P < 4:
        return torch.zeros_like(correction)
    x = means.detach().double()
    mu = x.mean(0)
    span = (x - mu).abs().max().clamp_min(1e-12)
    X = torch.cat([torch.ones(P, 1, dtype=x.dtype, device=x.device), (x - mu) / span], 1)  # [P, 4]
    Q, R = torch.linalg.qr(X)
    pivots = R.diagonal().abs()
    Q = Q[:, pivots > pivots.max() * torch.finfo(torch.float64).eps * P].to(correction.dtype)
    Y = correction.detach().reshape(P, V * 3)
    out = (Q @ (Q.T @ Y)).reshape(P, V, 3)
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


def scene_rows(scene: DeformableScene) -> Rows:
    """The per-Gaussian tensors of a scene that density control keeps row-aligned."""
    sp, f = scene.splats, scene.field
    return Rows({"means": (sp, "means"), "log_scales": (sp, "log_scales"), "opacity_logits": (sp, "opacity_logits"),
                 "colors": (sp, "colors"), "sh_rest": (sp, "sh_rest"), "view_correction": (f, "view_correction"),
                 "tracked_offsets": (f, "tracked_offsets"), "dynamic": (f, "dynamic"), "trajectory": (f, "trajectory"),
                 "lifespan": (f, "lifespan")})


def _renderer(scene: DeformableScene, backend: str) -> Callable[[list[tuple[int, int]]], tuple[Tensor, dict[str, Any]]]:
    """The engine's ``render(batch) -> (rgb, meta)`` for a scene's cells."""

    def render(batch: list[tuple[int, int]]) -> tuple[Tensor, dict[str, Any]]:
        rgb, alpha, _, meta = scene.render(batch, backend=backend)
        meta["alpha"] = alpha
        return rgb, meta

    return render


def uint8_targets(grid: FrameGrid, device: torch.device) -> Callable[[list[tuple[int, int]]], Tensor]:
    """``target(batch) -> [C, H, W, 3]`` float in [0, 1] on ``device``, converted per batch from
    the grid's uint8 images (a large grid is never held as floats)."""
    images = torch.from_numpy(grid.images)

    def target(batch: list[tuple[int, int]]) -> Tensor:
        iv = torch.tensor([i for i, _ in batch])
        it = torch.tensor([j for _, j in batch])
        return images[iv, it].to(device).float().div_(255.0)

    return target


def fit_deform(
    grid: FrameGrid,
    scene: DeformableScene,
    train_cells: list[tuple[int, int]],
    config: DeformConfig,
    device: torch.device,
    seed: int,
    backend: str = "auto",
    progress: Callable[[int, int, float], None] | None = None,
    held_cells: list[tuple[int, int]] | None = None,
    monocular: list[tuple[int, int]] | None = None,
    background: MonocularConfig | None = None,
) -> dict[str, Any]:
    """Fit ``scene`` (in place, moved to ``device``) to the ``train_cells`` of ``grid`` with the
    fit engine (density control, camera responses, the regularisers of the module docstring).

    ``held_cells`` (never rendered) only decide whether the view-residual phase can help any of
    them; their cameras (poses only) clear their near space. ``monocular``: the grid has one view
    per time, and these are the cells of its reference window (warmed up on; see
    :attr:`DeformConfig.monocular_warmup`); one image per step; the scene extent and the cleared
    cameras are the distinct cameras of all cells. ``background``: where ``background_tol`` and
    ``dilate`` of the silhouette / coverage terms come from (default: :class:`MonocularConfig`'s
    defaults; the pipeline passes the run's ``monocular`` config). Returns a report: loss trace (every 10 steps), first/last loss, Gaussian counts,
    density-control counts, steps of each phase.
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
    if scene.appearance is not None:
        scene.appearance.to(device)
    sp, field = scene.splats, scene.field
    if sp.sh_degree != config.sh_degree or (config.sh_degree and sp.sh_shading != config.sh_shading):
        sp.set_sh_degree(config.sh_degree, config.sh_shading)
    radius = float(field.radius)
    unit = float(sp.log_scales.detach().exp().median())
    target = uint8_targets(grid, device)
    trained_views = sorted({i for i, _ in train_cells})
    central = int(grid.central_view)
    per_step = 1 if monocular is not None else config.cells_per_step
    iterations = config.iterations if config.iterations > 0 else auto_iterations(
        len(train_cells), per_step, RENDERS_PER_IMAGE if monocular is None else MONOCULAR_RENDERS_PER_IMAGE)

    ref_cells = [c for c in train_cells if c[1] == grid.ref_time]
    if monocular is not None:
        ref_cells = list(monocular)
        warm = int(round(config.monocular_warmup * iterations))
    else:
        warm = min(config.warmup, iterations) if ref_cells else 0
    batches = time_batches(ref_cells, warm, config.cells_per_step, g) if warm else []
    ramp = int(config.time_curriculum * (iterations - warm))
    batches += time_batches(train_cells, iterations - warm, config.cells_per_step, g,
                            (grid.ref_time, ramp) if ramp > 0 else None)
    total = len(batches)
    groups = [
        ParamGroup("means", ["means"], lambda s: exp_decay(config.lr_means * radius, config.lr_means_final * radius, s, total)),
        ParamGroup("colors", ["colors"], config.lr_colors),
        ParamGroup("opacity", ["opacity_logits"], config.lr_opacity),
        ParamGroup("sh", ["sh_rest"], lambda s: 0.0 if s < warm else config.lr_sh * (2.0 if sp.sh_shading else 1.0)),
        ParamGroup("scales", ["log_scales"], config.lr_scales),
        ParamGroup("mlp", list(field.mlp.parameters()),
                   lambda s: 0.0 if s < warm else exp_decay(config.lr_mlp, config.lr_mlp_final, s - warm, total - warm)),
    ]
    if field.learn_view_offsets:
        groups.append(ParamGroup("view", ["view_correction"], config.lr_view_correction * radius))
    if field.trajectory_degree > 0:  # coefficients in units of the radius (see DeformField.path_offset)
        groups.append(ParamGroup("trajectory", ["trajectory"], lambda s: 0.0 if s < warm else exp_decay(
            config.lr_trajectory, config.lr_trajectory_final, s - warm, total - warm)))
    if field.has_lifespan:
        groups.append(ParamGroup("lifespan", ["lifespan"], config.lr_lifespan))
    if scene.appearance is not None:
        groups.append(ParamGroup("appearance", [scene.appearance.log_gain, scene.appearance.bias],
                                 lambda s: 0.0 if s < warm else config.lr_appearance))
    learned_bg = config.learn_background and scene.background is None
    if learned_bg:
        first = ref_cells or train_cells
        mean = grid.images[[i for i, _ in first], [j for _, j in first]].reshape(-1, 3).mean(0) / 255.0
        scene.background = torch.from_numpy(mean).float().to(device).requires_grad_(True)
        groups.append(ParamGroup("background", [scene.background], config.lr_background))
    mode = config.view_correction if field.learn_view_offsets else None

    def project() -> None:  # projected gradient: keep the correction in its allowed set
        if mode == "affine":
            field.view_correction.data.copy_(project_affine(field.view_correction, sp.means, central))
        elif mode == "centred":
            field.view_correction.data.copy_(project_centred(field.view_correction, trained_views))

    project()
    if monocular is not None:
        from recon.fit.monocular import distinct_cameras

        firsts = [grp[0] for grp in distinct_cameras(grid, sorted(set(train_cells) | set(held_cells or [])))]
        vm = torch.stack([scene.poses[i, j] for i, j in firsts])
        Ks = torch.stack([scene.Ks[i, j] for i, j in firsts])
        train_firsts = [grp[0] for grp in distinct_cameras(grid, train_cells)]
        extent = camera_extent(torch.stack([scene.poses[i, j] for i, j in train_firsts])[:, None], list(range(len(train_firsts))), 0)
        cams = (vm.to(device), Ks.to(device))
    else:
        extent = camera_extent(scene.poses, trained_views, grid.ref_time)
        # every camera with a pose clears its near space (its images are never used; see recon.fit.density)
        cams = (scene.poses[:, grid.ref_time].to(device), scene.Ks[:, grid.ref_time].to(device))
    extent = extent or 2.0 * radius
    density = DensityControl(config.density, extent, scene.size, g, cams) if config.density.enabled else None
    def clamp_colours() -> None:  # projected gradient: a colour beyond [0, 1] would be clamped in the render
        sp.colors.data.clamp_(0.0, 1.0)  # and get no gradient again (stuck at white or black)
        if learned_bg:
            scene.background.data.clamp_(0.0, 1.0)

    hooks = [project, clamp_colours] + ([scene.appearance.centre] if scene.appearance is not None else [])
    engine = FitEngine(scene_rows(scene), groups, density, post_step=hooks)
    render = _renderer(scene, backend)
    terms = [photometric_term(config.ssim_weight)]
    if config.time_smooth_reg > 0 and scene.num_times > 1:
        terms.append(time_smooth_term(field, sp, scene.times.to(device), unit, config.time_smooth_reg, g, start=warm))
    if config.rigidity_reg > 0 and scene.num_times > 1:
        terms.append(rigidity_term(field, sp, scene.times.to(device), unit, config.rigidity_reg, g, start=warm,
                                   robust=config.rigidity_robust))
    if field.learn_view_offsets and config.view_offset_reg > 0:
        terms.append(view_offset_term(field, unit, config.view_offset_reg))
    silhouette = foreground = None
    if len(train_cells) * grid.height * grid.width * 4 <= SILHOUETTE_BYTES:
        from recon.fit.monocular import MonocularConfig, background_distance, occupancy_grid

        mc = background or MonocularConfig()
        dist = background_distance(grid, train_cells, mc.background_tol, mc.dilate) if config.silhouette_reg > 0 else None
        if dist is not None:
            terms.append(silhouette_term(scene, torch.from_numpy(dist), config.silhouette_reg))
            silhouette = config.silhouette_reg
            if config.coverage_reg > 0:
                occ = torch.from_numpy(occupancy_grid(grid, train_cells, mc.background_tol))
                terms.append(coverage_term(occ, config.coverage_reg))
        elif config.foreground_reg > 0 and bool(field.dynamic.any()):
            dist = mask_distance(grid, train_cells)
            if dist is not None:
                terms.append(silhouette_term(scene, torch.from_numpy(dist), config.foreground_reg, start=warm,
                                             subset=lambda: field.dynamic))
                foreground = config.foreground_reg
    n0 = sp.num
    out = engine.run(batches, render, target, terms, progress)
    if learned_bg:  # kept in [0, 1] by the hook; a plain tensor again for the rest of the run
        scene.background = scene.background.detach()
    trace = out["trace"]
    residual_steps = int(round(config.view_residual * iterations))
    if held_cells is not None and not any(i in trained_views for i, _ in held_cells):
        residual_steps = 0  # nothing the residual could help: every held-out cell is of an unseen view
    residual = _fit_view_residual(scene, train_cells, config, residual_steps, target, unit, g, backend,
                                  None if progress is None else lambda k, n, l: progress(total + k, total + n, l))
    trace += residual
    rep = {"loss_first": trace[0], "loss_last": trace[-1], "loss_trace_every_10": trace, "gaussians": sp.num,
           "gaussians_start": n0, "dynamic_gaussians": int(field.dynamic.sum()), "trajectory_degree": field.trajectory_degree, "sh_degree": sp.sh_degree, "warmup_steps": warm, "steps": total,
           "view_residual_steps": residual_steps if residual else 0, "extent": extent, "silhouette_reg": silhouette,
           "foreground_reg": foreground,
           "background": None if scene.background is None else [round(float(c), 4) for c in scene.background]}
    if density is not None:
        rep["density"] = density.report()
    if scene.appearance is not None:
        rep["appearance"] = scene.appearance.describe()
    return rep


def _fit_view_residual(scene: DeformableScene, train_cells: list[tuple[int, int]], config: DeformConfig, steps: int,
                       target: Callable, unit: float, g: torch.Generator, backend: str,
                       progress: Callable[[int, int, float], None] | None) -> list[float]:
    """The per-view residual phase (see module docstring); returns its loss trace (every 10 steps)."""
    field, sp = scene.field, scene.splats
    if not field.learn_view_offsets or steps <= 0:
        return []
    batches = time_batches(train_cells, steps, config.cells_per_step, g)
    shared = [sp.means, sp.colors, sp.sh_rest, sp.opacity_logits, sp.log_scales, field.trajectory, field.lifespan,
              *field.mlp.parameters()]
    if scene.appearance is not None:
        shared += [scene.appearance.log_gain, scene.appearance.bias]
    flags = [p.requires_grad for p in shared]
    for p in shared:
        p.requires_grad_(False)
    engine = FitEngine(Rows({}), [ParamGroup("view_residual", [field.view_correction], config.lr_view_residual * float(field.radius))])
    render = _renderer(scene, backend)
    terms = [photometric_term(config.ssim_weight), view_offset_term(field, unit, config.view_offset_reg)]
    try:
        with scene.frozen_motion():
            return engine.run(batches, render, target, terms, progress)["trace"]
    finally:
        for p, f in zip(shared, flags):
            p.requires_grad_(f)
