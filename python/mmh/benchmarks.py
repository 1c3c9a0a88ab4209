"""Benchmarks: ``mmh benchmark mmh`` — the main job.

On the built-in ``synthetic_motion`` task (RGB-D clips, low data) it trains, for every seed, the RGB-D teacher, the
RGB baseline, MMH-RAD and MMH-DAD students and evaluates the RAD+DAD ensemble (which reuses the two students);
on ``synthetic_antispoof`` it reports the ACER of teacher / baseline / RAD / DAD. Runs go through the ordinary
runner (configs under ``configs/<dataset>/<method>.yaml``), in ``workers`` processes of one thread each, phase by
phase (teachers and baselines, then the students that reuse the cached teachers, then the ensembles).

Writes ``OUT/results.json``::

    {"methods": {"teacher": {"accuracy": [..per seed..], "mean": .., "std": ..}, "baseline": ..., "rad": ...,
                 "dad": ..., "rad_dad": ...},
     "antispoof": {"methods": {"teacher": {"acer": [...], "mean": .., "std": .., "accuracy": [...],
                                           "iso": [{"apcer_iso/print": .., "apcer_iso/replay": .., "apcer_iso": ..,
                                                    "bpcer": .., "acer_iso": ..}, ..per seed..],
                                           "acer_iso_mean": .., "acer_iso_std": ..}, ...}},
     (``acer`` is the paper's pooled ACER; ``iso`` the ISO/IEC 30107-3 rates, APCER per attack species, the worst
     species' being the APCER — :mod:`mmh.evaluation`)
     "checks": {...}, "settings": {...}, "wall_time_s": ..., "machine": {...}}

``OUT/results.md`` (the table printed at the end) and ``OUT/comparison.png`` (the table as a figure). A line is printed
per finished run (runs done / total, elapsed, ETA).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .config import find_config, load_config
from .report import Progress, mean_std, plot_methods
from .utils.io import write_json

__all__ = ["benchmark_mmh", "MMH_METHODS", "ANTISPOOF_METHODS", "format_table", "Job", "run_job", "plot_mmh_results",
           "METHOD_LABELS", "antispoof_iso_metrics"]

#: Methods of the main job on synthetic_motion, and of the ACER column on synthetic_antispoof.
MMH_METHODS: tuple[str, ...] = ("teacher", "baseline", "rad", "dad", "rad_dad", "kd", "rad_attention", "rad_self")
ANTISPOOF_METHODS: tuple[str, ...] = ("teacher", "baseline", "rad", "dad")
#: What ``--quick`` changes (a smoke run of the same pipeline).
QUICK_OVERRIDES: tuple[str, ...] = ("train.steps=100",)
# kd, rad_attention (the paper's trained weighting) and rad_self are ablations printed beside the required rows: rad
# uses the configured weighting (none, selected on val), and these show what the other weightings and plain KD give.
_PHASES: tuple[tuple[str, ...], ...] = (("teacher", "baseline"), ("rad", "dad", "kd", "rad_attention", "rad_self"),
                                        ("rad_dad",))

Job = tuple[str, str, int, tuple[str, ...], str]  # dataset, method, seed, overrides, run dir

#: How the tables name a method (the paper's names for the RAD weightings).
METHOD_LABELS: dict[str, str] = {
    "rad": "rad (RAD, mean weighting: the paper's −IW ablation)",
    "rad_attention": "rad_attention (RAD with the paper's information weighting)",
    "rad_self": "rad_self (RAD, the reference code's parameter-free weighting)",
}


def run_job(job: Job) -> dict[str, Any]:
    """Worker of every benchmark: one run of the ordinary runner on ``configs/<dataset>/<method>.yaml`` (``dataset``
    ``"thesis"`` for the thesis configs), one thread, quiet; the result has ``wall_s`` added."""
    import torch

    from .runner import run_experiment

    torch.set_num_threads(1)
    dataset, method, seed, overrides, run_dir = job
    cfg = load_config(find_config(f"{dataset}/{method}"), [f"seed={seed}", *overrides])
    t0 = time.perf_counter()
    res = run_experiment(cfg, run_dir=run_dir, log=lambda _msg: None)
    res["wall_s"] = time.perf_counter() - t0
    return res


def _quick_overrides(quick: bool, steps: int | None) -> list[str]:
    over = ["train.progress=false"]
    if quick:
        over += list(QUICK_OVERRIDES)
    if steps is not None:
        over.append(f"train.steps={steps}")
    return over


def format_table(methods: dict[str, Any], antispoof: dict[str, Any] | None) -> str:
    """The main job's markdown table: accuracy mean ± std on synthetic_motion and ACER on synthetic_antispoof."""
    lines = ["| method | synthetic_motion accuracy (mean ± std) | per seed | synthetic_antispoof ACER, pooled (the "
             "paper's) | synthetic_antispoof ACER, ISO/IEC 30107-3 (worst attack species) |",
             "|---|---|---|---|---|"]
    for name, entry in methods.items():
        seeds = ", ".join(f"{a:.3f}" for a in entry["accuracy"])
        acer = iso = "—"
        if antispoof and name in antispoof:
            acer = f"{antispoof[name]['mean']:.4f} ± {antispoof[name]['std']:.4f}"
            if "acer_iso_mean" in antispoof[name]:
                iso = f"{antispoof[name]['acer_iso_mean']:.4f} ± {antispoof[name]['acer_iso_std']:.4f}"
        label = METHOD_LABELS.get(name, name)
        lines.append(f"| {label} | {entry['mean']:.4f} ± {entry['std']:.4f} | {seeds} | {acer} | {iso} |")
    return "\n".join(lines) + "\n"


def antispoof_iso_metrics(res: dict[str, Any], cfg: dict[str, Any]) -> dict[str, float]:
    """ISO/IEC 30107-3 rates of one anti-spoofing run's deployed network on its eval split: APCER per attack
    species (``apcer_iso/<species>``, from the dataset's ``attack_type``), ``apcer_iso`` (the worst species),
    ``bpcer``, ``acer_iso``; also the pooled ``apcer``/``acer`` (the same numbers as the run's own evaluation)."""
    from .data import build_dataset
    from .evaluation import pad_metrics, predict, species_of
    from .train.checkpoint import load_model
    from .data import eval_batches
    from .runner import load_split, split_kwargs, stage_model_path

    split = cfg["dataset"]["eval_split"]
    species = species_of(build_dataset(cfg["dataset"]["name"], split=split, **split_kwargs(cfg, split)))
    path = stage_model_path(res["run_dir"], res, list(res["stages"])[-1])
    logits, labels = predict(load_model(path), eval_batches(load_split(cfg, split), 256))
    return pad_metrics(logits, labels, species)


def _indexed_job(item: tuple[int, Job]) -> tuple[int, dict[str, Any]]:
    return item[0], run_job(item[1])


def plot_mmh_results(methods: dict[str, Any], antispoof: dict[str, Any] | None, path: str | Path) -> Path:
    """The main job's figure: synthetic_motion accuracy per method and, when present, synthetic_antispoof ACER
    (bars: mean ± std over seeds; dots: seeds)."""
    panels = {"synthetic_motion: accuracy": {m: e["accuracy"] for m, e in methods.items()}}
    ylabels = {"synthetic_motion: accuracy": "test accuracy"}
    if antispoof:
        panels["synthetic_antispoof: ACER (lower is better)"] = {m: e["acer"] for m, e in antispoof.items()}
        ylabels["synthetic_antispoof: ACER (lower is better)"] = "test ACER"
    return plot_methods(panels, path, ylabels=ylabels, title="main job: mean ± std over seeds, dots = seeds")


def _map(jobs: list[Job], pool: Any, progress: Progress | None = None) -> list[dict[str, Any]]:
    """``run_job`` over ``jobs`` (in ``pool`` when given), results in job order; ``progress.step`` per finished run."""
    out: list[dict[str, Any] | None] = [None] * len(jobs)
    done = (map(_indexed_job, enumerate(jobs)) if pool is None
            else pool.imap_unordered(_indexed_job, list(enumerate(jobs)), chunksize=1))
    for i, res in done:
        out[i] = res
        if progress is not None:
            progress.step(f"{jobs[i][0]}/{jobs[i][1]} s{jobs[i][2]}")
    return out  # type: ignore[return-value]


def benchmark_mmh(*, quick: bool = False, seeds: int = 3, out: str | Path = "runs/benchmark_mmh",
                  workers: int = 2, antispoof: bool = True, steps: int | None = None,
                  extra_overrides: Sequence[str] = (), log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the main job and write ``out/results.json``; returns its content.

    ``quick``: fewer steps and training clips (a smoke run, < 2 min). ``seeds``: seeds 0..seeds-1. ``workers``:
    parallel processes. ``steps``: override the number of training steps. ``extra_overrides``: more ``key=value``.
    """
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    t_start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    over = (*_quick_overrides(quick, steps), f"output.cache={out / 'cache'}", *extra_overrides)
    datasets = [("synthetic_motion", MMH_METHODS)] + ([("synthetic_antispoof", ANTISPOOF_METHODS)] if antispoof
                                                      else [])
    results: dict[tuple[str, str, int], dict[str, Any]] = {}
    # one pool for all phases: its workers keep the generated datasets in memory between runs
    pool = mp.get_context("spawn").Pool(workers) if workers > 1 else None
    phases = [[(ds, m, s, tuple(over), str(out / "runs" / ds / f"{m}-s{s}"))
               for ds, methods in datasets for m in phase if m in methods for s in range(seeds)] for phase in _PHASES]
    progress = Progress(sum(len(j) for j in phases), log)
    try:
        for phase, jobs in zip(_PHASES, phases, strict=True):
            t0 = time.perf_counter()
            for job, res in zip(jobs, _map(jobs, pool, progress)):
                results[job[:3]] = res
            log(f"phase {'+'.join(phase)}: {len(jobs)} runs in {time.perf_counter() - t0:.1f}s")
    finally:
        if pool is not None:
            pool.close()
            pool.join()

    def entry(ds: str, m: str, metric: str) -> dict[str, Any]:
        vals = [results[(ds, m, s)]["final"][metric] for s in range(seeds)]
        mean, std = mean_std(vals)
        return {metric: vals, "mean": mean, "std": std, "seeds": list(range(seeds))}

    methods = {m: entry("synthetic_motion", m, "accuracy") for m in MMH_METHODS}
    for m in MMH_METHODS:
        methods[m]["run_dirs"] = [results[("synthetic_motion", m, s)]["run_dir"] for s in range(seeds)]
    members = results[("synthetic_motion", "rad_dad", 0)]["final"]
    methods["rad_dad"]["oracle"] = [results[("synthetic_motion", "rad_dad", s)]["final"]["accuracy/oracle"]
                                    for s in range(seeds)] if "accuracy/oracle" in members else None
    anti = None
    if antispoof:
        anti = {m: {**entry("synthetic_antispoof", m, "acer"),
                    "accuracy": [results[("synthetic_antispoof", m, s)]["final"]["accuracy"] for s in range(seeds)]}
                for m in ANTISPOOF_METHODS}
        for m in ANTISPOOF_METHODS:
            cfgs = [load_config(find_config(f"synthetic_antispoof/{m}"), [f"seed={s}", *over]) for s in range(seeds)]
            iso = [antispoof_iso_metrics(results[("synthetic_antispoof", m, s)], cfgs[s]) for s in range(seeds)]
            anti[m]["iso"] = iso
            anti[m]["acer_iso_mean"], anti[m]["acer_iso_std"] = mean_std([r["acer_iso"] for r in iso])
    mean = {m: v["mean"] for m, v in methods.items()}
    checks = {"teacher > baseline": mean["teacher"] > mean["baseline"],
              "rad > baseline": mean["rad"] > mean["baseline"],
              "dad > baseline": mean["dad"] > mean["baseline"]}
    payload = {
        "methods": methods,
        "antispoof": {"methods": anti} if anti is not None else None,
        "checks": checks,
        "settings": {"quick": quick, "seeds": seeds, "workers": workers, "overrides": list(over)},
        "wall_time_s": round(time.perf_counter() - t_start, 1),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "python": platform.python_version()},
    }
    table = format_table(methods, anti)
    write_json(payload, out / "results.json")
    (out / "results.md").write_text(table + "\n" + "\n".join(f"- {k}: {'yes' if v else 'NO'}"
                                                              for k, v in checks.items()) + "\n")
    plot_mmh_results(methods, anti, out / "comparison.png")
    log(table)
    for k, v in checks.items():
        log(f"{k}: {'yes' if v else 'NO'}")
    log(f"plot: {out / 'comparison.png'}")
    log(f"wall time {payload['wall_time_s']:.1f}s; results in {out / 'results.json'}")
    return payload
