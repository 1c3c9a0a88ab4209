"""PNG figures (matplotlib, Agg): training curves, methods compared over seeds, and sweeps over levels.

:func:`plot_methods` (mean ± std over seeds, each seed a dot; one panel per dataset or table) and :func:`plot_sweep`
(one line per model over categorical levels, e.g. the σ² of the noise sweep) draw the benchmarks' figures;
:func:`plot_curves` and :func:`plot_comparison` those of ``mmh report``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .metrics import mean_std

__all__ = ["plot_curves", "plot_comparison", "plot_methods", "plot_sweep"]


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
                ax_acc.plot(
                    *zip(*val), linestyle="--", marker="o", markersize=3, color=line.get_color(), label=f"{label} val"
                )
    ax_loss.set(xlabel="step", ylabel="training loss (sum of weighted terms)", title="training loss")
    ax_acc.set(
        xlabel="step",
        ylabel="accuracy",
        title="train (solid) and val (dashed) accuracy" if has_val else "train accuracy (no val split)",
    )
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        if 0 < len(ax.lines) <= 16:
            ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return _save(fig, path, dpi=110)


#: The per-phase columns of ``metrics.csv`` (mmh.train.timing.PHASES without step_ms), stacked in :func:`plot_cost`.
COST_PHASES = ("teacher_ms", "forward_ms", "loss_ms", "backward_ms", "optimizer_ms")


def cost_rows(runs: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """``{"<method>/<stage> s<seed>": {phase: mean ms per step, "samples_per_s": mean}}`` over the epochs of every
    stage whose ``metrics.csv`` has the cost columns (older runs have none: left out)."""
    out: dict[str, dict[str, float]] = {}
    for run in runs:
        r = run["results"]
        for stage, rows in run["curves"].items():
            rows = [row for row in rows if "samples_per_s" in row]
            if rows:
                keys = (*COST_PHASES, "samples_per_s")
                out[f"{r['method']}/{stage} s{r['seed']}"] = {
                    k: sum(row.get(k, 0.0) for row in rows) / len(rows) for k in keys
                }
    return out


def plot_cost(runs: Sequence[Mapping[str, Any]], path: str | Path) -> Path | None:
    """Where the training time went: per stage, the mean time per step of each phase (stacked bars: teacher forward,
    student forward, loss, backward, optimizer) and the samples/s of every epoch. None (nothing drawn) when no
    stage has the cost columns."""
    cost = cost_rows(runs)
    if not cost:
        return None
    plt = _pyplot()
    fig, (ax_split, ax_rate) = plt.subplots(1, 2, figsize=(12, 0.8 + 0.45 * max(len(cost), 4)))
    names = list(cost)
    left = [0.0] * len(names)
    for phase in COST_PHASES:
        vals = [cost[n][phase] for n in names]
        ax_split.barh(names, vals, left=left, label=phase.removesuffix("_ms"))
        left = [a + b for a, b in zip(left, vals)]
    ax_split.invert_yaxis()
    ax_split.set(xlabel="ms per training step (mean over epochs)", title="where a step's time goes")
    ax_split.legend(fontsize=7, ncols=5, loc="lower center", bbox_to_anchor=(0.5, 1.06))
    for run in runs:
        r = run["results"]
        for stage, rows in run["curves"].items():
            pts = [(row["step"], row["samples_per_s"]) for row in rows if "samples_per_s" in row]
            if pts:
                ax_rate.plot(*zip(*pts), marker="o", markersize=3, label=f"{r['method']}/{stage} s{r['seed']}")
    ax_rate.set(xlabel="step", ylabel="samples/s", title="training throughput per epoch")
    ax_rate.grid(alpha=0.3)
    if 0 < len(ax_rate.lines) <= 16:
        ax_rate.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return _save(fig, path, dpi=110)


def plot_comparison(
    summary: Mapping[tuple[str, str], Mapping[str, tuple[float, float, int]]],
    path: str | Path,
    metric: str = "accuracy",
    values: Mapping[tuple[str, str], Sequence[float]] | None = None,
) -> Path:
    """``metric`` per method, one panel per dataset: mean ± std over seeds (tick + error bar) and, when ``values``
    gives the per-seed numbers ``{(dataset, method): [...]}``, each seed as a dot."""
    datasets = list(dict.fromkeys(d for (d, _m), v in summary.items() if metric in v))
    panels = {
        d: {
            m: (list(values[(d, m)]) if values and (d, m) in values else [v[metric][0]])
            for (dd, m), v in summary.items()
            if dd == d and metric in v
        }
        for d in datasets
    }
    errs = {d: {m: summary[(d, m)][metric][1] for m in panels[d]} for d in datasets}
    return plot_methods(
        panels, path, ylabel=f"{metric} (mean ± std over seeds)", title=f"method comparison: {metric}", std=errs
    )


def _method_panel(ax: Any, methods: Mapping[str, Sequence[float]], std: Mapping[str, float]) -> None:
    """One panel of :func:`plot_methods`: each method's mean as a wide tick with the std (``std[method]`` when
    given) as error bar, each seed a dot beside it, rotated method names, y limits around everything drawn."""
    labels = list(methods)
    means, stds = [], []
    for m in labels:
        mean, sd = mean_std(methods[m])
        means.append(mean)
        stds.append(std[m] if m in std else sd)
    x = list(range(len(labels)))
    # the mean as a wide tick with the std as error bar (no bars: the axis does not start at 0)
    ax.errorbar(
        x,
        means,
        yerr=stds,
        fmt="_",
        markersize=24,
        markeredgewidth=2.5,
        capsize=6,
        elinewidth=1.4,
        color="tab:blue",
        zorder=2,
        label="mean ± std",
    )
    for i, m in enumerate(labels):
        vals = list(methods[m])
        offs = [0.0] if len(vals) == 1 else [-0.18 + 0.36 * j / (len(vals) - 1) for j in range(len(vals))]
        ax.scatter([i + o for o in offs], vals, s=16, color="black", zorder=3, label="one seed" if i == 0 else None)
    ax.set_xlim(-0.6, len(labels) - 0.4)
    ax.set_xticks(x, labels, rotation=35, ha="right", rotation_mode="anchor", fontsize=9)
    lo = min(min(v) for v in methods.values())
    hi = max(max(v) for v in methods.values())
    lo, hi = min(lo, min(mu - s for mu, s in zip(means, stds))), max(hi, max(mu + s for mu, s in zip(means, stds)))
    pad = max(0.02, 0.08 * (hi - lo))
    ax.set_ylim(lo - pad, hi + pad)


def _difference_panel(ax: Any, comps: Mapping[str, Mapping[str, Any]], scale: float = 100.0) -> None:
    """One panel of paired differences (× ``scale``, points): each method's mean difference as a dot with its 95 %
    t interval as asymmetric error bar (none where the interval is undefined), a line at 0; dots whose interval
    excludes 0 are filled, the others hollow."""
    labels = list(comps)
    for i, m in enumerate(labels):
        c = comps[m]
        d = scale * c["diff"]
        ci = c.get("ci95")
        decided = ci is not None and (ci[0] > 0 or ci[1] < 0)
        yerr = [[d - scale * ci[0]], [scale * ci[1] - d]] if ci is not None else None
        ax.errorbar(
            [i],
            [d],
            yerr=yerr,
            fmt="o",
            capsize=5,
            color="tab:red" if decided else "tab:gray",
            markerfacecolor="tab:red" if decided else "white",
            zorder=3,
        )
    ax.axhline(0.0, color="black", linewidth=0.8, zorder=1)
    ax.set_xlim(-0.6, len(labels) - 0.4)
    ax.set_xticks(range(len(labels)), labels, rotation=35, ha="right", rotation_mode="anchor", fontsize=9)
    ax.set_ylabel("difference (points), 95 % t interval")


def plot_methods(
    panels: Mapping[str, Mapping[str, Sequence[float]]],
    path: str | Path,
    *,
    ylabel: str = "accuracy",
    title: str = "",
    std: Mapping[str, Mapping[str, float]] | None = None,
    ylabels: Mapping[str, str] | None = None,
    differences: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None,
) -> Path:
    """One panel per key of ``panels`` (``{panel title: {method: [value per seed]}}``): each method's mean (a wide
    tick) with the standard deviation over seeds as error bar, each seed a dot; method names as rotated tick labels.
    ``std`` overrides the error bars (``{panel: {method: std}}``); ``ylabels`` the y label of a panel.
    ``differences``: more panels, ``{panel title: {method: comparison}}`` with the paired comparisons of
    :func:`mmh.benchmarks.stats.paired_comparison` — each method's mean difference with its 95 % interval, a line
    at 0 (:func:`_difference_panel`)."""
    plt = _pyplot()
    panels = {k: v for k, v in panels.items() if v}
    diffs = {k: v for k, v in (differences or {}).items() if v}
    if not panels and not diffs:
        raise ValueError("plot_methods: nothing to plot")
    widths = [max(3.0, 0.55 * len(v) + 1.2) for v in [*panels.values(), *diffs.values()]]
    fig, axes = plt.subplots(
        1,
        len(panels) + len(diffs),
        figsize=(sum(widths) + 0.8, 4.6),
        squeeze=False,
        gridspec_kw={"width_ratios": widths},
    )
    for ax, (name, methods) in zip(axes[0], panels.items()):
        _method_panel(ax, methods, (std or {}).get(name, {}))
        ax.set_title(name, fontsize=10)
        ax.set_ylabel((ylabels or {}).get(name, ylabel))
        ax.grid(axis="y", alpha=0.3, zorder=0)
    for ax, (name, comps) in zip(axes[0][len(panels) :], diffs.items(), strict=True):
        _difference_panel(ax, comps)
        ax.set_title(name, fontsize=10)
        ax.grid(axis="y", alpha=0.3, zorder=0)
    axes[0][0].legend(fontsize=8, loc="best")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path, dpi=120)


def plot_sweep(
    curves: Mapping[str, Mapping[str, Sequence[float]]],
    path: str | Path,
    *,
    xlabel: str = "σ² of the multiplicative noise on depth",
    ylabel: str = "accuracy",
    title: str = "noisy depth at test time",
) -> Path:
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
