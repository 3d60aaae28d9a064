"""The one place that chooses the torch device.

Library code takes a ``torch.device`` (or tensors already on one) and never calls
``.cuda()`` itself; the CLI and tools turn a user's ``--device`` into a device here.
"""

from __future__ import annotations

import torch

from recon.errors import InputError

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """``auto`` -> the first CUDA GPU when one is usable, else the CPU.

    ``cuda`` / ``cuda:N`` when no GPU is usable is an :class:`InputError` (exit 2), not a
    silent fallback: a user who asked for a GPU should know they are not getting one.
    """
    if isinstance(spec, torch.device):
        return spec
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError("CUDA was requested but no CUDA GPU is usable here; use --device cpu or auto", field="--device")
        return torch.device(spec)
    raise InputError(f"unknown device {spec!r}; expected one of {', '.join(DEVICE_CHOICES)} or cuda:N", field="--device")


def check_seed(seed: int, field: str = "--seed") -> int:
    """``seed`` if it is an integer in ``[0, 2**63 - 1]`` (what torch and numpy generators accept),
    else :class:`~recon.errors.InputError` naming ``field``."""
    from recon.errors import InputError

    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise InputError(f"expected an integer in [0, 2**63 - 1], got {seed!r}", field=field)
    return seed


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return a CPU generator seeded with ``seed`` (an integer in
    ``[0, 2**63 - 1]``, else :class:`~recon.errors.InputError` naming ``--seed``)."""
    import random

    check_seed(seed)

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
