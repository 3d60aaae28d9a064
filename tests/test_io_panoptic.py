"""Panoptic / Dynamic-3DGS reader: the real basketball capture (when present) and small fixtures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from recon.cli import main
from recon.errors import InputError
from recon.io import LoadOptions, detect_kind, load_grid
from recon.io.panoptic import FPS, read_panoptic


def _scene_centre(w2c: np.ndarray) -> np.ndarray:
    """Least-squares point nearest all optical axes of cameras ``w2c [V, 4, 4]``."""
    c2w = np.linalg.inv(w2c)
    A, b = np.zeros((3, 3)), np.zeros(3)
    for c, d in zip(c2w[:, :3, 3], c2w[:, :3, 2]):  # OpenCV: the optical axis is camera +z
        P = np.eye(3) - np.outer(d, d)
        A += P
        b += P @ c
    return np.linalg.solve(A, b)


def _project(K: np.ndarray, w2c: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """-> pixel coordinates ``[V, 2]`` and depths ``[V]`` of world point X in every camera."""
    pc = np.einsum("vij,j->vi", w2c[:, :3, :3], X) + w2c[:, :3, 3]
    uv = np.einsum("vij,vj->vi", K, pc)
    return uv[:, :2] / uv[:, 2:], pc[:, 2]


def test_real_capture_conventions(panoptic_root: Path) -> None:
    g = read_panoptic(panoptic_root, LoadOptions(frames="0:1", scale=0.25, split="all"))
    assert g.shape == (29, 1, 90, 160)
    assert g.view_names[:3] == ["0", "1", "2"] and "10" in g.view_names
    assert g.meta["view_split"][0] == "test" and g.meta["view_split"][1] == "train"
    # test cameras have no seg/: all-False masks there, the training cameras' masks are read
    assert g.masks is not None and "0" in g.meta["masks"] and 0 not in g.meta["mask_views"] and 1 in g.meta["mask_views"]
    assert not g.masks[0].any() and g.masks[1].any()
    K, w2c = g.cameras.K[:, 0], g.cameras.w2c[:, 0]
    X = _scene_centre(w2c)
    uv, z = _project(K, w2c, X)
    assert (z > 0.5).all(), z  # in front of every camera (OpenCV: +z forward)
    inside = (uv[:, 0] > 0) & (uv[:, 0] < g.width) & (uv[:, 1] > 0) & (uv[:, 1] < g.height)
    assert inside.all(), uv[~inside]
    # camera centres surround the scene centre: the mean centre is near it, not off to one side
    centres = np.linalg.inv(w2c)[:, :3, 3]
    assert np.linalg.norm(centres.mean(0) - X) < 0.5 * np.linalg.norm(centres - X, axis=1).mean()
    # K was scaled with the images: principal points near the (scaled) image centre
    assert np.abs(K[:, 0, 2] - g.width / 2).max() < 0.1 * g.width
    assert np.abs(K[:, 1, 2] - g.height / 2).max() < 0.1 * g.height


def test_real_capture_selection(panoptic_root: Path) -> None:
    g = read_panoptic(panoptic_root, LoadOptions(views=[5, 1, 20], frames="10:14:3", scale=0.25))
    assert g.shape == (3, 2, 90, 160) and g.view_names == ["5", "1", "20"]
    np.testing.assert_allclose(g.times, np.array([10, 13]) / FPS)
    assert g.meta["fps"] == FPS and g.meta["frame_indices"] == [10, 13]
    assert g.masks is not None and g.masks.shape == (3, 2, 90, 160)
    assert 0.01 < g.masks.mean() < 0.5  # players on a court: a minority of the pixels
    meta = json.loads((panoptic_root / "train_meta.json").read_text())
    c = meta["cam_id"][10].index(5)
    K = np.asarray(meta["k"][10][c])
    np.testing.assert_allclose(g.cameras.K[0, 0, :2], K[:2] * 0.25)
    np.testing.assert_allclose(g.cameras.w2c[0, 0], meta["w2c"][10][c])
    full = np.asarray(Image.open(panoptic_root / "ims" / "5" / "000010.jpg").convert("RGB"))
    small = full.reshape(90, 4, 160, 4, 3).mean((1, 3))
    assert np.abs(g.images[0, 0].astype(float) - small).mean() < 2.0  # area-downscaled image of camera 5, t=10
    with pytest.raises(InputError, match=r"camera ids \[0\] not in split 'train'"):
        read_panoptic(panoptic_root, LoadOptions(views=[0, 1]))


# --- small fixtures -----------------------------------------------------------------------------
def make_panoptic(root: Path, train_ids=(1, 2), test_ids=(7,), T: int = 3, w: int = 16, h: int = 12) -> Path:
    rng = np.random.default_rng(0)
    for split, ids in (("train", train_ids), ("test", test_ids)):
        K = [[30.0, 0, w / 2], [0, 30.0, h / 2], [0, 0, 1]]
        meta = {"w": w, "h": h, "k": [], "w2c": [], "fn": [], "cam_id": []}
        for t in range(T):
            meta["k"].append([K for _ in ids])
            w2c = []
            for i in ids:
                a = 0.2 * i
                w2c.append([[np.cos(a), 0, np.sin(a), 0.1 * i], [0, 1, 0, 0], [-np.sin(a), 0, np.cos(a), 4.0], [0, 0, 0, 1]])
            meta["w2c"].append(w2c)
            meta["fn"].append([f"{i}/{t:06d}.jpg" for i in ids])
            meta["cam_id"].append(list(ids))
            for i in ids:
                (root / "ims" / str(i)).mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / "ims" / str(i) / f"{t:06d}.jpg")
                if split == "train":
                    (root / "seg" / str(i)).mkdir(parents=True, exist_ok=True)
                    Image.fromarray((rng.random((h, w)) > 0.5).astype(np.uint8) * 255).save(root / "seg" / str(i) / f"{t:06d}.png")
        (root / f"{split}_meta.json").write_text(json.dumps(meta))
    return root


def test_fixture_reads(tmp_path: Path) -> None:
    root = make_panoptic(tmp_path / "p")
    assert detect_kind(root) == "panoptic"
    g = load_grid(root)
    assert g.shape == (2, 3, 12, 16) and g.masks is not None and g.view_names == ["1", "2"]
    g = load_grid(root, LoadOptions(split="all", frames="1:"))
    assert g.shape == (3, 2, 12, 16) and g.view_names == ["1", "2", "7"]
    assert g.meta["mask_views"] == [0, 1] and not g.masks[2].any()  # camera 7 (test) has no seg/
    np.testing.assert_allclose(g.times, [1 / FPS, 2 / FPS])
    g = load_grid(root, LoadOptions(split="test", scale=0.5))
    assert g.shape == (1, 3, 6, 8) and g.cameras.K[0, 0, 0, 0] == 15.0
    with pytest.raises(InputError, match="--split"):
        load_grid(root, LoadOptions(split="val"))


def _edit(root: Path, name: str, fn) -> Path:
    f = root / name
    meta = json.loads(f.read_text())
    fn(meta)
    f.write_text(json.dumps(meta))
    return f


@pytest.mark.parametrize(
    "edit, needles",
    [
        (lambda m: m.pop("w2c"), ["[w2c]", "missing field"]),
        (lambda m: m.pop("w"), ["[w]", "missing field"]),
        (lambda m: m.__setitem__("h", "12"), ["[h]", "expected an integer"]),
        (lambda m: m["k"][1].__setitem__(0, [[1, 0], [0, 1]]), ["[k[1][0]]", "3x3"]),
        (lambda m: m["w2c"][2].__setitem__(1, [[1, 0, 0, 0]] * 3), ["[w2c[2][1]]", "4x4"]),
        (lambda m: m["k"][0][1].__setitem__(0, [float("nan"), 0, 8]), ["[k[0][1]]", "NaN"]),
        (lambda m: m["k"][2][0].__setitem__(0, [0, 0, 8]), ["[k[2][0]]", "singular"]),
        (lambda m: m["w2c"][1][1].__setitem__(0, [3, 0, 0, 0]), ["[w2c[1][1]]", "orthonormal"]),
        (lambda m: m["fn"][1].pop(), ["[fn[1]]", "1 cameras, expected 2"]),
        (lambda m: m["cam_id"].pop(), ["[cam_id]", "2 time steps, k has 3"]),
        (lambda m: m["cam_id"][2].reverse(), ["[cam_id[2]]", "differ"]),
        (lambda m: m["fn"][0].__setitem__(0, 5), ["[fn[0][0]]", "file path"]),
        (lambda m: m.__setitem__("k", {}), ["[k]", "expected a list"]),
    ],
)
def test_bad_meta_through_cli(tmp_path: Path, capsys: pytest.CaptureFixture, edit, needles) -> None:
    root = make_panoptic(tmp_path / "p")
    f = _edit(root, "train_meta.json", edit)
    assert main(["info", str(root)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(f) in err, err
    for n in needles:
        assert n in err, f"{n!r} not in {err!r}"


def test_missing_files_through_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = make_panoptic(tmp_path / "p")
    img = root / "ims" / "2" / "000001.jpg"
    img.unlink()
    assert main(["info", str(root)]) == 2
    err = capsys.readouterr().err
    assert str(img) in err and "missing image" in err and "fn[1]" in err, err

    root = make_panoptic(tmp_path / "q")
    mask = root / "seg" / "1" / "000002.png"
    mask.unlink()
    assert main(["info", str(root)]) == 2
    err = capsys.readouterr().err
    assert str(mask) in err and "missing mask" in err, err

    root = make_panoptic(tmp_path / "r")
    img = root / "ims" / "1" / "000000.jpg"
    Image.fromarray(np.zeros((12, 15, 3), np.uint8)).save(img)
    assert main(["info", str(root)]) == 2
    err = capsys.readouterr().err
    assert str(img) in err and "15x12" in err and "16x12" in err, err

    root = make_panoptic(tmp_path / "s")
    img = root / "ims" / "1" / "000001.jpg"
    img.write_bytes(img.read_bytes()[:100])
    assert main(["info", str(root)]) == 2
    err = capsys.readouterr().err
    assert str(img) in err and "cannot decode" in err, err

    root = make_panoptic(tmp_path / "t")
    (root / "train_meta.json").write_text("{")
    assert main(["info", str(root)]) == 2
    assert "invalid JSON" in capsys.readouterr().err


def test_test_meta_errors(tmp_path: Path) -> None:
    root = make_panoptic(tmp_path / "p", test_ids=(2,))
    with pytest.raises(InputError, match="camera 2 appears in both"):
        read_panoptic(root, LoadOptions(split="all"))
    root = make_panoptic(tmp_path / "q", T=3)
    _edit(root, "test_meta.json", lambda m: m.__setitem__("w", 20))
    with pytest.raises(InputError, match=r"\[w/h\]"):
        read_panoptic(root, LoadOptions(split="all"))
    (root / "test_meta.json").unlink()
    with pytest.raises(InputError, match="missing test_meta.json"):
        read_panoptic(root, LoadOptions(split="test"))
