"""The fit engine and density control: rows stay aligned (parameters, buffers, Adam moments, view
offsets, dynamic flags) through clone / split / prune; opacity reset; camera appearance; the
static background; one loop for every phase."""

from __future__ import annotations

import math

import pytest
import torch

from recon.fit.density import DensityConfig, DensityControl
from recon.fit.engine import FitEngine, ParamGroup, StepContext, Term
from recon.model.appearance import CameraAppearance
from recon.model.deform import DeformField
from recon.model.scene import DeformableScene
from recon.model.splats import Splats
from recon.fit.deform import camera_extent, scene_rows


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _scene(P: int = 6, V: int = 3, T: int = 2) -> DeformableScene:
    g = torch.Generator().manual_seed(0)
    means = torch.randn(P, 3, generator=g) * 0.3 + torch.tensor([0.0, 0.0, 3.0])
    sp = Splats(means, torch.full((P,), math.log(0.05)), torch.zeros(P), torch.rand(P, 3, generator=g))
    offsets = torch.arange(P * V * 3, dtype=torch.float32).reshape(P, V, 3) * 1e-3  # row-identifiable
    field = DeformField(offsets, torch.zeros(3), 1.0, (0.0, 1.0), 2, 2, 8, 1)
    field.dynamic = torch.tensor([i % 2 == 0 for i in range(P)])
    poses = torch.eye(4).expand(V, T, 4, 4).clone()
    K = torch.tensor([[20.0, 0, 16], [0, 20.0, 16], [0, 0, 1]]).expand(V, T, 3, 3).clone()
    return DeformableScene(sp, field, poses, K, torch.linspace(0, 1, T), (32, 32), appearance=CameraAppearance(V, [0, 1]))


def _engine(scene: DeformableScene, density=None) -> FitEngine:
    groups = [ParamGroup("means", ["means"], 1e-2), ParamGroup("opacity", ["opacity_logits"], 1e-2),
              ParamGroup("scales", ["log_scales"], 1e-2), ParamGroup("colors", ["colors"], 1e-2),
              ParamGroup("view", ["view_correction"], 1e-2)]
    return FitEngine(scene_rows(scene), groups, density)


def _step(engine: FitEngine, scene: DeformableScene) -> None:
    """One Adam step on a loss that touches every row (so every row has moments)."""
    sp, f = scene.splats, scene.field
    loss = sp.means.pow(2).sum() + sp.opacity_logits.pow(2).sum() + sp.log_scales.sum() + sp.colors.sum() \
        + f.view_correction.pow(2).sum() + (f.view_correction * 0 + 1).sum()
    engine.opt.zero_grad()
    loss.backward()
    engine.opt.step()


def test_reindex_keeps_rows_buffers_and_adam_state_aligned():
    scene = _scene()
    eng = _engine(scene)
    _step(eng, scene)
    sp, f = scene.splats, scene.field
    before = {k: eng.rows.get(k).detach().clone() for k in eng.rows.entries}
    m_before = eng.opt.state[sp.means]["exp_avg"].clone()
    v_before = eng.opt.state[f.view_correction]["exp_avg_sq"].clone()
    index = torch.tensor([0, 2, 3, 5, 3, 3])  # prune 1 and 4, three copies of row 3
    fresh = torch.tensor([False, False, False, False, True, True])
    eng.reindex(index, fresh)
    sp, f = scene.splats, scene.field
    assert sp.num == 6 and f.tracked_offsets.shape[0] == 6 and f.dynamic.shape == (6,)
    for k in eng.rows.entries:
        assert torch.equal(eng.rows.get(k), before[k][index]), k
    assert isinstance(sp.means, torch.nn.Parameter) and isinstance(f.view_correction, torch.nn.Parameter)
    assert not isinstance(f.tracked_offsets, torch.nn.Parameter) and "tracked_offsets" in dict(f.named_buffers())
    # moments moved with their rows; the new rows start at zero
    m = eng.opt.state[sp.means]["exp_avg"]
    assert torch.equal(m[:4], m_before[index[:4]]) and torch.all(m[4:] == 0)
    v = eng.opt.state[f.view_correction]["exp_avg_sq"]
    assert torch.equal(v[:4], v_before[index[:4]]) and torch.all(v[4:] == 0)
    # the optimiser holds the new tensors, and a step still runs
    held = {id(p) for grp in eng.opt.param_groups for p in grp["params"]}
    assert id(sp.means) in held and id(f.view_correction) in held
    _step(eng, scene)


def _fake_ctx(scene: DeformableScene, grad_px: torch.Tensor) -> StepContext:
    C, N = 1, scene.splats.num
    m2d = torch.zeros(C, N, 2, requires_grad=True)
    m2d.grad = grad_px.reshape(C, N, 2)
    meta = {"means2d": m2d, "radii": torch.full((C, N), 2, dtype=torch.int32)}
    return StepContext(0, [(0, 0)], torch.zeros(1), meta, torch.zeros(1))


def test_density_clones_small_splits_large_prunes_faint_and_children_inherit():
    scene = _scene(P=6)
    sp, f = scene.splats, scene.field
    with torch.no_grad():
        sp.log_scales[:] = math.log(0.001)
        sp.log_scales[1] = math.log(0.5)  # large: split
        sp.opacity_logits[5] = -10.0  # faint: prune
    eng = _engine(scene)
    _step(eng, scene)
    cfg = DensityConfig(grad_threshold=1e-3, dense_fraction=0.01, every=1, start=0.0, stop=1.0, reset_every=0)
    dc = DensityControl(cfg, extent=1.0, image_size=(32, 32), generator=torch.Generator().manual_seed(0))
    eng.density = dc
    grad = torch.zeros(6, 2)
    grad[0] = 1.0  # high gradient, small: clone
    grad[1] = 1.0  # high gradient, large: split
    dc.observe(_fake_ctx(scene, grad))
    offsets_before = f.tracked_offsets.clone()
    dyn_before = f.dynamic.clone()
    means_before = sp.means.detach().clone()
    ls_before = sp.log_scales.detach().clone()
    dc.densify(eng)
    sp, f = scene.splats, scene.field
    # kept: 0, 2, 3, 4 (1 split away, 5 pruned); clone of 0; two children of 1
    assert sp.num == 4 + 1 + 2
    src = torch.tensor([0, 2, 3, 4, 0, 1, 1])
    assert torch.equal(f.tracked_offsets, offsets_before[src])
    assert torch.equal(f.dynamic, dyn_before[src])
    assert torch.equal(sp.means[:5].detach(), means_before[src[:5]])
    assert torch.allclose(sp.log_scales[5:].detach(), (ls_before[1] - math.log(1.6)).expand(2))
    assert not torch.equal(sp.means[5].detach(), sp.means[6].detach())  # children sampled apart
    assert dc.report()["cloned"] == 1 and dc.report()["split"] == 1 and dc.report()["pruned"] == 1
    _step(eng, scene)


def test_density_respects_the_cap_and_resets_opacity():
    scene = _scene(P=6)
    eng = _engine(scene)
    cfg = DensityConfig(grad_threshold=1e-3, every=1, start=0.0, stop=1.0, reset_every=2, max_gaussians=8)
    dc = DensityControl(cfg, 1.0, (32, 32), torch.Generator().manual_seed(0))
    eng.density = dc
    dc.observe(_fake_ctx(scene, torch.ones(6, 2)))
    dc.densify(eng)
    assert scene.splats.num == 8  # 6 candidates, room for 2
    with torch.no_grad():
        scene.splats.opacity_logits.fill_(3.0)
    dc.after_step(eng, 2, 10)
    assert torch.all(torch.sigmoid(scene.splats.opacity_logits) <= 0.0100001) and dc.resets == 1


def test_density_cap_follows_the_image_size():
    scene = _scene(P=6)
    eng = _engine(scene)
    cfg = DensityConfig(grad_threshold=1e-3, every=1, start=0.0, stop=1.0, reset_every=0, max_per_pixel=1.0)
    dc = DensityControl(cfg, 1.0, (2, 4), torch.Generator().manual_seed(0))  # 8 pixels: at most 8 Gaussians
    eng.density = dc
    assert dc.cap == 8 and dc.report()["cap"] == 8
    dc.observe(_fake_ctx(scene, torch.ones(6, 2)))
    dc.densify(eng)
    assert scene.splats.num == 8
    off = DensityControl(DensityConfig(max_per_pixel=0.0, max_gaussians=50), 1.0, (2, 4), torch.Generator())
    assert off.cap == 50  # 0: only max_gaussians


def test_engine_runs_density_control_inside_the_loop():
    scene = _scene(P=40)
    cfg = DensityConfig(grad_threshold=0.0, every=2, start=0.0, stop=1.0, reset_every=0, max_gaussians=60)
    eng = _engine(scene, DensityControl(cfg, 1.0, (32, 32), torch.Generator().manual_seed(0)))
    target = torch.rand(1, 32, 32, 3, generator=torch.Generator().manual_seed(1))

    def render(batch):
        rgb, _, _, meta = scene.render(batch, backend="torch")
        return rgb, meta

    out = eng.run([[(0, 0)]] * 6, render, lambda b: target, [Term("l1", lambda c: (c.rgb - c.target).abs().mean())])
    assert scene.splats.num == 60 and scene.field.view_correction.shape[0] == 60
    assert len(out["trace"]) >= 1 and math.isfinite(out["trace"][-1])


def test_camera_appearance_is_identity_at_start_and_test_cameras_use_the_trained_mean():
    app = CameraAppearance(4, trained=[0, 1, 2])
    rgb = torch.rand(4, 5, 5, 3)
    assert torch.equal(app(rgb, torch.arange(4)), rgb)
    with torch.no_grad():
        app.log_gain[:3] = torch.tensor([[0.1] * 3, [0.2] * 3, [0.3] * 3])
        app.bias[:3] = torch.tensor([[0.0] * 3, [0.03] * 3, [0.06] * 3])
        app.log_gain[3] = 5.0  # never trained: ignored
    out = app(rgb[3:4], torch.tensor([3]))
    assert torch.allclose(out, rgb[3:4] * math.exp(0.2) + 0.03, atol=1e-6)
    d = app.describe()
    assert d["trained_views"] == [0, 1, 2] and "mean" in d["untrained_views_use"]


def test_scene_round_trip_keeps_appearance_and_dynamic_flags(tmp_path):
    scene = _scene()
    with torch.no_grad():
        scene.appearance.bias[1] = 0.25
    path = tmp_path / "scene.safetensors"
    scene.save(path)
    back = DeformableScene.load(path)
    assert torch.equal(back.field.dynamic, scene.field.dynamic)
    assert torch.equal(back.appearance.bias, scene.appearance.bias)
    assert torch.equal(back.appearance.trained, scene.appearance.trained)


def test_static_gaussians_do_not_move_and_cost_no_mlp():
    scene = _scene(P=6)
    with torch.no_grad():
        for p in scene.field.mlp.parameters():
            p.normal_()
    m = scene.field.motion(scene.splats.means, 1.0)
    dyn = scene.field.dynamic
    assert torch.all(m[~dyn] == 0) and torch.all(m[dyn].abs().sum(1) > 0)
    assert torch.allclose(m[dyn], scene.field.time_offset(scene.splats.means[dyn], 1.0))


def test_camera_extent_is_the_3dgs_cameras_extent():
    poses = torch.eye(4).expand(3, 1, 4, 4).clone()
    for i, x in enumerate([-1.0, 0.0, 1.0]):
        poses[i, 0, 0, 3] = -x  # camera centre at (x, 0, 0)
    assert camera_extent(poses, [0, 1, 2], 0) == pytest.approx(1.1)
    assert camera_extent(poses, [1], 0) == 0.0


def test_appearance_centring_keeps_the_trained_mean_at_identity():
    app = CameraAppearance(3, trained=[0, 1])
    with torch.no_grad():
        app.bias[:] = torch.tensor([[0.2] * 3, [0.1] * 3, [0.7] * 3])
        app.log_gain[:] = 0.3
    app.centre()
    assert torch.allclose(app.bias[:2].mean(0), torch.zeros(3), atol=1e-7)
    assert torch.allclose(app.log_gain[:2], torch.zeros(2, 3), atol=1e-7)
    assert torch.allclose(app.bias[2], torch.full((3,), 0.7))  # untrained rows are not touched
    rgb = torch.rand(1, 4, 4, 3)
    assert torch.allclose(app(rgb, torch.tensor([2])), rgb)  # a test camera sees the identity


def test_clearance_prunes_what_sits_in_front_of_any_camera_lens():
    # camera 0 at the origin looking down +z; camera 1 at z = 10 looking back down -z
    A0 = torch.eye(4)
    A1 = torch.diag(torch.tensor([-1.0, 1.0, -1.0, 1.0]))
    A1[2, 3] = 10.0
    K = torch.tensor([[20.0, 0, 16], [0, 20.0, 16], [0, 0, 1]])
    cams = (torch.stack([A0, A1]), torch.stack([K, K]))
    dc = DensityControl(DensityConfig(clearance=0.25), 1.0, (32, 32), torch.Generator(), cams)
    means = torch.tensor([[0.0, 0.0, 5.0]] * 8 + [[0.0, 0.0, 0.5], [0.0, 0.0, 9.5], [5.0, 0.0, 0.5], [0.0, 0.0, -0.5]])
    block = dc.blocking(means)
    # depth 5 is the median for both cameras: near = 1.25; 0.5 in front of camera 0 and 9.5 (0.5 in front
    # of camera 1) are cleared; a point beside camera 0 (outside its view) and one behind it are not
    assert block.tolist() == [False] * 8 + [True, True, False, False]
    assert dc.near.tolist() == [1.25, 1.25]


def test_the_render_exposes_the_positions_it_rendered():
    scene = _scene(P=6)
    with torch.no_grad():
        for p in scene.field.mlp.parameters():
            p.normal_()
    cells = [(0, 1), (2, 0)]
    full = scene.cell_means(cells)
    _, _, _, meta = scene.render(cells, backend="torch")
    assert torch.allclose(meta["cell_means"], full) and meta["cell_means"].requires_grad
