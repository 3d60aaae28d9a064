"""The ``recon`` command line: ``recon <command> --help`` for each command.

Commands live in :mod:`recon.commands` (one module each, a typed function whose docstring and
argument docstrings become the help). The boundary: bad input raises
:class:`recon.errors.InputError` and a file-system failure an ``OSError`` (permission, read-only,
not a folder, no space left, ...); both are printed as one line on stderr naming the path, exit
code 2, no traceback. Any other exception is a bug in recon: one "internal error" line and exit 1
(``--debug`` anywhere on the command line, or ``RECON_DEBUG=1``, shows the traceback). Ctrl-C
exits 130, whatever error it surfaces as.
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
    "batch": "recon.commands.batch:batch",
}


CONFIG_COMMANDS = ("reconstruct", "batch", "bench")
"""Commands that take any config field as a dotted flag (``--deform.iterations 3000``) on top of
``--config FILE`` (:func:`recon.config.split_config_flags`)."""


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
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv or os.environ.get("RECON_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    restore = _watch_interrupts()
    try:
        return _main(argv, debug)
    finally:
        restore()


def _watch_interrupts() -> Callable[[], None]:
    """Ctrl-C raises KeyboardInterrupt as usual and also sets :data:`recon.run.INTERRUPT` (so a
    swallowed one still stops the run at the end of its stage); returns what restores the former
    handler. Main thread only (elsewhere a no-op)."""
    import signal
    import threading

    from recon.run import INTERRUPT

    INTERRUPT.clear()
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.getsignal(signal.SIGINT)

    def on_sigint(signum, frame):
        INTERRUPT.set()
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_sigint)

    def restore() -> None:
        if signal.getsignal(signal.SIGINT) is on_sigint:
            signal.signal(signal.SIGINT, previous)
    return restore


def _main(argv: list[str], debug: bool) -> int:
    import tyro

    from recon.errors import InputError, describe_os_error

    try:
        from recon.config import set_cli_overrides, split_config_flags

        overrides: dict = {}
        if argv and argv[0] in CONFIG_COMMANDS:
            argv, overrides = split_config_flags(argv)
        set_cli_overrides(overrides)
        cmds = available_commands()
        # one flag per switch (--no-prune, --resume), not tyro's pairs (--no-no-prune)
        tyro.extras.subcommand_cli_from_dict(cmds, prog="recon", args=argv, description=__doc__.split("\n")[0],
                                             config=(tyro.conf.FlagCreatePairsOff,))
    except InputError as e:
        print(f"recon: error: {_one_line(str(e))}", file=sys.stderr)
        return 2
    except OSError as e:
        if debug:
            raise
        print(f"recon: error: {_one_line(describe_os_error(e))}", file=sys.stderr)
        return 2
    except MemoryError:
        if debug:
            raise
        print("recon: error: ran out of memory; make the job smaller (--scale, --frames, --views)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return _interrupted()
    except SystemExit as e:  # tyro exits 2 on bad arguments, 0 on --help
        return int(e.code or 0) if not isinstance(e.code, str) else 2
    except Exception as e:  # a bug: keep it visible (exit 1) but readable
        from recon.run import INTERRUPT

        if INTERRUPT.is_set():  # after Ctrl-C any error is its consequence (a KeyboardInterrupt raised
            return _interrupted()  # inside an import leaves a half-initialised module behind)
        if debug:
            raise
        print(f"recon: internal error: {type(e).__name__}: {_one_line(str(e))[:300]} "
              "(a bug in recon; rerun with --debug for the traceback)", file=sys.stderr)
        return 1
    return 0


def _interrupted() -> int:
    """The exit after Ctrl-C: one line on stderr, status 130."""
    _quiet_after_interrupt()
    print("recon: interrupted; finished stages are kept (use --resume to continue)", file=sys.stderr)
    return 130


def _quiet_after_interrupt() -> None:
    """Make the clean exit 130 after Ctrl-C hold. A second Ctrl-C during the exit is ignored. And
    CPython exits by re-raising SIGINT (status -2 instead of 130) when its flag for "the last
    C-level code evaluation ended in KeyboardInterrupt" is set -- which it is whenever the
    interrupt landed inside code a C extension ran through ``PyRun_*`` (seen in
    tests/test_interrupt.py: 1-3 runs of 5-6), even though we caught it. One successful
    ``PyRun_SimpleString`` clears that flag (CPython only; elsewhere nothing to clear)."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        import ctypes

        ctypes.pythonapi.PyRun_SimpleString(b"pass")
    except (AttributeError, OSError):
        pass


def _one_line(msg: str) -> str:
    return " ".join(msg.split())


if __name__ == "__main__":
    sys.exit(main())
