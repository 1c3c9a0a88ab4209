"""The ``mmh`` command line.

::

    mmh train CONFIG [key=value ...] [--run-dir DIR] [--stop-after-steps N]
    mmh train --resume RUN_DIR [key=value ...]
    mmh eval RUN_DIR [--split test] [--stage NAME]
    mmh report RUN_DIR [RUN_DIR ...] --out DIR
    mmh benchmark mmh [--quick] [--seeds N] [--out DIR] [--workers W]
    mmh export RUN_DIR [--stage student] [--format torchscript|onnx] --out FILE
    mmh list [methods|models|datasets|configs]

CONFIG is a YAML path or a shipped config ``<dataset>/<method>`` (e.g. ``synthetic_motion/rad``; ``mmh list configs``;
they live in ``mmh/configs`` of an installed package, or the checkout's ``configs/``; ``$MMH_CONFIG_DIR`` overrides).
Run under ``torchrun --nproc_per_node N -m mmh.cli train ...`` for DDP (rank 0 writes the run directory).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from ._optional import MissingExtraError

__all__ = ["main", "build_parser"]


def _add_train(sub: Any) -> None:
    t = sub.add_parser("train", help="train one method from a config; writes a run directory")
    t.add_argument("args", nargs="*", metavar="CONFIG [key=value ...]",
                   help="config path or <dataset>/<method>, then overrides such as train.steps=100")
    t.add_argument("--run-dir", type=Path, default=None, help="run directory (default: output.root/<auto name>)")
    t.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR",
                   help="continue a killed run in RUN_DIR (its config.yaml is used unless CONFIG is given)")
    t.add_argument("--stop-after-steps", type=int, default=None, metavar="N",
                   help="stop the current stage after N steps, as if killed (resume later with --resume)")


def _add_eval_report(sub: Any) -> None:
    e = sub.add_parser("eval", help="evaluate a run's final network (or a stage's) on a split")
    e.add_argument("run_dir", type=Path)
    e.add_argument("--split", default=None, help="dataset split (default: the config's dataset.eval_split)")
    e.add_argument("--stage", default=None, help="stage name (default: the last stage)")

    r = sub.add_parser("report", help="markdown table + PNG plots from run directories")
    r.add_argument("run_dirs", nargs="+", type=Path)
    r.add_argument("--out", type=Path, required=True)


def _add_benchmark(sub: Any) -> None:
    b = sub.add_parser("benchmark", help="run a benchmark: 'mmh' is the main job, 'thesis' the thesis methods")
    b.add_argument("name", choices=["mmh", "thesis"])
    b.add_argument("--quick", action="store_true", help="short smoke version (mmh < 2 min, thesis < 3 min)")
    b.add_argument("--seeds", type=int, default=None,
                   help="number of seeds (default: mmh 3, thesis 2; 1 with --quick)")
    b.add_argument("--out", type=Path, default=None, help="output directory (default runs/benchmark_<name>)")
    b.add_argument("--workers", type=int, default=2, help="parallel processes (one thread each)")
    b.add_argument("--steps", type=int, default=None, help="override the number of training steps")
    b.add_argument("--no-antispoof", action="store_true", help="skip the ACER column (synthetic_antispoof)")
    b.add_argument("overrides", nargs="*", metavar="key=value", help="extra config overrides for every run")


def _add_export_list(sub: Any) -> None:
    x = sub.add_parser("export", help="write a run's network as TorchScript or ONNX (+ a JSON sidecar)")
    x.add_argument("run_dir", type=Path)
    x.add_argument("--stage", default=None, help="stage name (default: the last stage, e.g. 'student')")
    x.add_argument("--format", dest="fmt", default="torchscript", help="torchscript | onnx (needs mmh[export])")
    x.add_argument("--out", type=Path, required=True, help="output file; the sidecar is OUT.json")
    x.add_argument("--opset", type=int, default=17, help="ONNX opset version")

    ls = sub.add_parser("list", help="list registered methods, models, datasets or shipped configs")
    ls.add_argument("what", choices=["methods", "models", "datasets", "configs"], nargs="?", default="methods")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``mmh``."""
    p = argparse.ArgumentParser(prog="mmh", description="privileged-modality learning: train with every modality, "
                                                         "deploy with the ones you have")
    sub = p.add_subparsers(dest="command", required=True)
    for add in (_add_train, _add_eval_report, _add_benchmark, _add_export_list):
        add(sub)
    return p


def _split_train_args(args: list[str], resume: Path | None) -> tuple[Path | None, list[str]]:
    from .config import find_config

    config = None
    overrides = []
    for a in args:
        if "=" in a:
            overrides.append(a)
        elif config is None:
            config = find_config(a)
        else:
            raise SystemExit(f"mmh train: unexpected argument {a!r} (overrides look like key=value)")
    if config is None:
        if resume is None:
            raise SystemExit("mmh train: give a CONFIG (or --resume RUN_DIR)")
        config = resume / "config.yaml"
        if not config.is_file():
            raise SystemExit(f"mmh train: {resume} is not a run directory (no config.yaml)")
    return config, overrides


def _cmd_train(ns: argparse.Namespace) -> int:
    from .config import load_config
    from .runner import run_experiment
    from .utils.distributed import is_main_process

    config, overrides = _split_train_args(ns.args, ns.resume)
    cfg = load_config(config, overrides)
    run_dir = ns.resume or ns.run_dir
    res = run_experiment(cfg, run_dir=run_dir, resume=ns.resume is not None, stop_after_steps=ns.stop_after_steps)
    if is_main_process():
        print(json.dumps({"run_dir": res["run_dir"], "status": res["status"], "final": res.get("final")}, indent=2))
    return 0


def _cmd_eval(ns: argparse.Namespace) -> int:
    from .config import load_config
    from .evaluation import evaluate_model
    from .train.checkpoint import load_model
    from .runner import load_results, load_split, stage_model_path
    from .utils.device import resolve_device
    from .utils.io import write_json

    res = load_results(ns.run_dir)
    cfg = load_config(ns.run_dir / "config.yaml")
    stage = ns.stage or list(res["stages"])[-1]
    if stage not in res["stages"]:
        raise SystemExit(f"mmh eval: run has no stage {stage!r} (stages: {list(res['stages'])})")
    model = load_model(stage_model_path(ns.run_dir, res, stage))
    split = ns.split or cfg["dataset"]["eval_split"]
    device = resolve_device(cfg.get("device", "auto"))
    metrics = evaluate_model(model, load_split(cfg, split), list(cfg["eval"]["metrics"]),
                             int(cfg["eval"]["batch_size"]), device)
    write_json({"stage": stage, "split": split, "metrics": metrics}, ns.run_dir / f"eval_{stage}_{split}.json")
    print(json.dumps({"stage": stage, "split": split, "metrics": metrics}, indent=2))
    return 0


def _cmd_report(ns: argparse.Namespace) -> int:
    from .evaluation.report import make_report

    paths = make_report(ns.run_dirs, ns.out)
    print((paths["report"]).read_text())
    return 0


def _cmd_benchmark(ns: argparse.Namespace) -> int:
    out = ns.out if ns.out is not None else Path(f"runs/benchmark_{ns.name}")
    if ns.name == "thesis":
        from .benchmarks.thesis import run_thesis_benchmark

        seeds = ns.seeds if ns.seeds is not None else (1 if ns.quick else 2)
        run_thesis_benchmark(quick=ns.quick, seeds=seeds, out=out, workers=ns.workers, steps=ns.steps,
                             extra_overrides=ns.overrides)
        return 0
    from .benchmarks.main_job import benchmark_mmh

    seeds = ns.seeds if ns.seeds is not None else (1 if ns.quick else 3)
    benchmark_mmh(quick=ns.quick, seeds=seeds, out=out, workers=ns.workers, steps=ns.steps,
                  antispoof=not ns.no_antispoof, extra_overrides=ns.overrides)
    return 0


def _cmd_export(ns: argparse.Namespace) -> int:
    from .export import export_run

    sidecar = export_run(ns.run_dir, ns.out, stage=ns.stage, fmt=ns.fmt, opset=ns.opset)
    print(json.dumps({"out": str(ns.out), "sidecar": f"{ns.out}.json", "stage": sidecar["stage"],
                      "inputs": [i["name"] for i in sidecar["inputs"]], "check": sidecar["check"]}, indent=2))
    return 0


def _cmd_list(ns: argparse.Namespace) -> int:
    if ns.what == "methods":
        from .methods import list_methods

        for name, desc in list_methods(with_descriptions=True).items():  # type: ignore[union-attr]
            print(f"{name:14s} {desc}")
    elif ns.what == "models":
        from .models import list_models

        print("\n".join(list_models()))
    elif ns.what == "datasets":
        from .data import list_datasets

        print("\n".join(list_datasets()))
    else:
        from .config import config_dir

        root = config_dir()
        names = (p.relative_to(root).with_suffix("") for p in root.rglob("*.yaml"))  # _base folders: not configs
        print("\n".join(sorted(n.as_posix() for n in names if not any(part.startswith("_") for part in n.parts))))
    return 0


_COMMANDS = {"train": _cmd_train, "eval": _cmd_eval, "report": _cmd_report, "benchmark": _cmd_benchmark,
             "export": _cmd_export, "list": _cmd_list}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mmh`` console script; returns the exit code."""
    parser = build_parser()
    ns, extra = parser.parse_known_args(argv)
    if extra:  # key=value overrides may come after options
        target = {"train": "args", "benchmark": "overrides"}.get(ns.command)
        if target is None or any("=" not in e or e.startswith("-") for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        getattr(ns, target).extend(extra)
    try:
        return _COMMANDS[ns.command](ns)
    except (FileNotFoundError, KeyError, ValueError, TypeError, MissingExtraError) as exc:
        if os.environ.get("MMH_DEBUG"):
            raise
        print(f"mmh {ns.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
