"""Benchmark metrics on cases with known answers."""

import math

import numpy as np
import pytest

from recon.bench import metrics as M


def _img(seed=0, H=24, W=32):
    return np.random.default_rng(seed).random((H, W, 3))


def test_psnr_identical_is_the_documented_cap():
    a = _img()
    assert M.psnr(a, a) == M.PSNR_CAP_DB == 100.0


def test_psnr_known_value():
    a = np.full((8, 8, 3), 0.5)
    b = a + 0.1  # MSE 0.01 -> 20 dB
    assert M.psnr(b, a) == pytest.approx(20.0, abs=1e-9)
    assert M.psnr(np.full((4, 4, 3), 1.0), np.zeros((4, 4, 3))) == pytest.approx(0.0, abs=1e-12)


def test_psnr_clips_prediction_to_unit_range():
    gt = np.ones((4, 4, 3))
    assert M.psnr(gt * 2.0, gt) == M.PSNR_CAP_DB


def test_masked_psnr_ignores_pixels_outside_the_mask():
    gt = np.full((10, 10, 3), 0.5)
    pred = gt.copy()
    pred[:, 5:] = 0.0  # wrong only on the right half
    mask = np.zeros((10, 10), bool)
    mask[:, :5] = True
    assert M.masked_psnr(pred, gt, mask) == M.PSNR_CAP_DB
    mask[:, :] = False
    mask[0, 9] = True  # one wrong pixel, error 0.5 -> 10 log10(1/0.25) = 6.0206 dB
    assert M.masked_psnr(pred, gt, mask) == pytest.approx(10 * math.log10(4.0))
    assert math.isnan(M.masked_psnr(pred, gt, np.zeros((10, 10), bool)))


def test_ssim_identical_is_one_and_drops_with_noise():
    a = _img(H=32, W=32)
    assert M.ssim(a, a) == pytest.approx(1.0, abs=1e-6)
    noisy = np.clip(a + np.random.default_rng(1).normal(0, 0.2, a.shape), 0, 1)
    assert M.ssim(noisy, a) < 0.9


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError):
        M.psnr(np.zeros((4, 4, 3)), np.zeros((4, 5, 3)))


def test_lpips_status_reports_why_when_unavailable():
    ok, why = M.lpips_status()
    if not ok:
        assert why.startswith("not available (needs")
        with pytest.raises(RuntimeError, match="not available"):
            M.LpipsMetric()


def test_chamfer_of_shifted_lattice_is_the_shift():
    g = np.stack(np.meshgrid(np.arange(5.0), np.arange(5.0), np.arange(5.0)), -1).reshape(-1, 3)
    shift = np.array([0.1, 0.0, 0.0])  # well under half the spacing: nearest neighbour = own copy
    c = M.chamfer(g + shift, g)
    assert c["accuracy"] == pytest.approx(0.1)
    assert c["completeness"] == pytest.approx(0.1)
    assert c["chamfer"] == pytest.approx(0.1)
    assert M.chamfer(g, g)["chamfer"] == 0.0


def test_chamfer_separates_floaters_from_holes():
    gt = np.zeros((1, 3))
    pred = np.array([[0.0, 0.0, 0.0], [3.0, 0.0, 0.0]])  # one exact point, one floater 3 away
    c = M.chamfer(pred, gt)
    assert c["accuracy"] == pytest.approx(1.5) and c["completeness"] == 0.0
    assert math.isnan(M.chamfer(np.zeros((0, 3)), gt)["chamfer"])


def test_track_error_measures_motion_not_placement():
    T = 4
    gt = np.zeros((2, T, 3))
    gt[:, :, 0] = np.arange(T)  # moves +1 in x per step
    offset = gt + np.array([5.0, 0, 0])  # right motion, wrong place: zero motion error
    assert M.track_error(offset, gt) == pytest.approx(0.0)
    still = np.zeros_like(gt)  # does not move: error = |t| averaged over t = 1..3 -> 2
    assert M.track_error(still, gt) == pytest.approx(2.0)
    assert math.isnan(M.track_error(np.zeros((0, T, 3)), np.zeros((0, T, 3))))


def _camera(H=20, W=20, f=20.0):
    K = np.array([[f, 0, W / 2], [0, f, H / 2], [0, 0, 1.0]])
    return K, np.eye(4)


def test_free_space_and_floater_ratio():
    K, w2c = _camera()
    depth = np.full((1, 20, 20), 2.0)  # a wall at z = 2
    pts = np.array([
        [0.0, 0.0, 2.0],   # on the wall: not floating
        [0.0, 0.0, 3.0],   # behind the wall: hidden, not floating
        [0.0, 0.0, 1.0],   # in front of the wall: floater
        [0.0, 0.0, -1.0],  # behind the camera: unseen, not floating
    ])
    assert M.free_space(pts, depth, K[None], w2c[None]).tolist() == [False, False, True, False]
    assert M.floater_ratio(pts, depth, K[None], w2c[None]) == pytest.approx(0.25)
    # an invisible (transparent) floater does not count
    assert M.floater_ratio(pts, depth, K[None], w2c[None], opacities=np.array([1, 1, 0.0, 1])) == 0.0


def test_free_space_without_background_is_the_visual_hull():
    K, w2c = _camera()
    depth = np.zeros((1, 20, 20))
    depth[0, 8:12, 8:12] = 2.0  # an object in the middle, nothing behind it
    pts = np.array([[0.0, 0.0, 2.0], [0.8, 0.8, 2.0]])  # centre of the object; far off to the side
    assert M.free_space(pts, depth, K[None], w2c[None], edge_px=0).tolist() == [False, True]


def test_mask_hull_and_iou():
    K, w2c = _camera()
    mask = np.zeros((1, 20, 20), bool)
    mask[0, 5:15, 5:15] = True
    pts = np.array([[0.0, 0.0, 2.0], [0.9, 0.9, 2.0]])
    assert M.inside_mask_hull(pts, mask, K[None], w2c[None], dilate_px=0).tolist() == [True, False]
    alpha = mask[0].astype(float)
    assert M.mask_iou(alpha, mask[0]) == 1.0
    half = alpha.copy()
    half[:, 10:] = 0.0  # half of the mask covered
    assert M.mask_iou(half, mask[0]) == pytest.approx(0.5)
    assert math.isnan(M.mask_iou(np.zeros((3, 3)), np.zeros((3, 3), bool)))


def test_unproject_depth_inverts_projection():
    K, _ = _camera()
    w2c = np.eye(4)
    w2c[:3, 3] = [0.1, -0.2, 0.5]
    depth = np.full((20, 20), 3.0)
    X = M.unproject_depth(depth, K, w2c)
    uv, z = M._project(X, K, w2c)
    assert np.allclose(z, 3.0)
    assert np.allclose(uv[0], [0.5, 0.5]) and np.allclose(uv[-1], [19.5, 19.5])


def test_summarize_skips_nan():
    s = M.summarize([1.0, 3.0, float("nan"), None])
    assert s == {"mean": 2.0, "std": 1.0, "n": 2}
    assert math.isnan(M.summarize([])["mean"])


def test_paired_differences_follow_each_metrics_direction():
    from recon.bench.report import paired_differences, paired_table

    runs = []
    for c, (a, b, fa, fb) in enumerate([(30.0, 29.0, 0.1, 0.3), (28.0, 28.5, 0.2, 0.2), (31.0, 30.0, 0.0, 0.5)]):
        runs.append({"case": f"c{c}", "method": "recon", "status": "ok", "metrics": {"novel_psnr": a, "floater_ratio": fa}})
        runs.append({"case": f"c{c}", "method": "no-prune", "status": "ok", "metrics": {"novel_psnr": b, "floater_ratio": fb}})
    runs.append({"case": "c3", "method": "recon", "status": "ok", "metrics": {"novel_psnr": 40.0}})  # unpaired: left out
    p = paired_differences(runs, ["recon", "no-prune"])["no-prune"]
    assert p["novel_psnr"]["n"] == 3 and p["novel_psnr"]["mean"] == pytest.approx((1.0 - 0.5 + 1.0) / 3)
    assert p["novel_psnr"]["better"] == 2  # higher is better
    assert p["floater_ratio"]["better"] == 2  # lower is better: recon has fewer floaters in c0 and c2
    assert p["novel_psnr"]["by_case"] == {"c0": 1.0, "c1": -0.5, "c2": 1.0}
    assert "recon better in 2/3" in paired_table({"no-prune": p})
