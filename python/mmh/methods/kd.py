"""Hinton knowledge distillation: CE + w * T^2 * KL(softmax(teacher/T) || softmax(student/T))."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from .base import Batch, Distiller, LossDict, Stage, StageContext
from .registry import register_method
from .supervised import teacher_stage

__all__ = ["kd_loss", "KDDistiller", "kd"]


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """``T^2 * KL(softmax(t/T) || softmax(s/T))``, averaged over the batch (``batchmean``)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher logits "
                         f"{tuple(teacher_logits.shape)} differ in shape")
    log_ps = F.log_softmax(student_logits / temperature, dim=1)
    log_pt = F.log_softmax(teacher_logits / temperature, dim=1)
    return temperature**2 * F.kl_div(log_ps, log_pt, reduction="batchmean", log_target=True)


class KDDistiller(Distiller):
    """CE + ``weight`` * :func:`kd_loss` on the logits."""

    def __init__(self, student: nn.Module, teacher: nn.Module, *, weight: float = 1.0, temperature: float = 4.0,
                 ce_weight: float = 1.0) -> None:
        super().__init__(student, teacher, ce_weight)
        self.weight, self.temperature = float(weight), float(temperature)

    def distill_losses(self, student_logits: Tensor, teacher_logits: Tensor, student_feats: Mapping[str, Tensor],
                       teacher_feats: Mapping[str, Tensor], batch: Batch) -> LossDict:
        return {"loss_kd": self.weight * kd_loss(student_logits, teacher_logits, self.temperature)}


def _build(ctx: StageContext) -> KDDistiller:
    c = ctx.loss_cfg("kd")
    return KDDistiller(ctx.build_student(), ctx.input("teacher"), weight=c["weight"], temperature=c["temperature"],
                       ce_weight=ctx.cfg["loss"]["ce"])


@register_method("kd", "Hinton KD from the frozen teacher: CE + w * T^2 * KL (loss.kd)")
def kd(cfg: Mapping[str, Any]) -> list[Stage]:
    return [teacher_stage(), Stage("student", "student/kd", _build, inputs=("teacher",),
                                   depends_on=("loss.ce", "loss.kd", "modalities"))]
