"""Build of mmh (framework, pure Python) and mmh_ext (the C++/CUDA operator library).

    pip install --no-build-isolation -e .

Environment switches:
  MMH_EXT_FORCE_CUDA=1   compile the CUDA kernels even without a visible GPU (needs a CUDA build of torch and nvcc);
  MMH_EXT_NO_CUDA=1      leave the CUDA kernels out;
  TORCH_CUDA_ARCH_LIST   the architectures to compile for (a forced build without a GPU defaults to "8.0;9.0");
  MMH_EXT_DEBUG=1        -O0 -g.
By default the CUDA kernels are compiled when torch is a CUDA build, a CUDA toolkit is found and a GPU is visible.
"""

import glob
import os
import sys

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

ROOT = os.path.dirname(os.path.abspath(__file__))
#: The checkout's tools (the op benchmark, the GPU check): importable after an editable install (and from the checkout
#: root), left out of wheels, where a top-level ``benchmarks`` package would collide with other projects'.
TOOLS = ("benchmarks",)


class BuildPyWithConfigs(build_py):
    """build_py that also ships the repository's ``configs/**/*.yaml`` as package data in ``mmh/configs/`` (same
    layout, so relative ``_base_`` paths keep working). Wheels and non-editable installs get them there; an editable
    install reads the checkout's ``configs/`` directly (``mmh.config.config_dir``)."""

    def finalize_options(self):
        super().finalize_options()
        if not getattr(self, "editable_mode", False):  # the checkout's tools stay out of wheels (see TOOLS)
            self.packages = [p for p in self.packages or [] if p.split(".")[0] not in TOOLS]

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        src_root = os.path.join(ROOT, "configs")
        for src in sorted(glob.glob(os.path.join(src_root, "**", "*.yaml"), recursive=True)):
            dst = os.path.join(self.build_lib, "mmh", "configs", os.path.relpath(src, src_root))
            self.mkpath(os.path.dirname(dst))
            self.copy_file(src, dst)


def _flag(name: str) -> bool:
    return os.environ.get(name, "0").lower() in ("1", "true", "yes", "on")


def _extensions():
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, CppExtension, CUDAExtension

    force, no_cuda = _flag("MMH_EXT_FORCE_CUDA"), _flag("MMH_EXT_NO_CUDA")
    if force and no_cuda:
        sys.exit("MMH_EXT_FORCE_CUDA and MMH_EXT_NO_CUDA are both set: choose one")
    cuda_build = torch.version.cuda is not None
    with_cuda = not no_cuda and cuda_build and CUDA_HOME is not None and (force or torch.cuda.is_available())
    if force and not with_cuda:
        sys.exit(
            f"MMH_EXT_FORCE_CUDA=1 but the CUDA kernels cannot be built: torch {torch.__version__} "
            f"(CUDA build: {cuda_build}), CUDA_HOME={CUDA_HOME!r}. Install a CUDA build of torch and set CUDA_HOME."
        )

    sources = sorted(glob.glob("csrc/*.cpp")) + sorted(glob.glob("csrc/cpu/*.cpp"))
    opt = ["-O0", "-g"] if _flag("MMH_EXT_DEBUG") else ["-O3"]
    cxx = opt + ["-fopenmp", "-fno-trapping-math", "-Wall", "-Wno-sign-compare", "-Wno-unused-function"]
    defines = [("MMH_EXT_TORCH_VERSION", f'"{torch.__version__}"')]
    kwargs = dict(extra_link_args=["-fopenmp"], py_limited_api=True)
    if not with_cuda:
        return [CppExtension("mmh_ext._C", sources, extra_compile_args={"cxx": cxx}, define_macros=defines, **kwargs)]

    if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
        os.environ["TORCH_CUDA_ARCH_LIST"] = "8.0;9.0"
    archs = os.environ.get("TORCH_CUDA_ARCH_LIST", "")
    include_dirs = []
    try:  # headers that torch's CUDA headers include (cusparse.h, ...) ship in the nvidia wheels
        import nvidia

        for base in nvidia.__path__:
            include_dirs += [d for d in glob.glob(os.path.join(base, "*", "include")) if os.path.isdir(d)]
    except ImportError:
        pass
    defines += [
        ("MMH_EXT_WITH_CUDA", None),
        ("MMH_EXT_CUDA_ARCHS", f'"{archs}"'),
        ("MMH_EXT_CUDA_VERSION", f'"{torch.version.cuda}"'),
    ]
    nvcc = opt + ["--expt-relaxed-constexpr", "-DMMH_EXT_WITH_CUDA"]
    return [
        CUDAExtension(
            "mmh_ext._C",
            sources + sorted(glob.glob("csrc/cuda/*.cu")),
            include_dirs=include_dirs,
            extra_compile_args={"cxx": cxx, "nvcc": nvcc},
            define_macros=defines,
            **kwargs,
        )
    ]


def main():
    from torch.utils.cpp_extension import BuildExtension

    setup(
        packages=find_packages("python") + ["mmh_ext"] + find_packages(ROOT, include=[f"{t}*" for t in TOOLS]),
        package_dir={"": "python", "mmh_ext": "mmh_ext", **{t: t for t in TOOLS}},
        ext_modules=_extensions(),
        cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True), "build_py": BuildPyWithConfigs},
        options={"bdist_wheel": {"py_limited_api": "cp39"}},
    )


if __name__ == "__main__":
    main()
