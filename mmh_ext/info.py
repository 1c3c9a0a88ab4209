"""``python -m mmh_ext.info``: what this build of mmh_ext contains."""

from __future__ import annotations

import platform
import sys

import torch


def report() -> str:
    from . import BUILD_INFO, __version__

    lines = [
        f"mmh_ext {__version__}",
        f"python {platform.python_version()} ({sys.executable})",
        f"torch {torch.__version__} (CUDA build: {torch.version.cuda or 'no'}; built against torch "
        f"{BUILD_INFO.get('torch_version')})",
        f"CPU kernels: {'yes' if BUILD_INFO.get('cpu_kernels') == '1' else 'no'}",
        f"CUDA kernels: {'yes' if BUILD_INFO.get('cuda_kernels') == '1' else 'no'}"
        + (
            f" (CUDA {BUILD_INFO.get('cuda_version')}, architectures {BUILD_INFO.get('cuda_archs') or '-'})"
            if BUILD_INFO.get("cuda_kernels") == "1"
            else ""
        ),
        f"CUDA device available: {torch.cuda.is_available()}"
        + (f" ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else ""),
        f"compiler: {BUILD_INFO.get('compiler')} (C++ {BUILD_INFO.get('cxx_standard')})",
        "operators: "
        + ", ".join(
            sorted(n.split("::", 1)[1] for n in torch._C._dispatch_get_all_op_names() if n.startswith("mmh_ext::"))
        ),
    ]
    return "\n".join(lines)


def main() -> int:
    print(report())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
