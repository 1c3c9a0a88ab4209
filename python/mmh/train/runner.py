"""Run a method from a resolved config: datasets, the recipe's stages (cached / resumed / trained), evaluation.

A run directory holds::

    config.yaml            the resolved config
    results.json           status, per-stage source / cache key / metrics, final metrics
    stages/<name>/         latest.pt, best.pt, metrics.csv, model.pt (the stage's trained network)

Stage artifacts are cached in ``output.cache`` (default ``<output.root>/cache``) under ``<kind>-<hash>``, the hash
covering everything the result depends on (seed, dataset, model, the stage's training settings and loss entries,
and its inputs' hashes): a teacher trained once serves every student method with the same settings.
``stages.<section>.checkpoint: PATH`` loads a model artifact instead of training that stage.
"""

from __future__ import annotations

import copy
import hashlib
import os
import re
import shutil
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset

from ..config import config_hash, get_path, save_config, stage_train_config
from ..evaluation import compute_metrics, ensemble_metrics, predict
from ..methods import LogitEnsemble, StageContext, method_stages
from ..methods.base import Stage
from ..utils.distributed import init_distributed_from_env
from ..utils.io import read_json, write_json
from ..utils.seed import seed_everything
from .checkpoint import load_model, save_model
from .data import dataset_facts, eval_batches, materialize
from .trainer import Trainer, resolve_device

__all__ = ["run_experiment", "load_split", "load_results", "stage_model_path", "stage_key", "evaluate_model", "default_run_dir",
           "dataset_record", "CACHE_VERSION"]

#: Bump when a change makes cached artifacts stale.
CACHE_VERSION = 1
#: Training keys that do not change the trained weights (left out of cache keys).
_COSMETIC = ("progress", "log_every", "tensorboard", "checkpoint_every", "eval_every", "num_workers")

_DATASETS: dict[str, Dataset] = {}


def load_split(cfg: Mapping[str, Any], split: str) -> Dataset:
    """``build_dataset(cfg.dataset.name, split, **cfg.dataset.kwargs)``, materialised in memory when
    ``dataset.cache`` is on and the dataset has no random transform (memoised per process)."""
    from ..data import build_dataset  # the data package registers the built-in datasets on import

    kwargs = split_kwargs(cfg, split)
    d = cfg["dataset"]
    key = config_hash([d["name"], split, kwargs, bool(d["cache"])])
    if key not in _DATASETS:
        ds = build_dataset(d["name"], split=split, **kwargs)
        skipped = getattr(ds, "skipped", None)
        if skipped:  # on_missing="skip": say so, or the run's numbers silently cover fewer samples
            import sys

            print(f"[{d['name']} {split}] {len(skipped)} sample(s) skipped (on_missing=skip), e.g. "
                  f"{skipped[0][0]}: {skipped[0][1]}", file=sys.stderr, flush=True)
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
    return {"name": cfg["dataset"]["name"], "class_names": list(getattr(dataset, "class_names", []) or []),
            "num_classes": facts["num_classes"], "modalities": list(facts["modalities"]),
            "input_shapes": {m: list(item[m].shape) for m in facts["modalities"]},
            "num_frames": facts["num_frames"], "normalization": getattr(dataset, "normalization", None)}


def stage_key(stage: Stage, cfg: Mapping[str, Any], input_keys: Mapping[str, str], data_fingerprint: str = "") -> str:
    """The cache key of ``stage`` under ``cfg`` given its inputs' keys (and the training data's fingerprint)."""
    train = None
    if stage.trains:
        train = {k: v for k, v in stage_train_config(cfg, stage.section).items() if k not in _COSMETIC}
    d = cfg["dataset"]
    payload = {"v": CACHE_VERSION, "kind": stage.kind, "seed": cfg["seed"],
               "dataset": [d["name"], split_kwargs(cfg, d["train_split"]), d["train_split"], data_fingerprint],
               "model": cfg["model"], "train": train,
               "depends": {k: get_path(cfg, k) for k in stage.depends_on},
               "inputs": [input_keys[i] for i in stage.inputs]}
    return config_hash(payload)


def default_run_dir(cfg: Mapping[str, Any]) -> Path:
    """``<output.root>/<output.name>`` or ``<output.root>/<dataset>-<method>-s<seed>-<timestamp>``."""
    out = cfg["output"]
    name = out.get("name") or (f"{cfg['dataset']['name']}-{cfg['method']}-s{cfg['seed']}-"
                               f"{datetime.now().strftime('%Y%m%d-%H%M%S')}")
    return Path(out["root"]) / name


def _cache_dir(cfg: Mapping[str, Any]) -> Path | None:
    c = cfg["output"].get("cache")
    if c == "":
        return None
    return Path(c) if c else Path(cfg["output"]["root"]) / "cache"


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def evaluate_model(model: nn.Module, dataset: Dataset, metrics: list[str], batch_size: int,
                   device: torch.device) -> dict[str, float]:
    """Metrics of ``model`` on ``dataset``; for a :class:`LogitEnsemble` also each member's and the oracle's."""
    model = model.to(device)
    if isinstance(model, LogitEnsemble):
        per: dict[str, torch.Tensor] = {}
        labels = None
        for name, member in model.members.items():
            per[name], labels = predict(member, eval_batches(dataset, batch_size), device)
        assert labels is not None
        out = compute_metrics(torch.stack(list(per.values())).mean(0), labels, metrics)
        out.update(ensemble_metrics(per, labels))
        return out
    logits, labels = predict(model, eval_batches(dataset, batch_size), device)
    return compute_metrics(logits, labels, metrics)


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def run_experiment(cfg: Mapping[str, Any], *, run_dir: str | Path | None = None, resume: bool = False,
                   stop_after_steps: int | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run ``cfg["method"]`` end to end and return the ``results.json`` content.

    ``resume``: continue a run directory (completed stages are reloaded, the interrupted one resumes from its
    ``latest.pt``). ``stop_after_steps``: stop the current stage after that many steps (as if killed); the result
    then has ``status == "stopped"``.
    """
    cfg = copy.deepcopy(dict(cfg))
    info = init_distributed_from_env()
    if not info.is_main:
        log = _silent  # rank 0 logs
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    device = resolve_device(cfg.get("device", "auto"))
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(cfg)
    if resume and not (run_dir / "config.yaml").is_file():
        raise FileNotFoundError(f"cannot resume: {run_dir} has no config.yaml (not a run directory)")
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
    seed_everything(int(cfg["seed"]))
    train_set = load_split(cfg, cfg["dataset"]["train_split"])
    eval_set = load_split(cfg, cfg["dataset"]["eval_split"])
    val_set = load_split(cfg, cfg["dataset"]["val_split"]) if cfg["dataset"].get("val_split") else None
    facts = dataset_facts(train_set)
    fingerprint = dataset_fingerprint(train_set)
    if info.is_main:  # what a deployment needs to feed the networks: class names, input shapes, normalisation
        write_json(dataset_record(cfg, train_set, facts), run_dir / "dataset.json")
    model_kwargs = {"num_frames": facts["num_frames"]} if facts["num_frames"] else {}
    metrics = list(cfg["eval"]["metrics"])
    bs_eval = int(cfg["eval"]["batch_size"])
    cache = _cache_dir(cfg)
    stages = method_stages(cfg)
    results: dict[str, Any] = {"method": cfg["method"], "seed": cfg["seed"], "dataset": cfg["dataset"]["name"],
                               "run_dir": str(run_dir), "status": "running", "stages": {}}
    artifacts: dict[str, nn.Module] = {}
    keys: dict[str, str] = {}
    budget = stop_after_steps  # steps left in this invocation (None: unlimited)
    for stage in stages:
        _barrier()
        t0 = time.perf_counter()
        key = stage_key(stage, cfg, keys, fingerprint)
        stage_dir = run_dir / "stages" / stage.name
        explicit = (cfg.get("stages", {}).get(stage.section) or {}).get("checkpoint")
        cached = cache / f"{_safe(stage.kind)}-{key}" if cache is not None else None
        record: dict[str, Any] = {"kind": stage.kind, "key": key}
        if explicit:
            model, record["source"] = load_model(explicit), f"checkpoint:{explicit}"
            key = config_hash(["path", str(Path(explicit).resolve())])
        elif (stage_dir / "model.pt").is_file() and resume:
            model, record["source"] = load_model(stage_dir / "model.pt"), "run"
        elif cached is not None and (cached / "model.pt").is_file():
            model, record["source"] = load_model(cached / "model.pt"), f"cache:{cached}"
        else:
            ctx = StageContext(cfg, facts["num_classes"], facts["in_channels"], model_kwargs,
                               {i: copy.deepcopy(artifacts[i]) for i in stage.inputs})
            module = stage.build(ctx)
            if stage.trains:
                val_fn = None
                if val_set is not None:
                    def val_fn(net: nn.Module, _ds: Dataset = val_set) -> dict[str, float]:
                        return evaluate_model(net, _ds, metrics, bs_eval, device)
                tcfg = stage_train_config(cfg, stage.section)
                trainer = Trainer(module, train_set, tcfg, out_dir=stage_dir, seed=int(cfg["seed"]), device=device,
                                  val_fn=val_fn, config=cfg)
                fit = None
                if budget is None or budget > 0:
                    fit = trainer.fit(resume=resume, stop_after_steps=budget)
                    budget = None if budget is None else budget - fit.steps_run
                if fit is None or fit.stopped:
                    step = fit.step if fit is not None else trainer.step
                    results["status"] = "stopped"
                    results["stages"][stage.name] = {**record, "source": "partial", "step": step,
                                                     "total_steps": trainer.total_steps}
                    if info.is_main:
                        write_json(results, run_dir / "results.json")
                    log(f"[{cfg['method']}] stage {stage.name}: stopped at step {step}/{trainer.total_steps}")
                    return results
                if tcfg.get("deploy", "last") == "best":
                    _barrier()  # best.pt is written by rank 0
                    record["deployed"] = {"checkpoint": "best.pt", **trainer.restore_best()}
            model, record["source"] = module.deployable(), "trained"
            if info.is_main:
                save_model(model, stage_dir / "model.pt")
                if cached is not None:
                    _publish(stage_dir / "model.pt", cached / "model.pt")
        model = model.to(device).eval()
        artifacts[stage.name], keys[stage.name] = model, key
        record["metrics"] = evaluate_model(model, eval_set, metrics, bs_eval, device)
        record["time_s"] = round(time.perf_counter() - t0, 2)
        results["stages"][stage.name] = record
        log(f"[{cfg['method']} s{cfg['seed']}] stage {stage.name}: {record['source'].split(':')[0]} "
            f"{_fmt(record['metrics'])} ({record['time_s']:.1f}s)")
    results["final"] = results["stages"][stages[-1].name]["metrics"]
    results["status"] = "done"
    if info.is_main:
        write_json(results, run_dir / "results.json")
    return results


def _silent(_msg: str) -> None:
    return None


def _publish(src: Path, dst: Path) -> None:
    """Copy an artifact into the cache atomically (concurrent writers of the same key are harmless)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def _fmt(metrics: Mapping[str, float]) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in metrics.items() if "/" not in k)


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
        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name) or not isinstance(record, dict):
            raise ValueError(f"{p}: malformed stage entry {name!r} (names are [A-Za-z0-9_.-], entries are mappings)")
        if not isinstance(record.get("source", ""), str):
            raise ValueError(f"{p}: stage {name!r} has a non-string 'source'")
    return res


def stage_model_path(run_dir: str | Path, res: Mapping[str, Any], stage: str) -> Path:
    """The ``model.pt`` of a finished stage: ``run_dir/stages/<stage>/model.pt``, else the file or folder its
    ``source`` names (``cache:<folder>`` for a stage reused from the stage cache, ``checkpoint:<path>``).
    FileNotFoundError naming the stage and the path when there is none."""
    path = Path(run_dir) / "stages" / stage / "model.pt"
    if not path.is_file():
        src = str(res["stages"][stage].get("source", ""))
        if src.startswith(("cache:", "checkpoint:")):
            cand = Path(src.split(":", 1)[1])
            path = cand if cand.is_file() else cand / "model.pt"
    if not path.is_file():
        raise FileNotFoundError(f"stage {stage!r} of {run_dir} has no saved network ({path})")
    return path
