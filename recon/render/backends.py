"""Backend choice (the one place) and the autograd bridge to the compiled kernels.

Backends: ``torch`` (the PyTorch twin in reference.py), ``cpu`` / ``cuda`` (recon._C, built by
setup.py from cuda_ext/), ``gsplat`` (optional adapter, gsplat_adapter.py). A missing or broken
extension never breaks import: ``auto`` falls back to ``torch`` and says so once.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from types import ModuleType
from typing import Callable

import torch
from torch import Tensor

@functools.lru_cache(maxsize=1)
def _extension() -> tuple[ModuleType | None, str]:
    """(recon._C or None, why it is missing)."""
    try:
        from recon import _C  # type: ignore[attr-defined]
    except Exception as exc:  # ImportError, or an ABI mismatch surfacing as OSError/RuntimeError
        return None, f"{type(exc).__name__}: {exc}"
    return _C, ""


def extension_status() -> dict[str, object]:
    """What recon._C offers here: {'cpu': bool, 'cuda': bool, 'error': str}."""
    ext, why = _extension()
    return {"cpu": ext is not None, "cuda": bool(ext is not None and ext.has_cuda()), "error": why}


@functools.lru_cache(maxsize=None)
def _warn_once(message: str) -> None:
    warnings.warn(message, RuntimeWarning, stacklevel=4)


_BUILD_HINT = "build it with `pip install --no-build-isolation -e .` in the repository root"


@dataclass(frozen=True)
class Backend:
    """A row of :data:`BACKENDS`: where a rasterizer backend runs and whether it is here."""

    render: str
    """``"module:function"`` that renders (resolved when first used): ``(means_c [C, N, 3],
    log_scales, opacity_logits, colors_c [C, N, D], viewmats, Ks, width, height, backend) ->
    (rgb, alpha, depth, meta)`` with ``meta`` as :func:`recon.render.api.rasterize` documents."""
    device: str
    """The device type of the tensors it takes (``cpu``, ``cuda``; ``any`` for both)."""
    available: Callable[[], str]
    """``() -> ""`` when it can run here, else why not."""
    float32_only: bool = True
    """Compiled kernels are float32; the PyTorch twin also takes float64 (gradcheck)."""
    auto_rank: int | None = None
    """Order among the backends ``auto`` may pick (lowest first); None: only when asked for."""


def _compiled(kind: str) -> str:
    status = extension_status()
    if status[kind]:
        return ""
    return f"rasterizer backend {kind!r} is not built here ({status['error'] or 'recon._C built without CUDA'}); {_BUILD_HINT}"


def _gsplat_available() -> str:
    import importlib.util

    return "" if importlib.util.find_spec("gsplat") is not None else "gsplat is not installed (pip install gsplat)"


BACKENDS: dict[str, Backend] = {
    "torch": Backend("recon.render.api:render_projected", "any", lambda: "", float32_only=False, auto_rank=2),
    "cpu": Backend("recon.render.api:render_projected", "cpu", lambda: _compiled("cpu"), auto_rank=1),
    "cuda": Backend("recon.render.api:render_projected", "cuda", lambda: _compiled("cuda"), auto_rank=0),
    "gsplat": Backend("recon.render.gsplat_adapter:render_gsplat", "cuda", _gsplat_available),
}
"""Rasterizer backends by name; ``auto`` is the first available one by ``auto_rank`` for the
tensors' device and dtype. A new backend is one module with its render function plus one row."""


@functools.lru_cache(maxsize=None)
def renderer(name: str) -> Callable:
    """The render function of backend ``name`` (:attr:`Backend.render`)."""
    import importlib

    mod, fn = BACKENDS[name].render.split(":")
    return getattr(importlib.import_module(mod), fn)


def backend_names() -> tuple[str, ...]:
    """The values ``backend`` accepts: ``auto`` and the table's names."""
    return ("auto", *BACKENDS)


def select_backend(requested: str, device: torch.device, dtype: torch.dtype) -> str:
    """Resolve ``requested`` (``auto`` or a name of :data:`BACKENDS`) for tensors on ``device`` with ``dtype``.

    ``auto``: cuda for CUDA tensors when built, else cpu when built (float32 CPU tensors),
    else torch (with one warning when the reason is a missing extension). float64 inputs go
    to torch under ``auto`` (the kernels are float32), e.g. for gradcheck.
    """
    if requested not in backend_names():
        raise ValueError(f"backend must be one of {backend_names()}, got {requested!r}")
    if requested == "auto":
        ranked = sorted((b.auto_rank, name) for name, b in BACKENDS.items() if b.auto_rank is not None)
        for _, name in ranked:
            b = BACKENDS[name]
            if b.device not in ("any", device.type) or (b.float32_only and dtype != torch.float32):
                continue
            why = b.available()
            if not why:
                return name
            if b.float32_only:  # a compiled backend that would have run these tensors is missing
                _warn_once(f"{why.split('; ')[0]}; rasterizing {device.type} tensors with the slow PyTorch twin"
                           + ("; " + _BUILD_HINT if device.type == "cpu" else ""))
        return "torch"
    b = BACKENDS[requested]
    if b.device not in ("any", device.type):
        raise ValueError(f"backend {requested!r} runs on {b.device.replace('cuda', 'CUDA')} tensors only, "
                         f"got tensors on {device}")
    why = b.available()
    if why:
        raise RuntimeError(why)
    if b.float32_only and dtype != torch.float32:
        raise ValueError(f"backend {requested!r} needs float32 tensors, got {dtype}; use backend='torch' for float64")
    return requested


class ProjectCPU(torch.autograd.Function):
    """The EWA projection of projection.py, fused in C++ (recon._C.project_*) for the cpu backend."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx,
        means: Tensor,  # [N, 3] or [C, N, 3]
        log_scales: Tensor,  # [N]
        opacity_logits: Tensor,  # [N]
        viewmats: Tensor,  # [C, 4, 4]
        Ks: Tensor,  # [C, 3, 3]
        width: int,
        height: int,
    ) -> tuple[Tensor, ...]:
        ext, _ = _extension()
        inputs = [t.contiguous() for t in (means, log_scales, opacity_logits, viewmats, Ks)]
        outs = ext.project_forward(*inputs, width, height)
        ctx.save_for_backward(*inputs)
        ctx.size = (width, height)
        ctx.mark_non_differentiable(*outs[4:])
        return tuple(outs)  # means2d, conics, opacities, depths, bbox, radii, order, visible

    @staticmethod
    def backward(ctx, g_means2d, g_conics, g_opacities, g_depths, *_):  # type: ignore[override]
        ext, _ = _extension()
        width, height = ctx.size
        grads = [g.contiguous() for g in (g_means2d, g_conics, g_opacities, g_depths)]
        g_means, g_log_scales, g_logits = ext.project_backward(*ctx.saved_tensors, width, height, *grads)
        return g_means, g_log_scales, g_logits, None, None, None, None


class KernelComposite(torch.autograd.Function):
    """Front-to-back compositing by recon._C (cpu or cuda); gradients by its backward kernel."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx,
        means2d: Tensor,  # [C, N, 2]
        conics: Tensor,  # [C, N, 3]
        opacities: Tensor,  # [C, N]
        colors: Tensor,  # [C, N, D]
        depths: Tensor,  # [C, N]
        bbox: Tensor,  # [C, N, 4] int32
        order: Tensor,  # [C, N] int64
        width: int,
        height: int,
    ) -> tuple[Tensor, Tensor, Tensor]:
        ext, _ = _extension()
        inputs = [t.contiguous() for t in (means2d, conics, opacities, colors, depths)]
        bbox = bbox.contiguous()
        order = order.to(torch.int32).contiguous()
        rgb, alpha, depth, t_final, last, tile_offsets, tile_ids = ext.composite_forward(
            *inputs, bbox, order, width, height
        )
        ctx.save_for_backward(*inputs, bbox, t_final, last, tile_offsets, tile_ids)
        ctx.size = (width, height)
        return rgb, alpha, depth

    @staticmethod
    def backward(ctx, g_rgb: Tensor, g_alpha: Tensor, g_depth: Tensor):  # type: ignore[override]
        ext, _ = _extension()
        means2d, conics, opacities, colors, depths, bbox, t_final, last, tile_offsets, tile_ids = ctx.saved_tensors
        width, height = ctx.size
        grads = ext.composite_backward(  # the upstream gradients go as they are (any strides)
            means2d, conics, opacities, colors, depths, bbox, t_final, last, tile_offsets, tile_ids,
            g_rgb, g_alpha, g_depth, width, height,
        )
        g_means2d, g_conics, g_opacities, g_colors, g_depths = grads
        return g_means2d, g_conics, g_opacities, g_colors, g_depths, None, None, None, None
