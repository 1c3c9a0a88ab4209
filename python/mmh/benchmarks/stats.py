"""Paired comparisons over seeds: the statistics behind every "X beats Y" of the benchmarks.

Every method of a benchmark is run on the same seeds as its reference (seed ``s`` of both shares the data order and
the teacher), so the per-seed differences are paired. :func:`paired_comparison` gives their mean, the 95 % t interval
of that mean and the two-sided paired t-test's p-value, all from :func:`scipy.stats.ttest_rel` (and its
``confidence_interval``) — no hand-written distributions. :func:`verdict` turns one comparison into the words the
tables use: "yes" / "no, worse" only when the interval excludes 0, otherwise "not significant (p = ...)".

For a metric where lower is better (ACER) the difference is still ``method − reference``: a negative ``diff`` is an
improvement, and the record says so (``"better": "lower"``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = ["paired_comparison", "verdict", "format_comparison"]


def _finite(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def paired_comparison(
    values: Sequence[float], reference: Sequence[float], *, vs: str, better: str = "higher", confidence: float = 0.95
) -> dict[str, Any]:
    """``{"vs", "diff", "ci95", "p", "n", "better"}`` of ``values`` against ``reference``, paired by position (seed).

    ``diff``: the mean of ``values[i] − reference[i]``; ``ci95``: ``[lo, hi]``, the t interval of that mean at
    ``confidence``; ``p``: the two-sided paired t-test (``scipy.stats.ttest_rel``). With one pair, or pairs whose
    differences are all equal, the test is undefined: ``ci95`` and ``p`` are None (never NaN in a JSON file).
    ``better``: ``"higher"`` (accuracy) or ``"lower"`` (ACER), recorded for :func:`verdict`."""
    from scipy import stats

    if better not in ("higher", "lower"):
        raise ValueError(f"paired_comparison: better must be 'higher' or 'lower', got {better!r}")
    a, b = [float(v) for v in values], [float(v) for v in reference]
    if len(a) != len(b):
        raise ValueError(f"paired_comparison: {len(a)} values against {len(b)} reference values (vs {vs!r})")
    if not a:
        raise ValueError(f"paired_comparison: no values (vs {vs!r})")
    if not all(math.isfinite(v) for v in a + b):
        raise ValueError(f"paired_comparison: non-finite values (vs {vs!r}): {a} against {b}")
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    out: dict[str, Any] = {"vs": vs, "diff": sum(diffs) / len(diffs), "ci95": None, "p": None, "n": len(a)}
    out["better"] = better
    if len(a) >= 2 and max(diffs) > min(diffs):
        res = stats.ttest_rel(a, b)
        ci = res.confidence_interval(confidence)
        lo, hi = _finite(ci.low), _finite(ci.high)
        out["ci95"] = [lo, hi] if lo is not None and hi is not None else None
        out["p"] = _finite(res.pvalue)
    return out


def verdict(comp: dict[str, Any]) -> str:
    """ "yes" (the interval excludes 0 on the better side), "no, worse" (it excludes 0 on the other side), or
    "not significant (p = ...)" — or "untested (...)" when there is no interval (one seed, or no spread)."""
    if comp.get("ci95") is None:
        if comp["n"] < 2:
            return f"untested (n = {comp['n']})"
        return f"untested (every seed differs by {100 * comp['diff']:+.1f} points: no spread)"
    lo, hi = comp["ci95"]
    lower = comp.get("better", "higher") == "lower"
    if lo > 0 or hi < 0:
        improved = (hi < 0) if lower else (lo > 0)
        return "yes" if improved else "no, worse"
    return f"not significant (p = {comp['p']:.2f})"


def format_comparison(comp: dict[str, Any], scale: float = 100.0, unit: str = " points") -> str:
    """``+1.7 points [−0.5, +3.9], p = 0.17, n = 5`` (differences × ``scale``; ACER in points of percent too)."""
    diff = f"{scale * comp['diff']:+.1f}{unit}"
    if comp.get("ci95") is None:
        return f"{diff}, n = {comp['n']}"
    lo, hi = comp["ci95"]
    return f"{diff} [{scale * lo:+.1f}, {scale * hi:+.1f}], p = {comp['p']:.2g}, n = {comp['n']}"
