"""The GPU kernel time per call (CUDA): what ``torch.profiler`` records of the device's own work (kernels, memcpys,
memsets) over warmed-up calls, measured in a separate process after every wall time was taken (CUPTI can keep
slowing launches after a profile, and could crash or hang), and merged into the rows. Nothing in here fails a run:
a failure leaves the cells "-" with a note."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch

from . import registry
from .common import FWD, GPU_CALLS, GPU_IMPLS, STEP, Case, short_error
from .inject import cupy_inject
from .report import Rows, gpu_line, num
from .timing import fwd_and_step

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


def measure_case(case: Case, with_compile: bool, calls: int, notes: list[str]) -> dict[str, dict[str, list]]:
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
            notes.append(f"GPU time of {name}: {short_error(exc)}")
            continue
        for pas, fn in ((FWD, fwd), (STEP, step)):
            try:
                out.setdefault(name, {})[pas] = list(gpu_kernel_time(fn, calls))
            except Exception as exc:  # noqa: BLE001
                notes.append(f"GPU time of {name} {pas}: {short_error(exc)}")
    if case.op == "cross_stream_inject" and grad_out is not None:
        got = cupy_inject(inputs[0], inputs[1], grad_out)
        if isinstance(got, str):
            notes.append(f"GPU time of cupy: {got}")
        else:
            for pas, fn in zip((FWD, STEP), got):
                try:
                    out.setdefault("cupy", {})[pas] = list(gpu_kernel_time(fn, calls))
                except Exception as exc:  # noqa: BLE001
                    notes.append(f"GPU time of cupy {pas}: {short_error(exc)}")
    return out


def write_json(path: str, obj: Any) -> None:
    """Write ``obj`` to ``path`` through a temporary file, so that a reader never sees half of it."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        json.dump(obj, fh)
    os.replace(tmp, path)


def gpu_worker(spec_path: str, out_path: str) -> int:
    """The separate process of the GPU kernel times (``--gpu-time-worker SPEC OUT``): for each case of the spec
    (``{"cases": [[op, shape, with_compile]], "calls": N, "deadline": time.time() or null}``) it prints and adds to
    OUT (rewritten after each case) ``{"op|shape": {"gpu": {impl: {pass: [ms, launches]}}, "notes": [...]}}``. It
    starts no case within 8 s of the deadline, and leaves torch.compile (whose compilation takes seconds per case) out
    of those that start within 45 s of it."""
    with open(spec_path) as fh:
        spec = json.load(fh)
    deadline, calls = spec.get("deadline"), int(spec.get("calls") or GPU_CALLS)
    by_key = {f"{c.op}|{c.label}": c for c in registry.cases(False, "cuda")}
    results: dict[str, Any] = {}
    print(f"\n# GPU kernel time per call (torch.profiler, {calls} calls after warm-up; separate process)")
    head = (
        f"{'op':<20} {'shape':<24} {'pass':<9} {'GPU ms e/c/m':>26} {'launches e/c/m':>16} {'x eager':>8} "
        f"{'x compile':>9} {'cupy GPU ms':>11} {'x cupy':>7}"
    )
    print(head)
    print("-" * len(head), flush=True)
    try:  # a throwaway first session: CUPTI's start-up stays out of the first measured case
        gpu_kernel_time(lambda: torch.ones(8, device="cuda").add_(1), calls=2, warmup=1)
    except Exception as exc:  # noqa: BLE001
        print(f"# GPU time: the first profiler session failed: {short_error(exc)}", flush=True)
    for op, label, with_compile in spec["cases"]:
        key = f"{op}|{label}"
        notes: list[str] = []
        left = None if deadline is None else deadline - time.time()
        if left is not None and left < 8:
            notes.append("GPU kernel time not measured (time budget)")
            results[key] = {"gpu": {}, "notes": notes}
            write_json(out_path, results)
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
                gpu = measure_case(case, with_compile, calls, notes)
            except Exception as exc:  # noqa: BLE001  (inputs that cannot be made: the next case still runs)
                notes.append(f"GPU time: {short_error(exc)}")
                gpu = {}
        results[key] = {"gpu": gpu, "notes": notes}
        write_json(out_path, results)
        for pas in (FWD, STEP):
            row = dict(op=op, shape=label, pass_=pas)
            fill_gpu_columns(row, gpu, [])
            print(gpu_line(row), flush=True)
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
        wall = num(row.get(f"{impl}_ms"))
        if ms is not None and wall and ms > 1.2 * wall:
            notes.append(f"{where} {impl} {pas}: GPU time {ms:.3f} ms above the wall time {wall:.3f} ms per call")
        if launches is not None and abs(launches - round(launches)) > 1e-6:
            notes.append(f"{where} {impl} {pas}: {launches:g} launches per call (the profiler lost or added events)")
    m = row["mmh_ext_gpu_ms"]
    for impl in ("eager", "compile", "cupy"):
        v = row[f"{impl}_gpu_ms"]
        row[f"x_{impl}_gpu"] = v / m if (v is not None and m) else None


def worker_cmd(spec: str, out: str) -> list[str]:
    """The command line of the separate GPU-time process (``python -m benchmarks.ops --gpu-time-worker``)."""
    return [sys.executable, "-m", "benchmarks.ops", "--device", "cuda", "--gpu-time-worker", spec, out]


def run_worker(
    measured: list[tuple[Case, bool, list[dict[str, Any]]]], remaining: float | None
) -> tuple[dict[str, Any], str | None]:
    """Run :func:`gpu_worker` on the measured cases; its results (what it wrote before it ended, however it
    ended) and why it ended early, if it did."""
    import mmh_ext

    env = dict(os.environ)  # the worker imports the same mmh_ext and the same benchmarks package as this process
    packages = (mmh_ext, sys.modules["benchmarks"])
    roots = [os.path.dirname(os.path.dirname(os.path.abspath(p.__file__))) for p in packages]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(roots + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])))
    # the worker stops starting cases 10 s before the budget's end, and is stopped at it (a hang included)
    timeout = remaining if remaining is not None else 120 + 60 * len(measured)
    with tempfile.TemporaryDirectory(prefix="mmh_bench_gpu_") as tmp:
        spec, out = os.path.join(tmp, "spec.json"), os.path.join(tmp, "out.json")
        write_json(
            spec,
            {
                "cases": [[c.op, c.label, compiled] for c, compiled, _ in measured],
                "calls": GPU_CALLS,
                "deadline": None if remaining is None else time.time() + remaining - 10,
            },
        )
        sys.stdout.flush()
        why = None
        try:
            rc = subprocess.run(worker_cmd(spec, out), env=env, timeout=timeout).returncode
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


def gpu_phase(measured: list[tuple[Case, bool, list[dict[str, Any]]]], remaining: float | None, rows: Rows) -> None:
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
            results, why = run_worker(measured, remaining)
        except Exception as exc:  # noqa: BLE001  (e.g. no temporary directory, no process could be started)
            why = f"GPU kernel time not measured: {short_error(exc)}"
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
        cells = sum(num(r.get(f"{i}_gpu_ms")) is not None for _, _, rs in measured for r in rs for i in GPU_IMPLS)
        print(
            f"# GPU kernel time: {cells} implementation-passes measured in {time.perf_counter() - t0:.0f} s"
            + (f"; {why}" if why else ""),
            flush=True,
        )
    except Exception as exc:  # noqa: BLE001
        print(f"# GPU time: not added: {short_error(exc)}", flush=True)
