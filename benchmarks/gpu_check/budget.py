"""The GPU check's time budget: one wall-clock budget for the whole check (``GPU_CHECK_BUDGET_S``, default 450 s),
each section's time limit cut to what is left of it, and the benchmark's share kept for the end.

A lent GPU machine gives a session 15 minutes, machine start (minutes) included, and one command at most 10 minutes.
So the check must end within about 7.5 minutes whatever hangs: every section's limit ends before the deadline (the
sections before the benchmark end ``BENCH_RESERVE_S`` before it), a section that would get under ``MIN_LIMIT_S`` is not
started, and a section still running at its limit gets SIGTERM, then SIGKILL ``KILL_AFTER_S`` later. The check thus
ends at most ``KILL_AFTER_S`` after the deadline, plus the summary's few seconds (:func:`worst_case_end_s`).
"""

from __future__ import annotations

from dataclasses import dataclass

BUDGET_ENV = "GPU_CHECK_BUDGET_S"
DEFAULT_BUDGET_S = 450
#: What the benchmark keeps: the sections before it end this long before the deadline.
BENCH_RESERVE_S = 150
#: A section that would get less than this is not started (reported as not run).
MIN_LIMIT_S = 15
#: A section still running at its limit gets SIGTERM, then SIGKILL this long after.
KILL_AFTER_S = 15
#: The benchmark's own --time-budget ends this long before its section's limit, so that it finishes its table.
BENCH_MARGIN_S = 30
#: Testing the check on a (slow) CPU machine: caps are multiplied by this, so that only the budget limits sections.
CPU_CAP_SCALE = 10


@dataclass(frozen=True)
class SectionSpec:
    """A section's own time limit (``cap_s``, multiplied by the budget's scale) and the time it leaves to what comes
    after it (``reserve_s``: its limit ends that long before the deadline)."""

    cap_s: int
    reserve_s: int


#: The sections in report order, with their caps and reserves.
SPECS: dict[str, SectionSpec] = {
    "build": SectionSpec(300, BENCH_RESERVE_S + 60),
    "tests": SectionSpec(240, BENCH_RESERVE_S),
    "memcheck": SectionSpec(180, BENCH_RESERVE_S),
    "racecheck": SectionSpec(150, BENCH_RESERVE_S),
    "train": SectionSpec(240, BENCH_RESERVE_S),
    "bench": SectionSpec(300, 0),
}


def parse_budget(value: str | None) -> int:
    """``GPU_CHECK_BUDGET_S`` as whole seconds (unset or empty: the default). Anything but a positive whole number is
    a ValueError naming the variable."""
    if value is None or value.strip() == "":
        return DEFAULT_BUDGET_S
    try:
        seconds = int(value.strip())
    except ValueError:
        seconds = 0
    if seconds <= 0:
        raise ValueError(
            f"{BUDGET_ENV}={value!r}: expected a positive whole number of seconds (default {DEFAULT_BUDGET_S})"
        )
    return seconds


@dataclass(frozen=True)
class Budget:
    """The budget of one check, in whole seconds of the wall clock: started at ``start``, ``total_s`` long."""

    start: int
    total_s: int
    cap_scale: int = 1

    @property
    def deadline(self) -> int:
        return self.start + self.total_s

    def limit(self, name: str, now: int) -> int:
        """The time limit of section ``name`` started at ``now``: its cap, or what is left before the deadline less its
        reserve if that is shorter (negative when the budget is spent)."""
        spec = SPECS[name]
        return min(spec.cap_s * self.cap_scale, self.deadline - now - spec.reserve_s)

    @staticmethod
    def runs(limit: int) -> bool:
        """Whether a section with this limit is started."""
        return limit >= MIN_LIMIT_S

    def bench_time_budget(self, now: int) -> int:
        """The benchmark's ``--time-budget``: what is left (at most its cap), less ``BENCH_MARGIN_S``."""
        left = min(self.deadline - now, SPECS["bench"].cap_s * self.cap_scale)
        return left - BENCH_MARGIN_S


def worst_case_end_s(total_s: int) -> int:
    """Seconds after the start by which the check has ended (before its summary) whatever its sections do."""
    return total_s + KILL_AFTER_S
