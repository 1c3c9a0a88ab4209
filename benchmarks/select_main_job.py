"""Select the main job's recipe on the **val** split (never on test): training length and RAD's weighting.

    python benchmarks/select_main_job.py [--steps 100,150,250,400] [--seeds 3] [--val-size 1000]
                                         [--dataset synthetic_motion] [--metric accuracy] [--out DIR]

Every (method, steps, seed) is an ordinary run of ``configs/<dataset>/<method>.yaml`` with ``dataset.eval_split=val``
(the val split enlarged to ``--val-size`` clips: the synthetic generator makes them for free, and 200 clips give
±3 points of noise per run). Methods: teacher, baseline, kd, dad, and rad with each weighting (attention = the paper's
trained q, k; self; none). Prints the table of mean ± std val accuracy per steps (the one quoted in
``configs/_base/synthetic_motion.yaml``) and writes ``OUT/selection.json``. 84 runs, about 12 minutes on 2 cores.
``--dataset synthetic_antispoof --metric acer`` does the same for the anti-spoofing recipe (lower ACER is better).
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

#: (row name, method, extra overrides)
ROWS = [
    ("teacher", "teacher", ()),
    ("baseline", "baseline", ()),
    ("kd", "kd", ()),
    ("dad", "dad", ()),
    ("rad weighting=attention", "rad", ("loss.rad.weighting=attention",)),
    ("rad weighting=self", "rad", ("loss.rad.weighting=self",)),
    ("rad weighting=none", "rad", ("loss.rad.weighting=none",)),
]


def _parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", default="100,150,250,400")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--val-size", type=int, default=1000)
    ap.add_argument("--dataset", default="synthetic_motion")
    ap.add_argument(
        "--metric", default="accuracy", help="a metric of the config's eval.metrics (acer: lower is better)"
    )
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default="runs/select_main_job")
    return ap.parse_args()


def _phases(a: argparse.Namespace, steps: list[int], out: Path) -> list[list[tuple[Job, tuple[str, int, int]]]]:
    """(job, (row name, steps, seed)) per phase: teachers first, the students reuse them from the cache."""
    jobs = []
    for phase in (ROWS[:2], ROWS[2:]):
        ph = []
        for st in steps:
            for name, method, extra in phase:
                for seed in range(a.seeds):
                    over = (
                        "train.progress=false",
                        f"train.steps={st}",
                        "dataset.eval_split=val",
                        f"dataset.split_kwargs.val.size={a.val_size}",
                        f"output.cache={out / 'cache'}",
                        *extra,
                    )
                    tag = name.replace(" ", "_").replace("=", "-")
                    ph.append(
                        (
                            Job(a.dataset, method, seed, over, str(out / "runs" / f"{tag}-st{st}-s{seed}")),
                            (name, st, seed),
                        )
                    )
        jobs.append(ph)
    return jobs


def main() -> None:
    a = _parse()
    steps = [int(s) for s in a.steps.split(",")]
    out = Path(a.out)
    acc: dict[tuple[str, int], list[float]] = {}
    phases = _phases(a, steps, out)
    with job_pool(a.workers) as pool:
        progress = Progress(sum(len(ph) for ph in phases))
        for ph in phases:
            for (_, (name, st, _seed)), res in zip(ph, map_jobs([j for j, _ in ph], pool, progress), strict=True):
                acc.setdefault((name, st), []).append(res["final"][a.metric])
    print(f"{a.dataset}: val {a.metric} ({a.val_size} samples), mean ± std over {a.seeds} seeds, by training steps")
    print("| method | " + " | ".join(str(s) for s in steps) + " |")
    print("|---|" + "---|" * len(steps))
    table = {}
    for name, _, _ in ROWS:
        cells = []
        for st in steps:
            v = acc[(name, st)]
            m, sd = mean_std(v)
            table.setdefault(name, {})[st] = {"accuracy": v, "mean": m, "std": sd}
            cells.append(f"{m:.3f} ± {sd:.3f}")
        print(f"| {name} | " + " | ".join(cells) + " |")
    out.mkdir(parents=True, exist_ok=True)
    (out / "selection.json").write_text(
        json.dumps({"dataset": a.dataset, "metric": a.metric, "val_size": a.val_size, "table": table}, indent=1)
    )


if __name__ == "__main__":
    main()
