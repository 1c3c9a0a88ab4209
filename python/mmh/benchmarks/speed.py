"""``mmh benchmark speed``: what one training step costs, at the papers' sizes, and where its time goes.

For each method (``teacher``, ``baseline``, ``kd``, ``rad``, ``dad`` and the ``multistream`` stage that uses the
cross-stream injection, thesis ch. 3 step 3) the stage a recipe trains is built — the paper recipes
``papers/mmh/casia_surf/<method>`` (SURF ResNet18-SE, 112x112, batch 64) and ``papers/thesis/nwucla/multistream``
(ResNet-50 multiplier streams with temporal units, 8-frame clips at 112x112, batch 16) — with untrained weights
(``model.pretrained`` is dropped: the speed does not depend on the weights, and nothing is downloaded) and fed one
batch held in memory, shaped like the recipe's data, so the data loader is not what is measured (its own rate over
the same samples is a separate number, ``record.loader_samples_per_s``).

The step is timed several ways, interleaved round by round, the order rotated every round (``a b c d``,
``b c d a``, ...), so that the load of a shared machine hits all of them alike:

* ``trainer``: :class:`mmh.train.Trainer`'s own step (autocast, non-finite bookkeeping, running sums, its log point
  every ``train.log_every`` steps) with the mmh_ext losses — ``samples_per_s`` and the per-phase split
  (:mod:`mmh.train.timing`: teacher forward, student forward, loss, backward, optimizer; CUDA events on the GPU);
* ``reference``: the same step with the operators of :mod:`mmh_ext.reference` (eager PyTorch, as the reference code
  trains) in place of the fused ones (:func:`reference_ops`); only for steps that call an operator (rad, dad,
  multistream), else null;
* ``minimal``: a hand-written loop over the same stage, data and losses (forward, sum, zero_grad, backward,
  optimizer and scheduler step) — the trainer's overhead is ``1 - trainer / minimal``;
* ``compile``: the trainer's step with ``train.compile: true`` (its compile time is excluded: it runs in the warm-up
  step). Skipped with ``--quick`` (compiling a paper-size network takes minutes on the CPU), then null;
* ``cache`` (kd, rad, dad): the trainer's step with ``train.teacher_cache: true``, the teacher's outputs stored in
  the warm-up step (``record.methods.<m>.teacher_cache_samples_per_s``).

Outputs in ``--out``: ``speed.json`` (``{"methods": {m: {"samples_per_s", "phases_ms", "reference_samples_per_s",
"minimal_loop_samples_per_s", "compile_samples_per_s", "peak_mem_mb"}}, "record": {...}}``), ``speed.md`` (the
table with the ratios, each the median of the per-round ratios) and ``speed.png`` (the per-phase split, when
matplotlib is installed). ``phases_ms`` holds the trainer's mean phase times and ``step_ms``, the trainer step's wall
time (``samples_per_s = batch / step_ms``); ``peak_mem_mb`` is CUDA's peak allocation over the trainer's steps (all
variants' networks resident), null on the CPU. ``record`` is :func:`mmh.runner.reproduction_record` plus the
machine's load average before and after (``uptime``), the batch, steps, rounds and recipes, and the ratios.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..config import find_config, load_config, stage_train_config
from ..data.loader import make_loader, to_device
from ..methods import method_stages
from ..methods.base import StageContext
from ..train import StageModule, Trainer, build_optimizer, build_scheduler
from ..train.timing import PHASES, PhaseTimer
from ..utils.device import resolve_device

__all__ = ["SPEED_METHODS", "DEFAULT_RECIPES", "reference_ops", "run_speed", "build_timed_stage", "speed_batch"]

_log = logging.getLogger(__name__)

#: The methods timed, in the order of the table.
SPEED_METHODS = ("teacher", "baseline", "kd", "rad", "dad", "multistream")
#: The recipe of each method (paper sizes) and the stage of it that is timed (None: the recipe's last stage).
DEFAULT_RECIPES: dict[str, tuple[str, str | None]] = {
    "teacher": ("papers/mmh/casia_surf/teacher", None),
    "baseline": ("papers/mmh/casia_surf/baseline", None),
    "kd": ("papers/mmh/casia_surf/kd", None),
    "rad": ("papers/mmh/casia_surf/rad", None),
    "dad": ("papers/mmh/casia_surf/dad", None),
    "multistream": ("papers/thesis/nwucla/multistream", "step3"),  # the frozen depth stream injects into the student
}
#: What the recipes' datasets deliver (the benchmark needs no data files): channels per modality, classes, and the
#: clip length and resolution the benchmark uses. Datasets not listed: 3 channels per modality, 2 classes, images.
DATA_SPECS: dict[str, dict[str, Any]] = {
    "casia_surf": {"channels": {"rgb": 3, "depth": 1, "ir": 1}, "num_classes": 2, "frames": None, "size": 112},
    "casia_cefa": {"channels": {"rgb": 3, "depth": 1, "ir": 1}, "num_classes": 2, "frames": None, "size": 112},
    "nwucla": {"channels": {"rgb": 3, "depth": 3}, "num_classes": 10, "frames": 8, "size": 112},
    "uwa3d2": {"channels": {"rgb": 3, "depth": 3}, "num_classes": 30, "frames": 8, "size": 112},
}
#: Operators that have a reference (eager) version: the step's losses and the injection.
_OPS_METHODS = ("rad", "dad", "multistream")
#: Methods with a frozen teacher whose outputs ``train.teacher_cache`` can hold.
_TEACHER_METHODS = ("kd", "rad", "dad")
_QUICK = {"steps": 2, "image_batch": 4, "clip_batch": 1, "clip_size": 64}


# ------------------------------------------------------------------------------------------------ reference operators
#: The fused operators a stage calls, by name (each also reachable as ``mmh_ext.<name>``): the module that holds it.
_OP_MODULES = {"rad_loss": "rad", "dad_loss": "dad", "cross_stream_inject": "inject"}


@contextlib.contextmanager
def _patched_ops(make: Callable[[str, Callable[..., Any]], Callable[..., Any]]) -> Iterator[None]:
    """Inside: each fused operator ``name`` (in its module and in ``mmh_ext``) is ``make(name, fused_function)``."""
    import importlib

    import mmh_ext

    saved = []
    try:
        for name, module in _OP_MODULES.items():
            mod = importlib.import_module(f"mmh_ext.{module}")
            fn = make(name, getattr(mod, name))
            for where in (mod, mmh_ext):
                saved.append((where, name, getattr(where, name)))
                setattr(where, name, fn)
        yield
    finally:
        for where, name, fn in reversed(saved):
            setattr(where, name, fn)


def reference_ops(counter: dict[str, int] | None = None) -> contextlib.AbstractContextManager[None]:
    """Inside: every call of the fused mmh_ext operators a stage makes (``rad_loss`` through
    :class:`mmh_ext.nn.RegionAwareDistillation`, ``dad_loss``, ``cross_stream_inject``) runs its
    :mod:`mmh_ext.reference` version instead; ``counter`` (if given) counts the reference calls per name."""
    from mmh_ext import reference

    def make(name: str, _fused: Callable[..., Any]) -> Callable[..., Any]:
        ref = getattr(reference, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            if counter is not None:
                counter[name] = counter.get(name, 0) + 1
            return ref(*args, **kwargs)

        return call

    return _patched_ops(make)


class _Leaf:
    """A recorded operator argument: a detached copy, and whether the step differentiated it."""

    def __init__(self, t: Tensor) -> None:
        self.t, self.grad = t.detach().clone(), bool(t.requires_grad)

    def fresh(self) -> Tensor:
        return self.t.detach().requires_grad_(self.grad)


def _snapshot(x: Any) -> Any:
    if isinstance(x, Tensor):
        return _Leaf(x)
    if isinstance(x, list | tuple):
        return type(x)(_snapshot(v) for v in x)
    if isinstance(x, dict):
        return {k: _snapshot(v) for k, v in x.items()}
    return x


def _fresh(x: Any) -> Any:
    if isinstance(x, _Leaf):
        return x.fresh()
    if isinstance(x, list | tuple):
        return type(x)(_fresh(v) for v in x)
    if isinstance(x, dict):
        return {k: _fresh(v) for k, v in x.items()}
    return x


def record_ops(calls: list[tuple[str, Any, Any]]) -> contextlib.AbstractContextManager[None]:
    """Inside: every call of a fused operator runs as usual and is appended to ``calls`` as ``(name, args,
    kwargs)``, its tensors copied (:func:`time_ops` replays them)."""

    def make(name: str, fused: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            calls.append((name, _snapshot(args), _snapshot(kwargs)))
            return fused(*args, **kwargs)

        return call

    return _patched_ops(make)


def time_ops(
    calls: Sequence[tuple[str, Any, Any]], device: torch.device, rounds: int = 5, budget_s: float = 0.25
) -> dict[str, Any]:
    """The operators of one training step alone: forward and backward of every recorded call (:func:`record_ops`),
    with the fused mmh_ext functions and with their :mod:`mmh_ext.reference` versions, interleaved over ``rounds``
    (each about ``budget_s`` seconds of repetitions). Outside autocast, on the recorded dtypes. Returns
    ``{"mmh_ext_ms", "reference_ms", "ratio"}``: mean milliseconds per step's calls and the median over rounds of
    reference time / mmh_ext time (> 1: the fused operators are faster); ``calls`` (per operator, in one step),
    ``reps`` (repetitions per round) and ``rounds``."""
    import importlib

    from mmh_ext import reference

    impls = {
        "mmh_ext": {n: getattr(importlib.import_module(f"mmh_ext.{m}"), n) for n, m in _OP_MODULES.items()},
        "reference": {n: getattr(reference, n) for n in _OP_MODULES},
    }

    grads: dict[int, Tensor] = {}  # per call, a dense gradient of its output (as a training step's backward brings)

    def once(impl: Mapping[str, Callable[..., Any]]) -> None:
        for i, (name, args, kwargs) in enumerate(calls):
            out = impl[name](*_fresh(args), **_fresh(kwargs))
            if out.requires_grad:
                if i not in grads:
                    grads[i] = torch.ones_like(out, memory_format=torch.contiguous_format)
                out.backward(grads[i])

    def timed(impl: Mapping[str, Callable[..., Any]], reps: int) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        for _ in range(reps):
            once(impl)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return (time.perf_counter() - t0) / reps

    for impl in impls.values():  # warm-up, and the repetitions that fill the budget
        once(impl)
    reps = max(3, min(500, int(budget_s / max(timed(impls["mmh_ext"], 2), 1e-6))))
    times: dict[str, list[float]] = {k: [] for k in impls}
    for r in range(rounds):
        for k in list(impls)[r % 2 :] + list(impls)[: r % 2]:
            times[k].append(timed(impls[k], reps))
    return {
        "mmh_ext_ms": statistics.fmean(times["mmh_ext"]) * 1000.0,
        "reference_ms": statistics.fmean(times["reference"]) * 1000.0,
        "ratio": statistics.median(b / a for a, b in zip(times["mmh_ext"], times["reference"])),
        "calls": {n: sum(1 for c in calls if c[0] == n) for n in dict.fromkeys(c[0] for c in calls)},
        "reps": reps,
        "rounds": rounds,
    }


# ------------------------------------------------------------------------------------------------ building
def speed_config(recipe: str | os.PathLike, batch: int | None, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The recipe's config for timing: no pretrained weights, no train augmentation (the batch is fixed),
    ``batch`` (default: the recipe's), no progress bar."""
    cfg = load_config(find_config(recipe), overrides)
    cfg["model"]["pretrained"] = None
    cfg["dataset"]["transforms"] = {"train": [], "eval": []}
    if batch is not None:
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ValueError(f"--batch must be a positive int, got {batch!r}")
        cfg["train"]["batch_size"] = batch
    cfg["train"]["progress"] = False
    return cfg


def data_facts(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The facts a stage builder needs (channels, classes, clip length) for the recipe's dataset (:data:`DATA_SPECS`;
    for a dataset not listed there, 3 channels per modality, 2 classes, 112x112 images)."""
    spec = DATA_SPECS.get(cfg["dataset"]["name"], {})
    mods = list(dict.fromkeys([m for role in cfg["modalities"].values() for m in role]))
    channels = {m: int(spec.get("channels", {}).get(m, 3)) for m in mods}
    return {
        "num_classes": int(spec.get("num_classes", 2)),
        "modalities": tuple(mods),
        "in_channels": channels,
        "num_frames": spec.get("frames"),
        "size": int(spec.get("size", 112)),
    }


def speed_batch(facts: Mapping[str, Any], batch: int, seed: int = 0) -> dict[str, Tensor]:
    """One batch of random inputs shaped like the recipe's data: (B, C, H, W) images or (B, T, C, H, W) clips."""
    g = torch.Generator().manual_seed(seed)
    size, frames = facts["size"], facts["num_frames"]
    out: dict[str, Tensor] = {}
    for m, c in facts["in_channels"].items():
        shape = (batch, frames, c, size, size) if frames else (batch, c, size, size)
        out[m] = torch.rand(shape, generator=g)
    out["label"] = torch.randint(0, facts["num_classes"], (batch,), generator=g)
    return out


def build_timed_stage(cfg: Mapping[str, Any], facts: Mapping[str, Any], stage: str | None = None) -> StageModule:
    """The StageModule of the recipe's stage ``stage`` (default: its last), its input stages built (untrained) in
    the recipe's order."""
    stages = method_stages(cfg)
    names = [s.name for s in stages]
    target = stage or names[-1]
    if target not in names:
        raise KeyError(f"method {cfg['method']!r} has no stage {target!r} (stages: {names})")
    kwargs = {"num_frames": facts["num_frames"]} if facts["num_frames"] else {}
    nets: dict[str, Any] = {}
    module: StageModule | None = None
    for s in stages:
        if not set(s.inputs) <= set(nets):
            continue
        ctx = StageContext(
            dict(cfg), facts["num_classes"], dict(facts["in_channels"]), kwargs, {i: nets[i] for i in s.inputs}
        )
        module = s.build(ctx)
        if s.name == target:
            return module
        nets[s.name] = module.deployable()
    raise KeyError(f"stage {target!r} of method {cfg['method']!r} could not be built from its inputs")


class _MemorySet(Dataset):
    """``n`` samples cut from one in-memory batch (for the Trainer's schedule and the loader's rate)."""

    def __init__(self, batch: Mapping[str, Tensor], n: int, modalities: Sequence[str], num_classes: int) -> None:
        self.batch, self.n = dict(batch), n
        self.modalities, self.num_classes = tuple(modalities), num_classes
        self.rows = int(batch["label"].shape[0])

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {k: v[i % self.rows] for k, v in self.batch.items()}


# ------------------------------------------------------------------------------------------------ the variants
class _Variant:
    """One way of running the step: ``step()`` runs one training step on the batch."""

    def __init__(self, name: str, step: Callable[[], None], ops: Callable[[], Any] | None = None) -> None:
        self.name, self._step, self.ops = name, step, ops or contextlib.nullcontext
        self.times: list[float] = []  # seconds per step, per round
        self.peak_mb: float | None = None

    def run(self, steps: int, device: torch.device) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        with self.ops():
            for _ in range(steps):
                self._step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return (time.perf_counter() - t0) / steps


def _trainer(stage: StageModule, data: Dataset, tcfg: Mapping[str, Any], device: torch.device, out: Path) -> Trainer:
    tcfg = {**tcfg, "steps": 10**9, "epochs": None, "log_every": int(tcfg.get("log_every") or 10)}
    return Trainer(stage, data, tcfg, out_dir=out, device=device, name="speed")


def _trainer_step(trainer: Trainer, batch: Mapping[str, Tensor]) -> Callable[[], None]:
    log_every = int(trainer.tcfg["log_every"])

    def step() -> None:
        trainer._train_step(dict(batch))  # noqa: SLF001  (the trainer's own step, without the loader)
        if trainer.step % log_every == 0:
            trainer._log_point(None)  # noqa: SLF001  (its log point: the read of the device)

    return step


def _cached_step(trainer: Trainer, batch: Mapping[str, Tensor], bs: int) -> Callable[[], None]:
    step = _trainer_step(trainer, batch)
    assert trainer.teacher_cache is not None

    def cached() -> None:
        trainer.teacher_cache.select(range(bs))  # the batch is samples 0..B-1 of the in-memory set
        step()

    return cached


def _minimal_step(stage: StageModule, tcfg: Mapping[str, Any], batch: Mapping[str, Tensor], amp: Any) -> Callable:
    optimizer = build_optimizer(stage.trainable_parameters(), tcfg)
    scheduler = build_scheduler(optimizer, {**tcfg, "steps": 10**9, "epochs": None}, 10**9)
    scaler = torch.amp.GradScaler(amp[0], enabled=amp[1] == torch.float16) if amp[1] is not None else None
    stage.train()

    def step() -> None:
        with torch.autocast(amp[0], dtype=amp[1], enabled=amp[1] is not None):
            _, losses = stage(batch)
        loss = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        scheduler.step()

    return step


def _method_speed(
    method: str,
    recipe: str,
    stage_name: str | None,
    *,
    device: torch.device,
    batch: int | None,
    steps: int,
    rounds: int,
    compile_: bool | str,
    overrides: Sequence[str],
    work: Path,
    quick: bool = False,
) -> dict[str, Any]:
    cfg = speed_config(recipe, batch, overrides)
    facts = data_facts(cfg)
    if quick and facts["num_frames"]:  # the same networks on smaller frames: --quick stays within minutes
        facts["size"] = _QUICK["clip_size"]
    bs = int(cfg["train"]["batch_size"])

    def fresh() -> StageModule:  # each variant its own copy, the same weights (a stage may hold modules: no deepcopy)
        torch.manual_seed(int(cfg["seed"]))
        return build_timed_stage(cfg, facts, stage_name)

    section = next(s.section for s in method_stages(cfg) if s.name == (stage_name or method_stages(cfg)[-1].name))
    tcfg = stage_train_config(cfg, section)
    cpu_batch = speed_batch(facts, bs, int(cfg["seed"]))
    gpu_batch = to_device(cpu_batch, device)
    data = _MemorySet(cpu_batch, max(bs, 2 * bs), facts["modalities"], facts["num_classes"])

    variants: list[_Variant] = []
    trainer = _trainer(fresh(), data, tcfg, device, work / f"{method}_trainer")
    trainer.stage.train()
    trainer.timer = PhaseTimer(trainer.stage, device, hooks=True)
    variants.append(_Variant("trainer", _trainer_step(trainer, gpu_batch)))
    if method in _OPS_METHODS:
        ref = _trainer(fresh(), data, tcfg, device, work / f"{method}_reference")
        ref.stage.train()
        ref.timer = PhaseTimer(ref.stage, device, hooks=True)
        variants.append(_Variant("reference", _trainer_step(ref, gpu_batch), reference_ops))
    minimal_stage = fresh().to(device)
    amp = (device.type, trainer.amp_dtype)
    variants.append(_Variant("minimal", _minimal_step(minimal_stage, tcfg, gpu_batch, amp)))
    cached: Trainer | None = None
    if method in _TEACHER_METHODS:  # train.teacher_cache: the teacher runs in the warm-up step only
        cached = _trainer(fresh(), data, {**tcfg, "teacher_cache": True}, device, work / f"{method}_cache")
        cached.stage.train()
        variants.append(_Variant("cache", _cached_step(cached, gpu_batch, bs)))
    compiled: Trainer | None = None
    if compile_:
        compiled = _trainer(fresh(), data, {**tcfg, "compile": compile_}, device, work / f"{method}_compile")
        compiled.stage.train()
        variants.append(_Variant("compile", _trainer_step(compiled, gpu_batch)))

    t0 = time.perf_counter()
    calls: list[tuple[str, Any, Any]] = []  # the operator calls of the trainer's warm-up step, replayed alone below
    for v in variants:  # warm-up (allocator, cuDNN autotuning, torch.compile's compilation)
        with record_ops(calls) if v.name == "trainer" and method in _OPS_METHODS else contextlib.nullcontext():
            v.run(1, device)
    warm_s = time.perf_counter() - t0
    trainer.timer.means()  # drop the warm-up step's phases
    if method in _OPS_METHODS:
        ref.timer.means()
    if compiled is not None and compiled._forward is compiled.model:  # noqa: SLF001  (fell back to eager: logged)
        variants = [v for v in variants if v.name != "compile"]
    # the step's operator calls alone, before the timed rounds (their recorded tensors then freed: not in the peak)
    ops_alone = time_ops(calls, device) if calls else None
    calls.clear()
    per_round = max(1, math.ceil(steps / rounds))
    for r in range(rounds):
        for v in variants[r % len(variants) :] + variants[: r % len(variants)]:  # each variant takes each slot
            if device.type == "cuda" and v.name == "trainer":
                torch.cuda.reset_peak_memory_stats(device)
            v.times.append(v.run(per_round, device))
            if device.type == "cuda" and v.name == "trainer":
                peak = torch.cuda.max_memory_allocated(device) / 2**20
                v.peak_mb = max(v.peak_mb or 0.0, peak)
    phases = trainer.timer.means()
    ref_phases = ref.timer.means() if method in _OPS_METHODS else None
    by = {v.name: v for v in variants}

    def rate(name: str) -> float | None:
        v = by.get(name)
        return bs / statistics.fmean(v.times) if v is not None else None

    def ratios(name: str) -> list[float] | None:  # per round: other time / trainer time (>1: other is slower)
        v = by.get(name)
        return None if v is None else [b / a for a, b in zip(by["trainer"].times, v.times)]

    def ratio(name: str) -> float | None:  # their median
        r = ratios(name)
        return None if r is None else statistics.median(r)

    step_ms = statistics.fmean(by["trainer"].times) * 1000.0
    result = {
        "samples_per_s": bs / (step_ms / 1000.0),
        "phases_ms": {**{k: phases.get(k, 0.0) for k in PHASES if k != "step_ms"}, "step_ms": step_ms},
        "reference_samples_per_s": rate("reference"),
        "minimal_loop_samples_per_s": rate("minimal"),
        "compile_samples_per_s": rate("compile"),
        "peak_mem_mb": by["trainer"].peak_mb,
    }
    facts_out = {
        "recipe": str(recipe),
        "stage": stage_name or method_stages(cfg)[-1].name,
        "model": cfg["model"]["name"],
        "batch": bs,
        "input": list(cpu_batch[facts["modalities"][0]].shape[1:]),
        "steps": per_round * rounds,
        "rounds": rounds,
        "warmup_s": warm_s,
        "mmh_vs_reference": ratio("reference"),  # reference step time / mmh step time (>= 1: mmh_ext not slower)
        "mmh_vs_reference_rounds": ratios("reference"),  # the per-round ratios: their spread is the noise
        "ops_alone": ops_alone,  # the step's operator calls alone, fwd + bwd
        "minimal_vs_trainer": ratio("minimal"),  # minimal loop time / trainer time (overhead = 1 - this)
        "compile_vs_trainer": ratio("compile"),
        "teacher_cache_samples_per_s": rate("cache"),
        "teacher_cache_vs_trainer": ratio("cache"),
        "reference_phases_ms": ref_phases,  # the reference variant's split: where the two differ
    }
    return {"result": result, "facts": facts_out, "loader": _loader_rate(data, bs, tcfg)}


def _loader_rate(data: Dataset, batch: int, tcfg: Mapping[str, Any], batches: int = 3) -> float:
    """Samples/s of :func:`mmh.data.make_loader` over the in-memory samples (collation included)."""
    loader = make_loader(data, batch, shuffle=True, seed=0, num_workers=int(tcfg.get("num_workers") or 0))
    t0, n = time.perf_counter(), 0
    for i, b in enumerate(loader):
        n += int(b["label"].shape[0])
        if i + 1 >= batches:
            break
    return n / max(time.perf_counter() - t0, 1e-9)


# ------------------------------------------------------------------------------------------------ the benchmark
def _uptime() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def run_speed(
    *,
    device: str = "cpu",
    recipe: str | None = None,
    batch: int | None = None,
    steps: int | None = None,
    quick: bool = False,
    out: str | os.PathLike = "runs/benchmark_speed",
    methods: Sequence[str] | None = None,
    overrides: Sequence[str] = (),
    compile_: bool | str | None = None,
) -> dict[str, Any]:
    """Run the speed benchmark (see the module docstring) and write ``speed.json``, ``speed.md``, ``speed.png``.

    ``recipe``: a folder of recipes ``<recipe>/<method>`` (e.g. ``papers/mmh/casia_surf``) replacing the defaults of
    the methods it has, or one recipe (``papers/mmh/casia_surf/rad``): then only its method is timed.
    ``batch``/``steps``: override the recipes' batch and the timed steps per variant (default 20, ``--quick`` 2 with
    batch 4 for images and 1 clip). ``methods``: a subset of :data:`SPEED_METHODS`. ``compile_``: time the
    ``train.compile`` variant (default: not with ``quick``; a string: that backend); when the backend falls back to
    eager (logged), ``compile_samples_per_s`` is null. ``quick`` also feeds clips of 64x64 frames (the same
    networks and clip length).
    """
    dev = resolve_device(device)
    plan = _plan(recipe, methods)
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ValueError(f"--steps must be a positive int, got {steps!r}")
    n_steps = steps if steps is not None else (_QUICK["steps"] if quick else 20)
    rounds = min(n_steps, 5)
    compile_ = (not quick) if compile_ is None else compile_
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    load_before = _uptime()
    results: dict[str, Any] = {}
    facts: dict[str, Any] = {}
    loader: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="mmh_speed_") as tmp:
        for method, (rec, stage) in plan.items():
            b = batch
            if b is None and quick:
                b = _QUICK["clip_batch"] if method == "multistream" else _QUICK["image_batch"]
            _log.info("speed: %s (%s)", method, rec)
            got = _method_speed(
                method,
                rec,
                stage,
                device=dev,
                batch=b,
                steps=n_steps,
                rounds=rounds,
                compile_=compile_,
                overrides=overrides,
                work=Path(tmp),
                quick=quick,
            )
            results[method], facts[method], loader[method] = got["result"], got["facts"], got["loader"]
    from ..runner import reproduction_record

    record = reproduction_record(device=dev)
    record.update(
        {
            "load_before": load_before,
            "load_after": _uptime(),
            "quick": bool(quick),
            "compile_timed": compile_ if isinstance(compile_, str) else bool(compile_),
            "methods": facts,
            "loader_samples_per_s": loader,
        }
    )
    report = {"methods": results, "record": record}
    (out / "speed.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "speed.md").write_text(speed_markdown(report))
    _plot(report, out / "speed.png")
    return report


def _plan(recipe: str | None, methods: Sequence[str] | None) -> dict[str, tuple[str, str | None]]:
    chosen = list(methods) if methods is not None else list(SPEED_METHODS)
    unknown = [m for m in chosen if m not in SPEED_METHODS]
    if unknown:
        raise ValueError(f"speed benchmark: unknown methods {unknown}; choose from {list(SPEED_METHODS)}")
    plan = {m: DEFAULT_RECIPES[m] for m in chosen}
    if recipe is None:
        return plan
    try:  # one recipe: its method only
        find_config(recipe)
    except (FileNotFoundError, KeyError, ValueError):
        pass
    else:
        method = load_config(find_config(recipe))["method"]
        if method not in SPEED_METHODS:
            raise ValueError(f"--recipe {recipe!r}: method {method!r} is not one the speed benchmark times")
        return {method: (str(recipe), DEFAULT_RECIPES[method][1])}
    found = {}
    for m in chosen:
        with contextlib.suppress(FileNotFoundError, KeyError, ValueError):
            find_config(f"{recipe}/{m}")
            found[m] = (f"{recipe}/{m}", DEFAULT_RECIPES[m][1])
    if not found:
        raise FileNotFoundError(f"--recipe {recipe!r}: neither a config nor a folder of <method> configs")
    return found


def _fmt(x: float | None, spec: str = ".1f", unit: str = "") -> str:
    return "—" if x is None else format(x, spec) + unit


def speed_markdown(report: Mapping[str, Any]) -> str:
    """The table of ``speed.json``: samples/s, the phase split, and the ratios (medians of the per-round ratios)."""
    rec = report["record"]
    lines = [
        "# Training step speed",
        "",
        f"Device: {rec.get('device_name')} ({rec.get('device')}), torch {rec.get('torch')}, "
        f"{rec.get('threads')} threads; load average before {rec.get('load_before')}, after {rec.get('load_after')}"
        f"{'; --quick' if rec.get('quick') else ''}.",
        "",
        "| method | batch | samples/s | teacher ms | student fwd ms | loss ms | backward ms | optimizer ms | step ms "
        "| mmh_ext vs reference | operators alone vs reference | trainer overhead | compile speed-up "
        "| cached teacher samples/s | peak MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m, r in report["methods"].items():
        f = rec["methods"][m]
        p = r["phases_ms"]
        ovh = None if f["minimal_vs_trainer"] is None else (1.0 / f["minimal_vs_trainer"] - 1.0) * 100.0
        ops = f.get("ops_alone")
        lines.append(
            f"| {m} | {f['batch']} | {r['samples_per_s']:.1f} | {p['teacher_ms']:.1f} | {p['forward_ms']:.1f} | "
            f"{p['loss_ms']:.1f} | {p['backward_ms']:.1f} | {p['optimizer_ms']:.1f} | {p['step_ms']:.1f} | "
            f"{_fmt(f['mmh_vs_reference'], '.2f', 'x')} | {_fmt(ops and ops['ratio'], '.2f', 'x')} | "
            f"{_fmt(ovh, '+.1f', ' %')} | "
            f"{_fmt(None if f['compile_vs_trainer'] is None else 1 / f['compile_vs_trainer'], '.2f', 'x')} | "
            f"{_fmt(f['teacher_cache_samples_per_s'])} | {_fmt(r['peak_mem_mb'])} |"
        )
    base = report["methods"].get("baseline")
    for m in _TEACHER_METHODS:
        cached = rec["methods"].get(m, {}).get("teacher_cache_samples_per_s")
        if base is not None and cached is not None:
            slower = base["samples_per_s"] / cached - 1.0
            lines.append(
                f"\n{m} with train.teacher_cache: step time {slower * 100:+.1f} % against the baseline's "
                f"(not interleaved with it: measured in another part of the run)."
            )
    lines += [
        "",
        "mmh_ext vs reference: the reference-operator step's time over the mmh_ext step's (>= 1: the fused operators "
        "are not slower); operators alone: the same for the step's operator calls replayed alone, forward and "
        "backward, many times (the step's other work does not blur it). Trainer overhead: the trainer's step time "
        "over the minimal loop's, minus 1. Compile "
        "speed-up: the eager trainer step's time over the compiled one's. Each is the median of the per-round "
        "ratios (the variants run interleaved).",
        "",
        "Loader alone (in-memory samples, collation): "
        + ", ".join(f"{m} {v:.0f} samples/s" for m, v in rec["loader_samples_per_s"].items()),
        "",
    ]
    return "\n".join(lines)


def _plot(report: Mapping[str, Any], path: Path) -> None:
    """Stacked bars of the phase split per method (skipped with a log line without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        _log.warning("speed: matplotlib is not installed; %s not written (pip install 'mmh[plots]')", path)
        return
    names = list(report["methods"])
    fig, ax = plt.subplots(figsize=(7, 0.5 + 0.5 * len(names)))
    left = [0.0] * len(names)
    for phase in PHASES[:-1]:
        vals = [report["methods"][m]["phases_ms"][phase] for m in names]
        ax.barh(names, vals, left=left, label=phase.removesuffix("_ms"))
        left = [a + b for a, b in zip(left, vals)]
    ax.set_xlabel("ms per training step")
    ax.invert_yaxis()
    ax.legend(fontsize=7, ncols=5, loc="lower center", bbox_to_anchor=(0.5, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
