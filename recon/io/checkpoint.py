"""The one checkpoint codec: safetensors tensors plus JSON metadata, written atomically.

Every checkpoint recon writes (the stages' ``RUN/checkpoints/<stage>.safetensors`` and scene
files of :meth:`recon.model.scene.DeformableScene.save`) goes through :func:`write_checkpoint`
and is read back by :func:`read_checkpoint`:

* tensors: any names, stored contiguous on the CPU;
* metadata: ``format`` = :data:`FORMAT`, ``version`` = :data:`VERSION` (strings), and every other
  key a JSON document (``{"report": {...}, "field": {...}, ...}``).

A file that cannot be read, one from another format or version, or metadata that is not JSON
raises :class:`~recon.errors.InputError` naming the file (and the field).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from recon.errors import InputError
from recon.io.atomic import atomic_path

FORMAT = "recon-run"
VERSION = 1


def write_checkpoint(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write ``tensors`` and ``meta`` (JSON-serialisable values) to ``path``, atomically."""
    from safetensors.torch import save_file

    head = {"format": FORMAT, "version": str(VERSION), **{k: json.dumps(v) for k, v in meta.items()}}
    with atomic_path(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp), metadata=head)


def read_checkpoint(path: Path, hint: str = "re-run without --resume in a new folder",
                    legacy: bool = False) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and decoded metadata of a checkpoint written by :func:`write_checkpoint`.

    ``hint`` ends the message of an unreadable file. ``legacy`` also accepts a file without
    ``format`` / ``version`` (scene files written before this codec existed)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
            t = {k: f.get_tensor(k) for k in f.keys()}
    except (OSError, RuntimeError, ValueError, SafetensorError) as e:
        raise InputError(f"unreadable checkpoint ({e}); {hint}", path) from None
    unversioned = legacy and "format" not in raw and "version" not in raw
    if not unversioned and (raw.get("format") != FORMAT or raw.get("version") != str(VERSION)):
        raise InputError(f"checkpoint from an incompatible recon (version {raw.get('version')!r})", path, "version")
    meta = {}
    for k, v in raw.items():
        if k in ("format", "version"):
            continue
        try:
            meta[k] = json.loads(v)
        except (json.JSONDecodeError, RecursionError) as e:
            raise InputError(f"checkpoint metadata is not JSON ({e})", path, f"metadata.{k}") from None
    return t, meta
