"""DMCL (thesis ch. 5) and the multiple-choice-learning baselines, on one network per modality trained jointly.

The networks are the streams of a late-fusion net (``small_late_fusion`` / ``late_fusion`` with one stream per
modality of ``modalities.mcl``), so the deployable's ``forward`` is Σ (the mean of the streams' logits) and any
subset of modalities can predict (:func:`mmh.evaluation_thesis.subset_logits`).

Per sample i and network m, with ``ce[m, i] = CE(y_i, f_m(x_i))`` and the winner ``w_i`` (vectorised: one
``argmin`` over the (M, B) matrix, one-hot masks, no Python loop over samples):

* ``independent`` — every network gets its CE: ``Σ_m ce[m, i]``;
* ``smcl`` — stochastic MCL: only the winner (lowest CE) gets its CE;
* ``cmcl`` — confident MCL: winner by ``ce − β·KL(U‖p_m)`` (CE plus the others' confidence loss), the winner gets
  its CE, losers ``β·KL(U‖p_m)`` (pushed to the uniform distribution);
* ``dmcl`` — the winner (lowest CE) is the teacher: it gets ``winner_ce·CE``; losers get
  ``loser_ce·CE + kd_weight·T²·KL(softmax(z_w/T) ‖ softmax(z_m/T))`` towards the *detached* winner;
* ``random`` — DMCL with a uniformly random teacher per sample.

Each term is summed over networks and averaged over the batch: ``(1/B) Σ_i Σ_m mask[m, i]·ℓ[m, i]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..base import Batch, LossDict, Stage, StageContext, StageModule
from ..registry import register_method
from .common import method_cfg, stream_names

__all__ = ["MCL_MODES", "mcl_loss", "MCLStage", "mcl_stage", "METHOD_OF_MODE"]

MCL_MODES = ("independent", "smcl", "cmcl", "dmcl", "random")
#: Registered method name of each mode.
METHOD_OF_MODE = {"independent": "mcl_independent", "smcl": "smcl", "cmcl": "cmcl", "dmcl": "dmcl",
                  "random": "mcl_random"}


def _kl_uniform(logits: Tensor) -> Tensor:
    """KL(U ‖ softmax(logits)) over the last dim: ``mean_k(-log p_k) - log K``."""
    k = logits.shape[-1]
    return -F.log_softmax(logits, dim=-1).mean(-1) - math.log(k)


def mcl_loss(logits: Tensor, labels: Tensor, mode: str, *, temperature: float = 2.0, kd_weight: float = 1.0,
             winner_ce: float = 1.0, loser_ce: float = 1.0, beta: float = 0.75,
             generator: torch.Generator | None = None) -> tuple[LossDict, Tensor]:
    """The MCL loss terms of ``mode`` (see the module docstring) and the winners (B,) int64.

    ``logits``: (M, B, K) — network m's logits for sample i; ``labels``: (B,) int64. ``generator`` drives the
    random teacher (default: torch's global RNG, which the trainer checkpoints).
    """
    if mode not in MCL_MODES:
        raise ValueError(f"MCL mode must be one of {MCL_MODES}, got {mode!r}")
    if not isinstance(logits, Tensor) or logits.dim() != 3:
        raise ValueError(f"logits must be (M, B, K), got {getattr(logits, 'shape', type(logits))}")
    m, b, k = logits.shape
    if m < 1 or b < 1:
        raise ValueError(f"logits (M, B, K) = {tuple(logits.shape)}: need at least one network and one sample")
    if labels.shape != (b,) or labels.dtype.is_floating_point:
        raise ValueError(f"labels must be an integer tensor of shape ({b},), got {tuple(labels.shape)} {labels.dtype}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    ce = F.cross_entropy(logits.reshape(m * b, k), labels.repeat(m), reduction="none").view(m, b)
    kl_u = _kl_uniform(logits) if mode == "cmcl" else None
    if mode == "random":
        winners = torch.randint(m, (b,), generator=generator, device="cpu").to(logits.device)
    else:
        crit = ce if kl_u is None else ce - beta * kl_u
        winners = crit.detach().argmin(0)
    win = F.one_hot(winners, m).T.to(logits.dtype)  # (M, B)
    lose = 1.0 - win

    def batch_term(mask: Tensor, per: Tensor) -> Tensor:
        return (mask * per).sum(0).mean()

    if mode == "independent":
        return {"loss_ce": winner_ce * ce.sum(0).mean()}, winners
    out: LossDict = {"loss_ce_winner": winner_ce * batch_term(win, ce)}
    if mode == "cmcl":
        assert kl_u is not None
        out["loss_uniform"] = beta * batch_term(lose, kl_u)
    elif mode in ("dmcl", "random"):
        if loser_ce:
            out["loss_ce_loser"] = loser_ce * batch_term(lose, ce)
        teacher = logits.detach()[winners, torch.arange(b, device=logits.device)]  # (B, K)
        log_pt = F.log_softmax(teacher / temperature, dim=1)
        log_ps = F.log_softmax(logits / temperature, dim=2)
        kl = (log_pt.exp() * (log_pt - log_ps)).sum(2)  # (M, B)
        out["loss_kd"] = kd_weight * temperature**2 * batch_term(lose, kl)
    return out, winners


class MCLStage(StageModule):
    """Joint training of the streams of a late-fusion net with :func:`mcl_loss` (``streams`` in order).

    ``last_winners`` holds the winners (B,) of the last training batch (for diagnostics).
    """

    def __init__(self, model: nn.Module, mode: str, *, temperature: float = 2.0, kd_weight: float = 1.0,
                 winner_ce: float = 1.0, loser_ce: float = 1.0, beta: float = 0.75) -> None:
        super().__init__()
        if mode not in MCL_MODES:
            raise ValueError(f"MCL mode must be one of {MCL_MODES}, got {mode!r}")
        self.streams = stream_names(model)
        if len(self.streams) < 2:
            raise ValueError(f"MCL needs at least two networks (streams), got {self.streams}")
        self.model, self.mode = model, mode
        self.kw = {"temperature": float(temperature), "kd_weight": float(kd_weight), "winner_ce": float(winner_ce),
                   "loser_ce": float(loser_ce), "beta": float(beta)}
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
        c = method_cfg(ctx.cfg, "mcl")
        model = ctx.build_model("mcl")
        return MCLStage(model, mode, temperature=c["temperature"], kd_weight=c["kd_weight"],
                        winner_ce=c["winner_ce"], loser_ce=c["loser_ce"], beta=c["beta"])
    return build


def mcl_stage(mode: str) -> Stage:
    """The single joint stage of an MCL method (``stages.mcl`` overrides; networks on ``modalities.mcl``)."""
    return Stage("mcl", f"mcl/{mode}", _builder(mode), section="mcl", depends_on=("loss.mcl", "modalities.mcl"))


def _register(mode: str, description: str) -> None:
    def recipe(cfg: Mapping[str, Any]) -> list[Stage]:
        return [mcl_stage(mode)]
    register_method(METHOD_OF_MODE[mode], description)(recipe)


_register("dmcl", "DMCL: per-sample lowest-CE network teaches the others (T²·KD + CE) — thesis ch. 5 (loss.mcl)")
_register("independent", "MCL baseline: the networks of modalities.mcl trained independently with CE")
_register("smcl", "MCL baseline: stochastic MCL, only the per-sample winner gets its CE")
_register("cmcl", "MCL baseline: confident MCL, losers pushed to the uniform distribution (weight loss.mcl.beta)")
_register("random", "MCL baseline: DMCL with a random teacher per sample")
