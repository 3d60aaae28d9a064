"""Round trip: a grid written by `recon generate` reconstructs with `recon reconstruct`, no manual steps.

The bundled generator makes 4 x 4 grids of 32 x 32 frames on a wide camera arc. DIS flow cannot
relate neighbouring views of such small frames ("too few tracks"), so ``tracks="auto"`` falls back to
rig tracks when the grid has camera poses (a generated grid's freeze-time column is its given,
calibrated conditioning).
"""

from __future__ import annotations

import json

import pytest

from recon.cli import main
from recon.errors import InputError


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _posed_grid_without_ground_truth():
    from recon.synth import make_grid

    g = make_grid("random", views=4, frames=2, size=(32, 32), seed=0)
    g.extras.clear()  # what `recon generate` writes: images and cameras, no synthetic surfaces or depth
    return g


def test_auto_tracks_fall_back_to_rig_when_flow_fails_on_a_posed_grid():
    from recon.tracking import build_tracks

    g = _posed_grid_without_ground_truth()
    with pytest.raises(InputError, match="too few tracks"):
        build_tracks(g, tracks="flow", keyframes=1, stride=4)
    tr = build_tracks(g, keyframes=1, stride=4)  # auto
    assert tr.num_points > 0 and tr.time_points is None  # rig tracks (no time tracks)
    g.cameras.w2c = None  # without poses there is nothing to fall back to: the flow error stands
    with pytest.raises(InputError):
        build_tracks(g, keyframes=1, stride=4)


def test_generate_then_reconstruct(tmp_path, capsys):
    from recon.diffusion.checkpoint import BUNDLED

    if not (BUNDLED / "config.json").is_file():
        pytest.skip("no bundled checkpoint in data/diffusion/")
    grid = tmp_path / "gen"
    assert main(["generate", "--out", str(grid), "--steps", "1", "--device", "cpu"]) == 0, capsys.readouterr().err
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps({"deform": {"iterations": 10, "warmup": 2, "mlp_width": 16, "mlp_depth": 1},
                               "outputs": {"preview_video": False}}))
    run = tmp_path / "run"
    assert main(["reconstruct", str(grid), "--out", str(run), "--config", str(cfg), "--device", "cpu", "--no-prune"]) == 0, \
        capsys.readouterr().err
    m = json.loads((run / "metrics.json").read_text())
    assert m["train"]["cells"] == 16 and m["train"]["psnr_mean"] > 10.0
