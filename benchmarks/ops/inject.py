"""Benchmark cases of the cross-stream multiplicative injection (``mmh_ext.cross_stream_inject``), a memory-bound
op: ResNet-50 stage shapes, the ideal bytes moved (for the fraction of the copy bandwidth), its targets, and on CUDA
the same op written as cupy ``ElementwiseKernel``s — what a user would write instead."""

from __future__ import annotations

import torch

from .common import Case

OP = "cross_stream_inject"
#: ResNet-50 stage shapes (input of the 2nd residual unit's branch) for 8 clips x 5 frames at 224x224: (N, C, h = w).
SHAPES = [(40, 256, 56), (40, 512, 28), (40, 1024, 14), (40, 2048, 7)]
QUICK = [SHAPES[1], SHAPES[3]]
TARGETS = {"cuda": [("memcpy_fraction", 0.8), ("x_cupy", 1.0)], "cpu": [("x_eager", 1.5), ("memcpy_fraction", 0.5)]}


def case(n: int, c: int, hw: int, device: str) -> Case:
    import mmh_ext
    from mmh_ext import reference as R

    numel = n * c * hw * hw

    def make():
        g = torch.Generator().manual_seed(0)
        x = torch.randn(n, c, hw, hw, generator=g).to(device).requires_grad_(True)
        gate = torch.randn(n, c, hw, hw, generator=g).to(device).requires_grad_(True)
        return [x, gate], [x, gate]

    # ideal traffic, float32: forward reads x, gate and writes out; backward reads grad, x, gate, writes dx, dgate
    return Case(
        OP,
        f"{n}x{c}x{hw}x{hw}",
        make,
        mmh_ext.cross_stream_inject,
        R.cross_stream_inject,
        bytes_fwd=3 * 4 * numel,
        bytes_bwd=5 * 4 * numel,
        extra={"numel": numel},
    )


#: Per-call overhead at tiny shapes (:mod:`benchmarks.ops.overhead`), as in :mod:`benchmarks.ops.rad`; against eager's
#: three ops (multiply, relu and their backward).
TINY = (2, 8, 4)
OVERHEAD_TARGET = 1.0


def tiny_case(device: str) -> Case:
    return case(*TINY, device)


def cases(quick: bool, device: str) -> list[Case]:
    return [case(*s, device) for s in (QUICK if quick else SHAPES)]


def cupy_inject(x: torch.Tensor, gate: torch.Tensor, grad_out: torch.Tensor):
    """(forward, forward+backward) callables of the injection as cupy ElementwiseKernels on torch's current stream,
    or a string saying why there are none. Checked against ``x * relu(gate)`` and its gradients before timing."""
    try:
        import cupy
    except ImportError:
        return "cupy not installed (pip install the 'bench' extra)"
    try:
        fwd_k = cupy.ElementwiseKernel("T x, T g", "T y", "y = g > (T)0 ? x * g : (T)0", "mmh_bench_inject_fwd")
        bwd_k = cupy.ElementwiseKernel(
            "T x, T g, T gy",
            "T dx, T dg",
            "if (g > (T)0) { dx = gy * g; dg = gy * x; } else { dx = (T)0; dg = (T)0; }",
            "mmh_bench_inject_bwd",
        )
        stream = cupy.cuda.ExternalStream(torch.cuda.current_stream().cuda_stream)
        xc, gc, gyc = (cupy.asarray(t.detach()) for t in (x, gate, grad_out))

        def fwd():
            with stream:
                return fwd_k(xc, gc)

        def step():
            with stream:
                y = fwd_k(xc, gc)
                return y, bwd_k(xc, gc, gyc)

        y, (dx, dg) = step()
        torch.cuda.synchronize()
        xd, gd, gy = x.detach(), gate.detach(), grad_out
        want = (xd * gd.relu(), gy * gd.relu(), gy * xd * (gd > 0))
        for got, ref in zip((y, dx, dg), want):
            torch.testing.assert_close(torch.as_tensor(got, device=x.device), ref)
        return fwd, step
    except Exception as exc:  # noqa: BLE001  (a broken cupy install must not stop the benchmark)
        return f"cupy failed: {type(exc).__name__}: {exc}"
