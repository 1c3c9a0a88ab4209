"""What both benchmarks share: the job type, its worker (one ordinary run), the worker pool that runs the jobs phase
by phase, and the progress line printed per finished run (runs done / total, elapsed, ETA).
"""

from __future__ import annotations

import math
import multiprocessing as mp
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple

from ..config import find_config, load_config

__all__ = ["Job", "run_job", "map_jobs", "job_pool", "run_phases", "format_duration", "format_progress", "Progress"]


class Job(NamedTuple):
    """One ordinary run: ``configs/<dataset>/<method>.yaml`` (dataset ``"thesis"`` for the thesis configs) with
    ``seed=<seed>`` and ``overrides``, written to ``run_dir``. A plain 5-tuple in this order works too."""

    dataset: str
    method: str
    seed: int
    overrides: tuple[str, ...]
    run_dir: str


def run_job(job: Job | tuple[str, str, int, Sequence[str], str]) -> dict[str, Any]:
    """Worker of every benchmark: one run of the ordinary runner on ``configs/<dataset>/<method>.yaml``, one
    thread, quiet; the result has ``wall_s`` added."""
    import torch

    from ..runner import run_experiment

    torch.set_num_threads(1)
    dataset, method, seed, overrides, run_dir = job
    cfg = load_config(find_config(f"{dataset}/{method}"), [f"seed={seed}", *overrides])
    t0 = time.perf_counter()
    res = run_experiment(cfg, run_dir=run_dir, log=lambda _msg: None, overwrite=True)  # a benchmark owns its runs
    res["wall_s"] = time.perf_counter() - t0
    return res


def _indexed_job(item: tuple[int, Job]) -> tuple[int, dict[str, Any]]:
    return item[0], run_job(item[1])


def map_jobs(jobs: Sequence[Job], pool: Any, progress: Progress | None = None) -> list[dict[str, Any]]:
    """``run_job`` over ``jobs`` (in ``pool`` when given), results in job order; ``progress.step`` per finished run."""
    out: list[dict[str, Any] | None] = [None] * len(jobs)
    done = (
        map(_indexed_job, enumerate(jobs))
        if pool is None
        else pool.imap_unordered(_indexed_job, list(enumerate(jobs)), chunksize=1)
    )
    for i, res in done:
        out[i] = res
        if progress is not None:
            progress.step(f"{jobs[i][0]}/{jobs[i][1]} s{jobs[i][2]}")
    return out  # type: ignore[return-value]


@contextmanager
def job_pool(workers: int) -> Iterator[Any]:
    """One pool of ``workers`` spawned processes for every phase (its workers keep the generated datasets in memory
    between runs); None — the jobs run in this process — when ``workers <= 1``."""
    pool = mp.get_context("spawn").Pool(workers) if workers > 1 else None
    try:
        yield pool
    finally:
        if pool is not None:
            pool.close()
            pool.join()


def run_phases(
    phases: Sequence[tuple[tuple[str, ...], Sequence[Job]]], workers: int, log: Callable[[str], None] = print
) -> dict[tuple[str, str, int], dict[str, Any]]:
    """Run ``(phase name, jobs)`` one phase after the other (a phase's jobs in parallel; later phases reuse the
    stages earlier ones cached); ``{(dataset, method, seed): result}``. Logs a line per run and per phase."""
    results: dict[tuple[str, str, int], dict[str, Any]] = {}
    with job_pool(workers) as pool:
        progress = Progress(sum(len(jobs) for _name, jobs in phases), log)
        for name, jobs in phases:
            t0 = time.perf_counter()
            for job, res in zip(jobs, map_jobs(jobs, pool, progress), strict=True):
                results[(job[0], job[1], job[2])] = res
            log(f"phase {'+'.join(name)}: {len(jobs)} runs in {time.perf_counter() - t0:.1f}s")
    return results


def format_duration(seconds: float) -> str:
    """``12s``, ``4m05s``, ``1h02m03s`` (``?`` for an unknown / infinite duration)."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    s = int(round(max(0.0, seconds)))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    if h:
        return f"{h}h{m:02d}m{sec:02d}s"
    return f"{m}m{sec:02d}s" if m else f"{sec}s"


def format_progress(done: int, total: int, elapsed_s: float, what: str = "") -> str:
    """``[ 5/24 runs] rad s1 done; elapsed 1m02s, ETA 3m56s``: the ETA assumes the remaining runs take, on
    average, what the finished ones took (``elapsed / done * (total - done)``; parallel workers included)."""
    if total < 1 or not 0 <= done <= total:
        raise ValueError(f"format_progress: need 0 <= done <= total and total >= 1, got {done}/{total}")
    eta = elapsed_s / done * (total - done) if done else math.inf
    width = len(str(total))
    head = f"[{done:>{width}}/{total} runs]"
    return f"{head} {what + ' done; ' if what else ''}elapsed {format_duration(elapsed_s)}, ETA {format_duration(eta)}"


class Progress:
    """Counts finished runs and logs :func:`format_progress` lines: ``step(what)`` after each run."""

    def __init__(
        self, total: int, log: Callable[[str], None] = print, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        if total < 1:
            raise ValueError(f"Progress: total must be >= 1, got {total}")
        self.total, self.done, self.log, self.clock = int(total), 0, log, clock
        self.t0 = clock()

    def step(self, what: str = "") -> str:
        self.done += 1
        line = format_progress(self.done, self.total, self.clock() - self.t0, what)
        self.log(line)
        sys.stdout.flush()  # visible at once also when stdout is a file or a pipe (block-buffered)
        return line
