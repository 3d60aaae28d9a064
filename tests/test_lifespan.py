"""Splats with a life in time (``DeformField.lifespan``): the opacity factor, its gradients, renders
at a time, checkpoints, the .ply sequence's per-frame opacities, and the monocular initialisation
that carves several windows of a moving scene (each window's splats where its objects are then)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from recon.model.deform import DeformField
from recon.model.scene import DeformableScene
from recon.model.splats import Splats


def _field(P: int, lifespan: bool = True) -> DeformField:
    return DeformField(torch.zeros(P, 1, 3), torch.zeros(3), 1.0, (0.0, 2.0), lifespan=lifespan)


def test_life_is_a_gaussian_of_normalised_time_and_scales_the_peak_opacity() -> None:
    f = _field(3)
    with torch.no_grad():  # centres at tau = -1, 0, 1 (grid times 0, 1, 2), widths 0.5 in tau
        f.lifespan.copy_(torch.tensor([[-1.0, math.log(0.5)], [0.0, math.log(0.5)], [1.0, math.log(0.5)]]))
    w = f.life(1.0)  # tau 0
    assert torch.allclose(w, torch.tensor([math.exp(-2.0), 1.0, math.exp(-2.0)]), atol=1e-6)
    o = torch.tensor([0.3, -1.0, 2.0], requires_grad=True)
    got = f.opacity_logits_at(o, 1.0)
    want = torch.logit(torch.sigmoid(o) * f.life(1.0))
    assert torch.allclose(got, want, atol=1e-5)
    # gradients reach the peak opacities and the lifespans, as the direct formula's do
    g1 = torch.autograd.grad(torch.sigmoid(got).sum(), [o, f.lifespan])
    g2 = torch.autograd.grad((torch.sigmoid(o) * f.life(1.0)).sum(), [o, f.lifespan])
    for a, b in zip(g1, g2):
        assert torch.allclose(a, b, atol=1e-5)
    # far from its centre a splat is fully transparent, without NaN or inf
    with torch.no_grad():
        f.lifespan[2, 1] = math.log(0.05)  # 40 widths from tau = -1: exp(-800), below float range
    far = f.opacity_logits_at(torch.tensor([5.0, 5.0, 5.0]), 0.0)
    assert torch.isfinite(far).all() and torch.sigmoid(far)[2] < 1e-10
    # no lifespans: the logits pass through
    g = _field(3, lifespan=False)
    assert g.life(1.0) is None and g.opacity_logits_at(o, 1.0) is o


def _scene(life: bool) -> DeformableScene:
    """Two splats in front of a camera at x = -0.3 and +0.3; the first lives at time 0, the second at time 1."""
    sp = Splats(torch.tensor([[-0.3, 0.0, 3.0], [0.3, 0.0, 3.0]]), torch.full((2,), math.log(0.1)), torch.full((2,), 3.0),
                torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]))
    f = DeformField(torch.zeros(2, 1, 3), torch.zeros(3), 1.0, (0.0, 1.0), lifespan=life)
    if life:
        with torch.no_grad():
            f.lifespan.copy_(torch.tensor([[-1.0, math.log(0.3)], [1.0, math.log(0.3)]]))
    K = torch.tensor([[40.0, 0, 16], [0, 40.0, 16], [0, 0, 1]])
    return DeformableScene(sp, f, torch.eye(4).expand(1, 2, 4, 4).clone(), K.expand(1, 2, 3, 3).clone(),
                           torch.tensor([0.0, 1.0]), (32, 32))


def test_a_splat_shows_only_around_its_time_and_mixed_time_batches_render_per_cell() -> None:
    sc = _scene(True)
    rgb, alpha, _, _ = sc.render([(0, 0), (0, 1)], backend="torch")
    left, right = alpha[:, 16, 12, 0], alpha[:, 16, 20, 0]  # the two splats' pixels
    assert left[0] > 0.5 and right[0] < 0.01  # time 0: the first splat only
    assert right[1] > 0.5 and left[1] < 0.01  # time 1: the second only
    for k, c in enumerate([(0, 0), (0, 1)]):
        one, _, _, _ = sc.render([c], backend="torch")
        assert torch.allclose(one[0], rgb[k], atol=1e-6)
    cam = sc.render_camera(torch.eye(4), sc.Ks[0, 0], (32, 32), 1.0, backend="torch")
    assert torch.allclose(cam, rgb[1], atol=1e-6)
    both, a2, _, _ = _scene(False).render([(0, 0)], backend="torch")  # without lifespans both show
    assert a2[0, 16, 12, 0] > 0.5 and a2[0, 16, 20, 0] > 0.5


def test_lifespans_survive_a_checkpoint_and_reach_the_ply_sequence(tmp_path: Path) -> None:
    from recon.fit.evaluate import write_ply
    from recon.io.plyseq import read_ply_sequence

    sc = _scene(True)
    sc.save(tmp_path / "s.safetensors")
    back = DeformableScene.load(tmp_path / "s.safetensors")
    assert back.field.has_lifespan and torch.equal(back.field.lifespan, sc.field.lifespan)
    old = _scene(False)
    old.save(tmp_path / "o.safetensors")
    assert not DeformableScene.load(tmp_path / "o.safetensors").field.has_lifespan
    out = write_ply(sc, tmp_path / "run", None, "test", "s", world=False)
    seq = read_ply_sequence(out)
    assert seq.manifest["per_frame_attributes"] == ["opacity"] and seq.opacity_logits.shape == (2, 2)
    op = 1 / (1 + np.exp(-seq.opacity_logits.astype(np.float64)))
    assert op[0, 0] > 0.5 > 0.01 > op[0, 1] and op[1, 1] > 0.5 > 0.01 > op[1, 0]
    plain = read_ply_sequence(write_ply(old, tmp_path / "run2", None, "test", "s", world=False))
    assert plain.opacity_logits is None and "per_frame_attributes" not in plain.manifest


def test_life_windows_spread_runs_of_consecutive_frames_over_the_sequence() -> None:
    from recon.fit.monocular import MonocularConfig, life_windows, reference_window

    class G:  # the two fields life_windows / reference_window read
        times = np.linspace(0.0, 1.0, 40)
        ref_time = 20

    cells = [(0, j) for j in range(40) if j % 5 != 2]  # 32 training frames
    ws = life_windows(G, cells, MonocularConfig(window=6, windows=4))
    assert [len(w) for w in ws] == [6] * 4
    for w in ws:  # consecutive training frames, in time order
        idx = [cells.index(c) for c in w]
        assert idx == list(range(idx[0], idx[0] + 6))
    starts = [cells.index(w[0]) for w in ws]
    assert starts[0] == 1 and starts[-1] == 25 and all(b > a for a, b in zip(starts, starts[1:]))
    assert life_windows(G, cells, MonocularConfig(window=6, windows=1)) == [reference_window(G, cells, 6)]


@pytest.fixture(scope="module")
def moving(tmp_path_factory) -> Path:
    from test_monocular import make_moving_dnerf

    return make_moving_dnerf(tmp_path_factory.mktemp("dnerf") / "scene")


def test_windows_carve_the_moving_ball_where_it_is_at_each_windows_time(moving: Path) -> None:
    from recon.fit.monocular import MonocularConfig, init_monocular, life_windows
    from recon.io import LoadOptions
    from recon.io.protocol import load_protocol

    grid, proto = load_protocol(moving, LoadOptions(), "test")
    train = [(0, j) for j in range(grid.num_times) if j not in proto["times"]]
    cfg = MonocularConfig(points=3000, grid=32, window=6, windows=3)
    can, rep = init_monocular(grid, train, cfg)
    assert can.lifespan is not None and can.lifespan.shape == (can.splats.num, 2) and len(rep["windows"]) == 3
    wins = life_windows(grid, train, cfg)
    centres = [np.mean([grid.times[j] for _, j in w]) for w in wins]
    assert sorted({round(float(c), 5) for c in can.lifespan[:, 0]}) == sorted(round(float(c), 5) for c in centres)
    # the red ball moves along world x from -0.8 to 0.8: its splats sit further along x in each later window
    T = torch.from_numpy(grid.canonical_to_world()).float()
    world = can.splats.means.detach() @ T[:3, :3].T + T[:3, 3]
    col = can.splats.colors.detach()
    red = (col[:, 0] > 0.5) & (col[:, 2] < 0.5)
    xs = [float(world[red & (can.lifespan[:, 0] == c), 0].mean()) for c in can.lifespan[:, 0].unique().sort().values]
    assert xs[0] < -0.3 and xs[-1] > 0.3 and xs[0] < xs[1] < xs[2], xs


def test_a_window_whose_carving_is_empty_is_carved_again_with_a_lower_vote_or_dropped(monkeypatch) -> None:
    import recon.fit.monocular as M
    from recon.errors import InputError

    tried: list[tuple[int, float]] = []

    def fake(grid, window, config, rng, points, bg):  # window 0 carves at vote 0.6, window 2 never
        tried.append((window[0][1], config.vote))
        if window[0][1] == 2 or (window[0][1] == 0 and config.vote > 0.6):
            raise InputError("space carving left no point", "x", "w2c")
        return np.zeros((points, 3)), np.zeros((points, 3)), {"window_frames": window}

    monkeypatch.setattr(M, "_carve_cells", fake)
    grid = type("G", (), {"times": np.arange(3.0), "source": "x"})()
    windows = [[(0, 0)], [(0, 1)], [(0, 2)]]
    parts, kept, dropped = M._carve_windows(grid, windows, M.MonocularConfig(points=30), np.random.default_rng(0), None)
    assert kept == windows[:2] and [p[2]["vote"] for p in parts] == [0.6, 0.9]
    assert dropped == [{"window_times": [2.0, 2.0]}] and len(parts[0][0]) == 10
    assert [v for j, v in tried if j == 2] == [0.9, 0.75, 0.6, 0.5]
    with pytest.raises(InputError, match="in any window"):
        M._carve_windows(grid, [[(0, 2)]] * 2, M.MonocularConfig(), np.random.default_rng(0), None)


def test_a_render_leaves_out_the_splats_not_alive_then_and_changes_no_pixel_or_gradient() -> None:
    """``DeformableScene.alive_rows``: splats whose opacity at a time (peak x life factor) is below
    LIFE_MIN (1/255) are left out of that time's render (their MLP and projection skipped). The rasterizer culls them anyway, so the
    image, the gradients of the alive splats and density control's statistics are the same as a
    render of all of them; the left-out splats get none of the photometric gradient."""
    from recon.fit.density import DensityConfig, DensityControl

    torch.manual_seed(0)
    P = 300
    means = torch.randn(P, 3) * 0.4 + torch.tensor([0.0, 0.0, 3.0])
    sp = Splats(means, torch.full((P,), math.log(0.08)), torch.randn(P), torch.rand(P, 3))
    f = DeformField(torch.zeros(P, 1, 3), torch.tensor([0.0, 0.0, 3.0]), 1.0, (0.0, 8.0), lifespan=True,
                    activation="leaky_relu")
    for m in f.mlp:
        if hasattr(m, "weight"):
            torch.nn.init.normal_(m.weight, std=0.05)
    with torch.no_grad():  # three groups living around tau -1, 0, 1, narrow: at tau -1 the third is dead
        c = torch.tensor([-1.0, 0.0, 1.0])[torch.arange(P) % 3]
        f.lifespan.copy_(torch.stack([c, torch.full((P,), math.log(0.3))], 1))
        sp.opacity_logits[::7] = math.log(0.002 / 0.998)  # faint: dead at every time by their peak opacity
    K = torch.tensor([[40.0, 0, 16], [0, 40.0, 16], [0, 0, 1]])
    T = 9
    scene = DeformableScene(sp, f, torch.eye(4).expand(1, T, 4, 4).clone(), K.expand(1, T, 3, 3).clone(),
                            torch.arange(T).float(), (32, 32), background=torch.ones(3))
    rows = scene.alive_rows(0)  # time 0 = tau -1
    assert rows is not None and 0 < len(rows) < P
    life = f.life(0.0).detach()
    peak = torch.sigmoid(sp.opacity_logits.detach())
    shown = peak * life >= 1.0 / 255
    assert torch.equal(rows, shown.nonzero().squeeze(1))
    assert int(((life >= 1.0 / 255) & ~shown).sum()) > 0  # some are alive by life, culled by their peak

    def step(cull: bool):
        for p in (sp.means, sp.colors, sp.opacity_logits, sp.log_scales, *f.mlp.parameters()):
            p.grad = None
        if not cull:
            scene.alive_rows = lambda j: None  # the full render, for reference
        rgb, alpha, _, meta = scene.render([(0, 0)], backend="torch")
        scene.__dict__.pop("alive_rows", None)
        meta["means2d"].retain_grad()
        ((rgb - 0.3) ** 2).sum().backward()
        dc = DensityControl(DensityConfig(), 1.0, (32, 32), torch.Generator())
        dc.observe(type("Ctx", (), {"meta": meta})())
        return (rgb.detach(), sp.means.grad.clone(), sp.opacity_logits.grad.clone(),
                [p.grad.clone() for p in f.mlp.parameters()], dc.grad.clone(), dc.count.clone(), dc.radius.clone(), meta)

    full, cut = step(False), step(True)
    assert "rows" not in full[-1] and torch.equal(cut[-1]["rows"], rows) and cut[-1]["cell_means"].shape[1] == len(rows)
    assert torch.allclose(full[0], cut[0], atol=1e-6)
    for a, b in zip(full[1:3], cut[1:3]):
        assert torch.allclose(a, b, atol=1e-5)
    for a, b in zip(full[3], cut[3]):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)
    for a, b in zip(full[4:7], cut[4:7]):  # density statistics scattered back to all P rows
        assert a.shape == (P,) and torch.allclose(a, b, atol=1e-6)
    dead = torch.ones(P, dtype=torch.bool)
    dead[rows] = False
    assert float(cut[1][dead].abs().max()) == 0.0 and float(full[1][dead].abs().max()) == 0.0
    # every splat alive (time 4 = tau 0 with wide lives): the plain render
    with torch.no_grad():
        f.lifespan[:, 1] = math.log(5.0)
        sp.opacity_logits[::7] = 0.0
    assert scene.alive_rows(4) is None
