"""The torch device of a config's ``device`` entry."""

from __future__ import annotations

import torch

__all__ = ["resolve_device"]


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> cuda when available else cpu; otherwise ``torch.device(spec)`` (ValueError if unusable)."""
    if isinstance(spec, torch.device):
        return spec
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(spec)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {spec!r} requested but CUDA is not available")
    return dev
