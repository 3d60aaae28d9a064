"""Gaussian splats as ``.ply`` in the graphdeco 3DGS layout (one file: write, read, check).

File layout (what graphdeco's ``GaussianModel.save_ply`` writes and every 3DGS viewer reads):
binary little-endian, one ``vertex`` element, float32 properties in this order::

    x y z  nx ny nz  f_dc_0 f_dc_1 f_dc_2  [f_rest_0 .. f_rest_{3K-1}]  opacity
    scale_0 scale_1 scale_2  rot_0 rot_1 rot_2 rot_3

Conventions of the values:

* ``x y z`` position in world units (for recon: the world of the input cameras; a sequence's
  ``sequence.json`` names that world's up axis, handedness and units);
* ``f_dc_*`` degree-0 spherical-harmonic coefficient per RGB channel, ``rgb = 0.5 + C0 * f_dc``;
* ``f_rest_*`` higher SH bands, channel-major as graphdeco flattens them: ``f_rest_{c*K + k}`` is
  coefficient ``k+1`` of channel ``c``; in memory recon keeps ``sh_rest`` as ``[N, K, 3]``;
* ``opacity`` is the logit of the opacity; ``scale_*`` natural-log scales (standard deviations);
* ``rot_*`` a quaternion ``(w, x, y, z)``, not necessarily normalised.

recon's Gaussians are isotropic: the one log-scale is written three times, the rotation is the
identity ``(1, 0, 0, 0)`` and the normals are 0. Reading also accepts anisotropic files from
other tools (three different scales, any quaternion) and keeps them as they are.

Sequences of such files (one per time, with a manifest) are :mod:`recon.io.plyseq`.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from recon.errors import InputError
from recon.io.atomic import atomic_path

SH_C0 = 0.28209479177387814
"""Degree-0 real spherical harmonic, ``1 / (2 sqrt(pi))``: ``rgb = 0.5 + SH_C0 * f_dc``."""

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}
_MAX_HEADER = 1 << 20


# --- the in-memory record -----------------------------------------------------------------------
@dataclass
class GaussianPly:
    """The Gaussians of one ``.ply`` file, as float32 numpy arrays (N Gaussians, K SH-rest coefficients)."""

    means: np.ndarray  # [N, 3] positions (x, y, z)
    log_scales: np.ndarray  # [N, 3] natural-log standard deviations (all three equal when isotropic)
    opacity_logits: np.ndarray  # [N] logit of the opacity
    sh_dc: np.ndarray  # [N, 3] degree-0 SH coefficient per channel
    sh_rest: np.ndarray  # [N, K, 3] higher SH bands, K = (degree + 1)^2 - 1 (K = 0 for degree 0)
    rotations: np.ndarray  # [N, 4] quaternion (w, x, y, z) as stored
    normals: np.ndarray  # [N, 3] as stored (0 for recon's files)
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # other per-vertex properties, [N] each

    @property
    def num_gaussians(self) -> int:
        return int(self.means.shape[0])

    @property
    def sh_degree(self) -> int:
        return int(round(math.sqrt(self.sh_rest.shape[1] + 1))) - 1

    @property
    def colors_rgb(self) -> np.ndarray:
        """``[N, 3]`` float32 view-independent colour ``0.5 + C0 * f_dc`` (not clipped)."""
        return (self.sh_dc * np.float32(SH_C0) + np.float32(0.5)).astype(np.float32)

    @property
    def opacities(self) -> np.ndarray:
        """``[N]`` float32 opacity in (0, 1) (sigmoid of the stored logit)."""
        return (1.0 / (1.0 + np.exp(-self.opacity_logits.astype(np.float64)))).astype(np.float32)

    @property
    def is_isotropic(self) -> bool:
        """True when the three stored log-scales are equal for every Gaussian."""
        return bool(np.all(self.log_scales[:, 0:1] == self.log_scales))

    def isotropic_log_scale(self) -> np.ndarray:
        """``[N]`` one log-scale per Gaussian: exact when isotropic, else the mean of the three
        log-scales (the log of the geometric-mean radius, which preserves the volume)."""
        if self.is_isotropic:
            return self.log_scales[:, 0].copy()
        return self.log_scales.mean(axis=1, dtype=np.float64).astype(np.float32)


# --- writing ------------------------------------------------------------------------------------
def _as_f32(x: Any, name: str, shape: tuple[int | None, ...]) -> np.ndarray:
    """Array-like (numpy, torch, lists) -> float32 numpy of the given shape (None = any size)."""
    if hasattr(x, "detach"):  # torch tensor, without importing torch here
        x = x.detach().cpu().numpy()
    a = np.asarray(x, dtype=np.float32)
    if a.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, a.shape)):
        want = "[" + ", ".join("N" if s is None else str(s) for s in shape) + "]"
        raise ValueError(f"{name}: expected shape {want}, got {list(a.shape)}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name}: contains NaN or inf ({int((~np.isfinite(a)).sum())} values)")
    return a


def _sh_rest_columns(sh_rest: np.ndarray | None, n: int) -> np.ndarray:
    """``[N, K, 3]`` -> graphdeco's channel-major ``[N, 3K]`` columns ``f_rest_{c*K + k}``."""
    if sh_rest is None:
        return np.zeros((n, 0), np.float32)
    a = _as_f32(sh_rest, "sh_rest", (n, None, 3))
    k = a.shape[1]
    if round(math.sqrt(k + 1)) ** 2 != k + 1:
        raise ValueError(f"sh_rest: expected K = (degree+1)^2 - 1 coefficients (3, 8, 15, ...), got {k}")
    return np.ascontiguousarray(a.transpose(0, 2, 1).reshape(n, 3 * k))


def gaussians_to_columns(
    means: Any,
    log_scales: Any,
    opacity_logits: Any,
    colors_rgb: Any | None = None,
    sh_dc: Any | None = None,
    sh_rest: Any | None = None,
    rotations: Any | None = None,
    normals: Any | None = None,
) -> tuple[list[str], np.ndarray]:
    """Validate the attributes and lay them out as ``(property names, float32 [N, P] table)``.

    Shapes: ``means [N,3]``; ``log_scales [N]`` (isotropic, written 3 times) or ``[N,3]``;
    ``opacity_logits [N]``; exactly one of ``colors_rgb [N,3]`` (linear RGB in [0,1], converted to
    ``f_dc = (rgb - 0.5) / C0``) or ``sh_dc [N,3]``; ``sh_rest [N,K,3]`` or None; ``rotations [N,4]``
    ``(w,x,y,z)`` or None (identity); ``normals [N,3]`` or None (zeros). Raises ``ValueError``.
    """
    xyz = _as_f32(means, "means", (None, 3))
    n = xyz.shape[0]
    ls = _as_f32(log_scales, "log_scales", (n,) if np.ndim(log_scales) == 1 else (n, 3))
    if ls.ndim == 1:
        ls = np.repeat(ls[:, None], 3, axis=1)
    op = _as_f32(opacity_logits, "opacity_logits", (n,))
    if (colors_rgb is None) == (sh_dc is None):
        raise ValueError("pass exactly one of colors_rgb and sh_dc")
    if sh_dc is None:
        rgb = _as_f32(colors_rgb, "colors_rgb", (n, 3))
        dc = ((rgb.astype(np.float64) - 0.5) / SH_C0).astype(np.float32)
    else:
        dc = _as_f32(sh_dc, "sh_dc", (n, 3))
    rest = _sh_rest_columns(sh_rest, n)
    rot = np.tile(np.array([1, 0, 0, 0], np.float32), (n, 1)) if rotations is None else _as_f32(rotations, "rotations", (n, 4))
    nrm = np.zeros((n, 3), np.float32) if normals is None else _as_f32(normals, "normals", (n, 3))
    names = (
        ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
        + [f"f_rest_{i}" for i in range(rest.shape[1])]
        + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    )
    table = np.concatenate([xyz, nrm, dc, rest, op[:, None], ls, rot], axis=1).astype("<f4", copy=False)
    return names, np.ascontiguousarray(table)


def _ply_header(names: list[str], n: int) -> bytes:
    lines = ["ply", "format binary_little_endian 1.0", f"element vertex {n}"]
    lines += [f"property float {name}" for name in names]
    return ("\n".join(lines + ["end_header"]) + "\n").encode("ascii")


def write_gaussians_ply(
    path: str | os.PathLike,
    means: Any,
    log_scales: Any,
    opacity_logits: Any,
    colors_rgb: Any | None = None,
    sh_dc: Any | None = None,
    sh_rest: Any | None = None,
    rotations: Any | None = None,
    normals: Any | None = None,
) -> Path:
    """Write Gaussians as a graphdeco-layout ``.ply`` atomically; returns ``path``.

    Args (numpy arrays or torch tensors; converted to float32):
        means: ``[N, 3]`` positions.
        log_scales: ``[N]`` isotropic log-scale (written as scale_0..2) or ``[N, 3]``.
        opacity_logits: ``[N]`` opacity logits.
        colors_rgb: ``[N, 3]`` RGB in [0, 1], stored as ``f_dc = (rgb - 0.5) / C0``; or instead
        sh_dc: ``[N, 3]`` the SH DC coefficients themselves (stored bit-exactly).
        sh_rest: ``[N, K, 3]`` higher SH bands (K = 3, 8, 15 for degree 1, 2, 3) or None.
        rotations: ``[N, 4]`` quaternions ``(w, x, y, z)`` or None for the identity.
        normals: ``[N, 3]`` or None for zeros.

    Raises ``ValueError`` on wrong shapes or non-finite values (nothing is written then).
    """
    names, table = gaussians_to_columns(means, log_scales, opacity_logits, colors_rgb, sh_dc, sh_rest, rotations, normals)
    header = _ply_header(names, table.shape[0])
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(header)
            f.write(table.tobytes())
    return path


def write_gaussian_record(path: str | os.PathLike, g: GaussianPly) -> Path:
    """Write a :class:`GaussianPly` (all attributes, bit-exact; ``extra`` properties are not written)."""
    return write_gaussians_ply(path, g.means, g.log_scales, g.opacity_logits, sh_dc=g.sh_dc,
                               sh_rest=g.sh_rest if g.sh_rest.shape[1] else None, rotations=g.rotations, normals=g.normals)


# --- reading ------------------------------------------------------------------------------------
def _parse_header(path: Path, blob: bytes) -> tuple[int, str, list[tuple[str, int, list[tuple[str, str]]]]]:
    """-> (offset of the data, byte order '<'/'>', [(element name, count, [(property, dtype)])])."""
    if not blob.startswith(b"ply\n") and not blob.startswith(b"ply\r\n"):
        raise InputError("not a PLY file (missing 'ply' magic line)", path)
    end = blob.find(b"end_header", 0, _MAX_HEADER)
    if end < 0:
        raise InputError("PLY header has no end_header (truncated or corrupt)", path)
    nl = blob.find(b"\n", end)
    if nl < 0:
        raise InputError("PLY header has no end_header line ending (truncated)", path)
    try:
        lines = blob[:end].decode("ascii").splitlines()
    except UnicodeDecodeError:
        raise InputError("PLY header is not ASCII (corrupt)", path) from None
    order = None
    elements: list[tuple[str, int, list[tuple[str, str]]]] = []
    for ln, line in enumerate(lines[1:], start=2):
        tok = line.split()
        if not tok or tok[0] in ("comment", "obj_info"):
            continue
        if tok[0] == "format":
            fmt = tok[1] if len(tok) > 1 else ""
            if fmt == "ascii":
                raise InputError("ASCII PLY is not supported for Gaussians; expected binary_little_endian", path, "format")
            if fmt not in ("binary_little_endian", "binary_big_endian"):
                raise InputError(f"unknown PLY format {fmt!r} (header line {ln})", path, "format")
            order = "<" if fmt == "binary_little_endian" else ">"
        elif tok[0] == "element":
            try:
                elements.append((tok[1], int(tok[2]), []))
            except (IndexError, ValueError):
                raise InputError(f"bad element line {line!r} (header line {ln})", path) from None
            if not 0 <= elements[-1][1] <= len(blob):
                raise InputError(f"element count in {line!r} is negative or larger than the file", path)
        elif tok[0] == "property":
            if not elements:
                raise InputError(f"property before any element (header line {ln})", path)
            if len(tok) >= 2 and tok[1] == "list":
                raise InputError(f"list property {tok[-1]!r} in element {elements[-1][0]!r} is not supported", path, tok[-1])
            if len(tok) != 3 or tok[1] not in _PLY_TYPES:
                raise InputError(f"bad property line {line!r} (header line {ln})", path)
            props = elements[-1][2]
            if any(p == tok[2] for p, _ in props):
                raise InputError(f"duplicate property in element {elements[-1][0]!r}", path, tok[2])
            props.append((tok[2], _PLY_TYPES[tok[1]]))
        else:
            raise InputError(f"unexpected header line {line!r} (header line {ln})", path)
    if order is None:
        raise InputError("PLY header has no format line", path, "format")
    return nl + 1, order, elements


def read_gaussians_ply(path: str | os.PathLike) -> GaussianPly:
    """Read a 3DGS ``.ply`` (graphdeco layout; property order may vary) into a :class:`GaussianPly`.

    Required vertex properties: ``x y z``, ``f_dc_0..2``, ``opacity``, ``scale_0`` (``scale_1/2``
    default to ``scale_0``: isotropic files), and ``f_rest_*`` numbered 0..3K-1 without gaps.
    Optional: ``rot_0..3`` (default identity), ``nx ny nz`` (default 0); any other per-vertex
    property is kept in ``extra``. float32 data is returned bit-exactly; other numeric types are
    converted to float32. Raises :class:`InputError` naming the file (and property) when the file
    is missing, truncated, corrupt, lacks a property or holds NaN/inf.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("PLY file does not exist", path)
    blob = path.read_bytes()
    offset, order, elements = _parse_header(path, blob)
    names = [e[0] for e in elements]
    if "vertex" not in names:
        raise InputError("PLY has no 'vertex' element", path, "vertex")
    pos = offset
    vertex = None
    for name, count, props in elements:
        dtype = np.dtype([(p, order + t) for p, t in props])
        size = count * dtype.itemsize
        if pos + size > len(blob):
            raise InputError(
                f"truncated: element {name!r} needs {size} bytes ({count} x {dtype.itemsize}) at offset {pos}, "
                f"the file has {len(blob) - pos}", path, name)
        if name == "vertex":
            if dtype.itemsize == 0:
                raise InputError("the vertex element has no properties", path, "vertex")
            vertex = np.frombuffer(blob, dtype=dtype, count=count, offset=pos)
        pos += size
    if pos < len(blob):
        warnings.warn(f"{path}: {len(blob) - pos} unexpected bytes after the PLY data (ignored)", stacklevel=2)
    assert vertex is not None
    props = set(vertex.dtype.names or ())

    def col(name: str) -> np.ndarray:
        if name not in props:
            raise InputError("missing vertex property (not a 3D Gaussian splat file?)", path, name)
        a = np.ascontiguousarray(vertex[name]).astype(np.float32, copy=False)
        if not np.isfinite(a).all():
            raise InputError(f"{int((~np.isfinite(a)).sum())} NaN/inf values (corrupt file?)", path, name)
        return a

    def cols(names: Sequence[str]) -> np.ndarray:
        return np.stack([col(n) for n in names], axis=1) if names else np.zeros((vertex.shape[0], 0), np.float32)

    n = vertex.shape[0]
    rest_names = [p for p in props if p.startswith("f_rest_")]
    try:
        rest_idx = sorted(int(p[len("f_rest_"):]) for p in rest_names)
    except ValueError:
        raise InputError("f_rest_* property with a non-integer index", path, "f_rest_*") from None
    if rest_idx != list(range(len(rest_idx))):
        missing = sorted(set(range(max(rest_idx, default=-1) + 1)) - set(rest_idx))
        raise InputError("f_rest_* indices have gaps", path, f"f_rest_{missing[0]}" if missing else "f_rest_*")
    k3 = len(rest_idx)
    k = k3 // 3
    if k3 % 3 or round(math.sqrt(k + 1)) ** 2 != k + 1:
        raise InputError(f"{k3} f_rest_* properties do not form whole SH bands (expected 0, 9, 24, 45, ...)", path, "f_rest_*")
    rest = cols([f"f_rest_{i}" for i in range(k3)]).reshape(n, 3, k).transpose(0, 2, 1)
    scale0 = col("scale_0")
    scales = np.stack([scale0, *(col(s) if s in props else scale0 for s in ("scale_1", "scale_2"))], axis=1)
    rot_names = [f"rot_{i}" for i in range(4)]
    if any(r in props for r in rot_names):
        rot = cols(rot_names)
    else:
        rot = np.tile(np.array([1, 0, 0, 0], np.float32), (n, 1))
    nrm = cols(["nx", "ny", "nz"]) if "nx" in props else np.zeros((n, 3), np.float32)
    known = {"x", "y", "z", "nx", "ny", "nz", "opacity", *(f"f_dc_{i}" for i in range(3)), *rest_names,
             *(f"scale_{i}" for i in range(3)), *rot_names}
    extra = {p: np.ascontiguousarray(vertex[p]) for p in vertex.dtype.names if p not in known}
    return GaussianPly(
        means=cols(["x", "y", "z"]),
        log_scales=np.ascontiguousarray(scales),
        opacity_logits=col("opacity"),
        sh_dc=cols(["f_dc_0", "f_dc_1", "f_dc_2"]),
        sh_rest=np.ascontiguousarray(rest),
        rotations=rot,
        normals=nrm,
        extra=extra,
    )
