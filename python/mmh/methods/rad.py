"""MMH region-aware distillation (paper sec. III-B): CE + alpha * RAD, and its ablations.

The loss is :class:`mmh_ext.nn.RegionAwareDistillation` on the penultimate maps of student and teacher with each
network's own classifier; its weighting layer (q, k for ``weighting="attention"``) is a sub-module of the stage, so it
trains jointly with the student and is checkpointed with it.

* ``rad`` — grid 4, levels (4, 2, 1) (21 regions) and the weighting of ``loss.rad.weighting``. The library default
  is ``"none"`` (the region losses averaged), **not** the paper's trained attention: q, k trained on the loss they
  weigh move the weight onto the smallest region loss (the easiest region; pinned by
  ``tests/ops/test_rad_weighting.py``), and on the main job's val split the three weightings give none 0.685 >
  self 0.675 > attention 0.666 against a 0.674 baseline (3 seeds; README, "Why RAD's default weighting is none");
* ``rad_attention`` — the paper's information weighting: attention with trained q, k (882 parameters);
* ``rad_self`` — the parameter-free attention of the reference code, ``A[i, j] = softmax_j(r_i r_j)``;
* ``rad_noweight`` — the paper's ablation "without information weighting" (``weighting="none"``, whatever the config
  says);
* ``rad_global`` — no weighting and a single global region (``grid=1, levels=(1,)``): logit KD at temperature T.

The region weights of every step are logged in the stage's ``metrics.csv`` (``rad_w_max``, ``rad_w_last`` — the
global region —, ``rad_w_eff`` — the effective number of regions), so a collapse is visible.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..config import METHOD_DEFAULTS
from ..train.stage import Batch, LossDict
from ._ext import require_ext
from .base import Distiller, Stage, StageContext
from .registry import register_method
from .supervised import teacher_stage

__all__ = ["RADDistiller", "rad_stage", "RAD_VARIANTS", "RAD_DEFAULTS"]

#: Defaults of ``loss.rad``: the config schema (written in :data:`mmh.config.METHOD_DEFAULTS`, declared with every
#: RAD method) and :class:`RADDistiller`'s.
RAD_DEFAULTS: dict[str, Any] = METHOD_DEFAULTS["rad"]


class RADDistiller(Distiller):
    """CE + ``alpha`` * RegionAwareDistillation(student penultimate, teacher penultimate, fcs)."""

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        *,
        alpha: float = RAD_DEFAULTS["alpha"],
        grid: int = RAD_DEFAULTS["grid"],
        levels: Sequence[int] = tuple(RAD_DEFAULTS["levels"]),
        temperature: float = RAD_DEFAULTS["temperature"],
        weighting: str = RAD_DEFAULTS["weighting"],
        ce_weight: float = 1.0,
    ) -> None:
        super().__init__(student, teacher, ce_weight)
        for net, role in ((student, "student"), (teacher, "teacher")):
            if "penultimate" not in getattr(net, "feature_paths", {}):
                raise ValueError(f"RAD needs {role}.feature_paths['penultimate'] (the last feature map)")
            if not isinstance(getattr(net, "classifier", None), nn.Linear):
                raise TypeError(f"RAD needs {role}.classifier to be an nn.Linear")
        self.alpha = float(alpha)
        self.s_paths = [student.feature_paths["penultimate"]]
        self.t_paths = [teacher.feature_paths["penultimate"]]
        self.rad = require_ext().nn.RegionAwareDistillation(
            grid=grid, levels=tuple(levels), temperature=temperature, weighting=weighting
        )

    def distill_losses(
        self,
        student_logits: Tensor,
        teacher_logits: Tensor,
        student_feats: Mapping[str, Tensor],
        teacher_feats: Mapping[str, Tensor],
        batch: Batch,
    ) -> LossDict:
        s, t = student_feats[self.s_paths[0]], teacher_feats[self.t_paths[0]]
        return {"loss_rad": self.alpha * self.rad(s, t, self.student.classifier, self.teacher.classifier)}

    def diagnostics(self) -> dict[str, Tensor]:
        """The region weights of the last step: ``rad_w_max`` (largest weight), ``rad_w_last`` (the last region —
        the global one with the default levels) and ``rad_w_eff`` (effective number of regions, N when uniform,
        1 when collapsed onto one region). The values of ``self.rad.weight_stats()``, as 0-dim float64 tensors on
        the weights' device: the trainer sums them there without a host synchronisation per step."""
        w = self.rad.last_weights
        if w is None:
            return {}
        w = w.detach().double()
        p = w / w.sum()
        eff = torch.exp(-(p * p.clamp_min(1e-300).log()).sum()).clamp(1.0, float(w.numel()))
        return {"rad_w_max": w.max(), "rad_w_last": w[-1], "rad_w_eff": eff}


#: Ablations: method name -> overrides of ``loss.rad``.
RAD_VARIANTS: dict[str, dict[str, Any]] = {
    "rad": {},
    "rad_attention": {"weighting": "attention"},
    "rad_self": {"weighting": "self"},
    "rad_noweight": {"weighting": "none"},
    "rad_global": {"weighting": "none", "grid": 1, "levels": [1]},
}


def _builder(variant: str) -> Callable[[StageContext], RADDistiller]:
    def build(ctx: StageContext) -> RADDistiller:
        c = {**ctx.loss_cfg("rad"), **RAD_VARIANTS[variant]}
        return RADDistiller(
            ctx.build_student(),
            ctx.input("teacher"),
            alpha=c["alpha"],
            grid=c["grid"],
            levels=c["levels"],
            temperature=c["temperature"],
            weighting=c["weighting"],
            ce_weight=ctx.cfg["loss"]["ce"],
        )

    return build


def rad_stage(variant: str = "rad", name: str = "student") -> Stage:
    """The student stage of a RAD variant (receives the ``teacher`` stage)."""
    return Stage(
        name,
        f"student/{variant}",
        _builder(variant),
        inputs=("teacher",),
        depends_on=("loss.ce", "loss.rad", "modalities"),
    )


def _register(variant: str, description: str) -> None:
    def recipe(cfg: Mapping[str, Any]) -> list[Stage]:
        return [teacher_stage(), rad_stage(variant)]

    register_method(variant, description, defaults={"rad": RAD_DEFAULTS})(recipe)


_register("rad", "MMH-RAD: CE + alpha * region-aware distillation (loss.rad; weighting from the config)")
_register("rad_attention", "RAD with the paper's trained attention weighting (q, k; collapses onto the easiest region)")
_register("rad_self", "RAD with the parameter-free weighting A = softmax(r_i r_j) of the reference code")
_register("rad_noweight", "RAD ablation: regions averaged without the information weighting")
_register("rad_global", "RAD ablation: no weighting and one global region (logit KD at temperature T)")
