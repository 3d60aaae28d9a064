"""Backend choice (the one place) and the autograd bridge to the compiled kernels.

Backends: ``torch`` (the PyTorch twin in reference.py), ``cpu`` / ``cuda`` (recon._C, built by
setup.py from cuda_ext/), ``gsplat`` (optional adapter, gsplat_adapter.py). A missing or broken
extension never breaks import: ``auto`` falls back to ``torch`` and says so once.
"""

from __future__ import annotations

import functools
import warnings
from types import ModuleType

import torch
from torch import Tensor

BACKENDS = ("auto", "torch", "cpu", "cuda", "gsplat")


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


def select_backend(requested: str, device: torch.device, dtype: torch.dtype) -> str:
    """Resolve ``requested`` (one of BACKENDS) for tensors on ``device`` with ``dtype``.

    ``auto``: cuda for CUDA tensors when built, else cpu when built (float32 CPU tensors),
    else torch (with one warning when the reason is a missing extension). float64 inputs go
    to torch under ``auto`` (the kernels are float32), e.g. for gradcheck.
    """
    if requested not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {requested!r}")
    status = extension_status()
    if requested == "auto":
        if dtype != torch.float32:
            return "torch"
        if device.type == "cuda":
            if status["cuda"]:
                return "cuda"
            _warn_once(f"recon._C has no CUDA kernels ({status['error'] or 'built without CUDA'}); "
                       "rasterizing CUDA tensors with the slow PyTorch twin")
            return "torch"
        if device.type == "cpu" and status["cpu"]:
            return "cpu"
        if device.type == "cpu":
            _warn_once(f"recon._C is not available ({status['error']}); rasterizing with the slow PyTorch twin; "
                       + _BUILD_HINT)
        return "torch"
    if requested in ("cpu", "cuda"):
        if not status[requested]:
            raise RuntimeError(f"rasterizer backend {requested!r} is not built here "
                               f"({status['error'] or 'recon._C built without CUDA'}); {_BUILD_HINT}")
        if device.type != requested:
            raise ValueError(f"backend {requested!r} needs {requested} tensors, got tensors on {device}")
        if dtype != torch.float32:
            raise ValueError(f"backend {requested!r} needs float32 tensors, got {dtype}; use backend='torch' for float64")
    if requested == "gsplat" and device.type != "cuda":
        raise ValueError(f"backend 'gsplat' runs on CUDA tensors only, got tensors on {device}")
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
