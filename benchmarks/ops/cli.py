"""Microbenchmarks of the mmh_ext operators against the pure-PyTorch reference (eager and torch.compile).

    python -m benchmarks.ops [--quick] [--csv out.csv] [--markdown out.md] [--device cpu|cuda] [--threads N]
    python -m benchmarks.ops --from-csv out.csv [--markdown out.md]    # table + targets of an earlier run
    python -m benchmarks.ops --overhead [--markdown out.md]            # per-call overhead at tiny shapes

(``python benchmarks/bench_ops.py`` runs the same, with the same flags.)

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
import platform
import sys
import time
from typing import Any

import torch

from . import gpu_time, overhead, report
from .common import FWD, STEP, Case
from .inject import cupy_inject
from .registry import OPS, cases, op_names
from .report import CSV_FIELDS, Rows, read_csv, render_markdown
from .timing import fwd_and_step, median_seconds, memcpy_bandwidth, peak_mib

Times = dict[str, dict[str, float]]  # implementation -> {pass: seconds}
Peaks = dict[str, dict[str, float | None]]  # implementation -> {pass: peak MiB}


def _time_impl(name, f, inputs, grads, args, notes):
    """{pass: seconds}, {pass: peak MiB}, grad_out for one implementation; None entries where it failed."""
    try:
        fwd, step, grad_out = fwd_and_step(f, inputs, grads)
        t0 = time.perf_counter()
        fwd(), step()  # warm-up (and compilation)
        warm = time.perf_counter() - t0
        times = {
            FWD: median_seconds(fwd, args.min_run, args.device),
            STEP: median_seconds(step, args.min_run, args.device),
        }
        peaks = {FWD: peak_mib(fwd, args.device), STEP: peak_mib(step, args.device)}
        return times, peaks, grad_out, warm
    except Exception as exc:  # noqa: BLE001  (one failing implementation must not stop the others)
        notes.append(f"{name} failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300])
        print(f"# {notes[-1]}", flush=True)
        return {}, {}, None, None


def _parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer shapes, shorter timing")
    p.add_argument("--csv", help="also write the rows to this CSV file")
    p.add_argument("--markdown", help="also write the table and the targets as markdown to this file")
    p.add_argument("--from-csv", metavar="CSV", help="do not time: render the table and targets of this CSV")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: all cores)")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile baseline")
    p.add_argument(
        "--ops", default=None, metavar="OP[,OP]", help=f"only these operators ({', '.join(op_names())}; default: all)"
    )
    p.add_argument(
        "--min-run-time",
        type=float,
        default=None,
        help="seconds per measurement (default: cpu 1.0 / quick 0.3; cuda 0.2 / quick 0.05)",
    )
    p.add_argument(
        "--time-budget",
        type=float,
        default=None,
        metavar="S",
        help="stop starting operators after S seconds, and leave torch.compile out of those that "
        "start after 60%% of it (each skip is noted in the rows); the GPU kernel times come after "
        "the wall times and are cut to what is left of S",
    )
    p.add_argument(
        "--no-gpu-time",
        action="store_true",
        help="CUDA: leave out the GPU kernel time per call (torch.profiler, in a separate process)",
    )
    p.add_argument(
        "--overhead",
        action="store_true",
        help="per-call overhead at tiny shapes instead: forward+backward of each operator's tiny case "
        "against the eager reference, alternating, one thread unless --threads "
        "(benchmarks.ops.overhead)",
    )
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
    where = (
        f"{torch.cuda.get_device_name(0)}, CUDA {torch.version.cuda}"
        if args.device == "cuda"
        else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    )
    header = (
        f"# mmh_ext {mmh_ext.__version__}, torch {torch.__version__}, {where}, device {args.device}, "
        f"python {sys.version.split()[0]}"
    )
    print(header, flush=True)
    return header


def _measure(
    case: Case, args: argparse.Namespace, late: bool, notes: list[str]
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
            cupy_t = {
                FWD: median_seconds(got[0], args.min_run, "cuda"),
                STEP: median_seconds(got[1], args.min_run, "cuda"),
            }
    bw = memcpy_bandwidth(case.extra["numel"], args.device, args.min_run) if case.bytes_fwd else None
    del inputs, grads, grad_out
    return times, peaks, cupy_t, bw


def _row(
    case: Case,
    pas: str,
    times: Times,
    peaks: Peaks,
    cupy_t: dict[str, float],
    bw: float | None,
    args: argparse.Namespace,
    notes: list[str],
) -> tuple[dict[str, Any], float | None]:
    """One CSV row (and the fraction of the copy bandwidth) of a pass."""
    e, m = times["eager"].get(pas), times["mmh_ext"].get(pas)
    c = times.get("compile", {}).get(pas)
    cp = cupy_t.get(pas)
    nbytes = (case.bytes_fwd if pas == FWD else case.bytes_fwd + case.bytes_bwd) if bw else None
    frac = nbytes / m / bw if (bw and m) else None
    ratio = lambda a: a / m if (a is not None and m) else None  # noqa: E731
    row = dict(
        op=case.op,
        shape=case.label,
        pass_=pas,
        eager_ms=e * 1e3 if e else None,
        compile_ms=c * 1e3 if c else None,
        mmh_ext_ms=m * 1e3 if m else None,
        x_eager=ratio(e),
        x_compile=ratio(c),
        memcpy_fraction=frac,
        device=args.device,
        cupy_ms=cp * 1e3 if cp else None,
        x_cupy=ratio(cp),
        eager_peak_mib=peaks["eager"].get(pas),
        compile_peak_mib=peaks.get("compile", {}).get(pas),
        mmh_ext_peak_mib=peaks["mmh_ext"].get(pas),
        copy_gb_s=bw / 1e9 if bw else None,
        mmh_ext_gb_s=nbytes / m / 1e9 if (nbytes and m) else None,
        note="; ".join(notes),
    )
    return row, frac


def _skip(case: Case, args: argparse.Namespace, rows: Rows) -> None:
    """An operator started after the time budget: rows without numbers, so that its targets read "not measured"."""
    note = f"not measured: the time budget of {args.time_budget:.0f} s was spent"
    print(f"# {case.op} {case.label}: {note}", flush=True)
    for pas in (FWD, STEP):
        rows.add(
            {k: None for k in CSV_FIELDS} | dict(op=case.op, shape=case.label, pass_=pas, device=args.device, note=note)
        )


def _run_case(case: Case, args: argparse.Namespace, elapsed: float, rows: Rows) -> tuple[list[dict[str, Any]], bool]:
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
        print(report.line(case, pas, row, frac, args.device == "cuda"), flush=True)
    for n in notes:
        print(f"# {case.op} {case.label}: {n}", flush=True)
    if args.device == "cuda":
        torch.cuda.empty_cache()
    return out, bool(times.get("compile"))


def _selected(all_cases: list[Case], ops: str | None, p: argparse.ArgumentParser) -> list[Case]:
    """The cases of the operators named in ``--ops`` (all without it); an unknown name is a usage error."""
    if ops is None:
        return all_cases
    wanted, known = set(ops.split(",")), {c.op for c in all_cases}
    if wanted - known:
        p.error(f"--ops: unknown operator(s) {sorted(wanted - known)}; known: {sorted(known)}")
    return [c for c in all_cases if c.op in wanted]


def _overhead(p: argparse.ArgumentParser, args: argparse.Namespace, header: str) -> int:
    """``--overhead``: the per-call overhead table at tiny shapes (:mod:`benchmarks.ops.overhead`)."""
    wanted = None if args.ops is None else set(args.ops.split(","))
    if wanted is not None and wanted - set(op_names()):
        p.error(f"--ops: unknown operator(s) {sorted(wanted - set(op_names()))}; known: {op_names()}")
    modules = [m for m in OPS if wanted is None or m.OP in wanted]
    _, text = overhead.run(
        modules,
        args.device,
        args.quick,
        "Per-call overhead at tiny shapes, forward+backward "
        f"(median of {overhead.ROUNDS} alternating rounds)\n\n{header}",
    )
    print()
    print(text, end="")
    if args.markdown:
        with open(args.markdown, "w") as out:
            out.write(text)
        print(f"# wrote {args.markdown}")
    return 0


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """The benchmark's command line (``prog``: its name in the usage line; default the script's)."""
    p = _parser(prog)
    args = p.parse_args(argv)
    if args.from_csv:
        return _render_csv(p, args)
    if args.gpu_time_worker:
        return gpu_time.gpu_worker(*args.gpu_time_worker)
    if args.overhead and not args.threads:
        args.threads = 1
    header = _setup(p, args)
    if args.overhead:
        return _overhead(p, args, header)
    rows = Rows(args.csv)
    report.print_table_head(args.device == "cuda")
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
            gpu_time.gpu_phase(measured, remaining, rows)
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
