"""Build recon._C from cuda_ext/.

The C++ CPU kernels are built on every machine; the CUDA kernels are added when
nvcc and a CUDA build of torch are both present (PyTorch3D's pattern). Set
RECON_NO_EXT=1 to skip the extension entirely (the package then falls back to
its pure-PyTorch twin and says so once), RECON_FORCE_CUDA=1 to build CUDA code
even when no GPU is visible (e.g. in a docker build).
"""

import glob
import os

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _extensions():
    if os.environ.get("RECON_NO_EXT", "0") == "1":
        return [], {}
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

    cpp = sorted(glob.glob(os.path.join("cuda_ext", "*.cpp")))
    cu = sorted(glob.glob(os.path.join("cuda_ext", "*.cu")))
    if not cpp:
        return [], {}
    with_cuda = bool(cu) and torch.version.cuda is not None and CUDA_HOME is not None and (
        torch.cuda.is_available() or os.environ.get("RECON_FORCE_CUDA", "0") == "1"
    )
    cxx = ["-O3", "-std=c++17", "-fopenmp"]
    include_dirs = [os.path.join(ROOT, "cuda_ext")]
    if with_cuda:
        ext = CUDAExtension(
            "recon._C",
            cpp + cu,
            include_dirs=include_dirs,
            define_macros=[("RECON_WITH_CUDA", "1")],
            extra_compile_args={"cxx": cxx, "nvcc": ["-O3", "--use_fast_math", "-std=c++17"]},
            extra_link_args=["-fopenmp"],
        )
    else:
        ext = CppExtension(
            "recon._C", cpp, include_dirs=include_dirs, extra_compile_args=cxx, extra_link_args=["-fopenmp"]
        )
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = _extensions()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
