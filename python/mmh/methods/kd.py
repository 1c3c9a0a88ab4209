"""Hinton knowledge distillation: CE + w * T^2 * KL(softmax(teacher/T) || softmax(student/T)) (the loss is
:func:`mmh.losses.kd_loss`, re-exported here)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from ..config import METHOD_DEFAULTS
from ..losses import kd_loss
from ..train.stage import Batch, LossDict
from .base import Distiller, Stage, StageContext
from .registry import register_method
from .supervised import teacher_stage

__all__ = ["kd_loss", "KDDistiller", "kd", "KD_DEFAULTS"]

#: Defaults of ``loss.kd``: the config schema (written in :data:`mmh.config.METHOD_DEFAULTS`) and
#: :class:`KDDistiller`'s.
KD_DEFAULTS: dict[str, Any] = METHOD_DEFAULTS["kd"]


class KDDistiller(Distiller):
    """CE + ``weight`` * :func:`kd_loss` on the logits."""

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        *,
        weight: float = KD_DEFAULTS["weight"],
        temperature: float = KD_DEFAULTS["temperature"],
        ce_weight: float = 1.0,
    ) -> None:
        super().__init__(student, teacher, ce_weight)
        self.weight, self.temperature = float(weight), float(temperature)

    def distill_losses(
        self,
        student_logits: Tensor,
        teacher_logits: Tensor,
        student_feats: Mapping[str, Tensor],
        teacher_feats: Mapping[str, Tensor],
        batch: Batch,
    ) -> LossDict:
        return {"loss_kd": self.weight * kd_loss(student_logits, teacher_logits, self.temperature)}


def _build(ctx: StageContext) -> KDDistiller:
    c = ctx.loss_cfg("kd")
    return KDDistiller(
        ctx.build_student(),
        ctx.input("teacher"),
        weight=c["weight"],
        temperature=c["temperature"],
        ce_weight=ctx.cfg["loss"]["ce"],
    )


@register_method("kd", "Hinton KD from the frozen teacher: CE + w * T^2 * KL (loss.kd)", defaults={"kd": KD_DEFAULTS})
def kd(cfg: Mapping[str, Any]) -> list[Stage]:
    return [
        teacher_stage(),
        Stage("student", "student/kd", _build, inputs=("teacher",), depends_on=("loss.ce", "loss.kd", "modalities")),
    ]
