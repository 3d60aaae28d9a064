"""The train/test protocol flag (`--eval-split`): which cameras it holds out, the memory guard
before decoding, and bad test splits (one line naming the file and field, exit 2, nothing written)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from recon.errors import InputError
from recon.io import LoadOptions, check_memory
from recon.io.protocol import load_protocol
from test_io_panoptic import make_panoptic


def test_protocol_picks_the_test_cameras(tmp_path: Path) -> None:
    root = make_panoptic(tmp_path / "p", train_ids=(1, 2, 4), test_ids=(0, 7))
    grid, proto = load_protocol(root, LoadOptions(), "test")
    assert grid.view_names == ["0", "1", "2", "4", "7"]
    assert proto["views"] == [0, 4] and proto["camera_ids"] == [0, 7] and proto["split"] == "test"
    assert grid.central_view not in proto["views"]  # the canonical frame is a training camera's
    # a subset of training cameras by id: the test cameras come along
    grid, proto = load_protocol(root, LoadOptions(views=[2, 1]), "test")
    assert grid.view_names == ["2", "1", "0", "7"] and proto["views"] == [2, 3]
    with pytest.raises(InputError, match="training split"):
        load_protocol(root, LoadOptions(split="test"), "test")


def test_protocol_refuses_inputs_without_splits(tmp_path: Path) -> None:
    (tmp_path / "transforms.json").write_text("{}")
    with pytest.raises(InputError, match="--eval-split"):
        load_protocol(tmp_path / "transforms.json", LoadOptions(), "test")


def test_memory_guard_names_the_options(monkeypatch) -> None:
    monkeypatch.setenv("RECON_MEMORY_LIMIT", str(1 << 20))
    with pytest.raises(InputError, match="--scale, --frames or --views"):
        check_memory(10 << 20, "29 views x 150 frames at 640x360", "ims/0/000000.jpg")
    check_memory(100, "tiny")


def _cli(args: list[str], env_extra: dict | None = None) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "recon.cli", *args], capture_output=True, text=True, env=env, timeout=300)


def test_grid_too_large_is_refused_before_decoding(tmp_path: Path) -> None:
    root = make_panoptic(tmp_path / "p")
    out = tmp_path / "run"
    r = _cli(["reconstruct", str(root), "--out", str(out), "--eval-split", "test"], {"RECON_MEMORY_LIMIT": "1000"})
    assert r.returncode == 2, r.stderr
    assert "GiB decoded" in r.stderr and "--scale" in r.stderr and "Traceback" not in r.stderr
    assert not out.exists()


@pytest.mark.parametrize("case", ["size", "missing_image", "nan_pose"])
def test_bad_test_split_one_line_exit_2_nothing_written(tmp_path: Path, case: str) -> None:
    root = make_panoptic(tmp_path / "p")
    meta_f = root / "test_meta.json"
    meta = json.loads(meta_f.read_text())
    expect = ""
    if case == "size":
        meta["w"] = 20
        expect = "w/h"
    elif case == "missing_image":
        (root / "ims" / "7" / "000001.jpg").unlink()
        expect = "000001.jpg"
    else:
        meta["w2c"][1][0][0][0] = float("nan")
        expect = "w2c[1][0]"
    meta_f.write_text(json.dumps(meta))
    out = tmp_path / "run"
    r = _cli(["reconstruct", str(root), "--out", str(out), "--eval-split", "test"])
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and expect in lines[0] and "Traceback" not in r.stderr, r.stderr
    assert not out.exists()
