"""sequence.json tells the truth about the exported world: its up axis agrees with the cameras'
on the bundled sample (y up there, not OpenCV's y down), times at full precision, the fps's source,
and the blur the splats were fitted with."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from recon.cli import main

REPO = Path(__file__).resolve().parents[1]
TINY = {"prune": {"iterations": 2}, "deform": {"iterations": 4, "warmup": 1, "mlp_width": 8, "mlp_depth": 1},
        "outputs": {"preview_video": False, "renders": False}}


def test_sequence_json_world_frame_on_the_bundled_sample(tmp_path):
    from recon.io.gridfolder import read_grid
    from recon.render.constants import LOW_PASS

    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps(TINY))
    run = tmp_path / "run"
    assert main(["reconstruct", "--out", str(run), "--config", str(cfg), "--device", "cpu"]) == 0
    man = json.loads((run / "ply" / "sequence.json").read_text())
    grid = read_grid(REPO / "data" / "sample")
    w = man["world"]
    assert w["up"] == [0.0, 1.0, 0.0] and "world_up" in w["up_source"] and w["handedness"] == "right-handed"
    # the cameras agree: their mean up axis (-y of each OpenCV camera, in world coordinates)
    c2w = np.linalg.inv(grid.cameras.w2c[:, 0])
    cam_up = -c2w[:, :3, 1].mean(0)
    cam_up /= np.linalg.norm(cam_up)
    assert float(cam_up @ np.array(w["up"])) > 0.9
    assert np.allclose(w["cameras_mean_up"], cam_up, atol=1e-4)
    assert man["times"] == grid.times.tolist()  # float64, not the checkpoint's float32
    assert "playback default" in man["fps_source"]
    assert man["render"]["screen_low_pass_px2"] == LOW_PASS and man["render"]["opacity_compensation"] is False
    assert "world.up" in man["coordinates"]
    # `recon export` writes the same times (the checkpoint keeps them in float64) and the same up axis
    assert main(["export", str(run), "--out", str(tmp_path / "e")]) == 0
    again = json.loads((tmp_path / "e" / "ply" / "sequence.json").read_text())
    assert again["times"] == grid.times.tolist()
    assert float(np.array(again["world"]["up"]) @ cam_up) > 0.9


def test_metrics_say_which_geometry_they_describe(tmp_path):
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps(TINY))
    run = tmp_path / "run"
    assert main(["reconstruct", "--out", str(run), "--config", str(cfg), "--device", "cpu"]) == 0
    m = json.loads((run / "metrics.json").read_text())
    assert "dp_i^v" in m["geometry"]
    ex = m["exported_geometry"]
    assert "no per-view offsets" in ex["what"] and ex["train_psnr_mean"] > 5 and ex["heldout_psnr_mean"] > 5
    # the model with offsets and colour response fits its training cells at least as well as the export
    assert m["train"]["psnr_mean"] >= ex["train_psnr_mean"] - 0.5
