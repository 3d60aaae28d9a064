"""Issue #16: bad input never reaches a traceback.

A corpus of bad inputs, each run through the CLI in-process (``recon.cli.main``). The promise for
every one: exit code 2, exactly one non-empty line on stderr, starting with ``recon: error:``,
naming the offending file (full path or basename) and the field where there is one, no traceback,
and nothing already on disk lost, changed or half-written. An exception escaping ``main``, exit 1
or exit 0 are all failures.

Cases are ``(name, class, builder)``; ``builder(tmp_path, fx) -> Spec``. The fixtures (a tiny grid
folder, a finished tiny run, Panoptic / nerfstudio / D-NeRF / videos folders) are built once per
module, lazily, and copied per case before they are corrupted.

Classes: grid (grid.json and its files), size (inputs too big for memory), config
(``--config`` values), fs (output paths), run (run folders that are not what they claim), pose
(poses accepted silently today: mirrors, non-rigid bottom rows), cli (numbers on the command line),
and one group per reader (panoptic, nerfstudio, dnerf, videos, ply).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import re
import shutil
import signal
import struct
import traceback
import zlib
from dataclasses import dataclass
from dataclasses import field as dc_field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from recon.cli import main

REPO = Path(__file__).resolve().parents[1]
RECON_DIR = REPO / "recon"
CASE_TIMEOUT_S = 45
"""A case that is accepted and starts a long computation is stopped after this (and fails)."""
TINY = {"prune": {"iterations": 4}, "deform": {"iterations": 10, "warmup": 2, "mlp_width": 16, "mlp_depth": 1},
        "outputs": {"preview_video": False}}
"""A config that makes ``recon reconstruct`` on the tiny grid finish in about a second."""
MEMORY_LIMIT = str(2**30)
"""RECON_MEMORY_LIMIT for the size cases: 1 GiB available, whatever the machine has."""
SIZE_HINT = ("--scale", "--frames", "--views")
"""A size refusal must say how to read less (any one of these)."""


# --- fixtures ---------------------------------------------------------------------------------
def _png(path: Path, a: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path)


def _png_header_only(path: Path, w: int, h: int) -> None:
    """A tiny, well-formed PNG whose header claims ``w x h`` pixels (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def _c2w_gl(eye, target=(0.0, 0.0, 0.0), up=(0.0, 1.0, 0.0)) -> list:
    """Camera-to-world, OpenGL convention (camera looks along -z, y up), looking at ``target``."""
    eye, target, up = map(np.asarray, (eye, target, up))
    back = (eye - target) / np.linalg.norm(eye - target)
    right = np.cross(up, back)
    right /= np.linalg.norm(right)
    M = np.eye(4)
    M[:3, 0], M[:3, 1], M[:3, 2], M[:3, 3] = right, np.cross(back, right), back, eye
    return M.tolist()


def _rot_y(a: float, tx: float = 0.0, tz: float = 4.0) -> list:
    return [[math.cos(a), 0, math.sin(a), tx], [0, 1, 0, 0], [-math.sin(a), 0, math.cos(a), tz], [0, 0, 0, 1]]


class Fx:
    """Valid tiny inputs, built on first use (module scope)."""

    def __init__(self, factory: pytest.TempPathFactory) -> None:
        self.factory = factory

    def _dir(self, name: str) -> Path:
        return self.factory.mktemp(f"fx_{name}")

    @cached_property
    def grid(self) -> Path:
        from recon.io.gridfolder import write_grid
        from recon.synth import make_grid

        d = self._dir("grid") / "grid"
        write_grid(make_grid("orbit", views=4, frames=3, size=(32, 32), seed=1, supersample=1), d)
        return d

    @cached_property
    def tiny_config(self) -> Path:
        f = self._dir("cfg") / "tiny.json"
        f.write_text(json.dumps(TINY))
        return f

    @cached_property
    def run(self) -> Path:
        run = self._dir("run") / "run"
        code = main(["reconstruct", str(self.grid), "--out", str(run), "--config", str(self.tiny_config), "--device", "cpu"])
        assert code == 0 and (run / "checkpoints" / "deform.safetensors").is_file(), "the tiny reconstruction failed"
        return run

    @cached_property
    def panoptic(self) -> Path:
        root = self._dir("panoptic") / "pan"
        rng = np.random.default_rng(0)
        w, h, T = 16, 12, 3
        for split, ids in (("train", (1, 2)), ("test", (7,))):
            K = [[30.0, 0, w / 2], [0, 30.0, h / 2], [0, 0, 1]]
            meta: dict[str, Any] = {"w": w, "h": h, "k": [], "w2c": [], "fn": [], "cam_id": []}
            for t in range(T):
                meta["k"].append([K for _ in ids])
                meta["w2c"].append([_rot_y(0.2 * i, 0.1 * i) for i in ids])
                meta["fn"].append([f"{i}/{t:06d}.jpg" for i in ids])
                meta["cam_id"].append(list(ids))
                for i in ids:
                    _png(root / "ims" / str(i) / f"{t:06d}.jpg", rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
                    if split == "train":
                        _png(root / "seg" / str(i) / f"{t:06d}.png", (rng.random((h, w)) > 0.5).astype(np.uint8) * 255)
            (root / f"{split}_meta.json").write_text(json.dumps(meta))
        return root

    @cached_property
    def nerfstudio(self) -> Path:
        root = self._dir("ns") / "ns"
        rng = np.random.default_rng(1)
        frames = []
        for t in range(3):
            for v in range(2):
                f = {"file_path": f"images/v{v}_t{t}.png", "transform_matrix": _c2w_gl([3.0 * v - 1.5, 0.5, 5.0]),
                     "time": t / 10, "camera_id": v}
                _png(root / f["file_path"], rng.integers(0, 256, (10, 20, 3), dtype=np.uint8))
                frames.append(f)
        doc = {"fl_x": 30.0, "fl_y": 31.0, "cx": 10.5, "cy": 4.75, "w": 20, "h": 10, "camera_model": "OPENCV", "frames": frames}
        (root / "transforms.json").write_text(json.dumps(doc))
        return root

    @cached_property
    def dnerf(self) -> Path:
        root = self._dir("dnerf") / "dnerf"
        rng = np.random.default_rng(2)
        frames = []
        n = 4
        for i in range(n):
            a = 2 * math.pi * i / n
            frames.append({"file_path": f"./train/r_{i:03d}", "rotation": 0.1, "time": i / (n - 1),
                           "transform_matrix": _c2w_gl([4 * math.sin(a), 1.0, 4 * math.cos(a)])})
            im = rng.integers(0, 256, (16, 16, 4), dtype=np.uint8)
            im[..., 3] = 0
            im[4:12, 4:12, 3] = 255
            _png(root / "train" / f"r_{i:03d}.png", im)
        (root / "transforms_train.json").write_text(json.dumps({"camera_angle_x": 0.69, "frames": frames}))
        return root

    @cached_property
    def videos(self) -> Path:
        from recon.io.video import write_video

        root = self._dir("videos") / "vids"
        yy, xx = np.mgrid[0:16, 0:24]
        for name, shift in (("a.mp4", 0), ("b.mp4", 40)):
            clip = np.stack([np.stack([(xx * 4 + 6 * t + shift) % 256, yy * 6 % 256, np.full_like(xx, 30 * t)], -1)
                             for t in range(3)]).astype(np.uint8)
            write_video(root / name, clip, fps=10)
        return root


@pytest.fixture(scope="module")
def fx(tmp_path_factory: pytest.TempPathFactory) -> Fx:
    return Fx(tmp_path_factory)


# --- helpers for builders -----------------------------------------------------------------------
@dataclass
class Spec:
    argv: list[str]
    path: Path | str | None = None
    """The offending file: its full path or its basename must be in the message."""
    field: tuple[str, ...] = ()
    """Any one of these must be in the message (the offending field)."""
    hint: tuple[str, ...] = ()
    """Any one of these must be in the message (e.g. which option makes it fit)."""
    keep: list[Path] = dc_field(default_factory=list)
    """Files / folders that must have exactly the same content afterwards."""
    absent: list[Path] = dc_field(default_factory=list)
    """Paths that must not exist afterwards (nothing half-written)."""
    env: dict[str, str] = dc_field(default_factory=dict)


@dataclass
class Case:
    name: str
    cls: str
    build: Callable[[Path, Fx], Spec]


def copy_of(src: Path, tmp: Path) -> Path:
    dst = tmp / src.name
    shutil.copytree(src, dst)
    return dst


def edit_json(f: Path, fn: Callable[[Any], Any]) -> Path:
    """Apply ``fn`` to the parsed json (in place; its return value is ignored) and write it back."""
    doc = json.loads(f.read_text())
    fn(doc)
    f.write_text(json.dumps(doc))
    return f


def setitem(d: Any, key: Any, value: Any) -> None:
    d[key] = value


def mirror(m: list) -> list:
    """A 4x4 with its first row of the rotation (and translation) negated: orthonormal, det -1."""
    m = copy.deepcopy(m)
    m[0] = [-x for x in m[0]]
    return m


def bad_bottom(m: list) -> list:
    m = copy.deepcopy(m)
    m[3] = [0.0, 0.0, 0.5, 1.0]
    return m


def snapshot(p: Path) -> dict[str, str] | None:
    if not p.exists():
        return None
    if p.is_file():
        return {"": hashlib.sha256(p.read_bytes()).hexdigest()}
    return {str(f.relative_to(p)): (hashlib.sha256(f.read_bytes()).hexdigest() if f.is_file() else "<dir>")
            for f in sorted(p.rglob("*"))}


# grid folder: `recon info GRID` reads and validates the grid in full
def grid_case(name: str, fld: tuple[str, ...], fn: Callable[[dict, Path], Any], cls: str = "grid") -> Case:
    def build(tmp: Path, fx: Fx) -> Spec:
        root = copy_of(fx.grid, tmp)
        edit_json(root / "grid.json", lambda h: fn(h, root))
        return Spec(["info", str(root)], root / "grid.json", fld)

    return Case(name, cls, build)


def grid_file_case(name: str, rel: str, corrupt: Callable[[Path], None], cls: str = "grid", fld: tuple[str, ...] = ()) -> Case:
    def build(tmp: Path, fx: Fx) -> Spec:
        root = copy_of(fx.grid, tmp)
        corrupt(root / rel)
        return Spec(["info", str(root)], root / rel, fld)

    return Case(name, cls, build)


def size_case(name: str, fn: Callable[[dict], Any]) -> Case:
    def build(tmp: Path, fx: Fx) -> Spec:
        root = copy_of(fx.grid, tmp)
        edit_json(root / "grid.json", fn)
        return Spec(["info", str(root)], root / "grid.json", hint=SIZE_HINT, env={"RECON_MEMORY_LIMIT": MEMORY_LIMIT})

    return Case(name, "size", build)


def _million_views(h: dict) -> None:
    """1e6 views, everything else consistent with that (one shared camera, 1e6 view names)."""
    n = 1_000_000
    h.update(views=n, view_names=[f"v{i}" for i in range(n)], central_view=0)
    h["cameras"] = {"K": h["cameras"]["K"][0][0], "w2c": h["cameras"]["w2c"][0][0]}


def _million_times(h: dict) -> None:
    """1e6 times, everything else consistent with that (per-view cameras, broadcast over time)."""
    h["times"] = [i / 1e6 for i in range(1_000_000)]
    h["cameras"] = {"K": [k[0] for k in h["cameras"]["K"]], "w2c": [w[0] for w in h["cameras"]["w2c"]]}


# config: `recon reconstruct GRID --out RUN --config cfg.json` with the tiny config plus one bad value
def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def config_case(name: str, over: Any, fld: tuple[str, ...]) -> Case:
    def build(tmp: Path, fx: Fx) -> Spec:
        cfg = tmp / "cfg.json"
        cfg.write_text(json.dumps(_merge(TINY, over) if isinstance(over, dict) else over))
        run = tmp / "run"
        return Spec(["reconstruct", str(fx.grid), "--out", str(run), "--config", str(cfg), "--device", "cpu"], cfg, fld,
                    absent=[run])

    return Case(name, "config", build)


# run folders: a copy of the finished tiny run, corrupted
def _render(run: Path) -> list[str]:
    return ["render", str(run), "--device", "cpu"]


def _export(run: Path) -> list[str]:
    return ["export", str(run)]  # default --out: the run folder itself (its ply/ must survive a failure)


def _resume(run: Path) -> list[str]:
    return ["reconstruct", "--resume", "--out", str(run), "--device", "cpu"]


COMMANDS = {"render": _render, "export": _export, "resume": _resume}


def run_case(name: str, cmd: str, rel: str, corrupt: Callable[[Path], None], fld: tuple[str, ...] = ()) -> Case:
    def build(tmp: Path, fx: Fx) -> Spec:
        run = copy_of(fx.run, tmp)
        corrupt(run / rel)
        return Spec(COMMANDS[cmd](run), run / rel, fld, keep=[run])

    return Case(name, "run", build)


def _checkpoint_variant(which: str) -> Callable[[Path], None]:
    """Replace a checkpoint by a valid safetensors file (right format/version metadata) with wrong tensors."""

    def corrupt(ck: Path) -> None:
        from safetensors import safe_open
        from safetensors.torch import save_file
        import torch

        with safe_open(str(ck), framework="pt") as f:
            meta = f.metadata() or {}
            t = {k: f.get_tensor(k) for k in f.keys()}
        if which == "splats-only":  # the deform field's tensors left out
            t = {k: v for k, v in t.items() if k.startswith("splats.")}
        elif which == "short-means":  # one Gaussian fewer in the means than in the other attributes
            t["splats.means"] = t["splats.means"][:-1].clone()
        elif which == "bogus":
            t = {"bogus": torch.zeros(3)}
        elif which == "field-shape":  # the deform field's tracked offsets with a wrong shape
            t["field.tracked_offsets"] = torch.zeros(2, 2)
        save_file(t, str(ck), metadata=meta)

    return corrupt


def _garbage(f: Path) -> None:
    f.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())


def _truncate(f: Path) -> None:
    f.write_bytes(f.read_bytes()[: max(1, f.stat().st_size // 2)])


def _binary_json(f: Path) -> None:
    f.write_bytes(b"\xff\xfe\x00\x81{\x00\x9c")


# readers other than the grid folder: `recon info PATH`
def reader_case(name: str, cls: str, base: str, edit: Callable[[Path], Path | None], fld: tuple[str, ...] = (),
                argv: Callable[[Path], list[str]] | None = None, hint: tuple[str, ...] = (), env: dict | None = None) -> Case:
    def build(tmp: Path, fx: Fx) -> Spec:
        root = copy_of(getattr(fx, base), tmp)
        named = edit(root)
        return Spec(argv(root) if argv else ["info", str(root)], named, fld, hint=hint, env=env or {})

    return Case(name, cls, build)


def pan_meta(fn: Callable[[dict], Any], split: str = "train") -> Callable[[Path], Path]:
    return lambda root: edit_json(root / f"{split}_meta.json", fn)


def ns_json(fn: Callable[[dict], Any]) -> Callable[[Path], Path]:
    return lambda root: edit_json(root / "transforms.json", fn)


def dn_json(fn: Callable[[dict], Any]) -> Callable[[Path], Path]:
    return lambda root: edit_json(root / "transforms_train.json", fn)


def cams_json(doc: Any) -> Callable[[Path], Path]:
    def edit(root: Path) -> Path:
        f = root / "cameras.json"
        f.write_text(json.dumps(doc))
        return f

    return edit


def _file_into(rel: str, fn: Callable[[Path], None]) -> Callable[[Path], Path]:
    def edit(root: Path) -> Path:
        fn(root / rel)
        return root / rel

    return edit


def _unlink(f: Path) -> None:
    f.unlink()


def _panoptic_huge(root: Path) -> Path:
    edit_json(root / "train_meta.json", lambda m: m.update(w=60_000, h=60_000))
    return root  # the message may name train_meta.json or the first image it checked against it


W2C_A, W2C_B = _rot_y(0.0), _rot_y(0.3, 0.5)


def _each_time(h: dict, v: int, fn: Callable[[list], list]) -> None:
    for t, m in enumerate(h["cameras"]["w2c"][v]):
        h["cameras"]["w2c"][v][t] = fn(m)


# --- filesystem builders ----------------------------------------------------------------------
def fs_out_under_file(tmp: Path, fx: Fx) -> Spec:
    blocker = tmp / "afile"
    blocker.write_text("precious\n")
    out = blocker / "run"
    return Spec(["reconstruct", str(fx.grid), "--out", str(out), "--config", str(fx.tiny_config), "--device", "cpu"],
                blocker, keep=[blocker])


def fs_out_proc(tmp: Path, fx: Fx) -> Spec:
    out = Path("/proc") / f"recon-bad-input-{os.getpid()}" / "run"
    return Spec(["reconstruct", str(fx.grid), "--out", str(out), "--config", str(fx.tiny_config), "--device", "cpu"],
                out.parent, absent=[out.parent])


def fs_out_readonly(tmp: Path, fx: Fx) -> Spec:
    if os.geteuid() == 0:
        pytest.skip("running as root: permissions are not enforced")
    ro = tmp / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    out = ro / "run"
    return Spec(["reconstruct", str(fx.grid), "--out", str(out), "--config", str(fx.tiny_config), "--device", "cpu"],
                ro, keep=[ro], absent=[out])


def fs_render_out_dir(tmp: Path, fx: Fx) -> Spec:
    run = copy_of(fx.run, tmp)
    d = tmp / "existing"
    d.mkdir()
    (d / "keep.txt").write_text("precious\n")
    return Spec(["render", str(run), "--out", str(d), "--device", "cpu"], d, keep=[d, run])


def fs_render_out_under_file(tmp: Path, fx: Fx) -> Spec:
    run = copy_of(fx.run, tmp)
    blocker = tmp / "afile"
    blocker.write_text("precious\n")
    return Spec(["render", str(run), "--out", str(blocker / "cell.png"), "--device", "cpu"], blocker, keep=[blocker, run])


def fs_export_out_file(tmp: Path, fx: Fx) -> Spec:
    run = copy_of(fx.run, tmp)
    f = tmp / "existing.txt"
    f.write_text("precious\n")
    return Spec(["export", str(run), "--out", str(f)], f, keep=[f, run])


def fs_export_out_proc(tmp: Path, fx: Fx) -> Spec:
    run = copy_of(fx.run, tmp)
    out = Path("/proc") / f"recon-bad-export-{os.getpid()}"
    return Spec(["export", str(run), "--out", str(out)], out, keep=[run], absent=[out])


def fs_synth_out_under_file(tmp: Path, fx: Fx) -> Spec:
    blocker = tmp / "afile"
    blocker.write_text("precious\n")
    return Spec(["synth", "--out", str(blocker / "g"), "--views", "2", "--frames", "2", "--size", "8", "8", "--supersample", "1"],
                blocker, keep=[blocker])


def fs_config_is_dir(tmp: Path, fx: Fx) -> Spec:
    d = tmp / "cfgdir"
    d.mkdir()
    return Spec(["reconstruct", str(fx.grid), "--out", str(tmp / "run"), "--config", str(d), "--device", "cpu"], d,
                absent=[tmp / "run"])


def _resume_input_gone(tmp: Path, fx: Fx) -> Spec:
    """A run whose recorded input folder no longer exists, resumed without INPUT."""
    run = copy_of(fx.run, tmp)
    gone = tmp / "moved-away"
    edit_json(run / "run.json", lambda d: setitem(d, "input", str(gone)))
    return Spec(_resume(run), gone, keep=[run])


def _config_binary(tmp: Path, fx: Fx) -> Spec:
    cfg = tmp / "cfg.json"
    _binary_json(cfg)
    return Spec(["reconstruct", str(fx.grid), "--out", str(tmp / "run"), "--config", str(cfg), "--device", "cpu"], cfg,
                absent=[tmp / "run"])


# --- command-line numbers -------------------------------------------------------------------------
def cli_seed_huge(tmp: Path, fx: Fx) -> Spec:
    run = tmp / "run"
    return Spec(["reconstruct", str(fx.grid), "--out", str(run), "--config", str(fx.tiny_config), "--device", "cpu",
                 "--seed", "99999999999999999999"], None, ("--seed", "seed"), absent=[run])


def cli_info(*args: str, fld: tuple[str, ...]) -> Callable[[Path, Fx], Spec]:
    return lambda tmp, fx: Spec(["info", str(fx.grid), *args], None, fld)


def cli_reconstruct(*args: str, fld: tuple[str, ...]) -> Callable[[Path, Fx], Spec]:
    def build(tmp: Path, fx: Fx) -> Spec:
        run = tmp / "run"
        return Spec(["reconstruct", str(fx.grid), "--out", str(run), "--config", str(fx.tiny_config), "--device", "cpu", *args],
                    None, fld, absent=[run])

    return build


def cli_other(*args: str, fld: tuple[str, ...], hint: tuple[str, ...] = ()) -> Callable[[Path, Fx], Spec]:
    """Another command's numbers: ``args`` with ``{out}`` replaced by a fresh output path that must not appear."""
    def build(tmp: Path, fx: Fx) -> Spec:
        out = tmp / "out"
        return Spec([a.replace("{out}", str(out)) for a in args], None, fld, hint, absent=[out])

    return build


def cli_render_view(tmp: Path, fx: Fx) -> Spec:
    run = copy_of(fx.run, tmp)
    return Spec(["render", str(run), "--view", "-1", "--device", "cpu"], None, ("--view",), keep=[run])


# --- ply ------------------------------------------------------------------------------------------
def ply_truncated_file(tmp: Path, fx: Fx) -> Spec:
    run = copy_of(fx.run, tmp)
    f = run / "ply" / "frame_0000.ply"
    _truncate(f)
    return Spec(["info", str(f)], f)


def ply_bad_header_sequence(tmp: Path, fx: Fx) -> Spec:
    run = copy_of(fx.run, tmp)
    f = run / "ply" / "frame_0001.ply"
    f.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex -3\n" + f.read_bytes()[200:])
    return Spec(["info", str(run / "ply")], run / "ply")


# --- the corpus -------------------------------------------------------------------------------------
NAN = float("nan")

CASES: list[Case] = [
    # 1. grid.json fields of the wrong type or shape, and the grid folder's files
    grid_case("grid-views-true", ("views",), lambda h, r: setitem(h, "views", True)),
    grid_case("grid-view_names-int", ("view_names",), lambda h, r: setitem(h, "view_names", 5)),
    grid_case("grid-view_names-wrong-length", ("view_names",), lambda h, r: setitem(h, "view_names", ["a", "b"])),
    grid_case("grid-meta-list", ("meta",), lambda h, r: setitem(h, "meta", [1, 2])),
    grid_case("grid-times-nested", ("times",), lambda h, r: setitem(h, "times", [[0.0], [0.5], [1.0]])),
    grid_case("grid-times-strings", ("times",), lambda h, r: setitem(h, "times", ["a", "b", "c"])),
    grid_case("grid-times-numeric-strings", ("times",), lambda h, r: setitem(h, "times", ["0", "0.5", "1"])),
    grid_case("grid-times-nan", ("times",), lambda h, r: setitem(h, "times", [0.0, NAN, 1.0])),
    grid_case("grid-K-wrong-shape", ("K",), lambda h, r: h["cameras"].__setitem__("K", [[1, 0], [0, 1]])),
    grid_case("grid-K-nan", ("K",), lambda h, r: h["cameras"]["K"][1][0][0].__setitem__(0, NAN)),
    grid_case("grid-w2c-wrong-shape", ("w2c",), lambda h, r: h["cameras"].__setitem__("w2c", [[1, 0, 0, 0]])),
    grid_case("grid-w2c-true", ("w2c",), lambda h, r: h["cameras"].__setitem__("w2c", True)),
    grid_case("grid-cameras-list", ("cameras",), lambda h, r: setitem(h, "cameras", [1, 2])),
    grid_case("grid-height-string", ("height",), lambda h, r: setitem(h, "height", "32")),
    grid_case("grid-ref_time-out-of-range", ("ref_time",), lambda h, r: setitem(h, "ref_time", 7)),
    grid_case("grid-ref_time-negative", ("ref_time",), lambda h, r: setitem(h, "ref_time", -1)),
    grid_case("grid-central_view-out-of-range", ("central_view",), lambda h, r: setitem(h, "central_view", 9)),
    grid_case("grid-masks-string-false", ("masks",), lambda h, r: setitem(h, "masks", "false")),
    grid_case("grid-extras-string", ("extras",), lambda h, r: setitem(h, "extras", "depth")),
    grid_file_case("grid-extras-npz-truncated", "extras.npz", _truncate),
    grid_file_case("grid-extras-npz-garbage", "extras.npz", _garbage),
    grid_file_case("grid-frame-png-corrupt", "view_01/frame_0001.png", _garbage),
    grid_file_case("grid-frame-png-truncated", "view_02/frame_0000.png", _truncate),
    grid_file_case("grid-view-folder-missing", "view_03", shutil.rmtree),
    grid_file_case("grid-json-binary", "grid.json", _binary_json),
    # 2. sizes that cannot fit in memory: refused before allocating, saying how to read less
    size_case("size-width-1e9", lambda h: setitem(h, "width", 1_000_000_000)),
    size_case("size-views-1e6", _million_views),
    size_case("size-times-1e6", _million_times),
    reader_case("size-panoptic-wh-6e4", "size", "panoptic", _panoptic_huge, hint=SIZE_HINT, env={"RECON_MEMORY_LIMIT": MEMORY_LIMIT}),
    grid_file_case("size-grid-png-bomb", "view_00/frame_0000.png", lambda f: _png_header_only(f, 100_000, 100_000), cls="size"),
    reader_case("size-nerfstudio-png-bomb", "size", "nerfstudio",
                _file_into("images/v0_t0.png", lambda f: _png_header_only(f, 100_000, 100_000))),
    # 3. config values
    config_case("config-iterations-negative", {"deform": {"iterations": -5}}, ("deform.iterations",)),
    config_case("config-iterations-float", {"deform": {"iterations": 2.5}}, ("deform.iterations",)),
    config_case("config-iterations-null", {"deform": {"iterations": None}}, ("deform.iterations",)),
    config_case("config-iterations-bool", {"deform": {"iterations": True}}, ("deform.iterations",)),
    config_case("config-backend-unknown", {"backend": "vulkan"}, ("backend",)),
    config_case("config-fps-zero", {"outputs": {"fps": 0}}, ("outputs.fps",)),
    config_case("config-cells_per_step-zero", {"deform": {"cells_per_step": 0}}, ("deform.cells_per_step",)),
    config_case("config-mlp_width-zero", {"deform": {"mlp_width": 0}}, ("deform.mlp_width",)),
    config_case("config-holdout-strings", {"holdout_views": ["a"], "holdout_times": [1]}, ("holdout_views",)),
    config_case("config-holdout-out-of-range", {"holdout_views": [9], "holdout_times": [0]}, ("holdout_views",)),
    config_case("config-tracks-unknown", {"tracking": {"tracks": "magic"}}, ("tracking.tracks",)),
    config_case("config-lr-nan", {"deform": {"lr_means": NAN}}, ("deform.lr_means",)),
    config_case("config-lr-inf", {"deform": {"lr_mlp": float("inf")}}, ("deform.lr_mlp",)),
    config_case("config-threads-negative", {"threads": -2}, ("threads",)),
    config_case("config-seed-string", {"seed": "x"}, ("seed",)),
    config_case("config-is-a-list", [1, 2], ()),
    config_case("config-unknown-key", {"deform": {"iterationz": 3}}, ("deform.iterationz",)),
    Case("config-binary", "config", _config_binary),
    # 4. filesystem
    Case("fs-out-below-regular-file", "fs", fs_out_under_file),
    Case("fs-out-under-proc", "fs", fs_out_proc),
    Case("fs-out-read-only-folder", "fs", fs_out_readonly),
    Case("fs-render-out-existing-dir", "fs", fs_render_out_dir),
    Case("fs-render-out-below-file", "fs", fs_render_out_under_file),
    Case("fs-export-out-existing-file", "fs", fs_export_out_file),
    Case("fs-export-out-under-proc", "fs", fs_export_out_proc),
    Case("fs-synth-out-below-file", "fs", fs_synth_out_under_file),
    Case("fs-config-is-a-folder", "fs", fs_config_is_dir),
    # 5. run folders that are not what they claim
    run_case("run-render-ckpt-splats-only", "render", "checkpoints/deform.safetensors", _checkpoint_variant("splats-only")),
    run_case("run-render-ckpt-field-shape", "render", "checkpoints/deform.safetensors", _checkpoint_variant("field-shape")),
    run_case("run-export-ckpt-short-means", "export", "checkpoints/deform.safetensors", _checkpoint_variant("short-means")),
    run_case("run-export-ckpt-bogus", "export", "checkpoints/deform.safetensors", _checkpoint_variant("bogus")),
    run_case("run-resume-tracks-ckpt-bogus", "resume", "checkpoints/tracks.safetensors", _checkpoint_variant("bogus")),
    run_case("run-resume-deform-ckpt-splats-only", "resume", "checkpoints/deform.safetensors", _checkpoint_variant("splats-only")),
    run_case("run-render-ckpt-garbage", "render", "checkpoints/deform.safetensors", _garbage),
    *[run_case(f"run-{cmd}-stages-string", cmd, "run.json", lambda f: edit_json(f, lambda d: setitem(d, "stages", "done")),
               ("stages",)) for cmd in COMMANDS],
    *[run_case(f"run-{cmd}-runjson-list", cmd, "run.json", lambda f: f.write_text("[1, 2]")) for cmd in COMMANDS],
    *[run_case(f"run-{cmd}-runjson-binary", cmd, "run.json", _binary_json) for cmd in COMMANDS],
    run_case("run-export-config-not-json", "export", "config.json", lambda f: f.write_text("{oops")),
    run_case("run-export-config-list", "export", "config.json", lambda f: f.write_text("[]")),
    Case("run-resume-input-gone", "run", _resume_input_gone),
    run_case("run-resume-config-not-json", "resume", "config.json", lambda f: f.write_text("{oops")),
    # 6. poses accepted silently today: mirrors (det -1) and bottom rows that are not [0, 0, 0, 1]
    grid_case("pose-grid-w2c-mirror", ("w2c",), lambda h, r: _each_time(h, 1, mirror), cls="pose"),
    grid_case("pose-grid-w2c-bottom-row", ("w2c",), lambda h, r: _each_time(h, 1, bad_bottom), cls="pose"),
    grid_case("pose-grid-K-negative-focal", ("K",),
              lambda h, r: [row[0].__setitem__(0, -abs(row[0][0])) for row in h["cameras"]["K"][1]], cls="pose"),
    reader_case("pose-videos-w2c-mirror", "pose", "videos",
                cams_json({"views": {"a": {"w2c": W2C_A}, "b": {"w2c": mirror(W2C_B)}}}), ("views.b.w2c",)),
    reader_case("pose-videos-w2c-bottom-row", "pose", "videos",
                cams_json({"views": {"a": {"w2c": W2C_A}, "b": {"w2c": bad_bottom(W2C_B)}}}), ("views.b.w2c",)),
    reader_case("pose-nerfstudio-c2w-mirror", "pose", "nerfstudio",
                ns_json(lambda d: d["frames"][2].__setitem__("transform_matrix", mirror(d["frames"][2]["transform_matrix"]))),
                ("frames[2].transform_matrix",)),
    reader_case("pose-nerfstudio-c2w-bottom-row", "pose", "nerfstudio",
                ns_json(lambda d: d["frames"][2].__setitem__("transform_matrix", bad_bottom(d["frames"][2]["transform_matrix"]))),
                ("frames[2].transform_matrix",)),
    reader_case("pose-dnerf-c2w-bottom-row", "pose", "dnerf",
                dn_json(lambda d: d["frames"][1].__setitem__("transform_matrix", bad_bottom(d["frames"][1]["transform_matrix"]))),
                ("frames[1].transform_matrix",)),
    reader_case("pose-panoptic-w2c-mirror", "pose", "panoptic",
                pan_meta(lambda m: [row.__setitem__(1, mirror(row[1])) for row in m["w2c"]]), ("w2c",)),
    reader_case("pose-panoptic-w2c-bottom-row", "pose", "panoptic",
                pan_meta(lambda m: [row.__setitem__(1, bad_bottom(row[1])) for row in m["w2c"]]), ("w2c",)),
    # 7. numbers on the command line
    Case("cli-seed-huge", "cli", cli_seed_huge),
    Case("cli-scale-negative", "cli", cli_info("--scale", "-1", fld=("--scale",))),
    Case("cli-scale-nan", "cli", cli_info("--scale", "nan", fld=("--scale",))),
    Case("cli-scale-inf", "cli", cli_info("--scale", "inf", fld=("--scale",))),
    Case("cli-scale-negative-reconstruct", "cli", cli_reconstruct("--scale", "-0.5", fld=("--scale",))),
    Case("cli-frames-reversed", "cli", cli_info("--frames", "5:2", fld=("--frames",))),
    Case("cli-frames-step-zero", "cli", cli_info("--frames", "0:3:0", fld=("--frames",))),
    Case("cli-frames-garbage", "cli", cli_info("--frames", "a:b", fld=("--frames",))),
    Case("cli-views-out-of-range", "cli", cli_info("--views", "9", fld=("--views",))),
    Case("cli-render-view-negative", "cli", cli_render_view),
    Case("cli-views-repeat", "cli", cli_reconstruct("--views", "0", "0", fld=("--views",))),
    Case("cli-split-on-grid", "cli", cli_reconstruct("--split", "test", fld=("--split",))),
    Case("cli-generate-seed-huge", "cli", cli_other("generate", "--out", "{out}", "--seed", "99999999999999999999", fld=("--seed",))),
    Case("cli-synth-seed-negative", "cli", cli_other("synth", "--out", "{out}", "--seed", "-4", fld=("--seed",))),
    Case("cli-synth-size-huge", "cli", cli_other("synth", "--out", "{out}", "--size", "100000", "100000", fld=("size",),
                                                  hint=("--size",))),
    Case("cli-synth-supersample-huge", "cli", cli_other("synth", "--out", "{out}", "--supersample", "1000", fld=("supersample",))),
    Case("cli-bench-prune-iterations-negative", "cli", cli_other("bench", "--out", "{out}", "--suite", "synthetic", "--quick",
                                                                 "--prune.iterations", "-5", fld=("prune.iterations",))),
    Case("cli-bench-seeds-negative", "cli", cli_other("bench", "--out", "{out}", "--suite", "synthetic", "--quick",
                                                      "--seeds", "-1", fld=("--seeds",))),
    # Panoptic (train_meta.json)
    reader_case("panoptic-w-fractional", "panoptic", "panoptic", pan_meta(lambda m: setitem(m, "w", 16.5)), ("w",)),
    reader_case("panoptic-fn-length-mismatch", "panoptic", "panoptic", pan_meta(lambda m: m["fn"].pop()), ("fn",)),
    reader_case("panoptic-cam_id-strings", "panoptic", "panoptic",
                pan_meta(lambda m: setitem(m, "cam_id", [["1", "2"] for _ in m["cam_id"]])), ("cam_id",)),
    reader_case("panoptic-k-entry-object", "panoptic", "panoptic", pan_meta(lambda m: m["k"][1].__setitem__(0, {"fx": 30})),
                ("k[1][0]",)),
    reader_case("panoptic-k-numeric-strings", "panoptic", "panoptic",
                pan_meta(lambda m: m["k"][0].__setitem__(1, [[str(x) for x in row] for row in m["k"][0][1]])), ("k[0][1]",)),
    reader_case("panoptic-w2c-null-entries", "panoptic", "panoptic",
                pan_meta(lambda m: m["w2c"][2].__setitem__(0, [[None] * 4] * 4)), ("w2c[2][0]",)),
    reader_case("panoptic-meta-binary", "panoptic", "panoptic", _file_into("train_meta.json", _binary_json)),
    reader_case("panoptic-image-corrupt", "panoptic", "panoptic", _file_into("ims/2/000001.jpg", _garbage)),
    reader_case("panoptic-test-meta-missing", "panoptic", "panoptic", _file_into("test_meta.json", _unlink),
                argv=lambda r: ["info", str(r), "--split", "all"]),
    # nerfstudio transforms.json
    reader_case("nerfstudio-frames-string", "nerfstudio", "nerfstudio", ns_json(lambda d: setitem(d, "frames", "abc")), ("frames",)),
    reader_case("nerfstudio-json-list", "nerfstudio", "nerfstudio", _file_into("transforms.json", lambda f: f.write_text("[]"))),
    reader_case("nerfstudio-file_path-missing", "nerfstudio", "nerfstudio", ns_json(lambda d: d["frames"][3].pop("file_path")),
                ("frames[3].file_path",)),
    reader_case("nerfstudio-file_path-int", "nerfstudio", "nerfstudio", ns_json(lambda d: d["frames"][0].__setitem__("file_path", 7)),
                ("frames[0].file_path",)),
    reader_case("nerfstudio-image-missing", "nerfstudio", "nerfstudio", _file_into("images/v1_t2.png", _unlink)),
    reader_case("nerfstudio-image-corrupt", "nerfstudio", "nerfstudio", _file_into("images/v0_t1.png", _garbage)),
    reader_case("nerfstudio-fl_x-string", "nerfstudio", "nerfstudio", ns_json(lambda d: setitem(d, "fl_x", "30")), ("fl_x",)),
    reader_case("nerfstudio-time-string", "nerfstudio", "nerfstudio", ns_json(lambda d: d["frames"][2].__setitem__("time", "0.1")),
                ("frames[2].time",)),
    reader_case("nerfstudio-transform-string", "nerfstudio", "nerfstudio",
                ns_json(lambda d: d["frames"][4].__setitem__("transform_matrix", "eye")), ("frames[4].transform_matrix",)),
    reader_case("nerfstudio-camera_id-list", "nerfstudio", "nerfstudio", ns_json(lambda d: d["frames"][1].__setitem__("camera_id", [1])),
                ("frames[1].camera_id",)),
    reader_case("nerfstudio-h-bool", "nerfstudio", "nerfstudio", ns_json(lambda d: setitem(d, "h", True)), ("h",)),
    reader_case("nerfstudio-mask-files-missing", "nerfstudio", "nerfstudio",
                lambda r: (ns_json(lambda d: [f.__setitem__("mask_path", f"masks/{i}.png") for i, f in enumerate(d["frames"])])(r),
                           r / "masks" / "0.png")[1]),
    # D-NeRF transforms_train.json
    reader_case("dnerf-camera_angle_x-string", "dnerf", "dnerf", dn_json(lambda d: setitem(d, "camera_angle_x", "wide")),
                ("camera_angle_x",)),
    reader_case("dnerf-camera_angle_x-negative", "dnerf", "dnerf", dn_json(lambda d: setitem(d, "camera_angle_x", -0.5)),
                ("camera_angle_x",)),
    reader_case("dnerf-camera_angle_x-above-pi", "dnerf", "dnerf", dn_json(lambda d: setitem(d, "camera_angle_x", 3.5)),
                ("camera_angle_x",)),
    reader_case("dnerf-camera_angle_y-above-pi", "dnerf", "dnerf", dn_json(lambda d: setitem(d, "camera_angle_y", 4.0)),
                ("camera_angle_y",)),
    reader_case("dnerf-intrinsics-missing", "dnerf", "dnerf", dn_json(lambda d: d.pop("camera_angle_x")), ("camera_angle_x", "fl_x")),
    reader_case("dnerf-image-missing", "dnerf", "dnerf", lambda r: (_unlink(r / "train" / "r_001.png"), r / "train" / "r_001")[1]),
    reader_case("dnerf-time-missing", "dnerf", "dnerf", dn_json(lambda d: d["frames"][1].pop("time")), ("frames[1].time",)),
    # folder of videos (+ cameras.json)
    reader_case("videos-corrupt-video", "videos", "videos", _file_into("b.mp4", _garbage)),
    reader_case("videos-truncated-video", "videos", "videos", _file_into("a.mp4", _truncate)),
    reader_case("videos-empty-video", "videos", "videos", _file_into("b.mp4", lambda f: f.write_bytes(b""))),
    reader_case("videos-K-wrong-shape", "videos", "videos", cams_json({"K": [[30, 0, 12], [0, 30, 8]]}), ("K",)),
    reader_case("videos-w2c-wrong-shape", "videos", "videos",
                cams_json({"views": {"a": {"w2c": np.eye(3).tolist()}, "b": {"w2c": np.eye(3).tolist()}}}), ("views.a.w2c",)),
    reader_case("videos-views-list", "videos", "videos", cams_json({"views": ["a", "b"]}), ("views",)),
    reader_case("videos-fov-string", "videos", "videos", cams_json({"fov_deg": "60"}), ("fov_deg",)),
    reader_case("videos-cameras-binary", "videos", "videos", _file_into("cameras.json", _binary_json)),
    # .ply (no command reads a ply sequence in this build: `recon view` is absent; both are refused as input)
    Case("ply-truncated-file-as-input", "ply", ply_truncated_file),
    Case("ply-bad-header-sequence-as-input", "ply", ply_bad_header_sequence),
]


assert len({c.name for c in CASES}) == len(CASES)


# --- the test ------------------------------------------------------------------------------------
class _CaseTimeout(BaseException):
    pass


def _where(e: BaseException) -> str:
    """``recon/...:line`` of the innermost frame in recon/ (and the innermost frame overall)."""
    frames = traceback.extract_tb(e.__traceback__)
    ours = [f for f in frames if Path(f.filename).resolve().is_relative_to(RECON_DIR)]
    inner = frames[-1] if frames else None
    out = []
    if ours:
        out.append(f"{Path(ours[-1].filename).resolve().relative_to(REPO)}:{ours[-1].lineno} ({ours[-1].name})")
    if inner is not None and (not ours or inner is not ours[-1]):
        out.append(f"innermost {inner.filename}:{inner.lineno}")
    return "; ".join(out) or "?"


def _field_of(msg: str) -> str:
    """The field an error line names: ``PATH [FIELD]: ...`` or ``FIELD: ...`` (no path)."""
    body = msg[len("recon: error:"):].strip()
    m = re.match(r"^.*? \[(.*?)\]: ", body)
    if m:
        return m.group(1)
    head = body.split(": ", 1)[0]
    return head if " " not in head and "/" not in head else ""


def _call(argv: list[str]) -> tuple[int | None, BaseException | None]:
    """``main(argv)`` under a time limit -> (exit code, exception that escaped)."""

    def on_alarm(signum, frame):
        raise _CaseTimeout()

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(CASE_TIMEOUT_S)
    try:
        return main(argv), None
    except _CaseTimeout as e:
        return None, e
    except Exception as e:  # noqa: BLE001 - an escaping exception is what this test reports
        return None, e
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture(autouse=True)
def _short_fits(monkeypatch: pytest.MonkeyPatch):
    """A config that slips through with iterations <= 0 would otherwise fit for ~1000 steps (auto sizing)."""
    import recon.fit.deform as deform

    monkeypatch.setattr(deform, "auto_iterations", lambda *a, **k: 10, raising=False)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case: Case, fx: Fx, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "case"
    work.mkdir()
    spec = case.build(work, fx)
    for k, v in spec.env.items():
        monkeypatch.setenv(k, v)
    before = {p: snapshot(p) for p in spec.keep}
    capsys.readouterr()
    code, escaped = _call(spec.argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    msg = next((ln for ln in lines if ln.startswith("recon: error:")), "")

    problems: list[str] = []
    if isinstance(escaped, _CaseTimeout):
        problems.append(f"still running after {CASE_TIMEOUT_S} s (accepted?)")
    elif escaped is not None:
        problems.append(f"ESCAPED {type(escaped).__name__}: {str(escaped)[:200]!r} at {_where(escaped)}")
    elif code != 2:
        problems.append(f"exit {code}")
    if escaped is None:
        if len(lines) != 1:
            problems.append(f"{len(lines)} non-empty stderr lines")
        if not msg:
            problems.append("no 'recon: error:' line")
        else:
            if not lines[0].startswith("recon: error:"):
                problems.append("the error is not the first line")
            if spec.path is not None and str(spec.path) not in msg and Path(spec.path).name not in msg:
                problems.append(f"does not name {Path(spec.path).name}")
            if spec.field and not any(f in _field_of(msg) for f in spec.field):
                problems.append(f"names field {_field_of(msg)!r}, expected {spec.field[0]!r}")
            if spec.hint and not any(h in msg for h in spec.hint):
                problems.append(f"no hint ({' / '.join(spec.hint)})")
        if "Traceback" in err:
            problems.append("traceback on stderr")
    for p, snap in before.items():
        now = snapshot(p)
        if now != snap:
            if snap is None or now is None:
                problems.append(f"{p.name} {'appeared' if snap is None else 'disappeared'}")
            else:
                changed = sorted(k for k in set(snap) | set(now) if snap.get(k) != now.get(k))
                problems.append(f"{p.name} changed: {', '.join(changed[:5]) or '(itself)'}")
    for p in spec.absent:
        if p.exists():
            problems.append(f"left {p.name}{'/' if p.is_dir() else ''} behind")
    if not problems:
        return
    if code == 1 and any(ln.startswith("recon: internal error:") for ln in lines):
        # where it was raised: the same case again, in a fresh folder, with --debug
        again = tmp_path / "debug"
        again.mkdir()
        dspec = case.build(again, fx)
        _, e = _call(dspec.argv + ["--debug"])
        capsys.readouterr()
        if e is not None:
            problems.append(f"raised {type(e).__name__} at {_where(e)}")
    shown = " || ".join(ln[:300] for ln in lines[-6:])
    pytest.fail(f"[{case.cls}] " + "; ".join(problems) + (f" | stderr: {shown}" if shown else " | stderr empty"), pytrace=False)
