"""Atomic writes: write to a temporary sibling, then rename.

A crash, a Ctrl-C or a bad input half way never leaves a file (or folder) that looks complete,
and never clobbers what was there before the new content is whole.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it onto ``path``.

    Works for files and folders (a folder target replaces the old folder only once the new one is
    complete). On an exception the temporary is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.unlink(tmp)
    tmp = Path(tmp)
    try:
        yield tmp
        if path.is_dir() and tmp.is_dir():
            old = path.with_name(f".{path.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.rename(path, old)
            os.rename(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer, np.bool_)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def check_writable(path: str | os.PathLike, option: str = "--out") -> None:
    """Raise :class:`~recon.errors.InputError` now (before any long work) when ``path`` cannot be
    created or written: a part of it is a file, or its nearest existing folder refuses new entries
    (permission, read-only file system, a virtual file system such as /proc). Creates nothing that
    stays: the probe folder is removed."""
    import errno

    from recon.errors import InputError, describe_os_error

    path = Path(path)
    probe_in = path if path.is_dir() else path.parent
    while not probe_in.exists() and probe_in != probe_in.parent:
        probe_in = probe_in.parent
    if not probe_in.is_dir():
        raise InputError(f"{probe_in} is a file, not a folder", path, option)
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".recon-probe-", dir=probe_in))
    except OSError as e:
        why = "the file system does not allow new folders there" if e.errno == errno.ENOENT else describe_os_error(
            OSError(e.errno, e.strerror))
        raise InputError(f"cannot write in {probe_in}: {why}", path, option) from None


def sweep_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove what interrupted :func:`atomic_path` writes left under ``folder`` (a process killed
    with SIGKILL cannot clean up): hidden ``.NAME.XXXX.tmp`` files or folders and ``.NAME.old``
    folders. Returns the removed paths. Run when a run folder is reopened."""
    removed = []
    for p in sorted(Path(folder).rglob(".*"), key=lambda q: len(q.parts)):
        if not (p.name.endswith(".tmp") or p.name.endswith(".old")) or not p.exists():
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(p)
    return removed
