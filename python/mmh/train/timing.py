"""Where a training step's time goes: the per-phase split the trainer writes into ``metrics.csv`` and the speed
benchmark (:mod:`mmh.benchmarks.speed`) reports.

A :class:`PhaseTimer` puts time marks into each step: the step's start, the start and end of every call of a frozen
sub-network of the stage (:attr:`mmh.train.StageModule.frozen`: the teacher) and of the network it trains (the
student), the end of the stage's forward (the loss terms included), the end of the backward pass and the end of the
optimizer step. The phases of one step:

* ``teacher_ms``: time inside the frozen networks;
* ``forward_ms``: time inside the trained network (the stage's ``student``, else its ``model``), less the frozen
  networks called from inside it;
* ``loss_ms``: the rest of the stage's forward (the distillation and cross-entropy terms, feature hooks); when
  that network is not called as a module (an ensemble has none; multistream stages call ``forward_all``) the whole
  non-teacher forward is ``forward_ms``. A frozen stream that
  runs in lockstep inside the trained network without being called as a whole (multistream step 3's depth stream)
  counts as ``forward_ms``;
* ``backward_ms``, ``optimizer_ms`` (zeroing, clipping, the optimizer and scheduler steps, the running sums);
* ``step_ms``: the whole step; the phases sum to it.

On the CPU the marks are ``time.perf_counter`` values (the CPU runs the step synchronously, so they are its real
times). On CUDA they are CUDA events recorded on the current stream: nothing waits for the device inside a step, and
the elapsed times are read only when :meth:`PhaseTimer.collect` is called, at the trainer's existing log points,
after it has read the device anyway.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

__all__ = ["PhaseTimer", "PHASES", "COST_COLUMNS", "phase_durations"]

#: The phase columns, in order (milliseconds per step).
PHASES = ("teacher_ms", "forward_ms", "loss_ms", "backward_ms", "optimizer_ms", "step_ms")
#: Attribute names under which stages keep the network they train (``student`` of a distiller, ``model``).
_TRAINED = ("student", "model")
#: The columns of ``metrics.csv`` measured by the clock (they differ between two runs that are otherwise identical,
#: like ``time_s``).
COST_COLUMNS = ("samples_per_s", *PHASES, "peak_mem_mb", "time_s")


def _intervals(marks: list[tuple[str, Any]], start: str, end: str) -> list[tuple[int, int]]:
    """(position of the start mark, position of the end mark) of each call of one kind (outermost calls only)."""
    out, depth, opened = [], 0, 0
    for i, (name, _) in enumerate(marks):
        if name == start:
            if depth == 0:
                opened = i
            depth += 1
        elif name == end and depth:
            depth -= 1
            if depth == 0:
                out.append((opened, i))
    return out


def phase_durations(marks: list[tuple[str, Any]], elapsed: Any) -> dict[str, float]:
    """The phases (ms) of one step from its marks; ``elapsed(a, b)``: milliseconds from mark value ``a`` to ``b``.

    Marks: ``step``, ``teacher+``/``teacher-`` and ``student+``/``student-`` pairs, ``forward``, ``backward``,
    ``end`` (the step's end); the teacher intervals nested in a student interval count as teacher time only."""
    pos = {name: value for name, value in marks if name in ("step", "forward", "backward", "end")}
    values = [v for _, v in marks]

    def span(a: int, b: int) -> float:
        return elapsed(values[a], values[b])

    teach = _intervals(marks, "teacher+", "teacher-")
    stud = _intervals(marks, "student+", "student-")
    t_ms = sum(span(a, b) for a, b in teach)
    s_ms = sum(span(a, b) for a, b in stud)
    nested = sum(span(a, b) for a, b in teach for c, d in stud if c <= a and b <= d)
    fwd = elapsed(pos["step"], pos["forward"])
    rest = max(fwd - t_ms - s_ms + nested, 0.0)
    student = s_ms - nested if stud else rest
    return {
        "teacher_ms": t_ms,
        "forward_ms": student,
        "loss_ms": rest if stud else 0.0,
        "backward_ms": elapsed(pos["forward"], pos["backward"]),
        "optimizer_ms": elapsed(pos["backward"], pos["end"]),
        "step_ms": elapsed(pos["step"], pos["end"]),
    }


class PhaseTimer:
    """Per-phase times of the training steps of ``stage`` (see the module docstring).

    ``hooks``: mark the frozen and deployable networks' calls (forward hooks). Off under ``torch.compile`` (the
    hooks would split the compiled graph): then the teacher and the student are part of ``forward_ms``.
    """

    def __init__(self, stage: nn.Module, device: torch.device, *, hooks: bool = True) -> None:
        self.cuda = device.type == "cuda"
        self.active = False
        self._marks: list[tuple[str, Any]] = []
        self._pending: list[list[tuple[str, Any]]] = []
        self.sums: dict[str, float] = {}
        self.steps = 0
        self._handles: list[Any] = []
        if hooks:
            frozen = [getattr(stage, n) for n in getattr(stage, "frozen", ())]
            self._hook(frozen, "teacher")
            student = next(
                (m for m in (getattr(stage, n, None) for n in _TRAINED) if isinstance(m, nn.Module)), None
            )  # read, not stage.deployable(): that may do work (a stage that assembles its network on demand)
            if student is not None and student is not stage and all(student is not m for m in frozen):
                self._hook([student], "student")

    def _hook(self, modules: Iterable[nn.Module], kind: str) -> None:
        for m in modules:
            self._handles.append(m.register_forward_pre_hook(lambda *_a, k=kind: self.mark(f"{k}+")))
            self._handles.append(m.register_forward_hook(lambda *_a, k=kind: self.mark(f"{k}-")))

    def _now(self) -> Any:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def _elapsed(self, a: Any, b: Any) -> float:
        return float(a.elapsed_time(b)) if self.cuda else (b - a) * 1000.0

    def start(self) -> None:
        """The step begins (after its batch is on the device)."""
        self.active = True
        self._marks = [("step", self._now())]

    def mark(self, name: str) -> None:
        """A mark inside the step (ignored outside steps: validation passes call the same networks)."""
        if self.active:
            self._marks.append((name, self._now()))

    def stop(self) -> None:
        """The step ends (after the optimizer step)."""
        self.mark("end")
        self.active = False
        self._pending.append(self._marks)
        self._marks = []

    def collect(self) -> None:
        """Turn the marks of the steps since the last call into summed phase times (on CUDA: waits for the last
        event, which the trainer's reads at its log points have already made complete)."""
        if not self._pending:
            return
        if self.cuda:
            self._pending[-1][-1][1].synchronize()
        for marks in self._pending:
            for k, v in phase_durations(marks, self._elapsed).items():
                self.sums[k] = self.sums.get(k, 0.0) + v
            self.steps += 1
        self._pending = []

    def means(self, reset: bool = True) -> dict[str, float]:
        """Mean phase times (ms per step) since the last reset; empty when no step was timed."""
        self.collect()
        out = {k: self.sums.get(k, 0.0) / self.steps for k in PHASES} if self.steps else {}
        if reset:
            self.sums, self.steps = {}, 0
        return out

    def close(self) -> None:
        """Remove the hooks."""
        for h in self._handles:
            h.remove()
        self._handles = []
