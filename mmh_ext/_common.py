"""What the operator modules (:mod:`mmh_ext.rad`, :mod:`mmh_ext.dad`, :mod:`mmh_ext.inject`) share: the dtype rules
(accumulation dtype, output dtype under ``torch.autocast``), the argument checks of the fake (meta) implementations,
and the translation of the op binding's type errors.

The operators' argument checks live once, in C++ (``TORCH_CHECK_VALUE`` / ``TORCH_CHECK_TYPE`` naming the argument:
ValueError / TypeError in Python); the Python functions only default their arguments and call the op. The fake
implementations, which run instead of the C++ code under ``torch.compile`` and for meta tensors, check the same with
``torch._check_value`` / ``torch._check_type`` and the same messages (``tests/ops/test_validation.py`` holds the two to
each other)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)
DAD_FORMS = ("paper", "sp")
#: How the op binding words a Python value of the wrong type for an argument (a list where a Tensor goes, a string
#: where a float goes): a RuntimeError naming the argument, which the Python API raises as the TypeError it is.
_BINDING_ERROR = "Expected a value of type"


def acc_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """The accumulation dtype: float64 when any input is float64, float32 otherwise."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def autocast_on(device: torch.device) -> bool:
    return device.type in ("cpu", "cuda") and torch.is_autocast_enabled(device.type)


def out_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """dtype of a loss/matrix output: the inputs' promoted dtype; the accumulation dtype (float32) under autocast."""
    if autocast_on(tensors[0].device):
        return acc_dtype(*tensors)
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def as_out_dtype(out: torch.Tensor, *inputs: torch.Tensor) -> torch.Tensor:
    """``out``, computed in the accumulation dtype, in :func:`out_dtype` of the inputs. When every input already has
    ``out``'s dtype (the common case: all float32) that is ``out`` itself, with or without autocast, and nothing more
    is looked at."""
    dtype = out.dtype
    for t in inputs:
        if t.dtype != dtype:
            want = out_dtype(*inputs)
            return out if want == dtype else out.to(want)
    return out


def raise_binding_error(err: RuntimeError) -> None:
    """Raise the TypeError that ``err`` is when the op's binding refused a value of the wrong Python type (its first
    line names the operator, the argument and both types); return otherwise, for the caller to re-raise ``err``."""
    msg = str(err)
    if _BINDING_ERROR in msg:
        raise TypeError(msg.split("\n", 1)[0]) from None


def check_dad_form(form, name: str = "form") -> None:
    """DAD's ``form``: ``"paper"`` or ``"sp"`` (see :func:`mmh_ext.dad_loss`), for configurations and modules that
    check it when they are built, before any call (the op itself checks it on every call)."""
    if form not in DAD_FORMS:
        raise ValueError(f"{name} must be 'paper' or 'sp', got {form!r}")


# ---- checks of the fake implementations: the same conditions and messages as csrc/checks.h and each op's host code


def fake_check_floats(tensors: Sequence[tuple[torch.Tensor, str]]) -> None:
    """csrc/checks.h ``check_float_same_device``: each a float tensor, all on the first one's device."""
    first, fname = tensors[0]
    for t, name in tensors:
        torch._check_type(
            t.dtype in DTYPES, lambda: f"{name} must be a float64, float32, float16 or bfloat16 tensor, got {t.dtype}"
        )
        torch._check_value(
            t.device == first.device, lambda: f"{name} is on {t.device} but {fname} is on {first.device}"
        )
