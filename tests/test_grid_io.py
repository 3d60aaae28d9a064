"""Grid folder: exact round trip, selection options, and every bad input -> exit code 2 naming the file/field."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from recon.cli import main
from recon.grid import Cameras, FrameGrid
from recon.io import LoadOptions, load_grid
from recon.io import gridfolder
from recon.io.gridfolder import read_grid, write_grid


def make_grid(V: int = 3, T: int = 4, H: int = 12, W: int = 16, seed: int = 0) -> FrameGrid:
    rng = np.random.default_rng(seed)
    K = np.array([[[20.0 + 0.1 * v, 0.0, W / 2 + 0.25], [0.0, 21.5, H / 2 - 0.125], [0.0, 0.0, 1.0]] for v in range(V)])
    ang = np.linspace(-0.3, 0.3, V)
    w2c = np.tile(np.eye(4), (V, T, 1, 1))
    for v, a in enumerate(ang):
        c, s = np.cos(a), np.sin(a)
        w2c[v, :, :3, :3] = [[c, 0, s], [0, 1, 0], [-s, 0, c]]
        w2c[v, :, :3, 3] = [0.1 * v, -0.2, 3.0 + 1 / 3]
    w2c[:, :, 0, 3] += np.linspace(0, 0.01, T)  # per-frame variation must survive too
    return FrameGrid(
        images=rng.integers(0, 256, (V, T, H, W, 3), dtype=np.uint8),
        cameras=Cameras(K=K, w2c=w2c),
        times=np.linspace(0.0, 1.0, T) / 3.0,
        masks=rng.random((V, T, H, W)) > 0.5,
        ref_time=1,
        central_view=V - 1,
        view_names=[f"cam{v}" for v in range(V)],
        meta={"source": "unit", "nested": {"a": [1, 2.5]}},
        extras={"depth": rng.random((V, T, H, W)).astype(np.float32), "ids": rng.integers(0, 9, (V, T, 5))},
    )


def test_round_trip_exact(tmp_path: Path) -> None:
    g = make_grid()
    write_grid(g, tmp_path / "g")
    r = read_grid(tmp_path / "g")
    np.testing.assert_array_equal(r.images, g.images)
    np.testing.assert_array_equal(r.masks, g.masks)
    np.testing.assert_array_equal(r.cameras.K, g.cameras.K)
    np.testing.assert_array_equal(r.cameras.w2c, g.cameras.w2c)
    np.testing.assert_array_equal(r.times, g.times)
    assert r.extras.keys() == g.extras.keys()
    for k in g.extras:
        assert r.extras[k].dtype == g.extras[k].dtype
        np.testing.assert_array_equal(r.extras[k], g.extras[k])
    assert r.meta == g.meta and r.view_names == g.view_names
    assert (r.ref_time, r.central_view) == (1, 2)  # V = 3
    # without masks, poses and extras
    g2 = FrameGrid(images=g.images, cameras=Cameras(K=g.cameras.K), times=g.times)
    write_grid(g2, tmp_path / "g2")
    r2 = read_grid(tmp_path / "g2")
    assert r2.masks is None and r2.cameras.w2c is None and r2.extras == {}
    np.testing.assert_array_equal(r2.images, g.images)


def test_load_options_select_and_scale(tmp_path: Path) -> None:
    g = make_grid(V=4, T=5, H=16, W=24)
    write_grid(g, tmp_path / "g")
    r = load_grid(tmp_path / "g", LoadOptions(views=[3, 1], frames="1:5:2", scale=0.5))
    assert r.shape == (2, 2, 8, 12)
    np.testing.assert_array_equal(r.times, g.times[[1, 3]])
    np.testing.assert_allclose(r.cameras.K[0, 0], g.cameras.K[3, 1] * [[0.5], [0.5], [1]])
    np.testing.assert_array_equal(r.cameras.w2c, g.cameras.w2c[[3, 1]][:, [1, 3]])
    assert r.view_names == ["cam3", "cam1"] and r.extras["depth"].shape == (2, 2, 8, 12)
    assert r.extras["ids"].shape == (2, 2, 5)  # not image-aligned: kept as is by the resize


def test_failed_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    g = make_grid()
    out = tmp_path / "g"
    write_grid(make_grid(seed=1), out)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    calls = {"n": 0}
    real = gridfolder.write_png

    def failing(path, image):
        calls["n"] += 1
        if calls["n"] == 5:
            raise OSError(28, "No space left on device")
        real(path, image)

    monkeypatch.setattr(gridfolder, "write_png", failing)
    with pytest.raises(OSError):
        write_grid(g, out)
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before  # the old grid is intact
    np.testing.assert_array_equal(read_grid(out).images, make_grid(seed=1).images)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g"]  # no temporary left behind
    monkeypatch.setattr(gridfolder, "write_png", real)
    with pytest.raises(OSError):  # and a fresh target never appears half-written
        monkeypatch.setattr(gridfolder, "write_png", failing)
        calls["n"] = 0
        write_grid(g, tmp_path / "new")
    assert not (tmp_path / "new").exists()


# --- bad input through the CLI ------------------------------------------------------------------
def run_info(path: Path, capsys: pytest.CaptureFixture) -> tuple[int, str]:
    code = main(["info", str(path)])
    return code, capsys.readouterr().err


def expect_error(path: Path, capsys: pytest.CaptureFixture, *needles: str) -> str:
    code, err = run_info(path, capsys)
    assert code == 2, err
    assert err.startswith("recon: error: ") and err.count("\n") == 1, err  # one line, no traceback
    for n in needles:
        assert n in err, f"{n!r} not in {err!r}"
    return err


@pytest.fixture
def grid_dir(tmp_path: Path) -> Path:
    return write_grid(make_grid(V=2, T=2, H=8, W=8), tmp_path / "g")


def _edit_json(root: Path, fn) -> Path:
    f = root / "grid.json"
    head = json.loads(f.read_text())
    fn(head)
    f.write_text(json.dumps(head))
    return f


def test_info_ok(grid_dir: Path, capsys: pytest.CaptureFixture) -> None:
    code, err = run_info(grid_dir, capsys)
    assert code == 0, err


def test_corrupt_image(grid_dir: Path, capsys: pytest.CaptureFixture) -> None:
    f = grid_dir / "view_01" / "frame_0001.png"
    f.write_bytes(b"this is not a png" * 10)
    expect_error(grid_dir, capsys, str(f), "cannot decode")


def test_truncated_image(grid_dir: Path, capsys: pytest.CaptureFixture) -> None:
    f = grid_dir / "view_00" / "frame_0001.png"
    f.write_bytes(f.read_bytes()[:60])
    expect_error(grid_dir, capsys, str(f), "truncated")


def test_missing_view_folder(grid_dir: Path, capsys: pytest.CaptureFixture) -> None:
    import shutil

    shutil.rmtree(grid_dir / "view_01")
    expect_error(grid_dir, capsys, str(grid_dir / "view_01"), "missing view folder")


def test_missing_frame(grid_dir: Path, capsys: pytest.CaptureFixture) -> None:
    f = grid_dir / "view_00" / "frame_0001.png"
    f.unlink()
    expect_error(grid_dir, capsys, str(f), "missing frame")


def test_missing_mask(grid_dir: Path, capsys: pytest.CaptureFixture) -> None:
    f = grid_dir / "view_01" / "mask_0000.png"
    f.unlink()
    expect_error(grid_dir, capsys, str(f), "does not exist")


def test_mismatched_image_size(grid_dir: Path, capsys: pytest.CaptureFixture) -> None:
    from recon.io.images import write_png

    f = grid_dir / "view_01" / "frame_0000.png"
    write_png(f, np.zeros((9, 8, 3), np.uint8))
    expect_error(grid_dir, capsys, str(f), "8x9", "8x8")


@pytest.mark.parametrize(
    "edit, needles",
    [
        (lambda h: h["cameras"]["K"][0][1].__setitem__(0, [float("nan"), 0, 4]), ["K]", "NaN"]),
        (lambda h: h["cameras"]["K"][1][0].__setitem__(0, [0.0, 0, 4]), ["[K]", "singular"]),
        (lambda h: h["cameras"]["K"].pop(), ["[K]", "expected shape"]),
        (lambda h: h["cameras"]["w2c"][0][0][0].__setitem__(0, 7.0), ["[w2c[0][0]]", "orthonormal"]),
        (lambda h: h["cameras"].__setitem__("K", "abc"), ["[cameras.K]", "list"]),
        (lambda h: h.pop("views"), ["[views]", "missing field"]),
        (lambda h: h.pop("cameras"), ["[cameras]", "missing field"]),
        (lambda h: h.__setitem__("height", "8"), ["[height]", "expected an integer"]),
        (lambda h: h.__setitem__("width", -3), ["[width]", ">= 1"]),
        (lambda h: h.__setitem__("times", [0.0, "x"]), ["[times]", "numbers"]),
        (lambda h: h.__setitem__("times", [0.0, 1.0, 2.0]), ["[K]", "expected shape"]),
        (lambda h: h.__setitem__("ref_time", 5), ["[ref_time]"]),
        (lambda h: h.__setitem__("ref_time", "first"), ["[ref_time]", "integer"]),
        (lambda h: h.__setitem__("format", "other"), ["[format]"]),
        (lambda h: h.__setitem__("version", 99), ["[version]", "newer"]),
        (lambda h: h.__setitem__("view_names", ["a"]), ["[view_names]"]),
    ],
)
def test_bad_grid_json(grid_dir: Path, capsys: pytest.CaptureFixture, edit, needles) -> None:
    f = _edit_json(grid_dir, edit)
    err = expect_error(grid_dir, capsys, *needles)
    if "missing frame" not in needles:
        assert str(f) in err


def test_invalid_json(grid_dir: Path, capsys: pytest.CaptureFixture) -> None:
    (grid_dir / "grid.json").write_text("{ not json")
    expect_error(grid_dir, capsys, str(grid_dir / "grid.json"), "invalid JSON")


def test_empty_folder_and_missing_path(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "empty").mkdir()
    expect_error(tmp_path / "empty", capsys, str(tmp_path / "empty"), "empty")
    expect_error(tmp_path / "nope", capsys, str(tmp_path / "nope"), "does not exist")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("x")
    expect_error(tmp_path / "junk", capsys, str(tmp_path / "junk"), "unrecognised")


def test_bad_options(grid_dir: Path) -> None:
    from recon.errors import InputError

    with pytest.raises(InputError, match="--views"):
        load_grid(grid_dir, LoadOptions(views=[5]))
    with pytest.raises(InputError, match="--frames"):
        load_grid(grid_dir, LoadOptions(frames="a:b"))
    with pytest.raises(InputError, match="--scale"):
        load_grid(grid_dir, LoadOptions(scale=0.0))
