"""Tracking stage: depth providers, camera estimation, gt / flow / file tracks, Umeyama."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from recon.errors import InputError
from recon.grid import Cameras, FrameGrid
from recon.tracking import build_tracks, estimate_cameras, estimate_depth, read_tracks, umeyama, write_tracks
from recon.tracking.depth import align_scale_shift
from recon.tracking.geometry import project, transform
from recon.tracking.seeds import depth_test, keyframe_views
from recon.tracking.trackio import delta_default_intrinsics


@pytest.fixture(scope="module")
def grid() -> FrameGrid:
    from recon.synth import make_grid

    return make_grid("orbit", views=6, frames=2, size=(96, 128), seed=0)


def _rel(g: FrameGrid) -> np.ndarray:
    """GT transforms central-camera coords -> view v camera coords at ref_time, [V, 4, 4]."""
    w2c = g.cameras.w2c[:, g.ref_time]
    return w2c @ np.linalg.inv(w2c[g.central_view])


def _rot_deg(Ra: np.ndarray, Rb: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(Ra.T @ Rb) - 1) / 2, -1, 1))))


# --- umeyama ---------------------------------------------------------------------------------------
def test_umeyama_recovers_known_similarity_and_rigid():
    rng = np.random.default_rng(0)
    src = rng.normal(size=(50, 3))
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    R = q * np.sign(np.linalg.det(q))
    t = np.array([0.3, -1.0, 2.0])
    s, R_e, t_e = umeyama(src, 1.7 * src @ R.T + t, with_scale=True)
    assert abs(s - 1.7) < 1e-10 and np.abs(R_e - R).max() < 1e-10 and np.abs(t_e - t).max() < 1e-10
    s, R_e, t_e = umeyama(torch.from_numpy(src), torch.from_numpy(src @ R.T + t))
    assert s == 1.0 and np.abs(R_e - R).max() < 1e-10 and np.linalg.det(R_e) > 0


def test_umeyama_irls_resists_outliers():
    rng = np.random.default_rng(1)
    src = rng.normal(size=(200, 3))
    R = np.array([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]])
    dst = src @ R.T + 1.0 + rng.normal(scale=1e-3, size=src.shape)
    dst[:50] += rng.normal(scale=3.0, size=(50, 3))  # 25 % gross outliers
    _, R_plain, _ = umeyama(src, dst)
    _, R_rob, t_rob = umeyama(src, dst, robust="irls")
    assert _rot_deg(R_plain, R) > 2.0  # the plain fit is pulled away ...
    assert _rot_deg(R_rob, R) < 0.1 and np.abs(t_rob - 1.0).max() < 0.01  # ... the robust one is not
    with pytest.raises(InputError, match="at least 3"):
        umeyama(src[:2], dst[:2])


# --- depth -----------------------------------------------------------------------------------------
def test_depth_gt_passthrough(grid):
    cells = [(0, 0), (3, 1)]
    d = estimate_depth(grid, cells, "gt")
    assert d.shape == (2, 96, 128) and d.dtype == torch.float32
    assert torch.equal(d[1], torch.from_numpy(grid.extras["depth"][3, 1]))
    assert estimate_depth(grid, cells, "auto").equal(d)


def test_depth_files_npy_png_and_wrong_size(grid, tmp_path):
    import cv2

    gt = grid.extras["depth"]
    np.save(tmp_path / "all.npy", gt)
    d = estimate_depth(grid, [(2, 1)], "file", path=tmp_path / "all.npy")
    assert torch.equal(d[0], torch.from_numpy(gt[2, 1]))
    np.savez(tmp_path / "freeze.npz", depth=gt[:, 0])
    assert torch.equal(estimate_depth(grid, [(4, 0)], "file", path=tmp_path / "freeze.npz")[0], torch.from_numpy(gt[4, 0]))
    with pytest.raises(InputError, match="freeze-time"):
        estimate_depth(grid, [(4, 1)], "file", path=tmp_path / "freeze.npz")
    folder = tmp_path / "pngs"
    (folder / "view_01").mkdir(parents=True)
    cv2.imwrite(str(folder / "view_01" / "depth_0000.png"), np.round(gt[1, 0] * 1000).astype(np.uint16))
    d = estimate_depth(grid, [(1, 0)], "file", path=folder)
    assert torch.allclose(d[0], torch.from_numpy(gt[1, 0]), atol=6e-4)
    np.save(tmp_path / "small.npy", gt[:, :, :48])
    with pytest.raises(InputError, match="small.npy"):
        estimate_depth(grid, [(0, 0)], "file", path=tmp_path / "small.npy")
    cv2.imwrite(str(folder / "view_01" / "depth_0001.png"), np.zeros((10, 10), np.uint16))
    with pytest.raises(InputError, match=r"depth_0001\.png.*\[10, 10\]"):
        estimate_depth(grid, [(1, 1)], "file", path=folder)


def test_relative_depth_aligned_robustly(grid):
    gt = torch.from_numpy(grid.extras["depth"][2, 0]).double()
    rel = (gt - 0.4) / 2.5  # an affine-invariant "relative" depth
    anchor = torch.zeros_like(gt)
    anchor[::7, ::7] = gt[::7, ::7]
    anchor[::21, ::21] *= 3.0  # some badly wrong anchors
    out = align_scale_shift(rel.float(), anchor.float(), "relative")
    ok = gt > 0
    assert ((out.double() - gt).abs()[ok] / gt[ok]).max() < 1e-3
    disp = 1.0 / gt.clamp_min(1e-6) * 3.0 + 0.1
    out = align_scale_shift(torch.where(ok, disp, torch.zeros_like(disp)).float(), anchor.float(), "disparity")
    assert ((out.double() - gt).abs()[ok] / gt[ok]).median() < 1e-3


def test_mvs_depth_accuracy(grid):
    d = estimate_depth(grid, [(3, 0)], "mvs")[0].numpy()
    gt = grid.extras["depth"][3, 0]
    valid = d > 0
    rel = np.abs(d[valid] - gt[valid]) / gt[valid]
    assert valid.mean() > 0.5, f"only {valid.mean():.0%} valid"
    assert np.median(rel) < 0.05, f"median relative error {np.median(rel):.3f}"


def test_relative_depth_file_aligned_to_mvs(grid, tmp_path):
    gt = grid.extras["depth"][:, 0]
    np.save(tmp_path / "rel.npy", (gt - 0.5) / 3.0)  # what a relative monocular model might give
    d = estimate_depth(grid, [(3, 0)], "file", path=tmp_path / "rel.npy", kind="relative")[0].numpy()
    ok = gt[3] > 0
    rel = np.abs(d[ok] - gt[3][ok]) / gt[3][ok]
    assert np.median(rel) < 0.01 and (d > 0).mean() > 0.95
    with pytest.raises(InputError, match="unknown depth kind"):
        estimate_depth(grid, [(3, 0)], "file", path=tmp_path / "rel.npy", kind="inverse")


# --- cameras ---------------------------------------------------------------------------------------
def test_estimate_cameras_on_known_rig(grid):
    est = estimate_cameras(grid)
    rel = _rel(grid)
    c = grid.central_view
    assert np.allclose(est.w2c[c], np.eye(4))
    for v in range(grid.num_views):
        assert _rot_deg(est.w2c[v, :3, :3], rel[v, :3, :3]) < 2.0
        if v != c:
            te, tg = est.w2c[v, :3, 3], rel[v, :3, 3]
            cos = te @ tg / (np.linalg.norm(te) * np.linalg.norm(tg))
            assert np.degrees(np.arccos(np.clip(cos, -1, 1))) < 5.0
    assert est.reprojection_rms < 1.0
    # scale convention: median depth of the sparse points in the central view is 1
    assert abs(np.median(est.points[:, 2]) - 1.0) < 0.05


def test_bundle_adjust_converges_to_exact_poses():
    from scipy.spatial.transform import Rotation

    from recon.tracking.cameras import bundle_adjust

    rng = np.random.default_rng(0)
    V, M = 5, 200
    K = np.tile(np.array([[150.0, 0, 64], [0, 150, 48], [0, 0, 1]]), (V, 1, 1))
    w2c = np.tile(np.eye(4), (V, 1, 1))
    for v in range(V):  # an arc of cameras looking at the origin region, central view 2 = world
        ang = np.radians(8 * (v - 2))
        R = Rotation.from_rotvec([0, -ang, 0]).as_matrix()
        w2c[v, :3, :3], w2c[v, :3, 3] = R, -R @ np.array([3 * np.sin(ang), 0, 3 - 3 * np.cos(ang)])
    X = rng.uniform([-1, -1, 2.5], [1, 1, 4], (M, 3))
    ov, op = np.repeat(np.arange(V), M), np.tile(np.arange(M), V)
    q = np.einsum("nij,nj->ni", K[ov], np.einsum("nij,nj->ni", w2c[ov, :3, :3], X[op]) + w2c[ov, :3, 3])
    uv = q[:, :2] / q[:, 2:]
    init = w2c.copy()
    for v in (0, 1, 3, 4):
        init[v, :3, :3] = Rotation.from_rotvec(rng.normal(0, 0.02, 3)).as_matrix() @ init[v, :3, :3]
        init[v, :3, 3] += rng.normal(0, 0.05, 3)
    out, _, inlier, err = bundle_adjust(K, init, X + rng.normal(0, 0.05, X.shape), ov, op, uv, fixed=2)
    assert inlier.all() and err.max() < 1e-6
    for v in range(V):  # exact up to the unobservable overall scale
        assert _rot_deg(out[v, :3, :3], w2c[v, :3, :3]) < 1e-4
        if v != 2:
            cos = out[v, :3, 3] @ w2c[v, :3, 3] / (np.linalg.norm(out[v, :3, 3]) * np.linalg.norm(w2c[v, :3, 3]))
            assert cos > 1 - 1e-9


# --- tracks ----------------------------------------------------------------------------------------
def test_keyframes_include_central_first():
    assert keyframe_views(9, 4, 3) == [4, 0, 8]
    assert keyframe_views(6, 3, 3)[0] == 3 and len(keyframe_views(6, 3, 3)) == 3
    assert keyframe_views(2, 1, 5) == [1, 0]


def test_gt_tracks_exact_and_visibility_by_surface(grid):
    tr = build_tracks(grid, with_time=True)  # auto: a synthetic grid -> gt
    V, r = grid.num_views, grid.ref_time
    P, vis = tr.points.numpy().astype(np.float64), tr.visible.numpy()
    assert tr.points.shape[1] == V and vis[np.arange(len(P)), tr.seed_view.numpy()].all()
    # positions: one rigid map per view pair (a static instant), exact up to float32
    rel = _rel(grid)
    c = grid.central_view
    for v in range(V):
        pred = transform(rel[v] @ np.linalg.inv(rel[c]), P[:, c])
        assert np.abs(pred - P[:, v]).max() < 1e-3
    # visibility: where a point is visible, the pixel it projects to sees the same surface point
    surf = grid.extras["surface"][:, r]
    oid = grid.extras["object_id"][:, r]
    seed = tr.seed_view.numpy()
    K = grid.cameras.K[:, r]
    for v in range(V):
        uv, _ = project(P[:, v], K[v])
        m = vis[:, v] & (seed == c)
        ij = np.floor(uv[m]).astype(int)
        s_here = surf[v][ij[:, 1], ij[:, 0]]
        s_seed_px = np.floor(project(P[m, c], K[c])[0]).astype(int)
        s_seed = surf[c][s_seed_px[:, 1], s_seed_px[:, 0]]
        footprint = P[m, v, 2] / K[v, 0, 0]  # one pixel's size at the point, scene units
        near = np.linalg.norm(s_here - s_seed, axis=1) < 3 * footprint
        same = (oid[v][ij[:, 1], ij[:, 0]] == oid[c][s_seed_px[:, 1], s_seed_px[:, 0]]) & near
        assert same.mean() > 0.97, f"view {v}: {same.mean():.3f}"
    # occlusion exists and is detected: not every point is visible everywhere
    assert 0.3 < vis.mean() < 0.95
    assert tr.time_points is not None and tr.time_points.shape == (len(P), grid.num_times, 3)
    assert torch.allclose(tr.time_points[:, r][tr.visible[:, c]], tr.points[:, c][tr.visible[:, c]], atol=1e-4)


def test_flow_tracks_close_to_gt_and_fb_drops_occluded(grid):
    tr = build_tracks(grid, depth="gt", tracks="flow", with_time=True)
    V, r, c = grid.num_views, grid.ref_time, grid.central_view
    P, vis, seed = tr.points.numpy().astype(np.float64), tr.visible.numpy(), tr.seed_view.numpy()
    rel = _rel(grid)
    depth = grid.extras["depth"][:, r]
    errs, false_vis, occluded, kept = [], 0, 0, 0
    for k in np.unique(seed):
        s = seed == k
        for v in range(V):
            exact = transform(rel[v] @ np.linalg.inv(rel[k]), P[s, k])  # GT position (seed lifted by GT depth)
            e = np.linalg.norm(exact - P[s, v], axis=1)
            if v != k:  # the seed frame is exact by construction
                errs.append(e[vis[s, v]])
            gt_vis = depth_test(exact, depth[v], grid.cameras.K[v, r])
            occluded += int((~gt_vis).sum())
            false_vis += int((vis[s, v] & ~gt_vis).sum())
            kept += int((vis[s, v] & gt_vis).sum())
    errs = np.concatenate(errs)
    scene = float(np.median(depth[depth > 0]))
    assert np.median(errs) < 0.01 * scene, f"median 3D error {np.median(errs):.4f} vs depth {scene:.2f}"
    assert np.percentile(errs, 90) < 0.05 * scene
    assert occluded > 1000 and false_vis < 0.05 * occluded, f"{false_vis} of {occluded} occluded marked visible"
    # the forward-backward check loses tracks, but most truly visible observations survive
    assert kept > 0.5 * (vis.size - occluded), f"{kept} of {vis.size - occluded} visible observations kept"
    # every point has a finite position in every frame (rigid prediction where not visible)
    assert torch.isfinite(tr.points).all()
    assert tr.time_points is not None and tr.time_visible[:, r].sum() == tr.visible[:, c].sum()


def test_tracks_file_round_trip(grid, tmp_path):
    tr = build_tracks(grid, tracks="gt", stride=6, with_time=True)
    path = write_tracks(tmp_path / "tracks.npz", tr)
    back = read_tracks(path, grid)
    for name in ("points", "visible", "colors", "seed_view", "time_points", "time_visible"):
        assert torch.equal(getattr(back, name), getattr(tr, name)), name
    again = build_tracks(grid, tracks="file", tracks_path=path)
    assert torch.equal(again.points, tr.points)
    np.savez(tmp_path / "junk.npz", foo=np.zeros(3))
    with pytest.raises(InputError, match="unrecognised tracks file"):
        read_tracks(tmp_path / "junk.npz", grid)
    small = grid.subset(views=[0, 1, 2])
    with pytest.raises(InputError, match="cover 6 views, the grid has 3"):
        read_tracks(path, small)


def test_delta_output_is_read_and_relifted(grid, tmp_path):
    tr = build_tracks(grid, tracks="gt", stride=8)
    V, H, W = grid.num_views, grid.height, grid.width
    Kd = delta_default_intrinsics(H, W)
    P = tr.points.numpy().astype(np.float64)
    coords = np.zeros((V, len(P), 3))
    for v in range(V):  # what DELTA's demo writes: z * Kd^-1 [u, v, 1] with 0-based pixel centres
        uv, z = project(P[:, v], grid.cameras.K[v, grid.ref_time])
        uvh = np.c_[uv - 0.5, np.ones(len(uv))]
        coords[v] = (uvh @ np.linalg.inv(Kd).T) * z[:, None]
    vis = tr.visible.numpy().T.copy()
    vis[0] = True  # DELTA seeds every point in its query frame
    data = {"coords": coords.astype(np.float32), "colors": (tr.colors.numpy() * 255).astype(np.float32), "vis": vis}
    with open(tmp_path / "dense_3d_track.pkl", "wb") as f:
        pickle.dump(data, f)
    back = read_tracks(tmp_path / "dense_3d_track.pkl", grid)
    assert back.points.shape == tr.points.shape and (back.seed_view == 0).all()
    assert torch.allclose(back.points, tr.points, atol=1e-4 * float(tr.points[..., 2].max()))
    assert torch.allclose(back.colors, tr.colors, atol=1e-5)
    # pickles that carry anything but arrays are refused
    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump({"coords": coords, "vis": vis, "x": Cameras}, f)
    with pytest.raises(InputError, match="refusing"):
        read_tracks(tmp_path / "evil.pkl", grid)


def test_bad_grids_are_input_errors(grid):
    one = grid.subset(views=[2])
    with pytest.raises(InputError, match="too small to track"):
        build_tracks(one)
    black = FrameGrid(images=np.zeros((3, 1, 32, 32, 3), np.uint8), cameras=Cameras(K=np.array([[30.0, 0, 16], [0, 30, 16], [0, 0, 1]])), times=np.zeros(1))
    with pytest.raises(InputError, match="flat colour"):
        build_tracks(black)
    with pytest.raises(InputError, match="unknown depth provider"):
        build_tracks(grid, depth="lidar", tracks="flow")
    with pytest.raises(InputError, match="needs a tracks path"):
        build_tracks(grid, tracks="file")
    with pytest.raises(InputError, match="outside the grid"):
        estimate_depth(grid, [(9, 0)], "gt")


def test_rig_tracks_with_exact_depth_match_gt_tracks(grid):
    """Rig tracks (depth + given poses, no flow) with the exact depth are the GT freeze-time tracks;
    with noisy depth they move by about the noise, and without poses they are refused."""
    from recon.tracking.rig import rig_tracks

    r = grid.ref_time
    gt = build_tracks(grid, tracks="gt", with_time=False)
    rig = rig_tracks(grid, grid.extras["depth"][:, r])
    assert torch.equal(rig.visible, gt.visible)
    assert torch.allclose(rig.points, gt.points, atol=1e-5)
    noisy = grid.extras["depth"][:, r] * (1.0 + 0.01 * np.random.default_rng(0).standard_normal(grid.extras["depth"][:, r].shape))
    moved = rig_tracks(grid, noisy.astype(np.float32))
    assert moved.num_points > 0.5 * gt.num_points
    no_pose = FrameGrid(images=grid.images, cameras=Cameras(K=grid.cameras.K), times=grid.times)
    with pytest.raises(InputError, match="poses"):
        rig_tracks(no_pose, grid.extras["depth"][:, r])


def test_mvs_rig_depth_range_needs_no_flow(grid, monkeypatch):
    """``mvs_range="rig"`` bounds the sweep by the rig geometry alone (the point nearest all optical
    axes): no flow matching, which on wide-baseline rigs finds only spurious matches. Rig tracks use it."""
    from recon.tracking import mvs

    def no_flow(*a, **k):
        raise AssertionError("flow-triangulated range used")

    monkeypatch.setattr(mvs, "_depth_range", no_flow)
    d = estimate_depth(grid, [(3, 0)], "mvs", mvs_range="rig")[0].numpy()
    gt = grid.extras["depth"][3, 0]
    valid = d > 0
    assert valid.mean() > 0.3, f"only {valid.mean():.0%} valid"
    assert np.median(np.abs(d[valid] - gt[valid]) / gt[valid]) < 0.05
    tr = build_tracks(grid, depth="mvs", tracks="rig", keyframes=1, stride=4)
    assert tr.num_points > 0
    with pytest.raises(InputError, match="depth range"):
        estimate_depth(grid, [(3, 0)], "mvs", mvs_range="flow-ish")


def _ring(n: int, arc_deg: float, radius: float = 3.0) -> np.ndarray:
    """``n`` cameras on an arc of ``arc_deg`` degrees around the origin, looking at it (w2c, OpenCV)."""
    out = []
    for a in np.radians(np.linspace(-arc_deg / 2, arc_deg / 2, n)):
        c = radius * np.array([np.sin(a), 0.0, -np.cos(a)])
        z = -c / np.linalg.norm(c)
        x = np.cross([0.0, 1.0, 0.0], z)
        x /= np.linalg.norm(x)
        y = np.cross(z, x)
        R = np.stack([x, y, z])
        w2c = np.eye(4)
        w2c[:3, :3], w2c[:3, 3] = R, -R @ c
        out.append(w2c)
    return np.stack(out)


def test_wide_baseline_rigs_are_recognised():
    from recon.tracking.build import WIDE_BASELINE_DEG, neighbour_angle

    dome = _ring(12, 330.0)  # ~30 degrees apart, as CMU Panoptic's ring (~26)
    arc = _ring(8, 56.0)  # 8 degrees apart, as a generator's arc
    assert neighbour_angle(dome) == pytest.approx(30.0, abs=0.5) and neighbour_angle(dome) > WIDE_BASELINE_DEG
    assert neighbour_angle(arc) == pytest.approx(8.0, abs=0.5) and neighbour_angle(arc) < WIDE_BASELINE_DEG


def test_auto_tracks_on_a_wide_baseline_rig_are_dense_rig_tracks(monkeypatch):
    """``auto`` on a calibrated dome: rig tracks from at least RIG_KEYFRAMES keyframes, every pixel seeded."""
    import recon.tracking.build as B

    V, H, W = 12, 16, 16
    w2c = _ring(V, 330.0)[:, None]
    K = np.tile(np.array([[20.0, 0, W / 2], [0, 20.0, H / 2], [0, 0, 1]]), (V, 1, 1, 1))
    grid = FrameGrid(np.zeros((V, 1, H, W, 3), np.uint8), Cameras(K=K, w2c=w2c), np.zeros(1))
    real, calls = B.build_tracks, []

    def spy(g, depth, tracks, tracks_path, depth_path, keyframes, stride, *rest):
        calls.append((tracks, keyframes, stride))
        return "rig tracks"

    monkeypatch.setattr(B, "build_tracks", spy)
    assert real(grid, "auto", "auto", None, None, 3, 2) == "rig tracks"
    assert calls == [("rig", B.RIG_KEYFRAMES, B.RIG_STRIDE)]
