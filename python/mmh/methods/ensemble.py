"""Output ensembles: the MMH "RAD+DAD" model averages the logits of the RAD and DAD students
(:class:`mmh.models.LogitEnsemble`).

``rad_dad`` trains nothing new: its stages are the RAD and DAD student stages (cached, so the students of the
``rad`` and ``dad`` runs with the same config are reused) and an ensemble stage that averages their logits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from ..models import LogitEnsemble
from ..train.stage import Batch, LossDict, StageModule
from .base import Stage, StageContext
from .dad import DAD_DEFAULTS, dad_stage
from .rad import RAD_DEFAULTS, rad_stage
from .registry import register_method
from .supervised import teacher_stage

__all__ = ["EnsembleStage", "ensemble_stage", "rad_dad"]


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


@register_method(
    "rad_dad",
    "MMH ensemble: mean of the RAD and DAD students' logits (reuses their stages)",
    defaults={"rad": RAD_DEFAULTS, "dad": DAD_DEFAULTS},
)
def rad_dad(cfg: Mapping[str, Any]) -> list[Stage]:
    return [teacher_stage(), rad_stage("rad", name="rad"), dad_stage(name="dad"), ensemble_stage(("rad", "dad"))]
