"""Benchmark cases of region-aware distillation (``mmh_ext.rad_loss``): B=64 penultimate maps of 512 channels at
4x4 and 7x7, K = 2 and 60 classes; its targets (forward+backward) per device."""

from __future__ import annotations

import torch

from .common import Case

OP = "rad_loss"
#: (B, C, h = w, K); --quick keeps the K=60 shapes.
SHAPES = [(64, 512, 4, 2), (64, 512, 4, 60), (64, 512, 7, 2), (64, 512, 7, 60)]
QUICK = [SHAPES[1], SHAPES[3]]
#: (what, threshold) per device; see :data:`benchmarks.ops.registry.TARGETS`. CUDA: issue 9 (at B=64); CPU: the
#: README's microbenchmark section (RAD 5x from issue 9).
TARGETS = {
    "cuda": [("x_eager", 3.0), ("x_compile", 1.5), ("peak_vs_eager", 1.0)],
    "cpu": [("x_eager", 5.0), ("x_compile", 1.5)],
}


def case(b: int, c: int, hw: int, k: int, device: str) -> Case:
    import mmh_ext
    from mmh_ext import reference as R

    def make():
        g = torch.Generator().manual_seed(0)
        fs = torch.randn(b, c, hw, hw, generator=g).to(device).requires_grad_(True)
        ft = torch.randn(b, c, hw, hw, generator=g).to(device)
        ws = (torch.randn(k, c, generator=g) * 0.05).to(device).requires_grad_(True)
        bs = torch.zeros(k, device=device, requires_grad=True)
        wt, bt = (torch.randn(k, c, generator=g) * 0.05).to(device), torch.zeros(k, device=device)
        return [fs, ft, ws, bs, wt, bt], [fs, ws, bs]

    return Case(OP, f"B={b} C={c} {hw}x{hw} K={k}", make, mmh_ext.rad_loss, R.rad_loss)


#: Per-call overhead at tiny shapes (:mod:`benchmarks.ops.overhead`): the tiny case, and the most mmh_ext's
#: forward+backward may cost as a fraction of the eager reference's (issue 21).
TINY = (2, 8, 4, 3)
OVERHEAD_TARGET = 0.3


def tiny_case(device: str) -> Case:
    return case(*TINY, device)


def cases(quick: bool, device: str) -> list[Case]:
    return [case(*s, device) for s in (QUICK if quick else SHAPES)]
