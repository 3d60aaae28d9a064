"""recon.model: Splats, DeformField (zero-initialised MLP, view offsets), DeformableScene save/load."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recon.errors import InputError
from recon.model import DeformField, Splats, neighbour_log_scales, positional_encoding
from recon.model.scene import DeformableScene


def _field(P: int = 5, V: int = 3, learn: bool = True) -> DeformField:
    torch.manual_seed(0)
    off = torch.randn(P, V, 3) * 0.01
    return DeformField(off, torch.zeros(3), 2.0, (0.0, 1.0), pos_freqs=2, time_freqs=2, width=16, depth=2, learn_view_offsets=learn)


def test_positional_encoding_shape_and_values():
    x = torch.tensor([[0.25, -0.5, 0.0]])
    e = positional_encoding(x, 2)
    assert e.shape == (1, 3 * 5)
    assert torch.allclose(e[0, :3], x[0])
    assert torch.allclose(e[0, 3:6], torch.sin(torch.pi * x[0]))  # first frequency, sin block


def test_deform_field_starts_as_identity_plus_view_offsets():
    f = _field()
    means = torch.randn(5, 3)
    assert torch.equal(f(means, None, 0.7), means)  # zero-initialised last layer
    assert torch.allclose(f(means, 2, 0.3), means + f.tracked_offsets[:, 2])
    assert f.norm_time(0.0).item() == pytest.approx(-1.0) and f.norm_time(1.0).item() == pytest.approx(1.0)


def test_deform_field_select_keeps_rows():
    f = _field()
    keep = torch.tensor([True, False, True, False, True])
    expected = f.tracked_offsets[keep].clone()
    f.select(keep)
    assert torch.equal(f.tracked_offsets, expected)
    assert f.view_correction.shape == (3, 3, 3) and f.view_correction.requires_grad


def test_neighbour_log_scales_regular_grid():
    g = np.stack(np.meshgrid(np.arange(5.0), np.arange(5.0), [0.0], indexing="ij"), -1).reshape(-1, 3) * 0.1
    s = np.exp(neighbour_log_scales(g, k=1, factor=1.0))
    assert np.allclose(s, 0.1, atol=1e-6)


def test_splats_shape_check_and_roundtrip():
    with pytest.raises(ValueError):
        Splats(torch.zeros(4, 3), torch.zeros(3), torch.zeros(4), torch.zeros(4, 3))
    sp = Splats(torch.randn(4, 3), torch.zeros(4), torch.zeros(4), torch.rand(4, 3))
    back = Splats.from_tensors(sp.tensors())
    assert all(torch.equal(a, b) for a, b in zip(sp.tensors().values(), back.tensors().values()))
    with pytest.raises(InputError):
        Splats.from_tensors({"means": torch.zeros(1, 3)})


def test_deformable_scene_save_load_bit_exact(tmp_path):
    f = _field()
    torch.nn.init.normal_(f.mlp[-1].weight, std=0.1)  # a non-trivial field
    sp = Splats(torch.randn(5, 3) + torch.tensor([0, 0, 3.0]), torch.full((5,), -2.0), torch.zeros(5), torch.rand(5, 3))
    poses = torch.eye(4).expand(3, 2, 4, 4).clone()
    K = torch.tensor([[20.0, 0, 8], [0, 20.0, 8], [0, 0, 1]]).expand(3, 2, 3, 3).clone()
    sc = DeformableScene(sp, f, poses, K, torch.tensor([0.0, 1.0]), (16, 16))
    sc.save(tmp_path / "s.safetensors")
    back = DeformableScene.load(tmp_path / "s.safetensors")
    for j in range(2):
        assert torch.equal(back.positions_at(j), sc.positions_at(j))
    with torch.no_grad():
        a = sc.render([(1, 1)], backend="torch")[0]
        b = back.render([(1, 1)], backend="torch")[0]
    assert torch.equal(a, b)
    (tmp_path / "bad.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError):
        DeformableScene.load(tmp_path / "bad.safetensors")


@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_vanishing_view_offsets_share_one_position_tensor_across_the_views_of_a_time(backend):
    """A rig's zero offsets: the cells of one time render from one [N, 3] tensor (projected once),
    with the same images and gradients as the per-cell path; any non-zero offset switches back."""
    torch.manual_seed(1)
    P, V = 40, 3
    f = DeformField(torch.full((P, V, 3), 1e-9), torch.zeros(3), 2.0, (0.0, 1.0), pos_freqs=2, time_freqs=2, width=16,
                    depth=2, learn_view_offsets=False)
    torch.nn.init.normal_(f.mlp[-1].weight, std=0.05)  # a moving field
    sp = Splats((torch.randn(P, 3) * 0.5 + torch.tensor([0, 0, 3.0])).requires_grad_(), torch.full((P,), -2.0),
                torch.zeros(P), torch.rand(P, 3))
    poses = torch.eye(4).expand(V, 2, 4, 4).clone()
    poses[:, :, 0, 3] = torch.tensor([-0.3, 0.0, 0.3])[:, None]  # three cameras side by side
    K = torch.tensor([[20.0, 0, 12], [0, 20.0, 12], [0, 0, 1]]).expand(V, 2, 3, 3).clone()
    sc = DeformableScene(sp, f, poses, K, torch.tensor([0.0, 1.0]), (24, 24))
    cells = [(0, 1), (1, 1), (2, 1)]
    assert f.view_offsets_vanish
    assert sc.cell_means(cells).stride(0) == 0  # one tensor, expanded
    assert sc.cell_means([(0, 0), (1, 1)]).stride(0) != 0  # two times: per cell

    weights = torch.linspace(0, 1, 3)[None, None, None]
    rgb = sc.render(cells, backend=backend)[0]
    (g_shared,) = torch.autograd.grad((rgb * weights).sum(), sp.means)
    # the per-cell path, written out: every cell's positions stacked [C, N, 3]
    from recon.render import rasterize

    m = torch.stack([sp.means + f.motion(sp.means, sc.times[1]) + f.view_offset(i) for i, _ in cells])
    ref = rasterize(m, sp.log_scales, sp.opacity_logits, sp.rgb(), poses[[0, 1, 2], [1, 1, 1]], K[[0, 1, 2], [1, 1, 1]],
                    24, 24, backend=backend)[0]
    (g_ref,) = torch.autograd.grad((ref * weights).sum(), sp.means)
    assert rgb.std() > 0.01  # something was drawn
    assert torch.allclose(rgb, ref, atol=1e-5)
    assert torch.allclose(g_shared, g_ref, atol=1e-5 * float(g_ref.abs().max()))
    f.tracked_offsets[0, 0, 0] = 1e-3  # in place: re-checked
    assert not f.view_offsets_vanish and sc.cell_means(cells).stride(0) != 0


def test_per_gaussian_paths_are_legendre_in_time_on_the_dynamic_rows_and_saved(tmp_path):
    P, V = 6, 2
    f = DeformField(torch.zeros(P, V, 3), torch.zeros(3), 2.0, (0.0, 4.0), pos_freqs=2, time_freqs=2, width=8, depth=1,
                    learn_view_offsets=False, trajectory_degree=3)
    means = torch.randn(P, 3)
    assert torch.equal(f.motion(means, 1.0), torch.zeros(P, 3))  # zero at start
    with torch.no_grad():
        f.trajectory[:, 0, 0] = 0.1  # P1 = tau
        f.trajectory[:, 1, 1] = 0.2  # P2 = (3 tau^2 - 1) / 2
        f.trajectory[:, 2, 2] = 0.3  # P3 = (5 tau^3 - 3 tau) / 2
    f.dynamic = torch.tensor([True, False, True, True, False, True])
    t = 3.0  # tau = 0.5
    tau = 0.5
    want = 2.0 * torch.tensor([0.1 * tau, 0.2 * (3 * tau**2 - 1) / 2, 0.3 * (5 * tau**3 - 3 * tau) / 2])
    dp = f.motion(means, t)
    assert torch.allclose(dp[f.dynamic], want.expand(4, 3), atol=1e-6)
    assert torch.equal(dp[~f.dynamic], torch.zeros(2, 3))  # static rows never move
    sp = Splats(means + torch.tensor([0, 0, 3.0]), torch.full((P,), -2.0), torch.zeros(P), torch.rand(P, 3))
    poses = torch.eye(4).expand(V, 2, 4, 4).clone()
    K = torch.tensor([[20.0, 0, 8], [0, 20.0, 8], [0, 0, 1]]).expand(V, 2, 3, 3).clone()
    sc = DeformableScene(sp, f, poses, K, torch.tensor([0.0, 4.0]), (16, 16))
    sc.save(tmp_path / "s.safetensors")
    back = DeformableScene.load(tmp_path / "s.safetensors")
    assert back.field.trajectory_degree == 3 and torch.equal(back.positions_at(1), sc.positions_at(1))
    plain = DeformField(torch.zeros(P, V, 3), torch.zeros(3), 2.0, (0.0, 4.0), pos_freqs=2, time_freqs=2, width=8, depth=1)
    assert plain.trajectory_degree == 0 and plain.path_offset(1.0) is None
