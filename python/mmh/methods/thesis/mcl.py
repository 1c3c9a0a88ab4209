"""DMCL (thesis ch. 5) and the multiple-choice-learning baselines, on one network per modality trained jointly.

The networks are the streams of a late-fusion net (``small_late_fusion`` / ``late_fusion`` with one stream per
modality of ``modalities.mcl``), so the deployable's ``forward`` is Σ (the mean of the streams' logits) and any
subset of modalities can predict (:func:`mmh.evaluation.thesis.subset_logits`).

Per sample i and network m, with ``ce[m, i] = CE(y_i, f_m(x_i))`` and the winner ``w_i`` (vectorised: one
``argmin`` over the (M, B) matrix, one-hot masks, no Python loop over samples):

* ``independent`` — every network gets its CE: ``Σ_m ce[m, i]``;
* ``smcl`` — stochastic MCL: only the winner (lowest CE) gets its CE;
* ``cmcl`` — confident MCL: winner by ``ce − β·KL(U‖p_m)`` (CE plus the others' confidence loss), the winner gets
  its CE, losers ``β·KL(U‖p_m)`` (pushed to the uniform distribution);
* ``dmcl`` — thesis Eq. 5.3: the winner (lowest CE) is the teacher and gets ``CE(y, z_w)``; each loser gets
  ``(1−λ)·CE(y, z_m) + λ·CE(softmax(z_w/T), softmax(z_m/T))`` towards the *detached* winner (λ 0.5, T 2, no T²
  unless ``t_squared``; ``loss.mcl``);
* ``random`` — DMCL with a uniformly random teacher per sample.

Each term is summed over networks and averaged over the batch: ``(1/B) Σ_i Σ_m mask[m, i]·ℓ[m, i]``. The loss
itself is :func:`mmh.losses.mcl_loss` (re-exported here).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ...config import METHOD_DEFAULTS
from ...losses import MCL_MODES, mcl_loss
from ...train.stage import Batch, LossDict, StageModule
from ..base import Stage, StageContext
from ..registry import register_method
from .common import stream_names

__all__ = ["MCL_MODES", "mcl_loss", "MCLStage", "mcl_stage", "METHOD_OF_MODE", "MCL_DEFAULTS"]

#: Defaults of ``loss.mcl`` (every MCL method): the config schema (written in :data:`mmh.config.METHOD_DEFAULTS`)
#: and :class:`MCLStage`'s.
MCL_DEFAULTS: dict[str, Any] = METHOD_DEFAULTS["mcl"]

#: Registered method name of each mode.
METHOD_OF_MODE = {
    "independent": "mcl_independent",
    "smcl": "smcl",
    "cmcl": "cmcl",
    "dmcl": "dmcl",
    "random": "mcl_random",
}


class MCLStage(StageModule):
    """Joint training of the streams of a late-fusion net with :func:`mcl_loss` (``streams`` in order).

    ``last_winners`` holds the winners (B,) of the last training batch (for diagnostics).
    """

    def __init__(
        self,
        model: nn.Module,
        mode: str,
        *,
        lam: float = MCL_DEFAULTS["lam"],
        temperature: float = MCL_DEFAULTS["temperature"],
        t_squared: bool = MCL_DEFAULTS["t_squared"],
        winner_ce: float = MCL_DEFAULTS["winner_ce"],
        beta: float = MCL_DEFAULTS["beta"],
    ) -> None:
        super().__init__()
        if mode not in MCL_MODES:
            raise ValueError(f"MCL mode must be one of {MCL_MODES}, got {mode!r}")
        self.streams = stream_names(model)
        if len(self.streams) < 2:
            raise ValueError(f"MCL needs at least two networks (streams), got {self.streams}")
        self.model, self.mode = model, mode
        self.kw = {
            "lam": float(lam),
            "temperature": float(temperature),
            "t_squared": bool(t_squared),
            "winner_ce": float(winner_ce),
            "beta": float(beta),
        }
        self.last_winners: Tensor | None = None

    def forward(self, batch: Batch) -> tuple[Tensor, LossDict]:
        if "label" not in batch:
            raise KeyError("batch has no 'label' key (needed by the MCL losses)")
        fused, per = self.model.forward_all(batch)
        stacked = torch.stack([per[s] for s in self.streams])
        losses, self.last_winners = mcl_loss(stacked, batch["label"], self.mode, **self.kw)
        return fused, losses

    def deployable(self) -> nn.Module:
        return self.model


def _builder(mode: str) -> Callable[[StageContext], MCLStage]:
    def build(ctx: StageContext) -> MCLStage:
        c = ctx.loss_cfg("mcl")
        model = ctx.build_model("mcl")
        return MCLStage(
            model,
            mode,
            lam=c["lam"],
            temperature=c["temperature"],
            t_squared=c["t_squared"],
            winner_ce=c["winner_ce"],
            beta=c["beta"],
        )

    return build


def mcl_stage(mode: str) -> Stage:
    """The single joint stage of an MCL method (``stages.mcl`` overrides; networks on ``modalities.mcl``)."""
    return Stage("mcl", f"mcl/{mode}", _builder(mode), section="mcl", depends_on=("loss.mcl", "modalities.mcl"))


def _register(mode: str, description: str) -> None:
    def recipe(cfg: Mapping[str, Any]) -> list[Stage]:
        return [mcl_stage(mode)]

    register_method(METHOD_OF_MODE[mode], description, defaults={"mcl": MCL_DEFAULTS})(recipe)


_register(
    "dmcl",
    "DMCL: the per-sample lowest-CE network teaches the others, (1-λ) CE + λ soft CE (Eq. 5.3) — "
    "thesis ch. 5 (loss.mcl)",
)
_register("independent", "MCL baseline: the networks of modalities.mcl trained independently with CE")
_register("smcl", "MCL baseline: stochastic MCL, only the per-sample winner gets its CE")
_register("cmcl", "MCL baseline: confident MCL, losers pushed to the uniform distribution (weight loss.mcl.beta)")
_register("random", "MCL baseline: DMCL with a random teacher per sample")
