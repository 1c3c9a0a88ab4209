"""Reports: run directories -> a markdown table (mean ± std over seeds) and PNG plots (matplotlib, Agg).

``make_report(run_dirs, out)`` writes ``out/report.md``, ``out/curves.png`` (training loss and accuracy per
epoch of every trained stage, with the validation metric where the run has a val split) and ``out/comparison.png``
(final accuracy per method: mean ± std over seeds with error bars, each seed a dot; one panel per dataset).
The benchmarks draw their figures with :func:`plot_methods` and :func:`plot_sweep`, and report progress with
:class:`Progress` (one line per finished run: runs done / total, elapsed, ETA).
"""

from __future__ import annotations

import csv
import math
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .utils.io import read_json

__all__ = ["collect_runs", "summarize", "markdown_table", "mean_std", "plot_curves", "plot_comparison",
           "plot_methods", "plot_sweep", "make_report", "format_duration", "format_progress", "Progress",
           "seed_values"]


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


def _save(fig, path: str | Path, *, dpi: int) -> Path:
    """Write ``fig`` to ``path`` (its folder created) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    _pyplot().close(fig)
    return path


def plot_curves(runs: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Training loss and train accuracy per epoch for every trained stage of every run; where the stage was
    validated (``val_accuracy`` in its ``metrics.csv``: the run has a val split), the val accuracy too (dashed, same
    colour, a marker per validation)."""
    plt = _pyplot()
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(12, 4.5))
    has_val = False
    for run in runs:
        r = run["results"]
        for stage, rows in run["curves"].items():
            if not rows:
                continue
            label = f"{r['method']}/{stage} s{r['seed']}"
            steps = [row["step"] for row in rows]
            ax_loss.plot(steps, [row.get("loss", math.nan) for row in rows], label=label)
            (line,) = ax_acc.plot(steps, [row.get("train_accuracy", math.nan) for row in rows], label=f"{label} train")
            val = [(row["step"], row["val_accuracy"]) for row in rows if "val_accuracy" in row]
            if val:
                has_val = True
                ax_acc.plot(*zip(*val), linestyle="--", marker="o", markersize=3, color=line.get_color(),
                            label=f"{label} val")
    ax_loss.set(xlabel="step", ylabel="training loss (sum of weighted terms)", title="training loss")
    ax_acc.set(xlabel="step", ylabel="accuracy", title="train (solid) and val (dashed) accuracy" if has_val
               else "train accuracy (no val split)")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        if 0 < len(ax.lines) <= 16:
            ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return _save(fig, path, dpi=110)


def plot_comparison(summary: Mapping[tuple[str, str], Mapping[str, tuple[float, float, int]]], path: str | Path,
                    metric: str = "accuracy", values: Mapping[tuple[str, str], Sequence[float]] | None = None
                    ) -> Path:
    """``metric`` per method, one panel per dataset: mean ± std over seeds (tick + error bar) and, when ``values``
    gives the per-seed numbers ``{(dataset, method): [...]}``, each seed as a dot."""
    datasets = list(dict.fromkeys(d for (d, _m), v in summary.items() if metric in v))
    panels = {d: {m: (list(values[(d, m)]) if values and (d, m) in values else [v[metric][0]])
                  for (dd, m), v in summary.items() if dd == d and metric in v} for d in datasets}
    errs = {d: {m: summary[(d, m)][metric][1] for m in panels[d]} for d in datasets}
    return plot_methods(panels, path, ylabel=f"{metric} (mean ± std over seeds)",
                        title=f"method comparison: {metric}", std=errs)


def plot_methods(panels: Mapping[str, Mapping[str, Sequence[float]]], path: str | Path, *, ylabel: str = "accuracy",
                 title: str = "", std: Mapping[str, Mapping[str, float]] | None = None,
                 ylabels: Mapping[str, str] | None = None) -> Path:
    """One panel per key of ``panels`` (``{panel title: {method: [value per seed]}}``): each method's mean (a wide
    tick) with the standard deviation over seeds as error bar, each seed a dot; method names as rotated tick labels.
    ``std`` overrides the error bars (``{panel: {method: std}}``); ``ylabels`` the y label of a panel."""
    plt = _pyplot()
    panels = {k: v for k, v in panels.items() if v}
    if not panels:
        raise ValueError("plot_methods: nothing to plot")
    widths = [max(3.0, 0.55 * len(v) + 1.2) for v in panels.values()]
    fig, axes = plt.subplots(1, len(panels), figsize=(sum(widths) + 0.8, 4.6), squeeze=False,
                             gridspec_kw={"width_ratios": widths})
    for ax, (name, methods) in zip(axes[0], panels.items(), strict=True):
        labels = list(methods)
        means, stds = [], []
        for m in labels:
            mean, sd = mean_std(methods[m])
            means.append(mean)
            stds.append(std[name][m] if std and name in std and m in std[name] else sd)
        x = list(range(len(labels)))
        # the mean as a wide tick with the std as error bar (no bars: the axis does not start at 0)
        ax.errorbar(x, means, yerr=stds, fmt="_", markersize=24, markeredgewidth=2.5, capsize=6, elinewidth=1.4,
                    color="tab:blue", zorder=2, label="mean ± std")
        for i, m in enumerate(labels):
            vals = list(methods[m])
            offs = [0.0] if len(vals) == 1 else [-0.18 + 0.36 * j / (len(vals) - 1) for j in range(len(vals))]
            ax.scatter([i + o for o in offs], vals, s=16, color="black", zorder=3,
                       label="one seed" if i == 0 else None)
        ax.set_xlim(-0.6, len(labels) - 0.4)
        ax.set_xticks(x, labels, rotation=35, ha="right", rotation_mode="anchor", fontsize=9)
        lo = min(min(v) for v in methods.values())
        hi = max(max(v) for v in methods.values())
        lo, hi = min(lo, min(mu - s for mu, s in zip(means, stds))), max(hi, max(mu + s for mu, s in zip(means, stds)))
        pad = max(0.02, 0.08 * (hi - lo))
        ax.set_ylim(lo - pad, hi + pad)
        ax.set_title(name, fontsize=10)
        ax.set_ylabel((ylabels or {}).get(name, ylabel))
        ax.grid(axis="y", alpha=0.3, zorder=0)
    axes[0][0].legend(fontsize=8, loc="best")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path, dpi=120)


def plot_sweep(curves: Mapping[str, Mapping[str, Sequence[float]]], path: str | Path, *,
               xlabel: str = "σ² of the multiplicative noise on depth", ylabel: str = "accuracy",
               title: str = "noisy depth at test time") -> Path:
    """``{label: {level: [value per seed]}}``: one line per label through the means over seeds, the standard
    deviation as error bars, each seed a dot; the levels are categories (e.g. σ² 0 ... 10, "void")."""
    plt = _pyplot()
    if not curves:
        raise ValueError("plot_sweep: no curves")
    fig, ax = plt.subplots(figsize=(8, 4.6))
    n = len(curves)
    for k, (label, curve) in enumerate(curves.items()):
        levels = list(curve)
        x = [i + (k - (n - 1) / 2) * 0.06 for i in range(len(levels))]  # small offsets keep the markers apart
        ms = [mean_std(curve[g]) for g in levels]
        bar = ax.errorbar(x, [m for m, _ in ms], yerr=[s for _, s in ms], marker="o", capsize=3, label=label)
        for xi, g in zip(x, levels, strict=True):
            ax.scatter([xi] * len(curve[g]), list(curve[g]), s=9, color=bar[0].get_color(), alpha=0.5)
        ax.set_xticks(range(len(levels)), [str(g) for g in levels])
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return _save(fig, path, dpi=120)


def seed_values(runs: Sequence[Mapping[str, Any]], metric: str = "accuracy") -> dict[tuple[str, str], list[float]]:
    """``{(dataset, method): [final metric per run]}`` (the per-seed dots of :func:`plot_comparison`)."""
    out: dict[tuple[str, str], list[float]] = defaultdict(list)
    for run in runs:
        r = run["results"]
        if metric in r["final"]:
            out[(r["dataset"], r["method"])].append(float(r["final"][metric]))
    return dict(out)


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

    def __init__(self, total: int, log: Callable[[str], None] = print,
                 clock: Callable[[], float] = time.perf_counter) -> None:
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
