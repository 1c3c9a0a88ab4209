"""What the operator modules (:mod:`mmh_ext.rad`, :mod:`mmh_ext.dad`, :mod:`mmh_ext.inject`) share: argument checks
whose messages name the argument, and the dtype rules (accumulation dtype, output dtype under ``torch.autocast``)."""
from __future__ import annotations

from collections.abc import Sequence

import torch

DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)
DAD_FORMS = ("paper", "sp")


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


def check_tensor(t, name: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in DTYPES:
        raise TypeError(f"{name} must be a float64, float32, float16 or bfloat16 tensor, got {t.dtype}")


def check_devices(tensors: Sequence[tuple[torch.Tensor, str]]) -> None:
    """Each a float tensor (dtypes may differ: torch.autocast mixes them), all on the first one's device."""
    for t, name in tensors:
        check_tensor(t, name)
    first, fname = tensors[0]
    for t, name in tensors[1:]:
        if t.device != first.device:
            raise ValueError(f"{name} is on {t.device} but {fname} is on {first.device}")


def check_dad_form(form, name: str = "form") -> None:
    """DAD's ``form``: ``"paper"`` or ``"sp"`` (see :func:`mmh_ext.dad_loss`)."""
    if form not in DAD_FORMS:
        raise ValueError(f"{name} must be 'paper' or 'sp', got {form!r}")
