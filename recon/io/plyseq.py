""".ply sequences: one graphdeco 3DGS ``.ply`` per time (:mod:`recon.io.ply`) plus a manifest.

A sequence is a folder ``OUT/ply/`` with ``frame_0000.ply ...`` (one standalone file per time,
the same Gaussians in the same order in each; only positions change) and ``sequence.json`` (see
:func:`write_ply_sequence`). The manifest lives inside ``ply/`` so the folder is replaced as one
atomic rename: frames and manifest can never disagree.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from recon import schema as S
from recon.errors import InputError
from recon.io.atomic import atomic_path, write_json
from recon.io.ply import GaussianPly, _as_f32, _ply_header, gaussians_to_columns, read_gaussians_ply

SEQUENCE_FORMAT = "recon-ply-sequence"
SEQUENCE_VERSION = 1
COORDINATES = ("right-handed world of the input cameras, whose poses are OpenCV (camera x right, y down, z forward); "
               "the world's up axis is world.up")


@dataclass
class PlySequence:
    """A ``.ply`` sequence: T frames of the same N Gaussians."""

    means: np.ndarray  # [T, N, 3] float32 positions per frame
    gaussians: GaussianPly  # the shared attributes (its ``means`` are frame 0's)
    times: np.ndarray  # [T] float64, in the unit named by manifest["time_unit"]
    fps: float | None
    manifest: dict[str, Any]
    paths: list[Path]
    opacity_logits: np.ndarray | None = None
    """``[T, N]`` float32 per-frame opacity logits when the sequence's opacities vary over time
    (manifest ``per_frame_attributes`` holds ``opacity``: splats with lifespans), else None (frame 0's, shared)."""

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
    frame_opacity_logits: Sequence[Any] | np.ndarray | None = None,
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
        frame_opacity_logits: ``[T, N]`` per-frame opacity logits (splats that live for part of
            the sequence); they replace ``opacity_logits`` in each frame's file, and the manifest's
            ``per_frame_attributes`` says so.

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
    per_frame = None
    if frame_opacity_logits is not None:
        per_frame = [_as_f32(o, f"frame_opacity_logits[{t}]", (n,)) for t, o in enumerate(frame_opacity_logits)]
        if len(per_frame) != T:
            raise ValueError(f"frame_opacity_logits: expected {T} frames, got {len(per_frame)}")
        manifest["shared_attributes"] = "all but x y z and opacity are identical in every frame"
        manifest["per_frame_attributes"] = ["opacity"]
    op_col = names.index("opacity")
    header = _ply_header(names, n)
    with atomic_path(out) as tmp:
        tmp.mkdir(parents=True)
        for t, f in enumerate(frames):
            table[:, 0:3] = _as_f32(f, f"frames[{t}]", (n, 3))
            if per_frame is not None:
                table[:, op_col] = per_frame[t]
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
    varying = man.get("per_frame_attributes", [])
    if not isinstance(varying, list) or not set(varying) <= {"opacity"}:
        raise InputError(f"expected a list of per-frame attributes (only 'opacity' is known), got {varying!r}", src,
                         "per_frame_attributes")
    means = np.empty((len(paths), n, 3), np.float32)
    means[0] = g0.means
    opac = None
    if "opacity" in varying:
        opac = np.empty((len(paths), n), np.float32)
        opac[0] = g0.opacity_logits
    for t, p in enumerate(paths[1:], start=1):
        g = read_gaussians_ply(p)
        if g.num_gaussians != n:
            raise InputError(f"{g.num_gaussians} Gaussians, frame 0 has {n} (every frame must hold the same Gaussians)", p, "vertex")
        for attr in ("log_scales", "opacity_logits", "sh_dc", "sh_rest", "rotations"):
            if attr == "opacity_logits" and opac is not None:
                continue
            a, b = getattr(g, attr), getattr(g0, attr)
            if a.shape != b.shape or not np.array_equal(a, b):
                raise InputError("differs from frame 0 (a recon sequence shares all attributes but positions"
                                 + (" and opacity)" if opac is not None else ")"), p, attr)
        means[t] = g.means
        if opac is not None:
            opac[t] = g.opacity_logits
    return PlySequence(means=means, gaussians=g0, times=times, fps=None if fps is None else float(fps), manifest=man, paths=paths,
                       opacity_logits=opac)
