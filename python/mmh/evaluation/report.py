"""Reports: run directories -> a markdown table (mean ± std over seeds) and PNG plots (:mod:`.plots`).

``make_report(run_dirs, out)`` writes ``out/report.md``, ``out/curves.png`` (training loss and accuracy per
epoch of every trained stage, with the validation metric where the run has a val split) and ``out/comparison.png``
(final accuracy per method: mean ± std over seeds with error bars, each seed a dot; one panel per dataset).
Means and standard deviations over seeds: :func:`mmh.evaluation.metrics.mean_std`.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..utils.io import read_json
from .metrics import mean_std
from .plots import plot_comparison, plot_curves

__all__ = ["collect_runs", "final_values", "summarize", "seed_values", "markdown_table", "make_report"]


def _read_csv(path: Path) -> list[dict[str, float]]:
    with open(path, newline="") as fh:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(fh)]


def collect_runs(run_dirs: Sequence[str | Path]) -> list[dict[str, Any]]:
    """Read ``results.json`` and each stage's ``metrics.csv`` of every run directory.

    A directory that is not a finished run is a FileNotFoundError naming it.
    """
    runs = []
    for d in run_dirs:
        d = Path(d)
        res = read_json(d / "results.json") if (d / "results.json").is_file() else None
        if res is None:
            raise FileNotFoundError(f"{d} is not a run directory (no results.json)")
        if res.get("status") != "done":
            raise ValueError(f"run {d} did not finish (status {res.get('status')!r}); resume it first")
        curves = {}
        for stage in res["stages"]:
            csv_path = d / "stages" / stage / "metrics.csv"
            if csv_path.is_file():
                curves[stage] = _read_csv(csv_path)
        runs.append({"dir": str(d), "results": res, "curves": curves})
    return runs


def final_values(runs: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], dict[str, list[float]]]:
    """``{(dataset, method): {metric: [final value per run]}}``: the runs' final metrics grouped over seeds."""
    groups: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        r = run["results"]
        for metric, value in r["final"].items():
            groups[(r["dataset"], r["method"])][metric].append(float(value))
    return {g: dict(metrics) for g, metrics in groups.items()}


def summarize(runs: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], dict[str, tuple[float, float, int]]]:
    """``{(dataset, method): {metric: (mean, std, n_seeds)}}`` over the runs' final metrics."""
    return {g: {m: (*mean_std(v), len(v)) for m, v in metrics.items()} for g, metrics in final_values(runs).items()}


def seed_values(runs: Sequence[Mapping[str, Any]], metric: str = "accuracy") -> dict[tuple[str, str], list[float]]:
    """``{(dataset, method): [final metric per run]}`` (the per-seed dots of
    :func:`mmh.evaluation.plots.plot_comparison`)."""
    return {g: metrics[metric] for g, metrics in final_values(runs).items() if metric in metrics}


def markdown_table(
    summary: Mapping[tuple[str, str], Mapping[str, tuple[float, float, int]]], metrics: Sequence[str] | None = None
) -> str:
    """A markdown table: one row per (dataset, method), one column per metric (mean ± std, n seeds)."""
    if metrics is None:
        metrics = sorted({m for v in summary.values() for m in v if "/" not in m})
    lines = ["| dataset | method | seeds | " + " | ".join(metrics) + " |", "|---|---|---|" + "---|" * len(metrics)]
    for (dataset, method), vals in summary.items():
        n = max((v[2] for v in vals.values()), default=0)
        cells = [f"{vals[m][0]:.4f} ± {vals[m][1]:.4f}" if m in vals else "—" for m in metrics]
        lines.append(f"| {dataset} | {method} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def make_report(run_dirs: Sequence[str | Path], out: str | Path) -> dict[str, Path]:
    """Write ``report.md``, ``curves.png`` and ``comparison.png`` in ``out``; return their paths."""
    if not run_dirs:
        raise ValueError("make_report: no run directories given")
    runs = collect_runs(run_dirs)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(runs)
    curves = plot_curves(runs, out / "curves.png")
    comparison = plot_comparison(summary, out / "comparison.png", values=seed_values(runs))
    text = ["# mmh report", "", markdown_table(summary), "", "Runs:", ""]
    text += [f"- `{run['dir']}` ({run['results']['method']}, seed {run['results']['seed']})" for run in runs]
    text += ["", "![training curves](curves.png)", "", "![method comparison](comparison.png)", ""]
    (out / "report.md").write_text("\n".join(text))
    return {"report": out / "report.md", "curves": curves, "comparison": comparison}
