"""Errors meant for people.

`InputError` is raised for bad input (a file, a field, a value a user supplied).
The CLI turns it into a one-line message and exit code 2, with no traceback.
Always name the file and the field and say what was expected.
"""

from __future__ import annotations

import errno
import os


class InputError(ValueError):
    """Bad user input. ``str(err)`` is the whole one-line message."""

    def __init__(self, message: str, path: str | os.PathLike | None = None, field: str | None = None):
        self.path = None if path is None else str(path)
        self.field = field
        self.message = message
        where = ""
        if self.path is not None:
            where = self.path + (f" [{field}]" if field else "") + ": "
        elif field:
            where = f"{field}: "
        super().__init__(where + message)


_ERRNO_WORDS = {
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "is a folder, expected a file",
    errno.EEXIST: "already exists",
    errno.ENOENT: "no such file or folder",
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.ENAMETOOLONG: "file name too long",
    errno.ENOTEMPTY: "folder is not empty",
    errno.EXDEV: "cannot move across file systems",
    errno.EMFILE: "too many open files",
    errno.EIO: "input/output error",
}


def describe_os_error(e: OSError) -> str:
    """One line for a file-system error: the path(s) and what was wrong, in words."""
    what = _ERRNO_WORDS.get(e.errno or -1) or e.strerror or type(e).__name__
    paths = [str(p) for p in (e.filename, e.filename2) if p is not None]
    if e.errno == errno.EROFS:
        what += " (choose a writable folder with --out)"
    if e.errno == errno.ENOSPC:
        what += " (free some space or choose another --out)"
    return (" -> ".join(paths) + ": " if paths else "") + what
