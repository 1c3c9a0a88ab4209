"""The one trainer: any :class:`mmh.train.StageModule`, step-based, resumable, DDP-ready.

The trainer knows nothing of methods: it calls ``stage(batch) -> (logits, {name: weighted loss})``, sums the terms,
steps the optimizer over ``stage.trainable_parameters()`` and the per-step scheduler, and writes, in ``out_dir``:

* ``latest.pt`` (every ``checkpoint_every`` steps, at each epoch end and when stopped) and ``best.pt`` (best
  validation metric; without validation, the last epoch); ``checkpoint_every: -1`` writes neither (``latest.pt``
  only when stopped by a signal, ``best.pt`` only for ``deploy: best``): short runs that will not be resumed skip
  the cost of the optimizer state, and the runner still writes each stage's ``model.pt``;
* ``metrics.csv`` (one row per epoch: mean loss terms, train accuracy, lr, validation metrics, wall time, and the
  cost of the epoch's steps: ``samples_per_s``, the mean per-phase times ``teacher_ms``, ``forward_ms``,
  ``loss_ms``, ``backward_ms``, ``optimizer_ms``, ``step_ms`` — :mod:`mmh.train.timing`, read at the log points —
  and ``peak_mem_mb`` on CUDA);
* ``tb/`` TensorBoard scalars when ``tensorboard`` is on.

``fit(resume=True)`` restores ``latest.pt`` (weights, optimizer, scheduler, scaler, RNG states, position inside the
epoch, running sums) and continues exactly where the killed run stopped: the final weights are those of an
uninterrupted run (bit-identical on the same machine with ``num_workers=0``).

Mixed precision, ``train.amp`` (see :data:`mmh.config.AMP_VALUES`): on CUDA, ``auto``, ``true`` and ``fp16`` run the
stage's training forward under float16 autocast with a :class:`torch.amp.GradScaler`, ``bf16`` under bfloat16
autocast without a scaler; on the CPU, ``bf16`` runs bfloat16 autocast (no scaler), ``auto`` and ``false`` are off,
``true`` is off with a logged warning (a config that asks for mixed precision still runs on a CPU-only machine) and
``fp16`` is a ValueError (CPU autocast is bfloat16). Parameters, gradients and optimizer state stay float32. The
validation passes (``val_fn``) run in float32, outside autocast, like the final evaluation of the runner: the metric
that picks ``best.pt`` is the one reported, whatever the training precision.

``train.compile`` (false | true | a backend name): the stage's forward and loss terms run through
``torch.compile``; a backend that cannot be set up falls back to eager with one warning. ``train.teacher_cache``:
the frozen teacher's outputs are computed once per training sample and read back (:mod:`mmh.train.teacher_cache`;
refused for randomly augmented inputs).

No host synchronisation per step: the loss terms, the stage's diagnostics and the train accuracy are summed on the
device (float64 accumulators: the same values as summing Python floats) and read only every ``train.log_every``
steps (progress bar), at epoch ends and when a checkpoint is written (checkpoints hold Python floats).

Nothing non-finite is saved. The first step with a non-finite loss is kept on the device and read at the same points
— before every checkpoint write included —: the :class:`mmh.train.NonFiniteError` (a FloatingPointError) names the
stage and that step, and the optimizer steps after it are never saved. Before every checkpoint the trainable state
and the optimizer state are checked finite too (:func:`mmh.train.finite.check_finite`: one fused reduction and one
read), since a finite loss can still step the weights to NaN (a huge learning rate): such a state is refused with a
NonFiniteError naming the stage and step, and the previous ``latest.pt`` (the last finite state) stays, so a
``fit(resume=True)`` continues from it. A ``latest.pt`` that holds non-finite values is refused on resume.

Signals: during :meth:`Trainer.fit` (main thread only; the previous handlers are restored afterwards) the first
SIGTERM or SIGINT lets the step in flight finish, then ``latest.pt`` is saved at that step and
:class:`mmh.train.TrainingInterrupted` (``signum``, ``step``, ``checkpoint``) is raised; ``fit(resume=True)`` then
continues exactly as after any other stop. A second signal acts as it did before fit (SIGINT: KeyboardInterrupt, no
save). Under DDP the ranks agree on the signal at the log points (every ``train.log_every`` steps) and epoch ends, so
that all of them stop after the same step.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset

from ..config import amp_setting
from ..data.loader import EpochBatchSampler, make_loader, to_device
from ..utils.device import resolve_device
from ..utils.distributed import DistInfo, dist_info
from ..utils.io import remove_stale_temps, write_text
from ..utils.seed import get_rng_state, set_rng_state
from .checkpoint import decode_rng_state, encode_rng_state, load_checkpoint, save_checkpoint
from .finite import NonFiniteError, TrainingInterrupted, check_finite
from .optim import build_optimizer, build_scheduler
from .stage import StageModule
from .teacher_cache import TeacherCache, check_cacheable, teacher_cache_key
from .timing import PhaseTimer

__all__ = ["Trainer", "TrainResult"]

_log = logging.getLogger(__name__)
#: Running sums counted on the host (no device value needed): steps and labelled samples of the epoch so far.
_HOST_SUMS = ("n", "seen")
#: The signals that stop :meth:`Trainer.fit` gracefully (save ``latest.pt``, raise TrainingInterrupted).
STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)
#: The files the trainer writes in ``out_dir`` (stale temporary files of these are removed when fit starts).
_OWN_FILES = ("latest.pt", "best.pt", "metrics.csv")


def _batch_size(batch: Mapping[str, Any]) -> int:
    """Samples in ``batch``: its labels, else the first dimension of its first tensor."""
    label = batch.get("label")
    if isinstance(label, torch.Tensor):
        return int(label.shape[0])
    for v in batch.values():
        if isinstance(v, torch.Tensor) and v.dim():
            return int(v.shape[0])
    return 0


def _signal_name(signum: int) -> str:
    """``SIGTERM`` for 15, the number itself for an unknown signal."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` returns."""

    step: int
    total_steps: int
    history: list[dict[str, float]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=dict)
    stopped: bool = False  # True when ``stop_after_steps`` interrupted the run before total_steps
    steps_run: int = 0  # steps done by this call of fit

    @property
    def finished(self) -> bool:
        """True when all steps were done."""
        return self.step >= self.total_steps


class Trainer:
    """Train ``stage`` on ``train_set`` with the ``train`` config section ``tcfg``.

    Args:
        stage: the stage module (its trainable parameters are optimised).
        train_set: dataset of dict items (see :mod:`mmh.data`).
        tcfg: the resolved ``train`` section (see :data:`mmh.config.DEFAULTS`).
        out_dir: folder for checkpoints, metrics.csv and TensorBoard (written on rank 0 only).
        seed: drives the batch order (with the epoch) — the global RNGs are seeded by the caller.
        device: torch device.
        val_fn: optional ``val_fn(deployable) -> {metric: value}`` called every ``eval_every`` epochs and at the end.
        val_metric: key of ``val_fn``'s result that selects ``best.pt`` (higher is better).
        config: the full config, stored in checkpoints.
        name: the stage's name in error messages (default: the name of ``out_dir``).
    """

    def __init__(
        self,
        stage: StageModule,
        train_set: Dataset,
        tcfg: Mapping[str, Any],
        *,
        out_dir: str | Path,
        seed: int = 0,
        device: torch.device | str = "cpu",
        val_fn: Callable[[nn.Module], dict[str, float]] | None = None,
        val_metric: str = "accuracy",
        config: Mapping[str, Any] | None = None,
        name: str | None = None,
    ) -> None:
        if not isinstance(stage, StageModule):
            raise TypeError(f"stage must be a StageModule, got {type(stage).__name__}")
        self.stage, self.train_set, self.tcfg = stage, train_set, dict(tcfg)
        self.out_dir, self.seed = Path(out_dir), int(seed)
        self.name = name or self.out_dir.name
        self.device = resolve_device(device)
        self.val_fn, self.val_metric, self.config = val_fn, val_metric, dict(config or {})
        self.dist: DistInfo = dist_info()
        self.stage.to(self.device)
        self.steps_per_epoch, self.total_steps = self._schedule_length(len(train_set))  # type: ignore[arg-type]
        self.optimizer = build_optimizer(stage.trainable_parameters(), self.tcfg)
        self.scheduler = build_scheduler(self.optimizer, self.tcfg, self.total_steps)
        deploy = self.tcfg.get("deploy", "last")
        if deploy not in ("last", "best"):
            raise ValueError(f"train.deploy must be 'last' or 'best', got {deploy!r}")
        if deploy == "best" and val_fn is None:
            raise ValueError("train.deploy=best needs a validation split (dataset.val_split) to pick best.pt")
        self.amp_dtype = self._amp_dtype(amp_setting(self.tcfg.get("amp", "auto")))
        self.amp = self.amp_dtype is not None  # the training forward runs under autocast
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.model: nn.Module = stage
        if self.dist.distributed:
            from torch.nn.parallel import DistributedDataParallel

            self.model = DistributedDataParallel(
                stage, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        self.step = 0
        self.history: list[dict[str, float]] = []
        self.best: dict[str, Any] = {}
        self._acc: dict[str, torch.Tensor] = {}  # running sums of the epoch on the device (float64, 0-dim)
        self._count: dict[str, float] = {}  # running sums known on the host (_HOST_SUMS)
        self._bad_step: torch.Tensor | None = None  # on the device: first step with a non-finite loss, else -1
        self._signal: int | None = None  # the first stop signal received during fit (see _catch_signals)
        self._forward = self._compile(self.model)  # self.model, or its torch.compile (train.compile)
        self.timer = PhaseTimer(stage, self.device, hooks=False)  # fit installs the hooked one
        self._epoch_start: float | None = None  # perf_counter at the start of the epoch's steps in this process
        self._samples = 0  # samples of the epoch's steps run in this process
        self.teacher_cache = self._make_teacher_cache()  # train.teacher_cache (also set on the stage)

    def _schedule_length(self, n: int) -> tuple[int, int]:
        """(steps per epoch, total steps) of ``n`` training samples; ValueError naming the setting at fault."""
        bs = int(self.tcfg["batch_size"])
        per_epoch = EpochBatchSampler.batches_per_epoch(n, bs, self.dist.world_size, bool(self.tcfg["drop_last"]))
        if per_epoch < 1:
            raise ValueError(
                f"train.batch_size {bs} x {self.dist.world_size} rank(s) exceeds the {n} training "
                f"samples with drop_last: no complete batch; lower batch_size or set drop_last=false"
            )
        if self.tcfg.get("steps") is not None:
            total = int(self.tcfg["steps"])
        elif self.tcfg.get("epochs") is not None:
            total = int(self.tcfg["epochs"]) * per_epoch
        else:
            raise ValueError("train config needs 'steps' or 'epochs'")
        if total < 1:
            raise ValueError(f"train.steps / train.epochs give {total} steps; need at least 1")
        return per_epoch, total

    def _amp_dtype(self, amp: str) -> torch.dtype | None:
        """The autocast dtype of ``train.amp`` on this device (None: off); see the module docstring."""
        cuda = self.device.type == "cuda"
        if amp == "false" or (amp == "auto" and not cuda):
            return None
        if amp == "bf16":
            if cuda and not torch.cuda.is_bf16_supported():
                raise ValueError(
                    f"train.amp=bf16: {torch.cuda.get_device_name(self.device)} has no bfloat16 "
                    f"support; use train.amp=fp16 (or auto)"
                )
            return torch.bfloat16
        if cuda:
            return torch.float16
        if amp == "fp16":
            raise ValueError(
                f"train.amp=fp16 needs a CUDA device (this run is on {self.device}); on the CPU use "
                f"train.amp=bf16 (bfloat16 autocast) or train.amp=false"
            )
        _log.warning(
            "train.amp=true: float16 mixed precision runs on CUDA only; it is off on %s "
            "(train.amp=bf16 runs bfloat16 autocast on the CPU)",
            self.device,
        )
        return None

    def autocast(self) -> torch.autocast:
        """The autocast context of the training forward (disabled when ``train.amp`` is off on this device)."""
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp)

    # ------------------------------------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: tensors and plain containers only (the RNG states as tensors), so that
        :func:`mmh.train.checkpoint.load_checkpoint` reads it back with ``weights_only=True``."""
        return {
            "stage": self.stage.trainable_state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "epoch": self.step // self.steps_per_epoch,
            "sums": dict(self._sums),
            "history": list(self.history),
            "best": dict(self.best),
            "rng": encode_rng_state(get_rng_state()),
            "train_config": self.tcfg,
            "config": self.config,
        }

    def load_state_dict(self, state: Mapping[str, Any], source: str | Path = "<state dict>") -> None:
        """Restore :meth:`state_dict` output (the total step count must match); ValueError naming ``source`` (the
        checkpoint file) when the state does not fit this stage / optimizer / scheduler."""
        rng = decode_rng_state(state["rng"], f"checkpoint {source}")
        check_finite(
            {"stage": state["stage"], "optimizer": state["optimizer"]},
            f"checkpoint {source}",
            "; it cannot be resumed (checkpoints written since non-finite states are refused hold only "
            "finite values: this one comes from elsewhere or an older version)",
        )
        try:
            self.stage.load_trainable_state_dict(state["stage"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.scaler.load_state_dict(state["scaler"])
        except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as exc:
            raise ValueError(
                f"checkpoint {source} does not fit this run's stage / optimizer / scheduler "
                f"(another model or method?): {type(exc).__name__}: {exc}"
            ) from None
        self.step, self._sums = int(state["step"]), dict(state["sums"])
        self.history, self.best = list(state["history"]), dict(state["best"])
        set_rng_state(rng)

    def restore_best(self) -> dict[str, Any]:
        """Load the trainable state of ``best.pt`` (the highest validation metric) into the stage; returns
        :attr:`best` (metric, value, step, epoch). For ``train.deploy=best``, after :meth:`fit` finished."""
        if self.step < self.total_steps:
            raise RuntimeError(f"restore_best: training is not finished (step {self.step}/{self.total_steps})")
        path = self.out_dir / "best.pt"
        if self.val_fn is None or self.best.get("value") is None or not path.is_file():
            raise FileNotFoundError(f"restore_best: no validated best checkpoint at {path} (needs a val_fn)")
        state = load_checkpoint(path)
        try:
            self.stage.load_trainable_state_dict(state["stage"])
        except RuntimeError as exc:
            raise ValueError(f"checkpoint {path} does not fit this run's stage: {exc}") from None
        return dict(self.best)

    def _save(self, name: str) -> None:
        """Write checkpoint ``name`` (rank 0) after checking, on every rank, that no loss since the last check was
        non-finite and that the trainable and optimizer states are finite (NonFiniteError otherwise: nothing is
        written, the previous file stays)."""
        self._check_finite()  # never checkpoint the steps after a non-finite loss
        then = f"; {name} was not written (the last finite checkpoint stays the latest)"
        if not self.dist.is_main:
            self.check_state_finite(then)
            return
        state = self.state_dict()  # built once: checked, then written
        self.check_state_finite(then, stage=state["stage"], optimizer=state["optimizer"])
        save_checkpoint(state, self.out_dir / name)

    def check_state_finite(
        self, then: str = "", *, stage: Mapping[str, Any] | None = None, optimizer: Mapping[str, Any] | None = None
    ) -> None:
        """NonFiniteError naming the stage and step when the trainable state (weights, buffers) or the optimizer
        state holds NaN or inf (one fused reduction, one read; the same on every DDP rank, whose states are equal).
        ``stage`` / ``optimizer``: those state dicts when the caller has already built them."""
        stage = self.stage.trainable_state_dict() if stage is None else stage
        optimizer = self.optimizer.state_dict() if optimizer is None else optimizer
        check_finite(
            {"stage": stage, "optimizer": optimizer["state"]},
            f"stage {self.name!r} at step {self.step}: non-finite state",
            then,
        )

    # ------------------------------------------------------------------------------------------------ running sums
    @property
    def _sums(self) -> dict[str, float]:
        """The running sums of the epoch so far as Python floats (one read from the device): what checkpoints hold
        (``n`` steps, ``loss``, each loss term, each diagnostic, ``correct``, ``seen``)."""
        vals = torch.stack(list(self._acc.values())).tolist() if self._acc else []
        return {**self._count, **dict(zip(self._acc, vals))}

    @_sums.setter
    def _sums(self, sums: Mapping[str, float]) -> None:
        """Restore the running sums (from a checkpoint) onto the device."""
        self._count = {k: float(v) for k, v in sums.items() if k in _HOST_SUMS}
        self._acc = {
            k: torch.tensor(float(v), dtype=torch.float64, device=self.device)
            for k, v in sums.items()
            if k not in _HOST_SUMS
        }

    def _add(self, key: str, value: torch.Tensor | float) -> None:
        """``sums[key] += value`` on the device, in float64, without reading anything back."""
        acc = self._acc.get(key)
        if acc is None:
            acc = self._acc[key] = torch.zeros((), dtype=torch.float64, device=self.device)
        acc.add_(value.detach().reshape(()) if isinstance(value, torch.Tensor) else float(value))

    def _check_finite(self) -> None:
        """NonFiniteError if a step since the last check had a non-finite loss (one read from the device; under DDP
        the ranks agree on the first such step of any rank, so that all of them stop at the same point)."""
        if self._bad_step is None:
            return
        flag = self._bad_step
        if self.dist.distributed and dist.is_available() and dist.is_initialized():
            big = torch.iinfo(torch.int64).max
            flag = torch.where(flag >= 0, flag, big).clone()
            dist.all_reduce(flag, op=dist.ReduceOp.MIN)
            flag = torch.where(flag == big, -1, flag)
        bad = int(flag)
        if bad >= 0:
            sums = {k: v for k, v in self._sums.items() if k not in (*_HOST_SUMS, "correct")}
            raise NonFiniteError(
                f"stage {self.name!r}: non-finite loss at step {bad} (detected at step {self.step}: the loss is "
                f"read from the device every train.log_every={self.tcfg.get('log_every')} steps and before every "
                f"checkpoint; nothing after the last finite checkpoint was saved); sums of the loss terms over the "
                f"epoch so far: {sums}"
            )

    # ------------------------------------------------------------------------------------------------ loop
    def _train_step(self, batch: dict[str, Any]) -> None:
        batch = to_device(batch, self.device)
        self.timer.start()
        with self.autocast():
            logits, losses = self._call_forward(batch)
        if not losses:
            raise RuntimeError(f"{type(self.stage).__name__} returned no loss terms")
        loss = sum(losses.values())
        with torch.no_grad():  # the first non-finite step, kept on the device (read by _check_finite)
            if self._bad_step is None:
                self._bad_step = torch.full((), -1, dtype=torch.int64, device=self.device)
            ok = torch.isfinite(loss.detach()) | (self._bad_step >= 0)
            self._bad_step = torch.where(ok, self._bad_step, self.step)
        self.timer.mark("forward")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.timer.mark("backward")
        clip = self.tcfg.get("grad_clip")
        if clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.stage.trainable_parameters(), float(clip))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.step += 1
        c = self._count
        c["n"] = c.get("n", 0.0) + 1
        self._add("loss", loss)
        for k, v in losses.items():
            self._add(k, v)
        for k, v in self.stage.diagnostics().items():
            self._add(k, v)
        if "label" in batch:
            self._add("correct", (logits.argmax(1) == batch["label"]).sum())
            c["seen"] = c.get("seen", 0.0) + float(batch["label"].numel())
        self.timer.stop()
        self._samples += _batch_size(batch)

    def _make_teacher_cache(self) -> TeacherCache | None:
        """``train.teacher_cache``: a :class:`mmh.train.teacher_cache.TeacherCache` of the stage's frozen teacher,
        set as ``stage.teacher_cache`` (None for a stage without one: the teacher stage of the same recipe); a
        ValueError naming the reason when the inputs are randomly augmented or the teacher is not frozen
        (:func:`mmh.train.teacher_cache.check_cacheable`)."""
        if not self.tcfg.get("teacher_cache"):
            self.stage.teacher_cache = None
            return None
        spec = self.stage.cached_teacher()
        if spec is None:  # the setting covers every stage of a recipe; a stage without a teacher trains as usual
            _log.info("stage %r: train.teacher_cache: no frozen teacher in this stage, nothing to cache", self.name)
            self.stage.teacher_cache = None
            return None
        teacher, paths = spec
        check_cacheable([teacher], self.train_set, self.config)
        key = teacher_cache_key(teacher, paths, self.train_set, self.config.get("dataset"))
        folder = self.out_dir / "teacher_cache"
        if self.dist.distributed:
            folder = folder / f"rank{self.dist.rank}"
        cache = TeacherCache(
            len(self.train_set),  # type: ignore[arg-type]
            key,
            limit_mb=float(self.tcfg.get("teacher_cache_mb", 2048)),
            folder=folder,
        )
        self.stage.teacher_cache = cache
        return cache

    def _compile(self, model: nn.Module) -> Callable[..., Any]:
        """``train.compile``: false -> ``model`` itself; true -> ``torch.compile(model)`` (inductor); a string ->
        ``torch.compile(model, backend=that)``. The stage's forward and its loss terms are compiled; the backward
        runs through the compiled graph's autograd. A backend that cannot be set up (here, or at the first step:
        see :meth:`_call_forward`) falls back to eager with one warning.

        Dynamo's caches are reset first (``torch._dynamo.reset()``): the stages of a method run one after the other
        in one process, and a graph traced for an earlier stage's forward, with that stage's forward hooks (the
        features a distiller reads) registered inside it, would otherwise be reused for the next stage's (a DAD
        student after a RAD student then found its ``layer3`` hook never called)."""
        setting = self.tcfg.get("compile", False)
        if setting is False or setting is None:
            return model
        if setting is not True and not (isinstance(setting, str) and setting):
            raise ValueError(f"train.compile must be true, false or a torch.compile backend name, got {setting!r}")
        backend = "inductor" if setting is True else setting
        try:
            torch._dynamo.reset()  # noqa: SLF001  (see the docstring)
            return torch.compile(model, backend=backend)
        except Exception as exc:  # a backend torch does not know, or torch.compile unavailable here
            self._compile_fallback(backend, exc)
            return model

    def _compile_fallback(self, backend: str, exc: BaseException) -> None:
        _log.warning(
            "stage %r: train.compile: the torch.compile backend %r is not usable here (%s: %s); training runs eagerly",
            self.name,
            backend,
            type(exc).__name__,
            str(exc).splitlines()[0] if str(exc) else "",
        )

    def _call_forward(self, batch: Mapping[str, Any]) -> Any:
        """The stage's training forward (compiled when ``train.compile`` is on). The first compiled call builds the
        graph: if that fails (no C++ compiler for inductor, no Triton on the GPU, ...) the run falls back to eager
        with one warning; an error of the stage itself then recurs eagerly, with its own message."""
        if self._forward is self.model or getattr(self, "_compiled_ok", False):
            return self._forward(batch)
        try:
            out = self._forward(batch)
        except Exception as exc:
            setting = self.tcfg.get("compile")
            self._compile_fallback("inductor" if setting is True else str(setting), exc)
            self._forward = self.model
            return self.model(batch)
        self._compiled_ok = True
        return out

    def _cost(self) -> dict[str, float]:
        """The epoch's cost columns of ``metrics.csv``: ``samples_per_s`` (samples of the steps run in this process
        over the host wall time from the epoch's first step to its end, read after the device has finished them),
        the mean phase times of :class:`mmh.train.timing.PhaseTimer` and, on CUDA, ``peak_mem_mb`` (the allocator's
        peak during the epoch)."""
        if self._epoch_start is None:
            return {}
        wall = time.perf_counter() - self._epoch_start
        row = {"samples_per_s": self._samples / wall if wall > 0 else 0.0, **self.timer.means()}
        if self.device.type == "cuda":
            row["peak_mem_mb"] = torch.cuda.max_memory_allocated(self.device) / 2**20
        self._epoch_start = None
        return row

    def _log_point(self, bar: Any) -> None:
        """Every ``train.log_every`` steps: the non-finite check and the progress bar (reads the device)."""
        self._check_finite()
        self.timer.collect()
        if bar is not None:
            s = self._sums
            bar.set_postfix(loss=f"{s.get('loss', 0.0) / max(s.get('n', 1.0), 1.0):.4f}")

    def _end_epoch(self, epoch: int, t0: float) -> None:
        self._check_finite()
        s = self._sums
        self._acc, self._count = {}, {}
        n = max(s.pop("n", 1.0), 1.0)
        row: dict[str, float] = {"epoch": epoch + 1, "step": self.step, "lr": self.optimizer.param_groups[0]["lr"]}
        correct, seen = s.pop("correct", None), s.pop("seen", None)
        row.update({k: v / n for k, v in s.items()})
        if seen:
            row["train_accuracy"] = correct / seen
        row.update(self._cost())
        every = int(self.tcfg.get("eval_every") or 0)
        last = self.step >= self.total_steps
        if self.val_fn is not None and (last or (every and (epoch + 1) % every == 0)):
            row.update({f"val_{k}": float(v) for k, v in self.val_fn(self.stage.deployable()).items()})
        row["time_s"] = time.perf_counter() - t0 + (self.history[-1]["time_s"] if self.history else 0.0)
        self.history.append(row)
        key = f"val_{self.val_metric}"
        improved = key in row and (not self.best or row[key] > self.best["value"])
        if improved:
            self.best = {"metric": key, "value": row[key], "step": self.step, "epoch": epoch + 1}
        elif self.val_fn is None and last:
            self.best = {"metric": "last", "value": None, "step": self.step, "epoch": epoch + 1}
        self._write_csv()
        self._log_tb(row)
        if int(self.tcfg.get("checkpoint_every") or 0) < 0:  # -1: no resume checkpoints; best.pt only to deploy it
            if improved and self.tcfg.get("deploy", "last") == "best":
                self._save("best.pt")
            return
        self._save("latest.pt")
        if improved or (self.val_fn is None and last):
            self._save("best.pt")

    def _write_csv(self) -> None:
        if not self.dist.is_main or not self.history:
            return
        fields: list[str] = []
        for row in self.history:
            fields += [k for k in row if k not in fields]
        buf = io.StringIO(newline="")
        writer = csv.DictWriter(buf, fieldnames=fields)
        writer.writeheader()
        writer.writerows(self.history)
        write_text(buf.getvalue(), self.out_dir / "metrics.csv")

    def _log_tb(self, row: Mapping[str, float]) -> None:
        if not (self.dist.is_main and self.tcfg.get("tensorboard")):
            return
        try:
            import tensorboard  # noqa: F401  (torch.utils.tensorboard needs it; the `tensorboard` extra)
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            from .._optional import MissingExtraError

            raise MissingExtraError("tensorboard", "tensorboard", "train.tensorboard=true") from exc

        with SummaryWriter(str(self.out_dir / "tb")) as writer:
            for k, v in row.items():
                if k not in ("epoch", "step") and isinstance(v, (int, float)) and math.isfinite(v):
                    writer.add_scalar(k, v, int(row["step"]))

    def fit(self, *, resume: bool = False, stop_after_steps: int | None = None) -> TrainResult:
        """Train to ``total_steps``; ``resume`` continues from ``out_dir/latest.pt`` when it exists.

        ``stop_after_steps``: stop after that many steps of this call (saving ``latest.pt``), as a killed run would;
        a later ``fit(resume=True)`` finishes the run.

        Raises :class:`mmh.train.NonFiniteError` (a non-finite loss or state; nothing of it saved) and
        :class:`mmh.train.TrainingInterrupted` (SIGTERM / SIGINT: ``latest.pt`` saved at the step reached).
        """
        if stop_after_steps is not None and stop_after_steps < 1:
            raise ValueError(f"stop_after_steps must be >= 1, got {stop_after_steps}")
        if resume and (self.out_dir / "latest.pt").is_file():
            self.load_state_dict(load_checkpoint(self.out_dir / "latest.pt"), self.out_dir / "latest.pt")
        if self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            remove_stale_temps(self.out_dir, _OWN_FILES)  # left by a SIGKILL during a write
        self.stage.train()
        self.timer = PhaseTimer(self.stage, self.device, hooks=self._forward is self.model)
        t0 = time.perf_counter()
        done_here = 0
        bar = self._progress()
        try:
            with self._catch_signals():
                while self.step < self.total_steps:
                    epoch = self.step // self.steps_per_epoch
                    done_here, stopped = self._run_epoch(epoch, bar, done_here, stop_after_steps)
                    if stopped:
                        return TrainResult(self.step, self.total_steps, self.history, self.best, True, done_here)
                    self._end_epoch(epoch, t0)  # saves latest.pt
                    if self._stop_signal(sync=True):
                        self._interrupted(save=False)
                    t0 = time.perf_counter()
                    if stop_after_steps is not None and done_here >= stop_after_steps and self.step < self.total_steps:
                        return TrainResult(self.step, self.total_steps, self.history, self.best, True, done_here)
        finally:
            if bar is not None:
                bar.close()
            self._epoch_start = None
            self.timer.close()
        return TrainResult(self.step, self.total_steps, self.history, self.best, False, done_here)

    def _run_epoch(self, epoch: int, bar: Any, done_here: int, stop_after_steps: int | None) -> tuple[int, bool]:
        """The remaining steps of ``epoch`` (from the current step): (steps done by this fit call, whether
        ``stop_after_steps`` stopped it inside the epoch, ``latest.pt`` saved)."""
        loader = make_loader(
            self.train_set,
            int(self.tcfg["batch_size"]),
            shuffle=True,
            seed=self.seed,
            epoch=epoch,
            start_batch=self.step % self.steps_per_epoch,
            drop_last=bool(self.tcfg["drop_last"]),
            num_workers=int(self.tcfg["num_workers"]),
            rank=self.dist.rank,
            world_size=self.dist.world_size,
        )
        log_every = int(self.tcfg.get("log_every") or 0)
        indices: Iterator[list[int]] | None = None
        if self.teacher_cache is not None:  # the samples of each batch (the loader's own sampler, drawn again)
            indices = iter(
                EpochBatchSampler(
                    len(self.train_set),  # type: ignore[arg-type]
                    int(self.tcfg["batch_size"]),
                    seed=self.seed,
                    epoch=epoch,
                    shuffle=True,
                    drop_last=bool(self.tcfg["drop_last"]),
                    start_batch=self.step % self.steps_per_epoch,
                    rank=self.dist.rank,
                    world_size=self.dist.world_size,
                )
            )
        if self._epoch_start is None:
            self._epoch_start, self._samples = time.perf_counter(), 0
            if self.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(self.device)
        for batch in self._batches(loader):
            if indices is not None and self.teacher_cache is not None:
                self.teacher_cache.select(next(indices))
            self._train_step(batch)
            done_here += 1
            if bar is not None:
                bar.update(1)
            log_point = bool(log_every) and self.step % log_every == 0
            if log_point:
                self._log_point(bar)
            if self.step >= self.total_steps or self.step % self.steps_per_epoch == 0:
                break
            if self._stop_signal(sync=log_point):
                self._interrupted(save=True)
            every = int(self.tcfg.get("checkpoint_every") or 0)
            if every > 0 and self.step % every == 0:
                self._save("latest.pt")
            if stop_after_steps is not None and done_here >= stop_after_steps:
                self._save("latest.pt")
                return done_here, True
        return done_here, False

    def _batches(self, loader: Any) -> Iterator[Any]:
        """The loader's batches; when a stop signal has arrived and fetching the next batch fails (the loader's
        worker processes got the signal too and died), the run is interrupted at the last finished step."""
        it = iter(loader)
        try:
            while True:
                try:
                    batch = next(it)
                except StopIteration:
                    return
                except Exception:
                    if self._signal is None:
                        raise
                    self._interrupted(save=True)  # the state is that of the last finished step
                yield batch
        finally:
            del it  # shuts the worker processes down

    # ------------------------------------------------------------------------------------------------ signals
    @contextlib.contextmanager
    def _catch_signals(self) -> Iterator[None]:
        """While training: the first SIGTERM / SIGINT only sets :attr:`_signal` (the loop then saves and stops); the
        handler then puts the previous one back, so a second signal acts as before. Main thread only (Python
        delivers signals there); the previous handlers are restored on exit."""
        self._signal = None
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous: dict[int, Any] = {}

        def handler(signum: int, _frame: Any) -> None:
            if self._signal is None:
                self._signal = signum
                _log.warning(
                    "stage %r: %s received; latest.pt is saved once the step in flight finishes, then "
                    "training stops (send it again to stop without saving)",
                    self.name,
                    _signal_name(signum),
                )
            with contextlib.suppress(ValueError, OSError, TypeError):
                signal.signal(signum, previous.get(signum) or signal.SIG_DFL)

        for sig in STOP_SIGNALS:
            try:
                if signal.getsignal(sig) == signal.SIG_IGN:  # ignored on purpose (e.g. SIGINT of a background job)
                    continue
                previous[sig] = signal.signal(sig, handler)
            except (ValueError, OSError):  # not settable here (an embedding interpreter)
                continue
        try:
            yield
        finally:
            for sig, old in previous.items():
                with contextlib.suppress(ValueError, OSError, TypeError):
                    signal.signal(sig, old if old is not None else signal.SIG_DFL)

    def _stop_signal(self, sync: bool) -> bool:
        """Whether to stop for a signal now. One process: as soon as one arrived. Under DDP only at ``sync`` points
        (log points, epoch ends), where the ranks agree (an all-reduce of the signal number), so that every rank
        stops after the same step."""
        if not (self.dist.distributed and dist.is_available() and dist.is_initialized()):
            return self._signal is not None
        if not sync:
            return False
        flag = torch.tensor(
            self._signal or 0, dtype=torch.int64, device=self.device if self.device.type == "cuda" else "cpu"
        )
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        agreed = int(flag)
        if agreed and self._signal is None:
            self._signal = agreed
        return bool(agreed)

    def _interrupted(self, save: bool) -> None:
        """Save ``latest.pt`` at the current step (unless it was just saved) and raise TrainingInterrupted."""
        signum = int(self._signal or signal.SIGTERM)
        path = self.out_dir / "latest.pt"
        if save:
            self._save("latest.pt")
        raise TrainingInterrupted(
            signum,
            self.step,
            str(path),
            f"stage {self.name!r} interrupted by {_signal_name(signum)} at step "
            f"{self.step}/{self.total_steps}; saved {path} (resume continues from it)",
        )

    def _progress(self) -> Any:
        if not (self.dist.is_main and self.tcfg.get("progress")) or self.step >= self.total_steps:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=self.total_steps, initial=self.step, desc=self.out_dir.name, leave=False, dynamic_ncols=True)
