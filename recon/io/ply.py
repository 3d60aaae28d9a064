"""Gaussian splats as ``.ply`` in the graphdeco 3DGS layout, and ``.ply`` sequences with a manifest.

File layout (what graphdeco's ``GaussianModel.save_ply`` writes and every 3DGS viewer reads):
binary little-endian, one ``vertex`` element, float32 properties in this order::

    x y z  nx ny nz  f_dc_0 f_dc_1 f_dc_2  [f_rest_0 .. f_rest_{3K-1}]  opacity
    scale_0 scale_1 scale_2  rot_0 rot_1 rot_2 rot_3

Conventions of the values:

* ``x y z`` position in world units (for recon: the OpenCV world of the input cameras, y down);
* ``f_dc_*`` degree-0 spherical-harmonic coefficient per RGB channel, ``rgb = 0.5 + C0 * f_dc``;
* ``f_rest_*`` higher SH bands, channel-major as graphdeco flattens them: ``f_rest_{c*K + k}`` is
  coefficient ``k+1`` of channel ``c``; in memory recon keeps ``sh_rest`` as ``[N, K, 3]``;
* ``opacity`` is the logit of the opacity; ``scale_*`` natural-log scales (standard deviations);
* ``rot_*`` a quaternion ``(w, x, y, z)``, not necessarily normalised.

recon's Gaussians are isotropic: the one log-scale is written three times, the rotation is the
identity ``(1, 0, 0, 0)`` and the normals are 0. Reading also accepts anisotropic files from
other tools (three different scales, any quaternion) and keeps them as they are.

A sequence is a folder ``OUT/ply/`` with ``frame_0000.ply ...`` (one standalone file per time,
the same Gaussians in the same order in each; only positions change) and ``sequence.json`` (see
:func:`write_ply_sequence`). The manifest lives inside ``ply/`` so the folder is replaced as one
atomic rename: frames and manifest can never disagree.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from recon import schema as S
from recon.errors import InputError
from recon.io.atomic import atomic_path, write_json

SH_C0 = 0.28209479177387814
"""Degree-0 real spherical harmonic, ``1 / (2 sqrt(pi))``: ``rgb = 0.5 + SH_C0 * f_dc``."""

SEQUENCE_FORMAT = "recon-ply-sequence"
SEQUENCE_VERSION = 1
COORDINATES = ("right-handed world of the input cameras, whose poses are OpenCV (camera x right, y down, z forward); "
               "the world's up axis is world.up")

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


# --- sequences ----------------------------------------------------------------------------------
@dataclass
class PlySequence:
    """A ``.ply`` sequence: T frames of the same N Gaussians."""

    means: np.ndarray  # [T, N, 3] float32 positions per frame
    gaussians: GaussianPly  # the shared attributes (its ``means`` are frame 0's)
    times: np.ndarray  # [T] float64, in the unit named by manifest["time_unit"]
    fps: float | None
    manifest: dict[str, Any]
    paths: list[Path]

    @property
    def num_frames(self) -> int:
        return int(self.means.shape[0])


def frame_name(t: int) -> str:
    return f"frame_{t:04d}.ply"


def write_ply_sequence(
    folder: str | os.PathLike,
    frames: Sequence[Any] | np.ndarray,
    log_scales: Any,
    opacity_logits: Any,
    colors_rgb: Any | None = None,
    sh_dc: Any | None = None,
    sh_rest: Any | None = None,
    times: Sequence[float] | np.ndarray | None = None,
    fps: float | None = None,
    source: str | None = None,
    time_unit: str = "s",
    meta: dict[str, Any] | None = None,
    world: dict[str, Any] | None = None,
    fps_source: str | None = None,
    render: dict[str, Any] | None = None,
) -> Path:
    """Write ``folder/ply/frame_0000.ply ...`` and ``folder/ply/sequence.json``; returns ``folder/ply``.

    The ``ply`` folder is written atomically: it appears (or replaces an old one) only once every
    frame and the manifest are complete.

    Args:
        folder: Output folder (e.g. a run folder); created when missing.
        frames: T per-frame positions ``[N, 3]`` (a list, or an array ``[T, N, 3]``), same N and
            Gaussian order in every frame.
        log_scales, opacity_logits, colors_rgb / sh_dc, sh_rest: shared attributes, shapes as in
            :func:`write_gaussians_ply`.
        times: ``[T]`` time of each frame (default ``t / fps``, or ``t`` without fps).
        fps: Frames per second of playback (stored; None when unknown).
        source: What the sequence was reconstructed from (stored in the manifest).
        time_unit: Unit of ``times`` ("s" or "normalised").
        meta: Free JSON-able extra fields for the manifest.
        world: The world frame (``up`` unit vector and where it comes from, handedness, units).
        fps_source: Where ``fps`` comes from (the capture, or a playback default).
        render: How the splats were rendered when they were fitted (low-pass, compensation), so a
            viewer can match.

    Manifest ``sequence.json``: ``format`` ("recon-ply-sequence"), ``version``, ``count`` (T),
    ``num_gaussians`` (N), ``frames`` (file names), ``times``, ``time_unit``, ``fps``,
    ``sh_degree``, ``layout`` (graphdeco), ``isotropic``, ``coordinates``, ``world``,
    ``fps_source``, ``render``, ``shared_attributes``, ``source``, ``recon_version``, ``meta``.
    ``times`` are written at the precision given (float64 from a grid).
    """
    from recon import __version__

    frames = list(frames)
    if not frames:
        raise ValueError("write_ply_sequence: no frames")
    T = len(frames)
    first = _as_f32(frames[0], "frames[0]", (None, 3))
    n = first.shape[0]
    if times is None:
        times_arr = np.arange(T, dtype=np.float64) / (fps if fps else 1.0)
    else:
        times_arr = np.asarray(times, dtype=np.float64).reshape(-1)
    if times_arr.shape != (T,) or not np.isfinite(times_arr).all():
        raise ValueError(f"times: expected {T} finite values, got {times_arr.shape[0]}")
    if fps is not None and not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be positive, got {fps}")
    names, table = gaussians_to_columns(first, log_scales, opacity_logits, colors_rgb, sh_dc, sh_rest)
    folder = Path(folder)
    out = folder / "ply"
    if out.exists() and not out.is_dir():
        raise InputError("output exists and is not a folder", out)
    k3 = sum(1 for nm in names if nm.startswith("f_rest_"))
    s0 = names.index("scale_0")
    manifest = {
        "format": SEQUENCE_FORMAT,
        "version": SEQUENCE_VERSION,
        "count": T,
        "num_gaussians": n,
        "frames": [frame_name(t) for t in range(T)],
        "times": times_arr.tolist(),
        "time_unit": time_unit,
        "fps": None if fps is None else float(fps),
        "sh_degree": int(round(math.sqrt(k3 // 3 + 1))) - 1,
        "layout": "graphdeco 3DGS binary_little_endian float32: " + " ".join(names),
        "isotropic": bool(np.all(table[:, s0:s0 + 1] == table[:, s0:s0 + 3])),
        "coordinates": COORDINATES,
        "world": world or {"up": None, "up_source": "unknown", "handedness": "right-handed", "units": "unknown"},
        "fps_source": fps_source,
        "render": render,
        "shared_attributes": "all but x y z are identical in every frame",
        "source": source,
        "recon_version": __version__,
        "meta": meta or {},
    }
    header = _ply_header(names, n)
    with atomic_path(out) as tmp:
        tmp.mkdir(parents=True)
        for t, f in enumerate(frames):
            table[:, 0:3] = _as_f32(f, f"frames[{t}]", (n, 3))
            with open(tmp / frame_name(t), "wb") as fh:
                fh.write(header)
                fh.write(table.tobytes())
        write_json(tmp / "sequence.json", manifest)
    return out


def _seq_dir(folder: Path) -> Path:
    if (folder / "sequence.json").is_file():
        return folder
    if (folder / "ply" / "sequence.json").is_file():
        return folder / "ply"
    if not folder.exists():
        raise InputError("path does not exist", folder)
    raise InputError("not a ply sequence (no sequence.json here or in ply/)", folder)


def read_ply_sequence(folder: str | os.PathLike) -> PlySequence:
    """Read a sequence written by :func:`write_ply_sequence`; ``folder`` is the output folder or its ``ply/``.

    Checks the manifest, that every listed frame exists and has the same N and properties, and
    that all attributes except positions equal frame 0's. Raises :class:`InputError` naming the
    file and field otherwise.
    """
    d = _seq_dir(Path(folder))
    src = d / "sequence.json"
    man = S.read_json(src, what="sequence.json")
    if not isinstance(man, dict):
        raise InputError("expected a JSON object", src)
    if man.get("format") != SEQUENCE_FORMAT:
        raise InputError(f"expected format {SEQUENCE_FORMAT!r}, got {man.get('format')!r}", src, "format")
    if not isinstance(man.get("version"), int) or man["version"] > SEQUENCE_VERSION:
        raise InputError(f"version {man.get('version')!r} is newer than this recon supports ({SEQUENCE_VERSION})", src, "version")
    names = man.get("frames")
    if not isinstance(names, list) or not names or not all(isinstance(x, str) for x in names):
        raise InputError("expected a non-empty list of file names", src, "frames")
    if man.get("count") != len(names):
        raise InputError(f"count {man.get('count')!r} != {len(names)} listed frames", src, "count")
    try:
        times = np.asarray(man.get("times"), dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise InputError("expected a list of numbers", src, "times") from None
    if times.shape != (len(names),) or not np.isfinite(times).all():
        raise InputError(f"expected {len(names)} finite times", src, "times")
    for i, nm in enumerate(names):
        S.PathStr(name_only=True).check(nm, src, f"frames[{i}]")
    fps = S.Optional(S.Num(gt=0.0)).check(man.get("fps"), src, "fps")
    paths = [d / nm for nm in names]
    g0 = read_gaussians_ply(paths[0])
    n = g0.num_gaussians
    if "num_gaussians" in man and man["num_gaussians"] != n:
        raise InputError(f"manifest says {man['num_gaussians']} Gaussians, {paths[0].name} has {n}", src, "num_gaussians")
    means = np.empty((len(paths), n, 3), np.float32)
    means[0] = g0.means
    for t, p in enumerate(paths[1:], start=1):
        g = read_gaussians_ply(p)
        if g.num_gaussians != n:
            raise InputError(f"{g.num_gaussians} Gaussians, frame 0 has {n} (every frame must hold the same Gaussians)", p, "vertex")
        for attr in ("log_scales", "opacity_logits", "sh_dc", "sh_rest", "rotations"):
            a, b = getattr(g, attr), getattr(g0, attr)
            if a.shape != b.shape or not np.array_equal(a, b):
                raise InputError("differs from frame 0 (a recon sequence shares all attributes but positions)", p, attr)
        means[t] = g.means
    return PlySequence(means=means, gaussians=g0, times=times, fps=None if fps is None else float(fps), manifest=man, paths=paths)
