"""CUDA kernels: compile-checked with plain nvcc everywhere nvcc exists; compared with the CPU
kernel where a GPU and a CUDA build are present (skipped cleanly otherwise)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from recon.render import extension_status

REPO = Path(__file__).resolve().parents[1]
NVCC = shutil.which("nvcc")


@pytest.mark.skipif(NVCC is None, reason="nvcc not found")
def test_cuda_sources_compile_with_plain_nvcc(tmp_path: Path) -> None:
    sources = sorted((REPO / "cuda_ext").glob("*.cu"))
    assert sources, "no .cu files in cuda_ext/"
    for src in sources:
        cmd = [NVCC, "-c", "-arch=sm_80", "-std=c++17", "-O1", "--use_fast_math", "-I", str(REPO / "cuda_ext"),
               str(src), "-o", str(tmp_path / (src.stem + ".o"))]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
        assert done.returncode == 0, f"nvcc failed on {src.name}:\n{done.stderr[-4000:]}"
        # warnings about our own code count as failures (toolchain notices, e.g. deprecated arches, do not)
        ours = [line for line in done.stderr.splitlines() if f"{src.name}(" in line and "warning" in line]
        assert not ours, "\n".join(ours)


needs_gpu = pytest.mark.skipif(
    not (torch.cuda.is_available() and extension_status()["cuda"]), reason="needs a CUDA GPU and recon._C built with CUDA"
)


@needs_gpu
@pytest.mark.cuda
@pytest.mark.parametrize("case", [(0, 400, 1, 64, 64, True, 3, False), (1, 600, 3, 80, 48, False, 3, True),
                                  (4, 300, 1, 33, 17, False, 5, False)])
def test_cuda_matches_cpu(case: tuple) -> None:
    from test_render_cpu import assert_close_banded, make_scene, render_with_grads

    seed, N, C, W, H, identity, D, per_camera = case
    leaves, viewmats, Ks = make_scene(seed, N, C, W, H, identity, D, per_camera)
    want = render_with_grads("cpu", leaves, viewmats, Ks, W, H, seed)
    dev = torch.device("cuda")
    got = render_with_grads("cuda", [t.detach().to(dev) for t in leaves], viewmats.to(dev), Ks.to(dev), W, H, seed)
    for name in want:
        assert_close_banded(name, got[name].cpu(), want[name])
