"""The C++ CPU kernel against the PyTorch twin: forward and every gradient, edge cases included."""

from __future__ import annotations

import pytest
import torch

from recon.render import extension_status, rasterize

pytestmark = pytest.mark.skipif(not extension_status()["cpu"], reason="recon._C not built")


def make_scene(seed: int, N: int, C: int, W: int, H: int, identity: bool, D: int = 3, per_camera: bool = False):
    """Random isotropic splats with the edge cases mixed in; float32 leaves requiring grad."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(N, 3, generator=g) * torch.tensor([0.8, 0.6, 0.5]) + torch.tensor([0.0, 0.0, 2.5])
    q = N // 10
    means[:q, 2] = -torch.rand(q, generator=g)  # behind the camera
    means[q : 2 * q, 0] = 1.1 * torch.sign(torch.randn(q, generator=g))  # straddling the left/right border
    means[2 * q : 2 * q + 3, 2] = 0.005  # in front of the near plane
    log_scales = torch.randn(N, generator=g) * 0.5 - 3.0
    log_scales[3 * q : 3 * q + 4] = -0.7  # very large footprints (a fifth of the image)
    log_scales[4 * q : 5 * q] = -8.0  # far below a pixel (the low-pass dominates)
    logits = torch.randn(N, generator=g) * 2.0
    logits[5 * q : 6 * q] = 8.0  # opacity near 1
    logits[6 * q : 7 * q] = -5.7  # opacity near the 1/255 cut
    colors = torch.rand(*((C,) if per_camera else ()), N, D, generator=g)
    if per_camera:
        means = means + 0.05 * torch.randn(C, N, 3, generator=g)
    viewmats = torch.eye(4).repeat(C, 1, 1)
    if not identity:
        for c in range(C):
            axis = torch.randn(3, generator=g)
            angle = 0.25 * torch.rand(1, generator=g)
            K = torch.zeros(3, 3)
            axis = axis / axis.norm()
            K[0, 1], K[0, 2], K[1, 2] = -axis[2], axis[1], -axis[0]
            K = K - K.T
            viewmats[c, :3, :3] = torch.linalg.matrix_exp(angle * K)
            viewmats[c, :3, 3] = 0.2 * torch.randn(3, generator=g)
    f = 0.9 * max(W, H)
    Ks = torch.tensor([[f, 0.0, 0.52 * W], [0.0, f, 0.47 * H], [0.0, 0.0, 1.0]]).repeat(C, 1, 1)
    leaves = [t.requires_grad_() for t in (means, log_scales, logits, colors)]
    return leaves, viewmats, Ks


def render_with_grads(backend: str, leaves, viewmats, Ks, W: int, H: int, seed: int):
    leaves = [t.detach().clone().requires_grad_() for t in leaves]
    bg = torch.tensor([0.2, 0.5, 0.1])[: leaves[3].shape[-1]] if leaves[3].shape[-1] == 3 else None
    rgb, alpha, depth, meta = rasterize(*leaves, viewmats, Ks, W, H, background=bg, backend=backend)
    assert meta["backend"] == backend
    meta["means2d"].retain_grad()
    g = torch.Generator().manual_seed(seed + 100)
    loss = sum((t * torch.randn(t.shape, generator=g)).sum() for t in (rgb, alpha, depth))
    loss.backward()
    return {"rgb": rgb, "alpha": alpha, "depth": depth, "means2d.grad": meta["means2d"].grad,
            "means.grad": leaves[0].grad, "log_scales.grad": leaves[1].grad,
            "opacity_logits.grad": leaves[2].grad, "colors.grad": leaves[3].grad}


def assert_close_banded(name: str, got: torch.Tensor, want: torch.Tensor, rtol: float = 2e-4,
                        atol_rel: float = 1e-5, max_bad_fraction: float = 2e-3) -> None:
    """gsplat-style per-element comparison: all elements finite; nearly all within
    atol + rtol |want| (atol scaled to the tensor's magnitude: float32 sums in another order);
    a tiny fraction near discontinuities (a pixel on a cut-off boundary) may differ."""
    assert got.shape == want.shape, name
    assert torch.isfinite(got).all() and torch.isfinite(want).all(), f"{name}: non-finite values"
    got, want = got.detach().double().flatten(), want.detach().double().flatten()
    atol = atol_rel * float(want.abs().max().clamp_min(1e-12))
    bad = (got - want).abs() > atol + rtol * want.abs()
    allowed = max(1, int(max_bad_fraction * want.numel()))
    assert int(bad.sum()) <= allowed, (
        f"{name}: {int(bad.sum())}/{want.numel()} elements differ (allowed {allowed}); "
        f"worst |diff| {float((got - want).abs().max()):.3g}, scale {float(want.abs().max()):.3g}"
    )


CASES = [
    # seed, N, C, W, H, identity viewmats, channels, per-camera means/colours
    (0, 400, 1, 64, 64, True, 3, False),
    (1, 600, 3, 80, 48, False, 3, False),
    (2, 500, 2, 37, 53, False, 3, True),
    (3, 300, 2, 40, 30, True, 1, False),
    (4, 300, 1, 33, 17, False, 5, False),
]


@pytest.mark.parametrize("seed, N, C, W, H, identity, D, per_camera", CASES)
def test_cpu_matches_twin(seed: int, N: int, C: int, W: int, H: int, identity: bool, D: int, per_camera: bool) -> None:
    leaves, viewmats, Ks = make_scene(seed, N, C, W, H, identity, D, per_camera)
    want = render_with_grads("torch", leaves, viewmats, Ks, W, H, seed)
    got = render_with_grads("cpu", leaves, viewmats, Ks, W, H, seed)
    alpha = want["alpha"].detach()
    assert float(alpha.max()) > 0.99 and float(alpha.min()) < 0.5  # the scene is not trivial
    for name in want:
        assert_close_banded(name, got[name], want[name])


@pytest.mark.parametrize("loss_kind", ["sum", "permuted"])
def test_cpu_reads_strided_upstream_gradients(loss_kind: str) -> None:
    """The backward reads the upstream gradients in place, whatever their strides: a plain sum gives
    expanded (stride-0) gradients, a loss on a permuted view non-contiguous ones."""
    leaves, viewmats, Ks = make_scene(7, 400, 2, 48, 40, False)
    g = torch.Generator().manual_seed(3)
    weights = [torch.randn(2, s, 40, 48, generator=g) for s in (3, 1, 1)]  # channels-first

    def grads(backend: str):
        ls = [t.detach().clone().requires_grad_() for t in leaves]
        outs = rasterize(*ls, viewmats, Ks, 48, 40, backend=backend)[:3]
        if loss_kind == "sum":
            loss = sum(o.sum() for o in outs)
        else:
            loss = sum((o.permute(0, 3, 1, 2) * w).sum() for o, w in zip(outs, weights))
        loss.backward()
        return [t.grad for t in ls]

    for name, got, want in zip(("means", "log_scales", "opacity_logits", "colors"), grads("cpu"), grads("torch")):
        assert_close_banded(f"d {name} ({loss_kind})", got, want)


def _kernel_builds() -> list[str]:
    if not extension_status()["cpu"]:
        return []
    from recon import _C

    return list(_C.cpu_kernels_supported())


@pytest.mark.parametrize("build", _kernel_builds())
@pytest.mark.parametrize("seed, N, C, W, H, identity, D, per_camera", CASES[1:5])
def test_every_cpu_kernel_build_matches_twin(build: str, seed: int, N: int, C: int, W: int, H: int, identity: bool,
                                             D: int, per_camera: bool) -> None:
    """Each build this CPU can run (AVX-512 16-lane, AVX2 8-lane, baseline 8-lane): the suite above runs
    only the one picked by default."""
    from recon import _C

    before = _C.cpu_kernel()
    try:
        assert _C.cpu_kernel(build) == build
        leaves, viewmats, Ks = make_scene(seed, N, C, W, H, identity, D, per_camera)
        want = render_with_grads("torch", leaves, viewmats, Ks, W, H, seed)
        got = render_with_grads("cpu", leaves, viewmats, Ks, W, H, seed)
    finally:
        _C.cpu_kernel(before)
    for name in want:
        assert_close_banded(name, got[name], want[name])


def test_cpu_kernel_switch_is_validated() -> None:
    from recon import _C

    now = _C.cpu_kernel()
    assert now in _C.cpu_kernels_supported() and "baseline" in _C.cpu_kernels_supported()
    assert _C.cpu_kernel("x86-64-v9") == now  # an unknown build changes nothing


@pytest.mark.parametrize("per_camera", [False, True])
def test_cpu_projection_matches_reference(per_camera: bool) -> None:
    """recon._C.project_* (the cpu backend's fused projection) against projection.py."""
    from recon import _C
    from recon.render.projection import project

    leaves, viewmats, Ks = make_scene(11, 500, 3, 70, 50, False, 3, per_camera)
    inputs = [t.detach().clone().requires_grad_() for t in leaves[:3]]  # means, log_scales, logits
    means_c = inputs[0] if per_camera else inputs[0].expand(3, -1, -1)
    ref = project(means_c, inputs[1], inputs[2], viewmats, Ks, 70, 50)
    plain = [t.detach() for t in inputs]
    got = _C.project_forward(*plain, viewmats, Ks, 70, 50)
    want = (ref.means2d, ref.conics, ref.opacities, ref.depths)
    for name, a, b in zip(("means2d", "conics", "opacities", "depths"), got[:4], want):
        torch.testing.assert_close(a, b.detach(), rtol=1e-5, atol=1e-5, msg=name)
    # a box edge or a radius may round the other way when it falls on a pixel boundary
    assert float((got[4] == ref.bbox).all(-1).float().mean()) > 0.995
    assert float((got[5] == ref.radii).float().mean()) > 0.995
    assert torch.equal(got[6].long(), ref.order)
    g = torch.Generator().manual_seed(5)
    cot = [torch.randn(t.shape, generator=g) for t in got[:4]]
    grads_want = torch.autograd.grad(want, inputs, cot)
    grads_got = _C.project_backward(*plain, viewmats, Ks, 70, 50, *cot)
    for name, a, b in zip(("means", "log_scales", "opacity_logits"), grads_got, grads_want):
        assert_close_banded(f"d {name}", a, b, rtol=1e-4, atol_rel=1e-5, max_bad_fraction=0.0)


def test_auto_picks_the_cpu_kernel_for_float32_cpu_tensors() -> None:
    leaves, viewmats, Ks = make_scene(12, 50, 1, 16, 16, True)
    *_, meta = rasterize(*leaves, viewmats, Ks, 16, 16)
    assert meta["backend"] == "cpu"
    *_, meta = rasterize(*(t.double() for t in leaves), viewmats.double(), Ks.double(), 16, 16)
    assert meta["backend"] == "torch"  # the kernels are float32; float64 goes to the twin


def test_cpu_empty_and_offscreen_scenes() -> None:
    viewmats, Ks = torch.eye(4)[None], torch.tensor([[[20.0, 0, 8], [0, 20.0, 8], [0, 0, 1]]])
    for means in (torch.zeros(0, 3), torch.tensor([[0.0, 0.0, -1.0], [50.0, 0.0, 1.0]])):
        N = means.shape[0]
        colors = torch.rand(N, 3, requires_grad=True)
        rgb, alpha, depth, meta = rasterize(means, torch.zeros(N), torch.zeros(N), colors, viewmats, Ks, 16, 16,
                                            background=torch.ones(3), backend="cpu")
        assert torch.equal(rgb, torch.ones(1, 16, 16, 3)) and not alpha.any() and not depth.any()
        assert not meta["visible"].any() and not meta["radii"].any()
        rgb.sum().backward()
        assert not colors.grad.any()


def test_cpu_is_deterministic_across_thread_counts() -> None:
    leaves, viewmats, Ks = make_scene(7, 500, 2, 48, 48, False)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = render_with_grads("cpu", leaves, viewmats, Ks, 48, 48, 7)
        torch.set_num_threads(2)
        two = render_with_grads("cpu", leaves, viewmats, Ks, 48, 48, 7)
    finally:
        torch.set_num_threads(before)
    for name in one:
        assert torch.equal(one[name], two[name]), name


def test_kernel_threads_are_set_apart_from_torch() -> None:
    from recon import _C  # type: ignore[attr-defined]

    before = torch.get_num_threads()
    try:
        _C.set_kernel_threads(0)
        torch.set_num_threads(1)
        assert _C.kernel_threads() == 1  # 0 follows torch
        _C.set_kernel_threads(3)
        assert _C.kernel_threads() == 3 and torch.get_num_threads() == 1
        with pytest.raises(RuntimeError, match="threads must be >= 0"):
            _C.set_kernel_threads(-1)
        assert _C.kernel_threads() == 3
        # the kernels' own thread count leaves renders and gradients bit-identical
        leaves, viewmats, Ks = make_scene(11, 500, 2, 48, 48, False)
        split = render_with_grads("cpu", leaves, viewmats, Ks, 48, 48, 11)
        _C.set_kernel_threads(1)
        single = render_with_grads("cpu", leaves, viewmats, Ks, 48, 48, 11)
    finally:
        _C.set_kernel_threads(0)
        torch.set_num_threads(before)
    for name in split:
        assert torch.equal(split[name], single[name]), name

