"""Generator checkpoints: a local folder, loaded offline, with errors for people.

Layout (what ``ModelMixin.save_pretrained`` writes, plus recon's own notes)::

    DIR/config.json                           model config (``_class_name`` = GridTransformer)
    DIR/diffusion_pytorch_model.safetensors   weights (EMA)
    DIR/recon.json                            training config, steps, and the metrics it reached

The bundled checkpoint lives in ``data/diffusion/`` of the repository.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from recon.diffusion.model import GridTransformer
from recon.errors import InputError
from recon.io.atomic import atomic_path, write_json

WEIGHTS = "diffusion_pytorch_model.safetensors"
BUNDLED = Path(__file__).resolve().parents[2] / "data" / "diffusion"


def save_checkpoint(model: GridTransformer, path: str | os.PathLike, notes: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (safetensors + config.json) and ``notes`` (recon.json) to folder ``path`` atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        write_json(tmp / "recon.json", notes or {})
    return path


def _check_folder(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise InputError("checkpoint folder does not exist", path)
    if not path.is_dir():
        raise InputError("expected a checkpoint folder (config.json + safetensors weights)", path)
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise InputError("not a generator checkpoint (no config.json)", path)
    try:
        cfg = json.loads(cfg_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"invalid JSON: {e}", cfg_file) from None
    cls = cfg.get("_class_name") if isinstance(cfg, dict) else None
    if cls != GridTransformer.__name__:
        raise InputError(f"checkpoint is for model {cls!r}, expected {GridTransformer.__name__!r} (a recon grid generator)", cfg_file, "_class_name")
    if not (path / WEIGHTS).is_file():
        raise InputError(f"missing weights file {WEIGHTS}", path)
    return cfg


def load_generator(path: str | os.PathLike | None = None, device: torch.device | str = "cpu") -> GridTransformer:
    """Load a generator from a local folder (``None``: the bundled checkpoint); eval mode on ``device``.

    Raises :class:`InputError` for a missing folder, a folder of another model, or weights that do not
    match the config (another architecture).
    """
    from safetensors.torch import load_file

    path = BUNDLED if path is None else Path(path)
    cfg = _check_folder(path)
    try:
        model = GridTransformer.from_config(cfg)
    except (ValueError, TypeError) as e:
        raise InputError(f"invalid generator config: {e}", path / "config.json") from None
    weights = load_file(path / WEIGHTS)
    own = model.state_dict()
    bad = sorted(set(own) ^ set(weights)) + [k for k in own if k in weights and own[k].shape != weights[k].shape]
    if bad:
        raise InputError(f"weights do not match config.json ({len(bad)} tensors differ, e.g. {bad[0]}): "
                         "the weights come from another model configuration", path / WEIGHTS)
    model.load_state_dict(weights)
    return model.to(device).eval()


def load_weights_into(model: GridTransformer, path: str | os.PathLike) -> None:
    """Load a checkpoint's weights into ``model`` of a possibly different sync / order / drop_sync.

    Every tensor of the checkpoint must exist in ``model`` with the same shape; sync-layer parameters
    the checkpoint lacks (a base-stage or hard-sync checkpoint loaded into a learned-sync model) keep
    their initial values (the average); sync parameters ``model`` has no place for are dropped. Raises :class:`InputError` otherwise.
    """
    from safetensors.torch import load_file

    path = Path(path)
    _check_folder(path)
    own = model.state_dict()
    # sync parameters of another sync mode (a learned-sync base checkpoint into a hard-sync model) are dropped
    weights = {k: v for k, v in load_file(path / WEIGHTS).items() if k in own or ".sync." not in k}
    bad = [k for k, v in weights.items() if k not in own or own[k].shape != v.shape]
    if bad:
        raise InputError(f"{len(bad)} tensors do not fit this model configuration (e.g. {bad[0]})", path / WEIGHTS)
    missing = [k for k in own if k not in weights and ".sync." not in k]
    if missing:
        raise InputError(f"checkpoint lacks {len(missing)} tensors of this model (e.g. {missing[0]})", path / WEIGHTS)
    model.load_state_dict(weights, strict=False)


def read_notes(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """The ``recon.json`` of a checkpoint folder (empty when absent)."""
    f = (BUNDLED if path is None else Path(path)) / "recon.json"
    return json.loads(f.read_text()) if f.is_file() else {}
