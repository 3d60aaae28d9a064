"""The reconstruct / render / export commands: argument parsing, outputs, exit code 2 on bad input."""

from __future__ import annotations

import json

import pytest

from recon.cli import main
from recon.config import parse_holdout
from recon.errors import InputError


def test_parse_holdout():
    assert parse_holdout("views=7,times=3,6") == ([7], [3, 6])
    assert parse_holdout("views=1,2 times=4") == ([1, 2], [4])
    for bad in ("views=1", "7,3", "views=a,times=1", "cells=1"):
        with pytest.raises(InputError):
            parse_holdout(bad)


@pytest.fixture(scope="module")
def grid_dir(tmp_path_factory):
    from recon.io.gridfolder import write_grid
    from recon.synth import make_grid

    d = tmp_path_factory.mktemp("cli") / "grid"
    write_grid(make_grid("orbit", views=4, frames=3, size=(32, 32), seed=1, supersample=1), d)
    return d


def test_cli_reconstruct_render_export(grid_dir, tmp_path, capsys):
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps({"prune": {"iterations": 4}, "deform": {"iterations": 10, "warmup": 2, "mlp_width": 16, "mlp_depth": 1},
                               "outputs": {"preview_video": False}}))
    run = tmp_path / "run"
    assert main(["reconstruct", str(grid_dir), "--out", str(run), "--config", str(cfg), "--holdout", "views=0,times=1",
                 "--device", "cpu", "--no-prune"]) == 0
    m = json.loads((run / "metrics.json").read_text())
    assert m["heldout"]["cells"] == 1 and m["prune"]["skipped"] is True
    png = tmp_path / "cell.png"
    assert main(["render", str(run), "--view", "1", "--time", "2", "--out", str(png), "--device", "cpu"]) == 0
    from recon.io.images import read_rgb

    assert read_rgb(png).shape == (32, 32, 3)
    assert main(["export", str(run), "--format", "ply", "--out", str(tmp_path / "exp")]) == 0
    assert len(list((tmp_path / "exp" / "ply").glob("frame_*.ply"))) == 3
    # bad uses: exit 2, one line
    capsys.readouterr()
    assert main(["render", str(run), "--view", "9", "--time", "0"]) == 2
    assert main(["export", str(run), "--format", "obj"]) == 2
    assert main(["reconstruct", str(grid_dir), "--out", str(run)]) == 2  # exists, no --resume
    err = capsys.readouterr().err
    assert err.count("recon: error:") == 3


def test_cli_exit_2_on_bad_input(tmp_path, grid_dir, capsys):
    assert main(["reconstruct", str(tmp_path / "missing"), "--out", str(tmp_path / "r1")]) == 2
    assert main(["render", str(tmp_path / "missing")]) == 2
    assert main(["reconstruct", str(grid_dir), "--out", str(tmp_path / "r2"), "--holdout", "views=1"]) == 2
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["reconstruct", str(grid_dir), "--out", str(tmp_path / "r3"), "--config", str(bad)]) == 2
    # one view at one time is too small (one view over time is a monocular grid: tests/test_monocular.py)
    from recon.io.gridfolder import read_grid, write_grid

    g = read_grid(grid_dir).subset(views=[0], times=[0])
    write_grid(g, tmp_path / "one")
    assert main(["reconstruct", str(tmp_path / "one"), "--out", str(tmp_path / "r4")]) == 2
    assert not (tmp_path / "r4").exists() and not (tmp_path / "r1").exists()
