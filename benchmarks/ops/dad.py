"""Benchmark cases of discrepancy-aware distillation (``mmh_ext.dad_loss``): B=64 feature maps of ResNet stages
(128x28x28, 256x7x7, 512x4x4); its targets (forward+backward) per device."""

from __future__ import annotations

import torch

from .common import Case

OP = "dad_loss"
#: (B, C, h = w); --quick keeps the first and the last.
SHAPES = [(64, 128, 28), (64, 256, 7), (64, 512, 4)]
QUICK = [SHAPES[0], SHAPES[2]]
TARGETS = {"cuda": [("x_eager", 2.0)], "cpu": [("x_eager", 2.0)]}


def case(b: int, c: int, hw: int, device: str) -> Case:
    import mmh_ext
    from mmh_ext import reference as R

    def make():
        g = torch.Generator().manual_seed(0)
        hs = torch.randn(b, c, hw, hw, generator=g).to(device).requires_grad_(True)
        ht = torch.randn(b, c, hw, hw, generator=g).to(device)
        return [hs, ht], [hs]

    return Case(OP, f"B={b} {c}x{hw}x{hw}", make, mmh_ext.dad_loss, R.dad_loss)


#: Per-call overhead at tiny shapes (:mod:`benchmarks.ops.overhead`), as in :mod:`benchmarks.ops.rad`.
TINY = (4, 8, 4)
OVERHEAD_TARGET = 0.3


def tiny_case(device: str) -> Case:
    return case(*TINY, device)


def cases(quick: bool, device: str) -> list[Case]:
    return [case(*s, device) for s in (QUICK if quick else SHAPES)]
