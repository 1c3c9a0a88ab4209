"""What every operator's benchmark case shares: the two passes, the :class:`Case` record, the implementations whose
GPU kernel time is measured, and the short one-line form of an exception used in notes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

FWD, STEP = "forward", "forward+backward"
#: Implementations whose GPU kernel time is measured on CUDA (cupy: the injection only).
GPU_IMPLS = ("eager", "compile", "mmh_ext", "cupy")
#: Profiled calls per implementation and pass for the GPU kernel time (short: it gets what --time-budget leaves).
GPU_CALLS = 20


@dataclass
class Case:
    """One operator at one shape: ``make`` builds fresh inputs, ``fused`` is mmh_ext's op, ``ref`` the pure-PyTorch
    reference (timed eager and under torch.compile)."""

    op: str
    label: str
    make: Callable[[], tuple[list[torch.Tensor], list[torch.Tensor]]]  # (all inputs, inputs that require grad)
    fused: Callable
    ref: Callable
    bytes_fwd: int = 0  # bytes the ideal forward moves (memory-bound ops)
    bytes_bwd: int = 0
    extra: dict = field(default_factory=dict)


def short_error(exc: BaseException) -> str:
    """``Type: first line of the message``, at most 200 characters (for a note in a row)."""
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:200]
