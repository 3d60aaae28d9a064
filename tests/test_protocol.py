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
    assert "would take" in r.stderr and "--scale" in r.stderr and "Traceback" not in r.stderr
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


def _synth_as_panoptic(root: Path, test_views=(1, 4)) -> Path:
    """A small synthetic scene written in the Panoptic layout (views as camera ids 0.., test_views
    in test_meta.json, masks from the synthetic object ids for the training cameras)."""
    from PIL import Image

    from recon.synth import make_grid

    g = make_grid("orbit", views=6, frames=3, size=(48, 64), seed=2, supersample=1)
    V, T, H, W = g.shape
    for split in ("train", "test"):
        ids = [v for v in range(V) if (v in test_views) == (split == "test")]
        meta = {"w": W, "h": H, "k": [], "w2c": [], "fn": [], "cam_id": []}
        for t in range(T):
            meta["k"].append([g.cameras.K[v, t].tolist() for v in ids])
            meta["w2c"].append([g.cameras.w2c[v, t].tolist() for v in ids])
            meta["fn"].append([f"{v}/{t:06d}.jpg" for v in ids])
            meta["cam_id"].append(ids)
            for v in ids:
                (root / "ims" / str(v)).mkdir(parents=True, exist_ok=True)
                Image.fromarray(g.images[v, t]).save(root / "ims" / str(v) / f"{t:06d}.jpg", quality=95)
                if split == "train" and g.masks is not None:
                    (root / "seg" / str(v)).mkdir(parents=True, exist_ok=True)
                    Image.fromarray(g.masks[v, t].astype(np.uint8) * 255).save(root / "seg" / str(v) / f"{t:06d}.png")
        (root / f"{split}_meta.json").write_text(json.dumps(meta))
    return root


def test_reconstruct_with_eval_split_names_the_test_cameras(tmp_path: Path) -> None:
    root = _synth_as_panoptic(tmp_path / "p")
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps({"prune": {"iterations": 4}, "deform": {"iterations": 30, "warmup": 5, "mlp_width": 16,
                                                                      "mlp_depth": 1}, "outputs": {"preview_video": False}}))
    out = tmp_path / "run"
    r = _cli(["reconstruct", str(root), "--out", str(out), "--eval-split", "test", "--config", str(cfg), "--device", "cpu"])
    assert r.returncode == 0, r.stderr
    m = json.loads((out / "metrics.json").read_text())
    per = m["heldout"]["per_camera"]
    assert sorted(per) == ["1", "4"] and all(p["frames"] == 3 for p in per.values())
    assert m["heldout"]["cells"] == 6 and m["train"]["cells"] == 12
    assert "camera 1: PSNR" in r.stderr and "camera 4: PSNR" in r.stderr
    info = json.loads((out / "run.json").read_text())
    assert info["protocol"]["camera_ids"] == [1, 4]
    assert info["stages"]["tracks"]["report"]["source"] in ("flow", "rig")  # what `auto` chose is recorded
    assert m["files"]["preview_views"] == [1, 4]
    assert m["deform"]["appearance"]["trained_views"] == [0, 2, 3, 5]
    from recon.io.images import read_rgb

    assert read_rgb(out / "preview.png").shape == (3 * 2 * 48, 2 * 64, 3)  # 3 times x 2 test cameras; GT | render
