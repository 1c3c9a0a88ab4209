"""Output ensembles: the MMH "RAD+DAD" model averages the logits of the RAD and DAD students.

``rad_dad`` trains nothing new: its stages are the RAD and DAD student stages (cached, so the students of the
``rad`` and ``dad`` runs with the same config are reused) and an ensemble stage that averages their logits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .base import Batch, LossDict, Stage, StageContext, StageModule
from .dad import dad_stage
from .rad import rad_stage
from .registry import register_method
from .supervised import teacher_stage

__all__ = ["LogitEnsemble", "EnsembleStage", "rad_dad"]


class LogitEnsemble(nn.Module):
    """Mean of the members' logits; ``members`` named (``forward`` also works member by member via
    :meth:`member_logits`). ``config`` = ``{"ensemble": {name: member.config}}`` so it can be rebuilt."""

    def __init__(self, members: Mapping[str, nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("LogitEnsemble needs at least one member")
        self.members = nn.ModuleDict(dict(members))
        self.modalities = tuple(dict.fromkeys(m for net in self.members.values()
                                              for m in getattr(net, "modalities", ())))
        self.config = {"ensemble": {k: getattr(v, "config", None) for k, v in self.members.items()}}

    def member_logits(self, batch: Batch) -> dict[str, Tensor]:
        """Logits of every member, by name."""
        return {name: net(batch) for name, net in self.members.items()}

    def forward(self, batch: Batch) -> Tensor:
        return torch.stack(list(self.member_logits(batch).values())).mean(0)


class EnsembleStage(StageModule):
    """A non-training stage wrapping a :class:`LogitEnsemble` of its input stages' networks."""

    frozen = ("ensemble",)

    def __init__(self, members: Mapping[str, nn.Module]) -> None:
        super().__init__()
        self.ensemble = LogitEnsemble(members)
        for p in self.ensemble.parameters():
            p.requires_grad_(False)

    def forward(self, batch: Batch) -> tuple[Tensor, LossDict]:
        raise RuntimeError("an ensemble stage is not trained (Stage.trains is False)")

    def deployable(self) -> nn.Module:
        return self.ensemble


def ensemble_stage(inputs: Sequence[str], name: str = "ensemble") -> Stage:
    """A stage averaging the logits of the networks of ``inputs``."""
    def build(ctx: StageContext) -> EnsembleStage:
        return EnsembleStage({i: ctx.input(i) for i in inputs})
    return Stage(name, "ensemble", build, inputs=tuple(inputs), trains=False)


@register_method("rad_dad", "MMH ensemble: mean of the RAD and DAD students' logits (reuses their stages)")
def rad_dad(cfg: Mapping[str, Any]) -> list[Stage]:
    return [teacher_stage(), rad_stage("rad", name="rad"), dad_stage(name="dad"), ensemble_stage(("rad", "dad"))]
