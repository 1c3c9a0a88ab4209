"""The one trainer: any :class:`mmh.train.StageModule`, step-based, resumable, DDP-ready.

The trainer knows nothing of methods: it calls ``stage(batch) -> (logits, {name: weighted loss})``, sums the terms,
steps the optimizer over ``stage.trainable_parameters()`` and the per-step scheduler, and writes, in ``out_dir``:

* ``latest.pt`` (every ``checkpoint_every`` steps, at each epoch end and when stopped) and ``best.pt`` (best
  validation metric; without validation, the last epoch);
* ``metrics.csv`` (one row per epoch: mean loss terms, train accuracy, lr, validation metrics, wall time);
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

No host synchronisation per step: the loss terms, the stage's diagnostics and the train accuracy are summed on the
device (float64 accumulators: the same values as summing Python floats) and read only every ``train.log_every``
steps (progress bar), at epoch ends and when a checkpoint is written (checkpoints hold Python floats). The non-finite
loss check is read at the same points: the FloatingPointError names the first non-finite step; the optimizer steps
after it (fewer than ``log_every``) are never saved.
"""

from __future__ import annotations

import csv
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from ..config import amp_setting
from ..data.loader import EpochBatchSampler, make_loader, to_device
from ..utils.device import resolve_device
from ..utils.distributed import DistInfo, dist_info
from ..utils.seed import get_rng_state, set_rng_state
from .checkpoint import decode_rng_state, encode_rng_state, load_checkpoint, save_checkpoint
from .optim import build_optimizer, build_scheduler
from .stage import StageModule

__all__ = ["Trainer", "TrainResult"]

_log = logging.getLogger(__name__)
#: Running sums counted on the host (no device value needed): steps and labelled samples of the epoch so far.
_HOST_SUMS = ("n", "seen")


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
    """

    def __init__(self, stage: StageModule, train_set: Dataset, tcfg: Mapping[str, Any], *, out_dir: str | Path,
                 seed: int = 0, device: torch.device | str = "cpu",
                 val_fn: Callable[[nn.Module], dict[str, float]] | None = None, val_metric: str = "accuracy",
                 config: Mapping[str, Any] | None = None) -> None:
        if not isinstance(stage, StageModule):
            raise TypeError(f"stage must be a StageModule, got {type(stage).__name__}")
        self.stage, self.train_set, self.tcfg = stage, train_set, dict(tcfg)
        self.out_dir, self.seed = Path(out_dir), int(seed)
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
                stage, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.step = 0
        self.history: list[dict[str, float]] = []
        self.best: dict[str, Any] = {}
        self._acc: dict[str, torch.Tensor] = {}  # running sums of the epoch on the device (float64, 0-dim)
        self._count: dict[str, float] = {}  # running sums known on the host (_HOST_SUMS)
        self._bad_step: torch.Tensor | None = None  # on the device: first step with a non-finite loss, else -1

    def _schedule_length(self, n: int) -> tuple[int, int]:
        """(steps per epoch, total steps) of ``n`` training samples; ValueError naming the setting at fault."""
        bs = int(self.tcfg["batch_size"])
        per_epoch = EpochBatchSampler.batches_per_epoch(n, bs, self.dist.world_size, bool(self.tcfg["drop_last"]))
        if per_epoch < 1:
            raise ValueError(f"train.batch_size {bs} x {self.dist.world_size} rank(s) exceeds the {n} training "
                             f"samples with drop_last: no complete batch; lower batch_size or set drop_last=false")
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
                raise ValueError(f"train.amp=bf16: {torch.cuda.get_device_name(self.device)} has no bfloat16 "
                                 f"support; use train.amp=fp16 (or auto)")
            return torch.bfloat16
        if cuda:
            return torch.float16
        if amp == "fp16":
            raise ValueError(f"train.amp=fp16 needs a CUDA device (this run is on {self.device}); on the CPU use "
                             f"train.amp=bf16 (bfloat16 autocast) or train.amp=false")
        _log.warning("train.amp=true: float16 mixed precision runs on CUDA only; it is off on %s "
                     "(train.amp=bf16 runs bfloat16 autocast on the CPU)", self.device)
        return None

    def autocast(self) -> torch.autocast:
        """The autocast context of the training forward (disabled when ``train.amp`` is off on this device)."""
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp)

    # ------------------------------------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: tensors and plain containers only (the RNG states as tensors), so that
        :func:`mmh.train.checkpoint.load_checkpoint` reads it back with ``weights_only=True``."""
        return {"stage": self.stage.trainable_state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(), "step": self.step,
                "epoch": self.step // self.steps_per_epoch, "sums": dict(self._sums), "history": list(self.history),
                "best": dict(self.best), "rng": encode_rng_state(get_rng_state()), "train_config": self.tcfg,
                "config": self.config}

    def load_state_dict(self, state: Mapping[str, Any], source: str | Path = "<state dict>") -> None:
        """Restore :meth:`state_dict` output (the total step count must match); ValueError naming ``source`` (the
        checkpoint file) when the state does not fit this stage / optimizer / scheduler."""
        rng = decode_rng_state(state["rng"], f"checkpoint {source}")
        try:
            self.stage.load_trainable_state_dict(state["stage"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.scaler.load_state_dict(state["scaler"])
        except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as exc:
            raise ValueError(f"checkpoint {source} does not fit this run's stage / optimizer / scheduler "
                             f"(another model or method?): {type(exc).__name__}: {exc}") from None
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
        self._check_finite()  # never checkpoint the steps after a non-finite loss
        if self.dist.is_main:
            save_checkpoint(self.state_dict(), self.out_dir / name)

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
        self._acc = {k: torch.tensor(float(v), dtype=torch.float64, device=self.device)
                     for k, v in sums.items() if k not in _HOST_SUMS}

    def _add(self, key: str, value: torch.Tensor | float) -> None:
        """``sums[key] += value`` on the device, in float64, without reading anything back."""
        acc = self._acc.get(key)
        if acc is None:
            acc = self._acc[key] = torch.zeros((), dtype=torch.float64, device=self.device)
        acc.add_(value.detach().reshape(()) if isinstance(value, torch.Tensor) else float(value))

    def _check_finite(self) -> None:
        """FloatingPointError if a step since the last check had a non-finite loss (one read from the device)."""
        if self._bad_step is None:
            return
        bad = int(self._bad_step)
        if bad >= 0:
            sums = {k: v for k, v in self._sums.items() if k not in (*_HOST_SUMS, "correct")}
            raise FloatingPointError(
                f"non-finite loss at step {bad} (detected at step {self.step}: the loss is read from the device "
                f"every train.log_every={self.tcfg.get('log_every')} steps); sums of the loss terms over the epoch "
                f"so far: {sums}")

    # ------------------------------------------------------------------------------------------------ loop
    def _train_step(self, batch: dict[str, Any]) -> None:
        batch = to_device(batch, self.device)
        with self.autocast():
            logits, losses = self.model(batch)
        if not losses:
            raise RuntimeError(f"{type(self.stage).__name__} returned no loss terms")
        loss = sum(losses.values())
        with torch.no_grad():  # the first non-finite step, kept on the device (read by _check_finite)
            if self._bad_step is None:
                self._bad_step = torch.full((), -1, dtype=torch.int64, device=self.device)
            ok = torch.isfinite(loss.detach()) | (self._bad_step >= 0)
            self._bad_step = torch.where(ok, self._bad_step, self.step)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
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

    def _log_point(self, bar: Any) -> None:
        """Every ``train.log_every`` steps: the non-finite check and the progress bar (reads the device)."""
        self._check_finite()
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
        self._save("latest.pt")
        if improved or (self.val_fn is None and last):
            self._save("best.pt")

    def _write_csv(self) -> None:
        if not self.dist.is_main or not self.history:
            return
        fields: list[str] = []
        for row in self.history:
            fields += [k for k in row if k not in fields]
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with open(self.out_dir / "metrics.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields)
            writer.writeheader()
            writer.writerows(self.history)

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
        """
        if stop_after_steps is not None and stop_after_steps < 1:
            raise ValueError(f"stop_after_steps must be >= 1, got {stop_after_steps}")
        if resume and (self.out_dir / "latest.pt").is_file():
            self.load_state_dict(load_checkpoint(self.out_dir / "latest.pt"), self.out_dir / "latest.pt")
        if self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        self.stage.train()
        t0 = time.perf_counter()
        done_here = 0
        bar = self._progress()
        try:
            while self.step < self.total_steps:
                epoch = self.step // self.steps_per_epoch
                done_here, stopped = self._run_epoch(epoch, bar, done_here, stop_after_steps)
                if stopped:
                    return TrainResult(self.step, self.total_steps, self.history, self.best, True, done_here)
                self._end_epoch(epoch, t0)
                t0 = time.perf_counter()
                if stop_after_steps is not None and done_here >= stop_after_steps and self.step < self.total_steps:
                    return TrainResult(self.step, self.total_steps, self.history, self.best, True, done_here)
        finally:
            if bar is not None:
                bar.close()
        return TrainResult(self.step, self.total_steps, self.history, self.best, False, done_here)

    def _run_epoch(self, epoch: int, bar: Any, done_here: int, stop_after_steps: int | None) -> tuple[int, bool]:
        """The remaining steps of ``epoch`` (from the current step): (steps done by this fit call, whether
        ``stop_after_steps`` stopped it inside the epoch, ``latest.pt`` saved)."""
        loader = make_loader(self.train_set, int(self.tcfg["batch_size"]), shuffle=True, seed=self.seed, epoch=epoch,
                             start_batch=self.step % self.steps_per_epoch, drop_last=bool(self.tcfg["drop_last"]),
                             num_workers=int(self.tcfg["num_workers"]), rank=self.dist.rank,
                             world_size=self.dist.world_size)
        log_every = int(self.tcfg.get("log_every") or 0)
        for batch in loader:
            self._train_step(batch)
            done_here += 1
            if bar is not None:
                bar.update(1)
            if log_every and self.step % log_every == 0:
                self._log_point(bar)
            if self.step >= self.total_steps or self.step % self.steps_per_epoch == 0:
                break
            every = int(self.tcfg.get("checkpoint_every") or 0)
            if every and self.step % every == 0:
                self._save("latest.pt")
            if stop_after_steps is not None and done_here >= stop_after_steps:
                self._save("latest.pt")
                return done_here, True
        return done_here, False

    def _progress(self) -> Any:
        if not (self.dist.is_main and self.tcfg.get("progress")) or self.step >= self.total_steps:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=self.total_steps, initial=self.step, desc=self.out_dir.name, leave=False,
                    dynamic_ncols=True)
