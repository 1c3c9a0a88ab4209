"""Per-call overhead at tiny shapes: ``python -m benchmarks.ops --overhead``.

At tiny shapes the compute is negligible and a call's cost is host work: the Python function, the dispatcher, the
autograd machinery, allocations. Each operator's case module gives one tiny case (``tiny_case``) and a target
(``OVERHEAD_TARGET``: the most mmh_ext's forward+backward may cost, as a fraction of the eager reference's). Both are
timed in the same run, in alternating rounds (eager, mmh_ext, mmh_ext, eager, ...), and the medians over the rounds are
compared, so that a co-tenant's load spreads over both. On the CPU a round counts the process's CPU time
(``time.process_time``; the mode runs on one thread unless ``--threads`` says otherwise), which time slices given to
other processes do not inflate; on CUDA it is the wall time of :func:`benchmarks.ops.timing.median_seconds`.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch
from torch.utils import benchmark

from .common import Case
from .timing import fwd_and_step, median_seconds

#: rounds per implementation (alternating)
ROUNDS = 7


@dataclass
class OverheadRow:
    op: str
    shape: str
    eager_us: float
    mmh_ext_us: float
    target: float

    @property
    def ratio(self) -> float:
        """mmh_ext's cost as a fraction of eager's (lower is better)."""
        return self.mmh_ext_us / self.eager_us

    @property
    def met(self) -> bool:
        return self.ratio <= self.target


def _cpu_seconds(fn, min_run_time: float) -> float:
    """Median process CPU seconds per call of ``fn`` over blocks of calls (torch.utils.benchmark's blocked_autorange
    with ``time.process_time`` as its clock)."""
    t = benchmark.Timer(stmt="fn()", globals={"fn": fn}, timer=time.process_time, num_threads=torch.get_num_threads())
    return t.blocked_autorange(min_run_time=min_run_time).median


def measure(case: Case, target: float, device: str, round_time: float, rounds: int = ROUNDS) -> OverheadRow:
    """Forward+backward of the eager reference and of mmh_ext on ``case``, in ``rounds`` alternating rounds."""
    inputs, grads = case.make()
    steps = {name: fwd_and_step(f, inputs, grads)[1] for name, f in (("eager", case.ref), ("mmh_ext", case.fused))}
    for step in steps.values():  # warm-up
        for _ in range(20):
            step()
    per: dict[str, list[float]] = {name: [] for name in steps}
    order = list(steps)
    for r in range(rounds):
        for name in order if r % 2 == 0 else order[::-1]:
            if device == "cuda":
                per[name].append(median_seconds(steps[name], round_time, "cuda"))
            else:
                per[name].append(_cpu_seconds(steps[name], round_time))
    med = {name: statistics.median(v) * 1e6 for name, v in per.items()}
    return OverheadRow(case.op, case.label, med["eager"], med["mmh_ext"], target)


def render(rows: list[OverheadRow], header: str) -> str:
    """The markdown table of the per-call overhead and its targets."""
    out = [
        header,
        "",
        "| op | tiny shape | eager fwd+bwd (us) | mmh_ext fwd+bwd (us) | mmh_ext / eager | target | |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        out.append(
            f"| {r.op} | {r.shape} | {r.eager_us:.1f} | {r.mmh_ext_us:.1f} | {r.ratio:.2f}x | "
            f"<= {r.target:.2f}x | {'met' if r.met else 'MISSED'} |"
        )
    return "\n".join(out) + "\n"


def run(modules, device: str, quick: bool, header: str) -> tuple[list[OverheadRow], str]:
    """Measure every operator module's tiny case; print and return the rows and the markdown table."""
    round_time = 0.1 if quick else 0.3
    rows = []
    for m in modules:
        row = measure(m.tiny_case(device), m.OVERHEAD_TARGET, device, round_time)
        print(
            f"{row.op:<20} {row.shape:<24} eager {row.eager_us:8.1f} us  mmh_ext {row.mmh_ext_us:8.1f} us  "
            f"{row.ratio:5.2f}x (target <= {row.target:.2f}x: {'met' if row.met else 'MISSED'})",
            flush=True,
        )
        rows.append(row)
    return rows, render(rows, header)
