"""Modality distillation with multiple-stream networks (thesis ch. 3) and the Hoffman / ModDrop baselines.

Networks are cross-stream multiplier nets (``small_multiplier`` on the built-in data, ``multiplier_resnet`` for
the thesis's ResNet-50 setting): streams run in lockstep and, before the 2nd residual unit of each stage, the
residual branch of the gated stream takes ``x ⊙ relu(gate)`` (skip path untouched); logits are averaged.
Settings live in ``loss.multistream`` (see :data:`mmh.methods.thesis.common.LOSS_DEFAULTS`).

The four steps (method ``multistream``):

1. ``step1`` — RGB and depth streams alone (no connections), each with its own CE;
2. ``step2`` — the two-stream net *with* connections (``connections``; ``direction`` depth_to_rgb, or
   rgb_to_depth for the ablation), initialised from step 1, CE on the averaged logits (``step2_loss: fused``) or
   per stream (``streams``) — the teacher and the upper bound;
3. ``step3`` — the hallucination stream: an RGB-input net with streams ``rgb`` and ``hall`` (connections hall ->
   rgb, or rgb -> hall inverted), ``rgb`` = step 2's RGB stream, frozen (eval mode), ``hall`` = step 2's depth
   stream (first conv inflated to the RGB channels). The step-2 net is the frozen teacher (eval mode, real depth).
   Loss ``(1-α) L_GD + α·hall_scale·L_hall``: L_GD (Eq. 3.5, λ, T, ``t_squared``, ``student_temperature``) between
   the student's and teacher's averaged logits (``gd_on: fused`` — the hallucination is trained inside the
   two-stream model, so it gets feedback through the connections) or the hall and depth stream logits
   (``gd_on: hall``); L_hall (Eq. 3.3) on the ``hall_layers`` outputs, reduction ``hall_reduction``;
4. ``step4`` — the RGB + hallucination net fine-tuned end to end with CE, RGB input only (deployed).

Ablations by config: ``connections: false``, ``alpha: 0`` (GD only), ``alpha: 1`` (L_hall only),
``direction: rgb_to_depth``.

Baselines: ``hoffman`` (Hoffman et al.: after step 1, the RGB, depth and hallucination streams trained jointly,
end to end, no connections: CE of each stream and of RGB+hall, plus γ·L_hall towards the depth stream's
features) and ``moddrop`` (Neverova et al.: the two-stream net trained with whole-modality dropout).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ...models import FeatureExtractor, derive_student
from ..base import Batch, LossDict, Stage, StageContext, StageModule, Supervised, cross_entropy_term, freeze
from ..registry import register_method
from .common import (
    LOSS_DEFAULTS,
    StreamsCE,
    build_net,
    copy_stream,
    freeze_parts,
    generalized_distillation,
    hallucination_loss,
    method_cfg,
)

__all__ = [
    "HallucinationStage", "HoffmanStage", "ModDropStage", "build_streams", "multistream_stages", "unit_path",
    "DIRECTIONS",
]

#: direction -> (gate_from, gate_into) in the teacher (rgb, depth) and in the student (rgb, hall).
DIRECTIONS: dict[str, tuple[tuple[str, str], tuple[str, str]]] = {
    "depth_to_rgb": (("depth", "rgb"), ("hall", "rgb")),
    "rgb_to_depth": (("rgb", "depth"), ("rgb", "hall")),
}


def _direction(c: Mapping[str, Any], student: bool) -> tuple[str, str]:
    if c["direction"] not in DIRECTIONS:
        raise ValueError(f"loss.multistream.direction must be one of {sorted(DIRECTIONS)}, got {c['direction']!r}")
    return DIRECTIONS[c["direction"]][int(student)]


def build_streams(ctx: StageContext, role: str, *, streams: Mapping[str, str] | None = None,
                  connections: bool = False, direction: tuple[str, str] = ("depth", "rgb")) -> nn.Module:
    """``cfg.model`` (a multiplier net) on ``modalities.<role>`` with the given streams and connections."""
    extra = {"streams": dict(streams)} if streams is not None else {}
    return build_net(ctx, role, connections=connections, gate_from=direction[0], gate_into=direction[1], **extra)


def unit_path(model: nn.Module, stream: str, layer: str) -> str:
    """Dotted path of the last residual unit of ``stream``'s ``layer`` (its output is the stage's output; the
    multiplier net calls the units one by one, so the stage module itself is never called)."""
    stage = getattr(model.streams[stream], layer, None)
    if not isinstance(stage, nn.Sequential):
        raise KeyError(f"stream {stream!r} has no stage {layer!r} (hall_layers must name layer1..layer4)")
    return f"streams.{stream}.{layer}.{len(stage) - 1}"


def _fill_defaults(cfg: Mapping[str, Any], *names: str) -> None:
    """Put the code defaults of ``loss.<name>`` into a config that lacks them (it was loaded before this package
    registered its defaults), so stage cache keys can name them."""
    if isinstance(cfg, dict) and isinstance(cfg.get("loss"), dict):
        for n in names:
            cfg["loss"].setdefault(n, copy.deepcopy(LOSS_DEFAULTS[n]))


# ------------------------------------------------------------------------------------------------ stage modules
class HallucinationStage(StageModule):
    """Step 3: the ``hall`` stream of ``student`` learns from the frozen two-stream ``teacher``.

    ``student``: RGB-input multiplier net with streams ``rgb`` (frozen, eval mode) and ``hall``; ``teacher``: the
    step-2 net (frozen, eval mode, reads depth). Loss terms: ``loss_gd_hard``, ``loss_gd_soft``, ``loss_hall``
    (each already weighted, see the module docstring).
    """

    frozen = ("teacher",)

    def __init__(self, student: nn.Module, teacher: nn.Module, *, alpha: float = 0.5, lam: float = 0.5,
                 temperature: float = 10.0, t_squared: bool = False, student_temperature: bool = True,
                 hall_layers: tuple[str, ...] = ("layer4",), hall_reduction: str = "mean", hall_scale: float = 1.0,
                 gd_on: str = "fused", teacher_stream: str = "depth") -> None:
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
        if gd_on not in ("fused", "hall"):
            raise ValueError(f"gd_on must be 'fused' or 'hall', got {gd_on!r}")
        if not hall_layers and alpha > 0:
            raise ValueError("hall_layers is empty but alpha > 0 asks for the hallucination loss")
        self.student, self.teacher = student, freeze(teacher)
        self._rgb = freeze_parts(student, ("streams.rgb", "heads.rgb"))
        self.alpha, self.lam, self.temperature = float(alpha), float(lam), float(temperature)
        self.t_squared, self.student_temperature = bool(t_squared), bool(student_temperature)
        self.hall_reduction, self.hall_scale, self.gd_on = hall_reduction, float(hall_scale), gd_on
        self.teacher_stream = teacher_stream
        self.s_paths = [unit_path(student, "hall", layer) for layer in hall_layers]
        self.t_paths = [unit_path(teacher, teacher_stream, layer) for layer in hall_layers]

    def train(self, mode: bool = True) -> HallucinationStage:
        super().train(mode)
        for m in self._rgb:
            m.eval()
        return self

    def forward(self, batch: Batch) -> tuple[Tensor, LossDict]:
        with torch.no_grad(), FeatureExtractor(self.teacher, self.t_paths, detach=True) as t_feats:
            t_fused, t_per = self.teacher.forward_all(batch)
        with FeatureExtractor(self.student, self.s_paths) as s_feats:
            s_fused, s_per = self.student.forward_all(batch)
        if "label" not in batch:
            raise KeyError("batch has no 'label' key (needed by the generalized distillation loss)")
        s_logits, t_logits = (s_fused, t_fused) if self.gd_on == "fused" else (s_per["hall"],
                                                                             t_per[self.teacher_stream])
        losses: LossDict = {}
        if self.alpha < 1.0:
            gd = generalized_distillation(s_logits, t_logits, batch["label"], lam=self.lam,
                                          temperature=self.temperature, t_squared=self.t_squared,
                                          student_temperature=self.student_temperature)
            losses["loss_gd_hard"] = (1.0 - self.alpha) * gd["hard"]
            losses["loss_gd_soft"] = (1.0 - self.alpha) * gd["soft"]
        if self.alpha > 0.0:
            hall = sum(hallucination_loss(s_feats[s], t_feats[t], self.hall_reduction)
                       for s, t in zip(self.s_paths, self.t_paths, strict=True))
            losses["loss_hall"] = self.alpha * self.hall_scale * hall
        return s_fused, losses

    def deployable(self) -> nn.Module:
        return self.student


class HoffmanStage(StageModule):
    """Hoffman et al.'s end-to-end hallucination: ``student`` (streams rgb, hall; RGB input) and the depth stream
    of ``depth_net`` trained jointly: CE(rgb) + CE(hall) + CE(rgb+hall) + CE(depth) + γ·L_hall(hall, depth) (the
    depth features detached in L_hall, so only the hallucination stream chases them)."""

    def __init__(self, student: nn.Module, depth_net: nn.Module, *, gamma: float = 1.0,
                 hall_layers: tuple[str, ...] = ("layer4",), hall_reduction: str = "mean") -> None:
        super().__init__()
        self.student, self.depth_net = student, depth_net
        self.gamma, self.hall_reduction = float(gamma), hall_reduction
        self.s_paths = [unit_path(student, "hall", layer) for layer in hall_layers]
        self.t_paths = [unit_path(depth_net, "depth", layer) for layer in hall_layers]

    def forward(self, batch: Batch) -> tuple[Tensor, LossDict]:
        with FeatureExtractor(self.depth_net, self.t_paths) as t_feats:
            _, t_per = self.depth_net.forward_all(batch)
        with FeatureExtractor(self.student, self.s_paths) as s_feats:
            s_fused, s_per = self.student.forward_all(batch)
        losses = {f"loss_ce/{s}": cross_entropy_term(z, batch, 1.0) for s, z in s_per.items()}
        losses["loss_ce/fused"] = cross_entropy_term(s_fused, batch, 1.0)
        losses["loss_ce/depth"] = cross_entropy_term(t_per["depth"], batch, 1.0)
        losses["loss_hall"] = self.gamma * sum(hallucination_loss(s_feats[s], t_feats[t], self.hall_reduction)
                                               for s, t in zip(self.s_paths, self.t_paths, strict=True))
        return s_fused, losses

    def deployable(self) -> nn.Module:
        return self.student


class ModDropStage(StageModule):
    """ModDrop (Neverova et al.): CE of ``model`` on batches where ``modality`` is zeroed for each sample with
    probability ``p_drop`` (a per-sample Bernoulli mask from torch's global RNG, checkpointed by the trainer)."""

    def __init__(self, model: nn.Module, *, p_drop: float = 0.5, modality: str = "depth") -> None:
        super().__init__()
        if not 0.0 <= p_drop <= 1.0:
            raise ValueError(f"p_drop must lie in [0, 1], got {p_drop}")
        if modality not in model.modalities:
            raise ValueError(f"moddrop modality {modality!r} is not read by the model ({list(model.modalities)})")
        self.model, self.p_drop, self.modality = model, float(p_drop), modality

    def forward(self, batch: Batch) -> tuple[Tensor, LossDict]:
        if self.modality not in batch:
            raise KeyError(f"batch has no {self.modality!r} key (the ModDrop modality)")
        x = batch[self.modality]
        keep = (torch.rand(x.shape[0], device="cpu") >= self.p_drop).to(x.device, x.dtype)
        dropped = {**batch, self.modality: x * keep.view(-1, *([1] * (x.dim() - 1)))}
        logits = self.model(dropped)
        return logits, {"loss_ce": cross_entropy_term(logits, batch, 1.0)}

    def deployable(self) -> nn.Module:
        return self.model


# ------------------------------------------------------------------------------------------------ builders
def _student(ctx: StageContext, c: Mapping[str, Any]) -> nn.Module:
    return build_streams(ctx, "student", streams={"rgb": "rgb", "hall": "rgb"}, connections=bool(c["connections"]),
                         direction=_direction(c, student=True))


def _build_step1(ctx: StageContext) -> StreamsCE:
    return StreamsCE(build_streams(ctx, "teacher", connections=False))


def _build_step2(ctx: StageContext) -> StageModule:
    c = method_cfg(ctx.cfg, "multistream")
    model = build_streams(ctx, "teacher", connections=bool(c["connections"]), direction=_direction(c, False))
    model.load_state_dict(ctx.input("step1").state_dict())
    if c["step2_loss"] == "fused":
        return Supervised(model)
    if c["step2_loss"] == "streams":
        return StreamsCE(model)
    raise ValueError(f"loss.multistream.step2_loss must be 'fused' or 'streams', got {c['step2_loss']!r}")


def _build_step3(ctx: StageContext) -> HallucinationStage:
    c = method_cfg(ctx.cfg, "multistream")
    teacher = ctx.input("step2")
    student = _student(ctx, c)
    copy_stream(student, "rgb", teacher, "rgb")
    copy_stream(student, "hall", teacher, "depth")
    return HallucinationStage(student, teacher, alpha=c["alpha"], lam=c["lam"], temperature=c["temperature"],
                              t_squared=c["t_squared"], student_temperature=c["student_temperature"],
                              hall_layers=tuple(c["hall_layers"]), hall_reduction=c["hall_reduction"],
                              hall_scale=c["hall_scale"], gd_on=c["gd_on"])


def _build_step4(ctx: StageContext) -> Supervised:
    model = ctx.input("step3")
    for p in model.parameters():
        p.requires_grad_(True)
    return Supervised(model)


def _build_hoffman(ctx: StageContext) -> HoffmanStage:
    c, h = method_cfg(ctx.cfg, "multistream"), method_cfg(ctx.cfg, "hoffman")
    step1 = ctx.input("step1")
    student = _student(ctx, {**c, "connections": False})
    copy_stream(student, "rgb", step1, "rgb")
    copy_stream(student, "hall", step1, "depth")
    depth_net = derive_student(step1, ["depth"])  # only the stream that is used, with step 1's weights
    copy_stream(depth_net, "depth", step1, "depth")
    return HoffmanStage(student, depth_net, gamma=h["gamma"], hall_layers=tuple(h["hall_layers"]),
                        hall_reduction=h["hall_reduction"])


def _build_moddrop(ctx: StageContext) -> ModDropStage:
    c, d = method_cfg(ctx.cfg, "multistream"), method_cfg(ctx.cfg, "moddrop")
    model = build_streams(ctx, "teacher", connections=bool(c["connections"]), direction=_direction(c, False))
    model.load_state_dict(ctx.input("step1").state_dict())
    return ModDropStage(model, p_drop=d["p_drop"], modality=d["modality"])


_MS = "loss.multistream"


def multistream_stages() -> list[Stage]:
    """The four steps (names ``step1`` .. ``step4``, sections of the same names for ``stages.<name>``)."""
    return [
        Stage("step1", "multistream/step1", _build_step1, section="step1", depends_on=("modalities.teacher",)),
        Stage("step2", "multistream/step2", _build_step2, inputs=("step1",), section="step2",
              depends_on=(f"{_MS}.connections", f"{_MS}.direction", f"{_MS}.step2_loss")),
        Stage("step3", "multistream/step3", _build_step3, inputs=("step2",), section="step3",
              depends_on=(_MS, "modalities")),
        Stage("step4", "multistream/step4", _build_step4, inputs=("step3",), section="step4",
              depends_on=(_MS, "modalities")),
    ]


@register_method("multistream", "thesis ch. 3: modality distillation with multiplier networks, 4 steps "
                                "(loss.multistream)")
def multistream(cfg: Mapping[str, Any]) -> list[Stage]:
    _fill_defaults(cfg, "multistream")
    return multistream_stages()


@register_method("hoffman", "Hoffman et al.: RGB, depth and hallucination streams trained end to end after step 1")
def hoffman(cfg: Mapping[str, Any]) -> list[Stage]:
    _fill_defaults(cfg, "multistream", "hoffman")
    return [multistream_stages()[0],
            Stage("hoffman", "multistream/hoffman", _build_hoffman, inputs=("step1",), section="hoffman",
                  depends_on=("loss.hoffman", f"{_MS}.direction", "modalities"))]


@register_method("moddrop", "ModDrop: the two-stream net fine-tuned from step 1 with whole-modality dropout")
def moddrop(cfg: Mapping[str, Any]) -> list[Stage]:
    _fill_defaults(cfg, "multistream", "moddrop")
    return [multistream_stages()[0],
            Stage("moddrop", "multistream/moddrop", _build_moddrop, inputs=("step1",), section="moddrop",
                  depends_on=("loss.moddrop", f"{_MS}.connections", f"{_MS}.direction"))]
