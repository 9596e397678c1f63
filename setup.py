"""Builds deem._C, the compiled op library.

DEEM_CUDA=0 forces a CPU-only build; DEEM_CUDA=1 requires the CUDA sources to
build (and fails loudly otherwise), GPU or not; unset, CUDA is built when a CUDA
toolkit, a CUDA build of torch and a GPU are all present. TORCH_CUDA_ARCH_LIST picks the
GPU targets (default: Hopper, 9.0).
"""
import glob
import os

from setuptools import setup

import torch
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

HERE = os.path.dirname(os.path.abspath(__file__))
# No explicit -std flag: torch.utils.cpp_extension adds the standard its headers
# need (C++20 for torch >= 2.13; torch 2.14's ATen.h rejects C++17).


def want_cuda():
    flag = os.environ.get("DEEM_CUDA", "").strip()
    available = torch.version.cuda is not None and CUDA_HOME is not None
    if flag not in ("", "0", "1"):
        raise RuntimeError(f"DEEM_CUDA must be 0, 1 or unset; got {flag!r}")
    if flag == "0":
        return False
    if flag == "1":
        if not available:
            raise RuntimeError(
                "DEEM_CUDA=1 but CUDA cannot be built: "
                f"torch.version.cuda={torch.version.cuda!r}, CUDA_HOME={CUDA_HOME!r}"
            )
        return True
    return available and torch.cuda.is_available()


def extension():
    rel = lambda paths: sorted(os.path.relpath(p, HERE) for p in paths)  # noqa: E731
    sources = rel(glob.glob(os.path.join(HERE, "csrc", "*.cpp")) + glob.glob(os.path.join(HERE, "csrc", "cpu", "*.cpp")))
    include_dirs = [os.path.join(HERE, "csrc")]
    cxx = ["-O3", "-fopenmp"] if os.name != "nt" else ["/O2"]
    if want_cuda():
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "9.0")
        sources += rel(glob.glob(os.path.join(HERE, "csrc", "cuda", "*.cu")))
        return CUDAExtension(
            "deem._C", sources, include_dirs=include_dirs,
            extra_compile_args={"cxx": cxx + ["-DDEEM_WITH_CUDA"], "nvcc": ["-O3", "-lineinfo"]},
            py_limited_api=False,
        )
    return CppExtension("deem._C", sources, include_dirs=include_dirs, extra_compile_args={"cxx": cxx},
                        extra_link_args=["-fopenmp"] if os.name != "nt" else [])


setup(ext_modules=[extension()], cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)})
