"""recon.fit stages on tiny synthetic inputs: canonical from known tracks, view offsets = residual
after Umeyama, pruning removes an injected floater, deform fit lowers the loss, losses/metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recon.fit import CanonicalConfig, DeformConfig, PruneConfig, build_canonical, fit_deform, prune_floaters, scene_from_canonical
from recon.fit.canonical import fill_offsets, merge_duplicates
from recon.fit.losses import photometric_loss, psnr, ssim
from recon.fit.schedule import exp_decay, time_batches
from recon.grid import Cameras, FrameGrid
from recon.render import rasterize
from recon.tracking.types import Tracks

H = W = 32


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: on a busy shared CPU, OpenMP spin-waiting makes 2 threads far slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _rot_y(deg: float) -> np.ndarray:
    a = np.radians(deg)
    return np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])


def _setup(V: int = 3, T: int = 2, with_cameras: bool = False, noise: float = 0.0, seed: int = 0):
    """A textured plane of points seen by V cameras on a small arc; tracks = exact positions
    (+ optional per-view non-rigid noise); images = renders of the points (so they are consistent)."""
    rng = np.random.default_rng(seed)
    u, v = np.meshgrid(np.linspace(-0.6, 0.6, 24), np.linspace(-0.6, 0.6, 24))
    world = np.stack([u.ravel(), v.ravel(), 3.0 + 0.2 * u.ravel()], 1)
    P = len(world)
    colors = rng.uniform(0.1, 0.9, (P, 3))
    w2c = np.tile(np.eye(4), (V, 1, 1))
    for i in range(V):
        R = _rot_y(6.0 * (i - V // 2))
        c = np.array([0.0, 0.0, 3.0])
        w2c[i, :3, :3] = R
        w2c[i, :3, 3] = c - R @ c  # rotate about the plane's centre
    pts = np.stack([world @ w2c[i, :3, :3].T + w2c[i, :3, 3] for i in range(V)], 1)
    pts += noise * rng.normal(size=pts.shape)
    K = np.array([[40.0, 0, W / 2], [0, 40.0, H / 2], [0, 0, 1]])
    imgs = np.zeros((V, T, H, W, 3), np.uint8)
    ls = torch.full((P,), float(np.log(0.03)))
    with torch.no_grad():
        for i in range(V):
            rgb, _, _, _ = rasterize(torch.tensor(pts[:, i]).float(), ls, torch.full((P,), 3.0), torch.tensor(colors).float(),
                                     torch.eye(4)[None], torch.tensor(K).float()[None], W, H, backend="torch")
            imgs[i, :] = (rgb[0].clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
    grid = FrameGrid(images=imgs, cameras=Cameras(K=K, w2c=w2c if with_cameras else None), times=np.linspace(0, 1, T),
                     central_view=V // 2)
    tracks = Tracks(points=torch.tensor(pts).float(), visible=torch.ones(P, V, dtype=torch.bool),
                    colors=torch.tensor(colors).float(), seed_view=torch.full((P,), V // 2))
    return grid, tracks, world, w2c


def test_canonical_from_known_tracks_reproduces_points():
    grid, tracks, world, w2c = _setup()
    can = build_canonical(grid, tracks, CanonicalConfig(merge_radius=0.0))
    c = grid.central_view
    expect = world @ w2c[c, :3, :3].T + w2c[c, :3, 3]
    assert can.splats.num == len(world)
    assert np.allclose(can.splats.means.detach().numpy(), expect, atol=1e-5)
    assert can.pose_source == "tracks"
    # poses from Umeyama equal the true relative poses
    for i in range(grid.num_views):
        rel = w2c[i] @ np.linalg.inv(w2c[c])
        assert np.allclose(can.poses[i, 0].numpy(), rel, atol=1e-4)
    assert can.view_offsets.abs().max() < 1e-4  # consistent tracks: no non-rigid remainder


def test_view_offsets_are_residual_after_umeyama():
    grid, tracks, world, _ = _setup(noise=0.004, seed=1)
    can = build_canonical(grid, tracks, CanonicalConfig(merge_radius=0.0, offset_clip=1.0))
    pts = tracks.points.double().numpy()
    for i in range(grid.num_views):
        A = can.poses[i, 0].double().numpy()
        aligned = (pts[:, i] - A[:3, 3]) @ A[:3, :3]
        resid = aligned - can.splats.means.detach().double().numpy()
        assert np.allclose(can.view_offsets[:, i].numpy(), resid, atol=1e-5)
    assert can.view_offsets[:, grid.central_view].abs().max() < 1e-6
    assert can.view_offsets.abs().max() > 1e-3
    off = build_canonical(grid, tracks, CanonicalConfig(merge_radius=0.0, view_offsets=False)).view_offsets
    assert off.abs().max() == 0


def test_given_cameras_are_used_for_poses():
    grid, tracks, _, w2c = _setup(with_cameras=True)
    can = build_canonical(grid, tracks, CanonicalConfig())
    assert can.pose_source == "cameras"
    assert np.allclose(can.poses[0, 1].numpy(), w2c[0] @ np.linalg.inv(w2c[1]), atol=1e-6)


def test_merge_and_fill_helpers():
    pts = np.array([[0, 0, 1.0], [0.001, 0, 1.0], [1, 0, 1.0], [2, 0, 1.0]])
    assert merge_duplicates(pts, 0.5).tolist() == [True, False, True, True]
    off = np.zeros((3, 1, 3))
    off[0, 0] = [1, 0, 0]
    off[1, 0] = [3, 0, 0]
    vis = np.array([[True], [True], [False]])
    canon = np.array([[0, 0, 1.0], [2, 0, 1.0], [1, 0, 1.0]])
    filled = fill_offsets(canon, off, vis, k=2)
    assert np.allclose(filled[2, 0], [2, 0, 0])  # inverse-distance mean of equidistant neighbours


def test_prune_removes_injected_floater():
    grid, tracks, _, _ = _setup()
    P = tracks.num_points
    # a floater: a bright red point half-way to the camera, in every frame (rigidly placed)
    c = grid.central_view
    fl_c = np.array([0.05, 0.0, 1.5])
    fl = torch.tensor(fl_c).float().expand(1, grid.num_views, 3)  # same place in every frame: not on the surface
    tracks = Tracks(points=torch.cat([tracks.points, fl]), visible=torch.ones(P + 1, grid.num_views, dtype=torch.bool),
                    colors=torch.cat([tracks.colors, torch.tensor([[1.0, 0.0, 0.0]])]),
                    seed_view=torch.cat([tracks.seed_view, torch.tensor([c])]))
    can = build_canonical(grid, tracks, CanonicalConfig(merge_radius=0.0))
    can.splats.log_scales.data[-1] = float(np.log(0.06))
    pruned, rep = prune_floaters(grid, can, PruneConfig(iterations=60, views_per_step=3, lr_opacity=0.2, lr_colors=0.0),
                                 torch.device("cpu"), seed=0)
    assert rep["pruned"] >= 1
    # the floater is gone: no remaining point close to its canonical position
    d = (pruned.splats.means - torch.tensor(fl_c).float()).norm(dim=1)
    assert d.min() > 0.1
    assert rep["after"] == pruned.splats.num and rep["after"] >= 0.9 * P
    assert rep["loss_last"] < rep["loss_first"]


def test_deform_fit_lowers_the_loss():
    grid, tracks, _, _ = _setup(V=3, T=2, with_cameras=True)
    # time 1 shows a shifted image: the temporal field has to move the points
    grid.images[:, 1] = np.roll(grid.images[:, 0], 1, axis=2)
    can = build_canonical(grid, tracks, CanonicalConfig())
    cfg = DeformConfig(iterations=40, warmup=5, cells_per_step=3, lr_mlp=3e-3, pos_freqs=2, time_freqs=2, mlp_width=16, mlp_depth=2)
    torch.manual_seed(0)
    scene = scene_from_canonical(grid, can, cfg)
    cells = [(i, j) for i in range(3) for j in range(2)]
    target = grid.float_images()[[i for i, _ in cells], [j for _, j in cells]]

    def loss() -> float:
        with torch.no_grad():
            return float(photometric_loss(scene.render(cells)[0], target))

    before = loss()
    rep = fit_deform(grid, scene, cells, cfg, torch.device("cpu"), seed=0)
    assert loss() < 0.8 * before
    assert rep["steps"] == 40 and rep["warmup_steps"] == 5
    assert scene.field.time_offset(scene.splats.means, 1.0).abs().max() > 0  # the MLP moved


def test_losses_and_metrics():
    a = torch.rand(2, 24, 24, 3)
    assert torch.allclose(ssim(a, a), torch.ones(2), atol=1e-5)
    assert float(photometric_loss(a, a)) == pytest.approx(0.0, abs=1e-5)
    b = (a + 0.1).clamp(0, 1)
    assert float(photometric_loss(a, b)) > 0.01
    assert psnr(torch.zeros(4, 4, 3), torch.full((4, 4, 3), 0.1)) == pytest.approx(20.0)
    assert exp_decay(1.0, 0.01, 0, 10) == pytest.approx(1.0) and exp_decay(1.0, 0.01, 10, 10) == pytest.approx(0.01)


def test_time_batches_share_a_time_and_are_reproducible():
    cells = [(i, j) for i in range(4) for j in range(3) if (i, j) != (3, 2)]
    a = time_batches(cells, 20, 2, torch.Generator().manual_seed(5))
    b = time_batches(cells, 20, 2, torch.Generator().manual_seed(5))
    assert a == b
    for batch in a:
        assert len({j for _, j in batch}) == 1 and len(set(batch)) == len(batch)
        assert all(c in cells for c in batch)
