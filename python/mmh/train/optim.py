"""Optimisers and per-step learning-rate schedules built from the ``train`` config section."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR

__all__ = ["build_optimizer", "build_scheduler", "lr_factor", "SCHEDULES"]

#: Learning-rate schedules understood by :func:`build_scheduler`.
SCHEDULES: tuple[str, ...] = ("constant", "step", "cosine", "onecycle")


def build_optimizer(params: Iterable[nn.Parameter], tcfg: Mapping[str, Any]) -> Optimizer:
    """SGD (momentum, nesterov), Adam or AdamW with ``lr`` and ``weight_decay`` from ``tcfg``."""
    params = list(params)
    if not params:
        raise ValueError("build_optimizer: no trainable parameters (is everything frozen?)")
    name = str(tcfg["optimizer"]).lower()
    lr, wd = float(tcfg["lr"]), float(tcfg["weight_decay"])
    if name == "sgd":
        return torch.optim.SGD(
            params, lr=lr, momentum=float(tcfg["momentum"]), nesterov=bool(tcfg["nesterov"]), weight_decay=wd
        )
    if name in ("adam", "adamw"):
        cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
        return cls(params, lr=lr, betas=tuple(float(b) for b in tcfg["betas"]), weight_decay=wd)
    raise ValueError(f"train.optimizer must be 'sgd', 'adam' or 'adamw', got {tcfg['optimizer']!r}")


def lr_factor(step: int, total: int, tcfg: Mapping[str, Any]) -> float:
    """Multiplier of the base lr at ``step`` for the constant / step / cosine schedules with linear warm-up."""
    warm = int(tcfg["warmup_steps"])
    if step < warm:
        start = float(tcfg["warmup_start_factor"])
        return start + (1.0 - start) * step / warm
    kind = tcfg["schedule"]
    if kind == "constant":
        return 1.0
    if kind == "step":
        return float(tcfg["gamma"]) ** sum(step >= int(m) for m in tcfg["milestones"])
    if kind == "cosine":
        floor = float(tcfg["min_lr_factor"])
        span = max(1, total - warm)
        progress = min(1.0, (step - warm) / span)
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"train.schedule must be 'constant', 'step', 'cosine' or 'onecycle', got {kind!r}")


def build_scheduler(optimizer: Optimizer, tcfg: Mapping[str, Any], total_steps: int) -> LRScheduler:
    """A scheduler stepped once per optimisation step.

    ``onecycle`` is :class:`torch.optim.lr_scheduler.OneCycleLR` (peak ``lr``, ``pct_start`` ramp, cosine
    annealing, momentum/beta1 cycling); the others are :func:`lr_factor` through ``LambdaLR``.
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    if tcfg["schedule"] not in SCHEDULES:
        raise ValueError(f"train.schedule must be one of {SCHEDULES}, got {tcfg['schedule']!r}")
    if tcfg["schedule"] == "onecycle":
        return OneCycleLR(
            optimizer, max_lr=float(tcfg["lr"]), total_steps=total_steps, pct_start=float(tcfg["pct_start"])
        )
    return LambdaLR(optimizer, lambda s: lr_factor(s, total_steps, tcfg))
