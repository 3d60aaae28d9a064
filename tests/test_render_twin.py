"""The PyTorch twin of the rasterizer: against a naive per-pixel loop, gradcheck, API checks."""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path

import pytest
import torch

from recon.render import backends, constants, rasterize
from recon.render.projection import project

REPO = Path(__file__).resolve().parents[1]


def _camera(C: int, W: int, H: int, f: float = 60.0, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    K = torch.tensor([[f, 0.0, W / 2 + 1.3], [0.0, f * 1.1, H / 2 - 0.7], [0.0, 0.0, 1.0]], dtype=dtype)
    return torch.eye(4, dtype=dtype).repeat(C, 1, 1), K.repeat(C, 1, 1)


def test_constants_match_header() -> None:
    text = (REPO / "cuda_ext" / "common.h").read_text()
    for cname, pyname in constants.HEADER_NAMES.items():
        m = re.search(rf"constexpr\s+\w+\s+{cname}\s*=\s*([^;]+);", text)
        assert m, f"{cname} not found in common.h"
        value = eval(m.group(1).replace("f", ""), {})  # e.g. "1.0f / 255.0f"
        assert math.isclose(value, getattr(constants, pyname), rel_tol=1e-7), (cname, value)


def _naive_composite(proj, colors: torch.Tensor, W: int, H: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One pixel at a time, one splat at a time, exactly as the kernels' rules read."""
    C, N = proj.depths.shape
    D = colors.shape[-1]
    rgb = torch.zeros(C, H, W, D, dtype=colors.dtype)
    alpha = torch.zeros(C, H, W, 1, dtype=colors.dtype)
    depth = torch.zeros(C, H, W, 1, dtype=colors.dtype)
    for c in range(C):
        for y in range(H):
            for x in range(W):
                T = 1.0
                for n in proj.order[c].tolist():
                    x0, y0, x1, y1 = proj.bbox[c, n].tolist()
                    if not (x0 <= x < x1 and y0 <= y < y1):
                        continue
                    dx = x + 0.5 - float(proj.means2d[c, n, 0])
                    dy = y + 0.5 - float(proj.means2d[c, n, 1])
                    a, b, cc = proj.conics[c, n].tolist()
                    q = a * dx * dx + 2 * b * dx * dy + cc * dy * dy
                    al = min(constants.ALPHA_MAX, float(proj.opacities[c, n]) * math.exp(-0.5 * q))
                    if q > constants.MAHALANOBIS_MAX or al < constants.ALPHA_MIN:
                        continue
                    if T * (1 - al) < constants.TRANSMITTANCE_MIN:
                        break
                    rgb[c, y, x] += al * T * colors[c, n]
                    depth[c, y, x] += al * T * float(proj.depths[c, n])
                    T *= 1 - al
                alpha[c, y, x] = 1 - T
    return rgb, alpha, depth


def test_twin_matches_naive_loop() -> None:
    g = torch.Generator().manual_seed(3)
    N, C, W, H = 40, 2, 20, 14
    means = torch.randn(N, 3, generator=g, dtype=torch.float64) * 0.5 + torch.tensor([0.0, 0.0, 2.0], dtype=torch.float64)
    means[:3, 2] = -1.0  # behind the camera
    log_scales = torch.randn(N, generator=g, dtype=torch.float64) * 0.7 - 3.0
    logits = torch.randn(N, generator=g, dtype=torch.float64) * 3.0
    logits[5:15] = 9.0  # nearly opaque stacks end pixels early
    colors = torch.rand(C, N, 3, generator=g, dtype=torch.float64)
    viewmats, Ks = _camera(C, W, H, f=15.0)
    viewmats[1, :3, 3] = torch.tensor([0.1, -0.05, 0.3], dtype=torch.float64)
    rgb, alpha, depth, _ = rasterize(means, log_scales, logits, colors, viewmats, Ks, W, H, backend="torch")
    proj = project(means.expand(C, N, 3), log_scales, logits, viewmats, Ks, W, H)
    assert not proj.visible[:, :3].any()
    ref = _naive_composite(proj, colors, W, H)
    for got, want in zip((rgb, alpha, depth), ref):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
    assert float(alpha.max()) > 0.99  # some pixels did hit the transmittance floor


def test_gradcheck_twin_float64() -> None:
    g = torch.Generator().manual_seed(0)
    N, C, W, H = 5, 2, 9, 7
    means = (torch.randn(N, 3, generator=g, dtype=torch.float64) * 0.15 + torch.tensor([0.0, 0.0, 1.5], dtype=torch.float64))
    log_scales = torch.full((N,), -2.3, dtype=torch.float64) + 0.2 * torch.randn(N, generator=g, dtype=torch.float64)
    logits = torch.randn(N, generator=g, dtype=torch.float64)
    colors = torch.rand(N, 3, generator=g, dtype=torch.float64)
    background = torch.rand(C, 3, generator=g, dtype=torch.float64)
    viewmats, Ks = _camera(C, W, H, f=8.0)
    viewmats[1, :3, 3] = torch.tensor([0.05, 0.02, 0.1], dtype=torch.float64)

    def fn(m, s, o, col, bg):
        rgb, alpha, depth, _ = rasterize(m, s, o, col, viewmats, Ks, W, H, background=bg, backend="torch")
        return rgb, alpha, depth

    inputs = tuple(t.clone().requires_grad_() for t in (means, log_scales, logits, colors, background))
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-4)


def test_per_camera_means_equal_separate_renders() -> None:
    g = torch.Generator().manual_seed(1)
    N, C, W, H = 30, 3, 24, 16
    means = torch.randn(C, N, 3, generator=g) * 0.4 + torch.tensor([0.0, 0.0, 2.0])
    log_scales = torch.randn(N, generator=g) * 0.3 - 2.5
    logits = torch.randn(N, generator=g)
    colors = torch.rand(C, N, 3, generator=g)
    viewmats, Ks = _camera(C, W, H, f=20.0, dtype=torch.float32)
    rgb, alpha, depth, meta = rasterize(means, log_scales, logits, colors, viewmats, Ks, W, H, backend="torch")
    assert meta["means2d"].shape == (C, N, 2) and meta["radii"].shape == (C, N)
    assert torch.equal(meta["visible_count"], meta["visible"].sum(0))
    for c in range(C):
        one = rasterize(means[c], log_scales, logits, colors[c], viewmats[c : c + 1], Ks[c : c + 1], W, H, backend="torch")
        torch.testing.assert_close(rgb[c : c + 1], one[0])
        torch.testing.assert_close(depth[c : c + 1], one[2])


def test_background_and_generic_channels() -> None:
    g = torch.Generator().manual_seed(2)
    N, W, H, D = 20, 16, 12, 5
    means = torch.randn(N, 3, generator=g) * 0.3 + torch.tensor([0.0, 0.0, 2.0])
    args = (means, torch.full((N,), -2.5), torch.zeros(N), torch.rand(N, D, generator=g), *_camera(1, W, H, 15.0, torch.float32))
    rgb0, alpha, _, _ = rasterize(*args, W, H, backend="torch")
    bg = torch.rand(D, generator=g)
    rgb1, _, _, _ = rasterize(*args, W, H, background=bg, backend="torch")
    assert rgb1.shape == (1, H, W, D)
    torch.testing.assert_close(rgb1, rgb0 + (1 - alpha) * bg)
    rgb2, _, _, _ = rasterize(*args, W, H, background=bg[None], backend="torch")  # [C, D]
    torch.testing.assert_close(rgb2, rgb1)


def _good_args() -> dict:
    N, C = 4, 2
    viewmats, Ks = _camera(C, 8, 6, 10.0, torch.float32)
    return dict(means=torch.zeros(N, 3) + torch.tensor([0.0, 0.0, 1.0]), log_scales=torch.zeros(N),
                opacity_logits=torch.zeros(N), colors=torch.zeros(N, 3), viewmats=viewmats, Ks=Ks, width=8, height=6)


@pytest.mark.parametrize(
    "change, needle",
    [
        (dict(means=torch.zeros(4, 2)), "means must have shape"),
        (dict(means=torch.zeros(3, 4, 3)), "means must have shape"),
        (dict(log_scales=torch.zeros(5)), "log_scales must have shape [N] = [4]"),
        (dict(opacity_logits=torch.zeros(4, 1)), "opacity_logits must have shape"),
        (dict(colors=torch.zeros(3, 3)), "colors must have shape"),
        (dict(colors=torch.zeros(4, 3, dtype=torch.float64)), "colors is torch.float64"),
        (dict(means=torch.zeros(4, 3, dtype=torch.int64)), "means must be float32 or float64"),
        (dict(log_scales=torch.tensor([0.0, float("nan"), 0.0, 0.0])), "log_scales contains NaN"),
        (dict(viewmats=torch.eye(4).repeat(3, 1, 1)), "Ks must have shape [C, 3, 3] = [3, 3, 3]"),
        (dict(viewmats=2 * torch.eye(4).repeat(2, 1, 1)), "viewmats[0] must be a rigid"),
        (dict(Ks=torch.zeros(2, 3, 3)), "Ks[0] must be"),
        (dict(width=0), "width must be an int"),
        (dict(height=7.5), "height must be an int"),
        (dict(background=torch.zeros(4)), "background must have shape"),
        (dict(backend="opengl"), "backend must be one of"),
    ],
)
def test_bad_input_is_a_value_error(change: dict, needle: str) -> None:
    args = _good_args()
    args.update(change)
    with pytest.raises(ValueError) as info:
        rasterize(**args)
    assert needle in str(info.value)


def test_missing_extension_falls_back_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backends, "_extension", lambda: (None, "ImportError: no recon._C"))
    backends._warn_once.cache_clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            *_, meta = rasterize(**_good_args())
            assert meta["backend"] == "torch"
    assert sum("PyTorch twin" in str(w.message) for w in caught) == 1
    with pytest.raises(RuntimeError, match="not built"):
        rasterize(**_good_args(), backend="cpu")
    backends._warn_once.cache_clear()


def test_gsplat_backend_needs_cuda_tensors() -> None:
    with pytest.raises(ValueError, match="CUDA tensors"):
        rasterize(**_good_args(), backend="gsplat")
