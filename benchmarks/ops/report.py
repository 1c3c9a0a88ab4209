"""The benchmark's rows and how they are reported: the CSV columns (streamed as each operator finishes), the printed
table lines, the markdown table, and the targets of :data:`benchmarks.ops.registry.TARGETS` judged on the
forward+backward rows (met / MISSED / not measured)."""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Callable
from typing import Any

from .common import GPU_CALLS, GPU_IMPLS, STEP, Case
from .registry import TARGETS

#: GPU kernel ms and launches per call per implementation, and mmh_ext's GPU-time ratios (informational, no targets).
GPU_FIELDS = (
    [f"{i}_gpu_ms" for i in GPU_IMPLS]
    + [f"{i}_launches" for i in GPU_IMPLS]
    + ["x_eager_gpu", "x_compile_gpu", "x_cupy_gpu"]
)
CSV_FIELDS = (
    [
        "op",
        "shape",
        "pass_",
        "eager_ms",
        "compile_ms",
        "mmh_ext_ms",
        "x_eager",
        "x_compile",
        "memcpy_fraction",
        "device",
        "cupy_ms",
        "x_cupy",
        "eager_peak_mib",
        "compile_peak_mib",
        "mmh_ext_peak_mib",
        "copy_gb_s",
        "mmh_ext_gb_s",
    ]
    + GPU_FIELDS
    + ["note"]
)


def num(v: Any) -> float | None:
    """A cell as a float (a CSV cell is a string); None for empty, missing or NaN."""
    if v is None or v == "":
        return None
    v = float(v)
    return None if math.isnan(v) else v


def fmt(v: Any, spec: str) -> str:
    return format(v, spec) if v is not None else "-"


# ---------------------------------------------------------------------------------------------------- printed table
def print_table_head(cuda: bool) -> None:
    head = (
        f"{'op':<20} {'shape':<24} {'pass':<9} {'eager ms':>9} {'compile ms':>10} {'mmh_ext ms':>10} "
        f"{'x eager':>8} {'x compile':>9} {'% memcpy':>8}"
    )
    if cuda:
        head += f" {'cupy ms':>9} {'x cupy':>7} {'peak MiB e/c/m':>20}"
    print(head)
    print("-" * len(head), flush=True)


def line(case: Case, pas: str, row: dict[str, Any], frac: float | None, cuda: bool) -> str:
    """One printed line of the wall-time table (the head is :func:`print_table_head`)."""
    text = (
        f"{case.op:<20} {case.label:<24} {pas:<9.9} {fmt(row['eager_ms'], '>9.3f')} "
        f"{fmt(row['compile_ms'], '>10.3f')} {fmt(row['mmh_ext_ms'], '>10.3f')} "
        f"{fmt(row['x_eager'], '>7.2f')}{'x' if row['x_eager'] else ' '} "
        f"{fmt(row['x_compile'], '>8.2f')}{'x' if row['x_compile'] else ' '} "
        f"{fmt(frac * 100 if frac else None, '>7.0f')}{'%' if frac else ' '}"
    )
    if cuda:
        pk = "/".join(fmt(row[k], ".1f") for k in ("eager_peak_mib", "compile_peak_mib", "mmh_ext_peak_mib"))
        text += f" {fmt(row['cupy_ms'], '>9.3f')} {fmt(row['x_cupy'], '>6.2f')}{'x' if row['x_cupy'] else ' '} {pk:>20}"
    return text


def gpu_line(row: dict[str, Any]) -> str:
    """One printed line of the GPU kernel time table (the head is in :func:`benchmarks.ops.gpu_time.gpu_worker`)."""
    cell = lambda k, spec, w: fmt(num(row.get(k)), spec).rjust(w)  # noqa: E731
    ms = "/".join(fmt(num(row.get(f"{i}_gpu_ms")), ".3f") for i in ("eager", "compile", "mmh_ext"))
    la = "/".join(fmt(num(row.get(f"{i}_launches")), "g") for i in ("eager", "compile", "mmh_ext"))
    x = lambda k, w: cell(k, ".2f", w - 1) + ("x" if num(row.get(k)) is not None else " ")  # noqa: E731
    return (
        f"{row['op']:<20} {row['shape']:<24} {row['pass_']:<9.9} {ms:>26} {la:>16} {x('x_eager_gpu', 8)} "
        f"{x('x_compile_gpu', 9)} {cell('cupy_gpu_ms', '.3f', 11)} {x('x_cupy_gpu', 7)}"
    )


class Rows:
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


def read_csv(path: str) -> list[dict[str, Any]]:
    with open(path, newline="") as fh:
        return [dict(r) for r in csv.DictReader(fh)]


# ---------------------------------------------------------------------------------------------------------- targets
def evaluate_targets(rows: list[dict[str, Any]], device: str) -> list[dict[str, Any]]:
    """Each target of ``TARGETS[device]`` checked on every forward+backward row of its operator: a list of
    ``{op, shape, what, value, threshold, met}`` where ``met`` is None when the value was not measured."""
    out = []
    for op, what, threshold in TARGETS[device]:
        for r in rows:
            if r["op"] != op or r["pass_"] != STEP:
                continue
            if what == "peak_vs_eager":
                m, e = num(r.get("mmh_ext_peak_mib")), num(r.get("eager_peak_mib"))
                value = m / e if m is not None and e else None
                met = None if value is None else value <= threshold
            else:
                value = num(r.get(what))
                met = None if value is None else value >= threshold
            out.append(dict(op=op, shape=r["shape"], what=what, value=value, threshold=threshold, met=met))
    return out


_WHAT = {
    "x_eager": ("speed-up over eager", "≥ {:g}x"),
    "x_compile": ("speed-up over torch.compile", "≥ {:g}x"),
    "x_cupy": ("speed-up over the cupy ElementwiseKernel", "≥ {:g}x"),
    "memcpy_fraction": ("fraction of the copy bandwidth", "≥ {:.0%}"),
    "peak_vs_eager": ("peak memory / eager's", "≤ {:g}"),
}


def _fmt_value(what: str, v: float | None) -> str:
    if v is None:
        return "not measured"
    return f"{v:.0%}" if what == "memcpy_fraction" else (f"{v:.2f}" if what == "peak_vs_eager" else f"{v:.2f}x")


def render_markdown(rows: list[dict[str, Any]], device: str, header: str = "") -> str:
    """The rows as a markdown table, then every target: met / MISSED / not measured, and a one-line verdict."""
    f = lambda v, spec="{:.3f}": "-" if num(v) is None else spec.format(num(v))  # noqa: E731
    cuda = device == "cuda"
    cols = ["op", "shape", "pass", "eager ms", "compile ms", "mmh_ext ms", "x eager", "x compile"]
    cols += ["cupy ms", "x cupy", "peak MiB eager / compile / mmh_ext"] if cuda else []
    cols += ["% copy BW"]
    lines = ([header, ""] if header else []) + ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = [
            r["op"],
            r["shape"],
            r["pass_"],
            f(r.get("eager_ms")),
            f(r.get("compile_ms")),
            f(r.get("mmh_ext_ms")),
            f(r.get("x_eager"), "{:.2f}x"),
            f(r.get("x_compile"), "{:.2f}x"),
        ]
        if cuda:
            cells += [
                f(r.get("cupy_ms")),
                f(r.get("x_cupy"), "{:.2f}x"),
                " / ".join(f(r.get(k), "{:.1f}") for k in ("eager_peak_mib", "compile_peak_mib", "mmh_ext_peak_mib")),
            ]
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
        lines.append(
            f"- {c['op']} {c['shape']}: {name} {_fmt_value(c['what'], c['value'])} "
            f"(target {goal.format(c['threshold'])}): {verdict}"
        )
    met = sum(c["met"] is True for c in checks)
    missed = sum(c["met"] is False for c in checks)
    unmeasured = sum(c["met"] is None for c in checks)
    lines += ["", f"targets: {met} met, {missed} missed, {unmeasured} not measured (of {len(checks)})"]
    return "\n".join(lines) + "\n"


def _gpu_markdown(rows: list[dict[str, Any]], f: Callable) -> list[str]:
    """The GPU kernel time table of :func:`render_markdown` (CUDA rows with the GPU columns)."""
    cols = [
        "op",
        "shape",
        "pass",
        "GPU ms eager / compile / mmh_ext",
        "launches eager / compile / mmh_ext",
        "x eager (GPU)",
        "x compile (GPU)",
        "cupy GPU ms (launches)",
        "x cupy (GPU)",
    ]
    lines = [
        "",
        f"GPU kernel time per call (`torch.profiler`, {GPU_CALLS} calls: summed kernels, memcpys and memsets, "
        "without the host overhead that the wall times above include; informational, no target is judged on "
        "it):",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "---|" * len(cols),
    ]
    for r in rows:
        cupy = f(r.get("cupy_gpu_ms")) + (
            f" ({f(r.get('cupy_launches'), '{:g}')})" if num(r.get("cupy_launches")) is not None else ""
        )
        lines.append(
            "| "
            + " | ".join(
                [
                    r["op"],
                    r["shape"],
                    r["pass_"],
                    " / ".join(f(r.get(f"{i}_gpu_ms")) for i in ("eager", "compile", "mmh_ext")),
                    " / ".join(f(r.get(f"{i}_launches"), "{:g}") for i in ("eager", "compile", "mmh_ext")),
                    f(r.get("x_eager_gpu"), "{:.2f}x"),
                    f(r.get("x_compile_gpu"), "{:.2f}x"),
                    cupy,
                    f(r.get("x_cupy_gpu"), "{:.2f}x"),
                ]
            )
            + " |"
        )
    return lines
