"""The ``recon`` command line: ``recon <command> --help`` for each command.

Commands live in :mod:`recon.commands` (one module each, a typed function whose docstring and
argument docstrings become the help). Bad input raises :class:`recon.errors.InputError`, which
is printed as one line on stderr with exit code 2 and no traceback; Ctrl-C exits 130.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from typing import Callable

# name -> "module:function"; modules that are not present in this build are left out.
COMMANDS: dict[str, str] = {
    "synth": "recon.commands.synth:synth",
    "info": "recon.commands.info:info",
    "generate": "recon.commands.generate:generate",
    "reconstruct": "recon.commands.reconstruct:reconstruct",
    "render": "recon.commands.render:render",
    "export": "recon.commands.export:export",
    "view": "recon.commands.view:view",
    "bench": "recon.commands.bench:bench",
}


def available_commands() -> dict[str, Callable]:
    out: dict[str, Callable] = {}
    for name, target in COMMANDS.items():
        mod, fn = target.split(":")
        if importlib.util.find_spec(mod) is None:
            continue
        out[name] = getattr(importlib.import_module(mod), fn)
    return out


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``recon`` console script."""
    # OpenMP threads that spin while waiting cost 4-5x on a busy 2-core machine (our kernel and
    # torch both use OpenMP); yielding waits are never much slower. Must be set before torch loads.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import tyro

    from recon.errors import InputError

    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        cmds = available_commands()
        tyro.extras.subcommand_cli_from_dict(cmds, prog="recon", args=argv, description=__doc__.split("\n")[0])
    except InputError as e:
        print(f"recon: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("recon: interrupted; finished stages are kept (use --resume to continue)", file=sys.stderr)
        return 130
    except SystemExit as e:  # tyro exits 2 on bad arguments, 0 on --help
        return int(e.code or 0) if not isinstance(e.code, str) else 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
