"""Procedural solid textures: colour as a function of a point's rest (canonical) coordinates.

A texture is evaluated on 3D rest coordinates, so a surface point keeps its colour under any
motion (the ground truth for tracking is the texture itself). Patterns give a scalar field
``v(p)`` in [0, 1] that indexes a piecewise-linear palette of 2-4 colours. Patterns are kept
smooth (soft checker edges, low-octave noise) so a 128 px render is not dominated by aliasing.
The integer hash makes noise bit-identical across platforms.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recon.synth.spec import spec_type

PATTERNS = ("checker", "stripes", "rings", "noise", "marble", "gradient")


@spec_type
@dataclass(frozen=True)
class Texture:
    """A palette-mapped solid pattern. Units: rest-frame scene units; colours RGB in [0, 1]."""

    pattern: str = "checker"
    """One of :data:`PATTERNS`."""
    colors: tuple = ((0.9, 0.3, 0.2), (0.95, 0.85, 0.3))
    """2-4 RGB colours in [0, 1]; ``v = 0`` maps to the first, ``v = 1`` to the last."""
    scale: float = 0.25
    """Feature size: checker cell / stripe period / noise cell, in scene units."""
    axis: tuple = (0.0, 1.0, 0.0)
    """Direction of stripes and gradients (normalised on use)."""
    detail: float = 0.15
    """Amplitude of a low-octave noise added to ``v`` (breaks symmetry for flow and stereo)."""
    softness: float = 0.5
    """Checker edge width as a fraction of the cell (0 = hard edges)."""
    seed: int = 0
    """Noise seed."""

    def __post_init__(self) -> None:
        if self.pattern not in PATTERNS:
            raise ValueError(f"unknown texture pattern {self.pattern!r}; valid: {', '.join(PATTERNS)}")
        if not 2 <= len(self.colors) <= 4:
            raise ValueError(f"a texture needs 2-4 colours, got {len(self.colors)}")

    def value(self, p: np.ndarray) -> np.ndarray:
        """Pattern scalar ``[N]`` in [0, 1] at rest points ``p [N, 3]``."""
        q = np.asarray(p, np.float64) / self.scale
        axis = np.asarray(self.axis, np.float64)
        axis = axis / max(np.linalg.norm(axis), 1e-12)
        if self.pattern == "checker":
            # product of three soft square waves; the lattice is shifted a quarter cell so that
            # planes through the origin (the ground y = 0) do not run along a cell boundary
            w = max(self.softness, 1e-3)
            sq = np.clip(np.sin(np.pi * (q + 0.25)) / w, -1.0, 1.0)
            v = 0.5 + 0.5 * sq[:, 0] * sq[:, 1] * sq[:, 2]
        elif self.pattern == "stripes":
            v = 0.5 + 0.5 * np.sin(2 * np.pi * (q @ axis))
        elif self.pattern == "rings":
            v = 0.5 + 0.5 * np.sin(2 * np.pi * np.linalg.norm(q, axis=1))
        elif self.pattern == "noise":
            v = fbm(q, self.seed, octaves=2)
        elif self.pattern == "marble":
            v = 0.5 + 0.5 * np.sin(2 * np.pi * (q @ axis) + 4.0 * fbm(q * 0.5, self.seed, octaves=2))
        else:  # gradient: a saw along the axis, folded so it stays continuous
            x = (q @ axis) * 0.5
            v = 1.0 - np.abs(2.0 * (x - np.floor(x)) - 1.0)
        if self.detail > 0:
            v = v + self.detail * (fbm(q * 2.0 + 17.0, self.seed + 1, octaves=1) - 0.5) * 2.0
        return np.clip(v, 0.0, 1.0)

    def color(self, p: np.ndarray) -> np.ndarray:
        """RGB ``[N, 3]`` float64 in [0, 1] at rest points ``p [N, 3]``."""
        return palette(self.value(p), np.asarray(self.colors, np.float64))


def palette(v: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """Piecewise-linear palette: ``v [N]`` in [0, 1], ``colors [C, 3]`` -> ``[N, 3]``."""
    n = colors.shape[0] - 1
    x = np.clip(v, 0.0, 1.0) * n
    i = np.minimum(np.floor(x).astype(np.int64), n - 1)
    f = (x - i)[:, None]
    return colors[i] * (1.0 - f) + colors[i + 1] * f


def _hash01(ix: np.ndarray, iy: np.ndarray, iz: np.ndarray, seed: int) -> np.ndarray:
    """Integer lattice hash -> [0, 1) (uint32 arithmetic, platform independent)."""
    with np.errstate(over="ignore"):
        h = (ix.astype(np.uint32) * np.uint32(73856093)) ^ (iy.astype(np.uint32) * np.uint32(19349663))
        h ^= iz.astype(np.uint32) * np.uint32(83492791)
        h ^= np.uint32((seed * 2654435761) & 0xFFFFFFFF)
        h ^= h >> np.uint32(16)
        h *= np.uint32(0x7FEB352D)
        h ^= h >> np.uint32(15)
        h *= np.uint32(0x846CA68B)
        h ^= h >> np.uint32(16)
    return h.astype(np.float64) / 4294967296.0


def value_noise(q: np.ndarray, seed: int) -> np.ndarray:
    """Smooth value noise ``[N]`` in [0, 1] at ``q [N, 3]`` (lattice spacing 1, C1 smoothstep fade)."""
    f = np.floor(q)
    i = f.astype(np.int64)
    w = q - f
    w = w * w * (3.0 - 2.0 * w)
    out = np.zeros(q.shape[0])
    for dx in (0, 1):
        wx = w[:, 0] if dx else 1.0 - w[:, 0]
        for dy in (0, 1):
            wy = w[:, 1] if dy else 1.0 - w[:, 1]
            for dz in (0, 1):
                wz = w[:, 2] if dz else 1.0 - w[:, 2]
                out += wx * wy * wz * _hash01(i[:, 0] + dx, i[:, 1] + dy, i[:, 2] + dz, seed)
    return out


def fbm(q: np.ndarray, seed: int, octaves: int = 2) -> np.ndarray:
    """Fractal sum of :func:`value_noise` octaves, normalised to [0, 1]."""
    total = np.zeros(q.shape[0])
    amp, norm = 1.0, 0.0
    for o in range(octaves):
        total += amp * value_noise(q * (2.0**o), seed + 101 * o)
        norm += amp
        amp *= 0.5
    return total / norm
