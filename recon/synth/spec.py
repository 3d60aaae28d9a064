"""JSON round trip of the scene language (so a grid's ``meta["synth"]`` rebuilds its scene).

Every dataclass of the scene language is registered with :func:`spec_type`. :func:`to_spec`
turns a value into plain JSON (dataclasses become ``{"type": ClassName, field: value, ...}``);
:func:`from_spec` inverts it. Convention that makes the round trip exact: numeric vectors are
tuples (JSON lists of non-objects come back as tuples), collections of scene parts are lists
(JSON lists of objects come back as lists).
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

import numpy as np

from recon.errors import InputError

_TYPES: dict[str, type] = {}
T = TypeVar("T")


def spec_type(cls: type[T]) -> type[T]:
    """Class decorator: register a dataclass of the scene language for :func:`from_spec`."""
    _TYPES[cls.__name__] = cls
    return cls


def to_spec(value: Any) -> Any:
    """A JSON-able copy of ``value`` (dataclasses, tuples, lists, numpy scalars/arrays, numbers)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {"type": type(value).__name__}
        for f in dataclasses.fields(value):
            out[f.name] = to_spec(getattr(value, f.name))
        return out
    if isinstance(value, np.ndarray):
        return to_spec(value.tolist())
    if isinstance(value, (list, tuple)):
        return [to_spec(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): to_spec(v) for k, v in value.items()}
    return value


def from_spec(data: Any, field: str = "synth.scene") -> Any:
    """Rebuild what :func:`to_spec` wrote; unknown types raise :class:`InputError` naming ``field``."""
    if isinstance(data, dict):
        if "type" not in data:
            return {k: from_spec(v, f"{field}.{k}") for k, v in data.items()}
        name = data["type"]
        cls = _TYPES.get(name)
        if cls is None:
            raise InputError(f"unknown scene part {name!r}; known: {', '.join(sorted(_TYPES))}", field=field)
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: from_spec(v, f"{field}.{k}") for k, v in data.items() if k != "type"}
        unknown = set(kwargs) - names
        if unknown:
            raise InputError(f"{name} has no field(s) {sorted(unknown)}; expected {sorted(names)}", field=field)
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as e:
            raise InputError(f"cannot build {name}: {e}", field=field) from None
    if isinstance(data, list):
        items = [from_spec(v, f"{field}[{i}]") for i, v in enumerate(data)]
        if any(isinstance(v, dict) for v in data):
            return items
        return tuple(items)
    return data
