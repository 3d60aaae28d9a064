"""``recon batch``: one ordinary run per input, as Ray tasks (or sequentially with --workers 1);
failing inputs recorded, reruns skip finished runs, metrics equal to ``recon reconstruct``'s."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from recon.cli import main

TINY = {"prune": {"iterations": 4}, "deform": {"iterations": 12, "warmup": 2, "mlp_width": 16, "mlp_depth": 1},
        "outputs": {"preview_video": False, "renders": False}}
TIMING = {"seconds", "stage_seconds"}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[list[Path], Path]:
    from recon.io.gridfolder import write_grid
    from recon.synth import make_grid

    d = tmp_path_factory.mktemp("batch")
    grids = [write_grid(make_grid(scene, views=3, frames=2, size=(16, 16), seed=k, supersample=1), d / f"g{k}_{scene}")
             for k, scene in enumerate(("orbit", "bounce", "twist"))]
    bad = shutil.copytree(grids[0], d / "corrupt")
    (bad / "grid.json").write_text('{"views": 3, "times": [0, 1], "height": 16')  # truncated
    cfg = d / "tiny.json"
    cfg.write_text(json.dumps(TINY))
    return grids + [bad], cfg


def _metrics(run: Path) -> dict:
    m = json.loads((run / "metrics.json").read_text())
    return {k: v for k, v in m.items() if k not in TIMING}


def _batch(args, capsys) -> tuple[int, dict]:
    code = main(["batch", *args])
    capsys.readouterr()
    return code, json.loads((Path(args[args.index("--out") + 1]) / "batch.json").read_text())


def test_batch_sequential_records_failures_and_skips_finished_runs(inputs, tmp_path, capsys):
    paths, cfg = inputs
    out = tmp_path / "b"
    code, rep = _batch([*map(str, paths), "--out", str(out), "--config", str(cfg), "--workers", "1",
                        "--holdout", "views=2,times=1"], capsys)
    assert code == 2
    st = {k: r["status"] for k, r in rep["runs"].items()}
    assert st == {"g0_orbit": "done", "g1_bounce": "done", "g2_twist": "done", "corrupt": "failed"}, st
    assert "grid.json" in rep["runs"]["corrupt"]["error"] and "invalid JSON" in rep["runs"]["corrupt"]["error"]
    assert rep["runs"]["g0_orbit"]["heldout_psnr"] > 5
    table = (out / "batch.md").read_text()
    assert "| corrupt |" in table and "invalid JSON" in table
    # the same run by hand: identical metrics (same config incl. threads, same seed)
    direct = tmp_path / "direct"
    assert main(["reconstruct", str(paths[1]), "--out", str(direct), "--config", str(out / "batch_config.json"),
                 "--holdout", "views=2,times=1", "--device", "cpu"]) == 0
    assert _metrics(direct) == _metrics(out / "g1_bounce")
    # a rerun skips what finished; an interrupted run is resumed
    info = json.loads((out / "g2_twist" / "run.json").read_text())
    info["stages"]["outputs"]["status"] = "interrupted"
    (out / "g2_twist" / "run.json").write_text(json.dumps(info))
    (out / "g2_twist" / "metrics.json").unlink()
    code, rep = _batch([*map(str, paths[:3]), "--out", str(out), "--workers", "1"], capsys)
    assert code == 0
    assert rep["runs"]["g0_orbit"]["status"] == rep["runs"]["g1_bounce"]["status"] == "skipped"
    assert rep["runs"]["g2_twist"]["status"] == "done" and rep["runs"]["g2_twist"]["resumed"]


def test_batch_on_a_local_ray(inputs, tmp_path, capsys):
    pytest.importorskip("ray")
    paths, cfg = inputs
    lst = tmp_path / "inputs.txt"
    lst.write_text("# three grids and a corrupt one\n" + "\n".join(str(p) for p in paths) + "\n")
    out = tmp_path / "ray"
    code, rep = _batch([str(lst), "--out", str(out), "--config", str(cfg), "--workers", "2"], capsys)
    assert code == 2
    assert sorted(r["status"] for r in rep["runs"].values()) == ["done", "done", "done", "failed"]
    assert "grid.json" in rep["runs"]["corrupt"]["error"]
    seq = tmp_path / "seq"
    main(["batch", *map(str, paths), "--out", str(seq), "--config", str(cfg), "--workers", "1"])
    capsys.readouterr()
    for name in ("g0_orbit", "g1_bounce", "g2_twist"):  # Ray tasks compute what a sequential run does
        assert _metrics(out / name) == _metrics(seq / name), name
    code, rep = _batch([str(lst), "--out", str(out), "--workers", "2"], capsys)
    assert code == 2 and sorted(r["status"] for r in rep["runs"].values()) == ["failed", "skipped", "skipped", "skipped"]


def test_batch_bad_arguments_are_one_line(inputs, tmp_path, capsys):
    paths, _ = inputs
    for args, needle in (([str(tmp_path / "nope"), "--out", str(tmp_path / "o")], "does not exist"),
                         ([str(paths[0]), "--out", str(tmp_path / "o2"), "--workers", "0"], "--workers"),
                         ([str(paths[0]), "--out", str(tmp_path / "o3"), "--cpus-per-task", "0"], "--cpus-per-task")):
        assert main(["batch", *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], (args, err)


def test_bench_through_ray_equals_sequential(tmp_path):
    """`recon bench --ray`: the same fits as Ray tasks give the sequential run's numbers."""
    pytest.importorskip("ray")
    from recon.bench import runner as R
    from recon.bench.suites import case_from_grid
    from recon.synth import make_grid

    grid = make_grid("orbit", views=4, frames=2, size=(24, 24), seed=3, supersample=1)
    case = case_from_grid("orbit-tiny", grid, (1,), {"scene": "orbit", "seed": 3, "inconsistency": 0.0})
    timing = {"wall_s", "eval_s", "peak_rss_mb", "added_rss_mb", "peak_cuda_mb"}

    def numbers(workers):
        settings = R.BenchSettings(consistency=False, threads=1, workers=workers,
                                   config={**TINY, "tracking": {"tracks": "gt", "depth": "gt"}})
        results, sheet = R.run_bench("synthetic", [case], ["recon", "no-prune"], settings, tmp_path / f"w{workers}")
        assert [r["method"] for r in results["runs"]] == ["recon", "no-prune"]  # (case, method) order kept
        assert all(r["status"] == "ok" for r in results["runs"]), [r.get("error") for r in results["runs"]]
        assert "novel:recon" in sheet["orbit-tiny"]
        assert sheet["orbit-tiny"]["offgrid:recon"].shape == sheet["orbit-tiny"]["offgrid:gt"].shape  # off-grid cameras
        return [{k: v for k, v in r["metrics"].items() if k not in timing} for r in results["runs"]]

    assert numbers(2) == numbers(1)
