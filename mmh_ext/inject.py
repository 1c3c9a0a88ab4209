"""Cross-stream injection ``x * relu(gate)``: :func:`cross_stream_inject`, with the fake (meta) implementations of its
operators (``torch.ops.mmh_ext.cross_stream_inject*``: schemas, argument checks and autograd in csrc/inject.cpp,
kernels in csrc/cpu/inject.cpp and csrc/cuda/inject.cu)."""

from __future__ import annotations

import torch
from torch._prims_common import is_non_overlapping_and_dense_or_false as is_non_overlapping_and_dense

from ._common import fake_check_floats, raise_binding_error

__all__ = ["cross_stream_inject"]

_inject = torch.ops.mmh_ext.cross_stream_inject.default


@torch.library.register_fake("mmh_ext::cross_stream_inject")
def _inject_fake(x, gate):
    fake_check_floats([(x, "x"), (gate, "gate")])
    torch._check_value(
        x.shape == gate.shape,
        lambda: f"x has shape {list(x.shape)} but gate has shape {list(gate.shape)} (they must match; no broadcasting)",
    )
    dtype = torch.promote_types(x.dtype, gate.dtype)
    if x.stride() == gate.stride() and is_non_overlapping_and_dense(x):
        return torch.empty_like(x, dtype=dtype)
    return torch.empty_like(x, dtype=dtype, memory_format=torch.contiguous_format)


@torch.library.register_fake("mmh_ext::cross_stream_inject_backward")
def _inject_backward_fake(grad, x, gate):
    same = x.stride() == gate.stride() and is_non_overlapping_and_dense(x) and grad.stride() == x.stride()
    fmt = torch.preserve_format if same else torch.contiguous_format
    return torch.empty_like(x, memory_format=fmt), torch.empty_like(gate, memory_format=fmt)


def cross_stream_inject(x: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """Cross-stream multiplicative injection ``x * relu(gate)`` (thesis ch. 3, after Feichtenhofer et al.).

    ``x`` and ``gate`` have the same shape (any rank: 4-D images, 5-D video) and device; channels_last and other
    dense layouts are kept. Gradients reach both inputs; the backward is one pass and saves only the inputs.

    dtypes: float64/float32/float16/bfloat16, and ``x`` and ``gate`` may differ. The output has their promoted dtype
    (``torch.promote_types(x.dtype, gate.dtype)``, what ``x * torch.relu(gate)`` gives in eager mode), with or without
    ``torch.autocast`` (autocast's "promote" policy: nothing is cast down). float16/bfloat16 are computed in float32 and
    rounded once. ``grad_x`` has ``x``'s dtype and ``grad_gate`` ``gate``'s.

    Raises:
        ValueError: shapes or devices that differ. TypeError: an argument that is not a float tensor.
    """
    try:
        return _inject(x, gate)
    except RuntimeError as e:
        raise_binding_error(e)
        raise
