"""Gaussian .ply (graphdeco layout) and .ply sequences: exact round trips, a reference-style loader,
other tools' files, bad input and atomic writes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from plyfile import PlyData, PlyElement

from recon.errors import InputError
from recon.io import ply as plymod
from recon.io.ply import SH_C0, read_gaussians_ply, write_gaussians_ply
from recon.io.plyseq import read_ply_sequence, write_ply_sequence

GRAPHDECO_ORDER = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
TAIL_ORDER = ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]


def _gaussians(n: int = 257, k: int = 0, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(n, 3)).astype(np.float32) * 3
    # awkward float32 values must survive bit-exactly too
    means[:4, 0] = [np.float32(-0.0), np.float32(1e-38), np.float32(3.4e38), np.nextafter(np.float32(1), np.float32(2))]
    out = dict(
        means=means,
        log_scales=rng.normal(-3, 1, size=n).astype(np.float32),
        opacity_logits=rng.normal(size=n).astype(np.float32),
        sh_dc=rng.normal(size=(n, 3)).astype(np.float32),
    )
    if k:
        out["sh_rest"] = rng.normal(size=(n, k, 3)).astype(np.float32)
    return out


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


def reference_load(path: Path, max_sh_degree: int) -> dict:
    """Read a .ply the way graphdeco's ``GaussianModel.load_ply`` does (our own re-statement of its logic)."""
    v = PlyData.read(str(path)).elements[0]
    xyz = np.stack([np.asarray(v["x"]), np.asarray(v["y"]), np.asarray(v["z"])], axis=1)
    opacities = np.asarray(v["opacity"])[..., None]
    dc = np.zeros((xyz.shape[0], 3, 1))
    for c in range(3):
        dc[:, c, 0] = np.asarray(v[f"f_dc_{c}"])
    names = [p.name for p in v.properties]
    rest_names = sorted([n for n in names if n.startswith("f_rest_")], key=lambda s: int(s.split("_")[-1]))
    assert len(rest_names) == 3 * (max_sh_degree + 1) ** 2 - 3
    rest = np.zeros((xyz.shape[0], len(rest_names)))
    for i, n in enumerate(rest_names):
        rest[:, i] = np.asarray(v[n])
    rest = rest.reshape(xyz.shape[0], 3, (max_sh_degree + 1) ** 2 - 1)
    scale_names = sorted([n for n in names if n.startswith("scale_")], key=lambda s: int(s.split("_")[-1]))
    scales = np.stack([np.asarray(v[n]) for n in scale_names], axis=1)
    rot_names = sorted([n for n in names if n.startswith("rot")], key=lambda s: int(s.split("_")[-1]))
    rots = np.stack([np.asarray(v[n]) for n in rot_names], axis=1)
    return {
        "xyz": xyz,
        "features_dc": dc.transpose(0, 2, 1),  # [N, 1, 3] as in the model
        "features_rest": rest.transpose(0, 2, 1),  # [N, K, 3]
        "opacity": opacities,
        "scaling": scales,
        "rotation": rots,
    }


@pytest.mark.parametrize("k", [0, 3, 15])
def test_round_trip_bit_exact(tmp_path: Path, k: int) -> None:
    g = _gaussians(k=k)
    p = write_gaussians_ply(tmp_path / "g.ply", **g)
    r = read_gaussians_ply(p)
    assert r.num_gaussians == 257 and r.sh_degree == {0: 0, 3: 1, 15: 3}[k]
    np.testing.assert_array_equal(_bits(r.means), _bits(g["means"]))
    np.testing.assert_array_equal(_bits(r.sh_dc), _bits(g["sh_dc"]))
    np.testing.assert_array_equal(_bits(r.opacity_logits), _bits(g["opacity_logits"]))
    for c in range(3):
        np.testing.assert_array_equal(_bits(r.log_scales[:, c]), _bits(g["log_scales"]))
    assert r.is_isotropic
    np.testing.assert_array_equal(_bits(r.isotropic_log_scale()), _bits(g["log_scales"]))
    np.testing.assert_array_equal(r.rotations, np.tile([1, 0, 0, 0], (257, 1)))
    np.testing.assert_array_equal(r.normals, 0)
    if k:
        np.testing.assert_array_equal(_bits(r.sh_rest), _bits(g["sh_rest"]))
    else:
        assert r.sh_rest.shape == (257, 0, 3)
    # and the bytes on disk are exactly what a re-write of the record produces
    p2 = plymod.write_gaussian_record(tmp_path / "g2.ply", r)
    assert p.read_bytes() == p2.read_bytes()


def test_layout_and_reference_loader(tmp_path: Path) -> None:
    g = _gaussians(n=50, k=8, seed=1)
    p = write_gaussians_ply(tmp_path / "g.ply", **g)
    header = p.read_bytes().split(b"end_header\n")[0].decode()
    assert "format binary_little_endian 1.0" in header and "element vertex 50" in header
    props = [ln.split() for ln in header.splitlines() if ln.startswith("property")]
    assert all(t == "float" for _, t, _ in props)
    assert [n for _, _, n in props] == GRAPHDECO_ORDER + [f"f_rest_{i}" for i in range(24)] + TAIL_ORDER
    assert p.stat().st_size == len(header) + len("end_header\n") + 50 * len(props) * 4

    ref = reference_load(p, max_sh_degree=2)
    np.testing.assert_array_equal(ref["xyz"], g["means"])
    np.testing.assert_array_equal(ref["features_dc"][:, 0], g["sh_dc"])
    np.testing.assert_array_equal(ref["features_rest"], g["sh_rest"])  # same [N, K, 3] meaning as ours
    np.testing.assert_array_equal(ref["opacity"][:, 0], g["opacity_logits"])
    np.testing.assert_array_equal(ref["scaling"], np.repeat(g["log_scales"][:, None], 3, axis=1))
    np.testing.assert_array_equal(ref["rotation"], np.tile([1, 0, 0, 0], (50, 1)))


def test_colors_rgb_are_stored_as_sh_dc(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    rgb = rng.random((40, 3)).astype(np.float32)
    p = write_gaussians_ply(tmp_path / "c.ply", rng.normal(size=(40, 3)), np.full(40, -2.0), np.zeros(40), colors_rgb=rgb)
    r = read_gaussians_ply(p)
    np.testing.assert_allclose(r.sh_dc, (rgb - 0.5) / SH_C0, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(r.colors_rgb, rgb, atol=1e-6)
    np.testing.assert_allclose(r.opacities, 0.5)
    # torch tensors are accepted too
    import torch

    p2 = write_gaussians_ply(tmp_path / "t.ply", torch.zeros(3, 3), torch.zeros(3), torch.zeros(3), colors_rgb=torch.ones(3, 3))
    np.testing.assert_allclose(read_gaussians_ply(p2).colors_rgb, 1.0, atol=1e-6)


def _plyfile_write(path: Path, cols: dict[str, np.ndarray], dtypes: dict[str, str] | None = None) -> Path:
    n = len(next(iter(cols.values())))
    dtypes = dtypes or {}
    arr = np.empty(n, dtype=[(k, dtypes.get(k, "f4")) for k in cols])
    for k, v in cols.items():
        arr[k] = v
    PlyData([PlyElement.describe(arr, "vertex")]).write(str(path))
    return path


def test_reads_anisotropic_files_from_other_tools(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    n = 20
    cols = {f"rot_{i}": rng.normal(size=n) for i in (3, 1, 0, 2)}  # unusual order on purpose
    cols |= {"scale_2": rng.normal(size=n), "scale_0": rng.normal(size=n), "scale_1": rng.normal(size=n)}
    cols |= {"x": rng.normal(size=n), "y": rng.normal(size=n), "z": rng.normal(size=n), "opacity": rng.normal(size=n)}
    cols |= {f"f_dc_{i}": rng.normal(size=n) for i in range(3)}
    cols |= {f"f_rest_{i}": rng.normal(size=n) for i in reversed(range(9))}
    cols |= {"red": rng.integers(0, 255, n)}
    p = _plyfile_write(tmp_path / "aniso.ply", cols, {"x": "f8", "red": "u1"})
    r = read_gaussians_ply(p)
    assert not r.is_isotropic and r.sh_degree == 1
    np.testing.assert_array_equal(r.log_scales, np.stack([cols[f"scale_{i}"] for i in range(3)], 1).astype(np.float32))
    np.testing.assert_array_equal(r.rotations, np.stack([cols[f"rot_{i}"] for i in range(4)], 1).astype(np.float32))
    np.testing.assert_array_equal(r.means[:, 0], cols["x"].astype(np.float32))  # double -> float32
    rest = np.stack([cols[f"f_rest_{i}"] for i in range(9)], 1).reshape(n, 3, 3).transpose(0, 2, 1)
    np.testing.assert_array_equal(r.sh_rest, rest.astype(np.float32))
    np.testing.assert_array_equal(r.extra["red"], cols["red"])
    np.testing.assert_allclose(r.isotropic_log_scale(), r.log_scales.mean(1), rtol=1e-6)
    np.testing.assert_array_equal(r.normals, 0)  # no nx/ny/nz in the file


def test_isotropic_file_with_one_scale(tmp_path: Path) -> None:
    cols = {"x": [0.0], "y": [1.0], "z": [2.0], "f_dc_0": [0.1], "f_dc_1": [0.2], "f_dc_2": [0.3],
            "opacity": [0.5], "scale_0": [-1.5]}
    r = read_gaussians_ply(_plyfile_write(tmp_path / "one.ply", {k: np.array(v) for k, v in cols.items()}))
    np.testing.assert_array_equal(r.log_scales, [[-1.5, -1.5, -1.5]])
    np.testing.assert_array_equal(r.rotations, [[1, 0, 0, 0]])


def test_truncated_and_corrupt_files(tmp_path: Path) -> None:
    p = write_gaussians_ply(tmp_path / "g.ply", **_gaussians(n=100))
    data = p.read_bytes()
    cut = tmp_path / "cut.ply"
    cut.write_bytes(data[: len(data) - 37])
    with pytest.raises(InputError, match="truncated") as e:
        read_gaussians_ply(cut)
    assert str(cut) in str(e.value)

    head_only = tmp_path / "head.ply"
    head_only.write_bytes(data[:200])  # cut inside the header
    with pytest.raises(InputError, match="end_header") as e:
        read_gaussians_ply(head_only)
    assert str(head_only) in str(e.value)

    junk = tmp_path / "junk.ply"
    junk.write_bytes(b"\x89PNG\r\n" + data[10:])
    with pytest.raises(InputError, match="not a PLY"):
        read_gaussians_ply(junk)

    empty = tmp_path / "empty.ply"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="not a PLY"):
        read_gaussians_ply(empty)

    with pytest.raises(InputError, match="does not exist"):
        read_gaussians_ply(tmp_path / "nope.ply")

    nan = tmp_path / "nan.ply"
    g = _gaussians(n=5)
    cols = {"x": g["means"][:, 0], "y": g["means"][:, 1], "z": g["means"][:, 2], "opacity": g["opacity_logits"],
            "scale_0": g["log_scales"], **{f"f_dc_{i}": g["sh_dc"][:, i] for i in range(3)}}
    cols["opacity"][2] = np.nan
    _plyfile_write(nan, cols)
    with pytest.raises(InputError, match="NaN") as e:
        read_gaussians_ply(nan)
    assert "[opacity]" in str(e.value)

    asc = tmp_path / "ascii.ply"
    asc.write_text("ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nend_header\n0\n")
    with pytest.raises(InputError, match="ASCII"):
        read_gaussians_ply(asc)


@pytest.mark.parametrize("drop", ["opacity", "f_dc_1", "scale_0", "y", "f_rest_4"])
def test_missing_property_is_named(tmp_path: Path, drop: str) -> None:
    g = _gaussians(n=6, k=3)
    names, table = plymod.gaussians_to_columns(**g)
    cols = {n: table[:, i] for i, n in enumerate(names) if n != drop}
    p = _plyfile_write(tmp_path / "m.ply", cols)
    with pytest.raises(InputError) as e:
        read_gaussians_ply(p)
    msg = str(e.value)
    assert str(p) in msg and f"[{drop}]" in msg, msg


def test_write_rejects_bad_input_and_leaves_nothing(tmp_path: Path) -> None:
    g = _gaussians(n=10)
    target = tmp_path / "g.ply"
    write_gaussians_ply(target, **g)
    before = target.read_bytes()
    bad = dict(g, means=g["means"].copy())
    bad["means"][3, 1] = np.inf
    with pytest.raises(ValueError, match="means"):
        write_gaussians_ply(target, **bad)
    with pytest.raises(ValueError, match="opacity_logits"):
        write_gaussians_ply(target, **dict(g, opacity_logits=np.zeros(9)))
    with pytest.raises(ValueError, match="exactly one"):
        write_gaussians_ply(target, g["means"], g["log_scales"], g["opacity_logits"])
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.ply"]


def test_failure_during_write_leaves_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    g = _gaussians(n=1000)
    target = tmp_path / "g.ply"
    write_gaussians_ply(target, **_gaussians(n=4))
    before = target.read_bytes()
    real_open = open

    class Failing:
        def __init__(self, *a, **k):
            self.f = real_open(*a, **k)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, b: bytes) -> int:
            if len(b) > 1000:  # the header goes through, the data fails half way ("disk full")
                self.f.write(b[: len(b) // 2])
                raise OSError(28, "No space left on device")
            return self.f.write(b)

    monkeypatch.setattr(plymod, "open", Failing, raising=False)
    with pytest.raises(OSError):
        write_gaussians_ply(target, **g)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.ply"]


def test_sequence_round_trip(tmp_path: Path) -> None:
    g = _gaussians(n=64, k=3, seed=5)
    frames = [g["means"] + np.float32(0.1 * t) for t in range(4)]
    out = write_ply_sequence(tmp_path / "run", frames, g["log_scales"], g["opacity_logits"], sh_dc=g["sh_dc"],
                             sh_rest=g["sh_rest"], fps=25.0, source="unit-test", meta={"note": "x"})
    assert out == tmp_path / "run" / "ply"
    assert sorted(p.name for p in out.iterdir()) == [f"frame_{t:04d}.ply" for t in range(4)] + ["sequence.json"]
    man = json.loads((out / "sequence.json").read_text())
    assert man["count"] == 4 and man["fps"] == 25.0 and man["sh_degree"] == 1 and man["isotropic"]
    assert man["num_gaussians"] == 64 and man["source"] == "unit-test" and "right-handed" in man["coordinates"]
    assert man["recon_version"] and man["meta"] == {"note": "x"}
    np.testing.assert_allclose(man["times"], np.arange(4) / 25.0)
    for where in (tmp_path / "run", out):
        s = read_ply_sequence(where)
        assert s.num_frames == 4 and s.fps == 25.0
        np.testing.assert_array_equal(_bits(s.means), _bits(np.stack(frames)))
        np.testing.assert_array_equal(_bits(s.gaussians.sh_rest), _bits(g["sh_rest"]))
    # each frame is a standalone graphdeco file
    ref = reference_load(out / "frame_0002.ply", max_sh_degree=1)
    np.testing.assert_array_equal(ref["xyz"], frames[2])


def test_sequence_errors(tmp_path: Path) -> None:
    g = _gaussians(n=8)
    out = write_ply_sequence(tmp_path, [g["means"]] * 3, g["log_scales"], g["opacity_logits"], sh_dc=g["sh_dc"], times=[0, 1, 2])
    # a failing rewrite (bad frame 2, after frames 0 and 1 were written) keeps the old sequence whole
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(ValueError, match=r"frames\[2\]"):
        write_ply_sequence(tmp_path, [g["means"], g["means"], g["means"][:5]], g["log_scales"], g["opacity_logits"], sh_dc=g["sh_dc"])
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ply"]

    # a frame with other Gaussians
    write_gaussians_ply(out / "frame_0001.ply", g["means"][:7], g["log_scales"][:7], g["opacity_logits"][:7], sh_dc=g["sh_dc"][:7])
    with pytest.raises(InputError, match="same Gaussians") as e:
        read_ply_sequence(tmp_path)
    assert "frame_0001.ply" in str(e.value)
    # a frame whose shared attributes differ
    write_gaussians_ply(out / "frame_0001.ply", g["means"], g["log_scales"] + 1, g["opacity_logits"], sh_dc=g["sh_dc"])
    with pytest.raises(InputError, match=r"\[log_scales\]"):
        read_ply_sequence(tmp_path)
    # a missing frame file
    (out / "frame_0001.ply").unlink()
    with pytest.raises(InputError, match="does not exist") as e:
        read_ply_sequence(tmp_path)
    assert "frame_0001.ply" in str(e.value)
    # manifest problems
    man = json.loads((out / "sequence.json").read_text())
    (out / "sequence.json").write_text(json.dumps({**man, "count": 5}))
    with pytest.raises(InputError, match=r"\[count\]"):
        read_ply_sequence(tmp_path)
    (out / "sequence.json").write_text(json.dumps({**man, "times": [0, "a", 2]}))
    with pytest.raises(InputError, match=r"\[times\]"):
        read_ply_sequence(tmp_path)
    (out / "sequence.json").write_text("{not json")
    with pytest.raises(InputError, match="invalid JSON"):
        read_ply_sequence(tmp_path)
    (tmp_path / "other").mkdir()
    with pytest.raises(InputError, match="no sequence.json"):
        read_ply_sequence(tmp_path / "other")
    with pytest.raises(InputError, match="does not exist"):
        read_ply_sequence(tmp_path / "missing")
