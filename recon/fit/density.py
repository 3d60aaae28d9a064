"""Adaptive density control for isotropic Gaussians (3DGS, Kerbl et al. 2023, section 5), used by
the fit engine (:mod:`recon.fit.engine`).

Statistics, every step: the norm of each Gaussian's view-space positional gradient (the
gradient of the loss w.r.t. its projected centre ``means2d``, in NDC units: pixels x (W/2, H/2)
x the batch size, as 3DGS and gsplat measure it), averaged over the renders that saw it, and its
largest screen radius as a fraction of the image's larger side.

Every ``every`` steps inside ``[start, stop)`` (fractions of the fit's steps):

* **clone** Gaussians whose mean gradient is at least ``grad_threshold`` and whose scale is at
  most ``dense_fraction`` x the scene extent (under-reconstructed detail: a copy is added);
* **split** the large ones among them into two children drawn from N(mean, sigma^2 I), each
  with sigma / ``split_factor`` (over-reconstructed areas);
* **prune** Gaussians whose opacity is below ``prune_opacity``, and -- once opacities have been
  reset once -- whose world scale exceeds ``max_world_size`` x extent or whose screen radius
  exceeded ``max_screen_size`` (the big blobs that sit in front of cameras);
* keep at most ``max_gaussians``, and at most ``max_per_pixel`` per pixel of one image (the
  highest-gradient candidates are densified first).

Every ``reset_every`` steps inside the window (when at least as many steps remain to recover), opacities are clamped to
``reset_opacity``: floaters that no view needs then stay faint and are pruned, while the rest
recover in a few hundred steps. New rows of every per-Gaussian tensor (view offsets, the
dynamic flag, ...) copy their parent's, and the Adam moments of new rows start at zero.

**Clearance.** A camera sees through the space just in front of its lens, so nothing may sit
there; but in a rig whose cameras face each other (a dome), the other cameras see each camera's
dark housing, and a fit puts Gaussians at the housing -- a few centimetres off in depth, i.e. in
front of that camera's lens, covering its whole image (measured on CMU Panoptic: test camera 0
at 6.9 dB behind a dozen such blobs). Every camera with a known pose -- the training cameras and
the evaluation cameras of a protocol, whose *poses* are given with the data; their images are
never used -- therefore clears a cone: Gaussians with 0 < z < ``clearance`` x (the median depth of the
Gaussians in that camera's view when the fit starts) whose footprint reaches the image (centre
within the image widened by half its size, or by its 3-sigma screen radius) are pruned. After
the densification window, every ``every`` steps and at the end, the same cones are cleared
again, together with the Gaussians that grew past the world or screen size limits.

The scene ``extent`` is given by the stage: 1.1 x the largest distance of a training camera
centre from their mean (3DGS's "cameras extent"), in the units of the positions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


@dataclass
class DensityConfig:
    """Options of adaptive density control (see :mod:`recon.fit.density`)."""

    enabled: bool = True
    start: float = 0.05
    """First densification, as a fraction of the fit's steps (3DGS: 500 of 30k)."""
    stop: float = 0.6
    """No densification or reset after this fraction of the steps (3DGS: 15k of 30k)."""
    every: int = 100
    """Steps between densifications."""
    grad_threshold: float = 0.0002
    """Mean NDC positional-gradient norm above which a Gaussian is densified (3DGS's value)."""
    dense_fraction: float = 0.01
    """Clone below, split above this scale (fraction of the scene extent; 3DGS's percent_dense)."""
    split_factor: float = 1.6
    prune_opacity: float = 0.005
    max_world_size: float = 0.1
    """Prune Gaussians larger than this fraction of the extent (after the first reset)."""
    max_screen_size: float = 0.15
    """Prune Gaussians whose 3-sigma screen radius exceeded this fraction of the image's larger side."""
    reset_every: int = 1000
    """Opacity reset period in steps (0: never); a reset needs this many steps left after it to recover."""
    reset_opacity: float = 0.01
    max_gaussians: int = 400_000
    max_per_pixel: float = 2.0
    """Also keep at most this many Gaussians per pixel of one training image (0: no such cap).
    Densification keeps adding Gaussians finer than a pixel where the gradient stays high, which a
    small image cannot resolve: a 64 x 64 grid of 20 images grew 1.7k -> 20k Gaussians, five per
    pixel, fitting its training views better and its held-out views worse (capped at 8k: +0.7 dB
    held-out, 1.5x faster; BENCHMARKS.md). At 2 the bundled sample (128 x 128) keeps 32.8k, Panoptic
    at 320 x 180 115k."""
    clearance: float = 0.25
    """Free space in front of every rig camera: Gaussians closer than this fraction of the
    camera's median scene depth (of the Gaussians in its view when the fit starts) in front of it
    (training or evaluation cameras: poses only, never images), inside its field of view, are
    pruned at every densification and at the end of the fit (0: off)."""


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


class DensityControl:
    """Density control over the engine's rows (names ``means``, ``log_scales``, ``opacity_logits``)."""

    def __init__(self, config: DensityConfig, extent: float, image_size: tuple[int, int], generator: torch.Generator,
                 cameras: tuple[Tensor, Tensor] | None = None):
        """``cameras``: ``(viewmats [M, 4, 4], Ks [M, 3, 3])`` of the rig cameras that clear their
        near space (positions' frame -> camera, OpenCV), or None."""
        self.c = config
        self.cameras = cameras
        self.cleared = 0
        self.near: Tensor | None = None  # [M] clearance depth per camera, set on first use
        self.extent = float(extent)
        self.H, self.W = int(image_size[0]), int(image_size[1])
        self.g = generator
        self.grad: Tensor | None = None
        self.count: Tensor | None = None
        self.radius: Tensor | None = None
        self.resets = 0
        self.cloned = self.split = self.pruned = 0
        self.densify_steps = 0

    def _stats(self, n: int, device: torch.device) -> None:
        if self.grad is None or self.grad.shape[0] != n:
            self.grad = torch.zeros(n, device=device)
            self.count = torch.zeros(n, device=device)
            self.radius = torch.zeros(n, device=device)

    @torch.no_grad()
    def observe(self, ctx) -> None:
        """Accumulate the statistics of one step (after ``backward``)."""
        m2d = ctx.meta.get("means2d")
        if not self.c.enabled or m2d is None or m2d.grad is None:
            return
        g = m2d.grad  # [C, N, 2] pixels; [C, R, 2] when the render left splats out (meta["rows"] [R])
        rows = ctx.meta.get("rows")
        C = g.shape[0]
        N = g.shape[1] if rows is None else int(ctx.meta["num_splats"])
        self._stats(N, g.device)
        scale = torch.tensor([self.W / 2.0 * C, self.H / 2.0 * C], device=g.device, dtype=g.dtype)
        norm = (g * scale).norm(dim=-1)  # [C, N or R]
        vis = ctx.meta["radii"] > 0
        r = ctx.meta["radii"].to(self.radius.dtype).amax(0) / max(self.H, self.W)
        if rows is None:
            self.grad += (norm * vis).sum(0)
            self.count += vis.sum(0).to(self.count.dtype)
            torch.maximum(self.radius, r, out=self.radius)
        else:
            self.grad.index_add_(0, rows, (norm * vis).sum(0))
            self.count.index_add_(0, rows, vis.sum(0).to(self.count.dtype))
            self.radius[rows] = torch.maximum(self.radius[rows], r)

    def _window(self, total: int) -> tuple[int, int]:
        return int(self.c.start * total), int(self.c.stop * total)

    @torch.no_grad()
    def after_step(self, engine, step: int, total: int) -> None:
        if not self.c.enabled:
            return
        s0, s1 = self._window(total)
        if step >= s1 and (step - s1) % self.c.every == 0 and step + 1 < total:
            self.finish(engine)  # after densification: keep the cameras clear and the blobs out
            return
        if step < s0 or step >= s1:
            return
        period = int(self.c.reset_every)
        if step > s0 and (step - s0) % self.c.every == 0:
            self.densify(engine)
        if period > 0 and step > 0 and step % period == 0 and step + period <= total:
            self.reset_opacity(engine)

    @torch.no_grad()
    def densify(self, engine) -> None:
        """Clone, split and prune once (see the module docstring); clears the statistics."""
        rows = engine.rows
        means, log_scales, opac = rows.get("means"), rows.get("log_scales"), rows.get("opacity_logits")
        N, dev = means.shape[0], means.device
        self._stats(N, dev)
        avg = self.grad / self.count.clamp_min(1)
        scale = log_scales.exp()
        high = (avg >= self.c.grad_threshold) & (self.count > 0)
        small = scale <= self.c.dense_fraction * self.extent
        prune = torch.sigmoid(opac) < self.c.prune_opacity
        prune |= self.blocking(means, log_scales)
        if self.resets > 0:
            prune |= scale > self.c.max_world_size * self.extent
            prune |= self.radius > self.c.max_screen_size
        high &= ~prune
        room = self.cap - (N - int(prune.sum()))
        cand = high.nonzero().squeeze(1)
        if room <= 0:
            cand = cand[:0]
        elif len(cand) > room:  # an over-full split adds one net Gaussian, a clone one: keep the highest
            cand = cand[avg[cand].argsort(descending=True)[:room]]
        do = torch.zeros(N, dtype=torch.bool, device=dev)
        do[cand] = True
        clone = do & small
        split = do & ~small
        keep = (~prune & ~split).nonzero().squeeze(1)
        clone_idx = clone.nonzero().squeeze(1)
        split_idx = split.nonzero().squeeze(1)
        child = split_idx.repeat(2)
        index = torch.cat([keep, clone_idx, child])
        fresh = torch.zeros(len(index), dtype=torch.bool, device=dev)
        fresh[len(keep):] = True
        overrides = {}
        if len(child):
            sig = scale[child][:, None]
            noise = torch.randn(len(child), 3, generator=self.g).to(dev)
            new_means = means.detach()[index].clone()
            new_means[len(keep) + len(clone_idx):] += noise * sig
            new_ls = log_scales.detach()[index].clone()
            new_ls[len(keep) + len(clone_idx):] -= math.log(self.c.split_factor)
            overrides = {"means": new_means, "log_scales": new_ls}
        engine.reindex(index, fresh, overrides)
        self.cloned += len(clone_idx)
        self.split += len(split_idx)
        self.pruned += int(prune.sum())
        self.densify_steps += 1
        self.grad = self.count = self.radius = None

    @torch.no_grad()
    def blocking(self, means: Tensor, log_scales: Tensor | None = None) -> Tensor:
        """``bool [N]``: Gaussians inside some camera's clearance cone whose footprint (3 sigma,
        from ``log_scales [N]`` when given) reaches that camera's image (see the module docstring)."""
        out = torch.zeros(means.shape[0], dtype=torch.bool, device=means.device)
        if self.cameras is None or self.c.clearance <= 0:
            return out
        first = self.near is None
        if first:
            self.near = torch.zeros(self.cameras[0].shape[0])
        for k, (A, K) in enumerate(zip(*self.cameras)):
            A, K = A.to(means), K.to(means)
            Xc = means @ A[:3, :3].T + A[:3, 3]
            z = Xc[:, 2]
            if first:
                u = K[0, 0] * Xc[:, 0] / z.clamp_min(1e-9) + K[0, 2]
                v = K[1, 1] * Xc[:, 1] / z.clamp_min(1e-9) + K[1, 2]
                seen = (z > 0) & (u >= 0) & (u < self.W) & (v >= 0) & (v < self.H)
                self.near[k] = self.c.clearance * float(z[seen].median()) if bool(seen.any()) else 0.0
            close = (z > 0) & (z < float(self.near[k]))
            if not bool(close.any()):
                continue
            zc = z.clamp_min(1e-9)
            u = K[0, 0] * Xc[:, 0] / zc + K[0, 2]
            v = K[1, 1] * Xc[:, 1] / zc + K[1, 2]
            r = 0.5 * self.W + torch.zeros_like(z)
            if log_scales is not None:  # a close blob covers the image even when its centre is beside it
                r = torch.maximum(r, 3.0 * log_scales.exp() * torch.maximum(K[0, 0], K[1, 1]) / zc)
            out |= close & (u > -r) & (u < self.W + r) & (v > -r) & (v < self.H + r)
        return out

    @torch.no_grad()
    def start(self, engine) -> None:
        """Start of the fit: fix each camera's clearance depth from the Gaussians it sees now."""
        if self.c.enabled:
            self.blocking(engine.rows.get("means"))

    @torch.no_grad()
    def finish(self, engine) -> None:
        """After the densification window (every ``every`` steps) and at the end of the fit:
        remove what moved into a camera's clearance cone, grew past ``max_world_size``, or passed
        ``max_screen_size`` in a training render since the last check (once opacities were reset)."""
        if not self.c.enabled:
            return
        ls = engine.rows.get("log_scales")
        block = self.blocking(engine.rows.get("means"), ls)
        if self.resets > 0:
            block |= ls.detach().exp() > self.c.max_world_size * self.extent
            if self.radius is not None and self.radius.shape[0] == block.shape[0]:
                block |= self.radius > self.c.max_screen_size
        self.grad = self.count = self.radius = None
        if bool(block.any()):
            keep = (~block).nonzero().squeeze(1)
            engine.reindex(keep)
            self.cleared += int(block.sum())
            self.pruned += int(block.sum())

    @torch.no_grad()
    def reset_opacity(self, engine) -> None:
        op = engine.rows.get("opacity_logits")
        op.data.clamp_(max=_logit(self.c.reset_opacity))
        engine.reset_state("opacity_logits")
        self.resets += 1

    @property
    def cap(self) -> int:
        """The most Gaussians densification may leave: ``max_gaussians``, or ``max_per_pixel`` x H x W if lower."""
        cap = int(self.c.max_gaussians)
        if self.c.max_per_pixel > 0:
            cap = min(cap, max(1, int(self.c.max_per_pixel * self.H * self.W)))
        return cap

    def report(self) -> dict[str, Any]:
        return {"cap": self.cap, "cloned": self.cloned, "split": self.split, "pruned": self.pruned, "opacity_resets": self.resets,
                "densify_steps": self.densify_steps, "removed_after_window": self.cleared,
                "clearance_cameras": 0 if self.cameras is None else int(self.cameras[0].shape[0])}
