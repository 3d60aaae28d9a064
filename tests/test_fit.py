"""recon.fit stages on tiny synthetic inputs: canonical from known tracks, view offsets = residual
after Umeyama, pruning removes an injected floater, deform fit lowers the loss, losses/metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recon.fit import CanonicalConfig, DeformConfig, PruneConfig, build_canonical, fit_deform, prune_floaters, scene_from_canonical
from recon.fit.canonical import fill_offsets, fit_affine_warps, merge_duplicates
from recon.fit.deform import project_affine, project_centred
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
    can = build_canonical(grid, tracks, CanonicalConfig(merge_radius=0.0, offset_clip=1.0, offset_model="free"))
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


def test_affine_view_offsets_keep_a_views_warp_and_drop_track_noise():
    """Tracks of views 0 and 2 carry a smooth per-view warp (a linear map in the camera frame, as a
    small image homography gives) plus per-point noise and a few gross outliers. The default
    ``affine`` offsets recover the warp at every point and none of the noise; the central view's are 0."""
    grid, tracks, world, w2c = _setup(V=3, with_cameras=True, seed=2)
    rng = np.random.default_rng(3)
    pts = tracks.points.double().numpy().copy()
    P, c = len(pts), grid.central_view
    warp = {0: (np.array([[0.01, -0.02, 0.0], [0.015, 0.0, 0.0], [0.0, 0.0, 0.0]]), np.array([0.004, -0.003, 0.0])),
            2: (np.array([[-0.01, 0.0, 0.0], [0.0, 0.02, 0.0], [0.0, 0.0, 0.0]]), np.array([-0.002, 0.005, 0.0]))}
    for i, (M, b) in warp.items():
        pts[:, i] += pts[:, i] @ M.T + b + 0.003 * rng.normal(size=(P, 3))
        bad = rng.choice(P, 20, replace=False)
        pts[bad, i] += rng.normal(scale=0.1, size=(20, 3))  # flow errors lifted onto the wrong surface
    tracks = Tracks(points=torch.tensor(pts).float(), visible=tracks.visible, colors=tracks.colors, seed_view=tracks.seed_view)
    can = build_canonical(grid, tracks, CanonicalConfig(merge_radius=0.0, offset_clip=1.0))
    free = build_canonical(grid, tracks, CanonicalConfig(merge_radius=0.0, offset_clip=1.0, offset_model="free"))
    canon = can.splats.means.detach().double().numpy()
    assert np.abs(can.view_offsets[:, c].numpy()).max() == 0
    for i, (M, b) in warp.items():
        A = can.poses[i, 0].double().numpy()
        Xi = canon @ A[:3, :3].T + A[:3, 3]  # the points in camera i
        truth = (Xi @ M.T + b) @ A[:3, :3]  # the warp, moved to canonical coordinates
        err_affine = np.linalg.norm(can.view_offsets[:, i].numpy() - truth, axis=1)
        err_free = np.linalg.norm(free.view_offsets[:, i].numpy() - truth, axis=1)
        assert np.median(err_affine) < 1e-3 and err_affine.max() < 3e-3  # noise and outliers are gone
        assert np.median(err_free) > 2e-3  # per-point offsets keep the noise
    # the joint fit alone: points anchored in any view measure warp_i - warp_anchor; the warps are
    # recovered exactly (the fixed view's is 0) from these relative measurements
    x = rng.normal(size=(90, 3))
    M = {0: (0.05 * rng.normal(size=(3, 3)), 0.02 * rng.normal(size=3)), 1: (np.zeros((3, 3)), np.zeros(3)),
         2: (0.05 * rng.normal(size=(3, 3)), 0.02 * rng.normal(size=3))}
    true = np.stack([x @ M[i][0] + M[i][1] for i in range(3)], 1)  # [90, 3 views, 3]
    anchor = np.arange(90) % 3
    raw = true - true[np.arange(90), anchor][:, None]
    warps = fit_affine_warps(x, raw, np.ones((90, 3), bool), anchor, fixed_view=1)
    assert np.allclose(warps(x), true, atol=1e-9)


def test_project_affine_is_a_projection_that_fixes_the_central_view():
    g = torch.Generator().manual_seed(0)
    means = torch.randn(200, 3, generator=g)
    B = torch.randn(3, 4, 3, generator=g) * 0.1
    field = torch.stack([torch.cat([means, torch.ones(200, 1)], 1) @ B[v] for v in range(3)], 1)  # affine per view
    noisy = field + 0.05 * torch.randn(200, 3, 3, generator=g)
    p = project_affine(noisy, means, fixed_view=1)
    assert p[:, 1].abs().max() == 0
    assert torch.allclose(project_affine(p, means, fixed_view=1), p, atol=1e-6)  # idempotent
    assert torch.allclose(project_affine(field, means)[:, [0, 2]], field[:, [0, 2]], atol=1e-5)  # affine: unchanged
    assert (p[:, [0, 2]] - field[:, [0, 2]]).norm() < 0.3 * (noisy[:, [0, 2]] - field[:, [0, 2]]).norm()  # noise removed


@pytest.mark.parametrize("planar", [False, True])
def test_project_affine_matches_a_float64_least_squares(planar: bool):
    """Against the textbook projection (float64 least squares), also for points on an exact
    plane (a rank-3 design: the plane's normal must not let noise through)."""
    g = torch.Generator().manual_seed(3)
    means = torch.randn(3000, 3, generator=g) * 2 + torch.tensor([4.0, -2.0, 7.0])
    if planar:
        means[:, 2] = 1.5  # exactly planar in float32 too
    corr = 0.05 * torch.randn(3000, 5, 3, generator=g)
    x = means.double()
    X = torch.cat([x - x.mean(0), torch.ones(3000, 1, dtype=torch.float64)], 1)
    ref = (X @ torch.linalg.pinv(X) @ corr.double().reshape(3000, 15)).reshape(3000, 5, 3)
    p = project_affine(corr, means)
    assert p.dtype == torch.float32
    assert torch.allclose(p.double(), ref, atol=1e-7)
    assert torch.allclose(project_affine(p, means), p, atol=1e-7)

def test_project_centred_makes_the_canonical_the_consensus():
    g = torch.Generator().manual_seed(1)
    corr = torch.randn(50, 4, 3, generator=g)
    p = project_centred(corr, [0, 1, 3])  # view 2 (not trained) is left alone
    assert torch.allclose(p[:, [0, 1, 3]].sum(1), torch.zeros(50, 3), atol=1e-6)
    assert torch.equal(p[:, 2], corr[:, 2])
    assert torch.allclose(project_centred(p, [0, 1, 3]), p, atol=1e-6)
    # same per-view geometry (canonical + correction) as before, up to moving the canonical by the mean
    shift = corr[:, [0, 1, 3]].mean(1)
    assert torch.allclose(p[:, [0, 1, 3]] + shift[:, None], corr[:, [0, 1, 3]], atol=1e-6)


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
    cfg = DeformConfig(iterations=40, warmup=5, cells_per_step=3, lr_mlp=3e-3, pos_freqs=2, time_freqs=2, mlp_width=16, mlp_depth=2,
                       view_residual=0.0, learn_background=False)  # the images are on black; this test is about the motion
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
    # the learned view correction (default "affine") stays a per-view affine function, 0 in the central view
    corr = scene.field.view_correction.detach()
    assert corr[:, grid.central_view].abs().max() == 0
    assert torch.allclose(project_affine(corr, scene.splats.means, grid.central_view), corr, atol=1e-6)


def test_masked_grids_give_the_dynamic_gaussians_their_own_paths():
    """With foreground masks, dynamic Gaussians get per-Gaussian polynomial paths, fitted to the
    motion; static ones keep none (exactly zero); density control keeps the rows aligned."""
    grid, tracks, _, _ = _setup(V=3, T=2, with_cameras=True)
    grid.images[:, 1] = np.roll(grid.images[:, 0], 1, axis=2)
    masks = np.zeros(grid.images.shape[:-1], bool)
    masks[..., : W // 2] = True  # the left half of every image is foreground
    grid.masks = masks
    can = build_canonical(grid, tracks, CanonicalConfig())
    cfg = DeformConfig(iterations=60, warmup=5, cells_per_step=3, pos_freqs=2, time_freqs=2, mlp_width=16, mlp_depth=2,
                       view_residual=0.0, learn_background=False, lr_trajectory=1e-2, lr_trajectory_final=1e-3)
    scene = scene_from_canonical(grid, can, cfg)
    f = scene.field
    assert f.trajectory_degree == 3 and 0 < int(f.dynamic.sum()) < len(f.dynamic)
    rep = fit_deform(grid, scene, [(i, j) for i in range(3) for j in range(2)], cfg, torch.device("cpu"), seed=0)
    assert rep["trajectory_degree"] == 3
    assert f.trajectory.shape[0] == scene.splats.num == f.dynamic.shape[0]
    moved = f.trajectory.detach().abs().amax((1, 2))
    assert float(moved[f.dynamic].max()) > 1e-3 and float(moved[~f.dynamic].max()) == 0.0
    no_masks = scene_from_canonical(_setup(V=3, T=2, with_cameras=True)[0], can, cfg)
    assert no_masks.field.trajectory_degree == 0  # no masks: the dynamic set is unknown, no paths


def test_deform_learns_the_colour_behind_the_splats():
    """A grid whose reader names no background: the fit learns the colour the images show where no
    splat covers them (here a uniform grey-blue), starting from the images' mean colour."""
    grid, tracks, _, _ = _setup(V=3, T=1, with_cameras=True)
    c = np.array([0.25, 0.45, 0.65])
    covered = grid.images.max(-1, keepdims=True) > 0
    grid.images = np.where(covered, grid.images, np.round(c * 255)).astype(np.uint8)
    can = build_canonical(grid, tracks, CanonicalConfig())
    cells = [(i, 0) for i in range(3)]
    got = {}
    for learn in (False, True):
        cfg = DeformConfig(iterations=60, warmup=5, cells_per_step=3, pos_freqs=2, time_freqs=2, mlp_width=16, mlp_depth=2,
                           view_residual=0.0, learn_background=learn, lr_background=1e-2)
        scene = scene_from_canonical(grid, can, cfg)
        rep = fit_deform(grid, scene, cells, cfg, torch.device("cpu"), seed=0)
        got[learn] = (scene, rep)
    assert got[False][0].background is None and got[False][1]["background"] is None
    scene, rep = got[True]
    bg = scene.background
    assert bg is not None and not bg.requires_grad and bg.shape == (3,)
    start = grid.images[:, 0].reshape(-1, 3).mean(0) / 255.0
    assert np.abs(bg.numpy() - c).max() < 0.5 * np.abs(start - c).max()  # moved most of the way to the true colour
    assert rep["background"] == pytest.approx(bg.tolist(), abs=1e-4)
    target = grid.float_images()[[i for i, _ in cells], [0] * 3]
    with torch.no_grad():
        err = {k: float(photometric_loss(s.render(cells)[0], target)) for k, (s, _) in got.items()}
    assert err[True] < err[False]


def test_view_residual_phase_leaves_the_shared_geometry_alone():
    """The residual phase refines the training views' renders only: positions, colours, scales and
    the MLP are exactly those of the joint fit without it."""
    grid, tracks, _, _ = _setup(V=3, T=2, with_cameras=True)
    grid.images[:, 1] = np.roll(grid.images[:, 0], 1, axis=2)
    can = build_canonical(grid, tracks, CanonicalConfig())
    cells = [(i, j) for i in range(3) for j in range(2)]
    scenes, reps = [], []
    for frac in (0.0, 0.75):  # 0 and 15 residual steps
        cfg = DeformConfig(iterations=20, warmup=5, cells_per_step=3, pos_freqs=2, time_freqs=2, mlp_width=16, mlp_depth=2,
                           view_residual=frac, lr_view_residual=1e-2)
        torch.manual_seed(0)
        scene = scene_from_canonical(grid, can, cfg)
        reps.append(fit_deform(grid, scene, cells, cfg, torch.device("cpu"), seed=0))
        scenes.append(scene)
    a, b = scenes
    for k in ("means", "colors", "log_scales", "opacity_logits"):
        assert torch.equal(getattr(a.splats, k), getattr(b.splats, k)), k
    for pa, pb in zip(a.field.mlp.parameters(), b.field.mlp.parameters()):
        assert torch.equal(pa, pb)
    assert reps[1]["view_residual_steps"] == 15 and reps[0]["view_residual_steps"] == 0
    assert b.splats.means.requires_grad  # unfrozen again
    resid = b.field.view_correction.detach() - a.field.view_correction.detach()
    assert resid[:, grid.central_view].abs().max() > 0  # per view, the central one included


def test_free_view_correction_fits_training_views_individually():
    grid, tracks, _, _ = _setup(V=3, T=1, with_cameras=True)
    can = build_canonical(grid, tracks, CanonicalConfig())
    cells = [(i, 0) for i in range(3)]
    corr = {}
    for mode in ("affine", "free"):
        cfg = DeformConfig(iterations=30, warmup=5, cells_per_step=3, lr_view_correction=1e-2, view_correction=mode,
                           pos_freqs=2, time_freqs=2, mlp_width=16, mlp_depth=2, view_residual=0.0)
        grid.images[0] = np.roll(grid.images[0], 1, axis=1)  # view 0 is shifted: something for the correction to do
        scene = scene_from_canonical(grid, can, cfg)
        fit_deform(grid, scene, cells, cfg, torch.device("cpu"), seed=0)
        grid.images[0] = np.roll(grid.images[0], -1, axis=1)
        corr[mode] = scene.field.view_correction.detach()
    assert corr["free"][:, 1].abs().max() > 0  # the free correction also moves the central view's Gaussians
    resid = corr["free"] - project_affine(corr["free"], can.splats.means)
    assert resid.abs().max() > 1e-4  # ... and per Gaussian, not affinely
    assert corr["affine"][:, 1].abs().max() == 0 and corr["affine"][:, 0].abs().max() > 0
    with pytest.raises(Exception, match="view correction"):
        fit_deform(grid, scene_from_canonical(grid, can, DeformConfig(view_correction="spline")), cells,
                   DeformConfig(iterations=1, view_correction="spline"), torch.device("cpu"), seed=0)


def test_ssim_matches_a_direct_2d_window_formula_forward_and_backward():
    """The batched, separable SSIM equals SSIM written out with one 11x11 window per moment."""
    import torch.nn.functional as F

    from recon.fit.losses import SSIM_SIGMA, SSIM_WINDOW

    torch.manual_seed(0)
    a = torch.rand(2, 20, 23, 3, dtype=torch.float64, requires_grad=True)
    b = torch.rand(2, 20, 23, 3, dtype=torch.float64)
    r = torch.arange(SSIM_WINDOW, dtype=torch.float64) - (SSIM_WINDOW - 1) / 2
    g1 = torch.exp(-r**2 / (2 * SSIM_SIGMA**2))
    w = (g1[:, None] * g1[None, :]) / g1.sum() ** 2

    def direct(a, b):
        x, y = a.permute(0, 3, 1, 2), b.permute(0, 3, 1, 2)
        k = w.expand(3, 1, SSIM_WINDOW, SSIM_WINDOW)
        blur = lambda t: F.conv2d(t, k, groups=3)
        mx, my = blur(x), blur(y)
        sxx, syy, sxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
        c1, c2 = 0.01**2, 0.03**2
        return (((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))).mean(1).flatten(1).mean(1)

    got, want = ssim(a, b), direct(a, b)
    assert torch.allclose(got, want, atol=1e-10)
    (ga,) = torch.autograd.grad(got.sum(), a)
    (wa,) = torch.autograd.grad(want.sum(), a)
    assert torch.allclose(ga, wa, atol=1e-10)


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


def test_time_curriculum_widens_from_the_reference_time():
    cells = [(v, t) for v in range(3) for t in range(8)]
    b = time_batches(cells, 60, 2, torch.Generator().manual_seed(0), curriculum=(3, 28))
    times = [batch[0][1] for batch in b]
    for k, t in enumerate(times[:29]):
        assert abs(t - 3) <= -(-4 * k // 28), (k, t)  # within ceil(span * k / ramp) of the reference
    assert set(times[29:]) == set(range(8)) or len(set(times[29:])) >= 6  # the whole range afterwards
    assert time_batches(cells, 10, 2, torch.Generator().manual_seed(1)) == time_batches(cells, 10, 2, torch.Generator().manual_seed(1), None)
