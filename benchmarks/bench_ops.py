"""Microbenchmarks of the mmh_ext operators against the pure-PyTorch reference (eager and torch.compile).

    python benchmarks/bench_ops.py [--quick] [--csv out.csv] [--markdown out.md] [--device cpu|cuda] [--threads N]
    python benchmarks/bench_ops.py --from-csv out.csv [--markdown out.md]    # table + targets of an earlier run

For each operator and shape it prints the median time of forward and of forward+backward for the eager reference,
torch.compile of the reference and mmh_ext, and the speed-up ratios of mmh_ext over both. For the memory-bound
injection it also prints the achieved bandwidth as a fraction of a copy of the same tensor (``src.clone()``, read +
write) measured in the same run. At the end it says which targets are met (forward+backward; see ``TARGETS``).

On CUDA (``--device cuda``) the times come from CUDA events around blocks of calls (median of the blocks), it also
records the peak memory of each implementation (``torch.cuda.max_memory_allocated`` over one call, after a reset,
minus what was allocated before: inputs are not counted), and times the injection written as cupy
``ElementwiseKernel``s (forward ``x * relu(g)`` and its backward) — what a user would write instead — when cupy is
installed (the ``bench`` extra; skipped with a note otherwise). CSV rows are written as each operator finishes, so a
run stopped early keeps what it measured.

Those CUDA times are wall times per call: at these sizes mostly host work (Python, dispatcher, launches), which in a
training step overlaps the GPU running the network. So after all of them, a second table gives, per implementation and
pass, the GPU kernel time per call (the summed device time of every kernel, memcpy and memset that ``torch.profiler``
records over ``GPU_CALLS`` (20) warmed-up calls, divided by them) and the kernel launches per call, with the GPU-time
ratios. They are informational (the targets stay on the wall times) and measured in a separate process, after the wall
times, because CUPTI (the profiler's backend) can keep slowing kernel launches after the profiler stops (on the H200,
torch 2.11, wall times taken after a profile were up to 2x the benchmark's), and could crash or hang: a failure, a
timeout or ``--time-budget`` leaves those cells "-" with a note and never fails the run. They are added to the CSV,
which is rewritten once they are in (``--no-gpu-time`` leaves them out).
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch.utils import benchmark

FWD, STEP = "forward", "forward+backward"
#: Implementations whose GPU kernel time is measured on CUDA (cupy: the injection only).
GPU_IMPLS = ("eager", "compile", "mmh_ext", "cupy")
#: GPU kernel ms and launches per call per implementation, and mmh_ext's GPU-time ratios (informational, no targets).
GPU_FIELDS = ([f"{i}_gpu_ms" for i in GPU_IMPLS] + [f"{i}_launches" for i in GPU_IMPLS]
              + ["x_eager_gpu", "x_compile_gpu", "x_cupy_gpu"])
CSV_FIELDS = ["op", "shape", "pass_", "eager_ms", "compile_ms", "mmh_ext_ms", "x_eager", "x_compile",
              "memcpy_fraction", "device", "cupy_ms", "x_cupy", "eager_peak_mib", "compile_peak_mib",
              "mmh_ext_peak_mib", "copy_gb_s", "mmh_ext_gb_s"] + GPU_FIELDS + ["note"]
#: Profiled calls per implementation and pass for the GPU kernel time (short: it gets what --time-budget leaves).
GPU_CALLS = 20

#: Targets, forward+backward, per device: (op, what, threshold). ``x_eager``/``x_compile``/``x_cupy``: mmh_ext's
#: speed-up; ``memcpy_fraction``: achieved bandwidth / copy bandwidth; ``peak_vs_eager``: mmh_ext's peak memory must
#: not exceed eager's. CUDA: issue 9 (at B=64); CPU: the README's microbenchmark section (RAD 5x from issue 9).
TARGETS: dict[str, list[tuple[str, str, float]]] = {
    "cuda": [("rad_loss", "x_eager", 3.0), ("rad_loss", "x_compile", 1.5), ("rad_loss", "peak_vs_eager", 1.0),
             ("dad_loss", "x_eager", 2.0),
             ("cross_stream_inject", "memcpy_fraction", 0.8), ("cross_stream_inject", "x_cupy", 1.0)],
    "cpu": [("rad_loss", "x_eager", 5.0), ("rad_loss", "x_compile", 1.5), ("dad_loss", "x_eager", 2.0),
            ("cross_stream_inject", "x_eager", 1.5), ("cross_stream_inject", "memcpy_fraction", 0.5)],
}


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

    return Case("rad_loss", f"B={b} C={c} {hw}x{hw} K={k}", make, mmh_ext.rad_loss, R.rad_loss)


def dad_case(b, c, hw, device):
    import mmh_ext
    from mmh_ext import reference as R

    def make():
        g = torch.Generator().manual_seed(0)
        hs = torch.randn(b, c, hw, hw, generator=g).to(device).requires_grad_(True)
        ht = torch.randn(b, c, hw, hw, generator=g).to(device)
        return [hs, ht], [hs]

    return Case("dad_loss", f"B={b} {c}x{hw}x{hw}", make, mmh_ext.dad_loss, R.dad_loss)


def inject_case(n, c, hw, device):
    import mmh_ext
    from mmh_ext import reference as R

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


# ------------------------------------------------------------------------------------------------------- timing
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


def cupy_inject(x: torch.Tensor, gate: torch.Tensor, grad_out: torch.Tensor):
    """(forward, forward+backward) callables of the injection as cupy ElementwiseKernels on torch's current stream,
    or a string saying why there are none. Checked against ``x * relu(gate)`` and its gradients before timing."""
    try:
        import cupy
    except ImportError:
        return "cupy not installed (pip install the 'bench' extra)"
    try:
        fwd_k = cupy.ElementwiseKernel("T x, T g", "T y", "y = g > (T)0 ? x * g : (T)0", "mmh_bench_inject_fwd")
        bwd_k = cupy.ElementwiseKernel("T x, T g, T gy", "T dx, T dg",
                                       "if (g > (T)0) { dx = gy * g; dg = gy * x; } else { dx = (T)0; dg = (T)0; }",
                                       "mmh_bench_inject_bwd")
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


# ---------------------------------------------------------------------------------------------- GPU kernel time
#: kineto activity types on the device timeline that are no GPU work of their own (annotations spanning kernels,
#: synchronisation records, the profiler's overhead); kernels, memcpys and memsets are what remains.
_NOT_WORK = {"gpu_user_annotation", "user_annotation", "cuda_sync", "overhead"}


def device_time_per_call(events, calls: int) -> tuple[float, float]:
    """(GPU ms, launches) per call from a profiler's ``events()`` over ``calls`` calls: the summed self device time
    of the device-side events (kernels, memcpys, memsets; host events and annotations left out), divided by
    ``calls``. Raises RuntimeError when there is none: a profiler that saw no kernel measured nothing, it is no 0."""
    from torch.autograd import DeviceType

    total_us, launches = 0.0, 0
    for e in events:
        if getattr(e, "device_type", DeviceType.CPU) != DeviceType.CUDA or getattr(e, "is_user_annotation", False):
            continue
        if str(getattr(e, "activity_type", "") or "").lower() in _NOT_WORK:
            continue
        us = getattr(e, "self_device_time_total", 0) or 0
        if not us and getattr(e, "time_range", None) is not None:  # a torch whose device events lack the property
            us = e.time_range.elapsed_us()
        total_us += us
        launches += 1
    if launches == 0:
        raise RuntimeError("the profiler recorded no GPU kernels")
    return total_us / calls / 1e3, launches / calls


def gpu_kernel_time(fn: Callable[[], object], calls: int = GPU_CALLS, warmup: int = 3) -> tuple[float, float]:
    """(GPU ms, launches) per call of ``fn``: ``warmup`` calls, then ``calls`` calls under ``torch.profiler`` (CUDA
    activity only), summed by :func:`device_time_per_call`."""
    from torch.profiler import ProfilerActivity, profile

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()  # nothing queued before the window is counted
    with warnings.catch_warnings():  # torch 2.11 warns about profiler cycles on every use
        warnings.simplefilter("ignore")
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(calls):
                fn()
            torch.cuda.synchronize()
        events = prof.events()
    return device_time_per_call(events, calls)


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:200]


def _gpu_measure_case(case: Case, with_compile: bool, calls: int, notes: list[str]) -> dict[str, dict[str, list]]:
    """{implementation: {pass: [GPU ms, launches]}} of one case; an implementation or pass that fails is left out
    with a note."""
    inputs, grads = case.make()
    impls = {"eager": case.ref, "mmh_ext": case.fused}
    if with_compile:
        torch._dynamo.reset()
        impls["compile"] = torch.compile(case.ref, dynamic=False)
    out: dict[str, dict[str, list]] = {}
    grad_out = None
    for name, f in impls.items():
        try:
            fwd, step, g_out = fwd_and_step(f, inputs, grads)
            grad_out = g_out if grad_out is None else grad_out
            fwd(), step()  # compilation, outside the warm-up count
        except Exception as exc:  # noqa: BLE001  (one failing implementation must not stop the others)
            notes.append(f"GPU time of {name}: {_short(exc)}")
            continue
        for pas, fn in ((FWD, fwd), (STEP, step)):
            try:
                out.setdefault(name, {})[pas] = list(gpu_kernel_time(fn, calls))
            except Exception as exc:  # noqa: BLE001
                notes.append(f"GPU time of {name} {pas}: {_short(exc)}")
    if case.op == "cross_stream_inject" and grad_out is not None:
        got = cupy_inject(inputs[0], inputs[1], grad_out)
        if isinstance(got, str):
            notes.append(f"GPU time of cupy: {got}")
        else:
            for pas, fn in zip((FWD, STEP), got):
                try:
                    out.setdefault("cupy", {})[pas] = list(gpu_kernel_time(fn, calls))
                except Exception as exc:  # noqa: BLE001
                    notes.append(f"GPU time of cupy {pas}: {_short(exc)}")
    return out


def _write_json(path: str, obj: Any) -> None:
    """Write ``obj`` to ``path`` through a temporary file, so that a reader never sees half of it."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        json.dump(obj, fh)
    os.replace(tmp, path)


def _gpu_worker(spec_path: str, out_path: str) -> int:
    """The separate process of the GPU kernel times (``--gpu-time-worker SPEC OUT``): for each case of the spec
    (``{"cases": [[op, shape, with_compile]], "calls": N, "deadline": time.time() or null}``) it prints and adds to
    OUT (rewritten after each case) ``{"op|shape": {"gpu": {impl: {pass: [ms, launches]}}, "notes": [...]}}``. It
    starts no case within 8 s of the deadline, and leaves torch.compile (whose compilation takes seconds per case) out
    of those that start within 45 s of it."""
    with open(spec_path) as fh:
        spec = json.load(fh)
    deadline, calls = spec.get("deadline"), int(spec.get("calls") or GPU_CALLS)
    by_key = {f"{c.op}|{c.label}": c for c in cases(False, "cuda")}
    results: dict[str, Any] = {}
    print(f"\n# GPU kernel time per call (torch.profiler, {calls} calls after warm-up; separate process)")
    head = (f"{'op':<20} {'shape':<24} {'pass':<9} {'GPU ms e/c/m':>26} {'launches e/c/m':>16} {'x eager':>8} "
            f"{'x compile':>9} {'cupy GPU ms':>11} {'x cupy':>7}")
    print(head)
    print("-" * len(head), flush=True)
    try:  # a throwaway first session: CUPTI's start-up stays out of the first measured case
        gpu_kernel_time(lambda: torch.ones(8, device="cuda").add_(1), calls=2, warmup=1)
    except Exception as exc:  # noqa: BLE001
        print(f"# GPU time: the first profiler session failed: {_short(exc)}", flush=True)
    for op, label, with_compile in spec["cases"]:
        key = f"{op}|{label}"
        notes: list[str] = []
        left = None if deadline is None else deadline - time.time()
        if left is not None and left < 8:
            notes.append("GPU kernel time not measured (time budget)")
            results[key] = {"gpu": {}, "notes": notes}
            _write_json(out_path, results)
            print(f"# {op} {label}: {notes[0]}", flush=True)
            continue
        if with_compile and left is not None and left < 45:
            with_compile = False
            notes.append("GPU time of compile left out (time budget)")
        case = by_key.get(key)
        if case is None:
            notes.append(f"GPU time: no case {key}")
            gpu = {}
        else:
            try:
                gpu = _gpu_measure_case(case, with_compile, calls, notes)
            except Exception as exc:  # noqa: BLE001  (inputs that cannot be made: the next case still runs)
                notes.append(f"GPU time: {_short(exc)}")
                gpu = {}
        results[key] = {"gpu": gpu, "notes": notes}
        _write_json(out_path, results)
        for pas in (FWD, STEP):
            row = dict(op=op, shape=label, pass_=pas)
            fill_gpu_columns(row, gpu, [])
            print(_gpu_line(row), flush=True)
        for n in notes:
            print(f"# {op} {label}: {n}", flush=True)
        torch.cuda.empty_cache()
    return 0


def fill_gpu_columns(row: dict[str, Any], gpu: dict[str, dict[str, list]], notes: list[str]) -> None:
    """Set the GPU columns of one row from ``{impl: {pass: [ms, launches]}}`` (missing: None), with mmh_ext's
    GPU-time ratios; add a note where the numbers look wrong (more GPU time than wall time per call: events counted
    twice; a fractional launch count: events lost)."""
    pas, where = row["pass_"], f"{row.get('op')} {row.get('shape')}"
    for impl in GPU_IMPLS:
        ms, launches = (list(gpu.get(impl, {}).get(pas) or []) + [None, None])[:2]
        row[f"{impl}_gpu_ms"], row[f"{impl}_launches"] = ms, launches
        wall = _num(row.get(f"{impl}_ms"))
        if ms is not None and wall and ms > 1.2 * wall:
            notes.append(f"{where} {impl} {pas}: GPU time {ms:.3f} ms above the wall time {wall:.3f} ms per call")
        if launches is not None and abs(launches - round(launches)) > 1e-6:
            notes.append(f"{where} {impl} {pas}: {launches:g} launches per call (the profiler lost or added events)")
    m = row["mmh_ext_gpu_ms"]
    for impl in ("eager", "compile", "cupy"):
        v = row[f"{impl}_gpu_ms"]
        row[f"x_{impl}_gpu"] = v / m if (v is not None and m) else None


def _gpu_line(row: dict[str, Any]) -> str:
    """One printed line of the GPU kernel time table (the head is in :func:`_gpu_worker`)."""
    cell = lambda k, spec, w: _fmt(_num(row.get(k)), spec).rjust(w)  # noqa: E731
    ms = "/".join(_fmt(_num(row.get(f"{i}_gpu_ms")), ".3f") for i in ("eager", "compile", "mmh_ext"))
    la = "/".join(_fmt(_num(row.get(f"{i}_launches")), "g") for i in ("eager", "compile", "mmh_ext"))
    x = lambda k, w: cell(k, ".2f", w - 1) + ("x" if _num(row.get(k)) is not None else " ")  # noqa: E731
    return (f"{row['op']:<20} {row['shape']:<24} {row['pass_']:<9.9} {ms:>26} {la:>16} {x('x_eager_gpu', 8)} "
            f"{x('x_compile_gpu', 9)} {cell('cupy_gpu_ms', '.3f', 11)} {x('x_cupy_gpu', 7)}")


# ------------------------------------------------------------------------------------------------------ targets
def _num(v: Any) -> float | None:
    if v is None or v == "":
        return None
    v = float(v)
    return None if math.isnan(v) else v


def evaluate_targets(rows: list[dict[str, Any]], device: str) -> list[dict[str, Any]]:
    """Each target of ``TARGETS[device]`` checked on every forward+backward row of its operator: a list of
    ``{op, shape, what, value, threshold, met}`` where ``met`` is None when the value was not measured."""
    out = []
    for op, what, threshold in TARGETS[device]:
        for r in rows:
            if r["op"] != op or r["pass_"] != STEP:
                continue
            if what == "peak_vs_eager":
                m, e = _num(r.get("mmh_ext_peak_mib")), _num(r.get("eager_peak_mib"))
                value = m / e if m is not None and e else None
                met = None if value is None else value <= threshold
            else:
                value = _num(r.get(what))
                met = None if value is None else value >= threshold
            out.append(dict(op=op, shape=r["shape"], what=what, value=value, threshold=threshold, met=met))
    return out


_WHAT = {"x_eager": ("speed-up over eager", "≥ {:g}x"), "x_compile": ("speed-up over torch.compile", "≥ {:g}x"),
         "x_cupy": ("speed-up over the cupy ElementwiseKernel", "≥ {:g}x"),
         "memcpy_fraction": ("fraction of the copy bandwidth", "≥ {:.0%}"),
         "peak_vs_eager": ("peak memory / eager's", "≤ {:g}")}


def _fmt_value(what: str, v: float | None) -> str:
    if v is None:
        return "not measured"
    return f"{v:.0%}" if what == "memcpy_fraction" else (f"{v:.2f}" if what == "peak_vs_eager" else f"{v:.2f}x")


def render_markdown(rows: list[dict[str, Any]], device: str, header: str = "") -> str:
    """The rows as a markdown table, then every target: met / MISSED / not measured, and a one-line verdict."""
    f = lambda v, spec="{:.3f}": "-" if _num(v) is None else spec.format(_num(v))  # noqa: E731
    cuda = device == "cuda"
    cols = ["op", "shape", "pass", "eager ms", "compile ms", "mmh_ext ms", "x eager", "x compile"]
    cols += ["cupy ms", "x cupy", "peak MiB eager / compile / mmh_ext"] if cuda else []
    cols += ["% copy BW"]
    lines = ([header, ""] if header else []) + ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = [r["op"], r["shape"], r["pass_"], f(r.get("eager_ms")), f(r.get("compile_ms")),
                 f(r.get("mmh_ext_ms")), f(r.get("x_eager"), "{:.2f}x"), f(r.get("x_compile"), "{:.2f}x")]
        if cuda:
            cells += [f(r.get("cupy_ms")), f(r.get("x_cupy"), "{:.2f}x"),
                      " / ".join(f(r.get(k), "{:.1f}") for k in ("eager_peak_mib", "compile_peak_mib",
                                                                 "mmh_ext_peak_mib"))]
        cells.append(f(r.get("memcpy_fraction"), "{:.0%}"))
        lines.append("| " + " | ".join(cells) + " |")
    if cuda and any("eager_gpu_ms" in r for r in rows):  # a CSV from before the GPU columns has none
        lines += _gpu_markdown(rows, f)
    notes = sorted({r["note"] for r in rows if r.get("note")})
    if notes:
        lines += [""] + [f"- note: {n}" for n in notes]
    checks = evaluate_targets(rows, device)
    lines += ["", f"Targets ({device}, forward+backward):", ""]
    for c in checks:
        name, goal = _WHAT[c["what"]]
        verdict = {True: "met", False: "**MISSED**", None: "not measured"}[c["met"]]
        lines.append(f"- {c['op']} {c['shape']}: {name} {_fmt_value(c['what'], c['value'])} "
                     f"(target {goal.format(c['threshold'])}): {verdict}")
    met = sum(c["met"] is True for c in checks)
    missed = sum(c["met"] is False for c in checks)
    unmeasured = sum(c["met"] is None for c in checks)
    lines += ["", f"targets: {met} met, {missed} missed, {unmeasured} not measured (of {len(checks)})"]
    return "\n".join(lines) + "\n"


def _gpu_markdown(rows: list[dict[str, Any]], f: Callable) -> list[str]:
    """The GPU kernel time table of :func:`render_markdown` (CUDA rows with the GPU columns)."""
    cols = ["op", "shape", "pass", "GPU ms eager / compile / mmh_ext", "launches eager / compile / mmh_ext",
            "x eager (GPU)", "x compile (GPU)", "cupy GPU ms (launches)", "x cupy (GPU)"]
    lines = ["", f"GPU kernel time per call (`torch.profiler`, {GPU_CALLS} calls: summed kernels, memcpys and memsets, "
             "without the host overhead that the wall times above include; informational, no target is judged on "
             "it):", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cupy = f(r.get("cupy_gpu_ms")) + (f" ({f(r.get('cupy_launches'), '{:g}')})"
                                          if _num(r.get("cupy_launches")) is not None else "")
        lines.append("| " + " | ".join([
            r["op"], r["shape"], r["pass_"],
            " / ".join(f(r.get(f"{i}_gpu_ms")) for i in ("eager", "compile", "mmh_ext")),
            " / ".join(f(r.get(f"{i}_launches"), "{:g}") for i in ("eager", "compile", "mmh_ext")),
            f(r.get("x_eager_gpu"), "{:.2f}x"), f(r.get("x_compile_gpu"), "{:.2f}x"), cupy,
            f(r.get("x_cupy_gpu"), "{:.2f}x")]) + " |")
    return lines


def read_csv(path: str) -> list[dict[str, Any]]:
    with open(path, newline="") as fh:
        return [dict(r) for r in csv.DictReader(fh)]


# --------------------------------------------------------------------------------------------------------- main
def _time_impl(name, f, inputs, grads, args, notes):
    """{pass: seconds}, {pass: peak MiB}, grad_out for one implementation; None entries where it failed."""
    try:
        fwd, step, grad_out = fwd_and_step(f, inputs, grads)
        t0 = time.perf_counter()
        fwd(), step()  # warm-up (and compilation)
        warm = time.perf_counter() - t0
        times = {FWD: median_seconds(fwd, args.min_run, args.device), STEP: median_seconds(step, args.min_run,
                                                                                          args.device)}
        peaks = {FWD: peak_mib(fwd, args.device), STEP: peak_mib(step, args.device)}
        return times, peaks, grad_out, warm
    except Exception as exc:  # noqa: BLE001  (one failing implementation must not stop the others)
        notes.append(f"{name} failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300])
        print(f"# {notes[-1]}", flush=True)
        return {}, {}, None, None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer shapes, shorter timing")
    p.add_argument("--csv", help="also write the rows to this CSV file")
    p.add_argument("--markdown", help="also write the table and the targets as markdown to this file")
    p.add_argument("--from-csv", metavar="CSV", help="do not time: render the table and targets of this CSV")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: all cores)")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile baseline")
    p.add_argument("--ops", default=None, metavar="OP[,OP]",
                   help="only these operators (rad_loss, dad_loss, cross_stream_inject; default: all)")
    p.add_argument("--min-run-time", type=float, default=None,
                   help="seconds per measurement (default: cpu 1.0 / quick 0.3; cuda 0.2 / quick 0.05)")
    p.add_argument("--time-budget", type=float, default=None, metavar="S",
                   help="stop starting operators after S seconds, and leave torch.compile out of those that "
                        "start after 60%% of it (each skip is noted in the rows); the GPU kernel times come after "
                        "the wall times and are cut to what is left of S")
    p.add_argument("--no-gpu-time", action="store_true",
                   help="CUDA: leave out the GPU kernel time per call (torch.profiler, in a separate process)")
    p.add_argument("--gpu-time-worker", nargs=2, metavar=("SPEC", "OUT"), help=argparse.SUPPRESS)
    return p


def _render_csv(p: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """``--from-csv``: the table and targets of an earlier run, without timing anything."""
    rows = read_csv(args.from_csv)
    if not rows:
        p.error(f"--from-csv {args.from_csv}: no rows")
    text = render_markdown(rows, rows[0].get("device") or args.device)
    print(text, end="")
    if args.markdown:
        with open(args.markdown, "w") as fh:
            fh.write(text)
    return 0


def _setup(p: argparse.ArgumentParser, args: argparse.Namespace) -> str:
    """Check the device, set threads and ``args.min_run``; print and return the header line."""
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is available")
    import mmh_ext

    if args.device == "cuda" and mmh_ext.BUILD_INFO.get("cuda_kernels") != "1":
        p.error("--device cuda: this mmh_ext build has no CUDA kernels (python -m mmh_ext.info)")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.min_run_time is not None:
        args.min_run = args.min_run_time
    elif args.device == "cuda":
        args.min_run = 0.05 if args.quick else 0.2
    else:
        args.min_run = 0.3 if args.quick else 1.0
    where = (f"{torch.cuda.get_device_name(0)}, CUDA {torch.version.cuda}" if args.device == "cuda" else
             f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads")
    header = (f"# mmh_ext {mmh_ext.__version__}, torch {torch.__version__}, {where}, device {args.device}, "
              f"python {sys.version.split()[0]}")
    print(header, flush=True)
    return header


def _print_table_head(cuda: bool) -> None:
    head = (f"{'op':<20} {'shape':<24} {'pass':<9} {'eager ms':>9} {'compile ms':>10} {'mmh_ext ms':>10} "
            f"{'x eager':>8} {'x compile':>9} {'% memcpy':>8}")
    if cuda:
        head += f" {'cupy ms':>9} {'x cupy':>7} {'peak MiB e/c/m':>20}"
    print(head)
    print("-" * len(head), flush=True)


class _Rows:
    """The rows measured so far, also written (and flushed) to the CSV file as they come."""

    def __init__(self, path: str | None) -> None:
        self.rows: list[dict[str, Any]] = []
        self.path = path
        self.fh = self.writer = None
        if path:
            self.fh = open(path, "w", newline="")
            self.writer = csv.DictWriter(self.fh, fieldnames=CSV_FIELDS)
            self.writer.writeheader()
            self.fh.flush()

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        if self.writer is not None:
            self.writer.writerow(row)
            self.fh.flush()

    def rewrite(self) -> None:
        """Write every row again (once the GPU columns are filled in) through a temporary file, so that a run
        stopped meanwhile keeps the CSV as streamed; later rows are appended to it."""
        if self.path is None:
            return
        tmp = f"{self.path}.tmp"
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
            writer.writeheader()
            writer.writerows(self.rows)
        self.close()
        os.replace(tmp, self.path)
        self.fh = open(self.path, "a", newline="")
        self.writer = csv.DictWriter(self.fh, fieldnames=CSV_FIELDS)

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()
            self.fh = self.writer = None


def _fmt(v: Any, spec: str) -> str:
    return format(v, spec) if v is not None else "-"


Times = dict[str, dict[str, float]]  # implementation -> {pass: seconds}
Peaks = dict[str, dict[str, float | None]]  # implementation -> {pass: peak MiB}


def _measure(case: Case, args: argparse.Namespace, late: bool, notes: list[str]
             ) -> tuple[Times, Peaks, dict[str, float], float | None]:
    """Times and peaks per implementation (eager, mmh_ext, compile unless left out), for the injection on CUDA
    cupy's times, and for a memory-bound op the copy bandwidth (measured while the inputs are still held)."""
    inputs, grads = case.make()
    impls = {"eager": case.ref, "mmh_ext": case.fused}
    if not args.no_compile and not late:
        torch._dynamo.reset()
        impls["compile"] = torch.compile(case.ref, dynamic=False)
    times: Times = {}
    peaks: Peaks = {}
    grad_out = None
    for name, f in impls.items():
        times[name], peaks[name], g_out, _ = _time_impl(name, f, inputs, grads, args, notes)
        grad_out = g_out if grad_out is None else grad_out
    cupy_t: dict[str, float] = {}
    if args.device == "cuda" and case.op == "cross_stream_inject" and grad_out is not None:
        got = cupy_inject(inputs[0], inputs[1], grad_out)
        if isinstance(got, str):
            notes.append(got)
        else:
            cupy_t = {FWD: median_seconds(got[0], args.min_run, "cuda"),
                      STEP: median_seconds(got[1], args.min_run, "cuda")}
    bw = memcpy_bandwidth(case.extra["numel"], args.device, args.min_run) if case.bytes_fwd else None
    del inputs, grads, grad_out
    return times, peaks, cupy_t, bw


def _row(case: Case, pas: str, times: Times, peaks: Peaks, cupy_t: dict[str, float], bw: float | None,
         args: argparse.Namespace, notes: list[str]) -> tuple[dict[str, Any], float | None]:
    """One CSV row (and the fraction of the copy bandwidth) of a pass."""
    e, m = times["eager"].get(pas), times["mmh_ext"].get(pas)
    c = times.get("compile", {}).get(pas)
    cp = cupy_t.get(pas)
    nbytes = (case.bytes_fwd if pas == FWD else case.bytes_fwd + case.bytes_bwd) if bw else None
    frac = nbytes / m / bw if (bw and m) else None
    ratio = lambda a: a / m if (a is not None and m) else None  # noqa: E731
    row = dict(op=case.op, shape=case.label, pass_=pas, eager_ms=e * 1e3 if e else None,
               compile_ms=c * 1e3 if c else None, mmh_ext_ms=m * 1e3 if m else None, x_eager=ratio(e),
               x_compile=ratio(c), memcpy_fraction=frac, device=args.device,
               cupy_ms=cp * 1e3 if cp else None, x_cupy=ratio(cp),
               eager_peak_mib=peaks["eager"].get(pas), compile_peak_mib=peaks.get("compile", {}).get(pas),
               mmh_ext_peak_mib=peaks["mmh_ext"].get(pas), copy_gb_s=bw / 1e9 if bw else None,
               mmh_ext_gb_s=nbytes / m / 1e9 if (nbytes and m) else None, note="; ".join(notes))
    return row, frac


def _line(case: Case, pas: str, row: dict[str, Any], frac: float | None, cuda: bool) -> str:
    line = (f"{case.op:<20} {case.label:<24} {pas:<9.9} {_fmt(row['eager_ms'], '>9.3f')} "
            f"{_fmt(row['compile_ms'], '>10.3f')} {_fmt(row['mmh_ext_ms'], '>10.3f')} "
            f"{_fmt(row['x_eager'], '>7.2f')}{'x' if row['x_eager'] else ' '} "
            f"{_fmt(row['x_compile'], '>8.2f')}{'x' if row['x_compile'] else ' '} "
            f"{_fmt(frac * 100 if frac else None, '>7.0f')}{'%' if frac else ' '}")
    if cuda:
        pk = "/".join(_fmt(row[k], ".1f") for k in ("eager_peak_mib", "compile_peak_mib", "mmh_ext_peak_mib"))
        line += (f" {_fmt(row['cupy_ms'], '>9.3f')} {_fmt(row['x_cupy'], '>6.2f')}"
                 f"{'x' if row['x_cupy'] else ' '} {pk:>20}")
    return line


def _skip(case: Case, args: argparse.Namespace, rows: _Rows) -> None:
    """An operator started after the time budget: rows without numbers, so that its targets read "not measured"."""
    note = f"not measured: the time budget of {args.time_budget:.0f} s was spent"
    print(f"# {case.op} {case.label}: {note}", flush=True)
    for pas in (FWD, STEP):
        rows.add({k: None for k in CSV_FIELDS} | dict(op=case.op, shape=case.label, pass_=pas, device=args.device,
                                                      note=note))


def _run_case(case: Case, args: argparse.Namespace, elapsed: float, rows: _Rows) -> tuple[list[dict[str, Any]],
                                                                                              bool]:
    """Time one operator and shape; add and print its two rows (forward, forward+backward) and its notes. Returns
    the rows and whether torch.compile was timed."""
    notes: list[str] = []
    late = args.time_budget is not None and elapsed > 0.6 * args.time_budget
    if late and not args.no_compile:
        notes.append("torch.compile left out (time budget)")
    times, peaks, cupy_t, bw = _measure(case, args, late, notes)
    out = []
    for pas in (FWD, STEP):
        row, frac = _row(case, pas, times, peaks, cupy_t, bw, args, notes)
        rows.add(row)
        out.append(row)
        print(_line(case, pas, row, frac, args.device == "cuda"), flush=True)
    for n in notes:
        print(f"# {case.op} {case.label}: {n}", flush=True)
    if args.device == "cuda":
        torch.cuda.empty_cache()
    return out, bool(times.get("compile"))


def _gpu_worker_cmd(spec: str, out: str) -> list[str]:
    return [sys.executable, os.path.abspath(__file__), "--device", "cuda", "--gpu-time-worker", spec, out]


def _run_gpu_worker(measured: list[tuple[Case, bool, list[dict[str, Any]]]], remaining: float | None
                    ) -> tuple[dict[str, Any], str | None]:
    """Run :func:`_gpu_worker` on the measured cases; its results (what it wrote before it ended, however it
    ended) and why it ended early, if it did."""
    import mmh_ext

    env = dict(os.environ)  # the worker imports the same mmh_ext as this process
    root = os.path.dirname(os.path.dirname(os.path.abspath(mmh_ext.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([root] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    # the worker stops starting cases 10 s before the budget's end, and is stopped at it (a hang included)
    timeout = remaining if remaining is not None else 120 + 60 * len(measured)
    with tempfile.TemporaryDirectory(prefix="mmh_bench_gpu_") as tmp:
        spec, out = os.path.join(tmp, "spec.json"), os.path.join(tmp, "out.json")
        _write_json(spec, {"cases": [[c.op, c.label, compiled] for c, compiled, _ in measured], "calls": GPU_CALLS,
                           "deadline": None if remaining is None else time.time() + remaining - 10})
        sys.stdout.flush()
        why = None
        try:
            rc = subprocess.run(_gpu_worker_cmd(spec, out), env=env, timeout=timeout).returncode
            if rc != 0:
                why = f"the GPU-time process exited with status {rc}"
        except subprocess.TimeoutExpired:
            why = f"the GPU-time process was stopped after {timeout:.0f} s"
        results = {}
        if os.path.exists(out):
            try:
                with open(out) as fh:
                    results = json.load(fh)
            except ValueError as exc:
                why = (f"{why}; " if why else "") + f"unreadable GPU-time results ({exc})"
    return results, why


def gpu_phase(measured: list[tuple[Case, bool, list[dict[str, Any]]]], remaining: float | None, rows: _Rows) -> None:
    """Fill the GPU columns of the measured cases' rows (``(case, compile was timed, its rows)``) from a separate
    process, after every wall time was taken; a case without them gets a note saying why. Then rewrite the CSV.
    Nothing in here fails the run: the wall times and their targets are already written."""
    if not measured:
        return
    results: dict[str, Any] = {}
    why = None
    t0 = time.perf_counter()
    if remaining is not None and remaining < 20:
        why = "GPU kernel time not measured (time budget)"
    else:
        try:
            results, why = _run_gpu_worker(measured, remaining)
        except Exception as exc:  # noqa: BLE001  (e.g. no temporary directory, no process could be started)
            why = f"GPU kernel time not measured: {_short(exc)}"
    try:
        for case, _, case_rows in measured:
            res = results.get(f"{case.op}|{case.label}")
            if not isinstance(res, dict):
                res = {"gpu": {}, "notes": [why or "GPU kernel time not measured (the GPU-time process gave nothing)"]}
            for row in case_rows:
                notes = [str(n) for n in res.get("notes") or []]
                fill_gpu_columns(row, res.get("gpu") or {}, notes)
                row["note"] = "; ".join([row["note"]] * bool(row.get("note")) + notes)
        rows.rewrite()
        cells = sum(_num(r.get(f"{i}_gpu_ms")) is not None for _, _, rs in measured for r in rs for i in GPU_IMPLS)
        print(f"# GPU kernel time: {cells} implementation-passes measured in {time.perf_counter() - t0:.0f} s"
              + (f"; {why}" if why else ""), flush=True)
    except Exception as exc:  # noqa: BLE001
        print(f"# GPU time: not added: {_short(exc)}", flush=True)


def _selected(all_cases: list[Case], ops: str | None, p: argparse.ArgumentParser) -> list[Case]:
    """The cases of the operators named in ``--ops`` (all without it); an unknown name is a usage error."""
    if ops is None:
        return all_cases
    wanted, known = set(ops.split(",")), {c.op for c in all_cases}
    if wanted - known:
        p.error(f"--ops: unknown operator(s) {sorted(wanted - known)}; known: {sorted(known)}")
    return [c for c in all_cases if c.op in wanted]


def main(argv: list[str] | None = None) -> int:
    p = _parser()
    args = p.parse_args(argv)
    if args.from_csv:
        return _render_csv(p, args)
    if args.gpu_time_worker:
        return _gpu_worker(*args.gpu_time_worker)
    header = _setup(p, args)
    rows = _Rows(args.csv)
    _print_table_head(args.device == "cuda")
    t_start = time.perf_counter()
    measured: list[tuple[Case, bool, list[dict[str, Any]]]] = []
    try:
        for case in _selected(cases(args.quick, args.device), args.ops, p):
            elapsed = time.perf_counter() - t_start
            if args.time_budget is not None and elapsed > args.time_budget:
                _skip(case, args, rows)
            else:
                case_rows, compiled = _run_case(case, args, elapsed, rows)
                measured.append((case, compiled, case_rows))
        if args.device == "cuda" and not args.no_gpu_time:
            remaining = None if args.time_budget is None else args.time_budget - (time.perf_counter() - t_start)
            gpu_phase(measured, remaining, rows)
    finally:
        rows.close()
    if args.csv:
        print(f"# wrote {args.csv}")
    text = render_markdown(rows.rows, args.device, header=header)
    print()
    print("Targets" + text.split("Targets", 1)[1], end="")
    if args.markdown:
        with open(args.markdown, "w") as out:
            out.write(text)
        print(f"# wrote {args.markdown}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
