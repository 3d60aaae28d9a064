"""A small declarative schema for the JSON files recon reads (grid.json, cameras json, Panoptic
meta, transforms json, run.json, config.json) and for checkpoint tensors.

A schema is a tree of specs; :func:`check` walks a value against it and returns the value
(numbers as Python ``int`` / ``float``, :class:`Array` specs as ``np.ndarray``), or raises
:class:`~recon.errors.InputError` naming the file and the dotted field (``cameras.K[2]``)::

    GRID = Obj({"views": Int(min=1), "times": Array((-1,)), "meta": Obj(extra=True)})
    head = check(json.loads(text), GRID, src)

Specs: :class:`Int`, :class:`Num`, :class:`Bool`, :class:`Str`, :class:`Array`, :class:`List`,
:class:`Obj`, :class:`Any_`, and ``Optional(spec)`` (``None`` allowed). :func:`check_poses`
checks rigid world-to-camera (or camera-to-world) matrices.

Why not jsonschema / pydantic: the specs here also check array shapes across fields, NaN/inf,
and pose validity, and produce recon's one-line messages; the whole helper is smaller than the
glue either library would need.
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from recon.errors import InputError

Src = "str | os.PathLike | None"


def _join(at: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{at}[{key}]"
    return f"{at}.{key}" if at else key


def _kind(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true/false"
    if isinstance(v, (int, float)):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return "a list"
    if isinstance(v, dict):
        return "an object"
    return type(v).__name__


def _got(v: Any) -> str:
    return f"{_kind(v)} {_short(v)}".strip() if not isinstance(v, bool) else _short(v)


def _short(v: Any) -> str:
    """The value for a message after :func:`_kind` (empty where the kind says it all)."""
    if v is None or isinstance(v, (list, dict)):
        return ""
    s = str(v).lower() if isinstance(v, bool) else repr(v)
    return s if len(s) <= 40 else s[:37] + "..."


class Spec:
    """Base spec: ``check(value, src, at)`` returns the checked value or raises InputError."""

    nullable = False

    def check(self, value: Any, src: Src, at: str) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def fail(self, msg: str, src: Src, at: str) -> InputError:
        return InputError(msg, src, at or None)


@dataclass
class Int(Spec):
    """An integer (not a bool, not a float) in ``[min, max]``."""

    min: int | None = None
    max: int | None = None

    def check(self, value, src, at):
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
                value = int(value)
            else:
                raise self.fail(f"expected an integer, got {_got(value)}", src, at)
        _range(value, self.min, self.max, src, at, self)
        return int(value)


@dataclass
class Num(Spec):
    """A finite number in ``[min, max]`` (``gt`` makes the lower bound exclusive)."""

    min: float | None = None
    max: float | None = None
    gt: float | None = None

    def check(self, value, src, at):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(f"expected a number, got {_got(value)}", src, at)
        if not math.isfinite(value):
            raise self.fail(f"expected a finite number, got {value}", src, at)
        if self.gt is not None and not value > self.gt:
            raise self.fail(f"expected a number > {self.gt}, got {value}", src, at)
        _range(value, self.min, self.max, src, at, self)
        return float(value)


def _range(v, lo, hi, src, at, spec: Spec) -> None:
    if lo is not None and v < lo or hi is not None and v > hi:
        if lo is not None and hi is not None:
            want = f"in [{lo}, {hi}]"
        elif lo is not None:
            want = f">= {lo}"
        else:
            want = f"<= {hi}"
        raise spec.fail(f"expected a value {want}, got {v}", src, at)


@dataclass
class Bool(Spec):
    def check(self, value, src, at):
        if not isinstance(value, bool):
            raise self.fail(f"expected true/false, got {_got(value)}", src, at)
        return value


@dataclass
class Str(Spec):
    """A string, optionally one of ``choices``."""

    choices: tuple[str, ...] | None = None

    def check(self, value, src, at):
        if not isinstance(value, str):
            raise self.fail(f"expected a string, got {_got(value)}", src, at)
        if self.choices is not None and value not in self.choices:
            raise self.fail(f"unknown value {value!r} (expected one of: {', '.join(self.choices)})", src, at)
        return value


@dataclass
class PathStr(Spec):
    """A relative file path from a JSON file (an image, a frame): non-empty, no NUL byte, each
    part at most 255 bytes and the whole at most 4096 (what file systems accept); ``name_only``:
    a bare file name (no folder part)."""

    name_only: bool = False

    def check(self, value, src, at):
        if not isinstance(value, str) or not value.strip("/. "):
            raise self.fail(f"expected a file path, got {_got(value)}", src, at)
        parts = value.replace("\\", "/").split("/")
        if "\x00" in value or len(value.encode("utf-8", "surrogateescape")) > 4096 or any(
                len(p.encode("utf-8", "surrogateescape")) > 255 for p in parts):
            raise self.fail(f"not a usable file path ({len(value)} characters{', a NUL byte' if chr(0) in value else ''})", src, at)
        if self.name_only and len([p for p in parts if p]) != 1:
            raise self.fail(f"expected a file name without folders, got {value!r}", src, at)
        return value


@dataclass
class Any_(Spec):
    """Anything (free-form items, e.g. of a list checked entry by entry elsewhere)."""

    def check(self, value, src, at):
        return value


@dataclass
class Optional(Spec):
    """``None`` or ``spec``."""

    spec: Spec

    nullable = True

    def check(self, value, src, at):
        return None if value is None else self.spec.check(value, src, at)


@dataclass
class List(Spec):
    """A JSON list of ``item`` with ``min_len <= len <= max_len``."""

    item: Spec = field(default_factory=Any_)
    min_len: int = 0
    max_len: int | None = None

    def check(self, value, src, at):
        if not isinstance(value, list):
            raise self.fail(f"expected a list, got {_got(value)}", src, at)
        if len(value) < self.min_len or (self.max_len is not None and len(value) > self.max_len):
            want = f"{self.min_len}" if self.max_len == self.min_len else f"{self.min_len}..{self.max_len if self.max_len is not None else ''}"
            raise self.fail(f"expected a list of {want} items, got {len(value)}", src, at)
        return [self.item.check(v, src, _join(at, i)) for i, v in enumerate(value)]


@dataclass
class Array(Spec):
    """A nested list of numbers of ``shape`` (``-1``: any length; ``None`` for the whole shape:
    any), returned as a float64 array. ``finite`` refuses NaN / inf (JSON ``NaN`` tokens)."""

    shape: tuple[int, ...] | None = None
    finite: bool = True
    max_items: int = 50_000_000

    def check(self, value, src, at):
        if isinstance(value, (bool, str, dict)) or value is None:
            raise self.fail(f"expected a nested list of numbers, got {_kind(value)}", src, at)
        _no_bools(value, src, at, self)
        try:
            a = np.asarray(value)
            if a.dtype.kind == "O":  # integers beyond int64, or ragged lists
                a = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError, OverflowError):
            raise self.fail("expected a nested list of numbers of one shape (ragged or not numeric)", src, at) from None
        if a.dtype.kind not in "iuf":
            got = {"b": "true/false", "U": "strings", "S": "strings"}.get(a.dtype.kind, a.dtype.name)
            raise self.fail(f"expected numbers, got {got}", src, at)
        a = a.astype(np.float64)
        if a.size > self.max_items:
            raise self.fail(f"{a.size} numbers is more than the {self.max_items} this field may hold", src, at)
        if self.shape is not None:
            want = "x".join("N" if s == -1 else str(s) for s in self.shape)
            if a.ndim != len(self.shape) or any(s not in (-1, n) for s, n in zip(self.shape, a.shape)):
                got = "x".join(str(n) for n in a.shape) if a.ndim else "a number"
                raise self.fail(f"expected shape {want}, got {got}", src, at)
        if self.finite and not np.isfinite(a).all():
            idx = tuple(int(i) for i in np.argwhere(~np.isfinite(a))[0])
            raise self.fail(f"contains NaN or inf ({a[idx]} at index {list(idx)})", src, at)
        return a


def _no_bools(value, src, at, spec, depth=0) -> None:
    if isinstance(value, bool):
        raise spec.fail("expected numbers, got true/false", src, at)
    if isinstance(value, (str, dict)) or value is None:
        raise spec.fail(f"expected numbers, got {_kind(value)}", src, at)
    if isinstance(value, list) and depth < 3:  # deeper levels are left to numpy (speed)
        for v in value[:64]:
            _no_bools(v, src, at, spec, depth + 1)


@dataclass
class Obj(Spec):
    """A JSON object. ``fields`` maps keys to specs; keys in ``optional`` (or whose spec is
    :class:`Optional`) may be missing (then ``defaults`` or ``None`` is used); ``extra``: whether
    unknown keys are kept (True) or refused (False)."""

    fields: dict[str, Spec] = field(default_factory=dict)
    optional: tuple[str, ...] = ()
    defaults: dict[str, Any] = field(default_factory=dict)
    extra: bool = True
    post: Callable[[dict, Src, str], None] | None = None
    """Cross-field check run on the checked dict (shapes that must agree, ...)."""

    def check(self, value, src, at):
        if not isinstance(value, dict):
            raise self.fail(f"expected an object, got {_got(value)}", src, at)
        out = dict(value) if self.extra else {}
        if not self.extra:
            unknown = [k for k in value if k not in self.fields]
            if unknown:
                raise self.fail(f"unknown field (known: {', '.join(self.fields)})", src, _join(at, str(unknown[0])))
        for key, spec in self.fields.items():
            if key not in value:
                if key in self.defaults:
                    out[key] = copy.deepcopy(self.defaults[key])
                elif key in self.optional or spec.nullable:
                    out[key] = None
                else:
                    raise self.fail("missing field", src, _join(at, key))
                continue
            out[key] = spec.check(value[key], src, _join(at, key))
        if self.post is not None:
            self.post(out, src, at)
        return out


def check(value: Any, spec: Spec, src: str | os.PathLike | None = None, at: str = "") -> Any:
    """Check ``value`` against ``spec``; InputError names ``src`` and the dotted field."""
    return spec.check(value, src, at)


def check_poses(m: np.ndarray, src: Src, at: str, tol: float = 1e-3) -> np.ndarray:
    """Refuse matrices ``[..., 4, 4]`` that are not rigid transforms: non-finite entries, a bottom
    row that is not ``[0, 0, 0, 1]``, or a 3x3 block that is not a rotation (determinant +1 and
    orthonormal within ``tol``; a determinant of -1 is a mirror). The message names the first bad
    matrix as ``at[i][j]``. Returns ``m`` as float64."""
    m = np.asarray(m, dtype=np.float64)
    if m.ndim < 2 or m.shape[-2:] != (4, 4):
        raise InputError(f"expected 4x4 matrices, got shape {list(m.shape)}", src, at)
    lead = m.shape[:-2]
    flat = m.reshape(-1, 4, 4)

    def where(i: int) -> str:
        return at + "".join(f"[{int(x)}]" for x in np.unravel_index(i, lead)) if lead else at

    bad = ~np.isfinite(flat).all(axis=(1, 2))
    if bad.any():
        raise InputError("pose has non-finite entries", src, where(int(np.argmax(bad))))
    bottom = np.abs(flat[:, 3] - np.array([0.0, 0.0, 0.0, 1.0])).max(axis=1) > 1e-6
    if bottom.any():
        i = int(np.argmax(bottom))
        raise InputError(f"pose bottom row is {flat[i, 3].tolist()}, expected [0, 0, 0, 1]", src, where(i))
    R = flat[:, :3, :3]
    det = np.linalg.det(R)
    if (det < 0).any():
        i = int(np.argmax(det < 0))
        raise InputError(f"pose rotation has determinant {det[i]:.3f} (a mirror); expected a rotation", src, where(i))
    err = np.abs(R @ np.swapaxes(R, -1, -2) - np.eye(3)).max(axis=(1, 2))
    if (err > tol).any():
        i = int(np.argmax(err > tol))
        raise InputError(f"pose rotation is not orthonormal (max |R R^T - I| = {err[i]:.3g}); expected a rigid transform",
                         src, where(i))
    return m


def read_json(path: str | os.PathLike, spec: Spec | None = None, what: str = "JSON file") -> Any:
    """Read the JSON file ``path`` (and check it against ``spec`` when given). A missing or
    unreadable file, bytes that are not UTF-8, invalid or absurdly nested JSON all raise
    InputError naming the file."""
    import json

    try:
        raw = open(path, "rb").read()
    except FileNotFoundError:
        raise InputError(f"{what} does not exist", path) from None
    except IsADirectoryError:
        raise InputError(f"expected a {what}, found a folder", path) from None
    except OSError as e:
        raise InputError(f"cannot read the {what} ({e.strerror or e})", path) from None
    try:
        value = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise InputError(f"not a text {what} (byte {e.start} is not UTF-8)", path) from None
    except json.JSONDecodeError as e:
        raise InputError(f"invalid JSON at line {e.lineno} column {e.colno}: {e.msg}", path) from None
    except RecursionError:
        raise InputError("JSON nested too deeply", path) from None
    return value if spec is None else check(value, spec, path)


def check_tensors(tensors: dict, spec: dict[str, tuple], src: str | os.PathLike | None,
                  dims: dict[str, int] | None = None) -> dict:
    """Check a checkpoint's tensors against ``spec``: name -> shape, where each entry of a shape
    is an int or a symbol (``"N"``, ``"V"``...) that must take one value across all tensors (and
    the value given in ``dims``, when it is there). A name ending in ``?`` is optional. Floating
    tensors must be finite. Returns ``tensors``; InputError names the file and the tensor."""
    bound = dict(dims or {})
    for name, shape in spec.items():
        key = name.rstrip("?")
        if key not in tensors:
            if name.endswith("?"):
                continue
            raise InputError("missing tensor (not a checkpoint of this stage)", src, key)
        t = tensors[key]
        got = tuple(int(n) for n in getattr(t, "shape", ()))
        if len(got) != len(shape):
            raise InputError(f"expected {len(shape)} dimensions {list(shape)}, got shape {list(got)}", src, key)
        for want, n in zip(shape, got):
            if isinstance(want, str):
                if bound.setdefault(want, n) != n:
                    raise InputError(f"shape {list(got)}: dimension {want} is {n} here but {bound[want]} elsewhere", src, key)
            elif want != n:
                raise InputError(f"expected shape {list(shape)}, got {list(got)}", src, key)
        if getattr(t, "is_floating_point", lambda: False)() and t.numel() and not bool(t.isfinite().all()):
            raise InputError("tensor holds NaN or inf", src, key)
    return tensors
