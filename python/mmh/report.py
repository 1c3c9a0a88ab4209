"""Reports: run directories -> a markdown table (mean ± std over seeds) and PNG plots (matplotlib, Agg).

``make_report(run_dirs, out)`` writes ``out/report.md``, ``out/curves.png`` (training loss and accuracy per
epoch of every trained stage) and ``out/comparison.png`` (final accuracy per method, mean ± std over seeds).
"""

from __future__ import annotations

import csv
import math
import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .utils.io import read_json

__all__ = ["collect_runs", "summarize", "markdown_table", "mean_std", "plot_curves", "plot_comparison",
           "make_report"]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value); ValueError on an empty list."""
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("mean_std of an empty list")
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


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


def summarize(runs: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], dict[str, tuple[float, float, int]]]:
    """``{(dataset, method): {metric: (mean, std, n_seeds)}}`` over the runs' final metrics."""
    groups: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        r = run["results"]
        for metric, value in r["final"].items():
            groups[(r["dataset"], r["method"])][metric].append(value)
    return {g: {m: (*mean_std(v), len(v)) for m, v in metrics.items()} for g, metrics in groups.items()}


def markdown_table(summary: Mapping[tuple[str, str], Mapping[str, tuple[float, float, int]]],
                   metrics: Sequence[str] | None = None) -> str:
    """A markdown table: one row per (dataset, method), one column per metric (mean ± std, n seeds)."""
    if metrics is None:
        metrics = sorted({m for v in summary.values() for m in v if "/" not in m})
    lines = ["| dataset | method | seeds | " + " | ".join(metrics) + " |",
             "|---|---|---|" + "---|" * len(metrics)]
    for (dataset, method), vals in summary.items():
        n = max((v[2] for v in vals.values()), default=0)
        cells = [f"{vals[m][0]:.4f} ± {vals[m][1]:.4f}" if m in vals else "—" for m in metrics]
        lines.append(f"| {dataset} | {method} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(runs: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Training loss and train accuracy per epoch for every trained stage of every run."""
    plt = _pyplot()
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for run in runs:
        r = run["results"]
        for stage, rows in run["curves"].items():
            if not rows:
                continue
            label = f"{r['method']}/{stage} s{r['seed']}"
            steps = [row["step"] for row in rows]
            ax_loss.plot(steps, [row.get("loss", math.nan) for row in rows], label=label)
            ax_acc.plot(steps, [row.get("train_accuracy", math.nan) for row in rows], label=label)
    ax_loss.set(xlabel="step", ylabel="training loss (sum of weighted terms)", title="training loss")
    ax_acc.set(xlabel="step", ylabel="train accuracy", title="training accuracy")
    if len(ax_loss.lines) <= 12:
        ax_loss.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_comparison(summary: Mapping[tuple[str, str], Mapping[str, tuple[float, float, int]]], path: str | Path,
                    metric: str = "accuracy") -> Path:
    """Bar chart of ``metric`` (mean ± std over seeds) per (dataset, method)."""
    plt = _pyplot()
    items = [(f"{m}\n{d}", v[metric]) for (d, m), v in summary.items() if metric in v]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(items)), 4))
    if items:
        names, vals = zip(*items)
        ax.bar(range(len(items)), [v[0] for v in vals], yerr=[v[1] for v in vals], capsize=4, color="tab:blue")
        ax.set_xticks(range(len(items)), names, fontsize=8)
        lo = min(v[0] - v[1] for v in vals)
        ax.set_ylim(max(0.0, lo - 0.05), min(1.0, max(v[0] + v[1] for v in vals) + 0.03))
    ax.set(ylabel=f"{metric} (mean ± std over seeds)", title=f"method comparison: {metric}")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def make_report(run_dirs: Sequence[str | Path], out: str | Path) -> dict[str, Path]:
    """Write ``report.md``, ``curves.png`` and ``comparison.png`` in ``out``; return their paths."""
    if not run_dirs:
        raise ValueError("make_report: no run directories given")
    runs = collect_runs(run_dirs)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(runs)
    curves = plot_curves(runs, out / "curves.png")
    comparison = plot_comparison(summary, out / "comparison.png")
    text = ["# mmh report", "", markdown_table(summary), "", "Runs:", ""]
    text += [f"- `{run['dir']}` ({run['results']['method']}, seed {run['results']['seed']})" for run in runs]
    text += ["", "![training curves](curves.png)", "", "![method comparison](comparison.png)", ""]
    (out / "report.md").write_text("\n".join(text))
    return {"report": out / "report.md", "curves": curves, "comparison": comparison}
