"""``mmh benchmark thesis``: the thesis methods on the built-in ``synthetic_motion`` task.

Every run goes through the ordinary runner (configs ``configs/thesis/<method>.yaml``) in worker processes of one
thread, phase by phase so that shared stages (step 1 / step 2 of the multiplier nets, the ADMD streams) are
trained once per seed and then taken from the cache. Afterwards the saved models are evaluated for the thesis's
tables: accuracy after each of the four steps (and the ablations); the MCL comparison (per modality, Σ, Φ);
ADMD vs its baselines; the noisy-depth sweep (two-stream vs hallucination) and ADMD's switch signal.

Writes ``OUT/results.json`` (``methods``: one entry per method ``{"accuracy": [per seed], "mean", "std"}``, the
MCL entries with ``"sum"`` and ``"oracle"``; plus ``steps``, ``mcl``, ``noise_sweep``, ``switch_signal``,
``settings``, ``wall_time_s``), ``OUT/results.md``, ``OUT/comparison.png`` (methods: mean ± std over seeds, dots =
seeds), ``OUT/noise_sweep.png`` and ``OUT/switch_signal.png``. A line is printed per finished run (runs done / total,
elapsed, ETA).

``results.json`` also holds ``comparisons`` (every method deployed on RGB alone against the RGB reference, the step-1
RGB stream of the same seed; the MCL methods' Σ against independent training), ``controls`` (the thesis's claims as
paired contrasts: :data:`THESIS_CONTROLS`) — each ``{"vs", "diff", "ci95", "p", "n"}`` from
:func:`mmh.benchmarks.stats.paired_comparison` — and ``record`` (:func:`mmh.runner.reproduction_record`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..evaluation.metrics import mean_std
from ..evaluation.plots import plot_methods, plot_sweep
from ..evaluation.prediction import eval_batches
from ..evaluation.thesis import SIGMA2_GRID, mcl_metrics, noise_sweep, noisy_batches, stream_accuracies
from ..utils.io import write_json
from .jobs import Job, run_phases
from .stats import format_comparison, paired_comparison, verdict

__all__ = [
    "run_thesis_benchmark",
    "THESIS_PHASES",
    "MCL_METHODS",
    "STEP_VARIANTS",
    "THESIS_CONTROLS",
    "plot_thesis_results",
    "thesis_comparisons",
]

MCL_METHODS: tuple[str, ...] = ("mcl_independent", "smcl", "cmcl", "dmcl", "mcl_random")
STEP_VARIANTS: tuple[str, ...] = (
    "multistream",
    "multistream_noconn",
    "multistream_gd_only",
    "multistream_hall_only",
    "multistream_inverted",
    "multistream_fused_teacher",
)
#: Phases: the runs of a phase run in parallel; later phases reuse the cached stages of earlier ones.
THESIS_PHASES: tuple[tuple[str, ...], ...] = (
    ("multistream", "admd", "dmcl", "mcl_independent"),
    (
        "multistream_noconn",
        "multistream_gd_only",
        "multistream_hall_only",
        "multistream_inverted",
        "multistream_fused_teacher",
        "hoffman",
        "moddrop",
        "admd_naive",
        "smcl",
        "cmcl",
        "mcl_random",
    ),
)
#: The reference of :func:`thesis_comparisons`: the RGB stream alone after step 1 (what RGB gives without depth).
RGB_REFERENCE = "rgb_stream"
#: The thesis's claims as paired contrasts (method, reference), per seed: staged training vs Hoffman's end-to-end
#: hallucination, ModDrop's RGB stream vs the staged result, the connections, the combined loss against each term,
#: ADMD vs the naive binary discriminator, DMCL vs the random teacher (Σ).
THESIS_CONTROLS: tuple[tuple[str, str], ...] = (
    ("multistream", "hoffman"),
    ("multistream", "moddrop_rgb_only"),
    ("multistream", "multistream_noconn"),
    ("multistream", "multistream_gd_only"),
    ("multistream", "multistream_hall_only"),
    ("admd", "admd_naive"),
    ("dmcl", "mcl_random"),
)
QUICK_OVERRIDES: tuple[str, ...] = ("train.steps=30", "dataset.split_kwargs={train: {size: 128}, test: {size: 120}}")
#: The noise-sweep curves: label -> (method, stage whose network gets the noisy depth).
_SWEPT: dict[str, tuple[str, str]] = {
    "two-stream (step 2)": ("multistream", "step2"),
    "ModDrop": ("moddrop", "moddrop"),
    "ADMD streams (RGB+D)": ("admd", "streams"),
}


def admd_discriminator(res: dict[str, Any], hall_net: nn.Module) -> nn.Module:
    """The discriminator an ADMD run trained beside its hallucination stream (``hall_net``: that stage's network),
    from the stage's published ``discriminator`` artifact (its own folder or the stage cache); a run made before
    stages published artifacts has only the trainer's stage checkpoint, which is read instead. The residual layers
    are the run's ``loss.admd.residual``, checked against the layout stored with the weights (a ValueError when
    they differ)."""
    from ..config import load_run_config
    from ..methods.thesis import discriminator_from_state
    from ..runner import stage_artifact_path
    from ..train.checkpoint import load_checkpoint, load_tensors

    dim = hall_net.streams["hall"].bottleneck.out_channels
    residual = load_run_config(res["run_dir"])["loss"]["admd"]["residual"]
    try:
        path = stage_artifact_path(res["run_dir"], res, "hallucination", "discriminator")
    except FileNotFoundError:
        latest = Path(res["run_dir"]) / "stages" / "hallucination" / "latest.pt"
        return discriminator_from_state(load_checkpoint(latest)["stage"], dim, residual=residual)
    return discriminator_from_state(load_tensors(path), dim, prefix="", residual=residual)


class _Runs:
    """The finished runs ``{(method, seed): results}``: their stages' networks and recorded accuracies."""

    def __init__(self, results: dict[tuple[str, int], dict[str, Any]], seeds: int) -> None:
        self.results, self.seeds = results, seeds

    def model(self, method: str, seed: int, stage: str) -> nn.Module:
        from ..runner import stage_model_path
        from ..train.checkpoint import load_model

        res = self.results[(method, seed)]
        return load_model(stage_model_path(res["run_dir"], res, stage))

    def stage_acc(self, method: str, seed: int, stage: str) -> float:
        return float(self.results[(method, seed)]["stages"][stage]["metrics"]["accuracy"])

    def final(self, method: str) -> list[float]:
        return [float(self.results[(method, s)]["final"]["accuracy"]) for s in range(self.seeds)]


def _entry(values: Sequence[float], **extra: Sequence[float]) -> dict[str, Any]:
    mean, std = mean_std(values)
    out: dict[str, Any] = {"accuracy": [float(v) for v in values], "mean": mean, "std": std}
    for k, v in extra.items():
        out[k] = [float(x) for x in v]
        out[f"{k}_mean"] = mean_std(v)[0]
    return out


def _fmt(vals: Sequence[float]) -> str:
    m, s = mean_std(vals)
    return f"{100 * m:.1f} ± {100 * s:.1f}"


def _per_stream(rows: dict[str, list[float]], model: nn.Module, eval_set: Any, row: str) -> None:
    """Append each stream's accuracy alone to ``rows[row.format(stream=...)]``."""
    for stream, acc in stream_accuracies(model, eval_batches(eval_set, 256)).items():
        rows.setdefault(row.format(stream=stream), []).append(acc)


def _step_rows(runs: _Runs, variant: str, eval_set: Any) -> dict[str, list[float]]:
    """Accuracy after each of the four steps of a multiple-stream variant (+ per-stream accuracy of the step-1 and
    step-2 nets; Table 3.2 rows 10-14 report the hallucination stream alone, RGB input)."""
    rows: dict[str, list[float]] = {}
    for s in range(runs.seeds):
        for st in ("step1", "step2"):
            _per_stream(rows, runs.model(variant, s, st), eval_set, f"{st} {{stream}} stream")
            rows.setdefault(f"{st} two-stream (RGB+D)", []).append(runs.stage_acc(variant, s, st))
        rows.setdefault("step3 RGB+hall (RGB input)", []).append(runs.stage_acc(variant, s, "step3"))
        for st in ("step3", "step4"):
            acc = stream_accuracies(runs.model(variant, s, st), eval_batches(eval_set, 256))["hall"]
            rows.setdefault(f"{st} hall stream alone (RGB input)", []).append(acc)
        rows.setdefault("step4 RGB+hall fine-tuned (RGB input)", []).append(runs.stage_acc(variant, s, "step4"))
    return rows


def _mcl_rows(runs: _Runs, method: str, eval_set_mcl: Any) -> dict[str, list[float]]:
    """Per-modality accuracy, Σ and Φ of an MCL network, per seed."""
    rows: dict[str, list[float]] = {}
    for s in range(runs.seeds):
        for k, v in mcl_metrics(runs.model(method, s, "mcl"), eval_set_mcl).items():
            rows.setdefault(k.replace("accuracy/", ""), []).append(v)
    return rows


def _noise_sweep(runs: _Runs, eval_set: Any) -> dict[str, dict[str, list[float]]]:
    """Two-stream (step 2), ModDrop and ADMD's streams with noisy depth; the hallucination nets (no depth) flat."""
    sweep: dict[str, dict[str, list[float]]] = {label: {} for label in _SWEPT}
    for s in range(runs.seeds):
        for label, (method, stage) in _SWEPT.items():
            for k, v in noise_sweep(runs.model(method, s, stage), eval_set, seed=s).items():
                sweep[label].setdefault(k, []).append(v)
    hall = [runs.stage_acc("multistream", s, "step4") for s in range(runs.seeds)]
    admd = [runs.stage_acc("admd", s, "fusion") for s in range(runs.seeds)]
    sweep["hallucination (step 4, RGB only)"] = {str(k): hall for k in SIGMA2_GRID}
    sweep["ADMD (RGB + hallucination)"] = {str(k): admd for k in SIGMA2_GRID}
    return sweep


def _switch_signal(runs: _Runs, method: str, eval_set: Any) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """An ADMD variant's switch signal (mean p(fake) of its discriminator per σ² of noisy depth) and its
    hallucination-alone / RGB + hallucination accuracies."""
    from ..methods.thesis import fake_probability

    sig: dict[str, list[float]] = {}
    hall_only = []
    for s in range(runs.seeds):
        streams = runs.model(method, s, "streams")
        hall_net = runs.model(method, s, "hallucination")
        hall_only.append(runs.stage_acc(method, s, "hallucination"))
        disc = admd_discriminator(runs.results[(method, s)], hall_net)
        for s2 in SIGMA2_GRID:
            sig.setdefault(str(s2), []).append(
                fake_probability(streams, disc, noisy_batches(eval_set, 256, "depth", s2, seed=s))
            )
    return sig, {
        "hallucination alone": hall_only,
        "RGB + hallucination": [runs.stage_acc(method, s, "fusion") for s in range(runs.seeds)],
    }


def _analyse(runs: _Runs, eval_set: Any, eval_set_mcl: Any) -> dict[str, Any]:
    """Evaluate the saved models for the thesis tables."""
    out: dict[str, Any] = {
        "steps": {v: _step_rows(runs, v, eval_set) for v in STEP_VARIANTS},
        "mcl": {m: _mcl_rows(runs, m, eval_set_mcl) for m in MCL_METHODS},
        "noise_sweep": _noise_sweep(runs, eval_set),
        "switch_signal": {},
        "admd": {},
    }
    # ModDrop as the thesis evaluates it: RGB + blank depth (the "void" column above) and the RGB stream alone
    out["moddrop_rgb_only"] = []
    for s in range(runs.seeds):
        batches = noisy_batches(eval_set, 256, "depth", "void")
        out["moddrop_rgb_only"].append(stream_accuracies(runs.model("moddrop", s, "moddrop"), batches)["rgb"])
    for method in ("admd", "admd_naive"):
        out["switch_signal"][method], out["admd"][method] = _switch_signal(runs, method, eval_set)
    out["admd"]["streams"] = {}
    for s in range(runs.seeds):
        _per_stream(out["admd"]["streams"], runs.model("admd", s, "streams"), eval_set, "{stream} stream")
        out["admd"]["streams"].setdefault("RGB+D two-stream", []).append(runs.stage_acc("admd", s, "streams"))
    return out


def plot_thesis_results(
    methods: dict[str, Any], a: dict[str, Any], out: Path, comparisons: dict[str, Any] | None = None
) -> dict[str, Path]:
    """``out/comparison.png`` (accuracy per method and per MCL network: mean ± std over seeds, dots = seeds; with
    ``comparisons``, :func:`thesis_comparisons`'s paired differences with their 95 % intervals as a last panel),
    ``out/noise_sweep.png`` and ``out/switch_signal.png`` (mean ± std over seeds per σ², dots = seeds)."""
    panels = {
        "multistream steps / baselines (RGB at test)": {
            **{v: methods[v]["accuracy"] for v in STEP_VARIANTS},
            "two-stream (step 2, RGB+D)": methods["two_stream_step2"]["accuracy"],
            "hoffman": methods["hoffman"]["accuracy"],
            "moddrop": methods["moddrop"]["accuracy"],
            "admd": methods["admd"]["accuracy"],
            "admd_naive": methods["admd_naive"]["accuracy"],
        },
        **{
            f"MCL: {'Σ' if c == 'sum' else 'Φ (oracle)' if c == 'oracle' else c}": {
                m: a["mcl"][m][c] for m in MCL_METHODS
            }
            for c in ("sum", "oracle")
        },
    }
    scaled = {p: {m: [100 * v for v in vals] for m, vals in ms.items()} for p, ms in panels.items()}
    paths = {
        "comparison": plot_methods(
            scaled,
            out / "comparison.png",
            ylabel="test accuracy (%)",
            title="thesis methods: mean ± std over seeds, dots = seeds",
            differences={"Δ vs the step-1 RGB stream (MCL: Σ vs independent)": comparisons} if comparisons else None,
        )
    }
    paths["noise_sweep"] = plot_sweep(
        {k: {g: [100 * v for v in vals] for g, vals in c.items()} for k, c in a["noise_sweep"].items()},
        out / "noise_sweep.png",
        ylabel="test accuracy (%)",
    )
    paths["switch_signal"] = plot_sweep(
        {f"p(fake), {m}": c for m, c in a["switch_signal"].items()},
        out / "switch_signal.png",
        ylabel="mean p(fake)",
        title="ADMD switch signal on noisy depth",
    )
    return paths


def _tables(methods: dict[str, Any], a: dict[str, Any]) -> str:
    lines = ["### Modality distillation with multiplier networks (ch. 3): accuracy after each step (%)", ""]
    variants = list(a["steps"])
    lines += ["| row | " + " | ".join(variants) + " |", "|---|" + "---|" * len(variants)]
    for row in a["steps"][variants[0]]:
        lines.append(f"| {row} | " + " | ".join(_fmt(a["steps"][v][row]) for v in variants) + " |")
    lines += [
        "",
        "| baseline | accuracy (RGB input at test) |",
        "|---|---|",
        f"| Hoffman et al. (end to end, no connections) | {_fmt(methods['hoffman']['accuracy'])} |",
        f"| ModDrop, RGB + blank depth | {_fmt(methods['moddrop']['accuracy'])} |",
        f"| ModDrop, RGB + depth | {_fmt(methods['moddrop']['with_depth'])} |",
        f"| ModDrop, RGB stream's predictions only (depth blank) | {_fmt(methods['moddrop']['rgb_only'])} |",
        "",
    ]
    lines += ["### MCL comparison (ch. 5, RGB / depth / flow networks): accuracy (%)", ""]
    cols = [c for c in a["mcl"][MCL_METHODS[0]] if c not in ("sum", "oracle")] + ["sum", "oracle"]
    lines += [
        "| method | " + " | ".join("Σ" if c == "sum" else "Φ" if c == "oracle" else c for c in cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    for m in MCL_METHODS:
        lines.append(f"| {m} | " + " | ".join(_fmt(a["mcl"][m][c]) for c in cols) + " |")
    lines += [
        "",
        "### ADMD (ch. 4) vs its baselines: accuracy (%)",
        "",
        "| model | test input | accuracy |",
        "|---|---|---|",
    ]
    for k, v in a["admd"]["streams"].items():
        lines.append(f"| ADMD step 1, {k} | {'RGB+D' if 'two' in k else k.split()[0]} | {_fmt(v)} |")
    for m in ("admd", "admd_naive"):
        for k, v in a["admd"][m].items():
            lines.append(f"| {m}: {k} | RGB | {_fmt(v)} |")
    lines.append(f"| ModDrop (RGB + blank depth) | RGB | {_fmt(methods['moddrop']['accuracy'])} |")
    lines.append(f"| Hoffman et al. | RGB | {_fmt(methods['hoffman']['accuracy'])} |")
    grid = list(next(iter(a["noise_sweep"].values())))
    lines += [
        "",
        "### Noisy depth at test time (speckle σ²): accuracy (%) and ADMD's switch signal p(fake)",
        "",
        "| model | " + " | ".join(grid) + " |",
        "|---|" + "---|" * len(grid),
    ]
    for label, curve in a["noise_sweep"].items():
        lines.append(f"| {label} | " + " | ".join(_fmt(curve[g]) for g in grid) + " |")
    for m, curve in a["switch_signal"].items():
        lines.append(f"| p(fake), {m} D | " + " | ".join(f"{mean_std(curve[g])[0]:.3f}" for g in grid) + " |")
    return "\n".join(lines) + "\n"


def _overrides(out: Path, quick: bool, steps: int | None, extra: Sequence[str]) -> list[str]:
    return [
        "train.progress=false",
        f"output.cache={out / 'cache'}",
        *(QUICK_OVERRIDES if quick else ()),
        *([f"train.steps={steps}"] if steps is not None else []),
        *extra,
    ]


def _train(
    out: Path, over: Sequence[str], seeds: int, workers: int, log: Callable[[str], None]
) -> dict[tuple[str, int], dict[str, Any]]:
    """Every method of every phase for every seed (configs ``configs/thesis/<method>.yaml``); ``{(method, seed):
    results}``."""
    phases = [
        (
            phase,
            [Job("thesis", m, s, tuple(over), str(out / "runs" / f"{m}-s{s}")) for m in phase for s in range(seeds)],
        )
        for phase in THESIS_PHASES
    ]
    return {(m, s): res for (_ds, m, s), res in run_phases(phases, workers, log).items()}


def _eval_sets(over: Sequence[str]) -> tuple[Any, Any]:
    """The eval splits of the multiple-stream recipes (RGB-D) and of the MCL recipes (RGB, depth, flow)."""
    from ..config import find_config, load_config
    from ..runner import load_split

    cfg = load_config(find_config("thesis/multistream"), over)
    cfg_mcl = load_config(find_config("thesis/dmcl"), over)
    return (load_split(cfg, cfg["dataset"]["eval_split"]), load_split(cfg_mcl, cfg_mcl["dataset"]["eval_split"]))


def _method_entries(runs: _Runs, a: dict[str, Any]) -> dict[str, Any]:
    """One entry per method: final accuracy per seed, mean, std (MCL: Σ, with Φ; ModDrop: RGB + blank depth)."""
    methods_out: dict[str, Any] = {}
    for m in STEP_VARIANTS + ("hoffman", "admd", "admd_naive"):
        methods_out[m] = _entry(runs.final(m))
    for m in MCL_METHODS:
        methods_out[m] = _entry(a["mcl"][m]["sum"], sum=a["mcl"][m]["sum"], oracle=a["mcl"][m]["oracle"])
    blank = a["noise_sweep"]["ModDrop"]["void"]
    methods_out["moddrop"] = {**_entry(blank), "with_depth": runs.final("moddrop"), "rgb_only": a["moddrop_rgb_only"]}
    methods_out["two_stream_step2"] = _entry([runs.stage_acc("multistream", s, "step2") for s in range(runs.seeds)])
    return methods_out


def thesis_comparisons(methods: dict[str, Any], a: dict[str, Any]) -> dict[str, Any]:
    """``{"comparisons", "controls"}`` of a thesis benchmark's results (``methods`` and the analysis ``a``), paired
    by seed: every method deployed on RGB alone (the multiple-stream variants after step 4, Hoffman, ModDrop with
    blank depth and its RGB stream alone, ADMD, the naive baseline) against :data:`RGB_REFERENCE`, the step-1 RGB
    stream of the same seed; the MCL methods' Σ against independent training; and :data:`THESIS_CONTROLS`."""
    values = {m: e["accuracy"] for m, e in methods.items() if m != "two_stream_step2"}
    values["moddrop_rgb_only"] = methods["moddrop"]["rgb_only"]
    values[RGB_REFERENCE] = a["steps"]["multistream"]["step1 rgb stream"]
    rgb = [*STEP_VARIANTS, "hoffman", "moddrop", "moddrop_rgb_only", "admd", "admd_naive"]
    comps = {m: paired_comparison(values[m], values[RGB_REFERENCE], vs=RGB_REFERENCE) for m in rgb}
    for m in MCL_METHODS[1:]:
        comps[m] = paired_comparison(values[m], values[MCL_METHODS[0]], vs=MCL_METHODS[0])
    controls = {f"{m} vs {ref}": paired_comparison(values[m], values[ref], vs=ref) for m, ref in THESIS_CONTROLS}
    return {"comparisons": comps, "controls": controls}


def _comparison_lines(comps: dict[str, Any]) -> list[str]:
    out = []
    for name, c in comps.items():
        who = name if " vs " in name else f"{name} vs {c['vs']}"
        out.append(f"- {who}: {format_comparison(c)} — {verdict(c)}")
    return out


def run_thesis_benchmark(
    quick: bool = False,
    seeds: int = 2,
    out: str | Path | None = None,
    *,
    workers: int = 2,
    steps: int | None = None,
    extra_overrides: Sequence[str] = (),
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the thesis comparison; write ``out/results.json`` (default ``runs/benchmark_thesis``) and return it.

    ``quick``: 30 steps on 128 training clips (a smoke run of the whole pipeline). ``seeds``: seeds 0..seeds-1.
    ``workers``: parallel processes. ``steps``: override the training steps of every stage.
    """
    from ..runner import reproduction_record

    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    t_start = time.perf_counter()
    out = Path(out) if out is not None else Path("runs/benchmark_thesis")
    out.mkdir(parents=True, exist_ok=True)
    over = _overrides(out, quick, steps, extra_overrides)
    runs = _Runs(_train(out, over, seeds, workers, log), seeds)
    torch.set_num_threads(max(1, workers))
    eval_sets = _eval_sets(over)
    t0 = time.perf_counter()
    a = _analyse(runs, *eval_sets)
    log(f"evaluation in {time.perf_counter() - t0:.1f}s")
    methods_out = _method_entries(runs, a)
    comps = thesis_comparisons(methods_out, a)
    plot_thesis_results(methods_out, a, out, comps["comparisons"])
    table = _tables(methods_out, a)
    table += "\n### Paired differences (accuracy points, 95 % t interval, p; paired by seed)\n\n"
    table += "\n".join(_comparison_lines({**comps["comparisons"], **comps["controls"]})) + "\n"
    payload = {
        "methods": methods_out,
        **a,
        **comps,
        "settings": {"quick": quick, "seeds": seeds, "workers": workers, "overrides": over},
        "wall_time_s": round(time.perf_counter() - t_start, 1),
        "record": reproduction_record(seeds=list(range(seeds)), worker_processes=workers),
    }
    write_json(payload, out / "results.json")
    (out / "results.md").write_text(table)
    log(table)
    log(f"wall time {payload['wall_time_s']:.1f}s; results in {out / 'results.json'}")
    return payload
