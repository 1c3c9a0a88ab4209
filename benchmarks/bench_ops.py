"""Microbenchmarks of the mmh_ext operators against the pure-PyTorch reference (eager and torch.compile).

    python benchmarks/bench_ops.py [--quick] [--csv out.csv] [--device cpu|cuda] [--threads N]

For each operator and shape it prints the median time of forward and of forward+backward for the eager reference,
torch.compile of the reference and mmh_ext, and the speed-up ratios of mmh_ext over both. For the memory-bound
injection it also prints the achieved bandwidth as a fraction of a memcpy (tensor.copy_) measured in the same run.
"""
from __future__ import annotations

import argparse
import csv
import platform
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch.utils import benchmark

import mmh_ext
from mmh_ext import reference as R


@dataclass
class Case:
    op: str
    label: str
    make: Callable[[], tuple[list[torch.Tensor], list[torch.Tensor]]]  # (all inputs, inputs that require grad)
    fused: Callable
    ref: Callable
    bytes_fwd: int = 0  # bytes the ideal forward moves (memory-bound ops)
    bytes_bwd: int = 0
    extra: dict = field(default_factory=dict)


def rad_case(b, c, hw, k, device):
    def make():
        g = torch.Generator().manual_seed(0)
        fs = torch.randn(b, c, hw, hw, generator=g).to(device).requires_grad_(True)
        ft = torch.randn(b, c, hw, hw, generator=g).to(device)
        ws = (torch.randn(k, c, generator=g) * 0.05).to(device).requires_grad_(True)
        bs = torch.zeros(k, device=device, requires_grad=True)
        wt, bt = (torch.randn(k, c, generator=g) * 0.05).to(device), torch.zeros(k, device=device)
        return [fs, ft, ws, bs, wt, bt], [fs, ws, bs]

    return Case("rad_loss", f"B={b} C={c} {hw}x{hw} K={k}", make, mmh_ext.rad_loss, R.rad_loss)


def dad_case(b, c, hw, device):
    def make():
        g = torch.Generator().manual_seed(0)
        hs = torch.randn(b, c, hw, hw, generator=g).to(device).requires_grad_(True)
        ht = torch.randn(b, c, hw, hw, generator=g).to(device)
        return [hs, ht], [hs]

    return Case("dad_loss", f"B={b} {c}x{hw}x{hw}", make, mmh_ext.dad_loss, R.dad_loss)


def inject_case(n, c, hw, device):
    numel = n * c * hw * hw

    def make():
        g = torch.Generator().manual_seed(0)
        x = torch.randn(n, c, hw, hw, generator=g).to(device).requires_grad_(True)
        gate = torch.randn(n, c, hw, hw, generator=g).to(device).requires_grad_(True)
        return [x, gate], [x, gate]

    # ideal traffic, float32: forward reads x, gate and writes out; backward reads grad, x, gate, writes dx, dgate
    return Case("cross_stream_inject", f"{n}x{c}x{hw}x{hw}", make, mmh_ext.cross_stream_inject,
                R.cross_stream_inject, bytes_fwd=3 * 4 * numel, bytes_bwd=5 * 4 * numel, extra={"numel": numel})


def cases(quick: bool, device: str) -> list[Case]:
    rad = [(64, 512, 4, 2), (64, 512, 4, 60), (64, 512, 7, 2), (64, 512, 7, 60)]
    dad = [(64, 128, 28), (64, 256, 7), (64, 512, 4)]
    # ResNet-50 stage shapes (input of the 2nd residual unit's branch) for 8 clips x 5 frames at 224x224
    inject = [(40, 256, 56), (40, 512, 28), (40, 1024, 14), (40, 2048, 7)]
    if quick:
        rad, dad, inject = [rad[1], rad[3]], [dad[0], dad[2]], [inject[1], inject[3]]
    return ([rad_case(*s, device) for s in rad] + [dad_case(*s, device) for s in dad]
            + [inject_case(*s, device) for s in inject])


def median_seconds(fn: Callable[[], object], min_run_time: float, device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    t = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    return t.blocked_autorange(min_run_time=min_run_time).median


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

    return fwd, step


def memcpy_bandwidth(numel: int, device: str, min_run_time: float) -> float:
    """Bytes moved per second by ``src.clone()``: read + write of ``numel`` float32, into a freshly allocated output —
    the same allocation pattern as a functional operator (on the CPU, first-touch page faults of large new tensors
    are part of both costs)."""
    src = torch.randn(numel, device=device)
    t = median_seconds(lambda: src.clone(), min_run_time, device)
    return 2 * 4 * numel / t


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer shapes, shorter timing")
    p.add_argument("--csv", help="also write the rows to this CSV file")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: all cores)")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile baseline")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is available")
    if args.threads:
        torch.set_num_threads(args.threads)
    min_run = 0.3 if args.quick else 1.0
    print(f"# mmh_ext {mmh_ext.__version__}, torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, device {args.device}, python {sys.version.split()[0]}")
    rows = []
    header = (f"{'op':<20} {'shape':<24} {'pass':<9} {'eager ms':>9} {'compile ms':>10} {'mmh_ext ms':>10} "
              f"{'x eager':>8} {'x compile':>9} {'% memcpy':>8}")
    print(header)
    print("-" * len(header))
    for case in cases(args.quick, args.device):
        inputs, grads = case.make()
        impls = {"eager": case.ref, "mmh_ext": case.fused}
        if not args.no_compile:
            torch._dynamo.reset()
            impls["compile"] = torch.compile(case.ref, dynamic=False)
        times: dict[str, dict[str, float]] = {}
        for name, f in impls.items():
            fwd, step = fwd_and_step(f, inputs, grads)
            t0 = time.perf_counter()
            fwd(), step()  # warm-up (and compilation)
            warm = time.perf_counter() - t0
            times[name] = {"forward": median_seconds(fwd, min_run, args.device),
                           "forward+backward": median_seconds(step, min_run, args.device), "warmup_s": warm}
        bw = memcpy_bandwidth(case.extra["numel"], args.device, min_run) if case.bytes_fwd else None
        for pas in ("forward", "forward+backward"):
            e, m = times["eager"][pas], times["mmh_ext"][pas]
            c = times.get("compile", {}).get(pas)
            frac = None
            if bw:
                nbytes = case.bytes_fwd if pas == "forward" else case.bytes_fwd + case.bytes_bwd
                frac = nbytes / m / bw
            row = dict(op=case.op, shape=case.label, pass_=pas, eager_ms=e * 1e3, compile_ms=c * 1e3 if c else None,
                       mmh_ext_ms=m * 1e3, x_eager=e / m, x_compile=(c / m) if c else None, memcpy_fraction=frac)
            rows.append(row)
            fmt = lambda v, spec: format(v, spec) if v is not None else "-"  # noqa: E731
            print(f"{case.op:<20} {case.label:<24} {pas:<9.9} {e * 1e3:>9.3f} {fmt(row['compile_ms'], '>10.3f')} "
                  f"{m * 1e3:>10.3f} {e / m:>7.2f}x {fmt(row['x_compile'], '>8.2f')}{'x' if c else ' '} "
                  f"{fmt(frac * 100 if frac else None, '>7.0f')}{'%' if frac else ''}")
        del inputs, grads
    if args.csv:
        with open(args.csv, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        print(f"# wrote {args.csv}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
