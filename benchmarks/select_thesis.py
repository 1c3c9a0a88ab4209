"""The thesis recipe on the **val** split (never on test): does more capacity or training change the claims?

    python benchmarks/select_thesis.py [--seeds 3] [--val-size 300] [--workers 2] [--out DIR]

Every run is an ordinary run of a shipped thesis config with ``dataset.eval_split=val`` (a val split of
``--val-size`` generated clips beside the 500 training clips; test is never built). Two settings per method: the
shipped recipe (200 steps; width 8 for the multiple-stream nets, 16/32 for the MCL nets) and a larger one (600 steps,
twice the width). Methods: ``multistream`` (connections) and ``multistream_noconn`` (chapter 3: every step's val
accuracy — step 1 the two streams fused, steps 3 and 4 RGB + hallucination — and each stream alone: RGB and depth
after step 1, the hallucination stream after steps 3 and 4), ``dmcl`` and ``mcl_random`` (chapter 5: the
ensemble's Σ accuracy), ``admd`` and ``admd_naive`` (chapter 4: the hallucination stream alone and RGB +
hallucination; the larger setting also widens the discriminator). Prints a table of mean ± std over seeds per
(method, setting, stage) and writes ``OUT/selection.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))

from mmh.benchmarks.jobs import Job, Progress, job_pool, map_jobs
from mmh.evaluation import mean_std

#: setting name -> overrides, per method family
SETTINGS = {
    "multistream": {"shipped": (), "600 steps, width 16": ("train.steps=600", "model.kwargs.width=16")},
    "mcl": {
        "shipped": (),
        "600 steps, width 32/64": ("train.steps=600", "model.kwargs.width=32", "model.kwargs.shared_width=64"),
    },
    "admd": {
        "shipped": (),
        "600 steps, width 16/32, D 256-128": (
            "train.steps=600",
            "model.kwargs.width=16",
            "model.kwargs.shared_width=32",
            "loss.admd.hidden=[256, 128]",
        ),
    },
}
METHODS = {
    "multistream": "multistream",
    "multistream_noconn": "multistream",
    "dmcl": "mcl",
    "mcl_random": "mcl",
    "admd": "admd",
    "admd_naive": "admd",
}


def _parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, of {list(METHODS)}")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--val-size", type=int, default=300)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default="runs/select_thesis")
    return ap.parse_args()


def _jobs(a: argparse.Namespace, out: Path) -> dict[Job, tuple[str, str]]:
    """Every run, with its (method, setting)."""
    jobs = {}
    unknown = set(a.methods.split(",")) - set(METHODS)
    if unknown:
        raise SystemExit(f"--methods: unknown {sorted(unknown)}; known: {list(METHODS)}")
    for method in a.methods.split(","):
        family = METHODS[method]
        for setting, extra in SETTINGS[family].items():
            for seed in range(a.seeds):
                over = (
                    "train.progress=false",
                    "dataset.eval_split=val",
                    f"dataset.split_kwargs={{train: {{size: 500}}, val: {{size: {a.val_size}}}}}",
                    f"output.cache={out / 'cache'}",
                    *extra,
                )
                tag = f"{method}-{'shipped' if not extra else 'larger'}-s{seed}"
                jobs[Job("thesis", method, seed, over, str(out / "runs" / tag))] = (method, setting)
    return jobs


def _streams(res: dict) -> dict[str, float]:
    """A multiple-stream run's per-stream val accuracies: step 1's RGB and depth streams (each alone), and the
    hallucination stream alone after steps 3 and 4 (the stages' own metric is the streams' fused prediction)."""
    from mmh.config import load_run_config
    from mmh.evaluation import eval_batches
    from mmh.evaluation.thesis import stream_accuracies
    from mmh.runner import load_split, stage_model_path
    from mmh.train.checkpoint import load_model

    cfg = load_run_config(res["run_dir"])
    val = load_split(cfg, "val")
    out = {}
    for stage, streams in (("step1", ("rgb", "depth")), ("step3", ("hall",)), ("step4", ("hall",))):
        acc = stream_accuracies(load_model(stage_model_path(res["run_dir"], res, stage)), eval_batches(val, 256))
        out.update({f"{stage} {s} alone": acc[s] for s in streams})
    return out


def _table(jobs: dict[Job, tuple[str, str]], results: list[dict]) -> dict[str, dict[str, dict[str, list[float]]]]:
    """{method: {setting: {stage (or stream): [val accuracy per seed]}}}."""
    table: dict[str, dict[str, dict[str, list[float]]]] = {}
    for (method, setting), res in zip(jobs.values(), results, strict=True):
        cells = {stage: rec["metrics"]["accuracy"] for stage, rec in res["stages"].items()}
        if METHODS[method] == "multistream":
            cells.update(_streams(res))
        for name, value in cells.items():
            table.setdefault(method, {}).setdefault(setting, {}).setdefault(name, []).append(value)
    return table


def main() -> None:
    a = _parse()
    out = Path(a.out)
    jobs = _jobs(a, out)
    with job_pool(a.workers) as pool:
        results = map_jobs(list(jobs), pool, Progress(len(jobs)))
    table = _table(jobs, results)
    print(f"thesis methods: val accuracy % ({a.val_size} clips), mean ± std over {a.seeds} seeds")
    print("| method | setting | each stage's val accuracy |")
    print("|---|---|---|")
    for method, settings in table.items():
        for setting, stages in settings.items():
            cells = ", ".join(
                f"{st} {100 * mean_std(v)[0]:.1f} ± {100 * mean_std(v)[1]:.1f}" for st, v in stages.items()
            )
            print(f"| {method} | {setting} | {cells} |")
    out.mkdir(parents=True, exist_ok=True)
    (out / "selection.json").write_text(
        json.dumps({"val_size": a.val_size, "seeds": a.seeds, "table": table}, indent=1)
    )


if __name__ == "__main__":
    main()
