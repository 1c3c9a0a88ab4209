"""Feature-map matching (MARS / MERS, Crasto et al.): the student's features regress the teacher's.

* ``mars`` — one stage: CE + ``weight`` * MSE(student features, teacher features);
* ``mers`` — two stages: the student is trained with the feature MSE alone ("emulate"), then fine-tuned with CE
  (``loss.mers.finetune``: ``"classifier"`` trains the classifier only, as in the paper; ``"all"`` every layer).

``loss.mars.layers``: module paths compared (default: ``feature_paths["penultimate"]`` of each network); the paired
maps must have the same shape.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from ..config import METHOD_DEFAULTS
from ..losses import feature_matching_loss
from ..train.stage import Batch, LossDict
from .base import Distiller, Stage, StageContext, Supervised
from .registry import register_method
from .supervised import teacher_stage

__all__ = ["FeatureMSEDistiller", "mars", "mers", "MARS_DEFAULTS", "MERS_DEFAULTS"]

#: Defaults of ``loss.mars`` (the feature MSE of MARS and of MERS's first stage) and of ``loss.mers``
#: (written in :data:`mmh.config.METHOD_DEFAULTS`).
MARS_DEFAULTS: dict[str, Any] = METHOD_DEFAULTS["mars"]
MERS_DEFAULTS: dict[str, Any] = METHOD_DEFAULTS["mers"]


class FeatureMSEDistiller(Distiller):
    """``ce_weight`` * CE + ``weight`` * :func:`mmh.losses.feature_matching_loss` (sum over layers of MSE)."""

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        *,
        weight: float = MARS_DEFAULTS["weight"],
        layers: Sequence[str] | None = None,
        ce_weight: float = 1.0,
    ) -> None:
        super().__init__(student, teacher, ce_weight)
        self.s_paths = list(layers) if layers else [student.feature_paths["penultimate"]]
        self.t_paths = list(layers) if layers else [teacher.feature_paths["penultimate"]]
        self.weight = float(weight)

    def distill_losses(
        self,
        student_logits: Tensor,
        teacher_logits: Tensor,
        student_feats: Mapping[str, Tensor],
        teacher_feats: Mapping[str, Tensor],
        batch: Batch,
    ) -> LossDict:
        for ps, pt in zip(self.s_paths, self.t_paths):
            s, t = student_feats[ps], teacher_feats[pt]
            if s.shape != t.shape:
                raise ValueError(
                    f"feature matching needs equal shapes: student {ps!r} {tuple(s.shape)} vs "
                    f"teacher {pt!r} {tuple(t.shape)}"
                )
        total = feature_matching_loss(
            [student_feats[p] for p in self.s_paths], [teacher_feats[p] for p in self.t_paths]
        )
        return {"loss_mse": self.weight * total}


def _build_mars(ctx: StageContext) -> FeatureMSEDistiller:
    c = ctx.loss_cfg("mars")
    return FeatureMSEDistiller(
        ctx.build_student(),
        ctx.input("teacher"),
        weight=c["weight"],
        layers=c["layers"],
        ce_weight=ctx.cfg["loss"]["ce"],
    )


def _build_emulate(ctx: StageContext) -> FeatureMSEDistiller:
    c = ctx.loss_cfg("mars")
    return FeatureMSEDistiller(
        ctx.build_student(), ctx.input("teacher"), weight=c["weight"], layers=c["layers"], ce_weight=0.0
    )


def _build_finetune(ctx: StageContext) -> Supervised:
    mode = ctx.cfg["loss"]["mers"]["finetune"]
    if mode not in ("classifier", "all"):
        raise ValueError(f"loss.mers.finetune must be 'classifier' or 'all', got {mode!r}")
    student = copy.deepcopy(ctx.input("emulate"))
    for p in student.parameters():
        p.requires_grad_(True)
    return Supervised(
        student, ce_weight=ctx.cfg["loss"]["ce"], train_only=("classifier",) if mode == "classifier" else None
    )


@register_method(
    "mars", "MARS: CE + w * MSE between student and teacher feature maps (loss.mars)", defaults={"mars": MARS_DEFAULTS}
)
def mars(cfg: Mapping[str, Any]) -> list[Stage]:
    return [
        teacher_stage(),
        Stage(
            "student",
            "student/mars",
            _build_mars,
            inputs=("teacher",),
            depends_on=("loss.ce", "loss.mars", "modalities"),
        ),
    ]


@register_method(
    "mers",
    "MERS: feature MSE alone, then CE fine-tuning (loss.mers.finetune)",
    defaults={"mars": MARS_DEFAULTS, "mers": MERS_DEFAULTS},
)
def mers(cfg: Mapping[str, Any]) -> list[Stage]:
    return [
        teacher_stage(),
        Stage(
            "emulate",
            "student/mers_emulate",
            _build_emulate,
            inputs=("teacher",),
            depends_on=("loss.mars", "modalities"),
        ),
        Stage(
            "finetune",
            "finetune/mers",
            _build_finetune,
            inputs=("emulate",),
            section="finetune",
            depends_on=("loss.ce", "loss.mers"),
        ),
    ]
