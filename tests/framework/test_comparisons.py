"""Evidence a user can trust: the benchmarks' paired comparisons (scipy's paired t-test and t interval), the baseline
ensemble control, and the reproduction record every results.json keeps (and ``mmh report`` shows)."""

from __future__ import annotations

import csv
import json
import math
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

pytest.importorskip("mmh_ext")
from mmh.benchmarks.main_job import CONTROLS, benchmark_mmh  # noqa: E402
from mmh.benchmarks.stats import paired_comparison, verdict  # noqa: E402


def _independent(values, reference):
    """Mean paired difference, its 95 % t interval and the two-sided p, from the t distribution directly."""
    d = np.asarray(values, float) - np.asarray(reference, float)
    n = len(d)
    mean, sem = d.mean(), d.std(ddof=1) / math.sqrt(n)
    half = stats.t.ppf(0.975, n - 1) * sem
    p = 2 * stats.t.sf(abs(mean / sem), n - 1)
    return mean, (mean - half, mean + half), p


def test_paired_comparison_is_the_paired_t_test_and_t_interval():
    rng = np.random.default_rng(0)
    for n in (2, 3, 5, 9):
        ref = rng.uniform(0.6, 0.7, n)
        vals = ref + rng.normal(0.01, 0.01, n)
        c = paired_comparison(vals, ref, vs="baseline")
        mean, (lo, hi), p = _independent(vals, ref)
        assert c["vs"] == "baseline" and c["n"] == n and c["better"] == "higher"
        assert c["diff"] == pytest.approx(mean, abs=1e-12)
        assert c["ci95"] == pytest.approx([lo, hi], abs=1e-12)
        assert c["p"] == pytest.approx(p, rel=1e-9)
    # lower-is-better keeps the sign of method - reference (a negative diff is the improvement)
    c = paired_comparison([0.20, 0.22, 0.18], [0.25, 0.26, 0.24], vs="baseline", better="lower")
    assert c["diff"] == pytest.approx(-0.05) and c["ci95"][1] < 0 and verdict(c) == "yes"


def test_verdict_is_yes_only_when_the_interval_excludes_zero():
    def comp(lo, hi, better="higher", p=0.3):
        return {"diff": (lo + hi) / 2, "ci95": [lo, hi], "p": p, "n": 5, "better": better}

    assert verdict(comp(0.001, 0.03)) == "yes"
    assert verdict(comp(-0.03, -0.001)) == "no, worse"
    assert verdict(comp(-0.005, 0.03, p=0.1712)) == "not significant (p = 0.17)"
    assert verdict(comp(-0.03, -0.001, better="lower")) == "yes"
    assert verdict(comp(0.001, 0.03, better="lower")) == "no, worse"
    assert verdict({"diff": 0.02, "ci95": None, "p": None, "n": 1}) == "untested (n = 1)"
    assert "no spread" in verdict(paired_comparison([0.5, 0.6], [0.4, 0.5], vs="b"))


def test_paired_comparison_refuses_bad_input_and_degenerate_tests_give_no_nan():
    with pytest.raises(ValueError, match="3 values against 2"):
        paired_comparison([1, 2, 3], [1, 2], vs="baseline")
    with pytest.raises(ValueError, match="no values"):
        paired_comparison([], [], vs="baseline")
    with pytest.raises(ValueError, match="non-finite"):
        paired_comparison([0.5, float("nan")], [0.4, 0.5], vs="baseline")
    with pytest.raises(ValueError, match="better"):
        paired_comparison([0.5], [0.4], vs="baseline", better="bigger")
    one = paired_comparison([0.5], [0.4], vs="baseline")
    same = paired_comparison([0.5, 0.6, 0.7], [0.4, 0.5, 0.6], vs="baseline")  # every seed +0.1: scipy gives NaN
    for c in (one, same):
        assert c["ci95"] is None and c["p"] is None and c["diff"] == pytest.approx(0.1)
        json.dumps(c, allow_nan=False)


# ------------------------------------------------------------------------------------------- the main job, tiny
_TINY = [
    "dataset.split_kwargs={train: {size: 32}, test: {size: 60}}",
    "train.batch_size=16",
    "train.lr=0.01",
    "train.schedule=constant",
    "model.kwargs={width: 8, shared_width: 8}",
]


@pytest.fixture(scope="module")
def tiny_main_job(tmp_path_factory):
    out = tmp_path_factory.mktemp("main_job")
    res = benchmark_mmh(seeds=3, workers=1, steps=30, out=out, extra_overrides=_TINY, log=lambda _m: None)
    return out, res


def _check_against_scipy(comps, values, better):
    for name, c in comps.items():
        method = name.split(" vs ")[0]
        a, b = values[method], values[c["vs"]]
        r = stats.ttest_rel(a, b)
        ci = r.confidence_interval(0.95)
        assert c["n"] == len(a) == 3 and c["better"] == better, name
        assert c["diff"] == pytest.approx(float(np.mean(np.subtract(a, b))), abs=1e-12), name
        if np.ptp(np.subtract(a, b)) == 0:  # no spread: scipy's NaN is recorded as None
            assert c["ci95"] is None and c["p"] is None, name
            continue
        assert c["ci95"] == pytest.approx([ci.low, ci.high], abs=1e-12), name
        assert c["p"] == pytest.approx(r.pvalue, rel=1e-9), name


def test_main_job_comparisons_are_scipys_on_the_per_seed_values(tiny_main_job):
    out, _ = tiny_main_job
    saved = json.loads((out / "results.json").read_text())
    methods, anti = saved["methods"], saved["antispoof"]
    assert {"rad_global", "baseline_ensemble", "rad_dad", "kd"} <= set(methods)
    assert {"kd", "rad_dad", "baseline_ensemble"} <= set(anti["methods"])
    assert set(saved["comparisons"]) == set(methods) - {"baseline"}
    assert {f"{m} vs {r}" for m, r in CONTROLS} == set(saved["controls"])
    acc = {m: e["accuracy"] for m, e in methods.items()}
    _check_against_scipy({**saved["comparisons"], **saved["controls"]}, acc, "higher")
    acer = {m: e["acer"] for m, e in anti["methods"].items()}
    _check_against_scipy({**anti["comparisons"], **anti["controls"]}, acer, "lower")
    iso = {m: [r["acer_iso"] for r in e["iso"]] for m, e in anti["methods"].items()}
    _check_against_scipy(anti["comparisons_iso"], iso, "lower")
    assert any(c["ci95"] is not None for c in saved["comparisons"].values())  # the tiny runs are not degenerate
    md = (out / "results.md").read_text()
    for name, c in saved["controls"].items():
        assert f"{name}: " in md and verdict(c) in md
    assert saved["checks"]["rad > baseline"] == verdict(saved["comparisons"]["rad"])


def _test_logits(run_dirs):
    """Test-split logits of the deployed networks in ``run_dirs`` (one forward each), and the labels."""
    from mmh.config import load_run_config
    from mmh.evaluation import eval_batches
    from mmh.runner import load_results, load_split, stage_model_path
    from mmh.train.checkpoint import load_model

    nets = [load_model(stage_model_path(d, load_results(d), "student")).eval() for d in run_dirs]
    cfg = load_run_config(run_dirs[0])
    logits, labels = [[] for _ in nets], []
    with torch.no_grad():
        for batch in eval_batches(load_split(cfg, cfg["dataset"]["eval_split"]), 64):
            for i, net in enumerate(nets):
                logits[i].append(net(batch))
            labels.append(batch["label"])
    return [torch.cat(x) for x in logits], torch.cat(labels)


def test_baseline_ensemble_averages_the_baselines_of_seeds_s_and_s_plus_n(tiny_main_job):
    from mmh.runner import load_results

    out, res = tiny_main_job
    n = 3
    ens = res["methods"]["baseline_ensemble"]
    # the runs of seeds 0..2n-1, found by their folders (not through the ensemble's own record of its members)
    dirs = [out / "runs" / "synthetic_motion" / f"baseline-s{s}" for s in range(2 * n)]
    assert [load_results(d)["seed"] for d in dirs] == list(range(2 * n))
    logits, y = _test_logits(dirs)
    want = [((logits[s] + logits[s + n]) / 2).argmax(1).eq(y).float().mean().item() for s in range(n)]
    assert ens["accuracy"] == pytest.approx(want, abs=1e-9)
    assert ens["seeds"] == [0, 1, 2] and res["settings"]["ensemble_baseline_seeds"] == [3, 4, 5]
    # the extra seeds enter no other row: the baseline's statistics and its pairing are seeds 0..n-1
    base = res["methods"]["baseline"]
    singles = [logits[s].argmax(1).eq(y).float().mean().item() for s in range(2 * n)]
    assert base["accuracy"] == pytest.approx(singles[:n], abs=1e-9)  # the runs' own evaluation
    assert base["seeds"] == [0, 1, 2] and [Path(d) for d in base["run_dirs"]] == dirs[:n]
    assert base["mean"] == pytest.approx(np.mean(singles[:n]), abs=1e-12)
    assert res["comparisons"]["rad"]["n"] == n
    assert res["comparisons"]["rad"]["diff"] == pytest.approx(
        np.mean(np.subtract(res["methods"]["rad"]["accuracy"], singles[:n])), abs=1e-12
    )
    assert res["controls"]["rad_dad vs baseline_ensemble"]["diff"] == pytest.approx(
        np.mean(np.subtract(res["methods"]["rad_dad"]["accuracy"], want)), abs=1e-12
    )
    # on anti-spoofing too: the ensemble's pooled ACER from the logits of seeds s and s + n averaged
    from mmh.evaluation.metrics import pad_error_rates

    anti_dirs = [out / "runs" / "synthetic_antispoof" / f"baseline-s{s}" for s in range(2 * n)]
    a_logits, a_y = _test_logits(anti_dirs)
    anti = res["antispoof"]["methods"]["baseline_ensemble"]
    avg = [(a_logits[s] + a_logits[s + n]) / 2 for s in range(n)]
    want_acer = [pad_error_rates(a.argmax(1) == 1, a_y == 1)["acer"] for a in avg]
    assert anti["acer"] == pytest.approx(want_acer, abs=1e-9)
    assert res["antispoof"]["methods"]["baseline"]["seeds"] == [0, 1, 2]
    from mmh.benchmarks.main_job import baseline_ensemble_metrics

    with pytest.raises(ValueError, match="two different seeds"):
        baseline_ensemble_metrics(load_results(dirs[0]), load_results(dirs[0]))
    with pytest.raises(ValueError, match="seeds must be an integer >= 1"):
        benchmark_mmh(seeds=0, out=out / "never")


def test_no_baseline_serves_two_ensembles(tiny_main_job):
    from mmh.benchmarks.main_job import baseline_ensemble_members

    _, res = tiny_main_job
    for entry in (res["methods"]["baseline_ensemble"], res["antispoof"]["methods"]["baseline_ensemble"]):
        seeds = [s for pair in entry["members"] for s in pair]
        dirs = [d for pair in entry["run_dirs"] for d in pair]
        assert sorted(seeds) == list(range(6)) and len(set(dirs)) == len(dirs) == 6
        assert [pair[0] for pair in entry["members"]] == [0, 1, 2]  # ensemble s holds the baseline paired with seed s
        for pair, run_dirs in zip(entry["members"], entry["run_dirs"], strict=True):
            assert [json.loads((Path(d) / "results.json").read_text())["seed"] for d in run_dirs] == pair
    for n in (1, 2, 5):  # with two seeds the two ensembles are two different models, not one counted twice
        members = baseline_ensemble_members(n)
        flat = [s for pair in members for s in pair]
        assert len(members) == n and sorted(flat) == list(range(2 * n))


def test_results_and_run_folders_keep_a_reproduction_record(tiny_main_job):
    out, res = tiny_main_job
    saved = json.loads((out / "results.json").read_text())
    rec = saved["record"]
    assert rec["torch"] == torch.__version__ and rec["threads"] == 1 and rec["worker_processes"] == 1
    assert rec["seeds"] == [0, 1, 2] and rec["batch_size"] == 16 and rec["world_size"] == 1
    commit = rec["git"]["commit"]
    assert re.fullmatch(r"[0-9a-f]{40}", commit)
    root = Path(__file__).resolve().parents[2]
    kind = subprocess.run(["git", "-C", str(root), "cat-file", "-t", commit], capture_output=True, text=True)
    assert kind.stdout.strip() == "commit" and isinstance(rec["git"]["dirty"], bool)
    run = json.loads((Path(res["methods"]["rad"]["run_dirs"][1]) / "results.json").read_text())
    assert run["record"]["seeds"] == [1] and run["record"]["threads"] == 1 and run["record"]["batch_size"] == 16
    assert run["record"]["git"]["commit"] == commit


def test_git_state_outside_this_checkout_is_unknown(tmp_path, monkeypatch):
    from mmh import runner

    assert runner._git_state(tmp_path) == {"commit": "unknown", "dirty": None}  # no git checkout at all
    other = tmp_path / "other"
    (other / "pkg").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(other)], check=True)
    assert runner._git_state(other / "pkg") == {"commit": "unknown", "dirty": None}  # some other repository

    def no_git(*_a, **_k):
        raise FileNotFoundError("git")

    monkeypatch.setattr(subprocess, "run", no_git)
    assert runner.reproduction_record({"seed": 3})["git"] == {"commit": "unknown", "dirty": None}


def test_val_last_and_best_are_recorded_and_mmh_report_shows_the_record(tmp_path):
    from mmh.config import find_config, load_config
    from mmh.evaluation.report import make_report
    from mmh.runner import run_experiment

    over = [
        "seed=0",
        "train.steps=8",
        "train.batch_size=8",
        "train.eval_every=1",
        "train.progress=false",
        "threads=1",
        "dataset.val_split=val",
        "dataset.split_kwargs={train: {size: 16}, val: {size: 24}, test: {size: 24}}",
        "model.kwargs={width: 8, shared_width: 8}",
        f"output.cache={tmp_path / 'cache'}",
    ]
    res = run_experiment(load_config(find_config("synthetic_motion/baseline"), over), run_dir=tmp_path / "r", log=print)
    with open(tmp_path / "r" / "stages" / "student" / "metrics.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("val_accuracy")]
    assert len(rows) >= 2
    val = res["stages"]["student"]["val"]
    assert val["last"]["accuracy"] == pytest.approx(float(rows[-1]["val_accuracy"]))
    assert val["best"]["value"] == pytest.approx(max(float(r["val_accuracy"]) for r in rows))
    assert val["deployed"] == "last"
    report = make_report([tmp_path / "r"], tmp_path / "rep")["report"].read_text()
    assert "## Reproduction record" in report and torch.__version__ in report
    assert res["record"]["git"]["commit"] in report
    assert f"accuracy {val['best']['value']:.4f} at step {val['best']['step']}" in report


def test_thesis_comparisons_pair_each_method_with_the_rgb_stream_of_its_seed():
    from mmh.benchmarks.thesis import MCL_METHODS, STEP_VARIANTS, THESIS_CONTROLS, thesis_comparisons

    rng = np.random.default_rng(1)
    names = [*STEP_VARIANTS, "hoffman", "admd", "admd_naive", "moddrop", *MCL_METHODS]
    vals = {m: list(rng.uniform(0.3, 0.9, 3)) for m in [*names, "rgb_only", "rgb_stream"]}
    methods = {m: {"accuracy": vals[m]} for m in names}
    methods["moddrop"]["rgb_only"] = vals["rgb_only"]
    methods["two_stream_step2"] = {"accuracy": [0.9, 0.9, 0.9]}  # sees depth: not compared
    a = {"steps": {"multistream": {"step1 rgb stream": vals["rgb_stream"]}}}
    out = thesis_comparisons(methods, a)
    comps, controls = out["comparisons"], out["controls"]
    assert "two_stream_step2" not in comps and "mcl_independent" not in comps
    vals["moddrop_rgb_only"] = vals["rgb_only"]
    for m, c in comps.items():
        ref = "mcl_independent" if m in MCL_METHODS else "rgb_stream"
        assert c["vs"] == ref, m
        r = stats.ttest_rel(vals[m], vals[ref])
        assert c["diff"] == pytest.approx(np.mean(np.subtract(vals[m], vals[ref])), abs=1e-12), m
        assert c["p"] == pytest.approx(r.pvalue, rel=1e-9), m
    assert set(controls) == {f"{m} vs {r}" for m, r in THESIS_CONTROLS}
    c = controls["multistream vs hoffman"]
    assert c["diff"] == pytest.approx(np.mean(np.subtract(vals["multistream"], vals["hoffman"])), abs=1e-12)
