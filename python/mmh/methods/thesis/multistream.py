"""Modality distillation with multiple-stream networks (thesis ch. 3) and the Hoffman / ModDrop baselines.

Networks are cross-stream multiplier nets (``small_multiplier`` on the built-in data, ``multiplier_resnet`` for
the thesis's ResNet-50 setting): streams run in lockstep and, before the 2nd residual unit of each stage, the
residual branch of the gated stream takes ``x ⊙ relu(gate)`` (skip path untouched); logits are averaged.
Settings live in ``loss.multistream`` (defaults: :data:`MULTISTREAM_DEFAULTS`).

The four steps (method ``multistream``):

1. ``step1`` — RGB and depth streams alone (no connections), each with its own CE;
2. ``step2`` — the two-stream net *with* connections (``connections``; ``direction`` depth_to_rgb, or
   rgb_to_depth for the ablation), initialised from step 1, CE on the averaged logits (``step2_loss: fused``) or
   per stream (``streams``) — the teacher and the upper bound;
3. ``step3`` — the hallucination stream, loss Eq. 3.7 ``(1-α) L_GD + α·hall_scale·L_hall``
   (:func:`mmh.losses.modality_distillation_loss`: L_GD Eq. 3.5 with λ, T, ``t_squared``,
   ``student_temperature``; L_hall Eq. 3.3 on the ``hall_layers`` outputs, reduction ``hall_reduction``, default
   the squared L2 norm per sample averaged over the batch). ``teacher`` chooses the reading:

   * ``depth_stream`` (default, the thesis's text around Eq. 3.7): the teacher is step 2's depth stream — frozen,
     eval mode, fed depth; the hallucination stream takes RGB, is initialised from the depth stream (first conv
     inflated to the RGB channels) and receives the cross-stream connections *from the depth stream*; GD compares
     the hall logits with the depth logits' soft targets, L_hall the two streams' maps. The stage hands on an
     RGB-input net: step 2's RGB stream + the trained hallucination stream, connected hall -> RGB as in step 4
     (at test no depth exists, so the hallucination stream runs without the depth connections it trained with);
   * ``fused`` (the earlier reading): an RGB-input net with streams ``rgb`` (= step 2's, frozen) and ``hall``
     (connections hall -> rgb, or rgb -> hall inverted) learns from the whole step-2 net (real depth): L_GD between
     the averaged logits (``gd_on: fused``) or the hall and depth stream logits (``gd_on: hall``);
4. ``step4`` — the RGB + hallucination net fine-tuned end to end with CE, RGB input only (deployed).

Ablations by config: ``connections: false`` (steps 2 to 4 without connections), ``step3_connections: false``
(step 2 connected, steps 3 and 4 without: Table 3.2 row #14, "starting from the same point" as row #13; the default
``null`` follows ``connections``), ``alpha: 0`` (GD only), ``alpha: 1`` (L_hall only),
``direction: rgb_to_depth`` (with the depth-stream teacher: no connection into the hallucination stream in step 3,
RGB gates it in step 4), ``teacher: fused``.

Baselines: ``hoffman`` (Hoffman et al.: after step 1, the RGB, depth and hallucination streams trained jointly,
end to end, no connections: CE of each stream and of RGB+hall, plus γ·L_hall towards the depth stream's
features) and ``moddrop`` (Neverova et al.: the two-stream net fine-tuned with light input dropout on every
modality and whole-modality dropout, see :class:`ModDropStage`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ...config import METHOD_DEFAULTS
from ...losses import HALL_REDUCTIONS, hallucination_loss, modality_distillation_loss
from ...models import FeatureExtractor, derive_student
from ...train.stage import Batch, LossDict, StageModule
from ..base import Stage, StageContext, Supervised, cross_entropy_term, freeze
from ..registry import register_method
from .common import StreamsCE, copy_stream, freeze_parts

__all__ = [
    "HallucinationStage",
    "HoffmanStage",
    "ModDropStage",
    "build_streams",
    "multistream_stages",
    "step3_connections",
    "unit_path",
    "DIRECTIONS",
    "TEACHER_MODES",
    "MULTISTREAM_DEFAULTS",
    "HOFFMAN_DEFAULTS",
    "MODDROP_DEFAULTS",
]

#: Defaults of ``loss.multistream`` (the four steps; hoffman and moddrop read its connections and direction), of
#: ``loss.hoffman`` and of ``loss.moddrop``: the config schema, written in :data:`mmh.config.METHOD_DEFAULTS`.
MULTISTREAM_DEFAULTS: dict[str, Any] = METHOD_DEFAULTS["multistream"]
_MSD = MULTISTREAM_DEFAULTS
HOFFMAN_DEFAULTS: dict[str, Any] = METHOD_DEFAULTS["hoffman"]
MODDROP_DEFAULTS: dict[str, Any] = METHOD_DEFAULTS["moddrop"]

#: Readings of step 3 (``loss.multistream.teacher``), see :class:`HallucinationStage`.
TEACHER_MODES = ("depth_stream", "fused")

#: direction -> (gate_from, gate_into) in the teacher (rgb, depth) and in the student (rgb, hall).
DIRECTIONS: dict[str, tuple[tuple[str, str], tuple[str, str]]] = {
    "depth_to_rgb": (("depth", "rgb"), ("hall", "rgb")),
    "rgb_to_depth": (("rgb", "depth"), ("rgb", "hall")),
}


def _direction(c: Mapping[str, Any], student: bool) -> tuple[str, str]:
    if c["direction"] not in DIRECTIONS:
        raise ValueError(f"loss.multistream.direction must be one of {sorted(DIRECTIONS)}, got {c['direction']!r}")
    return DIRECTIONS[c["direction"]][int(student)]


def build_streams(
    ctx: StageContext,
    role: str,
    *,
    streams: Mapping[str, str] | None = None,
    connections: bool = False,
    direction: tuple[str, str] = ("depth", "rgb"),
) -> nn.Module:
    """``cfg.model`` (a multiplier net) on ``modalities.<role>`` with the given streams and connections."""
    extra = {"streams": dict(streams)} if streams is not None else {}
    return ctx.build_model(role, connections=connections, gate_from=direction[0], gate_into=direction[1], **extra)


def unit_path(model: nn.Module, stream: str, layer: str) -> str:
    """Dotted path of the last residual unit of ``stream``'s ``layer`` (its output is the stage's output; the
    multiplier net calls the units one by one, so the stage module itself is never called)."""
    stage = getattr(model.streams[stream], layer, None)
    if not isinstance(stage, nn.Sequential):
        raise KeyError(f"stream {stream!r} has no stage {layer!r} (hall_layers must name layer1..layer4)")
    return f"streams.{stream}.{layer}.{len(stage) - 1}"


def _check_step3(
    alpha: float, gd_on: str, teacher_mode: str, hall_layers: tuple[str, ...], hall_reduction: str
) -> None:
    """ValueError naming the step-3 setting that is out of range."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    if gd_on not in ("fused", "hall"):
        raise ValueError(f"gd_on must be 'fused' or 'hall', got {gd_on!r}")
    if teacher_mode not in TEACHER_MODES:
        raise ValueError(f"loss.multistream.teacher must be one of {TEACHER_MODES}, got {teacher_mode!r}")
    if not hall_layers and alpha > 0:
        raise ValueError("hall_layers is empty but alpha > 0 asks for the hallucination loss")
    if hall_reduction not in HALL_REDUCTIONS:
        raise ValueError(f"hall_reduction must be one of {HALL_REDUCTIONS}, got {hall_reduction!r}")


# ------------------------------------------------------------------------------------------------ stage modules
class HallucinationStage(StageModule):
    """Step 3: the ``hall`` stream learns from a frozen teacher with :func:`mmh.losses.modality_distillation_loss`
    (Eq. 3.7: ``(1-α) L_GD + α L_hall``; terms ``loss_gd_hard``, ``loss_gd_soft``, ``loss_hall``, each weighted).

    Two readings (``teacher_mode``):

    * ``"depth_stream"`` (default, the thesis's text): ``student`` has streams ``depth`` (step 2's depth stream,
      frozen, eval mode, reads depth) and ``hall`` (reads RGB), with the connections from the depth stream into the
      hallucination stream. The teacher is the depth stream itself: L_GD compares the hall logits with the depth
      logits' soft targets, L_hall the hall and depth stream maps. ``teacher`` is None. ``deploy``: the RGB-input
      net (streams ``rgb`` — step 2's, frozen —, ``hall``) that this stage hands on; :meth:`deployable` copies the
      trained hall stream into it.
    * ``"fused"`` (the earlier reading): ``student`` has streams ``rgb`` (frozen) and ``hall`` (RGB input,
      connections hall -> RGB), the teacher is the whole step-2 net (real depth); L_GD on the averaged logits
      (``gd_on: fused``) or the hall and depth stream logits (``gd_on: hall``). ``deploy`` is None (the student is
      deployed).
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None,
        *,
        alpha: float = _MSD["alpha"],
        lam: float = _MSD["lam"],
        temperature: float = _MSD["temperature"],
        t_squared: bool = _MSD["t_squared"],
        student_temperature: bool = _MSD["student_temperature"],
        hall_layers: tuple[str, ...] = tuple(_MSD["hall_layers"]),
        hall_reduction: str = _MSD["hall_reduction"],
        hall_scale: float = _MSD["hall_scale"],
        gd_on: str = _MSD["gd_on"],
        teacher_stream: str = "depth",
        teacher_mode: str = _MSD["teacher"],
        deploy: nn.Module | None = None,
    ) -> None:
        super().__init__()
        _check_step3(alpha, gd_on, teacher_mode, hall_layers, hall_reduction)
        self.teacher_mode = teacher_mode
        self.student = student
        if teacher_mode == "depth_stream":
            if teacher is not None:
                raise ValueError(
                    "teacher_mode 'depth_stream': the teacher is the student's frozen depth stream (pass teacher=None)"
                )
            if deploy is None:
                raise ValueError("teacher_mode 'depth_stream' needs the deploy net (streams rgb, hall)")
            self._frozen_parts = freeze_parts(student, ("streams.depth", "heads.depth"))
            self.deploy = deploy
            freeze(deploy)
            self.frozen = ("deploy",)
            t_net, t_stream = student, "depth"
        else:
            if teacher is None:
                raise ValueError("teacher_mode 'fused' needs the step-2 teacher net")
            self.teacher = freeze(teacher)
            self.frozen = ("teacher",)
            self._frozen_parts = freeze_parts(student, ("streams.rgb", "heads.rgb"))
            t_net, t_stream = teacher, teacher_stream
        self.alpha, self.lam, self.temperature = float(alpha), float(lam), float(temperature)
        self.t_squared, self.student_temperature = bool(t_squared), bool(student_temperature)
        self.hall_reduction, self.hall_scale, self.gd_on = hall_reduction, float(hall_scale), gd_on
        self.teacher_stream = teacher_stream
        self.s_paths = [unit_path(student, "hall", layer) for layer in hall_layers]
        self.t_paths = [unit_path(t_net, t_stream, layer) for layer in hall_layers]

    def train(self, mode: bool = True) -> HallucinationStage:
        super().train(mode)
        for m in self._frozen_parts:
            m.eval()
        if not mode and self.teacher_mode == "depth_stream":
            copy_stream(self.deploy, "hall", self.student, "hall")  # evaluation sees the current hall stream
        return self

    def forward(self, batch: Batch) -> tuple[Tensor, LossDict]:
        if "label" not in batch:
            raise KeyError("batch has no 'label' key (needed by the generalized distillation loss)")
        if self.teacher_mode == "depth_stream":
            with FeatureExtractor(self.student, self.s_paths + self.t_paths) as feats:
                _, per = self.student.forward_all(batch)
            s_logits, t_logits, out = per["hall"], per["depth"].detach(), per["hall"]
            s_maps = [feats[p] for p in self.s_paths]
            t_maps = [feats[p].detach() for p in self.t_paths]
        else:
            with torch.no_grad(), FeatureExtractor(self.teacher, self.t_paths, detach=True) as t_feats:
                t_fused, t_per = self.teacher.forward_all(batch)
            with FeatureExtractor(self.student, self.s_paths) as s_feats:
                s_fused, s_per = self.student.forward_all(batch)
            s_logits, t_logits = (
                (s_fused, t_fused) if self.gd_on == "fused" else (s_per["hall"], t_per[self.teacher_stream])
            )
            out = s_fused
            s_maps, t_maps = [s_feats[p] for p in self.s_paths], [t_feats[p] for p in self.t_paths]
        losses = modality_distillation_loss(
            s_logits,
            t_logits,
            batch["label"],
            s_maps,
            t_maps,
            alpha=self.alpha,
            lam=self.lam,
            temperature=self.temperature,
            t_squared=self.t_squared,
            student_temperature=self.student_temperature,
            hall_reduction=self.hall_reduction,
            hall_scale=self.hall_scale,
        )
        return out, losses

    def deployable(self) -> nn.Module:
        if self.teacher_mode == "fused":
            return self.student
        copy_stream(self.deploy, "hall", self.student, "hall")
        return self.deploy

    def predict(self, batch: Batch) -> Tensor:
        if self.teacher_mode == "fused":
            return self.student(batch)
        return (self.deployable() if self.training else self.deploy)(batch)  # train(False) synchronised it


class HoffmanStage(StageModule):
    """Hoffman et al.'s end-to-end hallucination: ``student`` (streams rgb, hall; RGB input) and the depth stream
    of ``depth_net`` trained jointly: CE(rgb) + CE(hall) + CE(rgb+hall) + CE(depth) + γ·L_hall(hall, depth) (the
    depth features detached in L_hall, so only the hallucination stream chases them)."""

    def __init__(
        self,
        student: nn.Module,
        depth_net: nn.Module,
        *,
        gamma: float = HOFFMAN_DEFAULTS["gamma"],
        hall_layers: tuple[str, ...] = tuple(HOFFMAN_DEFAULTS["hall_layers"]),
        hall_reduction: str = HOFFMAN_DEFAULTS["hall_reduction"],
    ) -> None:
        super().__init__()
        if hall_reduction not in HALL_REDUCTIONS:
            raise ValueError(f"hall_reduction must be one of {HALL_REDUCTIONS}, got {hall_reduction!r}")
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
        losses["loss_hall"] = self.gamma * sum(
            hallucination_loss(s_feats[s], t_feats[t], self.hall_reduction)
            for s, t in zip(self.s_paths, self.t_paths, strict=True)
        )
        return s_fused, losses

    def deployable(self) -> nn.Module:
        return self.student


class ModDropStage(StageModule):
    """ModDrop (Neverova et al.; thesis ch. 4: "a light dropout at the input layers, both on the images and on the
    whole modalities"): CE of ``model`` on batches where

    * every input element of every modality is dropped with probability ``p_input`` (inverted dropout, survivors
      scaled by 1/(1 − p_input)), and
    * each modality in ``modality`` (a name or a list) is zeroed for each sample with probability ``p_drop``
      (per-sample, per-modality Bernoulli masks).

    Randomness from torch's global RNG (checkpointed by the trainer). Evaluate with blank depth (σ² "void" of the
    noise sweep) and with the RGB stream's predictions only.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        p_drop: float = MODDROP_DEFAULTS["p_drop"],
        modality: str | list[str] = MODDROP_DEFAULTS["modality"],
        p_input: float = MODDROP_DEFAULTS["p_input"],
    ) -> None:
        super().__init__()
        for name, p in (("p_drop", p_drop), ("p_input", p_input)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {p}")
        if p_input == 1.0:
            raise ValueError("p_input = 1 would drop every input element")
        mods = [modality] if isinstance(modality, str) else list(modality)
        bad = [m for m in mods if m not in model.modalities]
        if bad or not mods:
            raise ValueError(f"moddrop modality {bad or mods!r} is not read by the model ({list(model.modalities)})")
        self.model, self.p_drop, self.p_input, self.dropped = model, float(p_drop), float(p_input), mods

    def drop(self, batch: Batch) -> dict[str, Tensor]:
        """The batch with input dropout on every modality and whole-modality dropout on ``modality``."""
        out = dict(batch)
        for m in self.model.modalities:
            if m not in batch:
                raise KeyError(f"batch has no {m!r} key (a modality of the ModDrop model)")
            x = batch[m]
            if self.p_input > 0:
                x = torch.nn.functional.dropout(x, self.p_input, training=True)
            if m in self.dropped:
                keep = (torch.rand(x.shape[0], device="cpu") >= self.p_drop).to(x.device, x.dtype, non_blocking=True)
                x = x * keep.view(-1, *([1] * (x.dim() - 1)))
            out[m] = x
        return out

    def forward(self, batch: Batch) -> tuple[Tensor, LossDict]:
        logits = self.model(self.drop(batch))
        return logits, {"loss_ce": cross_entropy_term(logits, batch, 1.0)}

    def deployable(self) -> nn.Module:
        return self.model


# ------------------------------------------------------------------------------------------------ builders
def step3_connections(c: Mapping[str, Any]) -> bool:
    """Whether steps 3 and 4 use the cross-stream connections: ``loss.multistream.step3_connections``, or
    ``connections`` when that is null (step 2 always follows ``connections``)."""
    if not isinstance(c["connections"], bool):
        raise TypeError(f"loss.multistream.connections must be true or false, got {c['connections']!r}")
    s3 = c.get("step3_connections")
    if s3 is not None and not isinstance(s3, bool):
        raise TypeError(f"loss.multistream.step3_connections must be true, false or null, got {s3!r}")
    return bool(c["connections"] if s3 is None else s3)


def _student(ctx: StageContext, c: Mapping[str, Any]) -> nn.Module:
    return build_streams(
        ctx,
        "student",
        streams={"rgb": "rgb", "hall": "rgb"},
        connections=step3_connections(c),
        direction=_direction(c, student=True),
    )


def _build_step1(ctx: StageContext) -> StreamsCE:
    return StreamsCE(build_streams(ctx, "teacher", connections=False))


def _build_step2(ctx: StageContext) -> StageModule:
    c = ctx.loss_cfg("multistream")
    model = build_streams(ctx, "teacher", connections=bool(c["connections"]), direction=_direction(c, False))
    model.load_state_dict(ctx.input("step1").state_dict())
    if c["step2_loss"] == "fused":
        return Supervised(model)
    if c["step2_loss"] == "streams":
        return StreamsCE(model)
    raise ValueError(f"loss.multistream.step2_loss must be 'fused' or 'streams', got {c['step2_loss']!r}")


def _build_step3(ctx: StageContext) -> HallucinationStage:
    c = ctx.loss_cfg("multistream")
    step2 = ctx.input("step2")
    kw = {
        "alpha": c["alpha"],
        "lam": c["lam"],
        "temperature": c["temperature"],
        "t_squared": c["t_squared"],
        "student_temperature": c["student_temperature"],
        "hall_layers": tuple(c["hall_layers"]),
        "hall_reduction": c["hall_reduction"],
        "hall_scale": c["hall_scale"],
        "gd_on": c["gd_on"],
        "teacher_mode": c["teacher"],
    }
    if c["teacher"] == "fused":
        student = _student(ctx, c)
        copy_stream(student, "rgb", step2, "rgb")
        copy_stream(student, "hall", step2, "depth")
        return HallucinationStage(student, step2, **kw)
    if c["teacher"] != "depth_stream":
        raise ValueError(f"loss.multistream.teacher must be one of {TEACHER_MODES}, got {c['teacher']!r}")
    # the depth stream (frozen, reads depth) sends its connections into the hallucination stream (reads RGB);
    # with the inverted direction the depth stream sends none, so the hallucination stream trains unconnected
    connect = step3_connections(c) and c["direction"] == "depth_to_rgb"
    _direction(c, student=True)
    net = ctx.build_model(
        "teacher", streams={"depth": "depth", "hall": "rgb"}, connections=connect, gate_from="depth", gate_into="hall"
    )
    copy_stream(net, "depth", step2, "depth")
    copy_stream(net, "hall", step2, "depth")
    deploy = _student(ctx, c)  # RGB input: step 2's RGB stream + the hallucination stream, connections as step 4
    copy_stream(deploy, "rgb", step2, "rgb")
    copy_stream(deploy, "hall", net, "hall")
    return HallucinationStage(net, None, deploy=deploy, **kw)


def _build_step4(ctx: StageContext) -> Supervised:
    model = ctx.input("step3")
    for p in model.parameters():
        p.requires_grad_(True)
    return Supervised(model)


def _build_hoffman(ctx: StageContext) -> HoffmanStage:
    c, h = ctx.loss_cfg("multistream"), ctx.loss_cfg("hoffman")
    step1 = ctx.input("step1")
    student = _student(ctx, {**c, "connections": False, "step3_connections": False})
    copy_stream(student, "rgb", step1, "rgb")
    copy_stream(student, "hall", step1, "depth")
    depth_net = derive_student(step1, ["depth"])  # only the stream that is used, with step 1's weights
    copy_stream(depth_net, "depth", step1, "depth")
    return HoffmanStage(
        student, depth_net, gamma=h["gamma"], hall_layers=tuple(h["hall_layers"]), hall_reduction=h["hall_reduction"]
    )


def _build_moddrop(ctx: StageContext) -> ModDropStage:
    c, d = ctx.loss_cfg("multistream"), ctx.loss_cfg("moddrop")
    model = build_streams(ctx, "teacher", connections=bool(c["connections"]), direction=_direction(c, False))
    model.load_state_dict(ctx.input("step1").state_dict())
    return ModDropStage(model, p_drop=d["p_drop"], modality=d["modality"], p_input=d["p_input"])


_MS = "loss.multistream"


def multistream_stages() -> list[Stage]:
    """The four steps (names ``step1`` .. ``step4``, sections of the same names for ``stages.<name>``)."""
    return [
        Stage("step1", "multistream/step1", _build_step1, section="step1", depends_on=("modalities.teacher",)),
        Stage(
            "step2",
            "multistream/step2",
            _build_step2,
            inputs=("step1",),
            section="step2",
            depends_on=(f"{_MS}.connections", f"{_MS}.direction", f"{_MS}.step2_loss"),
        ),
        Stage(
            "step3",
            "multistream/step3",
            _build_step3,
            inputs=("step2",),
            section="step3",
            depends_on=(_MS, "modalities"),
        ),
        Stage(
            "step4",
            "multistream/step4",
            _build_step4,
            inputs=("step3",),
            section="step4",
            depends_on=(_MS, "modalities"),
        ),
    ]


@register_method(
    "multistream",
    "thesis ch. 3: modality distillation with multiplier networks, 4 steps (loss.multistream)",
    defaults={"multistream": MULTISTREAM_DEFAULTS},
)
def multistream(cfg: Mapping[str, Any]) -> list[Stage]:
    return multistream_stages()


@register_method(
    "hoffman",
    "Hoffman et al.: RGB, depth and hallucination streams trained end to end after step 1",
    defaults={"multistream": MULTISTREAM_DEFAULTS, "hoffman": HOFFMAN_DEFAULTS},
)
def hoffman(cfg: Mapping[str, Any]) -> list[Stage]:
    return [
        multistream_stages()[0],
        Stage(
            "hoffman",
            "multistream/hoffman",
            _build_hoffman,
            inputs=("step1",),
            section="hoffman",
            depends_on=("loss.hoffman", f"{_MS}.direction", "modalities"),
        ),
    ]


@register_method(
    "moddrop",
    "ModDrop: the two-stream net fine-tuned from step 1 with whole-modality dropout",
    defaults={"multistream": MULTISTREAM_DEFAULTS, "moddrop": MODDROP_DEFAULTS},
)
def moddrop(cfg: Mapping[str, Any]) -> list[Stage]:
    return [
        multistream_stages()[0],
        Stage(
            "moddrop",
            "multistream/moddrop",
            _build_moddrop,
            inputs=("step1",),
            section="moddrop",
            depends_on=("loss.moddrop", f"{_MS}.connections", f"{_MS}.direction"),
        ),
    ]
