"""The recon command line: help, device choice, exit codes for bad input."""

import subprocess
import sys

import pytest
import torch

from recon.cli import main
from recon.device import resolve_device
from recon.errors import InputError


def test_help_lists_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("synth", "info"):
        assert name in out


def test_unknown_command_is_usage_error(capsys):
    assert main(["no-such-command"]) == 2


def test_missing_path_exit_2(tmp_path, capsys):
    missing = tmp_path / "nope"
    assert main(["info", str(missing)]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "does not exist" in err
    assert "Traceback" not in err


def test_console_script_exit_code(tmp_path):
    """The real process: one line on stderr, exit code 2, no traceback."""
    r = subprocess.run([sys.executable, "-m", "recon.cli", "info", str(tmp_path / "nope")], capture_output=True, text=True)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(InputError, match="unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="CUDA was requested"):
            resolve_device("cuda")
