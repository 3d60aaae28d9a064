"""Deformation of the canonical splats: ``dp_ij = dp_i^v + dp_j^t`` (4Real-Video, eq. 3).

* ``dp_j^t`` -- temporal deformation, an MLP of the positional encoding of a Gaussian's canonical
  position and of time (Deformable-3DGS style). The last layer is zero-initialised, so the field
  starts as the identity and the canonical splats render unchanged at every time.
* ``dp_i^v`` -- per-view offset ``[P, V, 3]`` in canonical coordinates: the non-rigid remainder of
  the dense 3D tracks after the rigid alignment of view ``i`` to the central frame (a buffer, not
  optimised), plus an optional learnable correction (zero-initialised, kept small by a
  regulariser in the deform stage) -- the "small regularised correction" used with given cameras.

Positions and times are normalised before encoding: positions by a centre and a radius fixed
at construction (robust percentiles of the canonical points), times to [-1, 1] over the grid's
time range.
"""

from __future__ import annotations

import math
import weakref

import torch
from torch import Tensor, nn
import torch.nn.functional as F


def positional_encoding(x: Tensor, num_freqs: int) -> Tensor:
    """NeRF encoding ``[x, sin(2^k pi x), cos(2^k pi x)]_{k < num_freqs}``: ``[..., D] -> [..., D (1 + 2 F)]``."""
    if num_freqs <= 0:
        return x
    freqs = (2.0 ** torch.arange(num_freqs, dtype=x.dtype, device=x.device)) * math.pi
    xf = x[..., None, :] * freqs[:, None]  # [..., F, D]
    enc = torch.cat([torch.sin(xf), torch.cos(xf)], dim=-2).flatten(-2)
    return torch.cat([x, enc], dim=-1)


ACTIVATIONS = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU}


VANISHING_OFFSET = 1e-6
"""Per-view offsets at most this fraction of the scene radius count as zero (rig tracks give ~1e-8 m:
float round-off of identical positions; far below a pixel at any resolution)."""


class DeformField(nn.Module):
    """Temporal MLP plus per-view offsets for ``P`` Gaussians and ``V`` views.

    Args:
        tracked_offsets: ``[P, V, 3]`` dp_i^v from tracking (canonical coordinates; zeros to disable).
        center: ``[3]`` and radius (float): position normalisation, ``(x - center) / radius``.
        time_range: ``(t_min, t_max)`` of the grid's times, mapped to [-1, 1].
        pos_freqs, time_freqs: frequencies of the positional encodings.
        width, depth: hidden width and number of hidden layers of the MLP.
        learn_view_offsets: add a learnable correction ``[P, V, 3]`` to the tracked offsets.
        activation: of the hidden layers, ``relu`` or ``leaky_relu`` (slope 0.01: a unit pushed
            below zero still gets a gradient, so Adam can bring it back -- a ReLU MLP whose units all
            died outputs one constant offset at every time, which ended a monocular fit; see
            :mod:`recon.fit.monocular`).
        trajectory_degree: K >= 0; K > 0 adds to dp^t of every dynamic Gaussian its own polynomial
            path ``radius * sum_k c_k P_k(tau)`` (Legendre polynomials P_1..P_K of the normalised
            time tau in [-1, 1], coefficients ``trajectory [P, K, 3]``, zero at start). A shared MLP
            cannot carry a small, fast object (a thrown ball: ~100 of 28k dynamic Gaussians, moving
            a diameter per frame): its few Gaussians' gradients are drowned in the MLP's shared
            weights, while per-Gaussian coefficients get Adam steps of their own (see
            :mod:`recon.fit.deform`).
        lifespan: give every Gaussian a life in time, ``lifespan [P, 2]``: a centre ``c`` (normalised
            time, as ``tau``) and a log-width ``w``; its opacity at ``tau`` is the peak opacity times
            ``exp(-((tau - c) / e^w)^2 / 2)`` (:meth:`life`). For splats initialised at several
            times (a monocular capture's objects carved where they are in each of several windows,
            :mod:`recon.fit.monocular`): each lives around its own time, so the MLP only has to
            carry it to the neighbouring windows, not across the whole sequence. Off (``[P, 0]``):
            every Gaussian lives at every time.
    """

    def __init__(
        self,
        tracked_offsets: Tensor,
        center: Tensor,
        radius: float,
        time_range: tuple[float, float],
        pos_freqs: int = 6,
        time_freqs: int = 4,
        width: int = 64,
        depth: int = 3,
        learn_view_offsets: bool = True,
        activation: str = "relu",
        trajectory_degree: int = 0,
        lifespan: bool = False,
    ):
        super().__init__()
        P, V, _ = tracked_offsets.shape
        self.register_buffer("tracked_offsets", tracked_offsets.detach().float().clone())
        self.register_buffer("center", center.detach().float().reshape(3).clone())
        self.register_buffer("radius", torch.tensor(float(max(radius, 1e-6))))
        self.register_buffer("time_range", torch.tensor([float(time_range[0]), float(time_range[1])]))
        self.register_buffer("dynamic", torch.ones(P, dtype=torch.bool))
        """[P] bool: Gaussians the temporal MLP moves; the others (a static background, e.g. outside
        a capture's foreground masks) have dp^t = 0 and cost no MLP evaluation."""
        self.pos_freqs, self.time_freqs = int(pos_freqs), int(time_freqs)
        self.learn_view_offsets = bool(learn_view_offsets)
        self.view_correction = nn.Parameter(torch.zeros(P, V, 3), requires_grad=self.learn_view_offsets)
        K = max(0, int(trajectory_degree))
        self.trajectory = nn.Parameter(torch.zeros(P, K, 3), requires_grad=K > 0)
        """[P, K, 3] per-Gaussian Legendre coefficients of dp^t, in units of ``radius`` (K = 0: none)."""
        self.lifespan = nn.Parameter(torch.zeros(P, 2 if lifespan else 0), requires_grad=bool(lifespan))
        """[P, 2] centre (normalised time) and log-width of each Gaussian's life (see :meth:`life`); [P, 0]: none."""
        d_in = 3 * (1 + 2 * self.pos_freqs) + (1 + 2 * self.time_freqs)
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
        self.activation = activation
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += [nn.Linear(d_in if i == 0 else width, width), ACTIVATIONS[activation]()]
        last = nn.Linear(width if depth > 0 else d_in, 3)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.mlp = nn.Sequential(*layers, last)

    @property
    def num_views(self) -> int:
        return int(self.tracked_offsets.shape[1])

    @property
    def view_offsets_vanish(self) -> bool:
        """True when dp_i^v is zero for every view (no learned correction, tracked offsets below
        :data:`VANISHING_OFFSET` x radius: a calibrated rig's tracks), so renders may skip adding
        it and share one position tensor across the views of a time. Re-checked whenever the
        offset tensors are replaced or modified in place."""
        a, b = self.tracked_offsets, self.view_correction
        if b.requires_grad:  # a learned correction (its version changes every step): never scanned
            return False
        key = (a._version, b._version)
        cached = getattr(self, "_vanish_key", None)  # (weak refs: a freed tensor never matches a new one)
        if cached is None or cached[0]() is not a or cached[1]() is not b or cached[2] != key:
            tol = VANISHING_OFFSET * float(self.radius)
            with torch.no_grad():
                small = all(float(t.abs().max()) <= tol if t.numel() else True
                            for t in (self.tracked_offsets, self.view_correction))
            self._vanish = bool(small)
            self._vanish_key = (weakref.ref(a), weakref.ref(b), key)
        return self._vanish

    def norm_time(self, t: float | Tensor) -> Tensor:
        """Grid time -> [-1, 1] (0 when the grid has a single time)."""
        lo, hi = self.time_range
        t = torch.as_tensor(t, dtype=torch.float32, device=self.center.device)
        span = hi - lo
        return torch.where(span > 0, 2.0 * (t - lo) / span.clamp_min(1e-12) - 1.0, torch.zeros_like(t))

    def time_offset(self, means: Tensor, t: float | Tensor) -> Tensor:
        """dp^t ``[N, 3]`` at grid time ``t`` for canonical positions ``means [N, 3]``."""
        x = (means - self.center) / self.radius
        # every point shares the time, so the first layer's time columns act once, as a bias: the
        # same function as the MLP on [PE(x), PE(t)], without building an [N, 1 + 2F] time block
        # (tools/bench_fit_step.py --concat-time: within the noise of a whole fit step)
        first = self.mlp[0]
        dx = 3 * (1 + 2 * self.pos_freqs)
        tt = positional_encoding(self.norm_time(t).reshape(1, 1), self.time_freqs)  # [1, 1 + 2F]
        bias = F.linear(tt, first.weight[:, dx:], first.bias)[0]
        h = F.linear(positional_encoding(x, self.pos_freqs), first.weight[:, :dx], bias)
        return self.mlp[1:](h) * self.radius

    @property
    def trajectory_degree(self) -> int:
        return int(self.trajectory.shape[1])

    @property
    def has_lifespan(self) -> bool:
        return int(self.lifespan.shape[1]) > 0

    def life(self, t: float | Tensor) -> Tensor | None:
        """``[P]`` in (0, 1]: each Gaussian's opacity factor at grid time ``t``,
        ``exp(-((tau - c) / e^w)^2 / 2)`` (``lifespan = [c, w]``), or None without lifespans."""
        if not self.has_lifespan:
            return None
        tau = self.norm_time(t).reshape(())
        d = (tau - self.lifespan[:, 0]) * torch.exp(-self.lifespan[:, 1])
        return torch.exp(-0.5 * d * d)

    def opacity_logits_at(self, opacity_logits: Tensor, t: float | Tensor) -> Tensor:
        """Logits ``[P]`` of the opacities at grid time ``t``: ``opacity_logits [P]`` (the peak) with
        each Gaussian's :meth:`life` factor applied; unchanged without lifespans."""
        if not self.has_lifespan or self.lifespan.shape[0] != opacity_logits.shape[0]:
            return opacity_logits
        tau = self.norm_time(t).reshape(())
        d = (tau - self.lifespan[:, 0]) * torch.exp(-self.lifespan[:, 1])
        logp = (torch.nn.functional.logsigmoid(opacity_logits) - 0.5 * d * d).clamp_min(-40.0)
        return logp - torch.log1p(-torch.exp(logp).clamp_max(1.0 - 1e-6))

    def path_offset(self, t: float | Tensor, rows: Tensor | None = None) -> Tensor | None:
        """The per-Gaussian polynomial part of dp^t ``[P or R, 3]`` at grid time ``t`` (of ``rows``
        when given), or None without one (``trajectory_degree`` 0)."""
        K = self.trajectory_degree
        if K == 0:
            return None
        tau = self.norm_time(t).reshape(())
        p_prev, p = torch.ones_like(tau), tau
        basis = [p]
        for k in range(1, K):  # Bonnet: (k + 1) P_{k+1} = (2k + 1) tau P_k - k P_{k-1}
            p_prev, p = p, ((2 * k + 1) * tau * p - k * p_prev) / (k + 1)
            basis.append(p)
        c = self.trajectory if rows is None else self.trajectory[rows]
        return (c * torch.stack(basis)[None, :, None]).sum(1) * self.radius

    def motion(self, means: Tensor, t: float | Tensor) -> Tensor:
        """dp^t ``[P, 3]`` of all P Gaussians (``means [P, 3]``): the MLP (plus each one's polynomial
        path, :meth:`path_offset`) on the dynamic ones, zero on the static ones."""
        dyn = self.dynamic
        if dyn.shape[0] != means.shape[0] or bool(dyn.all()):
            out = self.time_offset(means, t)
            path = self.path_offset(t) if self.trajectory.shape[0] == means.shape[0] else None
            return out if path is None else out + path
        idx = dyn.nonzero().squeeze(1)
        return means.new_zeros(means.shape).index_copy(0, idx, self._moving(means[idx], t, idx))

    def _moving(self, means: Tensor, t: float | Tensor, rows: Tensor) -> Tensor:
        """The MLP plus the polynomial paths ``[R, 3]`` of rows ``rows [R]`` (positions ``means [R, 3]``)."""
        out = self.time_offset(means, t)
        path = self.path_offset(t, rows)
        return out if path is None else out + path

    def motion_rows(self, means: Tensor, t: float | Tensor, rows: Tensor) -> Tensor:
        """dp^t ``[R, 3]`` of the Gaussians ``rows [R]`` (canonical positions ``means [R, 3]``, their
        rows' own) as :meth:`motion` gives it: zero on the static ones."""
        out = self._moving(means, t, rows)
        return torch.where(self.dynamic[rows, None], out, torch.zeros_like(out))

    def view_offset(self, view: int) -> Tensor:
        """dp_i^v ``[P, 3]`` of view ``view`` (tracked + learned correction)."""
        return self.tracked_offsets[:, view] + self.view_correction[:, view]

    def forward(self, means: Tensor, view: int | None, t: float | Tensor) -> Tensor:
        """Deformed positions ``[N, 3]`` of cell (``view``, time ``t``); ``view=None`` omits dp^v
        (the per-time geometry that is exported)."""
        out = means + self.motion(means, t)
        if view is not None:
            out = out + self.view_offset(view)
        return out

    def select(self, keep: Tensor) -> None:
        """Keep only the points where ``keep [P]`` is True (in place; call before building an optimiser)."""
        self.tracked_offsets = self.tracked_offsets[keep].contiguous()
        self.dynamic = self.dynamic[keep].contiguous()
        self.view_correction = nn.Parameter(self.view_correction.detach()[keep].contiguous(), requires_grad=self.learn_view_offsets)
        self.trajectory = nn.Parameter(self.trajectory.detach()[keep].contiguous(), requires_grad=self.trajectory.requires_grad)
        self.lifespan = nn.Parameter(self.lifespan.detach()[keep].contiguous(), requires_grad=self.lifespan.requires_grad)
