"""View-dependent colour (recon.model.sh): the basis, the splats' coefficients through a scene's
renders, density control, checkpoints and the exported .ply (evaluated as a graphdeco viewer does)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from recon.errors import InputError
from recon.fit.engine import FitEngine, ParamGroup
from recon.model import DeformField, Splats
from recon.model.scene import DeformableScene
from recon.model.sh import camera_centres, degree_of, num_coefficients, sh_basis


def test_the_basis_is_orthonormal_on_the_sphere():
    # Monte-Carlo over uniform directions: 4 pi E[Y_i Y_j] = delta_ij (the normalisation the
    # constants claim, and no two entries the same function)
    g = torch.Generator().manual_seed(0)
    d = torch.randn(400_000, 3, generator=g, dtype=torch.float64)
    d = d / d.norm(dim=1, keepdim=True)
    Y = sh_basis(d, 3)
    assert Y.shape == (400_000, 15)
    gram = 4 * math.pi * (Y.T @ Y) / len(d)
    assert torch.allclose(gram, torch.eye(15, dtype=torch.float64), atol=0.02)
    assert sh_basis(d[:5], 0).shape == (5, 0)
    assert [num_coefficients(k) for k in range(4)] == [0, 3, 8, 15] and degree_of(8) == 2
    with pytest.raises(ValueError):
        degree_of(5)


def test_band_one_follows_graphdeco_signs():
    # 3DGS viewers evaluate band 1 as C1 * (-y c1 + z c2 - x c3): looking along +x, only c3 counts, negatively
    d = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    Y = sh_basis(d, 1)
    C1 = 0.4886025119029199
    assert torch.allclose(Y, torch.tensor([[0, 0, -C1], [-C1, 0, 0], [0, C1, 0]]))


def _scene(sh_degree: int, shading: bool = False) -> DeformableScene:
    torch.manual_seed(0)
    P = 40
    sp = Splats(torch.randn(P, 3) * 0.3 + torch.tensor([0, 0, 3.0]), torch.full((P,), -2.5), torch.full((P,), 1.0),
                torch.rand(P, 3) * 0.5 + 0.25)
    sp.set_sh_degree(sh_degree, shading)
    f = DeformField(torch.zeros(P, 2, 3), torch.tensor([0, 0, 3.0]), 1.0, (0.0, 1.0), 2, 2, 16, 2, learn_view_offsets=False)
    a = torch.eye(4)
    b = torch.eye(4)  # the second camera: 1 m to the right, turned towards the splats
    ang = 0.3
    b[:3, :3] = torch.tensor([[math.cos(ang), 0, -math.sin(ang)], [0, 1, 0], [math.sin(ang), 0, math.cos(ang)]])
    b[:3, 3] = -b[:3, :3] @ torch.tensor([1.0, 0, 0])
    poses = torch.stack([a, b])[:, None].expand(2, 2, 4, 4).clone()
    K = torch.tensor([[30.0, 0, 16], [0, 30.0, 16], [0, 0, 1]]).expand(2, 2, 3, 3).clone()
    to_world = torch.eye(4)
    to_world[:3, :3] = torch.tensor([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]])  # a rotated world: SH live there
    to_world[:3, 3] = torch.tensor([0.5, -0.2, 1.0])
    return DeformableScene(sp, f, poses, K, torch.tensor([0.0, 1.0]), (32, 32), to_world)


def test_zero_coefficients_render_as_the_base_colour_and_learned_ones_differ_by_camera():
    plain, sh = _scene(0), _scene(2)
    assert sh.splats.sh_rest.shape == (40, 8, 3) and sh.splats.sh_degree == 2
    with torch.no_grad():
        a = plain.render([(0, 0), (1, 0)], backend="torch")[0]
        b = sh.render([(0, 0), (1, 0)], backend="torch")[0]
    assert torch.allclose(a, b, atol=1e-6)
    with torch.no_grad():
        sh.splats.sh_rest.normal_(0, 0.3)
    vm = sh.poses[:, 0]
    col = sh.colours(sh.splats.means, vm)
    assert col.shape == (2, 40, 3)
    assert not torch.allclose(col[0], col[1], atol=1e-3)
    # one camera at a time renders the same colours as the two together (per-camera colours)
    both = sh.render([(0, 0), (1, 0)], backend="torch")[0]
    one = sh.render([(1, 0)], backend="torch")[0]
    assert torch.allclose(both[1], one[0], atol=1e-6)
    loss = both.mean()
    loss.backward()
    assert sh.splats.sh_rest.grad is not None and float(sh.splats.sh_rest.grad.abs().sum()) > 0


def test_density_reindex_keeps_coefficients_on_their_rows():
    from recon.fit.deform import scene_rows

    sc = _scene(1)
    with torch.no_grad():
        sc.splats.sh_rest.copy_(torch.arange(40 * 3 * 3, dtype=torch.float32).reshape(40, 3, 3))
    before = sc.splats.sh_rest.detach().clone()
    engine = FitEngine(scene_rows(sc), [ParamGroup("sh", ["sh_rest"], 1e-3), ParamGroup("colors", ["colors"], 1e-3)])
    index = torch.tensor([3, 7, 7, 0])
    engine.reindex(index, torch.tensor([False, False, True, True]))
    assert torch.equal(sc.splats.sh_rest, before[index]) and sc.splats.colors.shape == (4, 3)


@pytest.mark.parametrize("shading", [False, True])
def test_checkpoint_round_trip_and_a_bad_coefficient_count(tmp_path, shading):
    sc = _scene(3, shading)
    with torch.no_grad():
        sc.splats.sh_rest.normal_(0, 0.2)
    sc.save(tmp_path / "s.safetensors")
    back = DeformableScene.load(tmp_path / "s.safetensors")
    assert back.splats.sh_degree == 3 and torch.equal(back.splats.sh_rest, sc.splats.sh_rest)
    assert back.splats.sh_shading == shading
    with torch.no_grad():
        assert torch.equal(back.render([(1, 1)], backend="torch")[0], sc.render([(1, 1)], backend="torch")[0])
    t = sc.splats.tensors()
    t["sh_rest"] = torch.zeros(40, 5, 3)
    with pytest.raises(InputError):
        Splats.from_tensors(t)
    t["sh_rest"] = torch.zeros(40, 3, 2)  # neither colour coefficients nor gains
    with pytest.raises(InputError, match="shading gains"):
        Splats.from_tensors(t)
    old = _scene(0).splats.tensors()  # a checkpoint from before view-dependent colour
    assert "sh_rest" not in old and Splats.from_tensors(old).sh_degree == 0


@pytest.mark.parametrize("shading", [False, True])
def test_the_exported_ply_renders_the_fit_colours_the_way_viewers_evaluate_it(tmp_path, shading):
    # a viewer reads x y z, f_dc, f_rest (world frame) and evaluates rgb = 0.5 + C0 f_dc + sum Y(d) f_rest,
    # d = normalise(x - camera centre), clamped: that must be the colour the fit rendered
    from recon.fit.evaluate import write_ply
    from recon.io.ply import SH_C0
    from recon.io.plyseq import read_ply_sequence

    sc = _scene(2, shading)
    with torch.no_grad():
        sc.splats.sh_rest.normal_(0, 0.3)
    write_ply(sc, tmp_path, fps=None, source="test", time_unit="s", world=True)
    seq = read_ply_sequence(tmp_path / "ply")
    gp = seq.gaussians
    assert gp.sh_rest.shape == (40, 8, 3)
    X = torch.from_numpy(seq.means[0]).double()  # world positions at time 0
    T = sc.to_world.double()
    for v in range(2):
        c_world = T[:3, :3] @ camera_centres(sc.poses[v, 0][None].double())[0] + T[:3, 3]
        d = X - c_world
        d = d / d.norm(dim=1, keepdim=True)
        rgb = 0.5 + SH_C0 * torch.from_numpy(gp.sh_dc).double() \
            + torch.einsum("nk,nkc->nc", sh_basis(d, 2), torch.from_numpy(gp.sh_rest).double())
        fit = sc.colours(sc.splats.means, sc.poses[v, 0][None])[0].detach().double()
        assert torch.allclose(rgb.clamp(0, 1), fit, atol=1e-5)


def test_shading_gains_scale_the_base_colour_and_keep_its_hue():
    # colour = clamp(base) * (1 + sum_k Y_k(d) g_k): zero gains render the base colour; any gains
    # change the brightness by view but not the ratio between channels (so a coloured splat cannot
    # turn the white background colour from the views that contradict it)
    plain, sc = _scene(0), _scene(1, shading=True)
    assert sc.splats.sh_rest.shape == (40, 3, 1) and sc.splats.sh_shading and sc.splats.sh_degree == 1
    with torch.no_grad():
        assert torch.allclose(plain.render([(0, 0), (1, 0)], backend="torch")[0],
                              sc.render([(0, 0), (1, 0)], backend="torch")[0], atol=1e-6)
        sc.splats.colors.copy_(torch.tensor([0.6, 0.2, 0.1]).expand(40, 3))  # a red splat everywhere
        sc.splats.sh_rest.normal_(0, 0.5)
    vm = sc.poses[:, 0]
    col = sc.colours(sc.splats.means, vm)  # [2, 40, 3]
    R = sc.to_world[:3, :3]
    d = sc.splats.means.detach()[None] - (camera_centres(vm) @ torch.eye(3))[:, None]
    d = (d @ R.T) / d.norm(dim=-1, keepdim=True)
    expect = (0.6 * (1 + torch.einsum("cnk,nk->cn", sh_basis(d, 1), sc.splats.sh_rest.detach()[..., 0])))
    assert torch.allclose(col[..., 0], expect.clamp(0, 1), atol=1e-5)
    assert not torch.allclose(col[0], col[1], atol=1e-3)  # the view changes it
    unclipped = (col < 0.999).all(-1) & (col > 0).all(-1)
    assert unclipped.float().mean() > 0.5
    ratio = col[..., 1] / col[..., 0]
    assert torch.allclose(ratio[unclipped], torch.full_like(ratio[unclipped], 1 / 3), atol=1e-5)
    col.sum().backward()
    assert float(sc.splats.sh_rest.grad.abs().sum()) > 0 and float(sc.splats.colors.grad.abs().sum()) > 0


def test_switching_the_form_starts_from_zero_and_keeping_it_keeps_the_gains():
    sp = _scene(1, shading=True).splats
    with torch.no_grad():
        sp.sh_rest.fill_(0.3)
    sp.set_sh_degree(2)  # form kept: degree 1's gains stay, degree 2's start at zero
    assert sp.sh_rest.shape == (40, 8, 1) and float(sp.sh_rest[:, :3].min()) == pytest.approx(0.3) and float(sp.sh_rest[:, 3:].abs().max()) == 0
    sp.set_sh_degree(2, shading=False)
    assert sp.sh_rest.shape == (40, 8, 3) and not sp.sh_shading and float(sp.sh_rest.abs().max()) == 0
    assert torch.equal(sp.sh_rest_rgb(), sp.sh_rest)
