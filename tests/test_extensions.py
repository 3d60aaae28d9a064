"""Adding an input reader, a depth provider, a track source or a rasterizer backend is one table
row: each test registers a test-only extension and uses it through the normal entry points
(load_grid / `recon info`, build_tracks, the config checks, rasterize)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from recon import io as rio
from recon.config import config_from_dict
from recon.errors import InputError
from recon.grid import FrameGrid
from recon.render import backends as rb
from recon.render import rasterize
from recon.synth.make import make_grid
from recon.tracking import build as tb
from recon.tracking import depth as td
from recon.tracking import build_tracks


@pytest.fixture(scope="module")
def grid() -> FrameGrid:
    return make_grid("orbit", views=4, frames=2, size=(48, 64), seed=0)


def test_a_reader_is_one_table_row(grid, tmp_path, monkeypatch, capsys):
    """A folder with ``frames.npz`` (images [V, T, H, W, 3], K, w2c) read by a test-only reader."""
    src = tmp_path / "npzgrid"
    src.mkdir()
    np.savez(src / "frames.npz", images=grid.images, K=grid.cameras.K, w2c=grid.cameras.w2c)

    def read(path: Path, options: rio.LoadOptions) -> FrameGrid:
        from recon.grid import Cameras

        with np.load(path / "frames.npz") as z:
            g = FrameGrid(images=z["images"], cameras=Cameras(K=z["K"], w2c=z["w2c"]), times=np.arange(z["images"].shape[1], dtype=np.float64),
                          source=str(path))
        return rio.apply_options(g, options, path)

    monkeypatch.setitem(rio.READERS, "npzgrid", rio.Reader(lambda p: (p / "frames.npz").is_file(), read, "frames.npz"))
    assert rio.detect_kind(src) == "npzgrid"
    g = rio.load_grid(src, rio.LoadOptions(views=[0, 2], scale=0.5))
    assert g.shape == (2, 2, 24, 32)
    with pytest.raises(InputError, match="npzgrid input has no splits"):
        rio.load_grid(src, rio.LoadOptions(split="test"))
    # the command line reaches it as well
    from recon.cli import main

    assert main(["info", str(src), "--json-out"]) == 0
    assert json.loads(capsys.readouterr().out)["kind"] == "npzgrid"
    # an unrecognised folder names the new layout
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("x")
    with pytest.raises(InputError, match="frames.npz"):
        rio.detect_kind(tmp_path / "other")


def test_a_depth_provider_is_one_table_row(grid, monkeypatch):
    """A provider returning the ground truth scaled by 1.1: rig tracks lift it, the config accepts it."""
    calls = []

    def scaled(g, cells, req):
        calls.append(len(cells))
        return td.gt_depth(g, cells) * 1.1

    monkeypatch.setitem(td.DEPTH_PROVIDERS, "scaled-gt", td.DepthProvider(scaled))
    cfg = config_from_dict({"tracking": {"depth": "scaled-gt", "tracks": "rig"}})
    assert cfg.tracking.depth == "scaled-gt"
    with pytest.raises(InputError, match="tracking.depth"):
        config_from_dict({"tracking": {"depth": "lidar"}})
    tr = build_tracks(grid, depth="scaled-gt", tracks="rig", keyframes=1, stride=8)
    ref = build_tracks(grid, depth="gt", tracks="rig", keyframes=1, stride=8)
    assert calls == [grid.num_views] and tr.num_points == ref.num_points
    c = int(grid.central_view)
    assert torch.allclose(tr.points[:, c], 1.1 * ref.points[:, c], rtol=1e-4)
    d = td.estimate_depth(grid, [(0, 0)], provider="scaled-gt")
    assert torch.allclose(d, 1.1 * td.gt_depth(grid, [(0, 0)]))
    # auto never picks a provider whose row does not say so
    assert td.resolve_depth_provider(grid, "auto") == "gt"


def test_a_track_source_is_one_table_row(grid, monkeypatch):
    def every_other(g, req):
        t = tb.TRACK_SOURCES["gt"](g, req)
        return type(t)(points=t.points[::2], visible=t.visible[::2], colors=t.colors[::2], seed_view=t.seed_view[::2])

    monkeypatch.setitem(tb.TRACK_SOURCES, "half-gt", every_other)
    assert config_from_dict({"tracking": {"tracks": "half-gt"}}).tracking.tracks == "half-gt"
    tr = build_tracks(grid, tracks="half-gt", keyframes=1, stride=8)
    full = build_tracks(grid, tracks="gt", keyframes=1, stride=8)
    assert tr.source == "half-gt" and tr.num_points == (full.num_points + 1) // 2


def test_a_backend_is_one_table_row(monkeypatch):
    monkeypatch.setitem(rb.BACKENDS, "twin-copy", rb.Backend("tests.test_extensions:render_twice_as_bright", "any",
                                                             lambda: "", float32_only=False))
    rb.renderer.cache_clear()
    assert config_from_dict({"backend": "twin-copy"}).backend == "twin-copy"
    N = 5
    K = torch.tensor([[[20.0, 0, 8], [0, 20.0, 6], [0, 0, 1]]])
    args = dict(means=torch.randn(N, 3) * 0.2 + torch.tensor([0.0, 0.0, 3.0]), log_scales=torch.full((N,), -2.0),
                opacity_logits=torch.zeros(N), colors=torch.rand(N, 3) * 0.4, viewmats=torch.eye(4)[None], Ks=K,
                width=16, height=12)
    ref = rasterize(**args, backend="torch")[0]
    out, _, _, meta = rasterize(**args, backend="twin-copy")
    assert meta["backend"] == "twin-copy" and torch.allclose(out, 2 * ref)
    # auto never picks a backend without an auto rank
    assert rasterize(**args)[3]["backend"] in ("cpu", "torch")
    rb.renderer.cache_clear()


def render_twice_as_bright(means, log_scales, opacity_logits, colors, viewmats, Ks, width, height, backend):
    """The test backend: the PyTorch twin's render, doubled."""
    from recon.render.api import render_projected

    rgb, alpha, depth, meta = render_projected(means, log_scales, opacity_logits, colors, viewmats, Ks, width, height,
                                               "torch")
    return 2 * rgb, alpha, depth, meta
