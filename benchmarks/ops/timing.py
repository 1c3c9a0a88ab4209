"""Timing and memory of one callable: the median seconds per call (CPU: ``torch.utils.benchmark``; CUDA: CUDA
events around blocks of back-to-back calls), the peak memory of one call, the forward / forward+backward callables
of an implementation, and the copy bandwidth that the memory-bound ops are compared with."""

from __future__ import annotations

import statistics
from collections.abc import Callable

import torch
from torch.utils import benchmark


def median_seconds(fn: Callable[[], object], min_run_time: float, device: str) -> float:
    """Median seconds per call. CPU: torch.utils.benchmark's blocked_autorange. CUDA: :func:`cuda_median_seconds`."""
    if device == "cuda":
        return cuda_median_seconds(fn, min_run_time)
    t = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    return t.blocked_autorange(min_run_time=min_run_time).median


def cuda_median_seconds(fn: Callable[[], object], min_run_time: float, blocks: int = 10) -> float:
    """Median over ``blocks`` blocks of the per-call time, each block timed with CUDA events on the current stream
    around as many back-to-back calls as fill ``min_run_time / blocks`` (so host launch overhead counts when the GPU
    would otherwise wait for it, as in a training loop). The caller warms ``fn`` up first."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def block(n: int) -> float:
        torch.cuda.synchronize()
        start.record()
        for _ in range(n):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3

    n, t = 1, block(1)
    target = max(min_run_time / blocks, 1e-4)
    while t < target and n < 1 << 16:  # calibrate the block size
        n = min(1 << 16, max(2 * n, int(n * target / max(t, 1e-7)) + 1))
        t = block(n)
    return statistics.median(block(n) / n for _ in range(blocks))


def peak_mib(fn: Callable[[], object], device: str) -> float | None:
    """Peak memory one call of ``fn`` allocates beyond what was allocated before it (CUDA only), in MiB."""
    if device != "cuda":
        return None
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    out = fn()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    del out
    return peak / 2**20


def fwd_and_step(f: Callable, inputs: list[torch.Tensor], grads: list[torch.Tensor]):
    def fwd():
        with torch.no_grad():
            return f(*inputs)

    with torch.no_grad():
        out = f(*inputs)
    # a dense upstream gradient, as a following layer would send (not the stride-0 gradient of a .sum())
    grad_out = None if out.dim() == 0 else torch.randn_like(out)

    def step():
        return torch.autograd.grad(f(*inputs), grads, grad_out)

    return fwd, step, grad_out


def memcpy_bandwidth(numel: int, device: str, min_run_time: float) -> float:
    """Bytes moved per second by ``src.clone()``: read + write of ``numel`` float32, into a freshly allocated output —
    the same allocation pattern as a functional operator (on the CPU, first-touch page faults of large new tensors
    are part of both costs; on CUDA the caching allocator hands the block back each time)."""
    src = torch.randn(numel, device=device)
    src.clone()
    t = median_seconds(lambda: src.clone(), min_run_time, device)
    return 2 * 4 * numel / t
