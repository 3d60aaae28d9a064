"""The grid generator: shapes, masking, sync formulas, save/load offline, training, metrics, CLI errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from recon.cli import main
from recon.diffusion.checkpoint import load_generator, load_weights_into, save_checkpoint
from recon.diffusion.data import grid_task_mask, pseudo4d_grid, to_model_range, to_uint8
from recon.diffusion.metrics import copy_nearest_baseline, correspondences, multiview_consistency, nearest_given, psnr_generated
from recon.diffusion.model import GridTransformer
from recon.diffusion.sampler import fill_grid, sample
from recon.diffusion.sync import HardSync, LearnedSync, SoftSync, soft_weight
from recon.diffusion.train import flow_loss
from recon.errors import InputError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


TINY = dict(height=8, width=8, patch_size=4, width_dim=16, heads=2, depth=3, mlp_ratio=2.0, max_views=3, max_times=4)


def tiny(**kw) -> GridTransformer:
    torch.manual_seed(0)
    return GridTransformer(**{**TINY, **kw})


def randomise(model: GridTransformer) -> GridTransformer:
    """Give the zero-initialised gates and output layers random values so every path matters."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".sync." not in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model


def batch(B=2, V=3, T=4, H=8, W=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(B, V, T, 3, H, W, generator=g) * 2 - 1
    mask = grid_task_mask(V, T, 1)[None].expand(B, V, T).clone()
    return x, mask


@pytest.mark.parametrize("kw", [dict(sync="learned"), dict(sync="soft"), dict(sync="hard"), dict(order="sequential"),
                                dict(sync="learned", drop_sync="first"), dict(sync="soft", drop_sync="last")])
def test_forward_shapes(kw):
    m = randomise(tiny(**kw))
    x, mask = batch()
    out = m(x, torch.tensor([10.0, 900.0]), x, mask)
    assert out.shape == x.shape and torch.isfinite(out).all()
    clip = x[:, :1]
    assert m(clip, 500.0, clip, mask[:, :1], video_only=True).shape == clip.shape
    with pytest.raises(ValueError):
        m(torch.zeros(1, 4, 4, 3, 8, 8), 1.0, torch.zeros(1, 4, 4, 3, 8, 8), torch.zeros(1, 4, 4, dtype=torch.bool))


def test_given_frames_enter_clean_and_only_there():
    m = randomise(tiny()).eval()
    x, mask = batch()
    cond = torch.rand_like(x)
    base = m(x, 300.0, cond, mask)
    # the noisy sample is ignored on given frames, the conditioning is ignored elsewhere
    x2 = torch.where(mask[:, :, :, None, None, None], torch.randn_like(x), x)
    cond2 = torch.where(mask[:, :, :, None, None, None], cond, torch.randn_like(x))
    free = ~mask
    assert torch.allclose(m(x2, 300.0, cond2, mask)[free], base[free], atol=1e-5)
    assert torch.allclose(m(x2, 300.0, cond2, mask, return_x0=True), m(x, 300.0, cond, mask, return_x0=True), atol=1e-5)
    # but the conditioning does matter where it is given
    cond3 = torch.where(mask[:, :, :, None, None, None], torch.randn_like(x), cond)
    assert not torch.allclose(m(x, 300.0, cond3, mask)[free], base[free], atol=1e-3)
    out = sample(m, cond, mask, steps=2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out[mask], cond[mask])


def test_sync_formulas():
    yv, yt = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    temb = torch.randn(2, 16)
    xv, xt = HardSync()(yv, yt, temb)
    assert torch.allclose(xv, 0.5 * (yv + yt)) and torch.allclose(xt, 0.5 * (yv + yt))
    w = soft_weight(2, 6)
    assert w == pytest.approx(0.1 + 2 / 6 * 0.4)
    xv, xt = SoftSync(w)(yv, yt, temb)
    assert torch.allclose(xv, (1 - w) * yv + w * yt) and torch.allclose(xt, (1 - w) * yt + w * yv)
    xv, xt = LearnedSync(8, 16)(yv, yt, temb)  # initialised to the average
    assert torch.allclose(xv, 0.5 * (yv + yt), atol=1e-6)
    # the model's soft layers carry w_l = 0.1 + l / L * 0.4
    m = tiny(sync="soft", depth=3)
    assert [b.sync.weight for b in m.blocks] == pytest.approx([0.1, 0.1 + 0.4 / 3, 0.1 + 0.8 / 3])
    assert sum(type(b.sync).__name__ == "NoSync" for b in tiny(drop_sync="first", depth=6).blocks[:2]) == 2


def test_parallel_block_is_sync_of_two_attentions():
    m = randomise(tiny(sync="hard", depth=1))
    blk = m.blocks[0]
    x = torch.randn(2, 3, 4, 4, 16)
    temb = torch.randn(2, 16)
    h = blk.spatial(x, temb, "frame")
    merged = 0.5 * (blk.cross_view(h, temb, "view") + blk.cross_time(h, temb, "time"))
    want = blk.mlp(merged, temb, "token")
    got_v, got_t = blk.forward_parallel(x, x, temb)
    assert torch.allclose(got_v, want, atol=1e-5) and got_v is got_t
    # soft keeps two streams: x_v = (1-w) y_v + w y_t, then the MLP on each
    ms = randomise(tiny(sync="soft", depth=1))
    b = ms.blocks[0]
    h = b.spatial(x, temb, "frame")
    yv, yt = b.cross_view(h, temb, "view"), b.cross_time(h, temb, "time")
    w = b.sync.weight
    gv, gt = b.forward_parallel(x, x, temb)
    assert torch.allclose(gv, b.mlp((1 - w) * yv + w * yt, temb, "token"), atol=1e-5)
    assert torch.allclose(gt, b.mlp((1 - w) * yt + w * yv, temb, "token"), atol=1e-5)


def test_cross_view_attention_mixes_views_and_cross_time_mixes_times():
    m = randomise(tiny(order="sequential", depth=1)).eval()
    blk = m.blocks[0]
    x = torch.randn(1, 3, 4, 4, 16)
    temb = torch.randn(1, 16)
    x2 = x.clone()
    x2[0, 2, 3] += 1.0  # change view 2, time 3
    dv = (blk.cross_view(x2, temb, "view") - blk.cross_view(x, temb, "view")).abs().sum(dim=(-1, -2))[0]
    dt = (blk.cross_time(x2, temb, "time") - blk.cross_time(x, temb, "time")).abs().sum(dim=(-1, -2))[0]
    assert (dv[:, 3] > 0).all() and (dv[:, :3] == 0).all()  # same time step, every view
    assert (dt[2] > 0).all() and (dt[:2] == 0).all()  # same view, every time


def test_save_load_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    m = randomise(tiny(sync="learned"))
    x, mask = batch()
    want = m(x, 100.0, x, mask)
    m.save_pretrained(tmp_path / "hf")
    again = GridTransformer.from_pretrained(tmp_path / "hf", local_files_only=True)
    assert torch.allclose(again(x, 100.0, x, mask), want, atol=1e-6)
    save_checkpoint(m, tmp_path / "ck", {"note": 1})
    assert (tmp_path / "ck" / "diffusion_pytorch_model.safetensors").is_file()
    loaded = load_generator(tmp_path / "ck")
    assert torch.allclose(loaded(x, 100.0, x, mask), want, atol=1e-6)
    # a hard-sync checkpoint loads into a learned-sync model (sync layers start at the average)
    save_checkpoint(randomise(tiny(sync="hard")), tmp_path / "hard")
    load_weights_into(tiny(sync="learned"), tmp_path / "hard")


def test_checkpoint_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_generator(tmp_path / "missing")
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel"}))
    with pytest.raises(InputError, match="UNet2DModel"):
        load_generator(other)
    save_checkpoint(tiny(), tmp_path / "ck")
    cfg = json.loads((tmp_path / "ck" / "config.json").read_text())
    cfg["width_dim"] = 32
    (tmp_path / "ck" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(InputError, match="another model configuration"):
        load_generator(tmp_path / "ck")


def test_training_steps_lower_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    m = tiny()
    x, mask = batch(B=4)
    g = torch.Generator().manual_seed(3)
    noise = torch.randn(x.shape, generator=g)
    sigma = torch.rand(4, generator=g)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    losses = []
    for _ in range(12):
        loss = flow_loss(m, x, mask, noise, sigma)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.7 * losses[0], losses


def test_fill_grid_autoregressive_keeps_conditioning():
    m = randomise(tiny()).eval()
    g = torch.Generator().manual_seed(0)
    ref, frz = torch.rand(7, 3, 8, 8, generator=g) * 2 - 1, torch.rand(3, 3, 8, 8, generator=g) * 2 - 1
    out = fill_grid(m, ref, frz, steps=2, context=2)
    assert out.shape == (3, 7, 3, 8, 8)
    assert torch.equal(out[0], ref) and torch.equal(out[1:, 0], frz[1:])
    assert torch.isfinite(out).all() and out.abs().max() <= 1.0
    with pytest.raises(InputError, match="views"):
        fill_grid(m, ref, torch.zeros(5, 3, 8, 8))
    with pytest.raises(InputError, match="8x8"):
        fill_grid(m, torch.zeros(4, 3, 16, 16), torch.zeros(3, 3, 16, 16))


def test_pseudo4d_grid():
    rng = np.random.default_rng(0)
    video = rng.integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)
    grid = pseudo4d_grid(video, 4, torch.Generator().manual_seed(0))
    assert grid.shape == (4, 5, 3, 16, 16)
    assert torch.allclose(grid[0], to_model_range(video), atol=1e-4)  # view 0 is the video itself
    assert (grid[3] - grid[0]).abs().mean() > 0.05  # other views are transformed
    same = pseudo4d_grid(video, 3, torch.Generator().manual_seed(0), strength=0.0)
    assert torch.allclose(same[2], same[0], atol=1e-4)
    assert np.array_equal(to_uint8(to_model_range(video)), video)


def test_metrics():
    given = grid_task_mask(3, 3, 1).numpy()
    idx = nearest_given(given)
    assert tuple(idx[2, 1]) == (2, 0) and tuple(idx[1, 2]) == (0, 2) and tuple(idx[1, 1]) == (1, 0)
    imgs = np.random.default_rng(0).random((3, 3, 4, 4, 3))
    base = copy_nearest_baseline(imgs, given)
    assert np.array_equal(base[given], imgs[given])
    assert psnr_generated(imgs, imgs + 0.1, given) == pytest.approx(20.0, abs=1e-6)
    # two cameras looking at a fronto-parallel plane, the second shifted by 1 unit along x
    H = W = 8
    K = np.array([[8.0, 0, 4], [0, 8.0, 4], [0, 0, 1]])
    Ks = np.broadcast_to(K, (2, 1, 3, 3))
    w2c = np.broadcast_to(np.eye(4), (2, 1, 4, 4)).copy()
    w2c[1, 0, 0, 3] = -1.0  # camera 1 at x = +1
    depth = np.full((2, 1, H, W), 8.0)
    src, dst = correspondences(depth, Ks, w2c, (0, 0), (1, 0))
    # a point at pixel u in view 0 lands at u - f * 1 / z = u - 1 in view 1
    assert len(src) == H * (W - 1) and np.all(dst == src - 1)
    ramp = np.tile(np.arange(W, dtype=float)[None, :, None] / W, (H, 1, 3))
    views = np.stack([ramp, np.roll(ramp, -1, axis=1)])[:, None]  # a consistent pair
    assert multiview_consistency(views, depth, Ks, w2c) == pytest.approx(0.0, abs=1e-9)
    assert multiview_consistency(np.stack([ramp, ramp])[:, None], depth, Ks, w2c) > 0.1


def _write_frames(folder, n, size):
    from recon.io.images import write_png

    rng = np.random.default_rng(n)
    for i in range(n):
        write_png(folder / f"{i:03d}.png", rng.integers(0, 256, (*size, 3), dtype=np.uint8))
    return folder


def test_generate_cli_bad_inputs(tmp_path, capsys):
    ck = save_checkpoint(tiny(), tmp_path / "ck")
    ref = _write_frames(tmp_path / "ref", 4, (8, 8))
    frz = _write_frames(tmp_path / "frz", 3, (8, 8))
    big = _write_frames(tmp_path / "big", 4, (16, 16))
    many = _write_frames(tmp_path / "many", 5, (8, 8))
    cases = [
        (["--checkpoint", str(tmp_path / "nope")], "does not exist"),
        (["--checkpoint", str(ck), "--reference-video", str(ref), "--freeze-time", str(big)], "same size"),
        (["--checkpoint", str(ck), "--reference-video", str(ref), "--freeze-time", str(frz)], "4 frames but freeze-time video has 3"),
        (["--checkpoint", str(ck), "--reference-video", str(many), "--freeze-time", str(many)], "2..3 views"),
        (["--checkpoint", str(ck), "--reference-video", str(big), "--freeze-time", str(big)], "generates 8x8"),
        (["--checkpoint", str(ck), "--reference-video", str(ref)], "pass both"),
        (["--checkpoint", str(ck), "--start-sigma", "0"], "start sigma must be in"),
        (["--checkpoint", str(ck), "--reference-video", str(tmp_path / "nofile.mp4"), "--freeze-time", str(frz)], "does not exist"),
    ]
    for args, msg in cases:
        out = tmp_path / "out"
        assert main(["generate", "--out", str(out), *args]) == 2, args
        err = capsys.readouterr().err
        assert msg in err and "Traceback" not in err, (args, err)
        assert not out.exists()


def test_generate_cli_from_videos_writes_a_grid(tmp_path, capsys):
    from recon.io.gridfolder import read_grid

    ck = save_checkpoint(randomise(tiny()), tmp_path / "ck")
    ref = _write_frames(tmp_path / "ref", 6, (8, 8))
    frz = _write_frames(tmp_path / "frz", 3, (8, 8))
    out = tmp_path / "gen"
    args = ["generate", "--out", str(out), "--checkpoint", str(ck), "--reference-video", str(ref), "--freeze-time", str(frz),
            "--frames", "6", "--steps", "2", "--device", "cpu"]
    assert main(args) == 0, capsys.readouterr().err
    grid = read_grid(out)
    assert grid.shape == (3, 6, 8, 8)
    from recon.io.images import read_rgb

    assert np.array_equal(grid.images[0, 5], read_rgb(ref / "005.png"))
    assert np.array_equal(grid.images[2, 0], read_rgb(frz / "002.png"))


def test_untrained_anchored_model_reproduces_copy_nearest():
    m = tiny(prediction="anchored")  # zero-initialised output head: x0_hat = anchor
    x, mask = batch(B=1)
    out = sample(m, x, mask, steps=3, generator=torch.Generator().manual_seed(0))
    want = copy_nearest_baseline(x[0].numpy(), mask[0].numpy())
    assert np.allclose(out[0].numpy(), want, atol=1e-5)
    v = tiny(prediction="velocity")
    assert not np.allclose(sample(v, x, mask, steps=3)[0].numpy(), want, atol=1e-2)


def test_blend_coefficients_and_untrained_blended_model():
    from recon.diffusion.model import blend_coefficients

    s = torch.tensor([0.0, 0.3, 0.7, 1.0])
    c_in, c_anchor, c_out = blend_coefficients(s, 0.2)
    assert torch.allclose(c_in[[0, 3]], torch.tensor([1.0, 0.0])) and torch.allclose(c_anchor[[0, 3]], torch.tensor([0.0, 1.0]))
    assert torch.allclose(c_out[[0, 3]], torch.tensor([0.0, 0.2]))
    # inverse-variance blend of x_s / (1 - s) (error std s / (1 - s)) and the anchor (error std 0.2)
    var_x = (s[1:3] / (1 - s[1:3])) ** 2
    w_x = 0.04 / (0.04 + var_x)
    assert torch.allclose(c_in[1:3] * (1 - s[1:3]), w_x) and torch.allclose(c_anchor[1:3], 1 - w_x)
    assert torch.allclose(c_out[1:3], (0.04 * var_x / (0.04 + var_x)).sqrt())
    # an untrained blended model's clean-frame estimate: the anchor from pure noise, the input when clean
    m = tiny(prediction="blended", anchor="same_view", anchor_std=0.2)
    x, mask = batch(B=1)
    want = torch.from_numpy(copy_nearest_baseline(x[0].numpy(), mask[0].numpy(), rule="same_view"))
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    x0 = m(noise, torch.tensor([1000.0]), x, mask, return_x0=True)
    assert torch.allclose(x0[0], want, atol=1e-6)
    noisy = 0.9 * x + 0.1 * noise
    x0 = m(noisy, torch.tensor([100.0]), x, mask, return_x0=True)
    w = 0.04 * 0.9 / (0.04 * 0.81 + 0.01)
    assert torch.allclose(x0[0], w * noisy[0] + (1 - 0.9 * w) * want, atol=1e-5)
    with pytest.raises(ValueError):
        tiny(prediction="blended", anchor_std=0.0)


def test_sampler_from_the_noised_anchor():
    x, mask = batch(B=1)
    m = tiny(prediction="anchored", anchor="same_view")  # untrained: every step predicts the anchor
    want = copy_nearest_baseline(x[0].numpy(), mask[0].numpy(), rule="same_view")
    for steps, s0 in ((1, 1.0), (2, 0.5), (4, 0.3)):
        out = sample(m, x, mask, steps=steps, generator=torch.Generator().manual_seed(0), start_sigma=s0)
        assert np.allclose(out[0].numpy(), want, atol=1e-5)
    r = randomise(tiny())
    a = sample(r, x, mask, steps=3, generator=torch.Generator().manual_seed(0), start_sigma=0.4)
    b = sample(r, x, mask, steps=3, generator=torch.Generator().manual_seed(0), start_sigma=1.0)
    assert a.shape == x.shape and not torch.allclose(a, b)
    with pytest.raises(ValueError):
        sample(r, x, mask, steps=2, start_sigma=0.0)


def test_same_view_anchor_reproduces_copy_same_view():
    m = tiny(prediction="anchored", anchor="same_view")
    x, mask = batch(B=1)
    out = sample(m, x, mask, steps=3, generator=torch.Generator().manual_seed(0))
    want = copy_nearest_baseline(x[0].numpy(), mask[0].numpy(), rule="same_view")
    assert np.allclose(out[0].numpy(), want, atol=1e-5)
    # the 4D task: every generated cell copies its own view's freeze-time frame (column 0)
    assert np.allclose(want[1:, 1:], np.broadcast_to(x[0, 1:, :1].numpy(), want[1:, 1:].shape))
    # an extension chunk (2 known columns): the latest known time of the same view; a view with
    # nothing given falls back to the nearest rule
    given = grid_task_mask(3, 4, 2).numpy()
    assert nearest_given(given, "same_view")[2, 3].tolist() == [2, 1]
    given[2] = False
    assert nearest_given(given, "same_view")[2, 3].tolist() == nearest_given(given)[2, 3].tolist()
    from recon.diffusion.model import anchor_index

    for g in (grid_task_mask(3, 4, 2), torch.tensor(given)):
        assert anchor_index(g[None], "same_view")[0].tolist() == nearest_given(g.numpy(), "same_view").tolist()


def test_generate_cli_procedural_scene_writes_cameras(tmp_path, capsys):
    from recon.io.gridfolder import read_grid

    ck = save_checkpoint(tiny(), tmp_path / "ck")
    out = tmp_path / "gen"
    assert main(["generate", "--out", str(out), "--checkpoint", str(ck), "--synthetic-prompt", "orbit", "--steps", "1",
                 "--device", "cpu"]) == 0, capsys.readouterr().err
    grid = read_grid(out)
    assert grid.shape == (3, 4, 8, 8) and grid.cameras.w2c is not None
    assert main(["generate", "--out", str(tmp_path / "g2"), "--checkpoint", str(ck), "--synthetic-prompt", "no-such-scene"]) == 2
    assert "no-such-scene" in capsys.readouterr().err


def test_bundled_checkpoint_generates_the_default_grid(tmp_path, capsys):
    from recon.diffusion.checkpoint import BUNDLED, read_notes
    from recon.io.gridfolder import read_grid

    if not (BUNDLED / "config.json").is_file():
        pytest.skip("no bundled checkpoint in data/diffusion/")
    notes = read_notes()
    assert "metrics" in notes and notes["metrics"]["psnr"] > 0
    out = tmp_path / "gen"
    assert main(["generate", "--out", str(out), "--steps", "2", "--device", "cpu"]) == 0, capsys.readouterr().err
    model = load_generator()
    grid = read_grid(out)
    assert grid.shape == (model.config.max_views, model.config.max_times, model.config.height, model.config.width)
    assert grid.cameras.w2c is not None
