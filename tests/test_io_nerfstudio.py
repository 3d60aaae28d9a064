"""nerfstudio / D-NeRF transforms readers on small fixtures: grouping, conventions, bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from recon.cli import main
from recon.errors import InputError
from recon.io import LoadOptions, detect_kind, load_grid
from recon.io.nerfstudio import read_transforms


def c2w_gl(eye, target=(0.0, 0.0, 0.0), up=(0.0, 1.0, 0.0)) -> list:
    """Camera-to-world in OpenGL convention (camera looks along its -z, y up) looking at ``target``."""
    eye, target, up = map(np.asarray, (eye, target, up))
    back = eye - target
    back = back / np.linalg.norm(back)
    right = np.cross(up, back)
    right /= np.linalg.norm(right)
    M = np.eye(4)
    M[:3, 0], M[:3, 1], M[:3, 2], M[:3, 3] = right, np.cross(back, right), back, eye
    return M.tolist()


def _img(path: Path, w: int = 20, h: int = 10, rgba: bool = False, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (h, w, 4 if rgba else 3), dtype=np.uint8)
    if rgba:
        a[..., 3] = 0
        a[h // 4: 3 * h // 4, w // 4: 3 * w // 4, 3] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path)


def make_nerfstudio(root: Path, views: int = 2, times: int = 3, key: str | None = "camera_id") -> Path:
    frames = []
    for t in range(times):
        for v in range(views):
            f = {"file_path": f"images/v{v}_t{t}.png", "transform_matrix": c2w_gl([3.0 * v - 1.5, 0.5, 5.0]), "time": t / 10}
            if key:
                f[key] = v
            frames.append(f)
            _img(root / f["file_path"], seed=10 * t + v)
    frames[1]["fl_x"] = 33.0  # a per-frame value wins over the top level
    doc = {"fl_x": 30.0, "fl_y": 31.0, "cx": 10.5, "cy": 4.75, "w": 20, "h": 10, "camera_model": "OPENCV", "k1": 0.01, "frames": frames}
    (root / "transforms.json").write_text(json.dumps(doc))
    return root / "transforms.json"


def make_dnerf(root: Path, n: int = 4, split: str = "train") -> Path:
    frames = []
    for i in range(n):
        a = 2 * math.pi * i / n
        frames.append({"file_path": f"./{split}/r_{i:03d}", "rotation": 0.1, "time": i / (n - 1),
                       "transform_matrix": c2w_gl([4 * math.sin(a), 1.0, 4 * math.cos(a)])})
        _img(root / split / f"r_{i:03d}.png", w=16, h=16, rgba=True, seed=i)
    (root / f"transforms_{split}.json").write_text(json.dumps({"camera_angle_x": 0.69, "frames": frames}))
    return root / f"transforms_{split}.json"


def test_nerfstudio_multiview(tmp_path: Path) -> None:
    src = make_nerfstudio(tmp_path)
    assert detect_kind(tmp_path) == "nerfstudio" and detect_kind(src) == "nerfstudio"
    g = load_grid(tmp_path)
    assert g.shape == (2, 3, 10, 20) and g.meta["grouping"] == "view_key" and g.view_names == ["0", "1"]
    np.testing.assert_allclose(g.times, [0, 0.1, 0.2])
    assert g.meta["time_unit"] == "normalised" and g.meta["distortion_ignored"] == ["k1"]
    np.testing.assert_array_equal(g.images[1, 2], np.asarray(Image.open(tmp_path / "images/v1_t2.png")))
    np.testing.assert_allclose(g.cameras.K[0, 0], [[30, 0, 10.5], [0, 31, 4.75], [0, 0, 1]])
    assert g.cameras.K[1, 0, 0, 0] == 33.0 and g.cameras.K[1, 1, 0, 0] == 30.0
    # OpenGL c2w -> OpenCV w2c: the look-at target (origin) is in front, on the principal point,
    # and world "up" (+y in the OpenGL world) appears above the centre (smaller v).
    for v in range(2):
        K, w2c = g.cameras.K[v, 0], g.cameras.w2c[v, 0]
        for X, check in (([0, 0, 0], "centre"), ([0, 0.5, 0], "up")):
            pc = w2c[:3, :3] @ np.asarray(X, float) + w2c[:3, 3]
            uv = (K @ pc)[:2] / pc[2]
            assert pc[2] > 0
            if check == "centre":
                np.testing.assert_allclose(uv, K[:2, 2], atol=1e-9)
            else:
                assert uv[1] < K[1, 2] - 1
    # camera centre recovered from w2c equals the eye we placed
    np.testing.assert_allclose(np.linalg.inv(g.cameras.w2c[1, 0])[:3, 3], [1.5, 0.5, 5.0], atol=1e-12)
    s = load_grid(src, LoadOptions(views=[1], frames="1:", scale=0.5))
    assert s.shape == (1, 2, 5, 10) and s.view_names == ["1"]
    np.testing.assert_allclose(s.cameras.K[0, 0], [[15, 0, 5.25], [0, 15.5, 2.375], [0, 0, 1]])


def test_dnerf_monocular(tmp_path: Path) -> None:
    make_dnerf(tmp_path, n=4)
    make_dnerf(tmp_path, n=2, split="test")
    g = load_grid(tmp_path)
    assert g.shape == (1, 4, 16, 16) and g.meta["grouping"] == "monocular" and g.meta["kind"] == "dnerf"
    np.testing.assert_allclose(g.times, [0, 1 / 3, 2 / 3, 1])
    f = 0.5 * 16 / math.tan(0.69 / 2)
    np.testing.assert_allclose(g.cameras.K[0, :, 0, 0], f)
    np.testing.assert_allclose(g.cameras.K[0, :, :2, 2], 8.0)
    centres = np.linalg.inv(g.cameras.w2c[0])[:, :3, 3]  # a moving camera: one pose per time
    np.testing.assert_allclose(centres[1], [4, 1, 0], atol=1e-12)
    assert len({tuple(np.round(c, 6)) for c in centres}) == 4
    # RGBA: alpha -> masks, colour composited on white
    assert g.masks is not None and g.masks[0, 0].sum() == 8 * 8 and g.masks[0, 0, 8, 8] and not g.masks[0, 0, 0, 0]
    assert (g.images[0, 0][~g.masks[0, 0]] == 255).all()
    raw = np.asarray(Image.open(tmp_path / "train" / "r_000.png"))
    np.testing.assert_array_equal(g.images[0, 0, 8, 8], raw[8, 8, :3])
    t = load_grid(tmp_path, LoadOptions(split="test"))
    assert t.shape == (1, 2, 16, 16)


def test_pose_grouping_and_static(tmp_path: Path) -> None:
    make_nerfstudio(tmp_path / "a", views=3, times=2, key=None)
    doc = json.loads((tmp_path / "a" / "transforms.json").read_text())
    doc["frames"][1].pop("fl_x")  # same intrinsics for the pose key
    (tmp_path / "a" / "transforms.json").write_text(json.dumps(doc))
    g = load_grid(tmp_path / "a")
    assert g.shape == (3, 2, 10, 20) and g.meta["grouping"] == "pose"
    np.testing.assert_array_equal(g.images[2, 1], np.asarray(Image.open(tmp_path / "a" / "images/v2_t1.png")))
    for f in doc["frames"]:
        f.pop("time")
    (tmp_path / "a" / "transforms.json").write_text(json.dumps(doc))
    g = load_grid(tmp_path / "a")
    assert g.shape == (6, 1, 10, 20) and g.meta["grouping"] == "static"


def _run(src: Path, capsys: pytest.CaptureFixture) -> str:
    assert main(["info", str(src)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("recon: error: ") and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize(
    "edit, needles",
    [
        (lambda d: d["frames"][2].pop("transform_matrix"), ["[frames[2].transform_matrix]", "missing"]),
        (lambda d: d["frames"][0].__setitem__("transform_matrix", [[1, 0], [0, 1]]), ["[frames[0].transform_matrix]", "4x4"]),
        (lambda d: d["frames"][3]["transform_matrix"][0].__setitem__(3, float("nan")), ["[frames[3].transform_matrix]", "NaN"]),
        (lambda d: d["frames"][3]["transform_matrix"][0].__setitem__(0, 2.0), ["[frames[3].transform_matrix]", "orthonormal"]),
        (lambda d: d["frames"][1].pop("file_path"), ["[frames[1].file_path]", "missing"]),
        (lambda d: d["frames"][4].pop("time"), ["[frames[4].time]", "missing"]),
        (lambda d: d["frames"][4].__setitem__("time", "noon"), ["[frames[4].time]", "finite number"]),
        (lambda d: d["frames"][0].pop("camera_id"), ["[frames[0].camera_id]", "view key"]),
        (lambda d: d["frames"][5].__setitem__("camera_id", 0), ["two frames for view 0"]),
        (lambda d: d["frames"].pop(), ["no frame for view 1 at time 0.2"]),
        (lambda d: [d.pop("fl_x"), d["frames"][0].pop("fl_x", None)], ["[frames[0].fl_x]", "missing intrinsics"]),
        (lambda d: d.__setitem__("fl_y", 0), ["[fl_y]", "positive"]),
        (lambda d: d.__setitem__("camera_model", "OPENCV_FISHEYE"), ["[camera_model]", "not supported"]),
        (lambda d: d.__setitem__("w", 21), ["[w/h]", "says 21x10", "v0_t0.png is 20x10"]),
        (lambda d: d["frames"][3].__setitem__("h", 11), ["[frames[3].w/h]", "says 20x11"]),
        (lambda d: d.__setitem__("frames", []), ["[frames]", "non-empty"]),
        (lambda d: d.pop("frames"), ["[frames]", "missing"]),
    ],
)
def test_bad_json_through_cli(tmp_path: Path, capsys: pytest.CaptureFixture, edit, needles) -> None:
    src = make_nerfstudio(tmp_path)
    doc = json.loads(src.read_text())
    edit(doc)
    src.write_text(json.dumps(doc))
    err = _run(src, capsys)
    assert str(src) in err, err
    for n in needles:
        assert n in err, f"{n!r} not in {err!r}"


def test_bad_images_through_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = make_nerfstudio(tmp_path / "a")
    img = tmp_path / "a" / "images" / "v1_t1.png"
    img.unlink()
    err = _run(src, capsys)
    assert str(img) in err and "does not exist" in err

    src = make_nerfstudio(tmp_path / "b")
    img = tmp_path / "b" / "images" / "v0_t2.png"
    _img(img, w=22, h=10)
    err = _run(src, capsys)
    assert str(img) in err and "22x10" in err and "20x10" in err

    src = make_nerfstudio(tmp_path / "c")
    img = tmp_path / "c" / "images" / "v0_t0.png"
    img.write_bytes(img.read_bytes()[:50])
    err = _run(src, capsys)
    assert str(img) in err and "cannot decode" in err

    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "transforms.json").write_text("[1, 2")
    assert "invalid JSON" in _run(tmp_path / "d", capsys)


def test_monocular_with_repeated_times_needs_a_key(tmp_path: Path) -> None:
    src = make_dnerf(tmp_path, n=3)
    doc = json.loads(src.read_text())
    doc["frames"][2]["time"] = 0.0
    src.write_text(json.dumps(doc))
    with pytest.raises(InputError, match="add a camera_id"):
        read_transforms(src)
    with pytest.raises(InputError, match=r"transforms_val\.json"):
        read_transforms(tmp_path, LoadOptions(split="val"))
