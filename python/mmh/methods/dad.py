"""MMH discrepancy-aware distillation (paper sec. III-C): CE + beta * DAD over layer pairs.

``loss.dad.layers`` (student module paths; default ``student.feature_paths["dad"]``, the shared layers) pair up
with ``loss.dad.teacher_layers`` (default: the same paths on the teacher). ``form``: "paper" (Frobenius norm of the
difference of the cosine-discrepancy matrices) or "sp" (similarity-preserving form of the reference code).
Clip models that fold time into the batch give one row per frame; each sample's frames are concatenated into one
row (:func:`per_sample`), so the matrices are b x b over samples. Under DDP with ``gather: true`` the matrices
cover the global batch: features are gathered across ranks with gradient (:func:`mmh.utils.all_gather_with_grad`),
so two ranks give the single-process loss and gradients.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from ..config import METHOD_DEFAULTS
from ..train.stage import Batch, LossDict
from ..utils.distributed import all_gather_with_grad
from ._ext import require_ext
from .base import Distiller, Stage, StageContext
from .registry import register_method
from .supervised import teacher_stage

__all__ = ["DADDistiller", "dad_stage", "per_sample", "DAD_DEFAULTS"]

#: Defaults of ``loss.dad``: the config schema (written in :data:`mmh.config.METHOD_DEFAULTS`, declared with the DAD
#: methods) and :class:`DADDistiller`'s.
DAD_DEFAULTS: dict[str, Any] = METHOD_DEFAULTS["dad"]


def per_sample(feats: Tensor, batch_size: int, path: str = "features") -> Tensor:
    """One row per sample: (B, D). A clip model that folds time into the batch (``resnet50_temporal``: B*T rows,
    row b*T + t is frame t of sample b) has each sample's frame features *concatenated* (frame-major), so DAD's
    matrix is b x b over samples, never (B*T) x (B*T) over frames."""
    if feats.shape[0] == batch_size:
        return feats.flatten(1)
    if feats.shape[0] % batch_size:
        raise ValueError(f"DAD layer {path!r} has {feats.shape[0]} rows, not a multiple of the batch size {batch_size}")
    return feats.reshape(batch_size, -1)


def _default_layers(net: nn.Module, role: str) -> list[str]:
    layers = list(getattr(net, "feature_paths", {}).get("dad") or [])
    if not layers:
        raise ValueError(
            f"DAD needs layer paths: {role}.feature_paths['dad'] is empty (e.g. a late-fusion "
            f"network has no joint representation); set loss.dad.layers"
        )
    return layers


class DADDistiller(Distiller):
    """CE + ``beta`` * ``mmh_ext.dad_loss`` summed over (student layer, teacher layer) pairs."""

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        *,
        beta: float = DAD_DEFAULTS["beta"],
        form: str = DAD_DEFAULTS["form"],
        layers: Sequence[str] | None = None,
        teacher_layers: Sequence[str] | None = None,
        gather: bool = DAD_DEFAULTS["gather"],
        ce_weight: float = 1.0,
    ) -> None:
        super().__init__(student, teacher, ce_weight)
        self.s_paths = list(layers) if layers else _default_layers(student, "student")
        self.t_paths = (
            list(teacher_layers)
            if teacher_layers
            else (list(layers) if layers else _default_layers(teacher, "teacher"))
        )
        if len(self.s_paths) != len(self.t_paths):
            raise ValueError(f"loss.dad.layers {self.s_paths} and teacher_layers {self.t_paths} must pair up")
        self._ext = require_ext()
        self._ext.dad.check_dad_form(form, "loss.dad.form")
        self.beta, self.form, self.gather = float(beta), form, bool(gather)

    def distill_losses(
        self,
        student_logits: Tensor,
        teacher_logits: Tensor,
        student_feats: Mapping[str, Tensor],
        teacher_feats: Mapping[str, Tensor],
        batch: Batch,
    ) -> LossDict:
        gather = all_gather_with_grad if self.gather else (lambda x: x)
        b = student_logits.shape[0]
        s = [gather(per_sample(student_feats[p], b, p)) for p in self.s_paths]
        t = [gather(per_sample(teacher_feats[p], b, p)) for p in self.t_paths]
        return {"loss_dad": self.beta * self._ext.dad_loss(s, t, form=self.form)}


def _build(ctx: StageContext) -> DADDistiller:
    c = ctx.loss_cfg("dad")
    return DADDistiller(
        ctx.build_student(),
        ctx.input("teacher"),
        beta=c["beta"],
        form=c["form"],
        layers=c["layers"],
        teacher_layers=c["teacher_layers"],
        gather=c["gather"],
        ce_weight=ctx.cfg["loss"]["ce"],
    )


def dad_stage(name: str = "student") -> Stage:
    """The student stage of DAD (receives the ``teacher`` stage)."""
    return Stage(name, "student/dad", _build, inputs=("teacher",), depends_on=("loss.ce", "loss.dad", "modalities"))


@register_method(
    "dad",
    "MMH-DAD: CE + beta * discrepancy-aware distillation over layer pairs (loss.dad)",
    defaults={"dad": DAD_DEFAULTS},
)
def dad(cfg: Mapping[str, Any]) -> list[Stage]:
    return [teacher_stage(), dad_stage()]
