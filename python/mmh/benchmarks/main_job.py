"""Benchmarks: ``mmh benchmark mmh`` — the main job.

On the built-in ``synthetic_motion`` task (RGB-D clips, low data) it trains, for every seed, the RGB-D teacher, the
RGB baseline, MMH-RAD and MMH-DAD students and the ablations (Hinton KD, RAD with one global region, RAD's other
weightings), evaluates the RAD+DAD ensemble (which reuses the two students) and its control, an ensemble of two
baselines (``baseline_ensemble``: for seed ``s`` of ``n``, the baselines of seeds ``s`` and ``s + n``, logits
averaged); on ``synthetic_antispoof`` it reports the ACER of teacher / baseline / RAD / DAD / KD / RAD+DAD and the
baseline ensemble. Runs go through the ordinary runner (configs under ``configs/<dataset>/<method>.yaml``), in
``workers`` processes of one thread each, phase by phase (the teachers, with the baseline ensemble's extra baselines
after them; then the students that reuse the cached teachers; then the RAD+DAD ensembles), the longest runs first.

The baseline ensemble's members are disjoint: the second baselines (seeds ``n .. 2n − 1``, on both datasets) are
trained for it alone, so no baseline serves two ensembles, the ``n`` ensemble values are independent of each other,
and ensemble ``s`` pairs with every other method's seed ``s`` (whose baseline it contains). Those extra seeds enter
no other row: the baseline's own statistics and every paired comparison use seeds ``0 .. n − 1`` only. (Pairing
seed ``s``'s baseline with seed ``s + 1 mod n``'s would reuse each baseline in two ensembles — dependent values a
paired t-test treats as independent — and with two seeds give the same ensemble twice.)

Every method is compared with the baseline seed by seed (:mod:`mmh.benchmarks.stats`: paired t-test and t interval,
scipy). Writes ``OUT/results.json``::

    {"methods": {"teacher": {"accuracy": [..per seed..], "mean": .., "std": ..}, "baseline": ..., "rad": ...,
                 "dad": ..., "rad_dad": ..., "baseline_ensemble": {..., "members": [[0, n], [1, n + 1], ...],
                 "run_dirs": [[.., ..], ...]}, ...},
     "comparisons": {"rad": {"vs": "baseline", "diff": .., "ci95": [lo, hi], "p": .., "n": .., "better": "higher"},
                     ...every method but the baseline},
     "controls": {"rad_dad vs baseline_ensemble": {...}, "rad vs kd": {...}, "rad vs rad_global": {...}, ...},
     "antispoof": {"methods": {"teacher": {"acer": [...], "mean": .., "std": .., "accuracy": [...],
                                           "iso": [{"apcer_iso/print": .., "apcer_iso/replay": .., "apcer_iso": ..,
                                                    "bpcer": .., "acer_iso": ..}, ..per seed..],
                                           "acer_iso_mean": .., "acer_iso_std": ..}, ...},
                   "comparisons": {... pooled ACER, "better": "lower"}, "comparisons_iso": {...},
                   "controls": {...}},
     (``acer`` is the paper's pooled ACER; ``iso`` the ISO/IEC 30107-3 rates, APCER per attack species, the worst
     species' being the APCER — :mod:`mmh.evaluation.metrics`)
     "checks": {"rad > baseline": "yes" | "no, worse" | "not significant (p = ..)", ...},
     "settings": {..., "ensemble_baseline_seeds": [n, .., 2n - 1]}, "wall_time_s": ..,
     "record": {...the reproduction record...}}

(``record``: :func:`mmh.runner.reproduction_record` — versions, git commit, device, threads, worker processes,
seeds, command line; each run's own ``results.json`` has its record too.) ``OUT/results.md`` (the table, the paired
differences and the checks, as printed at the end) and ``OUT/comparison.png`` (the table as a figure, with the
differences to the baseline and their 95 % intervals). A line is printed per finished run (runs done / total,
elapsed, ETA).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..evaluation.metrics import mean_std
from ..evaluation.plots import plot_methods
from ..utils.io import write_json
from .jobs import Job, run_phases
from .stats import format_comparison, paired_comparison, verdict

__all__ = [
    "benchmark_mmh",
    "MMH_METHODS",
    "ANTISPOOF_METHODS",
    "CONTROLS",
    "DEFAULT_SEEDS",
    "format_table",
    "format_comparisons",
    "plot_mmh_results",
    "METHOD_LABELS",
    "antispoof_iso_metrics",
    "baseline_ensemble_metrics",
    "baseline_ensemble_members",
    "main_job_comparisons",
]

#: Trained methods of the main job on synthetic_motion, and on synthetic_antispoof (``baseline_ensemble`` is added
#: to both after training: an evaluation of two baselines, seed ``s``'s and the extra seed ``s + n``'s).
MMH_METHODS: tuple[str, ...] = (
    "teacher",
    "baseline",
    "rad",
    "dad",
    "rad_dad",
    "kd",
    "rad_global",
    "rad_attention",
    "rad_self",
)
ANTISPOOF_METHODS: tuple[str, ...] = ("teacher", "baseline", "rad", "dad", "rad_dad", "kd")
#: The seeds ``mmh benchmark mmh`` runs by default: enough for a paired t-test to decide differences of ~2 points.
DEFAULT_SEEDS = 5
#: What ``--quick`` changes (a smoke run of the same pipeline).
QUICK_OVERRIDES: tuple[str, ...] = ("train.steps=100",)
# kd, rad_global (RAD with one global region: logit KD at RAD's T and alpha), rad_attention (the paper's trained
# weighting) and rad_self are ablations printed beside the required rows: rad uses the configured weighting (none,
# selected on val), and these show what plain KD, one region and the other weightings give. The teachers come first
# (every student reuses its seed's cached teacher) with the baseline ensemble's extra baselines after them (they need
# no teacher and fill the phase's tail), then every student, then the RAD+DAD ensembles (cached students).
_PHASES: tuple[tuple[str, ...], ...] = (
    ("teacher",),
    ("baseline", "rad", "dad", "kd", "rad_global", "rad_attention", "rad_self"),
    ("rad_dad",),
)
#: Paired contrasts beside "method vs baseline": (method, reference) — the controls the claims rest on.
CONTROLS: tuple[tuple[str, str], ...] = (
    ("rad_dad", "baseline_ensemble"),
    ("rad", "kd"),
    ("rad", "rad_global"),
    ("rad_attention", "rad"),
)

#: The table's row order: each ensemble beside its control, then the ablations.
_ROW_ORDER: tuple[str, ...] = (
    "teacher",
    "baseline",
    "rad",
    "dad",
    "rad_dad",
    "baseline_ensemble",
    "kd",
    "rad_global",
    "rad_attention",
    "rad_self",
)
#: How the tables name a method (the paper's names for the RAD weightings).
METHOD_LABELS: dict[str, str] = {
    "rad": "rad (RAD, mean weighting: the paper's −IW ablation)",
    "rad_global": "rad_global (RAD with one global region: KD at RAD's T and α)",
    "rad_attention": "rad_attention (RAD with the paper's information weighting)",
    "rad_self": "rad_self (RAD, the reference code's parameter-free weighting)",
    "baseline_ensemble": "baseline_ensemble (two seeds' baselines, logits averaged)",
}

Results = dict[tuple[str, str, int], dict[str, Any]]  # (dataset, method, seed) -> the run's results.json


def _quick_overrides(quick: bool, steps: int | None) -> list[str]:
    over = ["train.progress=false"]
    if quick:
        over += list(QUICK_OVERRIDES)
    if steps is not None:
        over.append(f"train.steps={steps}")
    return over


def _diff_cell(comp: Mapping[str, Any] | None) -> str:
    """``+1.7 [−0.5, +3.9], p 0.17`` (points), ``—`` without a comparison."""
    if comp is None:
        return "—"
    if comp.get("ci95") is None:
        return f"{100 * comp['diff']:+.1f} (n = {comp['n']})"
    lo, hi = comp["ci95"]
    return f"{100 * comp['diff']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}], p {comp['p']:.2g}"


def format_table(
    methods: Mapping[str, Any],
    antispoof: Mapping[str, Any] | None,
    comparisons: Mapping[str, Any] | None = None,
    antispoof_comparisons: Mapping[str, Any] | None = None,
) -> str:
    """The main job's markdown table: synthetic_motion accuracy (mean ± std, per seed, the paired difference to the
    baseline in points with its 95 % t interval and p) and synthetic_antispoof ACER (pooled, ISO/IEC 30107-3, and the
    pooled ACER's paired difference to the baseline: negative is better)."""
    lines = [
        "| method | synthetic_motion accuracy (mean ± std) | per seed | vs baseline: Δ points [95 % CI], p "
        "| synthetic_antispoof ACER, pooled (the paper's) | synthetic_antispoof ACER, ISO/IEC 30107-3 (worst attack "
        "species) | pooled ACER vs baseline: Δ points [95 % CI], p (lower is better) |",
        "|---|---|---|---|---|---|---|",
    ]
    names = list(methods) + [m for m in (antispoof or {}) if m not in methods]
    names.sort(key=lambda m: _ROW_ORDER.index(m) if m in _ROW_ORDER else len(_ROW_ORDER))  # the control beside RAD+DAD
    for name in names:
        entry = methods.get(name)
        acc = f"{entry['mean']:.4f} ± {entry['std']:.4f}" if entry else "—"
        seeds = ", ".join(f"{a:.3f}" for a in entry["accuracy"]) if entry else "—"
        acer = iso = "—"
        if antispoof and name in antispoof:
            acer = f"{antispoof[name]['mean']:.4f} ± {antispoof[name]['std']:.4f}"
            if "acer_iso_mean" in antispoof[name]:
                iso = f"{antispoof[name]['acer_iso_mean']:.4f} ± {antispoof[name]['acer_iso_std']:.4f}"
        d_acc = _diff_cell((comparisons or {}).get(name)) if entry else "—"
        d_acer = _diff_cell((antispoof_comparisons or {}).get(name)) if acer != "—" else "—"
        label = METHOD_LABELS.get(name, name)
        lines.append(f"| {label} | {acc} | {seeds} | {d_acc} | {acer} | {iso} | {d_acer} |")
    return "\n".join(lines) + "\n"


def format_comparisons(title: str, comps: Mapping[str, Mapping[str, Any]], unit: str = "points") -> str:
    """One line per comparison: ``- rad vs baseline: +1.7 points [...], p = .., n = 5 — not significant (p = ..)``."""
    lines = [f"{title}:", ""]
    for name, c in comps.items():
        who = name if " vs " in name else f"{name} vs {c['vs']}"
        lower = " (lower is better)" if c.get("better") == "lower" else ""
        lines.append(f"- {who}{lower}: {format_comparison(c, unit=' ' + unit)} — {verdict(c)}")
    return "\n".join(lines) + "\n"


def antispoof_iso_metrics(res: Mapping[str, Any]) -> dict[str, float]:
    """ISO/IEC 30107-3 rates of one anti-spoofing run's deployed network on its eval split, as the run's saved
    ``config.yaml`` defines it: APCER per attack species (``apcer_iso/<species>``, from the dataset's
    ``attack_type``), ``apcer_iso`` (the worst species), ``bpcer``, ``acer_iso``; also the pooled ``apcer``/``acer``
    (the same numbers as the run's own evaluation)."""
    from ..runner import stage_model_path
    from ..train.checkpoint import load_model

    path = stage_model_path(res["run_dir"], res, list(res["stages"])[-1])
    return _iso_of(res["run_dir"], load_model(path))


def _iso_of(run_dir: str | Path, model: Any) -> dict[str, float]:
    """:func:`mmh.evaluation.pad_metrics` of ``model`` on the eval split of the run in ``run_dir``."""
    from ..config import load_run_config
    from ..data import build_dataset
    from ..evaluation import eval_batches, pad_metrics, predict, species_of
    from ..runner import load_split, split_kwargs

    cfg = load_run_config(run_dir)
    split = cfg["dataset"]["eval_split"]
    species = species_of(build_dataset(cfg["dataset"]["name"], split=split, **split_kwargs(cfg, split)))
    logits, labels = predict(model, eval_batches(load_split(cfg, split), 256))
    return pad_metrics(logits, labels, species)


def baseline_ensemble_metrics(res_a: Mapping[str, Any], res_b: Mapping[str, Any], iso: bool = False) -> dict[str, Any]:
    """The control of the RAD+DAD ensemble: the logits of two finished baseline runs (two seeds) averaged
    (:class:`mmh.models.LogitEnsemble`), evaluated on the eval split of ``res_a``'s run with its configured metrics
    (plus the members' and the oracle's accuracy); ``iso``: also the ISO/IEC 30107-3 rates (``"iso"``)."""
    from ..config import load_run_config
    from ..evaluation import evaluate_model
    from ..models import LogitEnsemble
    from ..runner import load_split, stage_model_path
    from ..train.checkpoint import load_model

    nets = {}
    for res in (res_a, res_b):
        nets[f"s{res['seed']}"] = load_model(stage_model_path(res["run_dir"], res, list(res["stages"])[-1]))
    if len(nets) != 2:
        raise ValueError(f"baseline_ensemble_metrics: two different seeds needed, got seed {res_a['seed']} twice")
    model = LogitEnsemble(nets).eval()
    cfg = load_run_config(res_a["run_dir"])
    eval_set = load_split(cfg, cfg["dataset"]["eval_split"])
    out: dict[str, Any] = evaluate_model(model, eval_set, list(cfg["eval"]["metrics"]), int(cfg["eval"]["batch_size"]))
    if iso:
        out["iso"] = _iso_of(res_a["run_dir"], model)
    return out


def _plot_panels(
    methods: Mapping[str, Any], antispoof: Mapping[str, Any] | None
) -> tuple[dict[str, dict[str, list[float]]], dict[str, str]]:
    panels = {"synthetic_motion: accuracy": {m: e["accuracy"] for m, e in methods.items()}}
    ylabels = {"synthetic_motion: accuracy": "test accuracy"}
    if antispoof:
        panels["synthetic_antispoof: ACER (lower is better)"] = {m: e["acer"] for m, e in antispoof.items()}
        ylabels["synthetic_antispoof: ACER (lower is better)"] = "test ACER"
    return panels, ylabels


def plot_mmh_results(
    methods: Mapping[str, Any],
    antispoof: Mapping[str, Any] | None,
    path: str | Path,
    comparisons: Mapping[str, Any] | None = None,
    antispoof_comparisons: Mapping[str, Any] | None = None,
) -> Path:
    """The main job's figure: synthetic_motion accuracy per method and, when present, synthetic_antispoof ACER
    (mean ± std over seeds, dots = seeds); with ``comparisons``, a panel per dataset of the paired differences to the
    baseline with their 95 % t intervals (a line at 0)."""
    panels, ylabels = _plot_panels(methods, antispoof)
    diffs = {}
    if comparisons:
        diffs["synthetic_motion: Δ accuracy vs baseline"] = dict(comparisons)
    if antispoof_comparisons:
        diffs["synthetic_antispoof: Δ ACER vs baseline (< 0: better)"] = dict(antispoof_comparisons)
    return plot_methods(
        panels,
        path,
        ylabels=ylabels,
        title="main job: mean ± std over seeds, dots = seeds; paired differences with 95 % t intervals",
        differences=diffs or None,
    )


def baseline_ensemble_members(seeds: int) -> list[list[int]]:
    """The baseline seeds of each ``baseline_ensemble`` value: ``[s, s + seeds]`` for ``s`` in ``0 .. seeds − 1``.
    Disjoint, so that the ``seeds`` ensemble values are independent; the first member is the baseline that every
    other method's seed ``s`` is paired with."""
    return [[s, s + seeds] for s in range(seeds)]


def _phases(out: Path, over: Sequence[str], seeds: int, antispoof: bool) -> list[tuple[tuple[str, ...], list[Job]]]:
    """The jobs of each phase: every (dataset, method of the phase, seed); run folders ``out/runs/<dataset>/``. The
    anti-spoofing runs (400 steps against 150) come first in each phase so that no long run is left for the end. The
    first phase also trains the baseline ensemble's extra baselines (seeds ``seeds .. 2 seeds − 1``, after the
    teachers: they need none)."""
    datasets = ([("synthetic_antispoof", ANTISPOOF_METHODS)] if antispoof else []) + [("synthetic_motion", MMH_METHODS)]

    def job(ds: str, m: str, s: int) -> Job:
        return Job(ds, m, s, tuple(over), str(out / "runs" / ds / f"{m}-s{s}"))

    phases = [
        (phase, [job(ds, m, s) for ds, methods in datasets for m in phase if m in methods for s in range(seeds)])
        for phase in _PHASES
    ]
    extra = [job(ds, "baseline", second) for ds, _ in datasets for _, second in baseline_ensemble_members(seeds)]
    phases[0] = ((*phases[0][0], "baseline_ensemble members"), phases[0][1] + extra)
    return phases


def _entry(results: Results, seeds: int, ds: str, m: str, metric: str) -> dict[str, Any]:
    """``{metric: [per seed], "mean", "std", "seeds"}`` of method ``m`` on dataset ``ds``."""
    vals = [results[(ds, m, s)]["final"][metric] for s in range(seeds)]
    mean, std = mean_std(vals)
    return {metric: vals, "mean": mean, "std": std, "seeds": list(range(seeds))}


def _ensembles(results: Results, seeds: int, ds: str, iso: bool) -> list[dict[str, Any]]:
    """``baseline_ensemble`` of seed ``s``: the baselines of seeds ``s`` and ``s + seeds``
    (:func:`baseline_ensemble_members`), each baseline in one ensemble only."""
    return [
        baseline_ensemble_metrics(results[(ds, "baseline", a)], results[(ds, "baseline", b)], iso=iso)
        for a, b in baseline_ensemble_members(seeds)
    ]


def _ensemble_entry(
    results: Results, ds: str, metrics: list[dict[str, Any]], metric: str, seeds: int
) -> dict[str, Any]:
    vals = [float(e[metric]) for e in metrics]
    mean, std = mean_std(vals)
    members = baseline_ensemble_members(seeds)
    return {
        metric: vals,
        "mean": mean,
        "std": std,
        "seeds": list(range(seeds)),
        "members": members,
        "run_dirs": [[results[(ds, "baseline", s)]["run_dir"] for s in pair] for pair in members],
    }


def _motion_entries(results: Results, seeds: int) -> dict[str, Any]:
    """synthetic_motion accuracy per method (with the run folders; RAD+DAD with its oracle), and the baseline
    ensemble."""
    methods = {m: _entry(results, seeds, "synthetic_motion", m, "accuracy") for m in MMH_METHODS}
    for m in MMH_METHODS:
        methods[m]["run_dirs"] = [results[("synthetic_motion", m, s)]["run_dir"] for s in range(seeds)]
    members = results[("synthetic_motion", "rad_dad", 0)]["final"]
    methods["rad_dad"]["oracle"] = (
        [results[("synthetic_motion", "rad_dad", s)]["final"]["accuracy/oracle"] for s in range(seeds)]
        if "accuracy/oracle" in members
        else None
    )
    ens = _ensembles(results, seeds, "synthetic_motion", iso=False)
    methods["baseline_ensemble"] = _ensemble_entry(results, "synthetic_motion", ens, "accuracy", seeds)
    methods["baseline_ensemble"]["oracle"] = [e.get("accuracy/oracle") for e in ens]
    return methods


def _antispoof_entries(results: Results, seeds: int) -> dict[str, Any]:
    """synthetic_antispoof pooled ACER and accuracy per method, the ISO/IEC 30107-3 rates of each run, and the
    baseline ensemble."""
    anti = {
        m: {
            **_entry(results, seeds, "synthetic_antispoof", m, "acer"),
            "accuracy": [results[("synthetic_antispoof", m, s)]["final"]["accuracy"] for s in range(seeds)],
            "iso": [antispoof_iso_metrics(results[("synthetic_antispoof", m, s)]) for s in range(seeds)],
        }
        for m in ANTISPOOF_METHODS
    }
    ens = _ensembles(results, seeds, "synthetic_antispoof", iso=True)
    anti["baseline_ensemble"] = {
        **_ensemble_entry(results, "synthetic_antispoof", ens, "acer", seeds),
        "accuracy": [float(e["accuracy"]) for e in ens],
        "iso": [e["iso"] for e in ens],
    }
    for entry in anti.values():
        entry["acer_iso_mean"], entry["acer_iso_std"] = mean_std([r["acer_iso"] for r in entry["iso"]])
    return anti


def _compare(
    methods: Mapping[str, Any],
    metric: str,
    better: str,
    values: Callable[[Mapping[str, Any]], list[float]] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every method against the baseline, and the :data:`CONTROLS` present, paired by seed."""
    get = values or (lambda e: e[metric])
    comps = {
        m: paired_comparison(get(e), get(methods["baseline"]), vs="baseline", better=better)
        for m, e in methods.items()
        if m != "baseline"
    }
    controls = {
        f"{m} vs {ref}": paired_comparison(get(methods[m]), get(methods[ref]), vs=ref, better=better)
        for m, ref in CONTROLS
        if m in methods and ref in methods
    }
    return comps, controls


def main_job_comparisons(payload: Mapping[str, Any]) -> dict[str, Any]:
    """The paired comparisons of a main job's ``results.json`` content (what :func:`benchmark_mmh` adds to it):
    ``comparisons`` / ``controls`` on synthetic_motion accuracy and, with anti-spoofing, on pooled ACER
    (``antispoof.comparisons`` / ``antispoof.controls``) and ISO ACER (``antispoof.comparisons_iso``)."""
    out: dict[str, Any] = {}
    out["comparisons"], out["controls"] = _compare(payload["methods"], "accuracy", "higher")
    anti = (payload.get("antispoof") or {}).get("methods")
    if anti:
        comps, controls = _compare(anti, "acer", "lower")
        iso, _ = _compare(anti, "acer_iso", "lower", values=lambda e: [r["acer_iso"] for r in e["iso"]])
        out["antispoof"] = {"comparisons": comps, "controls": controls, "comparisons_iso": iso}
    return out


def _checks(comparisons: Mapping[str, Any], controls: Mapping[str, Any]) -> dict[str, str]:
    """The main job's claims, each "yes" only when its 95 % interval excludes 0 (:func:`verdict`)."""
    checks = {f"{m} > baseline": verdict(comparisons[m]) for m in ("teacher", "rad", "dad", "rad_dad", "kd")}
    for name, c in controls.items():
        checks[name.replace(" vs ", " > ")] = verdict(c)
    return checks


def _write(payload: dict[str, Any], out: Path, log: Callable[[str], None]) -> None:
    """``out/results.json``, ``out/results.md`` (the table, the paired differences and the checks) and
    ``out/comparison.png``; logs them."""
    methods, checks = payload["methods"], payload["checks"]
    anti_block = payload["antispoof"] or {}
    anti = anti_block.get("methods")
    table = format_table(methods, anti, payload["comparisons"], anti_block.get("comparisons"))
    text = [table, format_comparisons("synthetic_motion accuracy, paired by seed", payload["controls"])]
    if anti:
        text.append(format_comparisons("synthetic_antispoof pooled ACER vs baseline", anti_block["comparisons"]))
        text.append(format_comparisons("synthetic_antispoof pooled ACER, controls", anti_block["controls"]))
    text.append("\n".join(f"- {k}: {v}" for k, v in checks.items()) + "\n")
    write_json(payload, out / "results.json")
    (out / "results.md").write_text("\n".join(text))
    plot_mmh_results(methods, anti, out / "comparison.png", payload["comparisons"], anti_block.get("comparisons"))
    log("\n".join(text))
    log(f"plot: {out / 'comparison.png'}")
    log(f"wall time {payload['wall_time_s']:.1f}s; results in {out / 'results.json'}")


def _load_average() -> list[float] | None:
    """The machine's 1 / 5 / 15-minute load averages (None where the OS has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def benchmark_mmh(
    *,
    quick: bool = False,
    seeds: int = DEFAULT_SEEDS,
    out: str | Path = "runs/benchmark_mmh",
    workers: int = 2,
    antispoof: bool = True,
    steps: int | None = None,
    extra_overrides: Sequence[str] = (),
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the main job and write ``out/results.json``; returns its content.

    ``quick``: fewer steps (a smoke run). ``seeds``: seeds 0..seeds-1 (the paired tests need two or more); the
    baseline ensemble also trains the baselines of seeds seeds..2 seeds-1, which enter no other row. ``workers``:
    parallel processes. ``steps``: override the number of training steps. ``extra_overrides``: more ``key=value``.
    """
    from ..runner import reproduction_record

    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds must be an integer >= 1, got {seeds!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    t_start, load_start = time.perf_counter(), _load_average()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    over = (*_quick_overrides(quick, steps), f"output.cache={out / 'cache'}", *extra_overrides)
    results = run_phases(_phases(out, over, seeds, antispoof), workers, log)
    methods = _motion_entries(results, seeds)
    anti = _antispoof_entries(results, seeds) if antispoof else None
    payload: dict[str, Any] = {"methods": methods, "antispoof": {"methods": anti} if anti is not None else None}
    comps = main_job_comparisons(payload)
    payload["comparisons"], payload["controls"] = comps["comparisons"], comps["controls"]
    if anti is not None:
        payload["antispoof"].update(comps["antispoof"])
    payload["checks"] = _checks(payload["comparisons"], payload["controls"])
    first = results[("synthetic_motion", "baseline", 0)]
    record = reproduction_record(seeds=list(range(seeds)), worker_processes=workers)
    record["threads"] = first.get("record", {}).get("threads", 1)  # the workers' (one each), not this process's
    record["batch_size"] = first.get("record", {}).get("batch_size")
    payload["settings"] = {
        "quick": quick,
        "seeds": seeds,
        "ensemble_baseline_seeds": [b for _, b in baseline_ensemble_members(seeds)],
        "workers": workers,
        "overrides": list(over),
    }
    payload["wall_time_s"] = round(time.perf_counter() - t_start, 1)
    record["load_average"] = {"start": load_start, "end": _load_average()}  # others' load stretches the wall time
    payload["record"] = record
    _write(payload, out, log)
    return payload
