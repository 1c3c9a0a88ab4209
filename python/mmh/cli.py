"""The ``mmh`` command line.

::

    mmh train CONFIG [key=value ...] [--run-dir DIR [--overwrite]] [--stop-after-steps N]
    mmh train --resume RUN_DIR [key=value ...]   (only resume-safe settings: mmh.config.RESUME_SAFE)
    mmh eval RUN_DIR [--split test] [--stage NAME] [--out FILE]
    mmh report RUN_DIR [RUN_DIR ...] --out DIR
    mmh benchmark mmh [--quick] [--seeds N] [--out DIR] [--workers W]
    mmh benchmark speed [--device cpu|cuda] [--recipe NAME] [--batch B] [--steps N] [--quick] [--no-compile] [--out DIR]
    mmh export RUN_DIR [--stage student] [--format torchscript|onnx] --out FILE
    mmh list [methods|models|datasets|configs]
    mmh data check ROOT|CSV [--classes a,b] [--modalities a,b] [--allow-overlap] [--resolution N] [--out DIR]
    mmh weights list | mmh weights fetch imagenet|kinetics400 ARCH   (the torch hub cache pretrained= reads)
    mmh prepare flow SRC DST [--workers N] [--bound B] [--algorithm tvl1|farneback] [--glob '*.jpg']

CONFIG is a YAML path or a shipped config ``<dataset>/<method>`` (e.g. ``synthetic_motion/rad``; ``mmh list configs``;
they live in ``mmh/configs`` of an installed package, or the checkout's ``configs/``; ``$MMH_CONFIG_DIR`` overrides).
Run under ``torchrun --nproc_per_node N -m mmh.cli train ...`` for DDP (rank 0 writes the run directory).

Every failure ends in one line on stderr, ``mmh <command>: error: <what, naming the argument or file>``, and exit
status 2 for bad input (a config, an argument, a data or run file) or 1 for a fault (a failed write such as a full
disk, a non-finite loss, an internal error); ``--debug`` (or ``MMH_DEBUG=1``) shows the traceback instead. A training
run stopped by SIGTERM/SIGINT (in training: at the step reached; elsewhere: after the write in flight, its
``results.json`` marked ``interrupted``) says where it stopped and how to resume, with exit status 128 + the signal
number; Ctrl-C elsewhere exits with 130.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any, NoReturn

from ._optional import MissingExtraError

__all__ = ["main", "build_parser"]


class _UsageError(ValueError):
    """Bad command-line use found after parsing (reported like argparse's errors: one line, exit status 2)."""


class _Parser(argparse.ArgumentParser):
    """argparse with its errors as one line, ``mmh <command>: error: ...`` (no usage block), exit status 2."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {_one_line(message)} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def _add_train(sub: Any) -> None:
    t = sub.add_parser("train", help="train one method from a config; writes a run directory")
    t.add_argument(
        "args",
        nargs="*",
        metavar="CONFIG [key=value ...]",
        help="config path or <dataset>/<method>, then overrides such as train.steps=100",
    )
    t.add_argument(
        "--run-dir",
        type=Path,
        default=None,
        help="run directory (default: output.root/<auto name>); one that holds a run needs --overwrite",
    )
    t.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run --run-dir already holds (its config, records and stages/ are removed)",
    )
    t.add_argument(
        "--resume",
        type=Path,
        default=None,
        metavar="RUN_DIR",
        help="continue a killed run in RUN_DIR with its config.yaml (overrides: only resume-safe "
        "settings such as train.progress, threads, device; a CONFIG given must resolve to the same)",
    )
    t.add_argument(
        "--stop-after-steps",
        type=int,
        default=None,
        metavar="N",
        help="stop the current stage after N steps, as if killed (resume later with --resume)",
    )


def _add_eval_report(sub: Any) -> None:
    e = sub.add_parser("eval", help="evaluate a run's final network (or a stage's) on a split")
    e.add_argument("run_dir", type=Path)
    e.add_argument("--split", default=None, help="dataset split (default: the config's dataset.eval_split)")
    e.add_argument("--stage", default=None, help="stage name (default: the last stage)")
    e.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="FILE",
        help="write the metrics JSON here (default: RUN_DIR/eval_<stage>_<split>.json; a read-only run folder "
        "only gets a warning)",
    )

    r = sub.add_parser("report", help="markdown table + PNG plots from run directories")
    r.add_argument("run_dirs", nargs="+", type=Path)
    r.add_argument("--out", type=Path, required=True)


def _add_benchmark(sub: Any) -> None:
    b = sub.add_parser(
        "benchmark",
        help="run a benchmark: 'mmh' is the main job, 'thesis' the thesis methods, 'speed' the training step's cost",
    )
    b.add_argument("name", choices=["mmh", "thesis", "speed"])
    b.add_argument("--quick", action="store_true", help="short smoke version (mmh < 2 min, thesis < 3 min)")
    b.add_argument("--seeds", type=int, default=None, help="number of seeds (default: mmh 5, thesis 2; 1 with --quick)")
    b.add_argument("--out", type=Path, default=None, help="output directory (default runs/benchmark_<name>)")
    b.add_argument("--workers", type=int, default=2, help="parallel processes (one thread each)")
    b.add_argument("--steps", type=int, default=None, help="override the number of training steps")
    b.add_argument("--no-antispoof", action="store_true", help="skip the ACER column (synthetic_antispoof)")
    b.add_argument("--device", default="cpu", help="speed: cpu | cuda (default cpu)")
    b.add_argument("--recipe", default=None, help="speed: a recipe (papers/mmh/casia_surf/rad) or a folder of them")
    b.add_argument("--batch", type=int, default=None, help="speed: batch size (default: the recipes'; 4 with --quick)")
    b.add_argument("--no-compile", action="store_true", help="speed: skip the train.compile variant")
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


def _add_data(sub: Any) -> None:
    d = sub.add_parser("data", help="check your own data (a paired folder or a manifest CSV) before training")
    dsub = d.add_subparsers(dest="data_command", required=True)
    c = dsub.add_parser(
        "check",
        help="values, outliers, unreadable files, sizes/channels, duplicates, split overlap, "
        "labels, file names; exit 2 on errors",
    )
    c.add_argument(
        "target", metavar="ROOT|CSV", help="a paired_folder root (ROOT/<split>/<class>/<sample>/) or a manifest CSV"
    )
    c.add_argument(
        "--dataset", default=None, help="dataset name (default: paired_folder for a folder, manifest for a .csv file)"
    )
    c.add_argument("--modalities", default=None, help="comma-separated modalities (default: all found)")
    c.add_argument("--classes", default=None, help="comma-separated class names: a label outside them is an error")
    c.add_argument("--splits", default=None, help="comma-separated splits (default: every split present)")
    c.add_argument(
        "--allow-overlap", action="store_true", help="same content within or across splits: a warning, not an error"
    )
    c.add_argument(
        "--resolution",
        type=int,
        default=None,
        help="resize every modality to this size (as training would): sizes may then differ",
    )
    c.add_argument("--num-frames", type=int, default=None, help="frames per clip (data with clip folders)")
    c.add_argument("--depth-scale", type=float, default=None, help="16-bit images are divided by this (default 65535)")
    c.add_argument(
        "--outlier-z", type=float, default=None, help="robust z-score beyond which a file is an outlier (default 8)"
    )
    c.add_argument("--out", type=Path, default=None, help="also write data_check.json and data_check.txt here")
    c.add_argument("--json", action="store_true", help="print the JSON report instead of the text")
    _add_debug(c)


def _add_prepare(sub: Any) -> None:
    p = sub.add_parser("prepare", help="derive data the loaders read: optical flow frames from RGB frames")
    psub = p.add_subparsers(dest="prepare_command", required=True)
    f = psub.add_parser(
        "flow",
        help="optical flow of every folder of RGB frames under SRC, as DST/<video>/flow_{x,y}_00001.jpg "
        "(resumable: finished videos are skipped; needs mmh[flow])",
    )
    f.add_argument("src", metavar="SRC", type=Path, help="a folder holding one folder of RGB frames per video")
    f.add_argument("dst", metavar="DST", type=Path, help="where the flow folders go (the loaders' flow_root)")
    f.add_argument(
        "--workers", type=int, default=None, help="parallel processes, one per video (default: every CPU core)"
    )
    f.add_argument("--bound", type=float, default=20.0, help="pixels per frame mapped to [0, 255] as [-B, B]")
    f.add_argument("--algorithm", choices=["tvl1", "farneback"], default="tvl1", help="OpenCV algorithm")
    f.add_argument("--glob", default="*.jpg", help="the RGB frames' file names (default '*.jpg')")
    f.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_debug(f)


def _add_weights(sub: Any) -> None:
    w = sub.add_parser("weights", help="pretrained weights in the torch hub cache (model.pretrained reads only there)")
    wsub = w.add_subparsers(dest="weights_command", required=True)
    ls = wsub.add_parser("list", help="the cache folder, the published files mmh reads (cached or missing), others")
    f = wsub.add_parser(
        "fetch", help="download NAME's weights for ARCH into the cache (network needed; torch's hash check)"
    )
    f.add_argument("name", choices=["imagenet", "kinetics400"])
    f.add_argument("arch", help="imagenet: resnet18 | resnet34 | resnet50; kinetics400: r2plus1d_18 | i3d")
    for p in (ls, f):
        _add_debug(p)


def _add_debug(parser: argparse.ArgumentParser) -> None:
    """``--debug`` on ``parser`` (SUPPRESS: given before or after a command, neither place hides the other)."""
    parser.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show the traceback of a failure instead of one line (also: MMH_DEBUG=1)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``mmh``."""
    p = _Parser(
        prog="mmh", description="privileged-modality learning: train with every modality, deploy with the ones you have"
    )
    _add_debug(p)
    sub = p.add_subparsers(dest="command", required=True)
    for add in (_add_train, _add_eval_report, _add_benchmark, _add_export_list, _add_data, _add_prepare, _add_weights):
        add(sub)
    for command in sub.choices.values():  # --debug after the command too (SUPPRESS: neither place hides the other)
        _add_debug(command)
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
            raise _UsageError(f"unexpected argument {a!r} (overrides look like key=value)")
    if config is None and resume is None:
        raise _UsageError("give a CONFIG (or --resume RUN_DIR)")
    if config is None and not (resume / "config.yaml").is_file():  # type: ignore[operator]
        raise FileNotFoundError(f"--resume {resume}: not a run directory (no config.yaml)")
    return config, overrides


def _cmd_train(ns: argparse.Namespace) -> int:
    from .config import load_config, load_run_config
    from .runner import is_run_dir, run_experiment
    from .utils.distributed import is_main_process

    if ns.resume is not None and ns.overwrite:
        raise _UsageError("--resume and --overwrite exclude each other (resume continues a run, overwrite replaces it)")
    if ns.resume is not None and ns.run_dir is not None and ns.run_dir.resolve() != ns.resume.resolve():
        raise _UsageError(f"--resume {ns.resume} and --run-dir {ns.run_dir} name different folders")
    config, overrides = _split_train_args(ns.args, ns.resume)
    if config is None:  # the run's own config: keys it added with +key are part of it
        cfg = load_run_config(ns.resume, overrides)
    elif config.name == "config.yaml" and is_run_dir(config.parent):  # a new run from an old run's settings
        cfg = load_run_config(config.parent, overrides)
    else:
        cfg = load_config(config, overrides)
    run_dir = ns.resume or ns.run_dir
    res = run_experiment(
        cfg, run_dir=run_dir, resume=ns.resume is not None, stop_after_steps=ns.stop_after_steps, overwrite=ns.overwrite
    )
    if is_main_process():
        print(json.dumps({"run_dir": res["run_dir"], "status": res["status"], "final": res.get("final")}, indent=2))
    return 0


def _cmd_eval(ns: argparse.Namespace) -> int:
    from .config import load_run_config
    from .evaluation import evaluate_model
    from .runner import load_results, load_split, load_stage_network
    from .utils.device import resolve_device
    from .utils.io import write_json

    res = load_results(ns.run_dir)
    cfg = load_run_config(ns.run_dir)
    stage = ns.stage or list(res["stages"])[-1]
    if stage not in res["stages"]:
        raise _UsageError(f"--stage {stage!r}: the run has no such stage (stages: {list(res['stages'])})")
    model, _path = load_stage_network(ns.run_dir, res, stage)  # checked against the run: modalities, classes
    split = ns.split or cfg["dataset"]["eval_split"]
    device = resolve_device(cfg.get("device", "auto"))
    ev = cfg["eval"]  # the split is evaluated: eval transforms and eval.clips clips per video, whichever split
    metrics = evaluate_model(
        model,
        load_split(cfg, split, role="eval"),
        list(ev["metrics"]),
        int(ev["batch_size"]),
        device,
        clips=int(ev.get("clips", 1)),
    )
    result = {"stage": stage, "split": split, "metrics": metrics}
    print(json.dumps(result, indent=2), flush=True)  # first: a run folder that cannot be written loses nothing
    if ns.out is not None:  # asked for: a failed write is a fault naming the file
        write_json(result, ns.out)
        return 0
    path = ns.run_dir / f"eval_{stage}_{split}.json"
    try:
        write_json(result, path)
    except OSError as exc:  # a shared, read-only run folder: the metrics are printed above
        print(
            f"mmh eval: warning: {_one_line(exc.strerror) if exc.strerror and exc.filename is None else _message(exc)}"
            "; the metrics are printed only (--out FILE writes them elsewhere)",
            file=sys.stderr,
        )
    return 0


def _cmd_report(ns: argparse.Namespace) -> int:
    from .evaluation.report import make_report

    paths = make_report(ns.run_dirs, ns.out)
    print((paths["report"]).read_text())
    return 0


def _cmd_benchmark(ns: argparse.Namespace) -> int:
    out = ns.out if ns.out is not None else Path(f"runs/benchmark_{ns.name}")
    if ns.name == "speed":
        from .benchmarks.speed import run_speed

        report = run_speed(
            device=ns.device,
            recipe=ns.recipe,
            batch=ns.batch,
            steps=ns.steps,
            quick=ns.quick,
            out=out,
            overrides=ns.overrides,
            compile_=False if ns.no_compile else None,
        )
        print((out / "speed.md").read_text() if report else "", end="")
        return 0
    if ns.name == "thesis":
        from .benchmarks.thesis import run_thesis_benchmark

        seeds = ns.seeds if ns.seeds is not None else (1 if ns.quick else 2)
        run_thesis_benchmark(
            quick=ns.quick, seeds=seeds, out=out, workers=ns.workers, steps=ns.steps, extra_overrides=ns.overrides
        )
        return 0
    from .benchmarks.main_job import DEFAULT_SEEDS, benchmark_mmh

    seeds = ns.seeds if ns.seeds is not None else (1 if ns.quick else DEFAULT_SEEDS)
    benchmark_mmh(
        quick=ns.quick,
        seeds=seeds,
        out=out,
        workers=ns.workers,
        steps=ns.steps,
        antispoof=not ns.no_antispoof,
        extra_overrides=ns.overrides,
    )
    return 0


def _cmd_export(ns: argparse.Namespace) -> int:
    from .export import export_run

    sidecar = export_run(ns.run_dir, ns.out, stage=ns.stage, fmt=ns.fmt, opset=ns.opset)
    print(
        json.dumps(
            {
                "out": str(ns.out),
                "sidecar": f"{ns.out}.json",
                "stage": sidecar["stage"],
                "inputs": [i["name"] for i in sidecar["inputs"]],
                "check": sidecar["check"],
            },
            indent=2,
        )
    )
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


def _cmd_data(ns: argparse.Namespace) -> int:
    from .data.check import DataCheckError, check_data

    def names(text: str | None) -> list[str] | None:
        return None if text is None else [t.strip() for t in text.split(",") if t.strip()]

    kwargs: dict[str, Any] = {
        "modalities": names(ns.modalities),
        "classes": names(ns.classes),
        "resolution": ns.resolution,
        "num_frames": ns.num_frames,
        "depth_scale": ns.depth_scale,
        "outlier_z": ns.outlier_z,
    }
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if ns.allow_overlap:
        kwargs["allow_overlap"] = True
    report = check_data(ns.target, dataset=ns.dataset, splits=names(ns.splits), **kwargs)
    if ns.out is not None:
        report.write(ns.out)
    print(json.dumps(report.to_dict(), indent=2) if ns.json else report.to_text(), end="" if not ns.json else "\n")
    if not report.ok:
        raise DataCheckError(report)  # one "mmh data: error: ..." line, exit status 2
    return 0


def _cmd_prepare(ns: argparse.Namespace) -> int:
    from .data.flow import prepare_flow

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    workers = ns.workers if ns.workers is not None else max(1, cores or 1)
    summary = prepare_flow(
        ns.src,
        ns.dst,
        algorithm=ns.algorithm,
        bound=ns.bound,
        workers=workers,
        glob=ns.glob,
        progress=not ns.no_progress,
    )
    print(json.dumps(summary.to_dict(), indent=2), flush=True)
    if summary.failed:  # the others are written; a rerun computes only what is missing
        video, error = summary.failed[0]
        raise ValueError(f"{len(summary.failed)} of {summary.videos} video(s) failed, e.g. {video}: {error}")
    return 0


def _cmd_weights(ns: argparse.Namespace) -> int:
    from .models.pretrained import cache_dir, fetch_weights, published_weights

    if ns.weights_command == "fetch":
        for path in fetch_weights(ns.name, ns.arch):
            print(path)
        return 0
    folder = cache_dir()

    def size(path: Path) -> str:
        return f"{path.stat().st_size / 2**20:.1f} MiB" if path.is_file() else "missing"

    rows = [("NAME", "ARCH", "FILE", "SIZE")]
    entries = published_weights()
    for e in entries:
        rows.append((e.name, f"{e.arch} ({e.variant})" if e.variant else e.arch, e.file, size(folder / e.file)))
    known = {e.file for e in entries}
    others = sorted(p for p in folder.iterdir() if p.is_file() and p.name not in known) if folder.is_dir() else []
    rows += [("-", "-", p.name, size(p)) for p in others]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    print(f"cache: {folder}")
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:3], widths, strict=True)) + f"  {r[3]}")
    return 0


_COMMANDS = {
    "train": _cmd_train,
    "eval": _cmd_eval,
    "report": _cmd_report,
    "benchmark": _cmd_benchmark,
    "export": _cmd_export,
    "list": _cmd_list,
    "data": _cmd_data,
    "weights": _cmd_weights,
    "prepare": _cmd_prepare,
}


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _message(exc: BaseException) -> str:
    """An exception's message (a KeyError's without the quotes repr adds), on one line."""
    if isinstance(exc, KeyError) and len(exc.args) == 1 and isinstance(exc.args[0], str):
        return _one_line(exc.args[0])
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        return _one_line(f"{exc.strerror}: {exc.filename}")
    return _one_line(str(exc)) or type(exc).__name__


def _interrupted_type() -> type | None:
    """``mmh.train.TrainingInterrupted`` (SIGTERM/SIGINT during training, after latest.pt is saved), if defined."""
    try:
        from .train import TrainingInterrupted  # type: ignore[attr-defined]
    except ImportError:
        return None
    return TrainingInterrupted


def _bad_input_types() -> tuple[type, ...]:
    """Exceptions that mean bad input (exit status 2): a config, an argument, a data or run file."""
    types: list[type] = [
        ValueError,
        KeyError,
        TypeError,
        FileNotFoundError,
        NotADirectoryError,
        IsADirectoryError,
        MissingExtraError,
    ]
    try:
        import yaml

        types.append(yaml.YAMLError)
    except ImportError:  # pragma: no cover - yaml is a dependency
        pass
    return tuple(types)


def _failure(ns: argparse.Namespace, exc: BaseException) -> tuple[int, str] | None:
    """(exit status, the one line for stderr) for a failure of ``mmh <ns.command>``; None for exits to pass on."""
    command = ns.command
    interrupted = _interrupted_type()
    if interrupted is not None and isinstance(exc, interrupted):
        signum = int(getattr(exc, "signum", signal.SIGINT))
        step, ckpt, run = getattr(exc, "step", None), getattr(exc, "checkpoint", None), getattr(exc, "run_dir", None)
        name = signal.Signals(signum).name
        if ckpt is None and run is None and step is None:  # before the run folder was written
            return 128 + signum, f"mmh {command}: interrupted by {name} before the run folder was written"
        if run is None:  # latest.pt is <run>/stages/<stage>/latest.pt; else the folder the command named
            run = Path(ckpt).parents[2] if ckpt else (getattr(ns, "resume", None) or getattr(ns, "run_dir", None))
        where = f" at step {step}" if step is not None else ""
        resume = f"mmh train --resume {run}" if run is not None else "mmh train --resume RUN_DIR"
        return 128 + signum, f"mmh {command}: interrupted by {name}{where}; resume with {resume}"
    if isinstance(exc, KeyboardInterrupt):
        return 130, f"mmh {command}: interrupted"
    if isinstance(exc, _bad_input_types()):
        return 2, f"mmh {command}: error: {_message(exc)}"
    if isinstance(exc, FloatingPointError):  # mmh.train.NonFiniteError: the loss or the weights turned non-finite
        return 1, f"mmh {command}: error: training stopped: {_message(exc)}"
    if isinstance(exc, OSError):  # a fault: a full disk, a lost mount, a permission ...
        return 1, f"mmh {command}: error: {_message(exc)}"
    if isinstance(exc, Exception):  # RuntimeError and anything unforeseen: a fault of the run or of mmh
        return 1, f"mmh {command}: error: {type(exc).__name__}: {_message(exc)} (--debug shows the traceback)"
    return None


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mmh`` console script; returns the exit code (see the module docstring)."""
    parser = build_parser()
    try:
        ns, extra = parser.parse_known_args(argv)
        if extra:  # key=value overrides may come after options
            target = {"train": "args", "benchmark": "overrides"}.get(ns.command)
            if target is None or any("=" not in e or e.startswith("-") for e in extra):
                print(
                    f"mmh {ns.command}: error: unrecognized arguments: {' '.join(extra)} (see mmh {ns.command} --help)",
                    file=sys.stderr,
                )
                return 2
            getattr(ns, target).extend(extra)
    except SystemExit as exc:  # --help, or a usage error already reported on one line
        return exc.code if isinstance(exc.code, int) else 2
    debug = getattr(ns, "debug", False) or os.environ.get("MMH_DEBUG", "") not in ("", "0")
    try:
        return _COMMANDS[ns.command](ns)
    except BaseException as exc:  # noqa: BLE001 - every failure becomes one line (or the traceback with --debug)
        failure = _failure(ns, exc)
        if failure is None or (debug and failure[0] in (1, 2)):
            raise
        print(failure[1], file=sys.stderr, flush=True)
        return failure[0]


if __name__ == "__main__":
    sys.exit(main())
