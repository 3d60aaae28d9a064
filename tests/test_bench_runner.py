"""Runner, evaluation and report plumbing, with the pipeline replaced by an exact GT scene.

The stand-in fit builds the splats from the ground-truth depth of a *static* synthetic scene
(identity deformation is then the truth), so the geometric metrics have known answers: no
floaters, zero motion error, Chamfer at the pixel-spacing level. It only exercises the bench;
it is never reported as a result.
"""

import json

import numpy as np
import pytest
import torch

from recon.bench import runner as R
from recon.bench.consistency import sfm_consistency
from recon.bench.report import markdown_table, write_report
from recon.bench.suites import case_from_grid


@pytest.fixture(scope="module")
def case():
    from recon.synth import make_grid

    grid = make_grid("static", views=5, frames=2, size=(40, 40), seed=0, supersample=1)
    return case_from_grid("static-test", grid, (1,), {"scene": "static", "seed": 0, "inconsistency": 0.0})


def gt_scene(grid):
    """A DeformableScene whose canonical splats are the GT surface of every training view."""
    from recon.bench.metrics import unproject_depth
    from recon.model import DeformField, Splats, neighbour_log_scales
    from recon.model.scene import DeformableScene

    r, c = grid.ref_time, int(grid.central_view)
    wc = grid.cameras.w2c[c, r]
    pts, cols = [], []
    for v in range(grid.num_views):
        d = grid.extras["depth"][v, r]
        X = unproject_depth(d, grid.cameras.K[v, r], grid.cameras.w2c[v, r])
        pts.append(X @ wc[:3, :3].T + wc[:3, 3])
        cols.append(grid.images[v, r][d > 0] / 255.0)
    X = np.concatenate(pts)
    P = len(X)
    splats = Splats(torch.tensor(X, dtype=torch.float32), torch.tensor(neighbour_log_scales(X, factor=0.7)),
                    torch.full((P,), 4.0), torch.tensor(np.concatenate(cols), dtype=torch.float32))
    field = DeformField(torch.zeros(P, grid.num_views, 3), torch.tensor(X.mean(0)), 1.0, (0.0, 1.0), learn_view_offsets=False)
    poses = torch.tensor(grid.cameras.w2c @ np.linalg.inv(wc), dtype=torch.float32)
    return DeformableScene(splats, field, poses, torch.tensor(grid.cameras.K, dtype=torch.float32),
                           torch.tensor(grid.times, dtype=torch.float32), (grid.height, grid.width),
                           torch.tensor(np.linalg.inv(wc), dtype=torch.float32))


def test_run_bench_with_exact_scene(case, tmp_path, monkeypatch):
    monkeypatch.setattr(R, "fit", lambda grid, spec, settings, run_dir, tracks_path, tracking: (gt_scene(grid), {"stages": {"fit": 0.0}, "background": None}))
    settings = R.BenchSettings(consistency=False)
    results, sheet = R.run_bench("synthetic", [case], ["recon", "dust3r"], settings, tmp_path)
    assert results["methods"]["dust3r"]["status"] == "not available"
    assert "needs --dust3r-repo" in results["methods"]["dust3r"]["reason"]
    run = next(r for r in results["runs"] if r["method"] == "recon")
    assert run["status"] == "ok", run.get("error")
    m = run["metrics"]
    assert m["floater_ratio"] < 0.01
    assert m["track_error"] == pytest.approx(0.0, abs=1e-6) and m["track_matched"] > 100
    assert m["track_error_static"] == pytest.approx(0.0, abs=1e-6)  # the static scene does not move
    assert m["accuracy"] < 0.05  # on the surface, up to sampling
    assert m["psnr"] > 15.0 and m["train_psnr"] > 15.0
    assert m["masked_psnr"] > 10.0 and m["background_psnr"] > 10.0
    assert 0.5 < m["alpha_iou"] <= 1.0
    assert m["gaussians"] > 1000 and m["wall_s"] >= 0.0
    assert len(run["per_cell"]) == 2  # 1 held-out view x 2 times
    md = write_report(tmp_path, results, sheet)
    assert "| recon |" in md and "not available (needs --dust3r-repo" in md
    saved = json.loads((tmp_path / "results.json").read_text())  # strict JSON: NaN became null
    assert saved["runs"][0]["case"] == "static-test"
    for f in ("metric_bars.png", "psnr_per_cell.png", "contact_sheet.png", "novel_views.png", "table.md"):
        assert (tmp_path / f).is_file()
    novel = sheet["static-test"]["novel:recon"]  # three novel views side by side, not blank
    assert novel.dtype == np.uint8 and novel.shape[1] == 3 * novel.shape[0] * case.train.width // case.train.height
    assert novel.std() > 5


def test_failed_method_is_reported_not_raised(case, tmp_path, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("stage exploded")

    monkeypatch.setattr(R, "fit", boom)
    results, _ = R.run_bench("synthetic", [case], ["recon"], R.BenchSettings(consistency=False), tmp_path)
    assert results["runs"][0]["status"] == "failed" and "stage exploded" in results["runs"][0]["error"]
    assert results["methods"]["recon"]["status"] == "failed"


def test_table_mean_std_and_missing_columns():
    summ = {"a": {k: {"mean": None, "std": None, "n": 0} for k in ("psnr", "ssim")},
            "b": {k: {"mean": None, "std": None, "n": 0} for k in ("psnr", "ssim")}}
    summ["a"]["psnr"] = {"mean": 20.0, "std": 1.5, "n": 2}
    summ["b"]["psnr"] = {"mean": 25.0, "std": 0.0, "n": 1}
    from recon.bench import report

    full = {m: {k: summ[m].get(k, {"mean": None, "std": None, "n": 0}) for k, *_ in report.METRICS} for m in summ}
    md = markdown_table(full, ["a", "b", "c"], {"c": {"status": "not available", "reason": "not available (needs x)"}})
    assert "| a | 20.00 ± 1.50 |" in md and "| b | 25.00 |" in md and "not available (needs x)" in md
    assert "SSIM" not in md  # a column nobody has is left out


def test_sfm_consistency_separates_consistent_from_unrelated_views():
    from recon.synth import make_grid

    g = make_grid("orbit", views=8, frames=1, size=(128, 128), seed=0, supersample=1)
    good = sfm_consistency(g.images[:, 0], g.cameras.K[:, 0])
    assert good["registration_rate"] >= 0.75 and good["reprojection_px"] < 1.0
    noise = np.random.default_rng(0).integers(0, 256, (4, 48, 48, 3), dtype=np.uint8)  # unrelated views
    bad = sfm_consistency(noise, g.cameras.K[:4, 0])
    assert bad["registration_rate"] <= 0.25


@pytest.mark.parametrize("args, msg", [
    (["--suite", "nope"], "unknown suite"),
    (["--suite", "generated"], "needs --grids"),
    (["--methods", "recon,bogus"], "unknown method"),
    (["--config", "/nonexistent/cfg.json"], "config file does not exist"),
])
def test_cli_bad_input_is_exit_2(tmp_path, capsys, args, msg):
    from recon.cli import main

    assert main(["bench", "--out", str(tmp_path / "b"), *args]) == 2
    err = capsys.readouterr().err
    assert msg in err and "Traceback" not in err


def test_heldout_split_uses_clean_truth_and_protects_the_central_view():
    from recon.errors import InputError
    from recon.synth import make_grid

    g = make_grid("orbit", views=5, frames=2, size=(16, 16), seed=0, inconsistency=0.8, supersample=1)
    c = case_from_grid("x", g, (1,), {})
    assert c.train.num_views == 4 and c.eval_names == ["arc_01"]
    assert np.array_equal(c.eval_images[0], g.extras["clean"][1])  # consistent truth, not the perturbed input
    assert not np.array_equal(c.eval_images[0], g.images[1])
    assert np.array_equal(c.train.images[1], g.images[2])
    assert c.train.view_names[c.train.central_view] == "arc_02"
    with pytest.raises(InputError, match="central"):
        case_from_grid("x", g, (2,), {})


def test_case_tracking_is_used_unless_overridden(case, tmp_path, monkeypatch):
    """A case names the tracking that suits it (Panoptic: rig tracks on MVS depth); --tracks/--depth override."""
    import dataclasses

    seen = []

    def fake_fit(grid, spec, settings, run_dir, tracks_path, tracking):
        seen.append(tracking)
        return gt_scene(grid), {"stages": {"fit": 0.0}, "background": None}

    monkeypatch.setattr(R, "fit", fake_fit)
    rig_case = dataclasses.replace(case, tracks="rig", depth="mvs")
    results, _ = R.run_bench("panoptic", [rig_case], ["recon"], R.BenchSettings(consistency=False), tmp_path / "a")
    assert seen[-1] == ("rig", "mvs") and results["runs"][0]["tracking"] == {"tracks": "rig", "depth": "mvs"}
    R.run_bench("panoptic", [rig_case], ["recon"], R.BenchSettings(config={"tracking": {"tracks": "flow", "depth": "gt"}}, consistency=False), tmp_path / "b")
    assert seen[-1] == ("flow", "gt")
    R.run_bench("synthetic", [case], ["recon"], R.BenchSettings(consistency=False), tmp_path / "c")
    assert seen[-1] == ("flow", "auto")


def test_panoptic_case_uses_rig_tracks_and_test_cameras():
    from recon.bench.suites import default_panoptic_root, panoptic_cases, suite_options

    if not (default_panoptic_root() / "train_meta.json").is_file():
        pytest.skip("needs ../shared/data/panoptic_basketball (or $RECON_SHARED_DATA)")
    o = suite_options(True, panoptic_frames="0:2", panoptic_scale=0.1)
    (c,) = panoptic_cases(o)
    assert (c.tracks, c.depth) == ("rig", "mvs")
    assert c.eval_names == ["0", "10"] and c.eval_images.shape[:2] == (2, 2)
    assert c.train.num_views == 8 and not {0, 10} & set(c.tags["cameras"])


def test_config_overrides_and_tracking_reach_the_pipeline(case, tmp_path, monkeypatch):
    from recon import pipeline as P

    seen = {}

    class Scene:
        background = torch.tensor([0.25, 0.5, 0.75])  # what the deform stage learned

    class Res:
        scene = Scene()
        metrics = {"seconds": {"deform": 1.0}}

    def fake(grid, cfg, run_dir, device=None):
        seen["cfg"] = cfg
        return Res()

    monkeypatch.setattr(P, "reconstruct", fake)
    settings = R.BenchSettings(config={"deform": {"view_correction": "free", "iterations": 7}})
    _, info = R.fit(case.train, R.METHODS["no-view-offsets"], settings, tmp_path, None, ("rig", "mvs"))
    np.testing.assert_allclose(info["background"], [0.25, 0.5, 0.75])  # held-out views are scored on it
    cfg = seen["cfg"]
    assert cfg.deform.view_correction == "free" and cfg.deform.iterations == 7  # the overrides
    assert not cfg.canonical.view_offsets  # the method's own switch still applies
    assert (cfg.tracking.tracks, cfg.tracking.depth) == ("rig", "mvs")


def test_bench_dotted_flags_reach_every_fit(tmp_path, monkeypatch):
    """`recon bench --deform.iterations 7 --tracking.tracks rig --threads 1`: the config fields
    land in every method's pipeline config (the same flags as `recon reconstruct`); a bad value
    is refused before any work; --holdout has reconstruct's syntax (views only)."""
    from recon.cli import main
    from recon.synth.make import make_grid
    from recon.io.gridfolder import write_grid

    grid_dir = tmp_path / "g"
    write_grid(make_grid("orbit", views=4, frames=2, size=(32, 32), seed=0), grid_dir)
    seen = {}

    def fake_fit(grid, spec, settings, run_dir, tracks_path, tracking=("flow", "auto")):
        seen["settings"], seen["tracking"] = settings, tracking
        raise RuntimeError("stop here")

    monkeypatch.setattr(R, "fit", fake_fit)
    args = ["bench", "--out", str(tmp_path / "b"), "--suite", "custom", "--grids", str(grid_dir), "--methods", "recon",
            "--holdout", "views=1", "--deform.iterations", "7", "--tracking.tracks", "rig", "--threads", "1",
            "--tracking.keyframes", "5"]
    main(args)
    s = seen["settings"]
    assert s.config["deform"]["iterations"] == 7 and s.threads == 1
    assert R.sampling(s) == (5, 2)  # the flag, not the settings' default keyframes
    assert seen["tracking"][0] == "rig"
    assert main(["bench", "--out", str(tmp_path / "c"), "--suite", "custom", "--grids", str(grid_dir),
                 "--deform.iterations", "-3"]) == 2
    assert main(["bench", "--out", str(tmp_path / "d"), "--suite", "custom", "--grids", str(grid_dir),
                 "--holdout", "views=1,times=0"]) == 2


def test_seedlike_cases_have_mono_sim_depth_and_novel_cameras():
    from recon.bench.suites import NOVEL_CAMERAS, SEEDLIKE_QUICK, build_cases, suite_options

    o = suite_options(True, "seedlike", size=(24, 32), frames=2, scenes=("orbit",))
    assert o.views == SEEDLIKE_QUICK["views"] and o.inconsistency == (0.6,) and o.seeds == (0, 1)
    cases = build_cases("seedlike", o)
    assert [c.name for c in cases] == ["orbit-s0-inc0.6", "orbit-s1-inc0.6"]
    c = cases[0]
    assert c.depth == "mono-sim" and c.train.num_views == 8
    E = len(NOVEL_CAMERAS)
    assert c.novel_images.shape == (E, 2, 24, 32, 3) and c.novel_masks.shape == (E, 2, 24, 32)
    assert c.novel_masks.any() and (~c.novel_masks).any()
    # the novel cameras are off the grid: none coincides with a grid camera
    centres = lambda w: -np.einsum("...ji,...j->...i", w[..., :3, :3], w[..., :3, 3])
    d = np.linalg.norm(centres(c.novel_w2c[:, 0])[:, None] - centres(c.full.cameras.w2c[:, 0])[None], axis=-1)
    assert d.min() > 0.1


def test_train_metrics_composite_the_scenes_own_background_once(case):
    """A scene that learned its background is scored on it once (scene.render composites it), the
    same as compositing that colour behind a scene without one."""
    from recon.bench.evaluate import train_fit_metrics

    bg = np.array([0.6, 0.5, 0.4], np.float32)
    plain = gt_scene(case.train)
    plain.splats.opacity_logits.data.fill_(0.0)  # half transparent: the background shows
    learned = gt_scene(case.train)
    learned.splats.opacity_logits.data.fill_(0.0)
    learned.background = torch.from_numpy(bg)
    a = train_fit_metrics(case, plain, bg)
    b = train_fit_metrics(case, learned, bg)
    assert b["train_psnr"] == pytest.approx(a["train_psnr"], abs=1e-4)
