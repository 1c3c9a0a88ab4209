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
artifact instead of training that stage.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import shutil
import sys
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
from .data.check import check_before_training
from .evaluation import evaluate_model
from .methods import Stage, StageContext, method_stages
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
from .utils.distributed import elastic_restart_count, init_distributed_from_env
from .utils.io import atomic_copy, read_json, remove_stale_temps, write_json
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
]

#: Bump when a change makes cached artifacts stale.
CACHE_VERSION = 1
#: Training keys that do not change the trained weights (left out of cache keys).
_COSMETIC = ("progress", "log_every", "tensorboard", "checkpoint_every", "eval_every", "num_workers")
#: Names of stages and artifacts: they become file names.
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")

_DATASETS: dict[str, Dataset] = {}


def load_split(cfg: Mapping[str, Any], split: str) -> Dataset:
    """``build_dataset(cfg.dataset.name, split, **cfg.dataset.kwargs)``, materialised in memory when
    ``dataset.cache`` is on and the dataset has no random transform (memoised per process)."""
    kwargs = split_kwargs(cfg, split)
    d = cfg["dataset"]
    key = config_hash([d["name"], split, kwargs, bool(d["cache"])])
    if key not in _DATASETS:
        ds = build_dataset(d["name"], split=split, **kwargs)
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
    """A hash of the first and last items' tensors: a changed generator (or files) gives another cache key."""
    n = len(dataset)  # type: ignore[arg-type]
    h = hashlib.sha1(str(n).encode())
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
        train = {k: v for k, v in stage_train_config(cfg, stage.section).items() if k not in _COSMETIC}
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
    return config_hash(payload)


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

    def evaluate(self, model: nn.Module, dataset: Dataset) -> dict[str, float]:
        return evaluate_model(
            model, dataset, list(self.cfg["eval"]["metrics"]), int(self.cfg["eval"]["batch_size"]), self.device
        )

    def write_results(self) -> None:
        if self.is_main:
            write_json(self.results, self.run_dir / "results.json")


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _start(
    cfg: dict[str, Any],
    run_dir: str | Path | None,
    resume: bool,
    budget: int | None,
    log: Callable[[str], None],
    overwrite: bool = False,
) -> _Run:
    """Process group, threads, device, the run folder (config.yaml, dataset.json), the global seed, the datasets.

    A new run writes ``config.yaml`` once; a resumed one reads it and never rewrites it (``cfg`` may differ from it
    only in :data:`mmh.config.RESUME_SAFE` settings, recorded in the results as ``resume_changes``)."""
    info = init_distributed_from_env()
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(cfg)
    changes = _claim_run_dir(run_dir, cfg, resume, overwrite)  # every rank checks before rank 0 writes
    _barrier()
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    device = resolve_device(cfg.get("device", "auto"))
    if info.is_main and not resume:
        if overwrite:
            _clear_run_dir(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
    seed_everything(int(cfg["seed"]))
    d = cfg["dataset"]
    train_set, eval_set = load_split(cfg, d["train_split"]), load_split(cfg, d["eval_split"])
    val_set = load_split(cfg, d["val_split"]) if d.get("val_split") else None
    if info.is_main:  # own recordings: checked before any training (mmh.data.check), the report in the run folder
        splits = (d["train_split"], d.get("val_split"), d["eval_split"])
        check_before_training(
            d["name"], {s: split_kwargs(cfg, s) for s in splits if s}, None if resume else run_dir, log
        )
    facts, fingerprint = dataset_facts(train_set), dataset_fingerprint(train_set)
    if info.is_main:  # what a deployment needs to feed the networks: class names, input shapes, normalisation
        write_json(dataset_record(cfg, train_set, facts), run_dir / "dataset.json")
    results = {
        "method": cfg["method"],
        "seed": cfg["seed"],
        "dataset": d["name"],
        "run_dir": str(run_dir),
        "status": "running",
        "stages": {},
    }
    if changes:
        results["resume_changes"] = changes
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
        raise ValueError(
            f"run directory {run_dir} already holds a run; continue it with --resume {run_dir}, replace "
            f"it with --overwrite, or give another --run-dir"
        )
    return {}


def _clear_run_dir(run_dir: Path) -> None:
    """Remove what a run wrote in ``run_dir`` (config.yaml, the JSON records, stages/); other files stay."""
    if not run_dir.is_dir():
        return
    if (run_dir / "stages").is_dir():
        shutil.rmtree(run_dir / "stages")
    for p in run_dir.iterdir():
        if p.is_file() and (p.name == "config.yaml" or p.suffix == ".json"):
            p.unlink()


def _reuse(run: _Run, stage: Stage, stage_dir: Path, cached: Path | None) -> tuple[nn.Module, Source] | None:
    """The stage's network without training: its ``checkpoint`` file, the run folder (on resume) or the cache."""
    explicit = (run.cfg.get("stages", {}).get(stage.section) or {}).get("checkpoint")
    if explicit:
        return load_model(explicit), Source("checkpoint", str(explicit))
    if (stage_dir / "model.pt").is_file() and run.resume:
        return load_model(stage_dir / "model.pt"), Source("run")
    if cached is not None and all((cached / f"{a}.pt").is_file() for a in ("model", *stage.artifacts)):
        return load_model(cached / "model.pt"), Source("cache", str(cached))
    return None


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
        remove_stale_temps(stage_dir, tuple(f"{name}.pt" for name in (*extra, "model")))
        for name, state in extra.items():
            if not _NAME.fullmatch(name) or name == "model":
                raise ValueError(f"stage {stage.name!r}: bad artifact name {name!r}")
            save_tensors(state, stage_dir / f"{name}.pt")
        save_model(model, stage_dir / "model.pt")
        if cached is not None:
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
        model, source = reused
        if source.kind == "checkpoint":
            key = config_hash(["path", str(Path(source.path or "").resolve())])
    else:
        ctx = StageContext(
            run.cfg,
            run.facts["num_classes"],
            run.facts["in_channels"],
            _model_kwargs(run.facts),
            {i: copy.deepcopy(run.nets[i]) for i in stage.inputs},
        )
        module = stage.build(ctx)
        if stage.trains and not _train(run, stage, module, stage_dir, record):
            return False
        model, source = _save(run, stage, module, stage_dir, cached), Source("trained")
    record["source"] = source.as_dict()
    record["network"] = network_record(model)  # what eval/export check a model.pt against
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
    resume = resume or _elastic_resume(cfg, run_dir, overwrite, log)
    run = _start(copy.deepcopy(dict(cfg)), run_dir, resume, stop_after_steps, log, overwrite)
    stages = method_stages(run.cfg)
    for stage in stages:
        if not _run_stage(run, stage):
            return run.results
    run.results["final"] = run.results["stages"][stages[-1].name]["metrics"]
    run.results["status"] = "done"
    run.write_results()
    return run.results


def _silent(_msg: str) -> None:
    return None


def _publish(src: Path, dst: Path) -> None:
    """Copy an artifact into the cache atomically and durably (concurrent writers of the same key are harmless;
    the temporary copy is removed on any failure). The caller checked the network finite before writing ``src``."""
    atomic_copy(src, dst)


def _elastic_resume(
    cfg: Mapping[str, Any], run_dir: str | Path | None, overwrite: bool, log: Callable[[str], None]
) -> bool:
    """Whether this process is a ``torchrun --max-restarts`` restart (``TORCHELASTIC_RESTART_COUNT`` > 0) of a run
    whose folder already exists, which then resumes (from each stage's ``latest.pt``) instead of starting over.

    The folder must be fixed for that (``--run-dir`` or ``output.name``): an automatic name has a new timestamp on
    each restart, so such a run starts over, and says so. Rank 0 decides and tells the others."""
    restarts = elastic_restart_count()
    if restarts < 1 or overwrite:
        return False
    fixed = run_dir is not None or bool(cfg["output"].get("name"))
    folder = Path(run_dir) if run_dir is not None else default_run_dir(cfg)
    info = init_distributed_from_env()
    decision = [fixed and (folder / "config.yaml").is_file()]
    if info.distributed:
        dist.broadcast_object_list(decision, src=0)
    if not info.is_main:
        return bool(decision[0])
    if decision[0]:
        log(f"elastic restart {restarts}: resuming {folder} from its latest checkpoints")
    elif not fixed:
        log(
            f"elastic restart {restarts}: the run folder has an automatic name, so this restart starts over in a "
            f"new folder; give --run-dir (or output.name) to resume from latest.pt after a restart"
        )
    else:
        log(f"elastic restart {restarts}: {folder} holds no run yet; starting it")
    return bool(decision[0])


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


def check_stage_network(
    model: nn.Module, path: str | Path, run_dir: str | Path, results: Mapping[str, Any], stage: str
) -> None:
    """ValueError naming the file, the run and both sides when the network read from ``path`` is not the one
    ``stage`` of the run saved: other modalities, class count or architecture than the stage's ``network`` record,
    or a class count other than the run's ``dataset.json`` (a model.pt copied from another stage or run)."""
    got = network_record(model)
    want = results["stages"][stage].get("network")
    problems = []
    if isinstance(want, Mapping):
        if got["modalities"] != want.get("modalities"):
            problems.append(f"it reads modalities {got['modalities']}, the stage reads {want.get('modalities')}")
        if got["num_classes"] != want.get("num_classes"):
            problems.append(f"it has {got['num_classes']} classes, the stage {want.get('num_classes')}")
        if not problems and got["config"] != want.get("config"):
            problems.append(f"its architecture {_brief(got['config'])} is not the stage's {_brief(want.get('config'))}")
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


def _brief(config: Any) -> str:
    """A build config in a few words (its model name and kwargs, without the weights' provenance)."""
    return json.dumps(config, sort_keys=True, default=str)[:300]


def load_stage_network(run_dir: str | Path, results: Mapping[str, Any], stage: str) -> tuple[nn.Module, Path]:
    """(the network of a finished ``stage``, its ``model.pt`` path), checked against the run
    (:func:`check_stage_network`)."""
    path = stage_model_path(run_dir, results, stage)
    model = load_model(path)
    check_stage_network(model, path, run_dir, results, stage)
    return model, path
