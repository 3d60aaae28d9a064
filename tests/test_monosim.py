"""The ``mono-sim`` depth provider has the statistics its module documents, and the off-grid
evaluation cameras of synthetic cases see the same surface points as the grid cameras."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recon.errors import InputError
from recon.synth import make_grid
from recon.tracking import monosim as MS
from recon.tracking.depth import estimate_depth, gt_depth


@pytest.fixture(scope="module")
def grid():
    return make_grid("orbit", views=4, frames=3, size=(96, 128), seed=3)


def _only(monkeypatch, **keep):
    """Switch off every error of mono-sim but the ones named (their documented values kept)."""
    for name in ("LOWFREQ_RMS", "SCALE_SPREAD", "SHIFT_SPREAD"):
        if name not in keep:
            monkeypatch.setattr(MS, name, 0.0)
    if "EDGE" not in keep:
        monkeypatch.setattr(MS, "EDGE_SIGMA_FRAC", 0.0)
        monkeypatch.setattr(MS, "edge_sigma", lambda width: 1e-3)


def test_edges_become_ramps_of_flying_pixels_and_flat_regions_stay(monkeypatch):
    _only(monkeypatch, EDGE=True)
    H, W = 32, 512
    depth = np.full((H, W), 2.0)
    depth[:, : W // 2] = 1.0  # a vertical occlusion edge at x = 256
    est = MS.degrade(depth, np.random.default_rng(0))
    s = MS.edge_sigma(W)
    assert s == pytest.approx(2.0)  # 1/256 of the width
    flying = (np.abs(est / 1.0 - 1) > 0.02) & (np.abs(est / 2.0 - 1) > 0.02)
    cols = np.nonzero(flying.any(0))[0]
    assert cols.size >= 2 * s and cols.size <= 6 * s, cols  # a band a few sigma wide ...
    assert np.abs(cols + 0.5 - W / 2).max() <= 4 * s  # ... around the edge only
    far = np.r_[0 : W // 2 - int(6 * s), W // 2 + int(6 * s) : W]
    assert np.allclose(est[:, far], depth[:, far], rtol=1e-6)
    assert ((est > 1.0 - 1e-6) & (est < 2.0 + 1e-6)).all()  # between the two surfaces, never beyond


def test_low_frequency_error_has_the_documented_rms_and_is_smooth(monkeypatch):
    _only(monkeypatch, LOWFREQ_RMS=True)
    depth = np.full((64, 96), 3.0)
    for k in range(5):
        r = np.log(MS.degrade(depth, np.random.default_rng(k)) / depth)
        assert np.sqrt(np.mean(r ** 2)) == pytest.approx(MS.LOWFREQ_RMS, rel=1e-3)
        assert np.abs(np.diff(r, axis=1)).max() < 0.25 * MS.LOWFREQ_RMS  # smooth: no pixel-scale noise


def test_per_frame_scale_spread(monkeypatch):
    _only(monkeypatch, SCALE_SPREAD=True)
    depth = np.full((8, 8), 2.0)
    logs = [float(np.log(MS.degrade(depth, np.random.default_rng(k)) / depth).mean()) for k in range(400)]
    assert np.std(logs) == pytest.approx(MS.SCALE_SPREAD, rel=0.15)
    assert abs(np.mean(logs)) < 0.2 * MS.SCALE_SPREAD


def test_provider_on_a_grid_is_deterministic_and_errs_as_documented(grid):
    cells = [(v, t) for v in range(grid.num_views) for t in range(grid.num_times)]
    a = estimate_depth(grid, cells, provider="mono-sim")
    b = estimate_depth(grid, cells, provider="mono-sim")
    assert torch.equal(a, b) and a.shape == (len(cells), grid.height, grid.width)
    gt = gt_depth(grid, cells)
    ok = gt > 0
    assert torch.equal(a > 0, ok)
    rel = ((a - gt).abs() / gt.clamp_min(1e-9))[ok]
    # AbsRel of the order of the published monocular models' (module docstring), not exact, not wild
    assert 0.02 < float(rel.mean()) < 0.2, float(rel.mean())
    # frames disagree in scale: the spread of per-frame median log ratios is of the documented order
    med = [float(torch.log(a[i][ok[i]] / gt[i][ok[i]]).median()) for i in range(len(cells))]
    assert 0.01 < float(np.std(med)) < 0.2


def test_provider_needs_a_synthetic_grid(grid):
    from recon.grid import FrameGrid

    plain = FrameGrid(images=grid.images, cameras=grid.cameras, times=grid.times)
    with pytest.raises(InputError, match="mono-sim"):
        estimate_depth(plain, [(0, 0)], provider="mono-sim")


def test_novel_cameras_see_the_grid_cameras_surface_points(grid):
    """Rays of the off-grid cameras through the projections of surface points seen by a grid
    camera hit the same points (reprojected within 0.5 px) wherever the novel camera sees them."""
    from recon.bench.suites import NOVEL_CAMERAS
    from recon.synth import scene_from_meta
    from recon.synth.raycast import cast, pixel_rays

    scene = scene_from_meta(grid.meta)
    H, W = grid.height, grid.width
    v, t = 1, 0
    K, w2c = grid.cameras.K[v, t], grid.cameras.w2c[v, t]
    d = np.asarray(grid.extras["depth"][v, t], np.float64)
    rows, cols = np.nonzero(d > 0)
    pick = np.random.default_rng(0).choice(len(rows), 400, replace=False)
    uv = np.stack([cols[pick] + 0.5, rows[pick] + 0.5], 1)
    z = d[rows[pick], cols[pick]]
    Xc = np.concatenate([(uv - K[:2, 2]) / np.diag(K)[:2] * z[:, None], z[:, None]], 1)
    c2w = np.linalg.inv(w2c)
    X = Xc @ c2w[:3, :3].T + c2w[:3, 3]
    checked = 0
    for f, el in NOVEL_CAMERAS:
        Kn, wn = (a[0] for a in scene.rig.novel_cameras((f,), (H, W), el))
        Xn = X @ wn[:3, :3].T + wn[:3, 3]
        un = Xn[:, :2] / Xn[:, 2:] * np.diag(Kn)[:2] + Kn[:2, 2]
        inside = (Xn[:, 2] > 0) & (un[:, 0] > 0) & (un[:, 0] < W) & (un[:, 1] > 0) & (un[:, 1] < H)
        o, dirs = pixel_rays(Kn, wn, un[inside])
        s, _, _ = cast(scene, o, dirs, float(grid.times[t]))
        hit = o + s[:, None] * dirs
        zn = Xn[inside, 2]
        seen = np.isfinite(s) & (np.abs(s - zn) < 1e-2 * zn)  # the ray's z-depth agrees: not occluded there
        back = hit[seen] @ w2c[:3, :3].T + w2c[:3, 3]
        pix = back[:, :2] / back[:, 2:] * np.diag(K)[:2] + K[:2, 2]
        assert np.abs(pix - uv[inside][seen]).max() < 0.5
        checked += int(seen.sum())
    assert checked > 200
