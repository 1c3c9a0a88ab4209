"""Reports: run directories -> a markdown table (mean ± std over seeds) and PNG plots (:mod:`.plots`).

``make_report(run_dirs, out)`` writes ``out/report.md`` (the table, the runs and their reproduction records:
:func:`record_table`), ``out/curves.png`` (training loss and accuracy per
epoch of every trained stage, with the validation metric where the run has a val split) and ``out/comparison.png``
(final accuracy per method: mean ± std over seeds with error bars, each seed a dot; one panel per dataset).
Means and standard deviations over seeds: :func:`mmh.evaluation.metrics.mean_std`.

A run folder may come from someone else, so its files are checked before use (:func:`read_results`,
:func:`read_metrics_csv`): a ``results.json`` that is not a finished run's record, a stage name that is not a plain
name (stage names become read paths, ``stages/<name>/metrics.csv``) or a ``metrics.csv`` cell that is not a number
is a ValueError naming the file and the problem.
"""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..utils.io import read_json
from .metrics import mean_std
from .plots import COST_PHASES, cost_rows, plot_comparison, plot_cost, plot_curves

__all__ = [
    "read_results",
    "read_metrics_csv",
    "collect_runs",
    "final_values",
    "summarize",
    "seed_values",
    "markdown_table",
    "record_table",
    "make_report",
]


#: Stage names a run may record: the runner's stage-name rule, so that ``stages/<name>/`` stays inside the run.
STAGE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def read_results(run_dir: str | Path) -> dict[str, Any]:
    """``run_dir/results.json`` of a finished run, checked: a mapping with ``status`` ``"done"``, ``method`` and
    ``dataset`` names, an integer ``seed``, a ``final`` mapping of metric -> number and a non-empty ``stages``
    mapping whose names are plain names (``[A-Za-z0-9_][A-Za-z0-9_.-]*``) and entries mappings.

    FileNotFoundError when there is no ``results.json``; ValueError naming the file and the problem otherwise."""
    d = Path(run_dir)
    p = d / "results.json"
    if not p.is_file():
        raise FileNotFoundError(f"{d} is not a run directory (no results.json)")
    try:
        res = read_json(p)
    except UnicodeDecodeError as exc:
        raise ValueError(f"corrupt JSON file {p}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if not isinstance(res, dict):
        raise ValueError(f"{p} is not a run's results file: it holds a JSON {type(res).__name__}, not a mapping")
    if res.get("status") != "done":
        raise ValueError(f"run {d} did not finish ({p}: status {res.get('status')!r:.100}); resume it first")
    stages = res.get("stages")
    if not isinstance(stages, dict) or not stages:
        raise ValueError(f"{p} is not a run's results file: it needs a non-empty 'stages' mapping")
    for name, record in stages.items():
        if not STAGE_NAME.fullmatch(name) or not isinstance(record, dict):
            raise ValueError(
                f"{p}: malformed stage entry {name!r:.100} (names are [A-Za-z0-9_.-], entries are mappings)"
            )
    for key in ("method", "dataset"):
        if not isinstance(res.get(key), str) or not res[key]:
            raise ValueError(f"{p}: {key!r} must be a non-empty string, got {res.get(key)!r:.100}")
    if not isinstance(res.get("seed"), int) or isinstance(res["seed"], bool):
        raise ValueError(f"{p}: 'seed' must be an integer, got {res.get('seed')!r:.100}")
    final = res.get("final")
    if not isinstance(final, dict):
        raise ValueError(f"{p}: 'final' must be a mapping of metric -> number, got {final!r:.100}")
    for metric, value in final.items():
        if not _is_number(value):
            raise ValueError(f"{p}: final metric {metric!r:.100} is not a number: {value!r:.100}")
    return res


def read_metrics_csv(path: str | Path) -> list[dict[str, float]]:
    """The rows of a stage's ``metrics.csv`` as ``{column: value}`` (empty cells left out), checked: a ``step``
    value in every row, every cell a number. ValueError naming the file, the line and the column otherwise."""
    path = Path(path)
    rows: list[dict[str, float]] = []
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            for row in reader:
                if None in row:
                    raise ValueError(f"{path}: line {reader.line_num} has more cells than the header")
                values = {}
                for column, cell in row.items():
                    if cell in ("", None):
                        continue
                    try:
                        values[column] = float(cell)
                    except ValueError:
                        raise ValueError(
                            f"{path}: line {reader.line_num}, column {column!r:.100}: {cell!r:.100} is not a number"
                        ) from None
                if "step" not in values:  # the curves' x axis
                    raise ValueError(f"{path}: line {reader.line_num} has no 'step' value")
                rows.append(values)
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except csv.Error as exc:
        raise ValueError(f"{path}: not a CSV file ({exc})") from None
    return rows


def collect_runs(run_dirs: Sequence[str | Path]) -> list[dict[str, Any]]:
    """Read ``results.json`` (:func:`read_results`) and each stage's ``metrics.csv`` (:func:`read_metrics_csv`) of
    every run directory.

    A directory that is not a finished run is a FileNotFoundError naming it; a malformed file a ValueError naming it.
    """
    runs = []
    for d in run_dirs:
        d = Path(d)
        res = read_results(d)
        curves = {}
        for stage in res["stages"]:
            csv_path = d / "stages" / stage / "metrics.csv"
            if csv_path.is_file():
                curves[stage] = read_metrics_csv(csv_path)
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


def _cell(value: Any) -> str:
    return "—" if value is None else str(value).replace("|", "\\|")


def record_table(runs: Sequence[Mapping[str, Any]]) -> str:
    """The reproduction record of every run (``results.json``'s ``record``, :func:`mmh.runner.reproduction_record`)
    as a markdown table — versions, commit, device, threads, batch, seeds, deterministic flags, command — and, per
    trained stage validated on a val split, the val metric of the last validation and the best one (with its step)
    and which of the two was deployed. A run written before runs kept a record shows ``—``."""
    lines = [
        "| run | mmh | git commit (dirty) | torch / CUDA / cuDNN | device | threads / workers / world size "
        "| batch | seeds | deterministic (algorithms / cuDNN / benchmark) | command |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    val_lines = []
    for run in runs:
        res = run["results"]
        rec = res.get("record") if isinstance(res.get("record"), dict) else {}
        git = rec.get("git") if isinstance(rec.get("git"), dict) else {}
        det = rec.get("deterministic") if isinstance(rec.get("deterministic"), dict) else {}
        commit = git.get("commit")
        if commit is not None and git.get("dirty") is not None:
            commit = f"{commit} ({'dirty' if git['dirty'] else 'clean'})"
        versions = " / ".join(_cell(rec.get(k)) for k in ("torch", "cuda", "cudnn")) if rec else "—"
        threads = " / ".join(_cell(rec.get(k)) for k in ("threads", "data_workers", "world_size")) if rec else "—"
        flags = " / ".join(_cell(v) for v in det.values()) if det else "—"
        device = f"{_cell(rec.get('device'))}: {_cell(rec.get('device_name'))}" if rec else "—"
        command = f"`{_cell(rec.get('command'))}`" if rec.get("command") else "—"
        lines.append(
            f"| `{run['dir']}` | {_cell(rec.get('mmh'))} | {_cell(commit)} | {versions} | {device} | {threads} "
            f"| {_cell(rec.get('batch_size'))} | {_cell(rec.get('seeds'))} | {flags} | {command} |"
        )
        for stage, entry in res["stages"].items():
            val = entry.get("val") if isinstance(entry, dict) else None
            if isinstance(val, dict) and isinstance(val.get("best"), dict):
                best = val["best"]
                last = ", ".join(f"{k} {v:.4f}" for k, v in (val.get("last") or {}).items() if _is_number(v))
                best_txt = (
                    f"{best.get('metric')} {best['value']:.4f} at step {best.get('step')}"
                    if _is_number(best.get("value"))
                    else "—"
                )
                val_lines.append(
                    f"| `{run['dir']}` | {stage} | {last or '—'} (step {_cell(val.get('last_step'))}) | {best_txt} "
                    f"| {_cell(val.get('deployed'))} |"
                )
    text = "\n".join(lines) + "\n"
    if val_lines:
        text += "\n| run | stage | val, last validation | val, best | deployed |\n|---|---|---|---|---|\n"
        text += "\n".join(val_lines) + "\n"
    return text


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
    text += ["", "## Reproduction record", "", record_table(runs)]
    text += ["", "![training curves](curves.png)", "", "![method comparison](comparison.png)", ""]
    paths = {"report": out / "report.md", "curves": curves, "comparison": comparison}
    cost = plot_cost(runs, out / "cost.png")  # metrics.csv's samples_per_s and phase times (mmh.train.timing)
    if cost is not None:
        text += ["## Training cost", "", cost_table(runs), "", "![training cost](cost.png)", ""]
        paths["cost"] = cost
    (out / "report.md").write_text("\n".join(text))
    return paths


def cost_table(runs: Sequence[Mapping[str, Any]]) -> str:
    """Per stage: samples/s and the mean ms per step of each phase (means over the epochs of ``metrics.csv``)."""
    head = "| stage | samples/s | teacher ms | forward ms | loss ms | backward ms | optimizer ms |"
    lines = [head, "|---|---|---|---|---|---|---|"]
    for name, c in cost_rows(runs).items():
        phases = " | ".join(f"{c[k]:.1f}" for k in COST_PHASES)
        lines.append(f"| {name} | {c['samples_per_s']:.1f} | {phases} |")
    return "\n".join(lines)
