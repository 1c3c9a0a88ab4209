"""Finite-state checks: nothing non-finite is written (checkpoints, ``model.pt``, artifacts, the stage cache).

A network whose weights hold a NaN or an infinity is useless, and once saved it poisons whatever reads it: a
``--resume`` that fails again, a cached teacher that every later student reuses. :func:`check_finite` is run
before every such write (and on reading a network back): it looks at every floating-point tensor of a state
(weights, buffers, the optimizer's moments) with one fused reduction per device — the infinity norm of each tensor
(``torch._foreach_norm``, which propagates NaN and, unlike a 2-norm, cannot overflow) stacked into one vector —
and one read of the result, so the check costs one host synchronisation, not one per tensor. Only when something
is found are the tensors looked at one by one, to name them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch

__all__ = ["NonFiniteError", "TrainingInterrupted", "all_finite", "nonfinite_names", "named_tensors", "check_finite"]


class NonFiniteError(FloatingPointError):
    """A loss or a state (weights, optimizer state) holds NaN or infinity; it was not saved."""


class TrainingInterrupted(Exception):
    """A run stopped on a signal (SIGTERM, SIGINT): during training after saving ``latest.pt`` at the step it
    reached; elsewhere in a run (data loading, evaluation, a write) at the next safe point, after the write in flight.

    Attributes:
        signum: the signal number (``signal.SIGTERM``, ``signal.SIGINT``); the conventional exit status is
            ``128 + signum``.
        step: the training step saved (the run resumes from it with ``--resume``); None outside training.
        checkpoint: path of the saved ``latest.pt`` (None when nothing could be saved).
        run_dir: the run folder when it holds the run (None: unknown, or not written yet: nothing to resume).
    """

    def __init__(
        self,
        signum: int,
        step: int | None,
        checkpoint: str | None,
        message: str | None = None,
        run_dir: str | None = None,
    ) -> None:
        self.signum, self.checkpoint, self.run_dir = int(signum), checkpoint, run_dir
        self.step = None if step is None else int(step)
        super().__init__(
            message
            or f"interrupted by signal {self.signum}"
            + (f" at step {self.step}" if self.step is not None else "")
            + (f"; saved {checkpoint}" if checkpoint else "")
        )

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across processes with its attributes
        return type(self), (self.signum, self.step, self.checkpoint, str(self), self.run_dir)


def named_tensors(obj: Any, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """``(dotted name, tensor)`` of every tensor inside nested dicts / lists / tuples (e.g. an optimizer's state
    dict: ``state.3.exp_avg``)."""
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, Mapping):
        for k, v in obj.items():
            yield from named_tensors(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from named_tensors(v, f"{prefix}.{i}" if prefix else str(i))


def _floats(tensors: Iterable[torch.Tensor]) -> list[torch.Tensor]:
    return [t.detach() for t in tensors if t.is_floating_point() and t.numel() > 0]


def all_finite(tensors: Iterable[torch.Tensor]) -> bool:
    """True when every element of every floating-point tensor is finite (integer tensors are finite).

    One ``torch._foreach_norm(ord=inf)`` per device (NaN propagates, ±inf stays inf, no overflow), the norms
    stacked, and one read per device."""
    by_device: dict[torch.device, list[torch.Tensor]] = {}
    for t in _floats(tensors):
        by_device.setdefault(t.device, []).append(t)
    oks = []
    for group in by_device.values():
        try:
            norms = torch._foreach_norm(group, float("inf"))
        except (RuntimeError, AttributeError, TypeError):  # a build without the fused op: per tensor, still one read
            norms = [t.abs().amax() for t in group]
        oks.append(torch.isfinite(torch.stack([n.float() for n in norms])).all())
    return all(bool(ok) for ok in oks)


def nonfinite_names(named: Iterable[tuple[str, torch.Tensor]]) -> list[str]:
    """Names of the floating-point tensors holding a NaN or an infinity (one read per tensor: for error messages,
    after :func:`all_finite` found something)."""
    return [
        name
        for name, t in named
        if t.is_floating_point() and t.numel() > 0 and not bool(torch.isfinite(t.detach()).all())
    ]


def check_finite(state: Any, what: str, then: str = "") -> None:
    """:class:`NonFiniteError` when any floating-point tensor in ``state`` (a tensor, or nested containers of them)
    holds NaN or infinity: the message is ``"<what>: N of M tensors hold NaN or inf (names ...)<then>"``, e.g.
    ``what="stage 'teacher' at step 12"``, ``then="; latest.pt was not written"``."""
    named = list(named_tensors(state))
    if all_finite(t for _, t in named):
        return
    bad = nonfinite_names(named)
    shown = ", ".join(bad[:5]) + (" ..." if len(bad) > 5 else "")
    raise NonFiniteError(f"{what}: {len(bad)} of {len(named)} tensors hold NaN or inf ({shown}){then}")
