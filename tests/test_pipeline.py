"""recon.pipeline end to end on a tiny synthetic grid: outputs, ply round trip, resume equality,
bad input (InputError, nothing lost)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from recon.errors import InputError
from recon.config import ReconstructConfig, config_from_dict
from recon.pipeline import Progress, reconstruct
from recon.run import RUN_VERSION

TINY = {"prune": {"iterations": 8}, "deform": {"iterations": 24, "warmup": 4, "mlp_width": 32, "mlp_depth": 2},
        "holdout_views": [3], "holdout_times": [2], "threads": 1}


@pytest.fixture(scope="module")
def grid():
    from recon.synth import make_grid

    return make_grid("orbit", views=4, frames=3, size=(32, 32), seed=0, supersample=1)


@pytest.fixture(scope="module")
def run(grid, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "full"
    return reconstruct(grid, config_from_dict(TINY), out)


def test_outputs_exist_and_are_consistent(run, grid):
    d = run.run_dir
    info = json.loads((d / "run.json").read_text())
    assert info["format"] == "recon-run" and info["version"] == RUN_VERSION
    assert all(info["stages"][s]["status"] == "done" for s in ("tracks", "canonical", "prune", "deform", "outputs"))
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["deform"]["iterations"] == 24
    for s in ("tracks", "canonical", "prune", "deform"):
        assert (d / "checkpoints" / f"{s}.safetensors").is_file()
    assert len(list((d / "renders").glob("view_*_time_*.png"))) == grid.num_views * grid.num_times
    assert (d / "preview.png").is_file()
    m = json.loads((d / "metrics.json").read_text())
    assert m["heldout"]["cells"] == 1 and m["train"]["cells"] == grid.num_views * grid.num_times - 1
    assert [c for c in m["cells"] if c["split"] == "heldout"][0]["view"] == 3
    assert m["train"]["psnr_mean"] > 15.0
    assert m["gaussians"]["final"] == run.scene.splats.num
    assert "floaters" in m and m["floaters"]["canonical"] is not None
    assert set(m["seconds"]) >= {"tracks", "canonical", "prune", "deform", "outputs"}
    # a synthetic grid names no background: the deform stage learned one, and the run says so
    assert m["background"]["renders"].startswith("learned rgb") and run.scene.background is not None
    assert m["deform"]["background"] == pytest.approx(run.scene.background.tolist(), abs=1e-4)
    man = json.loads((d / "ply" / "sequence.json").read_text())
    assert man["count"] == grid.num_times and man["num_gaussians"] == run.scene.splats.num


def test_ply_loads_with_plyfile_and_round_trips_bit_exactly(run, grid, tmp_path):
    from plyfile import PlyData

    from recon.io.ply import read_gaussians_ply, write_gaussian_record

    for j in range(grid.num_times):
        path = run.run_dir / "ply" / f"frame_{j:04d}.ply"
        v = PlyData.read(str(path))["vertex"]
        xyz = np.stack([v["x"], v["y"], v["z"]], 1)
        expect = run.scene.positions_at(j).detach().numpy().astype(np.float32)
        assert np.array_equal(xyz, expect)
        g = read_gaussians_ply(path)
        assert np.array_equal(g.means, xyz)
        assert np.array_equal(g.opacity_logits, np.asarray(v["opacity"]))
        assert np.array_equal(g.opacity_logits, run.scene.splats.opacity_logits.detach().numpy())
        assert g.is_isotropic
        assert np.array_equal(g.isotropic_log_scale(), run.scene.splats.log_scales.detach().numpy())
        write_gaussian_record(tmp_path / "again.ply", g)  # read -> write reproduces the file byte for byte
        assert (tmp_path / "again.ply").read_bytes() == path.read_bytes()


class _StopBefore(Progress):
    def __init__(self, stage: str):
        self.stage = stage

    def stage_start(self, name, total):
        if name == self.stage:
            raise KeyboardInterrupt


def test_resume_after_canonical_equals_uninterrupted(run, grid, tmp_path):
    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        reconstruct(grid, config_from_dict(TINY), out, progress=_StopBefore("prune"))
    info = json.loads((out / "run.json").read_text())
    assert info["stages"]["canonical"]["status"] == "done" and info["stages"]["prune"]["status"] == "interrupted"
    assert not (out / "metrics.json").exists()
    res = reconstruct(grid, ReconstructConfig(), out, resume=True)  # the saved config is used
    a = json.loads((run.run_dir / "metrics.json").read_text())
    b = json.loads((out / "metrics.json").read_text())
    assert [c["psnr"] for c in a["cells"]] == [c["psnr"] for c in b["cells"]]
    assert torch.equal(res.scene.splats.means, run.scene.splats.means)
    assert (run.run_dir / "ply" / "frame_0001.ply").read_bytes() == (out / "ply" / "frame_0001.ply").read_bytes()


def test_existing_run_needs_resume_and_incompatible_version_is_refused(run, grid, tmp_path):
    with pytest.raises(InputError, match="--resume"):
        reconstruct(grid, config_from_dict(TINY), run.run_dir)
    old = tmp_path / "old"
    old.mkdir()
    (old / "run.json").write_text(json.dumps({"format": "recon-run", "version": RUN_VERSION + 99, "stages": {}}))
    (old / "keep.txt").write_text("precious")
    for resume in (False, True):
        with pytest.raises(InputError, match="version"):
            reconstruct(grid, config_from_dict(TINY), old, resume=resume)
    assert sorted(p.name for p in old.iterdir()) == ["keep.txt", "run.json"]
    assert (old / "keep.txt").read_text() == "precious"


def test_bad_grids_raise_input_error_before_writing(grid, tmp_path):
    one = grid.subset(views=[0], times=[0])
    with pytest.raises(InputError, match="too small"):
        reconstruct(one, config_from_dict({**TINY, "holdout_views": [], "holdout_times": []}), tmp_path / "a")
    black = grid.subset()
    black.images[:] = 0
    with pytest.raises(InputError, match="flat colour"):
        reconstruct(black, config_from_dict(TINY), tmp_path / "b")
    with pytest.raises(InputError, match="central view"):
        reconstruct(grid, config_from_dict({"holdout_views": [2], "holdout_times": [0]}), tmp_path / "c")
    assert not any((tmp_path / n).exists() for n in "abc")


def test_unseen_view_is_left_out_of_tracking(grid, tmp_path):
    cfg = config_from_dict({**TINY, "holdout_views": [0], "holdout_times": [0, 1, 2], "prune": {"enabled": False},
                            "outputs": {"renders": False, "preview_video": False, "ply": False}})
    res = reconstruct(grid, cfg, tmp_path / "unseen")
    m = res.metrics
    assert m["heldout"]["cells"] == 3 and all(c["split"] == "heldout" for c in m["cells"] if c["view"] == 0)
    assert torch.equal(res.scene.field.tracked_offsets[:, 0], torch.zeros_like(res.scene.field.tracked_offsets[:, 0]))
    assert m["heldout"]["psnr_mean"] > 12.0  # rendered from the given camera


def test_config_overrides_are_checked():
    cfg = config_from_dict({"deform": {"iterations": 5}, "seed": 3})
    assert cfg.deform.iterations == 5 and cfg.seed == 3 and cfg.prune.enabled
    with pytest.raises(InputError, match="unknown option"):
        config_from_dict({"deform": {"iters": 5}})
    with pytest.raises(InputError, match="integer"):
        config_from_dict({"seed": "x"})
