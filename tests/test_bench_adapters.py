"""Baseline initialisations and the Dust3R / Splatt3R adapters: availability and output conversion."""

import numpy as np
import pytest

from recon.bench import adapters as A
from recon.bench import baselines as B
from recon.bench.metrics import unproject_depth
from recon.io.ply import SH_C0


@pytest.fixture(scope="module")
def grid():
    from recon.synth import make_grid

    return make_grid("static", views=3, frames=1, size=(24, 24), seed=0, supersample=1)


def _rot(axis, angle):
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * K + (1 - np.cos(angle)) * K @ K


def _cam_points(grid, v):
    """GT points of view v (world) and the same points in the central camera frame, pixel order."""
    d, K, w2c = grid.extras["depth"][v, 0], grid.cameras.K[v, 0], grid.cameras.w2c[v, 0]
    Xw = unproject_depth(d, K, w2c)
    wc = grid.cameras.w2c[grid.central_view, 0]
    return Xw, Xw @ wc[:3, :3].T + wc[:3, 3]


def test_adapters_not_available_without_paths(tmp_path):
    for adapter, flag in ((A.Dust3rAdapter(), "--dust3r-repo"), (A.Splatt3rAdapter(), "--splatt3r-repo")):
        ok, why = adapter.status()
        assert not ok and why.startswith("not available (needs") and flag in why
        with pytest.raises(RuntimeError, match="not available"):
            adapter.run(None, tmp_path, np.zeros((2, 2)), None)
    ok, why = A.Dust3rAdapter(repo=tmp_path, ckpt=tmp_path / "x.pth").status()
    assert not ok and "is not a Dust3R clone" in why
    (tmp_path / "dust3r").mkdir()
    (tmp_path / "dust3r" / "inference.py").write_text("")
    ok, why = A.Dust3rAdapter(repo=tmp_path, ckpt=tmp_path / "x.pth").status()
    assert not ok and "does not exist" in why
    ok, why = A.Splatt3rAdapter(repo=tmp_path, ckpt=tmp_path / "x.ckpt").status()
    assert not ok and "is not a Splatt3R clone" in why


def test_dust3r_conversion_recovers_canonical_points(grid):
    """A Dust3R output in its own similarity frame (scale 0.5, rotated, shifted) maps back exactly."""
    V, c = grid.num_views, int(grid.central_view)
    s, R, t = 0.5, _rot([0.3, 1.0, 0.2], 0.7), np.array([1.0, -2.0, 0.5])
    to_dust = lambda X: s * X @ R.T + t  # noqa: E731
    pts3d, imgs, masks, c2w = [], [], [], []
    for v in range(V):
        Xw, _ = _cam_points(grid, v)
        H, W = grid.height, grid.width
        pm = np.zeros((H, W, 3))
        pm[grid.extras["depth"][v, 0] > 0] = to_dust(Xw)
        pts3d.append(pm)
        imgs.append(grid.images[v, 0] / 255.0)
        masks.append(grid.extras["depth"][v, 0] > 0)
        cw = np.linalg.inv(grid.cameras.w2c[v, 0])
        d = np.eye(4)
        d[:3, :3] = R @ cw[:3, :3]
        d[:3, 3] = to_dust(cw[:3, 3])
        c2w.append(d)
    tracks, info = A.dust3r_to_tracks(grid, pts3d, np.stack(c2w), imgs, masks, grid.extras["depth"][c, 0], max_points=10**6)
    assert info["scale"] == pytest.approx(1 / s, rel=1e-6)
    want = np.concatenate([_cam_points(grid, v)[1] for v in range(V)])
    got = tracks.points[:, c].double().numpy()
    assert np.allclose(got, want, atol=1e-4)
    # rigid placement in every frame: points[:, v] = pose_v(canonical)
    poses = B.reference_poses(grid)
    v = (c + 1) % V
    assert np.allclose(tracks.points[:, v].double().numpy(), want @ poses[v, :3, :3].T + poses[v, :3, 3], atol=1e-4)
    assert tracks.seed_view.tolist() == sum(([u] * int(masks[u].sum()) for u in range(V)), [])
    # budget
    small, info = A.dust3r_to_tracks(grid, pts3d, np.stack(c2w), imgs, masks, grid.extras["depth"][c, 0], max_points=100)
    assert small.num_points == 100 == info["points"]


def test_splatt3r_conversion_from_documented_output(grid):
    c, n = int(grid.central_view), int(grid.central_view) + 1
    H, W = grid.height, grid.width
    scale = 0.7  # Splatt3R's metric units differ from the grid's
    preds = []
    for v, key in ((c, "means"), (n, "means_in_other_view")):
        _, Xc = _cam_points(grid, v)
        m = np.zeros((1, H, W, 3))
        valid = grid.extras["depth"][v, 0] > 0
        m[0][valid] = Xc * scale
        rgb = grid.images[v, 0] / 255.0
        sh = np.zeros((1, H, W, 3, 4))
        sh[0, ..., 0] = (rgb - 0.5) / SH_C0
        op = np.where(valid, 0.9, 0.01)[None, ..., None]  # pixels without a surface: transparent
        preds.append({key: m, "sh": sh, "opacities": op, "scales": np.full((1, H, W, 3), 0.01)})
    tracks, info = A.splatt3r_to_tracks(grid, preds[0], preds[1], n, grid.extras["depth"][c, 0], max_points=10**6)
    assert info["scale"] == pytest.approx(1 / scale, rel=1e-6)
    want = np.concatenate([_cam_points(grid, v)[1] for v in (c, n)])
    assert np.allclose(tracks.points[:, c].double().numpy(), want, atol=1e-4)
    nc = int((grid.extras["depth"][c, 0] > 0).sum())
    assert (tracks.seed_view[:nc] == c).all() and (tracks.seed_view[nc:] == n).all()
    want_rgb = grid.images[c, 0][grid.extras["depth"][c, 0] > 0] / 255.0
    assert np.allclose(tracks.colors[:nc].numpy(), want_rgb, atol=1e-5)
    # the fallback keys without learnt offsets are accepted too
    p1 = dict(preds[0], pts3d=preds[0].pop("means"))
    p2 = dict(preds[1], pts3d_in_other_view=preds[1].pop("means_in_other_view"))
    assert A.splatt3r_to_tracks(grid, p1, p2, n, grid.extras["depth"][c, 0], 10**6)[0].num_points == tracks.num_points


def test_pointmap_and_random_initialisations(grid):
    depth = grid.extras["depth"][:, 0]
    tr = B.pointmap_tracks(grid, depth, stride=1)
    V, c = grid.num_views, int(grid.central_view)
    assert tr.num_points == int((depth > 0).sum())
    # each point sits, in its seed frame, where its pixel's depth puts it
    for v in range(V):
        Xc, _ = B.unproject(depth[v], grid.cameras.K[v, 0])
        assert np.allclose(tr.points[tr.seed_view == v, v].double().numpy(), Xc, atol=1e-4)
    rnd = B.random_tracks(grid, depth, count=500, seed=1)
    assert rnd.num_points == 500 and (rnd.seed_view == c).all()
    full = tr.points[:, c].double().numpy()  # the central frame is the canonical frame
    X = rnd.points[:, c].double().numpy()
    assert (X >= full.min(0) - 1e-4).all() and (X <= full.max(0) + 1e-4).all()
    lo, hi = B.scene_bounds(full)
    assert (X.max(0) - X.min(0) > 0.5 * (hi - lo)).all()  # spread over the box, not a clump
    assert np.allclose(rnd.colors.numpy(), 0.5)


def test_depth_scale():
    pts = np.array([[0, 0, 1.0], [0, 0, 2.0], [0, 0, 3.0]])
    assert A.depth_scale(pts, np.array([[2.0, 4.0], [6.0, 0.0]])) == pytest.approx(2.0)
    assert A.depth_scale(np.zeros((0, 3)), np.ones((2, 2))) == 1.0
