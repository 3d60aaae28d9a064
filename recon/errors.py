"""Errors meant for people.

`InputError` is raised for bad input (a file, a field, a value a user supplied).
The CLI turns it into a one-line message and exit code 2, with no traceback.
Always name the file and the field and say what was expected.
"""

from __future__ import annotations

import os


class InputError(ValueError):
    """Bad user input. ``str(err)`` is the whole one-line message."""

    def __init__(self, message: str, path: str | os.PathLike | None = None, field: str | None = None):
        self.path = None if path is None else str(path)
        self.field = field
        where = ""
        if self.path is not None:
            where = self.path + (f" [{field}]" if field else "") + ": "
        elif field:
            where = f"{field}: "
        super().__init__(where + message)
