"""Motions of a scene object as exact, invertible maps of its rest frame, functions of time.

An object's world position at time ``t`` is ``forward(p_rest, t)`` of its motion chain (a list
applied first to last). Every motion has an exact inverse (used by the ray caster to pull world
points back to the rest frame), so depth, surface identity and trajectories agree to float
precision. Rigid/affine motions also give a 4x4 matrix, letting the ray caster intersect
analytically in the rest frame; the non-rigid ones (twist, bend, wave) displace points as a
function of a coordinate they leave unchanged, which is what makes them exactly invertible.

Units: scene units; angles in radians; ``t`` is normalised clip time (0 = first frame,
1 = last); ``cycles`` counts oscillations (or turns) per clip.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recon.synth.spec import spec_type


def rotation(axis: np.ndarray | tuple, angle: float) -> np.ndarray:
    """Rodrigues rotation ``[3, 3]`` about unit-normalised ``axis`` by ``angle`` radians (right hand)."""
    a = np.asarray(axis, np.float64)
    a = a / np.linalg.norm(a)
    Kx = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(angle) * Kx + (1 - np.cos(angle)) * (Kx @ Kx)


def _osc(cycles: float, phase: float, t: float) -> float:
    return float(np.sin(2 * np.pi * cycles * t + phase))


def _affine(A: np.ndarray, b: np.ndarray) -> np.ndarray:
    M = np.eye(4)
    M[:3, :3] = A
    M[:3, 3] = b
    return M


class Motion:
    """Base: ``forward``/``inverse`` map points ``[N, 3]`` at scalar time ``t``."""

    affine: bool = True

    def matrix(self, t: float) -> np.ndarray:
        """Forward map as a 4x4 matrix (affine motions only)."""
        raise NotImplementedError(type(self).__name__ + " is not affine")

    def forward(self, p: np.ndarray, t: float) -> np.ndarray:
        return apply_affine(self.matrix(t), p)

    def inverse(self, p: np.ndarray, t: float) -> np.ndarray:
        return apply_affine(np.linalg.inv(self.matrix(t)), p)


class SignedDeformation(Motion):
    """Non-rigid motion whose inverse is the same displacement with the opposite sign, because the
    displacement depends only on coordinates it leaves unchanged. Subclasses define
    ``_apply(p [N, 3], t, sign) -> [N, 3]``."""

    affine = False

    def _apply(self, p: np.ndarray, t: float, sign: float) -> np.ndarray:
        raise NotImplementedError

    def forward(self, p: np.ndarray, t: float) -> np.ndarray:
        return self._apply(p, t, 1.0)

    def inverse(self, p: np.ndarray, t: float) -> np.ndarray:
        return self._apply(p, t, -1.0)


def apply_affine(M: np.ndarray, p: np.ndarray) -> np.ndarray:
    """``M [4, 4]`` applied to points ``p [N, 3]`` (column-wise: much faster than ``p @ A.T`` for N x 3)."""
    return p[:, 0:1] * M[:3, 0] + p[:, 1:2] * M[:3, 1] + p[:, 2:3] * M[:3, 2] + M[:3, 3]


@spec_type
@dataclass(frozen=True)
class Translate(Motion):
    """Constant offset (places an object in the world)."""

    offset: tuple = (0.0, 0.0, 0.0)

    def matrix(self, t: float) -> np.ndarray:
        return _affine(np.eye(3), np.asarray(self.offset, np.float64))


@spec_type
@dataclass(frozen=True)
class Rotate(Motion):
    """Constant rotation by ``angle`` radians about ``axis`` through the origin."""

    axis: tuple = (0.0, 1.0, 0.0)
    angle: float = 0.0

    def matrix(self, t: float) -> np.ndarray:
        return _affine(rotation(self.axis, self.angle), np.zeros(3))


@spec_type
@dataclass(frozen=True)
class Spin(Motion):
    """Rotation about ``axis`` through ``center`` by ``phase + 2 pi turns t`` (self-spin or orbit)."""

    axis: tuple = (0.0, 1.0, 0.0)
    turns: float = 0.25
    phase: float = 0.0
    center: tuple = (0.0, 0.0, 0.0)

    def matrix(self, t: float) -> np.ndarray:
        R = rotation(self.axis, self.phase + 2 * np.pi * self.turns * t)
        c = np.asarray(self.center, np.float64)
        return _affine(R, c - R @ c)


@spec_type
@dataclass(frozen=True)
class Bounce(Motion):
    """Offset ``height |sin(pi bounces t + phase)| direction`` (a ball hopping ``bounces`` times)."""

    height: float = 0.4
    bounces: float = 1.0
    phase: float = 0.0
    direction: tuple = (0.0, 1.0, 0.0)

    def matrix(self, t: float) -> np.ndarray:
        h = self.height * abs(np.sin(np.pi * self.bounces * t + self.phase))
        return _affine(np.eye(3), h * np.asarray(self.direction, np.float64))


@spec_type
@dataclass(frozen=True)
class Drift(Motion):
    """Linear motion ``velocity t`` (scene units per clip)."""

    velocity: tuple = (0.1, 0.0, 0.0)

    def matrix(self, t: float) -> np.ndarray:
        return _affine(np.eye(3), t * np.asarray(self.velocity, np.float64))


@spec_type
@dataclass(frozen=True)
class Scale(Motion):
    """Per-axis scale about the origin: ``s_k(t) = base_k (1 + amplitude_k sin(2 pi cycles t + phase))``."""

    base: tuple = (1.0, 1.0, 1.0)
    amplitude: tuple = (0.2, 0.2, 0.2)
    cycles: float = 0.5
    phase: float = 0.0

    def scales(self, t: float) -> np.ndarray:
        """Scale factors ``[3]`` at time ``t``."""
        s = np.asarray(self.base, np.float64) * (1.0 + np.asarray(self.amplitude, np.float64) * _osc(self.cycles, self.phase, t))
        if (s <= 0).any():
            raise ValueError(f"Scale reaches a non-positive factor {s.tolist()} at t={t}")
        return s

    def matrix(self, t: float) -> np.ndarray:
        return _affine(np.diag(self.scales(t)), np.zeros(3))


@spec_type
@dataclass(frozen=True)
class Twist(SignedDeformation):
    """Twist about coordinate axis ``axis`` (0/1/2): rotate by ``rate(t) h`` where ``h`` is that
    coordinate; ``rate(t) = amount sin(2 pi cycles t + phase)`` radians per scene unit."""

    axis: int = 1
    amount: float = 1.5
    cycles: float = 0.5
    phase: float = 0.0

    def _apply(self, p: np.ndarray, t: float, sign: float) -> np.ndarray:
        a = self.axis
        i, j = (a + 1) % 3, (a + 2) % 3
        ang = sign * self.amount * _osc(self.cycles, self.phase, t) * p[:, a]
        c, s = np.cos(ang), np.sin(ang)
        out = p.copy()
        out[:, i] = c * p[:, i] - s * p[:, j]
        out[:, j] = s * p[:, i] + c * p[:, j]
        return out


@spec_type
@dataclass(frozen=True)
class Bend(SignedDeformation):
    """Bend: displace coordinate ``direction`` by ``k(t) h^2`` where ``h`` is coordinate ``axis``
    (``direction != axis``); ``k(t) = amount sin(2 pi cycles t + phase)`` per scene unit."""

    axis: int = 1
    direction: int = 0
    amount: float = 0.5
    cycles: float = 0.5
    phase: float = 0.0

    def __post_init__(self) -> None:
        if self.axis == self.direction:
            raise ValueError("Bend axis and direction must differ")

    def _apply(self, p: np.ndarray, t: float, sign: float) -> np.ndarray:
        out = p.copy()
        out[:, self.direction] += sign * self.amount * _osc(self.cycles, self.phase, t) * p[:, self.axis] ** 2
        return out


@spec_type
@dataclass(frozen=True)
class Wave(SignedDeformation):
    """Travelling wave: displace coordinate ``direction`` by
    ``amplitude sin(2 pi (h / wavelength - cycles t) + phase)``, ``h`` = coordinate ``axis``."""

    axis: int = 1
    direction: int = 0
    amplitude: float = 0.05
    wavelength: float = 1.0
    cycles: float = 1.0
    phase: float = 0.0

    def __post_init__(self) -> None:
        if self.axis == self.direction:
            raise ValueError("Wave axis and direction must differ")

    def _apply(self, p: np.ndarray, t: float, sign: float) -> np.ndarray:
        out = p.copy()
        arg = 2 * np.pi * (p[:, self.axis] / self.wavelength - self.cycles * t) + self.phase
        out[:, self.direction] += sign * self.amplitude * np.sin(arg)
        return out


def _segments(motions: list, t: float) -> list:
    """The chain with runs of affine motions merged into one 4x4 forward matrix each."""
    out: list = []
    for m in motions:
        if m.affine:
            M = m.matrix(t)
            if out and isinstance(out[-1], np.ndarray):
                out[-1] = M @ out[-1]
            else:
                out.append(M)
        else:
            out.append(m)
    return out


def chain_forward(motions: list, p: np.ndarray, t: float) -> np.ndarray:
    """Rest points ``p [N, 3]`` -> world ``[N, 3]`` at time ``t`` (motions applied first to last)."""
    p = np.asarray(p, np.float64)
    for seg in _segments(motions, t):
        p = apply_affine(seg, p) if isinstance(seg, np.ndarray) else seg.forward(p, t)
    return p


def chain_inverse(motions: list, p: np.ndarray, t: float) -> np.ndarray:
    """World points ``p [N, 3]`` -> rest ``[N, 3]`` at time ``t`` (exact inverse of :func:`chain_forward`)."""
    p = np.asarray(p, np.float64)
    for seg in reversed(_segments(motions, t)):
        p = apply_affine(np.linalg.inv(seg), p) if isinstance(seg, np.ndarray) else seg.inverse(p, t)
    return p


def chain_is_affine(motions: list) -> bool:
    return all(m.affine for m in motions)


def chain_matrix(motions: list, t: float) -> np.ndarray:
    """Forward 4x4 matrix of an all-affine chain at time ``t``."""
    M = np.eye(4)
    for m in motions:
        M = m.matrix(t) @ M
    return M
