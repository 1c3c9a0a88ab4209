"""Cross-entropy methods: the multimodal ``teacher`` and the single-modality ``baseline``.

Their stages are also the building blocks of the distillation recipes (every student method starts with
:func:`teacher_stage`, which is cached and shared).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .base import Stage, StageContext, Supervised
from .registry import register_method

__all__ = ["teacher_stage", "baseline_stage", "teacher", "baseline"]


def _build_teacher(ctx: StageContext) -> Supervised:
    return Supervised(ctx.build_model("teacher"), ce_weight=ctx.cfg["loss"]["ce"])


def _build_baseline(ctx: StageContext) -> Supervised:
    return Supervised(ctx.build_student(), ce_weight=ctx.cfg["loss"]["ce"])


def teacher_stage() -> Stage:
    """Train the network on ``modalities.teacher`` with cross-entropy (``stages.teacher`` overrides)."""
    return Stage("teacher", "teacher", _build_teacher, section="teacher", depends_on=("loss.ce", "modalities.teacher"))


def baseline_stage() -> Stage:
    """Train the student architecture on ``modalities.student`` with cross-entropy alone."""
    return Stage(
        "student",
        "baseline",
        _build_baseline,
        section="student",
        depends_on=("loss.ce", "modalities.teacher", "modalities.student"),
    )


@register_method("teacher", "multimodal network trained with cross-entropy on modalities.teacher (upper bound)")
def teacher(cfg: Mapping[str, Any]) -> list[Stage]:
    return [teacher_stage()]


@register_method("baseline", "student architecture on modalities.student with cross-entropy only")
def baseline(cfg: Mapping[str, Any]) -> list[Stage]:
    return [baseline_stage()]
