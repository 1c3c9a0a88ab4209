"""Loading of the compiled operator library, with one clear error when it is missing or stale."""

from __future__ import annotations

import importlib
import os

import torch

BUILD_COMMAND = "pip install --no-build-isolation -e .   (from the root of the mmh checkout)"


class MmhExtBuildError(ImportError):
    """The compiled mmh_ext operator library is missing, or was built for another PyTorch."""


def _fail(reason: str, cause: BaseException | None = None) -> MmhExtBuildError:
    here = os.path.dirname(os.path.abspath(__file__))
    msg = (
        f"mmh_ext: {reason}\n"
        f"  package folder: {here}\n"
        f"  installed torch: {torch.__version__} (CUDA {torch.version.cuda or 'none'})\n"
        f"Build the operators with:\n    {BUILD_COMMAND}\n"
        "(set MMH_EXT_FORCE_CUDA=1 to compile the CUDA kernels without a GPU, MMH_EXT_NO_CUDA=1 to leave them out)."
    )
    err = MmhExtBuildError(msg)
    err.__cause__ = cause
    return err


def parse_build_info(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        if "=" in line:
            key, value = line.split("=", 1)
            out[key.strip()] = value.strip()
    return out


def load() -> dict[str, str]:
    """Import mmh_ext._C (which registers the operators) and return its build information."""
    try:
        importlib.import_module("mmh_ext._C")
    except ModuleNotFoundError as e:
        if e.name == "mmh_ext._C":
            raise _fail("the compiled library mmh_ext._C is not built.", e) from None
        raise
    except (ImportError, OSError) as e:  # undefined symbols: built against another torch
        raise _fail(
            f"the compiled library could not be loaded ({e}); it was probably built for another torch.", e
        ) from None
    if not hasattr(torch.ops.mmh_ext, "build_info"):
        raise _fail("the compiled library loaded but registered no operators.")
    info = parse_build_info(torch.ops.mmh_ext.build_info())
    if "rad_max_levels" not in info:  # what the Python package reads from the build (mmh_ext/rad.py)
        raise _fail("the compiled library is older than this package (its build information lacks rad_max_levels).")
    built_for = info.get("torch_version", "unknown")
    if built_for != torch.__version__:
        raise _fail(
            f"the compiled library was built for torch {built_for}, but torch {torch.__version__} is installed."
        )
    return info
