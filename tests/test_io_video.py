"""Folder of videos reader and write_video: round trips, cameras.json, bad input, atomic writes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from recon.cli import main
from recon.errors import InputError
from recon.io import LoadOptions, detect_kind, load_grid
from recon.io.video import DEFAULT_FOV_DEG, read_video, read_videos, write_video


def clip(n: int = 8, h: int = 32, w: int = 48, shift: int = 0) -> np.ndarray:
    """Smooth moving gradients (compress well, so the lossy round trip error stays small)."""
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([np.stack([(xx * 4 + 6 * t + shift) % 256, yy * 6 % 256, np.full_like(xx, 30 * t % 256)], -1)
                     for t in range(n)]).astype(np.uint8)


def test_round_trip_mp4(tmp_path: Path) -> None:
    a, b = clip(), clip(shift=40)
    assert write_video(tmp_path / "cam2.mp4", a, fps=12) == tmp_path / "cam2.mp4"
    write_video(tmp_path / "cam10.mp4", b, fps=12)
    assert detect_kind(tmp_path) == "videos"
    g = load_grid(tmp_path)
    assert g.shape == (2, 8, 32, 48) and g.view_names == ["cam2", "cam10"]  # natural order
    np.testing.assert_allclose(g.times, np.arange(8) / 12)
    assert g.meta["fps"] == 12 and g.meta["fps_from"] == "video" and g.cameras.w2c is None
    for got, want in ((g.images[0], a), (g.images[1], b)):
        assert np.abs(got.astype(int) - want).mean() < 6.0
    f = 0.5 * 48 / math.tan(math.radians(DEFAULT_FOV_DEG) / 2)
    np.testing.assert_allclose(g.cameras.K[0, 0], [[f, 0, 24], [0, f, 16], [0, 0, 1]])
    s = load_grid(tmp_path, LoadOptions(views=[1], frames="2:6:2", scale=0.5))
    assert s.shape == (1, 2, 16, 24) and s.view_names == ["cam10"]
    np.testing.assert_allclose(s.times, [2 / 12, 4 / 12])
    np.testing.assert_allclose(s.cameras.K[0, 0, 0, 0], f / 2)


@pytest.mark.parametrize("ext", [".mov", ".mkv", ".webm", ".avi"])
def test_other_containers(tmp_path: Path, ext: str) -> None:
    a = clip(n=4)
    p = write_video(tmp_path / f"v{ext}", a, fps=10)
    frames, fps, size = read_video(p)
    assert frames.shape == a.shape and size == (32, 48) and fps == pytest.approx(10)
    assert np.abs(frames.astype(int) - a).mean() < 8.0


def test_gif_round_trip_exact_for_few_colours(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    palette = rng.integers(0, 256, (16, 3), dtype=np.uint8)
    a = palette[rng.integers(0, 16, (5, 12, 20))]
    p = write_video(tmp_path / "v.gif", a, fps=20)
    frames, fps, size = read_video(p)
    np.testing.assert_array_equal(frames, a)
    assert fps == pytest.approx(20) and size == (12, 20)


def test_odd_size_is_padded_for_h264(tmp_path: Path) -> None:
    a = clip(n=3, h=31, w=45)
    frames, _, size = read_video(write_video(tmp_path / "odd.mp4", a, fps=5))
    assert size == (32, 46)
    assert np.abs(frames[:, :31, :45].astype(int) - a).mean() < 6.0


def test_cameras_json(tmp_path: Path) -> None:
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        write_video(tmp_path / name, clip(n=3), fps=10)
    K = [[40.0, 0, 23.5], [0, 41.0, 15.5], [0, 0, 1]]
    w2c = [np.eye(4).tolist() for _ in range(3)]
    w2c[0][0][3], w2c[2][0][3] = 0.5, -0.6  # camera centres at x = -0.5, 0, 0.6
    cams = {"fps": 25, "fov_deg": 90, "views": {"a.mp4": {"K": K, "w2c": w2c[0]}, "b": {"fov_deg": 53.13010235415598, "w2c": w2c[1]},
                                                "c": {"w2c": w2c[2]}}}
    (tmp_path / "cameras.json").write_text(json.dumps(cams))
    g = read_videos(tmp_path)
    np.testing.assert_allclose(g.times, np.arange(3) / 25)
    assert g.meta["fps_from"] == "cameras.json"
    np.testing.assert_allclose(g.cameras.K[0, 0], K)
    np.testing.assert_allclose(g.cameras.K[1, 0, 0, 0], 48.0)  # tan(53.13/2) = 0.5 -> f = 24 / 0.5
    np.testing.assert_allclose(g.cameras.K[2, 0, 0, 0], 24.0)  # the 90 deg default of the file
    np.testing.assert_allclose(g.cameras.w2c[2, 1], w2c[2])
    np.testing.assert_allclose(g.cameras.w2c[0, 2], w2c[0])
    assert g.central_view == 1  # the camera nearest the mean centre
    s = read_videos(tmp_path, LoadOptions(views=[2, 0]))  # cameras.json names all videos; a selection keeps its own
    np.testing.assert_allclose(s.cameras.K[1, 0], K)
    np.testing.assert_allclose(s.cameras.w2c[0, 0], w2c[2])


def test_frame_count_mismatch_truncates_with_warning(tmp_path: Path) -> None:
    write_video(tmp_path / "a.mp4", clip(n=6), fps=10)
    write_video(tmp_path / "b.mp4", clip(n=4), fps=10)
    with pytest.warns(UserWarning, match="truncated to the shortest"):
        g = read_videos(tmp_path)
    assert g.num_times == 4 and g.meta["truncated_from"] == {"a.mp4": 6, "b.mp4": 4}
    # a selection inside the common range decodes only what it needs and does not warn
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_videos(tmp_path, LoadOptions(frames="0:3")).num_times == 3


def _cli_error(path: Path, capsys: pytest.CaptureFixture) -> str:
    assert main(["info", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("recon: error: ") and err.count("\n") == 1, err
    return err


def test_bad_videos_through_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    d = tmp_path / "size"
    write_video(d / "a.mp4", clip(n=3), fps=10)
    write_video(d / "b.mp4", clip(n=3, w=64), fps=10)
    err = _cli_error(d, capsys)
    assert str(d / "b.mp4") in err and "64x32" in err and "48x32" in err

    d = tmp_path / "corrupt"
    write_video(d / "a.mp4", clip(n=3), fps=10)
    (d / "b.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    err = _cli_error(d, capsys)
    assert str(d / "b.mp4") in err and "cannot decode" in err

    d = tmp_path / "truncated"
    p = write_video(d / "a.mp4", clip(n=20), fps=10)
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    err = _cli_error(d, capsys)
    assert str(p) in err

    d = tmp_path / "gif"
    d.mkdir()
    (d / "a.gif").write_bytes(b"GIF89a\x10\x00")
    err = _cli_error(d, capsys)
    assert str(d / "a.gif") in err and "cannot decode" in err


@pytest.mark.parametrize(
    "cams, needles",
    [
        ({"K": [[1, 0, 0], [0, 1, 0]]}, ["[K]", "3x3"]),
        ({"views": {"a": {"K": [[float("nan"), 0, 1], [0, 1, 1], [0, 0, 1]]}}}, ["[views.a.K]", "NaN"]),
        ({"views": {"a": {"K": [[0, 0, 1], [0, 0, 1], [0, 0, 1]]}}}, ["[K]", "singular"]),
        ({"views": {"a": {"w2c": np.eye(4).tolist()}}}, ["[views.b.w2c]", "all or none"]),
        ({"views": {"a": {"w2c": [[1, 0, 0, 0]]}, "b": {"w2c": [[1, 0, 0, 0]]}}}, ["[views.a.w2c]", "4x4"]),
        ({"views": {"zz": {}}}, ["[views.zz]", "no video"]),
        ({"fov_deg": 200}, ["[fov_deg]", "(0, 180)"]),
        ({"fps": -1}, ["[fps]", "positive"]),
        ({"focal": 3}, ["[focal]", "unknown"]),
    ],
)
def test_bad_cameras_json(tmp_path: Path, capsys: pytest.CaptureFixture, cams: dict, needles: list[str]) -> None:
    for name in ("a.mp4", "b.mp4"):
        write_video(tmp_path / name, clip(n=2), fps=10)
    (tmp_path / "cameras.json").write_text(json.dumps(cams))
    err = _cli_error(tmp_path, capsys)
    assert str(tmp_path / "cameras.json") in err, err
    for n in needles:
        assert n in err, f"{n!r} not in {err!r}"


def test_reader_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        read_videos(tmp_path / "nope")
    with pytest.raises(InputError, match="no videos"):
        read_videos(tmp_path)
    write_video(tmp_path / "a.mp4", clip(n=2), fps=10)
    with pytest.raises(InputError, match="--views"):
        read_videos(tmp_path, LoadOptions(views=[1]))
    (tmp_path / "cameras.json").write_text("{")
    with pytest.raises(InputError, match="invalid JSON"):
        read_videos(tmp_path)


def test_write_video_validation_and_atomicity(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="uint8"):
        write_video(tmp_path / "x.mp4", np.zeros((2, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match=r"\[N, H, W, 3\]"):
        write_video(tmp_path / "x.mp4", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="suffix"):
        write_video(tmp_path / "x.png", np.zeros((2, 8, 8, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []

    # ffmpeg failing half way: no .mp4 (not even a partial one); a GIF fallback is written instead
    import imageio_ffmpeg

    def failing(path, *a, **k):
        def gen():
            Path(path).write_bytes(b"partial mp4")  # the encoder got going ...
            yield
            yield
            raise RuntimeError("encoder crashed")  # ... and dies on the second frame

        return gen()

    monkeypatch.setattr(imageio_ffmpeg, "write_frames", failing)
    with pytest.warns(UserWarning, match="ffmpeg failed"):
        out = write_video(tmp_path / "preview.mp4", clip(n=4), fps=10)
    assert out == tmp_path / "preview.gif"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["preview.gif"]
    assert read_video(out)[0].shape == (4, 32, 48, 3)

    # a failing GIF write (after ffmpeg failed too) leaves nothing behind
    def bad_save(*a, **k):
        raise OSError(28, "No space left on device")

    from PIL import Image

    monkeypatch.setattr(Image.Image, "save", bad_save)
    with pytest.raises(OSError), pytest.warns(UserWarning):
        write_video(tmp_path / "other.mp4", clip(n=2), fps=10)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["preview.gif"]
