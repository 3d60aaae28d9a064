"""The validation layer (recon.schema, recon.config) and the CLI boundary (recon.cli.main):
specs, config field coverage, OS errors in words, internal errors as one line."""

from __future__ import annotations

import dataclasses
import errno
import json

import numpy as np
import pytest

from recon import schema as S
from recon.cli import main
from recon.config import CHOICES, LIMITS, ReconstructConfig, check_config, config_fields, config_from_dict, field_spec
from recon.errors import InputError


def _fails(spec, value, *needles):
    with pytest.raises(InputError) as e:
        spec.check(value, "f.json", "a.b")
    msg = str(e.value)
    assert msg.startswith("f.json [a.b"), msg
    for n in needles:
        assert n in msg, msg
    return msg


def test_specs_accept_and_refuse():
    assert S.Int(min=1).check(3, None, "") == 3 and S.Int().check(4.0, None, "") == 4
    _fails(S.Int(), True, "integer")
    _fails(S.Int(), 2.5, "integer")
    _fails(S.Int(min=1, max=3), 4, "[1, 3]")
    assert S.Num(gt=0).check(2, None, "") == 2.0
    _fails(S.Num(), float("nan"), "finite")
    _fails(S.Num(gt=0), 0, "> 0")
    _fails(S.Num(), "1", "number")
    _fails(S.Bool(), 1, "true/false")
    _fails(S.Str(("a", "b")), "c", "one of: a, b")
    _fails(S.List(S.Int(), min_len=2, max_len=2), [1], "2 items")
    assert "a.b[1]" in _fails(S.List(S.Int()), [1, "x"])
    a = S.Array((2, -1)).check([[1, 2, 3], [4, 5, 6]], None, "")
    assert a.dtype == np.float64 and a.shape == (2, 3)
    _fails(S.Array((2, 2)), [[1, 2], [3]], "ragged")
    _fails(S.Array((2,)), [1, "2"], "got a string")
    _fails(S.Array((2,)), [1, True], "true/false")
    _fails(S.Array((2, 2)), [[1, 2], [3, float("inf")]], "NaN or inf", "[1, 1]")
    _fails(S.Array((3,)), [1, 2], "shape 3")
    assert S.Optional(S.Int()).check(None, None, "") is None
    _fails(S.PathStr(), "", "file path")
    _fails(S.PathStr(), "a" * 300, "usable")
    _fails(S.PathStr(name_only=True), "x/y.ply", "without folders")


def test_obj_fields_defaults_and_unknown_keys():
    spec = S.Obj({"n": S.Int(), "s": S.Optional(S.Str())}, defaults={"n": 1})
    out = spec.check({"x": 5}, None, "")
    assert out == {"x": 5, "n": 1, "s": None}
    strict = S.Obj({"n": S.Int()}, extra=False)
    _fails(strict, {"n": 1, "m": 2}, "unknown field")
    _fails(S.Obj({"n": S.Int()}), {}, "missing field")
    _fails(S.Obj(), [1], "expected an object")
    mutable = S.Obj({"d": S.Obj()}, defaults={"d": {}})
    first = mutable.check({}, None, "")
    first["d"]["k"] = 1
    assert mutable.check({}, None, "")["d"] == {}  # defaults are copied, never shared


def test_check_poses_and_tensors():
    eye = np.eye(4)
    S.check_poses(np.stack([eye, eye]), "p", "w2c")
    mirror = eye.copy()
    mirror[0, 0] = -1
    with pytest.raises(InputError, match=r"w2c\[1\].*mirror"):
        S.check_poses(np.stack([eye, mirror]), "p", "w2c")
    row = eye.copy()
    row[3, 0] = 0.5
    with pytest.raises(InputError, match="bottom row"):
        S.check_poses(row, "p", "w2c")
    import torch

    spec = {"a": ("N", 3), "b": ("N",), "c?": (2,)}
    S.check_tensors({"a": torch.zeros(4, 3), "b": torch.zeros(4)}, spec, "ck")
    with pytest.raises(InputError, match=r"ck \[b\].*dimension N"):
        S.check_tensors({"a": torch.zeros(4, 3), "b": torch.zeros(5)}, spec, "ck")
    with pytest.raises(InputError, match=r"\[a\]: missing tensor"):
        S.check_tensors({"b": torch.zeros(5)}, spec, "ck")
    with pytest.raises(InputError, match="NaN"):
        S.check_tensors({"a": torch.full((1, 3), float("nan")), "b": torch.zeros(1)}, spec, "ck")
    with pytest.raises(InputError, match="dimension N is 4 here but 2"):
        S.check_tensors({"a": torch.zeros(4, 3), "b": torch.zeros(4)}, spec, "ck", {"N": 2})


def test_read_json_errors_name_the_file(tmp_path):
    f = tmp_path / "x.json"
    for raw, needle in ((b"\xff\xfe{", "UTF-8"), (b"{", "invalid JSON at line 1"), (b"[" * 100000, "nested too deeply")):
        f.write_bytes(raw)
        with pytest.raises(InputError, match=needle) as e:
            S.read_json(f)
        assert str(f) in str(e.value)
    with pytest.raises(InputError, match="does not exist"):
        S.read_json(tmp_path / "none.json")
    with pytest.raises(InputError, match="found a folder"):
        S.read_json(tmp_path)


def test_every_config_field_has_a_spec_and_the_tables_name_real_fields():
    fields = config_fields()
    assert len(fields) > 80
    for key, hint in fields.items():
        field_spec(key, hint)  # raises TypeError for an annotation without a spec
    assert set(LIMITS) <= set(fields), set(LIMITS) - set(fields)
    assert set(CHOICES) <= set(fields), set(CHOICES) - set(fields)
    check_config(ReconstructConfig())  # the defaults are in range
    for key in CHOICES:  # the default of every choice field is one of its choices
        assert field_spec(key, fields[key]).choices


@pytest.mark.parametrize("override,needle", [
    ({"deform": {"iterations": -1}}, "[deform.iterations]"),
    ({"deform": {"iterations": None}}, "got null"),
    ({"deform": {"density": {"start": 0.9, "stop": 0.1}}}, "[deform.density.start]"),
    ({"outputs": {"fps": 0}}, "[outputs.fps]"),
    ({"backend": "vulkan"}, "one of: auto"),
    ({"seed": 2**70}, "[seed]"),
    ({"holdout_views": [0, "1"]}, "[holdout_views[1]]"),
    ({"monocular": {"grid": 1}}, "[monocular.grid]"),
    ({"deform": "fast"}, "[deform]: expected an object"),
])
def test_config_values_are_range_checked(override, needle):
    with pytest.raises(InputError) as e:
        config_from_dict(override, source="cfg.json")
    assert needle in str(e.value) and str(e.value).startswith("cfg.json"), str(e.value)


def test_int_valued_floats_are_accepted_for_int_fields():
    cfg = config_from_dict({"deform": {"iterations": 100.0}, "outputs": {"fps": 12}})
    assert cfg.deform.iterations == 100 and isinstance(cfg.deform.iterations, int)
    assert cfg.outputs.fps == 12.0 and isinstance(cfg.outputs.fps, float)
    assert dataclasses.asdict(cfg)["deform"]["iterations"] == 100


def test_cli_os_errors_are_one_line_exit_2(tmp_path, capsys, monkeypatch):
    import tempfile

    def refuse(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path))

    monkeypatch.setattr(tempfile, "mkdtemp", refuse)
    assert main(["reconstruct", str(tmp_path / "none"), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "read-only file system" in err[0] and "[--out]" in err[0], err


@pytest.mark.parametrize("code,words", [(errno.ENOSPC, "no space left"), (errno.EACCES, "permission denied"),
                                        (errno.ENOTDIR, "is a file, not a folder"), (errno.EISDIR, "is a folder")])
def test_os_errors_raised_inside_a_command_are_worded(code, words, capsys, monkeypatch, tmp_path):
    import recon.commands.synth as synth_cmd

    def boom(out: str = "g") -> None:
        raise OSError(code, "x", str(tmp_path / "f.png"))

    monkeypatch.setattr(synth_cmd, "synth", boom)
    assert main(["synth", "--out", str(tmp_path / "g")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0] and "f.png" in err[0], err


def test_internal_errors_are_one_line_exit_1_and_debug_shows_them(capsys, monkeypatch, tmp_path):
    import recon.commands.synth as synth_cmd

    def bug(out: str = "g") -> None:
        raise ZeroDivisionError("oops")

    monkeypatch.setattr(synth_cmd, "synth", bug)
    assert main(["synth", "--out", str(tmp_path / "g")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "internal error: ZeroDivisionError: oops" in err[0] and "--debug" in err[0], err
    with pytest.raises(ZeroDivisionError):
        main(["synth", "--out", str(tmp_path / "g"), "--debug"])


def _tiny_inputs(tmp_path):
    """A 3 x 2 grid folder at 16 x 16 and a config file of a seconds-long fit."""
    from recon.io.gridfolder import write_grid
    from recon.synth import make_grid

    grid = write_grid(make_grid("orbit", views=3, frames=2, size=(16, 16), seed=1, supersample=1), tmp_path / "g")
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"prune": {"iterations": 2}, "deform": {"iterations": 4, "warmup": 1, "mlp_width": 8,
                                                                       "mlp_depth": 1}, "outputs": {"preview_video": False}}))
    return grid, cfg


def test_resume_refuses_a_bad_checkpoint_before_any_work(tmp_path, capsys):
    from safetensors.torch import save_file

    import torch

    grid, cfg = _tiny_inputs(tmp_path)
    run = tmp_path / "run"
    assert main(["reconstruct", str(grid), "--out", str(run), "--config", str(cfg), "--device", "cpu"]) == 0
    ck = run / "checkpoints" / "canonical.safetensors"
    save_file({"splats.means": torch.zeros(3, 3)}, str(ck), metadata={"format": "recon-run", "version": "1"})
    before = (run / "run.json").read_bytes()
    capsys.readouterr()
    assert main(["reconstruct", "--out", str(run), "--resume", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "canonical.safetensors" in err[0] and "missing tensor" in err[0], err
    assert (run / "run.json").read_bytes() == before


def _other_value(key, hint, default):
    """A valid value different from ``default`` for config field ``key``, as command-line text."""
    spec = field_spec(key, hint)
    spec = getattr(spec, "spec", spec)  # Optional -> inner
    if default is None and isinstance(spec, (S.Int, S.Num)):  # an optional number left unset (None)
        default = 0
    if isinstance(spec, S.Bool):
        return str(not default).lower(), (not default)
    if isinstance(spec, S.Str):
        if spec.choices:
            v = next(c for c in spec.choices if c != default)
            return v, v
        return "some/path.npz", "some/path.npz"
    if isinstance(spec, S.List):
        return "1,2", [1, 2]
    if isinstance(spec, S.Int):
        lo, hi = spec.min if spec.min is not None else 0, spec.max if spec.max is not None else 2**31 - 1
        v = default + 1 if default + 1 <= hi else max(lo, default - 1)
        return str(v), v
    lo = spec.min if spec.min is not None else (spec.gt if spec.gt is not None else 0.0)
    hi = spec.max if spec.max is not None else max(1.0, 2 * default + 1)
    v = round((default + (hi if default < hi else lo)) / 2 if default != 0 else min(hi, 0.5), 6)
    if spec.gt is not None and v <= spec.gt:
        v = (spec.gt + hi) / 2
    return repr(float(v)), float(v)


def test_every_config_field_is_a_command_line_flag():
    from recon.config import FLAT_FLAGS, split_config_flags

    defaults = dataclasses.asdict(ReconstructConfig())
    argv, want = ["reconstruct", "in"], {}
    for key, hint in config_fields().items():
        if "." not in key and key not in FLAT_FLAGS:
            continue  # seed / holdout_views / holdout_times: --seed and --holdout
        d = defaults
        for p in key.split("."):
            d = d[p]
        text, value = _other_value(key, hint, d)
        argv += [f"--{key}", text]
        want[key] = value
    rest, nested = split_config_flags(argv)
    assert rest == ["reconstruct", "in"]
    cfg = dataclasses.asdict(config_from_dict(nested, source="command line"))
    for key, value in want.items():
        got = cfg
        for p in key.split("."):
            got = got[p]
        assert got == value, (key, got, value)
    assert len(want) == len(config_fields()) - 3  # all but seed, holdout_views, holdout_times


def test_config_flags_land_in_config_json_on_top_of_the_file(tmp_path, capsys):
    grid, cfg = _tiny_inputs(tmp_path)
    run = tmp_path / "run"
    assert main(["reconstruct", str(grid), "--out", str(run), "--config", str(cfg), "--device", "cpu",
                 "--deform.iterations", "6", "--prune.enabled=false", "--threads", "1"]) == 0
    saved = json.loads((run / "config.json").read_text())
    assert saved["deform"]["iterations"] == 6 and saved["prune"]["enabled"] is False and saved["threads"] == 1
    assert saved["deform"]["mlp_width"] == 8  # the file's value stays where no flag overrides it
    capsys.readouterr()
    assert main(["reconstruct", str(grid), "--out", str(tmp_path / "r2"), "--deform.iterations", "-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "[deform.iterations]" in err[0], err
