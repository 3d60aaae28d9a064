"""Seeded mutation fuzzing of every input reader (issue #16).

Each test builds valid inputs once with recon's own writers, then runs a fixed number of
reproducible mutation cases (``random.Random`` seeded from ``RECON_FUZZ_SEED``, default 16) and
reads every mutated input with the reader function itself (not the CLI, for speed).

Oracle, per case: the reader either raises a clean :class:`recon.errors.InputError` whose one-line
message names a file path, or returns a valid result (a :class:`FrameGrid` whose ``validate()``
passes, finite Gaussians of consistent shapes, a config whose every field has its declared type).
Anything else is a failure: another exception type, ``MemoryError`` (``RECON_MEMORY_LIMIT`` is set
to 2 GB and the process data limit to a few GB above its size, so a huge-size mutation must be
refused by recon's memory check, not allocated), a case slower than ``CASE_SECONDS`` (a hang), or
an InputError without a file path. Each test collects all its failures and asserts once at the
end with a compact summary; counts are printed (see them with ``pytest -s``).

Environment: ``RECON_FUZZ_N`` cases per reader (overrides the defaults, e.g. 5000 for a long run),
``RECON_FUZZ_SEED``, ``RECON_FUZZ_REPORT`` (a file; every failure is appended to it as a JSON line).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import importlib
import io
import json
import math
import os
import random
import re
import resource
import signal
import struct
import threading
import time
import traceback
import types
import typing
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from test_io_nerfstudio import c2w_gl
from test_io_panoptic import make_panoptic

import recon
from recon.errors import InputError

SEED = int(os.environ.get("RECON_FUZZ_SEED", "16"))
CASE_SECONDS = 5.0
"""A case (one reader call on one mutated input) taking longer than this is a failure (a hang)."""
MEMORY_LIMIT = 2 * 2**30
"""RECON_MEMORY_LIMIT during the fuzz cases: recon's memory check refuses more than 60% of it."""
DATA_HEADROOM = 3 * 2**30
"""The process may allocate this much above its size at the start of a test (RLIMIT_DATA), so a
blow-up becomes a MemoryError (a failure) instead of taking the machine down."""
SHOW = 15
RECON_DIR = str(Path(recon.__file__).resolve().parent)

DEFAULT_N = {"grid": 800, "videos": 400, "nerfstudio": 800, "panoptic": 600, "run": 400, "config": 800, "ply": 1000,
             "ply_sequence": 500}
"""Cases per reader: about 20 s for the whole file on 2 cores (most cases stop at the first bad field)."""


def n_cases(reader: str) -> int:
    env = os.environ.get("RECON_FUZZ_N")
    return int(env) if env else DEFAULT_N[reader]


def _rng(reader: str) -> random.Random:
    return random.Random(f"recon-fuzz-{SEED}-{reader}")


# --- the case runner ------------------------------------------------------------------------------
class _Hang(BaseException):
    """Raised by SIGALRM in a case that runs too long (a BaseException: readers' handlers miss it)."""


class _Invalid(Exception):
    """The reader returned normally but its result is not valid."""


def _where(tb) -> tuple[str, str]:
    """(last frame inside recon/ as ``recon/x.py:N``, innermost frame as ``file:N``) of a traceback."""
    frames = traceback.extract_tb(tb)
    ours = [f for f in frames if f.filename.startswith(RECON_DIR)]
    loc = "-"
    if ours:
        f = ours[-1]
        loc = f"recon{f.filename[len(RECON_DIR):]}:{f.lineno}"
    inner = "-"
    if frames:
        f = frames[-1]
        parts = Path(f.filename).parts
        inner = f"{'/'.join(parts[-2:])}:{f.lineno}"
    return loc, inner


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _vm_data() -> int:
    try:
        return int(re.search(r"VmData:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) * 1024
    except (OSError, AttributeError):
        return 0


@dataclasses.dataclass
class Failure:
    desc: str
    kind: str  # exception type name, or Hang / InvalidResult / InputErrorWithoutPath ...
    message: str
    where: str  # recon/...py:N
    inner: str  # innermost frame

    def line(self) -> str:
        return f"{self.desc} -> {self.kind}: {self.message[:160]} [{self.where}; {self.inner}]"


class Fuzz:
    """Counts and failures of one reader's cases."""

    def __init__(self, name: str):
        self.name = name
        self.tried = self.input_errors = self.valid = 0
        self.failures: list[Failure] = []
        self.t0 = time.perf_counter()

    def case(self, desc: str, writes: list[tuple[Path, bytes]], call: Callable[[], Any],
             check: Callable[[Any], None] | None = None) -> None:
        """Write the mutated files, run ``call`` (then ``check`` on its result), restore the files."""
        self.tried += 1
        saved = [(p, p.read_bytes() if p.is_file() else None) for p, _ in writes]
        try:
            for p, data in writes:
                p.write_bytes(data)
            self._run(desc, call, check)
        finally:
            for p, data in saved:
                if data is None:
                    p.unlink(missing_ok=True)
                else:
                    p.write_bytes(data)

    def _fail(self, desc: str, kind: str, message: str, tb=None) -> None:
        where, inner = _where(tb) if tb is not None else ("-", "-")
        self.failures.append(Failure(desc, kind, " ".join(str(message).split()), where, inner))

    def _run(self, desc: str, call: Callable[[], Any], check: Callable[[Any], None] | None) -> None:
        def on_alarm(signum, frame):
            raise _Hang(f"still running after {2 * CASE_SECONDS:.0f} s")

        use_alarm = threading.current_thread() is threading.main_thread()
        rss0 = _peak_rss()
        t0 = time.perf_counter()
        result, error = None, None
        try:
            old = signal.signal(signal.SIGALRM, on_alarm) if use_alarm else None
            try:
                if use_alarm:
                    signal.setitimer(signal.ITIMER_REAL, 2 * CASE_SECONDS)
                with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                    warnings.simplefilter("ignore")
                    result = call()
            finally:
                if use_alarm:
                    signal.setitimer(signal.ITIMER_REAL, 0)
                    signal.signal(signal.SIGALRM, old)
        except (Exception, _Hang, MemoryError) as e:  # noqa: B902 - every outcome is classified below
            error = e
        seconds = time.perf_counter() - t0
        grown = _peak_rss() - rss0
        if isinstance(error, _Hang):
            return self._fail(desc, "Hang", str(error), error.__traceback__)
        if seconds > CASE_SECONDS:
            return self._fail(desc, "Slow", f"took {seconds:.1f} s (limit {CASE_SECONDS:.0f} s)",
                              error.__traceback__ if error is not None else None)
        if grown > 1.5 * 2**30:
            return self._fail(desc, "MemoryBlowUp", f"peak RSS grew by {grown / 2**30:.1f} GiB",
                              error.__traceback__ if error is not None else None)
        if isinstance(error, InputError):
            msg = str(error)
            if error.path is None or error.path not in msg:
                return self._fail(desc, "InputErrorWithoutPath", msg, error.__traceback__)
            if "\n" in msg:
                return self._fail(desc, "InputErrorNotOneLine", msg, error.__traceback__)
            self.input_errors += 1
            return None
        if error is not None:
            return self._fail(desc, type(error).__name__, str(error), error.__traceback__)
        if check is not None:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    check(result)
            except Exception as e:  # noqa: BLE001 - an invalid result, whatever the check raised
                return self._fail(desc, "InvalidResult", f"{type(e).__name__}: {e}", e.__traceback__)
        self.valid += 1
        return None

    def finish(self) -> None:
        seconds = time.perf_counter() - self.t0
        groups: dict[tuple[str, str], list[Failure]] = {}
        for f in self.failures:
            groups.setdefault((f.kind, f.where), []).append(f)
        print(f"\n[fuzz] {self.name}: tried {self.tried}, InputError {self.input_errors}, valid {self.valid}, "
              f"failures {len(self.failures)} ({len(groups)} distinct), {seconds:.1f} s")
        for (kind, where), fs in sorted(groups.items(), key=lambda kv: -len(kv[1])):
            print(f"[fuzz]   {len(fs):4d} x {kind} at {where} ({fs[0].inner}), e.g. {fs[0].desc} -> {fs[0].message[:120]}")
        report = os.environ.get("RECON_FUZZ_REPORT")
        if report and self.failures:
            with open(report, "a") as fh:
                for f in self.failures:
                    fh.write(json.dumps({"reader": self.name, **dataclasses.asdict(f)}) + "\n")
        assert self.tried == self.input_errors + self.valid + len(self.failures)
        if self.failures:
            firsts = [fs[0] for fs in groups.values()]  # one example of every distinct failure first
            shown = (firsts + [f for f in self.failures if all(f is not g for g in firsts)])[:SHOW]
            lines = [f.line() for f in shown]
            more = len(self.failures) - SHOW
            distinct = "; ".join(f"{k}@{w} x{len(v)}" for (k, w), v in groups.items())
            pytest.fail(f"{self.name}: {len(self.failures)} of {self.tried} mutated inputs were not refused cleanly "
                        f"({len(groups)} distinct: {distinct}):\n  " + "\n  ".join(lines)
                        + (f"\n  ... and {more} more" if more > 0 else ""), pytrace=False)


@pytest.fixture
def fuzz_env(monkeypatch: pytest.MonkeyPatch):
    """RECON_MEMORY_LIMIT = 2 GB and a process data limit a few GB above the current size."""
    monkeypatch.setenv("RECON_MEMORY_LIMIT", str(MEMORY_LIMIT))
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    vm = _vm_data()
    if vm:
        limit = vm + DATA_HEADROOM
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))


# --- JSON mutations -----------------------------------------------------------------------------
NAN, INF = float("nan"), float("inf")
ODD_VALUES: list[Any] = [
    True, False, 0, -1, 1, 0.5, 1e308, -1e308, NAN, INF, -INF, "", "x", "\u00e9", "a\x00b", "a" * 5000,
    "../../../../etc/passwd", "/", [], {}, None, 10**30, -(10**30), 2**40, 2**63, [[[[1.0]]]], [None], ["x"], {"x": 1},
]


def _short(v: Any, n: int = 40) -> str:
    try:
        s = json.dumps(v)
    except (TypeError, ValueError):
        s = repr(v)
    return s if len(s) <= n else s[: n - 3] + "..."


def _fmt(path: list) -> str:
    return "$" + "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in path)


def _children(v: Any) -> list:
    if isinstance(v, dict):
        return list(v)
    if isinstance(v, list):
        return list(range(len(v)))
    return []


def _pick_path(rng: random.Random, doc: Any) -> list:
    """A random path into ``doc``: a random walk that stops at each level with probability 0.3."""
    path: list = []
    cur = doc
    if rng.random() < 0.04:
        return path
    while True:
        keys = _children(cur)
        if not keys or (path and rng.random() < 0.3):
            return path
        k = rng.choice(keys)
        path.append(k)
        cur = cur[k]


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def mutate_struct(rng: random.Random, doc: Any) -> tuple[Any, str]:
    """One structural mutation of the JSON value ``doc`` (mutated in place where possible)."""
    path = _pick_path(rng, doc)
    parent, key = None, None
    target = doc
    for k in path:
        parent, key, target = target, k, target[k]
    ops = ["set"] * 4
    if path:
        ops += ["delete"] * 2
    if isinstance(target, dict) or isinstance(parent, dict):
        ops += ["add_key"]
    if isinstance(target, list):
        ops += ["extend"]
        if target:
            ops += ["duplicate", "shorten", "unwrap"]
    ops += ["wrap"]
    if _is_num(target):
        ops += ["negate"] * 2 + ["scale", "retype"]
    if isinstance(target, str):
        ops += ["string"] * 2
    op = rng.choice(ops)
    where = _fmt(path)

    def put(v: Any) -> Any:
        if parent is None:
            return v
        parent[key] = v
        return doc

    if op == "set":
        v = copy.deepcopy(rng.choice(ODD_VALUES))
        return put(v), f"set {where}={_short(v, 24)}"
    if op == "delete":
        del parent[key]
        return doc, f"delete {where}"
    if op == "add_key":
        d = target if isinstance(target, dict) else parent
        name = rng.choice(["fuzz_unknown", "extra", "__proto__", ""])
        d[name] = copy.deepcopy(rng.choice(ODD_VALUES))
        return doc, f"add key {name!r} at {where if d is target else _fmt(path[:-1])}"
    if op == "extend":
        n = rng.choice([1, 1, 2, 50])
        item = copy.deepcopy(target[-1]) if target and rng.random() < 0.6 else copy.deepcopy(rng.choice(ODD_VALUES))
        target.extend(copy.deepcopy(item) for _ in range(n))
        return doc, f"extend {where} by {n} x {_short(item, 20)}"
    if op == "duplicate":
        i = rng.randrange(len(target))
        target.insert(i, copy.deepcopy(target[i]))
        return doc, f"duplicate {where}[{i}]"
    if op == "shorten":
        n = rng.randrange(len(target))
        del target[n:]
        return doc, f"shorten {where} to {n}"
    if op == "unwrap":
        return put(target[0]), f"unwrap {where} (-> its first item)"
    if op == "wrap":
        depth = rng.choice([1, 1, 2])
        v = target
        for _ in range(depth):
            v = [v]
        return put(v), f"wrap {where} in {depth} list(s)"
    if op == "negate":
        return put(-target), f"negate {where} ({_short(target, 16)})"
    if op == "scale":
        f = rng.choice([10, 1000, 10**6, 10**9])
        v = target * f
        return put(v), f"scale {where} x{f}"
    if op == "retype":
        v = float(target) + rng.choice([0.0, 0.5]) if isinstance(target, int) else int(target) if math.isfinite(target) else 0
        if isinstance(target, int) and rng.random() < 0.5:
            v = str(target)
        return put(v), f"retype {where} {_short(target, 16)}->{_short(v, 16)}"
    # string edits
    choices = ["", " ", target + "x", target.upper(), target[: len(target) // 2], "a" * 5000, "a\x00b", "\u00e9\u4e2d",
               "../" + target, "/" + target, target + "/"]
    v = rng.choice(choices)
    return put(v), f"string {where}={_short(v, 24)}"


GARBAGE = [b"}", b"]", b",", b"{", b"[", b'"', b"\\", b"NaN", b"-", b"1e999", b"\x00", b":", b"true", b"/*", b"\n" * 3]
NON_UTF8 = [b"\xff", b"\xfe\xff", b"\xc3", b"\xed\xa0\x80", b"\x80", b"\xc0\xaf"]


def mutate_bytes(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    """One byte-level mutation of a file's contents."""
    n = len(data)
    op = rng.choice(["truncate", "truncate", "flip", "flip", "insert", "insert", "non_utf8", "non_utf8", "utf16", "bom",
                     "empty", "nesting"])
    if op == "truncate" and n:
        i = rng.randrange(n)
        return data[:i], f"truncate at byte {i}/{n}"
    if op == "flip" and n:
        i = rng.randrange(n)
        x = rng.randrange(1, 256)
        return data[:i] + bytes([data[i] ^ x]) + data[i + 1:], f"flip byte {i} ^0x{x:02x}"
    if op == "insert":
        i = rng.randrange(n + 1)
        g = rng.choice(GARBAGE) if rng.random() < 0.7 else bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        return data[:i] + g + data[i:], f"insert {g[:12]!r} at byte {i}"
    if op == "non_utf8":
        i = rng.randrange(n + 1)
        g = rng.choice(NON_UTF8)
        return data[:i] + g + data[i:], f"insert non-UTF-8 {g!r} at byte {i}"
    if op == "utf16":
        return data.decode("utf-8", "replace").encode("utf-16"), "re-encode as UTF-16"
    if op == "bom":
        return b"\xef\xbb\xbf" + data, "UTF-8 BOM prefix"
    if op == "nesting":
        d = rng.choice([1000, 100000])
        return b"[" * d + b"]" * d, f"replace by a list nested {d} deep"
    return b"", "empty file"


def mutate_json(rng: random.Random, doc: Any, text_only: bool = False) -> tuple[bytes, str]:
    """1-3 mutations of the JSON document ``doc`` (a deep copy is mutated) -> (file bytes, description)."""
    k = rng.randint(1, 3)
    byte_ops = sum(rng.random() < 0.2 for _ in range(k))
    d = copy.deepcopy(doc)
    descs = []
    for _ in range(k - byte_ops):
        d, desc = mutate_struct(rng, d)
        descs.append(desc)
    data = json.dumps(d, indent=rng.choice([None, 2])).encode("utf-8")  # NaN / Infinity tokens for non-finite floats
    for _ in range(byte_ops):
        data, desc = mutate_bytes(rng, data)
        descs.append(desc)
    return data, "; ".join(descs)


# --- binary mutations ---------------------------------------------------------------------------
def _bytes_op(rng: random.Random, data: bytes, lo: int = 0) -> tuple[bytes, str]:
    """Truncate / flip / insert / delete / append at a random offset >= ``lo``."""
    n = len(data)
    op = rng.choice(["truncate", "flip", "flip", "insert", "delete", "append"])
    if n <= lo and op in ("truncate", "flip", "delete"):
        op = "insert"
    i = rng.randrange(lo, n) if n > lo else max(0, n - 1)
    if op == "truncate":
        return data[:i], f"truncate at byte {i}/{n}"
    if op == "flip":
        cnt = rng.choice([1, 1, 4])
        b = bytearray(data)
        for _ in range(cnt):
            j = rng.randrange(lo, n)
            b[j] ^= rng.randrange(1, 256)
        return bytes(b), f"flip {cnt} byte(s) from offset >= {lo}"
    if op == "insert":
        g = bytes(rng.randrange(256) for _ in range(rng.choice([1, 3, 16])))
        return data[:i] + g + data[i:], f"insert {len(g)} random bytes at {i}"
    if op == "delete":
        m = rng.choice([1, 4, 64])
        return data[:i] + data[i + m:], f"delete {m} bytes at {i}"
    g = rng.choice([b"\x00" * 16, b"garbage\n", bytes(range(256))])
    return data + g, f"append {len(g)} bytes"


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    out, i = [], 8
    while i + 8 <= len(data):
        (ln,) = struct.unpack(">I", data[i:i + 4])
        out.append((data[i + 4:i + 8], data[i + 8:i + 8 + ln]))
        i += 12 + ln
    return out


def _png_join(chunks: list[tuple[bytes, bytes]]) -> bytes:
    body = b"".join(struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF) for t, d in chunks)
    return b"\x89PNG\r\n\x1a\n" + body


def mutate_png(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    """1-3 mutations of a PNG: chunk-aware ones first (IHDR rewritten with a valid CRC), then byte-level ones."""
    k = rng.randint(1, 3)
    byte_ops = sum(rng.random() < 0.4 for _ in range(k))
    descs = []
    for _ in range(k - byte_ops):
        op = rng.choice(["ihdr_size", "ihdr_size", "ihdr_field", "drop_chunk", "dup_chunk", "other_format"])
        data, desc = _png_op(rng, data, op)
        descs.append(desc)
        if op == "other_format":
            break
    for _ in range(byte_ops):
        data, desc = _bytes_op(rng, data)
        descs.append(desc)
    return data, "; ".join(descs)


def _png_op(rng: random.Random, data: bytes, op: str) -> tuple[bytes, str]:
    chunks = _png_chunks(data)
    ihdr = next((i for i, (t, d) in enumerate(chunks) if t == b"IHDR" and len(d) == 13), None)
    if (op in ("ihdr_size", "ihdr_field") and ihdr is None) or (op in ("drop_chunk", "dup_chunk") and not chunks):
        return _bytes_op(rng, data)
    if op in ("ihdr_size", "ihdr_field"):
        t, d = chunks[ihdr]
        w, h, depth, ctype, comp, filt, inter = struct.unpack(">IIBBBBB", d)
        if op == "ihdr_size":
            w2, h2 = rng.choice([(0, h), (w, 0), (w + 1, h), (w, h - 1), (2**31 - 1, h), (w, 2**31 - 1), (30000, 30000),
                                 (100000, 100000), (4 * w, 4 * h), (1, 1)])
            desc = f"IHDR size {w}x{h} -> {w2}x{h2} (valid CRC)"
            w, h = w2 & 0xFFFFFFFF, h2 & 0xFFFFFFFF
        else:
            field = rng.choice(["depth", "ctype", "comp", "filt", "inter"])
            val = rng.choice([0, 1, 3, 7, 16, 255])
            desc = f"IHDR {field}={val} (valid CRC)"
            depth, ctype, comp, filt, inter = [val if f == field else x for f, x in
                                               zip(("depth", "ctype", "comp", "filt", "inter"), (depth, ctype, comp, filt, inter))]
        chunks[ihdr] = (t, struct.pack(">IIBBBBB", w, h, depth, ctype, comp, filt, inter))
        return _png_join(chunks), desc
    if op == "drop_chunk":
        i = rng.randrange(len(chunks))
        return _png_join(chunks[:i] + chunks[i + 1:]), f"drop chunk {chunks[i][0].decode('latin1')}"
    if op == "dup_chunk":
        i = rng.randrange(len(chunks))
        return _png_join(chunks[:i + 1] + chunks[i:]), f"duplicate chunk {chunks[i][0].decode('latin1')}"
    other = rng.choice([b"", b"GIF89a\x10\x00", b"\xff\xd8\xff\xe0garbage", b"not an image\n", data[:8]])
    return other, f"replace with {other[:12]!r}"


def _npy_bytes(descr: str, shape: tuple, payload: bytes) -> bytes:
    header = repr({"descr": descr, "fortran_order": False, "shape": shape}).encode("latin1")
    pad = (-(10 + len(header) + 1)) % 64
    header += b" " * pad + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + payload


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def mutate_npz(rng: random.Random, data: bytes, arrays: dict[str, np.ndarray]) -> tuple[bytes, str]:
    """One member-level (or byte-level) mutation of an .npz, then 0-2 byte-level ones."""
    data, desc = _npz_op(rng, data, arrays)
    descs = [desc]
    for _ in range(rng.choice([0, 0, 0, 1, 2])):
        data, desc = _bytes_op(rng, data)
        descs.append(desc)
    return data, "; ".join(descs)


def _npz_op(rng: random.Random, data: bytes, arrays: dict[str, np.ndarray]) -> tuple[bytes, str]:
    op = rng.choice(["bytes", "bytes", "dtype", "shape", "values", "drop", "extra", "object", "forged", "forged",
                     "not_zip"])
    if op == "bytes":
        return _bytes_op(rng, data)
    arrs = {k: v.copy() for k, v in arrays.items()}
    name = rng.choice(sorted(arrs))
    a = arrs[name]
    if op == "dtype":
        dt = rng.choice(["float64", "int64", "bool", "uint8", "complex64", "float16", "U3", "V4"])
        arrs[name] = a.astype(dt) if dt not in ("U3", "V4") else np.zeros(a.shape, dt)
        return _npz_bytes(arrs), f"extras {name} dtype -> {dt}"
    if op == "shape":
        fn, desc = rng.choice([
            (lambda x: x[:, :1], "[:, :1]"), (lambda x: x[:1], "[:1]"), (lambda x: x[..., :-1], "[..., :-1]"),
            (lambda x: x.reshape(-1), "ravel"), (lambda x: x[None], "[None]"), (lambda x: x.ravel()[:1].reshape(()), "scalar"),
            (lambda x: np.concatenate([x, x], axis=-1), "W x2"), (lambda x: x[:, :, :0], "H=0"),
        ])
        arrs[name] = fn(a)
        return _npz_bytes(arrs), f"extras {name} shape {list(a.shape)} -> {list(arrs[name].shape)} ({desc})"
    if op == "values":
        b = a.copy().reshape(-1)
        idx = rng.sample(range(b.size), min(b.size, rng.choice([1, 5, b.size])))
        if np.issubdtype(b.dtype, np.floating):
            val = rng.choice([np.nan, np.inf, -np.inf, -1.0, 1e30, 0.0])
        else:
            info = np.iinfo(b.dtype)
            val = rng.choice([info.max, info.min, -5, 99, 7])
        b[idx] = val
        arrs[name] = b.reshape(a.shape)
        return _npz_bytes(arrs), f"extras {name}: {len(idx)} value(s) -> {val}"
    if op == "drop":
        del arrs[name]
        return _npz_bytes(arrs), f"extras drop {name}"
    if op == "extra":
        arrs["fuzz"] = np.zeros(3)
        return _npz_bytes(arrs), "extras add member fuzz"
    if op == "object":
        arrs[name] = np.array([None, {"a": 1}], dtype=object)
        return _npz_bytes(arrs), f"extras {name} -> object array (pickled)"
    if op == "forged":
        shape = rng.choice([(10**6, 10**6, 8, 8), a.shape[:-1] + (10**9,), (2**62,), (-1, 8), a.shape, (2**31, 2**31, 2**31)])
        descr = rng.choice([a.dtype.str, a.dtype.str, "<f8", "|O", "garbage", "<U1000000000"])
        payload = a.tobytes()[: rng.choice([0, 16, a.nbytes])]
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
            for k, v in arrays.items():
                if k == name:
                    z.writestr(k + ".npy", _npy_bytes(descr, tuple(shape), payload))
                else:
                    z.writestr(k + ".npy", _npy_bytes(v.dtype.str, v.shape, v.tobytes()))
        return buf.getvalue(), f"extras {name}.npy forged header shape={shape} descr={descr!r}, {len(payload)} data bytes"
    other = rng.choice([b"", b"PK\x03\x04", b"not a zip", data[: len(data) // 2]])
    return other, f"extras.npz replaced with {len(other)} bytes {other[:8]!r}"


PLY_TYPES = ["float", "double", "uchar", "char", "short", "int", "uint", "int8", "float64", "list uchar int", "bogus", ""]


def mutate_ply(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    """1-3 mutations of a binary PLY: header lines (count, types, names, format, order, extra lines) and body."""
    end = data.index(b"end_header\n") + len(b"end_header\n")
    lines = data[:end].decode("ascii").split("\n")[:-1]  # without the final ""
    body = data[end:]
    descs = []
    raw_ops = []
    for _ in range(rng.randint(1, 3)):
        op = rng.choice(["count", "count", "type", "type", "name", "format", "delete_line", "dup_line", "swap", "insert",
                         "insert", "crlf", "no_end", "body", "body", "body", "nan", "file_bytes"])
        props = [i for i, ln in enumerate(lines) if ln.startswith("property")]
        elems = [i for i, ln in enumerate(lines) if ln.startswith("element")]
        if op == "count" and elems:
            i = rng.choice(elems)
            tok = lines[i].split()
            n = int(tok[2]) if len(tok) > 2 and tok[2].lstrip("-").isdigit() else 1
            v = rng.choice([0, -1, n - 1, n + 1, 2 * n, 10**12, 10**30, 2**63, "abc", "1.5", ""])
            lines[i] = " ".join(tok[:2] + [str(v)])
            descs.append(f"header {tok[0]} {tok[1] if len(tok) > 1 else ''} count -> {v!r}")
        elif op == "type" and props:
            i = rng.choice(props)
            tok = lines[i].split()
            t = rng.choice(PLY_TYPES)
            lines[i] = " ".join(["property", t, tok[-1]]).replace("  ", " ")
            descs.append(f"property {tok[-1]} type -> {t!r}")
        elif op == "name" and props:
            i = rng.choice(props)
            tok = lines[i].split()
            nm = rng.choice(["x", "opacity", "f_rest_0", "f_rest_7", "f_rest_x", "f_rest_-1", "scale_1", "rot_0", "nx", "junk",
                             "f_dc_0", ""])
            lines[i] = " ".join(tok[:2] + [nm])
            descs.append(f"property {tok[-1]} renamed {nm!r}")
        elif op == "format":
            i = next((j for j, ln in enumerate(lines) if ln.startswith("format")), 1)
            f = rng.choice(["format ascii 1.0", "format binary_big_endian 1.0", "format binary_little_endian", "format",
                            "format foo 1.0", "format binary_little_endian 2.0"])
            lines[i] = f
            descs.append(f"format line -> {f!r}")
        elif op == "delete_line" and len(lines) > 1:
            i = rng.randrange(len(lines))
            descs.append(f"delete header line {i} {lines[i]!r}")
            del lines[i]
        elif op == "dup_line" and lines:
            i = rng.randrange(len(lines))
            lines.insert(i, lines[i])
            descs.append(f"duplicate header line {i} {lines[i]!r}")
        elif op == "swap" and len(props) > 1:
            i, j = rng.sample(props, 2)
            lines[i], lines[j] = lines[j], lines[i]
            descs.append(f"swap property lines {i} and {j}")
        elif op == "insert":
            new = rng.choice(["comment fuzz", "obj_info x", "element face 3", "element vertex 5", "property float extra",
                              "property list uchar int vertex_indices", "garbage line", "comment \u00e9", "", "element",
                              "property", "element vertex 0"])
            i = rng.randint(1, len(lines))
            lines.insert(i, new)
            descs.append(f"insert header line {new!r} at {i}")
        elif op == "crlf":
            lines = [ln + "\r" for ln in lines]
            descs.append("CRLF header lines")
        elif op == "no_end":
            lines = [ln for ln in lines if ln.strip() != "end_header"]
            descs.append("remove end_header")
        elif op == "body":
            body, d = _bytes_op(rng, body)
            descs.append("body: " + d)
        elif op == "nan" and len(body) >= 4:
            b = bytearray(body)
            j = 4 * rng.randrange(len(body) // 4)
            b[j:j + 4] = struct.pack("<f", rng.choice([np.nan, np.inf, -np.inf, 3e38]))
            body = bytes(b)
            descs.append(f"body: non-finite/huge float at {j}")
        else:
            raw_ops.append(op)
    text = "\n".join(lines) + "\n"
    try:
        head = text.encode("ascii")
    except UnicodeEncodeError:
        head = text.encode("utf-8")
    out = head + body
    if raw_ops or not descs:
        out, d = _bytes_op(rng, out)
        descs.append("file: " + d)
    return out, "; ".join(descs)


# --- valid-result checks ------------------------------------------------------------------------
def check_grid(g) -> None:
    from recon.grid import FrameGrid

    if not isinstance(g, FrameGrid):
        raise _Invalid(f"expected a FrameGrid, got {type(g).__name__}")
    g.validate()


def check_gaussians(g) -> None:
    n = g.means.shape[0]
    for name in ("means", "log_scales", "opacity_logits", "sh_dc", "sh_rest", "rotations", "normals"):
        a = getattr(g, name)
        if not isinstance(a, np.ndarray) or a.shape[:1] != (n,) or a.dtype != np.float32:
            raise _Invalid(f"{name}: shape {getattr(a, 'shape', None)} dtype {getattr(a, 'dtype', None)} for N={n}")
        if not np.isfinite(a).all():
            raise _Invalid(f"{name} holds NaN/inf")
    if g.means.shape != (n, 3) or g.log_scales.shape != (n, 3) or g.rotations.shape != (n, 4) or g.sh_rest.ndim != 3:
        raise _Invalid("inconsistent shapes")


def check_sequence(s) -> None:
    check_gaussians(s.gaussians)
    T, n = len(s.paths), s.gaussians.num_gaussians
    if s.means.shape != (T, n, 3) or not np.isfinite(s.means).all():
        raise _Invalid(f"means shape {s.means.shape}, expected {(T, n, 3)} finite")
    if s.times.shape != (T,) or not np.isfinite(s.times).all():
        raise _Invalid(f"times {s.times}")
    if s.fps is not None and not (math.isfinite(s.fps) and s.fps > 0):
        raise _Invalid(f"fps {s.fps}")


def _conforms(v: Any, tp: Any) -> bool:
    if tp is Any:
        return True
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_conforms(v, a) for a in typing.get_args(tp))
    if tp is type(None):
        return v is None
    if tp is bool:
        return isinstance(v, bool)
    if tp is int:
        return isinstance(v, int) and not isinstance(v, bool)
    if tp is float:
        return _is_num(v) and math.isfinite(v)
    if tp is str:
        return isinstance(v, str)
    if origin is typing.Literal:
        return v in typing.get_args(tp)
    if origin in (list, tuple):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        if not isinstance(v, (list, tuple)):
            return False
        return all(_conforms(x, args[0]) for x in v) if len(args) == 1 or origin is list else (
            len(v) == len(args) and all(_conforms(x, a) for x, a in zip(v, args)))
    if origin is dict:
        return isinstance(v, dict)
    if dataclasses.is_dataclass(tp):
        return dataclasses.is_dataclass(v)
    return True  # a type this check does not know


def check_config_types(cfg: Any, cls: type | None = None, prefix: str = "") -> None:
    """Every field of the config has its declared type (floats finite); nested dataclasses recursively."""
    cls = cls or type(cfg)
    if not dataclasses.is_dataclass(cfg):
        raise _Invalid(f"{prefix or 'config'}: expected a {cls.__name__}, got {type(cfg).__name__}")
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cfg):
        v, tp = getattr(cfg, f.name), hints[f.name]
        if dataclasses.is_dataclass(tp):
            check_config_types(v, tp, f"{prefix}{f.name}.")
        elif not _conforms(v, tp):
            raise _Invalid(f"{prefix}{f.name} = {_short(v, 30)} accepted, declared {tp}")


def _find(name: str, modules: tuple[str, ...]) -> Any:
    for m in modules:
        try:
            mod = importlib.import_module(m)
        except ImportError:
            continue
        if hasattr(mod, name):
            return getattr(mod, name)
    pytest.fail(f"{name} not found in any of {modules} (recon moved it?)", pytrace=False)


CONFIG_MODULES = ("recon.pipeline", "recon.config", "recon.schema", "recon.configs")


# --- fixtures -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def grid_dirs(tmp_path_factory) -> list[Path]:
    """A full synthetic grid folder (with masks, extras incl. surface) and a compact one (no surface)."""
    from recon.io.gridfolder import write_grid
    from recon.synth import make_grid

    g = make_grid("orbit", views=2, frames=2, size=(8, 8), seed=1, supersample=1)
    base = tmp_path_factory.mktemp("fuzz_grid")
    full = write_grid(g, base / "full")
    g.extras.pop("surface", None)
    compact = write_grid(g, base / "compact")
    return [full, compact]


@pytest.fixture(scope="module")
def videos_dir(tmp_path_factory) -> Path:
    from recon.io.video import write_video

    d = tmp_path_factory.mktemp("fuzz_videos")
    yy, xx = np.mgrid[0:16, 0:24]
    clip = np.stack([np.stack([(xx * 8 + 20 * t) % 256, yy * 12 % 256, np.full_like(xx, 40 * t)], -1) for t in range(3)]).astype(np.uint8)
    for name in ("a.mp4", "b.mp4"):
        write_video(d / name, clip, fps=10)
    K = [[20.0, 0.0, 12.0], [0.0, 20.0, 8.0], [0.0, 0.0, 1.0]]
    w2c_a, w2c_b = np.eye(4), np.eye(4)
    w2c_a[0, 3], w2c_b[0, 3] = 0.5, -0.5
    cams = {"fps": 25, "fov_deg": 70, "K": K, "views": {"a.mp4": {"K": K, "w2c": w2c_a.tolist()},
                                                        "b": {"fov_deg": 55.0, "w2c": w2c_b.tolist()}}}
    (d / "cameras.json").write_text(json.dumps(cams))
    from recon.io.video import read_videos

    check_grid(read_videos(d))
    return d


def _png(path: Path, w: int, h: int, seed: int, rgba: bool = False) -> None:
    from recon.io.images import write_png

    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    if rgba:
        from PIL import Image

        alpha = np.zeros((h, w, 1), np.uint8)
        alpha[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = 255
        Image.fromarray(np.concatenate([a, alpha], -1)).save(path)
    else:
        write_png(path, a)


@pytest.fixture(scope="module")
def transforms_files(tmp_path_factory) -> list[Path]:
    """A nerfstudio multi-view transforms.json (camera_id, per-frame intrinsics) and a D-NeRF one."""
    from recon.io.nerfstudio import read_transforms

    ns = tmp_path_factory.mktemp("fuzz_ns")
    frames = []
    for t in range(2):
        for v in range(2):
            f = {"file_path": f"images/v{v}_t{t}.png", "transform_matrix": c2w_gl([3.0 * v - 1.5, 0.5, 5.0]), "time": t / 10,
                 "camera_id": v}
            frames.append(f)
            _png(ns / f["file_path"], 12, 8, 10 * t + v)
    frames[1]["fl_x"] = 33.0
    doc = {"fl_x": 30.0, "fl_y": 31.0, "cx": 6.5, "cy": 4.0, "w": 12, "h": 8, "camera_model": "OPENCV", "k1": 0.01,
           "frames": frames}
    (ns / "transforms.json").write_text(json.dumps(doc))
    dn = tmp_path_factory.mktemp("fuzz_dnerf")
    frames = []
    for i in range(3):
        a = 2 * math.pi * i / 3
        frames.append({"file_path": f"./train/r_{i:03d}", "rotation": 0.1, "time": i / 2,
                       "transform_matrix": c2w_gl([4 * math.sin(a), 1.0, 4 * math.cos(a)])})
        _png(dn / "train" / f"r_{i:03d}.png", 8, 8, i, rgba=True)
    (dn / "transforms_train.json").write_text(json.dumps({"camera_angle_x": 0.69, "frames": frames}))
    out = [ns / "transforms.json", dn / "transforms_train.json"]
    for p in out:
        check_grid(read_transforms(p))
    return out


@pytest.fixture(scope="module")
def panoptic_dir(tmp_path_factory) -> Path:
    """Dynamic-3DGS layout: train cameras 1, 2 (with seg/), test camera 7; 2 time steps of 12x8."""
    from recon.io.panoptic import read_panoptic

    root = make_panoptic(tmp_path_factory.mktemp("fuzz_panoptic") / "p", T=2, w=12, h=8)
    from recon.io import LoadOptions

    check_grid(read_panoptic(root))
    check_grid(read_panoptic(root, LoadOptions(split="all")))
    return root


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A finished run folder: run.json (RunFolder.set), config.json and a small deform checkpoint."""
    import torch

    from recon.model.deform import DeformField
    from recon.model.scene import DeformableScene
    from recon.model.splats import Splats
    from recon.run import RUN_FORMAT, RUN_VERSION, STAGES, RunFolder

    run = tmp_path_factory.mktemp("fuzz_run") / "run"
    run.mkdir()
    gen = torch.Generator().manual_seed(0)
    n, V, T = 8, 2, 2
    splats = Splats(torch.randn(n, 3, generator=gen), torch.full((n,), -2.0), torch.zeros(n), torch.rand(n, 3, generator=gen))
    field = DeformField(torch.zeros(n, V, 3), torch.zeros(3), 1.0, (0.0, 1.0), 2, 2, 8, 1, False)
    poses = torch.eye(4).repeat(V, T, 1, 1)
    poses[..., 2, 3] = 4.0
    Ks = torch.tensor([[10.0, 0, 4], [0, 10.0, 4], [0, 0, 1]]).repeat(V, T, 1, 1)
    scene = DeformableScene(splats, field, poses, Ks, torch.tensor([0.0, 1.0]), (8, 8))
    info = {"format": RUN_FORMAT, "version": RUN_VERSION, "command": "reconstruct", "input": "grid", "seed": 0,
            "device": "cpu", "threads": 1, "time_unit": "s", "started": "2024-01-01T00:00:00Z",
            "stages": {s: {"status": "pending"} for s in STAGES}}
    rf = RunFolder(run, info)
    scene.save(rf.checkpoint("deform"))
    for s in STAGES:
        rf.set(s, status="done", seconds=0.1, report={})
    try:
        cfg = _find("config_to_dict", CONFIG_MODULES)(_find("ReconstructConfig", CONFIG_MODULES)())
    except BaseException:  # noqa: BLE001 - a config module being refactored: export reads {} then
        cfg = {"outputs": {"fps": 8.0}}
    from recon.io.atomic import write_json

    write_json(run / "config.json", cfg)
    from recon.commands.export import export

    with contextlib.redirect_stdout(io.StringIO()):
        export(run, out=run.parent / "exp")
    return run


@pytest.fixture(scope="module")
def ply_files(tmp_path_factory) -> list[Path]:
    """Gaussian .ply files from write_gaussians_ply: degree 0 and degree 1 with rotations / normals."""
    from recon.io.ply import read_gaussians_ply, write_gaussians_ply

    d = tmp_path_factory.mktemp("fuzz_ply")
    rng = np.random.default_rng(0)
    n = 6
    base = dict(means=rng.normal(size=(n, 3)).astype(np.float32), log_scales=rng.normal(-3, 1, size=n).astype(np.float32),
                opacity_logits=rng.normal(size=n).astype(np.float32), sh_dc=rng.normal(size=(n, 3)).astype(np.float32))
    p0 = write_gaussians_ply(d / "g0.ply", **base)
    p1 = write_gaussians_ply(d / "g1.ply", **base, sh_rest=rng.normal(size=(n, 3, 3)).astype(np.float32),
                             rotations=rng.normal(size=(n, 4)).astype(np.float32), normals=np.zeros((n, 3), np.float32))
    for p in (p0, p1):
        check_gaussians(read_gaussians_ply(p))
    return [p0, p1]


@pytest.fixture(scope="module")
def ply_sequence_dir(tmp_path_factory) -> Path:
    from recon.io.plyseq import read_ply_sequence, write_ply_sequence

    d = tmp_path_factory.mktemp("fuzz_seq")
    rng = np.random.default_rng(1)
    n = 5
    frames = [rng.normal(size=(n, 3)).astype(np.float32) for _ in range(3)]
    out = write_ply_sequence(d, frames, np.full(n, -2.0, np.float32), np.zeros(n, np.float32), colors_rgb=rng.random((n, 3)),
                             fps=10.0, source="fuzz")
    check_sequence(read_ply_sequence(out))
    return out


# --- the fuzz tests -----------------------------------------------------------------------------
def test_fuzz_grid_folder(grid_dirs: list[Path], fuzz_env) -> None:
    from recon.io.gridfolder import read_grid

    rng = _rng("grid")
    seeds = {d: (json.loads((d / "grid.json").read_text()), (d / "extras.npz").read_bytes(),
                 dict(np.load(d / "extras.npz"))) for d in grid_dirs}
    fz = Fuzz("grid folder (read_grid: grid.json, PNG frames, extras.npz)")
    for _ in range(n_cases("grid")):
        root = rng.choice(grid_dirs)
        head, npz, arrays = seeds[root]
        r = rng.random()
        if r < 0.6:
            target = root / "grid.json"
            data, desc = mutate_json(rng, head)
        elif r < 0.8:
            target = root / "extras.npz"
            data, desc = mutate_npz(rng, npz, arrays)
        else:
            kind = "frame" if r < 0.95 else "mask"
            target = root / f"view_{rng.randrange(2):02d}" / f"{kind}_{rng.randrange(2):04d}.png"
            data, desc = mutate_png(rng, target.read_bytes())
        fz.case(f"{root.name}/{target.relative_to(root)}: {desc}", [(target, data)], lambda: read_grid(root), check_grid)
    fz.finish()


def test_fuzz_videos_cameras_json(videos_dir: Path, fuzz_env) -> None:
    from recon.io.video import read_videos

    rng = _rng("videos")
    src = videos_dir / "cameras.json"
    doc = json.loads(src.read_text())
    fz = Fuzz("videos (read_videos: cameras.json)")
    for _ in range(n_cases("videos")):
        data, desc = mutate_json(rng, doc)
        fz.case(f"cameras.json: {desc}", [(src, data)], lambda: read_videos(videos_dir), check_grid)
    fz.finish()


def test_fuzz_nerfstudio_transforms(transforms_files: list[Path], fuzz_env) -> None:
    from recon.io.nerfstudio import read_transforms

    rng = _rng("nerfstudio")
    docs = {p: json.loads(p.read_text()) for p in transforms_files}
    fz = Fuzz("nerfstudio / D-NeRF (read_transforms: transforms json)")
    for _ in range(n_cases("nerfstudio")):
        src = rng.choice(transforms_files)
        data, desc = mutate_json(rng, docs[src])
        fz.case(f"{src.parent.name}/{src.name}: {desc}", [(src, data)], lambda: read_transforms(src), check_grid)
    fz.finish()


def test_fuzz_panoptic_meta(panoptic_dir: Path, fuzz_env) -> None:
    from recon.io import LoadOptions
    from recon.io.panoptic import read_panoptic

    rng = _rng("panoptic")
    names = ["train_meta.json", "test_meta.json"]
    docs = {n: json.loads((panoptic_dir / n).read_text()) for n in names}
    fz = Fuzz("Panoptic (read_panoptic: train/test_meta.json)")
    for _ in range(n_cases("panoptic")):
        name = "train_meta.json" if rng.random() < 0.75 else "test_meta.json"
        split = "all" if name == "test_meta.json" or rng.random() < 0.3 else "train"
        data, desc = mutate_json(rng, docs[name])
        fz.case(f"{name} (split {split}): {desc}", [(panoptic_dir / name, data)],
                lambda: read_panoptic(panoptic_dir, LoadOptions(split=split)), check_grid)
    fz.finish()


def test_fuzz_run_json(run_dir: Path, fuzz_env, one_torch_thread) -> None:
    """run.json as read by RunFolder.read_info, `recon render` (load_run_scene) and `recon export`."""
    import torch

    from recon.commands.export import export
    from recon.commands.render import load_run_scene
    from recon.run import RunFolder

    rng = _rng("run")
    src = run_dir / "run.json"
    doc = json.loads(src.read_text())
    out = run_dir.parent / "exp_fuzz"

    def read_all():
        RunFolder.read_info(run_dir)
        load_run_scene(run_dir, torch.device("cpu"))
        export(run_dir, out=out)

    fz = Fuzz("run folder (RunFolder.read_info, load_run_scene, export: run.json)")
    for _ in range(n_cases("run")):
        data, desc = mutate_json(rng, doc)
        fz.case(f"run.json: {desc}", [(src, data)], read_all)
    fz.finish()


def test_fuzz_config_json(run_dir: Path, tmp_path: Path, fuzz_env, one_torch_thread) -> None:
    """A config json as read by load_config_file (--config, a resumed run) and by `recon export`."""
    from recon.commands.export import export

    load_config_file = _find("load_config_file", CONFIG_MODULES)
    rng = _rng("config")
    full = json.loads((run_dir / "config.json").read_text())
    partial = {"prune": {"iterations": 8}, "deform": {"iterations": 24, "warmup": 4, "mlp_width": 32, "mlp_depth": 2},
               "holdout_views": [3], "holdout_times": [2], "threads": 1, "outputs": {"fps": 8.0, "preview_video": False}}
    cfg_file = tmp_path / "config.json"
    out = run_dir.parent / "exp_fuzz_cfg"
    fz = Fuzz("config json (load_config_file; export reading RUN/config.json)")
    for _ in range(n_cases("config")):
        r = rng.random()
        doc = full if rng.random() < 0.5 else partial
        data, desc = mutate_json(rng, doc)
        if r < 0.75:
            fz.case(f"--config {'full' if doc is full else 'partial'}: {desc}", [(cfg_file, data)],
                    lambda: load_config_file(cfg_file), check_config_types)
        else:
            fz.case(f"RUN/config.json (export) {'full' if doc is full else 'partial'}: {desc}",
                    [(run_dir / "config.json", data)], lambda: export(run_dir, out=out))
    fz.finish()


def test_fuzz_gaussian_ply(ply_files: list[Path], fuzz_env) -> None:
    from recon.io.ply import read_gaussians_ply

    rng = _rng("ply")
    seeds = {p: p.read_bytes() for p in ply_files}
    fz = Fuzz("Gaussian .ply (read_gaussians_ply)")
    for _ in range(n_cases("ply")):
        p = rng.choice(ply_files)
        data, desc = mutate_ply(rng, seeds[p])
        fz.case(f"{p.name}: {desc}", [(p, data)], lambda: read_gaussians_ply(p), check_gaussians)
    fz.finish()


def test_fuzz_ply_sequence(ply_sequence_dir: Path, fuzz_env) -> None:
    from recon.io.plyseq import read_ply_sequence

    rng = _rng("ply_sequence")
    man = json.loads((ply_sequence_dir / "sequence.json").read_text())
    frames = sorted(ply_sequence_dir.glob("frame_*.ply"))
    fz = Fuzz("ply sequence (read_ply_sequence: sequence.json, frame .ply)")
    for _ in range(n_cases("ply_sequence")):
        if rng.random() < 0.7:
            target = ply_sequence_dir / "sequence.json"
            data, desc = mutate_json(rng, man)
        else:
            target = rng.choice(frames)
            data, desc = mutate_ply(rng, target.read_bytes())
        fz.case(f"{target.name}: {desc}", [(target, data)], lambda: read_ply_sequence(ply_sequence_dir), check_sequence)
    fz.finish()
