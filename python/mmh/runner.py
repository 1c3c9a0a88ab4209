"""The runner: a method's stages through the trainer, the stage cache, evaluation and ``results.json``.

It sits above :mod:`mmh.methods` (the recipes) and :mod:`mmh.train` (the trainer). A run directory holds::

    config.yaml            the resolved config
    dataset.json           class names, input shapes, normalisation (what a deployment needs)
    data_check.json/.txt   own data (paired_folder, manifest): the report of mmh.data.check, run before training
    results.json           status, per-stage source (a :class:`Source` record) / cache key / metrics, final metrics
    stages/<name>/         latest.pt, best.pt, metrics.csv, model.pt (the stage's network), <artifact>.pt

Stage artifacts are cached in ``output.cache`` (default ``<output.root>/cache``) under ``<kind>-<hash>``, the hash
covering everything the result depends on (seed, dataset, model, the stage's training settings and loss entries,
and its inputs' hashes): a teacher trained once serves every student method with the same settings. A stage's
extra artifacts (:meth:`mmh.train.StageModule.artifacts`, e.g. ADMD's discriminator) are saved and cached beside
its ``model.pt``; :func:`stage_artifact_path` finds either. ``stages.<section>.checkpoint: PATH`` loads a model
artifact instead of training that stage; ``stages.<section>.init_from: PATH`` starts the stage's fresh network from
another run's ``model.pt`` and trains it (:func:`mmh.models.pretrained.init_from_model_file`; the file's SHA-256 is
part of the stage key).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import re
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset

from .config import config_hash, get_path, load_run_config, resume_changes, save_config, stage_train_config
from .data import build_dataset, dataset_facts, materialize
from .data.check import REPORT_FILES, DataCheckError, DataReport, check_before_training
from .data.transforms import TransformedDataset, build_transforms
from .evaluation import evaluate_model
from .evaluation.prediction import multi_clip_kwargs
from .methods import Stage, StageContext, method_stages
from .models.pretrained import init_from_model_file, resolve_path, weights_fingerprint
from .train import (
    NonFiniteError,
    StageModule,
    Trainer,
    TrainingInterrupted,
    TrainResult,
    check_finite,
    load_model,
    save_model,
)
from .train.checkpoint import save_tensors
from .utils.device import resolve_device
from .utils.distributed import elastic_job_id, elastic_restart_count, init_distributed_from_env
from .utils.io import atomic_copy, json_form, read_json, remove_stale_temps, write_json
from .utils.seed import seed_everything

__all__ = [
    "run_experiment",
    "load_split",
    "load_results",
    "stage_model_path",
    "stage_artifact_path",
    "stage_key",
    "default_run_dir",
    "dataset_record",
    "split_kwargs",
    "Source",
    "CACHE_VERSION",
    "is_run_dir",
    "network_record",
    "check_stage_network",
    "load_stage_network",
    "expected_network",
    "reproduction_record",
]

#: Bump when a change makes cached artifacts stale.
CACHE_VERSION = 1
#: Training keys that do not change the trained weights (left out of cache keys).
_COSMETIC = ("progress", "log_every", "tensorboard", "checkpoint_every", "eval_every", "num_workers")
#: Training settings that change how fast a stage trains, not what it computes (the teacher cache reads back the
#: values the teacher computed): not part of a stage's cache key.
_SPEED_ONLY = ("teacher_cache", "teacher_cache_mb")
#: Names of stages and artifacts: they become file names.
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
#: What a run writes at the top of its folder; ``--overwrite`` removes these, ``eval_*.json`` and ``stages/`` only.
_RUN_FILES = ("results.json", "config.yaml", "dataset.json", *REPORT_FILES)
_EVAL_FILE = re.compile(r"eval_.+\.json")
#: A temporary file in the stage cache untouched for this long (seconds) is a killed publisher's: removed.
STALE_CACHE_TEMP_S = 600.0

_DATASETS: dict[str, Dataset] = {}


def load_split(cfg: Mapping[str, Any], split: str, *, role: str | None = None) -> Dataset:
    """``build_dataset(cfg.dataset.name, split, **cfg.dataset.kwargs)`` with the config's transforms, memoised per
    process.

    ``dataset.cache`` on: the untransformed split is materialised in memory once (unless the dataset applies its own
    ``transform=``), and ``dataset.transforms`` are applied on top of it at every read (a
    :class:`mmh.data.transforms.TransformedDataset`), so random augmentation draws anew each epoch and keeps the
    cache. ``role``: which list applies, ``"train"`` or ``"eval"`` (default: ``train`` for ``dataset.train_split``,
    ``eval`` for any other split; see :func:`_split_transforms`). An ``eval`` split gives ``eval.clips`` clips per
    video (:func:`mmh.evaluation.prediction.multi_clip_kwargs`)."""
    where, specs = _split_transforms(cfg, split, role)
    clips = int(cfg["eval"].get("clips", 1)) if where == "dataset.transforms.eval" else 1
    if not specs:
        return _untransformed(cfg, split, clips)
    d = cfg["dataset"]
    key = config_hash([d["name"], split, split_kwargs(cfg, split), bool(d["cache"]), where, specs, clips])
    if key not in _DATASETS:
        _DATASETS[key] = TransformedDataset(
            _untransformed(cfg, split, clips), build_transforms(specs, where), spec=specs
        )
    return _DATASETS[key]


def _split_transforms(cfg: Mapping[str, Any], split: str, role: str | None = None) -> tuple[str, list[Any]]:
    """``(config key, entries)`` of the ``dataset.transforms`` list that applies to ``split``: ``train`` for
    ``dataset.train_split`` and ``eval`` for the others, unless ``role`` names one. A train split that is also the
    eval or val split is refused when train transforms are set (the role would be ambiguous)."""
    d = cfg["dataset"]
    table = d.get("transforms") or {}
    if not isinstance(table, Mapping):
        raise TypeError(
            f"config key 'dataset.transforms' must be a mapping {{train: [...], eval: [...]}}, got {table!r}"
        )
    unknown = sorted(set(table) - {"train", "eval"})
    if unknown:
        raise ValueError(f"config key 'dataset.transforms.{unknown[0]}' is unknown: the lists are 'train' and 'eval'")
    if role not in (None, "train", "eval"):
        raise ValueError(f"load_split: role must be 'train', 'eval' or None, got {role!r}")
    if role is None:
        role = "train" if split == d["train_split"] else "eval"
        shared = [k for k in ("eval_split", "val_split") if d.get(k) == split]
        if role == "train" and table.get("train") and shared:
            raise ValueError(
                f"dataset.transforms.train is set and dataset.train_split {split!r} is also dataset.{shared[0]}: "
                f"its augmentation would apply to that evaluation too; use another split for dataset.{shared[0]}"
            )
    specs = table.get(role) or []
    if not isinstance(specs, list):
        raise TypeError(f"config key 'dataset.transforms.{role}' must be a list of transforms, got {specs!r}")
    return f"dataset.transforms.{role}", specs


def _untransformed(cfg: Mapping[str, Any], split: str, clips: int = 1) -> Dataset:
    """The split as the dataset gives it (``clips`` clips per video), materialised in memory when ``dataset.cache``
    is on and the dataset has no transform of its own (memoised per process)."""
    kwargs = multi_clip_kwargs(split_kwargs(cfg, split), clips)
    d = cfg["dataset"]
    key = config_hash([d["name"], split, kwargs, bool(d["cache"])])
    if key not in _DATASETS:
        try:
            ds = build_dataset(d["name"], split=split, **kwargs)
        except (TypeError, ValueError) as exc:
            if clips > 1 and any(w in str(exc) for w in ("sampling", "num_clips", "multi_clip")):
                raise ValueError(
                    f"eval.clips={clips}: dataset {d['name']!r} cannot give {clips} clips per video "
                    f"(sampling='multi_clip', num_clips={clips}): {exc}; set eval.clips: 1"
                ) from exc
            raise
        skipped = getattr(ds, "skipped", None)
        if skipped:  # on_missing="skip": say so, or the run's numbers silently cover fewer samples
            print(
                f"[{d['name']} {split}] {len(skipped)} sample(s) skipped (on_missing=skip), e.g. "
                f"{skipped[0][0]}: {skipped[0][1]}",
                file=sys.stderr,
                flush=True,
            )
        if d["cache"] and getattr(ds, "transform", None) is None:
            ds = materialize(ds)
        _DATASETS[key] = ds
    return _DATASETS[key]


def split_kwargs(cfg: Mapping[str, Any], split: str) -> dict[str, Any]:
    """``dataset.kwargs`` with ``dataset.split_kwargs.<split>`` merged in."""
    d = cfg["dataset"]
    return {**(d.get("kwargs") or {}), **((d.get("split_kwargs") or {}).get(split) or {})}


def dataset_fingerprint(dataset: Dataset) -> str:
    """A hash of the first and last items' tensors: a changed generator (or files) gives another cache key. A
    :class:`mmh.data.transforms.TransformedDataset` is hashed untransformed, plus its transforms' config entries
    (random augmentation would otherwise give another key at every call)."""
    spec = None
    if isinstance(dataset, TransformedDataset):
        dataset, spec = dataset.dataset, dataset.spec
    n = len(dataset)  # type: ignore[arg-type]
    h = hashlib.sha1(str(n).encode())
    if spec:
        h.update(json.dumps(spec, sort_keys=True, default=str).encode())
    for i in sorted({0, n - 1}):
        for k, v in sorted(dataset[i].items()):
            if isinstance(v, torch.Tensor):
                h.update(k.encode())
                h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def dataset_record(cfg: Mapping[str, Any], dataset: Dataset, facts: Mapping[str, Any]) -> dict[str, Any]:
    """The run's ``dataset.json``: name, class names, modalities, per-item input shapes and the per-modality
    normalisation the dataset applied (``{m: {"mean": [..], "std": [..]}}``, or None when it applies none)."""
    item = dataset[0]
    return {
        "name": cfg["dataset"]["name"],
        "class_names": list(getattr(dataset, "class_names", []) or []),
        "num_classes": facts["num_classes"],
        "modalities": list(facts["modalities"]),
        "input_shapes": {m: list(item[m].shape) for m in facts["modalities"]},
        "num_frames": facts["num_frames"],
        "normalization": getattr(dataset, "normalization", None),
    }


def stage_key(stage: Stage, cfg: Mapping[str, Any], input_keys: Mapping[str, str], data_fingerprint: str = "") -> str:
    """The cache key of ``stage`` under ``cfg`` given its inputs' keys (and the training data's fingerprint)."""
    train = None
    if stage.trains:
        stage_train = stage_train_config(cfg, stage.section)
        train = {k: v for k, v in stage_train.items() if k not in (*_COSMETIC, *_SPEED_ONLY)}
        if not train.get("compile"):  # eager, as before the setting existed: the keys of cached stages stay valid
            train.pop("compile", None)
        if (cfg["dataset"].get("transforms") or {}).get("train"):  # random draws come from each worker's own seed
            train["num_workers"] = stage_train["num_workers"]
    d = cfg["dataset"]
    payload = {
        "v": CACHE_VERSION,
        "kind": stage.kind,
        "seed": cfg["seed"],
        "dataset": [d["name"], split_kwargs(cfg, d["train_split"]), d["train_split"], data_fingerprint],
        "model": cfg["model"],
        "train": train,
        "depends": {k: get_path(cfg, k) for k in stage.depends_on},
        "inputs": [input_keys[i] for i in stage.inputs],
    }
    if cfg["model"].get("pretrained") is not None:  # the weight file's content, not only its name or path
        payload["pretrained"] = weights_fingerprint(cfg["model"]["pretrained"])
    init = stage_init_from(cfg, stage, check=False)
    if init is not None:  # stages.<section>.init_from: the file's content (a missing file: its path, as pretrained)
        payload["init_from"] = weights_fingerprint(init)
    return config_hash(payload)


def stage_init_from(cfg: Mapping[str, Any], stage: Stage, *, check: bool = True) -> Path | None:
    """The ``stages.<section>.init_from`` file of ``stage`` (another run's ``model.pt`` the stage's fresh network
    starts from, then trains), resolved as :func:`mmh.models.pretrained.resolve_path` does; None when unset, and for
    a stage that does not train while another stage of its section does (``rad_dad``'s ensemble beside the student
    it assembles: init_from applies to the stages that train). ValueError when the section also has a
    ``checkpoint`` or none of its stages trains. ``check``: FileNotFoundError naming the key when the file is not
    there (the runner checks when the stage has to train; the stage key takes the missing path, as for a missing
    ``model.pretrained`` file, so a resumed or cached run needs the file only for a stage it trains)."""
    section = cfg.get("stages", {}).get(stage.section) or {}
    spec = section.get("init_from")
    if spec is None:
        return None
    key = f"stages.{stage.section}.init_from"
    if not isinstance(spec, str) or not spec:
        raise TypeError(f"config key {key!r} must be a file path (a run's or a stage's model.pt), got {spec!r}")
    if section.get("checkpoint"):
        raise ValueError(
            f"config key {key!r}: stages.{stage.section}.checkpoint is set too (a checkpoint is loaded, not trained; "
            f"init_from starts a network that is then trained): set one of them"
        )
    if not stage.trains:
        if any(s.trains for s in method_stages(cfg) if s.section == stage.section):
            return None
        raise ValueError(
            f"config key {key!r}: no stage of method {cfg['method']!r} in section {stage.section!r} is trained "
            f"(stage {stage.name!r} is assembled, not trained), so there is nothing to start from the file"
        )
    path = resolve_path(spec)
    if check and not path.is_file():
        hint = ""
        if path.name == "model.pt" and path.parent.parent.name == "stages":
            run = path.parents[2]
            hint = (
                f"it is the network of stage {path.parent.name!r} of the run folder {run}: train that run first (the "
                f"recipe whose output.name is {run.name!r}, or any run with --run-dir {run}), or "
            )
        raise FileNotFoundError(
            f"config key {key!r}: file not found: {path} (a relative path is resolved against the current "
            f"directory); {hint}set {key}=PATH to a model.pt of a run or a stage"
        )
    return path


def default_run_dir(cfg: Mapping[str, Any]) -> Path:
    """``<output.root>/<output.name>`` or ``<output.root>/<dataset>-<method>-s<seed>-<timestamp>``."""
    out = cfg["output"]
    name = out.get("name") or (
        f"{cfg['dataset']['name']}-{cfg['method']}-s{cfg['seed']}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    )
    return Path(out["root"]) / name


def _cache_dir(cfg: Mapping[str, Any]) -> Path | None:
    c = cfg["output"].get("cache")
    if c == "":
        return None
    return Path(c) if c else Path(cfg["output"]["root"]) / "cache"


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


# ------------------------------------------------------------------------------------------------ provenance
@dataclass(frozen=True)
class Source:
    """Where a stage's network came from, as ``results.json`` records it (``{"kind": ..., "path": ...}``).

    ``kind``: ``trained`` (by this run), ``run`` (reloaded from the run folder on resume), ``cache`` (``path``: the
    stage-cache folder), ``checkpoint`` (``path``: the ``stages.<section>.checkpoint`` file) or ``partial`` (the
    stage was stopped). :meth:`parse` also reads the ``"cache:<path>"`` strings of older results files.
    """

    kind: str
    path: str | None = None

    KINDS = ("trained", "run", "cache", "checkpoint", "partial")

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind} if self.path is None else {"kind": self.kind, "path": self.path}

    @classmethod
    def parse(cls, value: Any) -> Source:
        """A record (dict) or an old-style string (``"trained"``, ``"cache:<path>"``); ValueError otherwise."""
        if isinstance(value, str):
            kind, _, path = value.partition(":")
            value = {"kind": kind, "path": path or None}
        if not isinstance(value, Mapping):
            raise ValueError(f"a stage source must be a mapping {{kind, path}} or a string, got {value!r:.100}")
        kind, path = value.get("kind"), value.get("path")
        if kind not in cls.KINDS or not (path is None or isinstance(path, str)):
            raise ValueError(f"malformed stage source {dict(value)!r:.200} (kind one of {cls.KINDS}, path a string)")
        return cls(kind, path)


# ------------------------------------------------------------------------------------------------ signals
class _RunSignals:
    """SIGTERM / SIGINT anywhere in :func:`run_experiment` outside :meth:`mmh.train.Trainer.fit` (which installs its
    own handler for the step-exact save of ``latest.pt``): data loading and check, evaluation, the writes.

    The run ends at the next safe point with :class:`mmh.train.TrainingInterrupted`: at once, or, inside
    :meth:`deferred` (the run folder's creation, ``model.pt`` and the cache publish, ``results.json``), once the
    write in flight is complete. The first signal puts the previous handler back, so a second one acts as it did
    before the run. Main thread only (Python delivers signals there); the previous handlers are restored on exit.
    ``run_dir`` is set once the folder holds this run (there is something to resume), ``results`` once this process
    may mark its ``results.json`` interrupted.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.signum: int | None = None
        self.run_dir: Path | None = None
        self.results: dict[str, Any] | None = None
        self._depth = 0
        self._raised = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _RunSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                try:
                    if signal.getsignal(sig) == signal.SIG_IGN:  # ignored on purpose (a background job's SIGINT)
                        continue
                    self._previous[sig] = signal.signal(sig, self._handler)
                except (ValueError, OSError):  # not settable here (an embedding interpreter)
                    continue
        return self

    def __exit__(self, *_exc: object) -> None:
        for sig, old in self._previous.items():
            with contextlib.suppress(ValueError, OSError, TypeError):
                signal.signal(sig, old if old is not None else signal.SIG_DFL)

    def _handler(self, signum: int, _frame: Any) -> None:
        if self.signum is None:
            self.signum = signum
            with contextlib.suppress(ValueError, OSError, TypeError):
                signal.signal(signum, self._previous.get(signum) or signal.SIG_DFL)
        if self._depth == 0:
            self.raise_pending()

    def raise_pending(self) -> None:
        """Raise TrainingInterrupted if a signal arrived (once)."""
        if self.signum is None or self._raised:
            return
        self._raised = True
        name = signal.Signals(self.signum).name
        if self.run_dir is None:
            msg = f"interrupted by {name} before the run folder was written (nothing to resume)"
        else:
            msg = f"interrupted by {name}; the run in {self.run_dir} continues with a resume"
        raise TrainingInterrupted(self.signum, None, None, msg, None if self.run_dir is None else str(self.run_dir))

    @contextlib.contextmanager
    def deferred(self) -> Any:
        """A write that a signal must not cut: the signal takes effect when the block is done."""
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
        if self._depth == 0:
            self.raise_pending()


# ------------------------------------------------------------------------------------------------ the run
@dataclass
class _Run:
    """The state of one :func:`run_experiment` call, shared by its steps."""

    cfg: dict[str, Any]
    run_dir: Path
    resume: bool
    log: Callable[[str], None]
    is_main: bool
    device: torch.device
    train_set: Dataset
    eval_set: Dataset
    val_set: Dataset | None
    facts: dict[str, Any]
    fingerprint: str
    cache: Path | None
    budget: int | None  # training steps left in this invocation (None: unlimited)
    results: dict[str, Any] = field(default_factory=dict)
    nets: dict[str, nn.Module] = field(default_factory=dict)  # each finished stage's network
    keys: dict[str, str] = field(default_factory=dict)  # each finished stage's cache key
    steps: dict[str, int] = field(default_factory=dict)  # each trained stage's final step (for error messages)
    signals: _RunSignals = field(default_factory=_RunSignals)  # writes are deferred past a signal

    def evaluate(self, model: nn.Module, dataset: Dataset) -> dict[str, float]:
        ev = self.cfg["eval"]
        return evaluate_model(
            model, dataset, list(ev["metrics"]), int(ev["batch_size"]), self.device, clips=int(ev.get("clips", 1))
        )

    def write_results(self) -> None:
        if self.is_main:
            with self.signals.deferred():
                write_json(self.results, self.run_dir / "results.json")


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _git_state(package_dir: Path) -> dict[str, Any]:
    """``{"commit", "dirty"}`` of the checkout ``mmh`` is imported from: ``"unknown"`` / None when it is not a git
    checkout of this project (an installed package, no git, or the package inside some other repository)."""
    import subprocess

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", "-C", str(package_dir), *args], capture_output=True, text=True, timeout=10, check=False
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    if not top or not (Path(top) / "python" / "mmh" / "runner.py").resolve() == (package_dir / "runner.py").resolve():
        return {"commit": "unknown", "dirty": None}
    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit or "unknown", "dirty": None if status is None else bool(status)}


def _device_name(device: torch.device | None) -> str:
    """The accelerator's name (CUDA), else the CPU's model name (``/proc/cpuinfo``, else :mod:`platform`)."""
    import platform

    if device is not None and device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def reproduction_record(
    cfg: Mapping[str, Any] | None = None,
    *,
    device: torch.device | None = None,
    world_size: int | None = None,
    worker_processes: int | None = None,
    seeds: list[int] | None = None,
) -> dict[str, Any]:
    """What a run (or a benchmark) was made with, as every ``results.json`` records it under ``record``: mmh version,
    git commit and dirty flag (``"unknown"`` outside a checkout), python / torch / CUDA / cuDNN versions, device name,
    torch threads, worker processes (data-loader workers of ``cfg``; a benchmark's pool size), world size, batch
    size, seeds, the deterministic flags and the command line. The protocol details that decide whether a table
    reproduces elsewhere."""
    import os
    import platform
    import shlex
    from importlib import metadata

    try:
        version = metadata.version("mmh")  # the package's own metadata (the runner may not import mmh/__init__)
    except metadata.PackageNotFoundError:
        version = "unknown"

    train = (cfg or {}).get("train") or {}
    cudnn = torch.backends.cudnn
    if world_size is None:
        world_size = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    return {
        "mmh": version,
        "git": _git_state(Path(__file__).resolve().parent),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": cudnn.version() if cudnn.is_available() else None,
        "device": str(device) if device is not None else "cpu",
        "device_name": _device_name(device),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "worker_processes": worker_processes,
        "data_workers": train.get("num_workers"),
        "world_size": int(world_size),
        "batch_size": train.get("batch_size"),
        "seeds": seeds if seeds is not None else ([cfg["seed"]] if cfg and "seed" in cfg else None),
        "deterministic": {
            "torch.use_deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            "cudnn.deterministic": bool(cudnn.deterministic),
            "cudnn.benchmark": bool(cudnn.benchmark),
        },
        "command": shlex.join(sys.argv),
        "time": datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def _start(
    cfg: dict[str, Any],
    run_dir: str | Path | None,
    resume: bool,
    budget: int | None,
    log: Callable[[str], None],
    overwrite: bool = False,
    signals: _RunSignals | None = None,
) -> _Run:
    """Process group, threads, device, the global seed, the datasets and the check of own data, then the run folder.

    Nothing of the run is written before the data loaded and passed its check (a failed check leaves only its
    report, in a folder that holds no run, so the same command runs once the data is fixed). A new run then
    writes ``results.json`` (``running``; under torchrun the job that created it, see :func:`_elastic_takeover`),
    ``config.yaml``, ``dataset.json`` and the data check's report, once; a resumed one reads them and never rewrites
    them: ``cfg`` may differ from its config only in :data:`mmh.config.RESUME_SAFE` settings (recorded in the results
    as ``resume_changes``), and the data must still give its ``dataset.json`` (:func:`_check_dataset_record`)."""
    signals = signals if signals is not None else _RunSignals()
    info = init_distributed_from_env()
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(cfg)
    changes = _claim_run_dir(run_dir, cfg, resume, overwrite)  # every rank checks before rank 0 writes
    _barrier()
    if resume:
        signals.run_dir = run_dir
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    device = resolve_device(cfg.get("device", "auto"))
    seed_everything(int(cfg["seed"]))
    d = cfg["dataset"]
    train_set, eval_set = load_split(cfg, d["train_split"]), load_split(cfg, d["eval_split"])
    val_set = load_split(cfg, d["val_split"]) if d.get("val_split") else None
    report = None
    if info.is_main:  # own recordings: checked before training (and before a new run's folder is written)
        splits = (d["train_split"], d.get("val_split"), d["eval_split"])
        try:
            report = check_before_training(d["name"], {s: split_kwargs(cfg, s) for s in splits if s}, None, log)
        except DataCheckError as exc:  # the report alone in a folder that holds no run: not a run, a retry works
            if not resume and not is_run_dir(run_dir):
                log(f"[data check] report -> {exc.report.write(run_dir)[1]}")
            raise
    facts, fingerprint = dataset_facts(train_set), dataset_fingerprint(train_set)
    record = dataset_record(cfg, train_set, facts)  # what a deployment needs: class names, input shapes, normalisation
    results = {
        "method": cfg["method"],
        "seed": cfg["seed"],
        "dataset": d["name"],
        "run_dir": str(run_dir),
        "status": "running",
        "stages": {},
        "record": reproduction_record(cfg, device=device, world_size=info.world_size),
    }
    job = elastic_job_id()
    if job is not None:  # a torchrun restart resumes only a run its own job created (_elastic_takeover)
        results["elastic_job"] = job
    if changes:
        results["resume_changes"] = changes
    if info.is_main:
        with signals.deferred():
            if resume:
                _check_dataset_record(run_dir / "dataset.json", record)
            else:
                _create_run_dir(run_dir, cfg, results, record, report, overwrite, log)
            signals.run_dir, signals.results = run_dir, results
    else:
        signals.run_dir = run_dir
    return _Run(
        cfg,
        run_dir,
        resume,
        log if info.is_main else _silent,
        info.is_main,
        device,
        train_set,
        eval_set,
        val_set,
        facts,
        fingerprint,
        _cache_dir(cfg),
        budget,
        results,
        signals=signals,
    )


def _create_run_dir(
    run_dir: Path,
    cfg: Mapping[str, Any],
    results: Mapping[str, Any],
    record: Mapping[str, Any],
    report: DataReport | None,
    overwrite: bool,
    log: Callable[[str], None],
) -> None:
    """Write a new run's folder: ``results.json`` first (it names the torchrun job that created the folder), then
    ``config.yaml``, ``dataset.json`` and the data check's report. ``overwrite``: the run the folder held is removed
    first (:func:`_clear_run_dir`)."""
    if overwrite:
        _clear_run_dir(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(results, run_dir / "results.json")
    save_config(cfg, run_dir / "config.yaml")
    write_json(record, run_dir / "dataset.json")
    if report is not None:
        log(f"[data check] report -> {report.write(run_dir)[1]}")


def _check_dataset_record(path: Path, record: Mapping[str, Any]) -> None:
    """On resume: the data must still give the run's ``dataset.json`` (the trained weights expect its
    normalisation, classes and input shapes); ValueError naming the file and what changed. Written here only when
    the run's first attempt stopped before writing it."""
    if not path.is_file():
        write_json(record, path)
        return
    old, now = read_json(path), json_form(record)
    if not isinstance(old, dict):
        raise ValueError(f"{path} is not a run's dataset record (a JSON mapping); the run folder is damaged")
    changed = [f"{k}: {_brief(old.get(k), 80)} -> {_brief(v, 80)}" for k, v in now.items() if old.get(k) != v]
    if changed:
        raise ValueError(
            f"cannot resume: the data no longer matches the run's {path} ({'; '.join(changed)}); the trained "
            f"weights were trained with the recorded values. Restore the data, or train a new run (--run-dir NEW_DIR)"
        )


def is_run_dir(path: str | Path) -> bool:
    """Whether ``path`` holds a run (its ``config.yaml`` or ``results.json``)."""
    return any((Path(path) / name).is_file() for name in ("config.yaml", "results.json"))


def _claim_run_dir(run_dir: Path, cfg: Mapping[str, Any], resume: bool, overwrite: bool) -> dict[str, Any]:
    """Check that ``run_dir`` may take this run; on resume return the resume-safe settings ``cfg`` changes.

    A new run refuses a folder that already holds one unless ``overwrite``; a resumed run needs the folder's
    ``config.yaml`` and refuses any other change (:func:`mmh.config.resume_changes`)."""
    if resume and overwrite:
        raise ValueError("resume and overwrite exclude each other (resume continues a run, overwrite replaces it)")
    if resume:
        if not (run_dir / "config.yaml").is_file():
            raise FileNotFoundError(f"cannot resume: {run_dir} has no config.yaml (not a run directory)")
        return resume_changes(load_run_config(run_dir), cfg, run_dir)
    if is_run_dir(run_dir) and not overwrite:
        name = (cfg.get("output") or {}).get("name")
        fixed = (
            f" (the config's output.name {name!r} names this folder for every run of it: a run with another "
            f"protocol or seed needs its own --run-dir, or output.name=OTHER)"
            if name and Path(run_dir).name == name
            else ""
        )
        raise ValueError(
            f"run directory {run_dir} already holds a run; continue it with --resume {run_dir}, replace "
            f"it with --overwrite, or give another --run-dir{fixed}"
        )
    return {}


def _clear_run_dir(run_dir: Path) -> None:
    """Remove the run ``run_dir`` holds: its own files (:data:`_RUN_FILES`, ``eval_*.json``, ``stages/``); every
    other file stays. A folder that holds no run (:func:`is_run_dir`) is left as it is."""
    if not is_run_dir(run_dir):
        return
    if (run_dir / "stages").is_dir():
        shutil.rmtree(run_dir / "stages")
    for p in run_dir.iterdir():
        if p.is_file() and (p.name in _RUN_FILES or _EVAL_FILE.fullmatch(p.name)):
            p.unlink()
    remove_stale_temps(run_dir, _RUN_FILES)


def _reuse(
    run: _Run, stage: Stage, stage_dir: Path, cached: Path | None
) -> tuple[nn.Module, Source, dict[str, Any]] | None:
    """The stage's network without training and its ``network`` record: its ``checkpoint`` file (recorded as it
    is), the run folder (on resume) or the cache, each checked against the network the run's config builds for the
    stage (:func:`_expected`), which is then the record: never one read back from the file under check."""
    explicit = (run.cfg.get("stages", {}).get(stage.section) or {}).get("checkpoint")
    if explicit:
        model = load_model(explicit)
        return model, Source("checkpoint", str(explicit)), network_record(model)
    if (stage_dir / "model.pt").is_file() and run.resume:
        path, source = stage_dir / "model.pt", Source("run")
    elif cached is not None and all((cached / f"{a}.pt").is_file() for a in ("model", *stage.artifacts)):
        path, source = cached / "model.pt", Source("cache", str(cached))
    else:
        return None
    model, want = load_model(path), _expected(run, stage)
    problems = _network_problems(network_record(model), want)
    if problems:
        raise ValueError(
            f"{path} is not the network of stage {stage.name!r} of run {run.run_dir} (as its config builds it): "
            f"{'; '.join(problems)}"
        )
    return model, source, want


def _context(cfg: Mapping[str, Any], facts: Mapping[str, Any], inputs: Mapping[str, nn.Module]) -> StageContext:
    """What a stage builder gets: the data's facts and copies of the input stages' networks."""
    return StageContext(
        dict(cfg),
        facts["num_classes"],
        dict(facts["in_channels"]),
        _model_kwargs(facts),
        {k: copy.deepcopy(v) for k, v in inputs.items()},
    )


def _expected(run: _Run, stage: Stage) -> dict[str, Any]:
    """The ``network`` record of the network the run's config builds for ``stage`` (built, never trained; the
    global RNG is left as it was, so that a resumed run draws what an uninterrupted one draws)."""
    with torch.random.fork_rng(devices=[]):
        module = stage.build(_context(run.cfg, run.facts, {i: run.nets[i] for i in stage.inputs}))
        return network_record(module.deployable())


def _train(run: _Run, stage: Stage, module: StageModule, stage_dir: Path, record: dict[str, Any]) -> bool:
    """Train ``module`` (up to the step budget) and, for ``train.deploy=best``, restore best.pt; False when the
    budget ran out first (the results then say ``stopped``)."""
    val_fn = None
    if run.val_set is not None:

        def val_fn(net: nn.Module, _ds: Dataset = run.val_set) -> dict[str, float]:
            return run.evaluate(net, _ds)

    tcfg = stage_train_config(run.cfg, stage.section)
    trainer = Trainer(
        module,
        run.train_set,
        tcfg,
        out_dir=stage_dir,
        seed=int(run.cfg["seed"]),
        device=run.device,
        val_fn=val_fn,
        config=run.cfg,
        name=stage.name,
    )
    fit = None
    if run.budget is None or run.budget > 0:
        try:
            fit = trainer.fit(resume=run.resume, stop_after_steps=run.budget)
        except TrainingInterrupted as exc:  # latest.pt saved at exc.step: record it, then let the caller exit
            if exc.step is not None:  # else a second signal stopped it without saving: run_experiment records it
                _stopped(run, stage, record, trainer, None, status="interrupted", note=str(exc))
            raise
        except NonFiniteError as exc:  # nothing non-finite was saved; the last finite latest.pt stays
            _stopped(run, stage, record, trainer, None, status="failed", note=str(exc))
            raise
        run.budget = None if run.budget is None else run.budget - fit.steps_run
    run.steps[stage.name] = trainer.step
    if fit is None or fit.stopped:
        _stopped(run, stage, record, trainer, fit)
        return False
    if run.val_set is not None:  # best-on-val beside last: the protocol detail tables rarely say
        last = next((row for row in reversed(fit.history) if any(k.startswith("val_") for k in row)), {})
        record["val"] = {
            "last": {k[4:]: v for k, v in last.items() if k.startswith("val_")},
            "last_step": last.get("step"),
            "best": dict(trainer.best),
            "deployed": tcfg.get("deploy", "last"),
        }
    if tcfg.get("deploy", "last") == "best":
        _barrier()  # best.pt is written by rank 0
        record["deployed"] = {"checkpoint": "best.pt", **trainer.restore_best()}
    return True


def _stopped(
    run: _Run,
    stage: Stage,
    record: dict[str, Any],
    trainer: Trainer,
    fit: TrainResult | None,
    status: str = "stopped",
    note: str | None = None,
) -> None:
    """Record a stage that did not finish: ``status`` ``stopped`` (the step budget ran out), ``interrupted`` (a
    signal; ``latest.pt`` holds the step reached) or ``failed`` (a non-finite loss or state; ``latest.pt`` holds the
    last finite state). All three resume with ``--resume``."""
    step = fit.step if fit is not None else trainer.step
    run.results["status"] = status
    entry = {**record, "source": Source("partial").as_dict(), "step": step, "total_steps": trainer.total_steps}
    if note:
        entry["error" if status == "failed" else "note"] = note
    run.results["stages"][stage.name] = entry
    run.write_results()
    run.log(f"[{run.cfg['method']}] stage {stage.name}: {status} at step {step}/{trainer.total_steps}")


def _save(run: _Run, stage: Stage, module: StageModule, stage_dir: Path, cached: Path | None) -> nn.Module:
    """Save the stage's network (``model.pt``) and extra artifacts (``<name>.pt``), and publish them to the cache
    (the artifacts first: a cache entry counts once its ``model.pt`` is there)."""
    model = module.deployable()
    extra = module.artifacts()
    missing = [a for a in stage.artifacts if a not in extra]
    if missing:
        raise RuntimeError(
            f"stage {stage.name!r} declares artifacts {missing} that {type(module).__name__} "
            f"does not publish (it gives {sorted(extra)})"
        )
    # every rank checks (their networks are equal), before anything is written or published to the cache
    at = f" at step {run.steps[stage.name]}" if stage.name in run.steps else ""
    check_finite(
        {"model": model.state_dict(), **extra},
        f"stage {stage.name!r}{at}: non-finite network",
        f"; model.pt was not written{' nor published to the stage cache' if cached is not None else ''}",
    )
    if run.is_main:
        names = tuple(f"{name}.pt" for name in (*extra, "model"))
        with run.signals.deferred():  # a signal ends the run after these writes, not inside them
            remove_stale_temps(stage_dir, names)
            for name, state in extra.items():
                if not _NAME.fullmatch(name) or name == "model":
                    raise ValueError(f"stage {stage.name!r}: bad artifact name {name!r}")
                save_tensors(state, stage_dir / f"{name}.pt")
            save_model(model, stage_dir / "model.pt")
            if cached is not None:
                remove_stale_temps(cached, names, older_than=STALE_CACHE_TEMP_S)  # a killed publisher's
                for name in (*extra, "model"):
                    _publish(stage_dir / f"{name}.pt", cached / f"{name}.pt")
    return model


def _run_stage(run: _Run, stage: Stage) -> bool:
    """One stage: reuse or build + train + save, then evaluate and record; False when training was stopped."""
    _barrier()
    t0 = time.perf_counter()
    key = stage_key(stage, run.cfg, run.keys, run.fingerprint)
    stage_dir = run.run_dir / "stages" / stage.name
    cached = run.cache / f"{_safe(stage.kind)}-{key}" if run.cache is not None else None
    record: dict[str, Any] = {"kind": stage.kind, "key": key}
    reused = _reuse(run, stage, stage_dir, cached)
    if reused is not None:
        model, source, network = reused
        if source.kind == "checkpoint":
            key = config_hash(["path", str(Path(source.path or "").resolve())])
    else:
        module = stage.build(_context(run.cfg, run.facts, {i: run.nets[i] for i in stage.inputs}))
        init = stage_init_from(run.cfg, stage)
        if init is not None:  # another run's network, then trained (unlike ``checkpoint``)
            record["init_from"] = init_from_model_file(
                module.deployable(), init, what=f"stages.{stage.section}.init_from"
            )
            run.log(
                f"[{run.cfg['method']}] stage {stage.name}: init_from {init}: {record['init_from']['copied']} "
                f"tensors; fresh (class count differs): {record['init_from']['fresh']}"
            )
        if stage.trains and not _train(run, stage, module, stage_dir, record):
            return False
        model, source = _save(run, stage, module, stage_dir, cached), Source("trained")
        network = network_record(model)
    record["source"] = source.as_dict()
    record["network"] = network  # what eval/export check a model.pt against
    model = model.to(run.device).eval()
    run.nets[stage.name], run.keys[stage.name] = model, key
    record["metrics"] = run.evaluate(model, run.eval_set)
    record["time_s"] = round(time.perf_counter() - t0, 2)
    run.results["stages"][stage.name] = record
    run.log(
        f"[{run.cfg['method']} s{run.cfg['seed']}] stage {stage.name}: {source.kind} "
        f"{_fmt(record['metrics'])} ({record['time_s']:.1f}s)"
    )
    return True


def _model_kwargs(facts: Mapping[str, Any]) -> dict[str, Any]:
    """Data-derived model kwargs (the clip length)."""
    return {"num_frames": facts["num_frames"]} if facts["num_frames"] else {}


def run_experiment(
    cfg: Mapping[str, Any],
    *,
    run_dir: str | Path | None = None,
    resume: bool = False,
    stop_after_steps: int | None = None,
    log: Callable[[str], None] = print,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Run ``cfg["method"]`` end to end and return the ``results.json`` content.

    ``resume``: continue a run directory (completed stages are reloaded, the interrupted one resumes from its
    ``latest.pt``); ``cfg`` may differ from the folder's ``config.yaml`` only in :data:`mmh.config.RESUME_SAFE`
    settings. ``overwrite``: replace the run a folder already holds (without it, such a folder is a ValueError).
    ``stop_after_steps``: stop the current stage after that many steps (as if killed); the result then has
    ``status == "stopped"``.
    """
    with _RunSignals() as signals:
        try:
            resume, overwrite = _elastic_takeover(cfg, run_dir, resume, overwrite, log)
            run = _start(copy.deepcopy(dict(cfg)), run_dir, resume, stop_after_steps, log, overwrite, signals)
            stages = method_stages(run.cfg)
            for stage in stages:
                if not _run_stage(run, stage):
                    return run.results
            run.results["final"] = run.results["stages"][stages[-1].name]["metrics"]
            run.results["status"] = "done"
            run.write_results()
            return run.results
        except TrainingInterrupted as exc:
            if exc.step is None and signals.results is not None and signals.run_dir is not None:
                signals.results["status"] = "interrupted"  # outside training: latest.pt stays as it was
                write_json(signals.results, signals.run_dir / "results.json")
            raise


def _silent(_msg: str) -> None:
    return None


def _publish(src: Path, dst: Path) -> None:
    """Copy an artifact into the cache atomically and durably (concurrent writers of the same key are harmless;
    the temporary copy is removed on any failure). The caller checked the network finite before writing ``src``."""
    atomic_copy(src, dst)


def _elastic_takeover(
    cfg: Mapping[str, Any], run_dir: str | Path | None, resume: bool, overwrite: bool, log: Callable[[str], None]
) -> tuple[bool, bool]:
    """(resume, overwrite) for this process. A ``torchrun --max-restarts`` restart (``TORCHELASTIC_RESTART_COUNT``
    > 0) of a run that this job's first attempt created resumes it (from each stage's ``latest.pt``, or step 0 where
    there is none yet), whatever the flags: ``--overwrite`` would otherwise clear what the first attempt trained.

    A run folder records the job that created it (``results.json``: ``elastic_job``, :func:`elastic_job_id`); a
    folder that holds another job's run is treated as on the first attempt (refused without ``--overwrite``), so a
    restart never resumes an old run that the first attempt was refused. The folder must be fixed (``--run-dir`` or
    ``output.name``): an automatic name has a new timestamp on each restart, so such a run starts over, and says so.
    Rank 0 decides and tells the others."""
    restarts = elastic_restart_count()
    if restarts < 1 or resume:
        return resume, overwrite
    fixed = run_dir is not None or bool(cfg["output"].get("name"))
    folder = Path(run_dir) if run_dir is not None else default_run_dir(cfg)
    info = init_distributed_from_env()
    decision = [_elastic_state(folder) if fixed else "auto"]
    if info.distributed:
        dist.broadcast_object_list(decision, src=0)
    state = decision[0]
    if info.is_main:
        log(
            f"elastic restart {restarts}: "
            + {
                "own": f"resuming {folder} from its latest checkpoints",
                "own-partial": f"{folder} was being created by the first attempt; creating it again",
                "other": f"{folder} holds a run this job did not create; treated as on the first attempt",
                "none": f"{folder} holds no run yet; starting it",
                "auto": "the run folder has an automatic name, so this restart starts over in a new folder; give "
                "--run-dir (or output.name) to resume from latest.pt after a restart",
            }[state]
        )
    if state == "own":
        return True, False
    if state == "own-partial":
        return False, True
    return False, overwrite


def _elastic_state(folder: Path) -> str:
    """``own`` (this job created the run in ``folder``), ``own-partial`` (it began to: no config.yaml yet),
    ``other`` (another job's or a plain run) or ``none`` (no run)."""
    if not is_run_dir(folder):
        return "none"
    try:
        job = read_json(folder / "results.json").get("elastic_job")
    except (OSError, ValueError, AttributeError):
        job = None
    if job is None or job != elastic_job_id():
        return "other"
    return "own" if (folder / "config.yaml").is_file() else "own-partial"


def _fmt(metrics: Mapping[str, float]) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in metrics.items() if "/" not in k)


# ------------------------------------------------------------------------------------------------ finished runs
def load_results(run_dir: str | Path) -> dict[str, Any]:
    """``results.json`` of a run directory (FileNotFoundError naming the folder if it is missing)."""
    p = Path(run_dir) / "results.json"
    if not p.is_file():
        raise FileNotFoundError(f"{run_dir} is not a finished run directory (no results.json)")
    res = read_json(p)
    # a shared run folder is untrusted: stage names become paths (stages/<name>/model.pt, eval_<name>_<split>.json)
    stages = res.get("stages") if isinstance(res, dict) else None
    if not isinstance(stages, dict) or not stages:
        raise ValueError(f"{p} is not a run's results file: it needs a non-empty 'stages' mapping")
    for name, record in stages.items():
        if not _NAME.fullmatch(name) or not isinstance(record, dict):
            raise ValueError(f"{p}: malformed stage entry {name!r} (names are [A-Za-z0-9_.-], entries are mappings)")
        if "source" in record:
            try:
                Source.parse(record["source"])
            except ValueError as exc:
                raise ValueError(f"{p}: stage {name!r}: {exc}") from None
        if "network" in record and not isinstance(record["network"], dict):
            raise ValueError(f"{p}: stage {name!r}: 'network' must be a mapping, got {record['network']!r:.100}")
    return res


def stage_artifact_path(run_dir: str | Path, results: Mapping[str, Any], stage: str, name: str = "model") -> Path:
    """The ``<name>.pt`` of a finished stage (``"model"``: its network; else an extra artifact such as ADMD's
    ``"discriminator"``, read it with :func:`mmh.train.checkpoint.load_tensors`): ``run_dir/stages/<stage>/``,
    else the place its source names (the stage-cache folder, or for ``model`` the ``checkpoint`` file).
    FileNotFoundError naming the stage and the path when there is none."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"bad artifact name {name!r} (names are [A-Za-z0-9_.-])")
    path = Path(run_dir) / "stages" / stage / f"{name}.pt"
    if not path.is_file():
        if stage not in results["stages"]:
            raise KeyError(f"{run_dir} has no stage {stage!r} (stages: {sorted(results['stages'])})")
        src = Source.parse(results["stages"][stage].get("source", "trained"))
        if src.kind in ("cache", "checkpoint") and src.path:
            cand = Path(src.path)
            path = cand if name == "model" and cand.is_file() else cand / f"{name}.pt"
    if not path.is_file():
        what = "network" if name == "model" else f"artifact {name!r}"
        raise FileNotFoundError(f"stage {stage!r} of {run_dir} has no saved {what} ({path})")
    return path


def stage_model_path(run_dir: str | Path, results: Mapping[str, Any], stage: str) -> Path:
    """The ``model.pt`` of a finished stage: :func:`stage_artifact_path` with ``name="model"``."""
    return stage_artifact_path(run_dir, results, stage, "model")


def network_record(model: nn.Module) -> dict[str, Any]:
    """What a stage's network is, as its ``results.json`` record keeps it (``network``): the build config its
    ``model.pt`` carries (JSON form), the modalities it reads, in order, and its number of classes."""
    config = json.loads(json.dumps(getattr(model, "config", None), default=str))
    return {
        "config": config,
        "modalities": list(getattr(model, "modalities", ()) or ()),
        "num_classes": _config_classes(config),
    }


def _config_classes(config: Any) -> int | None:
    """``num_classes`` of a build config (an ensemble's when its members agree), else None."""
    if not isinstance(config, Mapping):
        return None
    if isinstance(config.get("ensemble"), Mapping):
        counts = {_config_classes(m) for m in config["ensemble"].values()}
        return counts.pop() if len(counts) == 1 else None
    k = config.get("num_classes")
    return k if isinstance(k, int) and not isinstance(k, bool) else None


def _network_problems(got: Mapping[str, Any], want: Mapping[str, Any]) -> list[str]:
    """How the network record ``got`` (of a file) differs from ``want`` (the stage's): modalities, class count,
    architecture (the last only when the first two agree)."""
    problems = []
    if got["modalities"] != want.get("modalities"):
        problems.append(f"it reads modalities {got['modalities']}, the stage reads {want.get('modalities')}")
    if got["num_classes"] != want.get("num_classes"):
        problems.append(f"it has {got['num_classes']} classes, the stage {want.get('num_classes')}")
    if not problems and got["config"] != json_form(want.get("config")):
        problems.append(f"its architecture {_brief(got['config'])} is not the stage's {_brief(want.get('config'))}")
    return problems


def check_stage_network(
    model: nn.Module, path: str | Path, run_dir: str | Path, results: Mapping[str, Any], stage: str
) -> None:
    """ValueError naming the file, the run and both sides when the network read from ``path`` is not the one
    ``stage`` of the run saved: other modalities, class count or architecture than the stage's ``network`` record
    (for a results file without one: the network the run's ``config.yaml`` builds for the stage,
    :func:`expected_network`), or a class count other than the run's ``dataset.json`` (a model.pt copied from
    another stage or run)."""
    got = network_record(model)
    want = results["stages"][stage].get("network")
    if not isinstance(want, Mapping) and (Path(run_dir) / "config.yaml").is_file():
        want = expected_network(run_dir, stage)
    problems = _network_problems(got, want) if isinstance(want, Mapping) else []
    facts = Path(run_dir) / "dataset.json"
    if facts.is_file():
        record = read_json(facts)
        if not isinstance(record, dict):
            raise ValueError(f"{facts} is not a run's dataset record (a JSON mapping)")
        k = record.get("num_classes")
        if k != got["num_classes"] and not any("classes" in p for p in problems):
            problems.append(f"it has {got['num_classes']} classes, the run's dataset ({facts}) {k}")
    if problems:
        raise ValueError(f"{path} is not the network of stage {stage!r} of run {run_dir}: {'; '.join(problems)}")


def expected_network(run_dir: str | Path, stage: str) -> dict[str, Any] | None:
    """The ``network`` record of the network that the run's ``config.yaml`` builds for ``stage`` (its stages built
    in order, none trained; the data's facts from the run's ``dataset.json``, else from its training split); None
    when the stage is not one of the method's or depends on a ``checkpoint`` file that is not there."""
    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    facts = _record_facts(run_dir / "dataset.json")
    if facts is None:
        facts = dataset_facts(load_split(cfg, cfg["dataset"]["train_split"]))
    nets: dict[str, nn.Module] = {}
    with torch.random.fork_rng(devices=[]):
        for st in method_stages(cfg):
            explicit = (cfg.get("stages", {}).get(st.section) or {}).get("checkpoint")
            if explicit:
                if not Path(explicit).is_file():
                    return None
                nets[st.name] = load_model(explicit)
            else:
                nets[st.name] = st.build(_context(cfg, facts, {i: nets[i] for i in st.inputs})).deployable()
            if st.name == stage:
                return network_record(nets[st.name])
    return None


def _record_facts(path: Path) -> dict[str, Any] | None:
    """:func:`mmh.data.dataset_facts` from a run's ``dataset.json`` (None when there is none or it is malformed)."""
    try:
        record = read_json(path)
        shapes = record["input_shapes"]
        channels = {m: int(shape[1] if len(shape) == 4 else shape[0]) for m, shape in shapes.items()}
        return {
            "num_classes": int(record["num_classes"]),
            "modalities": tuple(record["modalities"]),
            "in_channels": channels,
            "num_frames": record.get("num_frames"),
        }
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError):
        return None


def _brief(config: Any, limit: int = 300) -> str:
    """A value (a build config) in a few words: its JSON, cut at ``limit`` characters."""
    text = json.dumps(config, sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_stage_network(run_dir: str | Path, results: Mapping[str, Any], stage: str) -> tuple[nn.Module, Path]:
    """(the network of a finished ``stage``, its ``model.pt`` path), checked against the run
    (:func:`check_stage_network`)."""
    path = stage_model_path(run_dir, results, stage)
    model = load_model(path)
    check_stage_network(model, path, run_dir, results, stage)
    return model, path
