"""The reconstruction config: :class:`ReconstructConfig` (saved as ``RUN/config.json``), its
JSON codec, and the type and range of every field.

Every field is checked when a config is read (a ``--config`` file, a run's ``config.json``, CLI
overrides): its type comes from the dataclass annotation, its range from :data:`LIMITS` (numbers
default to ``>= 0`` and finite, integers to at most 2**31 - 1) and the allowed strings from
:data:`CHOICES` (the tables of the modules that dispatch on them). A bad value raises
:class:`~recon.errors.InputError` naming the file and the dotted key.
"""

from __future__ import annotations

import dataclasses
import importlib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recon import schema as S
from recon.errors import InputError
from recon.fit.canonical import CanonicalConfig
from recon.fit.deform import DeformConfig
from recon.fit.monocular import MonocularConfig
from recon.fit.prune import PruneConfig


@dataclass
class TrackConfig:
    """Options of the tracking stage (see :func:`recon.tracking.build_tracks`)."""

    tracks: str = "auto"
    """auto | gt | flow | rig (depth + given poses, calibrated wide-baseline rigs) | file."""
    depth: str = "auto"
    """auto | gt | mvs | file (for flow and rig tracks)."""
    tracks_path: str | None = None
    depth_path: str | None = None
    keyframes: int = 3
    stride: int = 2


@dataclass
class OutputConfig:
    """What the outputs stage writes."""

    renders: bool = True
    """renders/view_XX_time_YYYY.png for every grid cell."""
    preview_video: bool = True
    """preview.mp4 (GT | render of the preview view over time)."""
    ply: bool = True
    """ply/frame_XXXX.ply + sequence.json."""
    fps: float = 8.0
    floater_tol: float = 0.05
    """Synthetic grids: distance (scene units) from every GT surface beyond which a Gaussian is a floater."""


@dataclass
class ReconstructConfig:
    """Everything that determines a reconstruction (saved as ``config.json``)."""

    tracking: TrackConfig = field(default_factory=TrackConfig)
    canonical: CanonicalConfig = field(default_factory=CanonicalConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    deform: DeformConfig = field(default_factory=DeformConfig)
    monocular: MonocularConfig = field(default_factory=MonocularConfig)
    """Canonical initialisation of monocular grids (one view per time), which replaces stages 1-3."""
    outputs: OutputConfig = field(default_factory=OutputConfig)
    holdout_views: list[int] = field(default_factory=list)
    """Held-out cells are the cross product holdout_views x holdout_times (never trained on)."""
    holdout_times: list[int] = field(default_factory=list)
    seed: int = 0
    threads: int = 0
    """torch CPU threads; 0: the cores this process may use (at most 8), recorded in run.json. With 1
    thread a run is bit-reproducible (what the resume tests rely on); with more, two runs of one seed
    differ slightly (the bundled sample's held-out PSNR by up to ~0.7 dB, BENCHMARKS.md). The CLI makes OpenMP wait passively
    (``OMP_WAIT_POLICY=PASSIVE``): spinning waits made a 2-thread fit 40x slower on a busy machine."""
    backend: str = "auto"
    """Rasterizer backend: auto | torch | cpu | cuda."""


def resolve_threads(n: int) -> int:
    """``n`` >= 1 as is; 0: the cores available to this process, at most 8."""
    import os

    if int(n) >= 1:
        return int(n)
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(8, cores))


def config_to_dict(config: ReconstructConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)


INT_MAX = 2**31 - 1
FRACTION = S.Num(min=0.0, max=1.0)
OPACITY = S.Num(gt=0.0, max=0.999)
LIMITS: dict[str, S.Spec] = {
    "tracking.keyframes": S.Int(min=1, max=10_000),
    "tracking.stride": S.Int(min=1, max=10_000),
    "canonical.scale_neighbours": S.Int(min=1, max=64),
    "canonical.init_opacity": OPACITY,
    "canonical.offset_neighbours": S.Int(min=1, max=256),
    "prune.views_per_step": S.Int(min=1, max=INT_MAX),
    "prune.threshold": FRACTION,
    "prune.ssim_weight": FRACTION,
    "deform.cells_per_step": S.Int(min=1, max=4096),
    "deform.ssim_weight": FRACTION,
    "deform.pos_freqs": S.Int(min=0, max=16),
    "deform.time_freqs": S.Int(min=0, max=16),
    "deform.mlp_width": S.Int(min=1, max=4096),
    "deform.mlp_depth": S.Int(min=1, max=64),
    "deform.sh_degree": S.Int(min=0, max=3),
    "monocular.sh_degree": S.Int(min=0, max=3),
    "deform.time_curriculum": FRACTION,
    "deform.monocular_warmup": S.Num(min=0.0, max=0.9),
    "deform.density.start": FRACTION,
    "deform.density.stop": FRACTION,
    "deform.density.every": S.Int(min=1, max=INT_MAX),
    "deform.density.dense_fraction": FRACTION,
    "deform.density.split_factor": S.Num(gt=0.0, max=100.0),
    "deform.density.prune_opacity": FRACTION,
    "deform.density.reset_opacity": OPACITY,
    "deform.density.max_gaussians": S.Int(min=1, max=100_000_000),
    "deform.density.max_per_pixel": S.Num(min=0.0, max=1e6),
    "monocular.window": S.Int(min=1, max=INT_MAX),
    "monocular.windows": S.Int(min=1, max=10_000),
    "monocular.time_curriculum": S.Optional(FRACTION),
    "monocular.life_width": S.Num(gt=0.0, max=1e6),
    "monocular.points": S.Int(min=1, max=100_000_000),
    "monocular.grid": S.Int(min=2, max=512),
    "monocular.box": S.Num(gt=0.0, max=1.0),
    "monocular.vote": FRACTION,
    "monocular.min_seen": FRACTION,
    "monocular.background_tol": FRACTION,
    "monocular.dilate": S.Int(min=0, max=64),
    "monocular.init_opacity": OPACITY,
    "monocular.scale_factor": S.Num(gt=0.0),
    "canonical.scale_factor": S.Num(gt=0.0),
    "outputs.fps": S.Num(gt=0.0, max=1000.0),
    "holdout_views": S.List(S.Int(min=0, max=INT_MAX)),
    "holdout_times": S.List(S.Int(min=0, max=INT_MAX)),
    "seed": S.Int(min=0, max=2**63 - 1),
    "threads": S.Int(min=0, max=1024),
}
"""Ranges that differ from the default (numbers >= 0, integers <= 2**31 - 1)."""

CHOICES: dict[str, str] = {
    "tracking.tracks": "recon.tracking.build:track_source_names",
    "tracking.depth": "recon.tracking.depth:provider_names",
    "canonical.offset_model": "recon.fit.canonical:OFFSET_MODELS",
    "deform.view_correction": "recon.fit.deform:VIEW_CORRECTIONS",
    "deform.mlp_activation": "recon.model.deform:ACTIVATIONS",
    "monocular.mlp_activation": "recon.model.deform:ACTIVATIONS",
    "backend": "recon.render.backends:backend_names",
}
"""String fields that must be one of a module's table ("module:NAME"; a dict's keys count, a
function is called), read when a config is checked, so a registered extension counts."""


def _choices(key: str) -> tuple[str, ...]:
    mod, name = CHOICES[key].split(":")
    table = getattr(importlib.import_module(mod), name)
    return tuple(table() if callable(table) else table)


def field_spec(key: str, hint: Any) -> S.Spec:
    """The spec of config field ``key`` (dotted) annotated ``hint``."""
    if key in LIMITS:
        return LIMITS[key]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if type(None) in typing.get_args(hint) and len(args) == 1:
        return S.Optional(field_spec(key, args[0]))
    if hint is bool:
        return S.Bool()
    if hint is int:
        return S.Int(min=0, max=INT_MAX)
    if hint is float:
        return S.Num(min=0.0)
    if hint is str:
        return S.Str(choices=_choices(key) if key in CHOICES else None)
    if typing.get_origin(hint) is list:
        (item,) = typing.get_args(hint)
        return S.List(field_spec(key + "[]", item))
    raise TypeError(f"config field {key}: no spec for annotation {hint!r}")  # a recon bug, caught by the tests


def config_fields(cls: type = ReconstructConfig, prefix: str = "") -> dict[str, Any]:
    """Every leaf field of the config: dotted key -> annotation."""
    out: dict[str, Any] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            out.update(config_fields(hint, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = hint
    return out


def check_config(config: ReconstructConfig, source: str = "config") -> ReconstructConfig:
    """Check every field of ``config`` against its spec and the cross-field rules."""
    data = config_to_dict(config)
    for key, hint in config_fields().items():
        val = data
        for part in key.split("."):
            val = val[part]
        field_spec(key, hint).check(val, source, key)
    d = config.deform.density
    if d.start > d.stop:
        raise InputError(f"start {d.start} is after stop {d.stop}", source, "deform.density.start")
    return config


def config_from_dict(data: dict[str, Any], base: ReconstructConfig | None = None, source: str = "config") -> ReconstructConfig:
    """Apply a (possibly partial, nested) dict of overrides to ``base`` (default config).
    Unknown keys, wrongly typed values and values out of range raise :class:`InputError` naming
    the key (see :data:`LIMITS`)."""
    base = base or ReconstructConfig()

    def apply(obj: Any, d: Any, prefix: str) -> Any:
        if not isinstance(d, dict):
            raise InputError(f"expected an object, got {S._kind(d)}", source, prefix.rstrip(".") or None)
        hints = typing.get_type_hints(type(obj))
        names = {f.name for f in dataclasses.fields(obj)}
        changes = {}
        for k, v in d.items():
            key = f"{prefix}{k}"
            if k not in names:
                raise InputError(f"unknown option (known: {', '.join(sorted(names))})", source, key)
            cur = getattr(obj, k)
            if dataclasses.is_dataclass(cur):
                changes[k] = apply(cur, v, key + ".")
            else:
                changes[k] = field_spec(key, hints[k]).check(v, source, key)
        return dataclasses.replace(obj, **changes)

    return check_config(apply(base, data, ""), source)


def load_config_file(path: Path, base: ReconstructConfig | None = None) -> ReconstructConfig:
    """Overrides from a JSON file (same nesting as ``config.json``)."""
    return config_from_dict(S.read_json(path, what="config file"), base, str(path))


# --- config fields as command-line flags ---------------------------------------------------------
_CLI_OVERRIDES: list[dict[str, Any]] = [{}]
FLAT_FLAGS = ("threads", "backend")
"""Top-level config fields that are flags of their own name (the others have command options)."""


def parse_value(key: str, text: str) -> Any:
    """A command-line value for config field ``key`` (dotted) -> the JSON value its spec checks:
    true/false for booleans, numbers, ``null`` / ``none`` for optional fields, comma-separated
    integers for lists, anything else as a string."""
    import json

    hint = config_fields()[key]
    low = text.strip().lower()
    if low in ("null", "none") and type(None) in typing.get_args(hint):
        return None
    if hint is bool:
        if low in ("true", "1", "yes", "on"):
            return True
        if low in ("false", "0", "no", "off"):
            return False
        return text
    if typing.get_origin(hint) is list:
        try:
            return [int(x) for x in text.replace(" ", "").split(",") if x]
        except ValueError:
            return text
    inner = [a for a in typing.get_args(hint) if a is not type(None)]
    if hint in (int, float) or (type(None) in typing.get_args(hint) and len(inner) == 1 and inner[0] in (int, float)):
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


def split_config_flags(argv: list[str]) -> tuple[list[str], dict[str, Any]]:
    """Take ``--section.field VALUE`` / ``--section.field=VALUE`` (any :class:`ReconstructConfig`
    field, dotted as in config.json, and the top-level ``--threads`` / ``--backend``; ``seed`` and
    the holdout lists have the commands' own ``--seed`` / ``--holdout``) out of ``argv``; returns
    the rest and the overrides as a nested dict (checked later by :func:`config_from_dict`, which
    names the flag's key)."""
    fields = {k for k in config_fields() if "." in k or k in FLAT_FLAGS}
    rest: list[str] = []
    nested: dict[str, Any] = {}
    k = 0
    while k < len(argv):
        tok = argv[k]
        name, eq, val = tok[2:].partition("=") if tok.startswith("--") else ("", "", "")
        key = name.replace("-", "_")
        if key in fields:
            if not eq:
                if k + 1 >= len(argv):
                    raise InputError("expected a value after the flag", field=tok)
                val = argv[k + 1]
                k += 1
            d = nested
            *parents, leaf = key.split(".")
            for p in parents:
                d = d.setdefault(p, {})
            d[leaf] = parse_value(key, val)
        else:
            rest.append(tok)
        k += 1
    return rest, nested


def set_cli_overrides(overrides: dict[str, Any]) -> None:
    """What :func:`recon.cli.main` took off the command line (see :func:`split_config_flags`)."""
    _CLI_OVERRIDES[0] = overrides


def cli_overrides() -> dict[str, Any]:
    """The ``--section.field`` flags of this invocation, as a nested dict (empty when none)."""
    return _CLI_OVERRIDES[0]


def parse_holdout(spec: str, whole_views: bool = False) -> tuple[list[int], list[int]]:
    """The one ``--holdout`` syntax: ``"views=7,times=3,6"`` -> ``([7], [3, 6])`` (the cells are
    the cross product). ``whole_views`` (``recon bench``, which holds out whole cameras): only
    ``views=...``, and the times are ``[]``."""
    out: dict[str, list[int]] = {"views": [], "times": []}
    key = None
    for tok in [t.strip() for t in spec.replace(";", ",").replace(" ", ",").split(",") if t.strip()]:
        if "=" in tok:
            key, tok = (p.strip() for p in tok.split("=", 1))
            if key not in out:
                raise InputError(f"unknown key {key!r}; expected views=...,times=...", field="--holdout")
            if not tok:
                continue
        if key is None:
            raise InputError(f"expected views=...,times=..., got {spec!r}", field="--holdout")
        try:
            out[key].append(int(tok))
        except ValueError:
            raise InputError(f"expected integers, got {tok!r}", field="--holdout") from None
    if whole_views:
        if out["times"] or not out["views"]:
            raise InputError(f"expected views=... (whole views are held out, at every time), got {spec!r}",
                             field="--holdout")
        return out["views"], []
    if bool(out["views"]) != bool(out["times"]):
        raise InputError("held-out cells are views x times: give both views=... and times=...", field="--holdout")
    return out["views"], out["times"]
