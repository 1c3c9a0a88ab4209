"""Benchmarks: ``mmh benchmark mmh`` (the main job) and ``mmh benchmark thesis``.

================================  =====================================================================================
:mod:`mmh.benchmarks.jobs`        the job type, its worker (one ordinary run), the worker pool running the jobs phase
                                  by phase, the per-run progress line
:mod:`mmh.benchmarks.main_job`    the main job: MMH's methods, their ablations and controls on synthetic_motion
                                  (accuracy) and synthetic_antispoof (pooled and ISO/IEC 30107-3 ACER)
:mod:`mmh.benchmarks.thesis`      the thesis methods on synthetic_motion: the tables of its chapters, noise sweep,
                                  ADMD's switch signal
:mod:`mmh.benchmarks.stats`       paired comparisons over seeds: mean difference, 95 % t interval, paired t-test
                                  (scipy), and the verdict a claim gets from them
:mod:`mmh.benchmarks.tables`      the README's and docs' result tables, generated from docs/results/*.json
                                  (``python -m mmh.benchmarks.tables [--check]``)
================================  =====================================================================================

They sit above everything else: the runner trains, :mod:`mmh.evaluation` evaluates and draws.
"""

from __future__ import annotations

from .main_job import benchmark_mmh
from .thesis import run_thesis_benchmark

__all__ = ["benchmark_mmh", "run_thesis_benchmark"]
