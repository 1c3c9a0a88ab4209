"""ADMD — adversarial discriminative modality distillation (thesis ch. 4) and its naive binary baseline.

Recipe ``admd`` (settings ``loss.admd``; model ``small_framewise``: per-frame streams with a 128-d bottleneck):

1. ``streams`` — RGB and depth streams, each with its own CE;
2. ``hallucination`` — the hallucination stream H (RGB input, initialised from the depth stream, first conv
   inflated) against a discriminator D (:class:`mmh.models.FrameDiscriminator`) on [per-frame bottleneck ‖
   one-hot frame index] with C+1 outputs (classes, then "fake"). In ONE forward per batch:

   * D's loss: ``CE(D(real), y) + CE(D(fake.detach()), C)`` — real = the frozen depth stream's bottleneck;
   * H's loss (label flipping): ``CE(D_θ̄(fake), y)`` with D's parameters *detached* (``functional_call``),

   so one optimiser step updates D and H 1:1, each with its own loss only (the losses and the Eq. 4.1 targets:
   :func:`mmh.losses.admd_discriminator_loss`, :func:`mmh.losses.admd_hallucination_loss`,
   :func:`mmh.losses.admd_targets`). ``naive: true`` gives D two outputs
   (real / fake) instead (the binary baseline). ``h_ce`` optionally adds H's own CE.
3. ``fusion`` — late fusion (mean of logits) of the step-1 RGB stream and H, RGB input only (deployed; H keeps
   the depth stream's head, since its features imitate the depth stream's).

The switch signal (:func:`fake_probability`): D's mean probability of "fake" on the depth stream's features of
real — possibly noisy — depth: ≈ 0.5 at equilibrium on clean data, rising as the depth degrades.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from ...config import METHOD_DEFAULTS
from ...data.loader import to_device
from ...losses import admd_discriminator_loss, admd_hallucination_loss, admd_targets
from ...models import FeatureExtractor, FrameDiscriminator
from ...train.stage import Batch, LossDict, StageModule
from ..base import Stage, StageContext, cross_entropy_term, freeze
from ..registry import register_method
from .common import StreamsCE, copy_stream

__all__ = [
    "ADMDStage",
    "AssembleStage",
    "admd_targets",
    "fake_probability",
    "discriminator_from_state",
    "frame_indices",
    "ADMD_DEFAULTS",
]

#: Defaults of ``loss.admd`` (``admd`` and ``admd_naive``): the config schema (written in
#: :data:`mmh.config.METHOD_DEFAULTS`) and :class:`ADMDStage`'s.
ADMD_DEFAULTS: dict[str, Any] = METHOD_DEFAULTS["admd"]


def frame_indices(batch: Batch, b: int, t: int, conditioning: bool) -> Tensor | None:
    """Each frame's position in its clip, 0..T-1 (the thesis's temporal ordering label y_t), flattened to (B*T,)
    in the frames-into-batch order; None without ``conditioning``. ``batch["frame_index"]`` (B, T) holds the frames'
    numbers in their video (real datasets: the source frame a sampled frame came from; the built-in clips: 0..T-1):
    the position is the rank of that number within its clip (ties, a short video's repeated frames, in clip order)."""
    if not conditioning:
        return None
    if "frame_index" not in batch:
        raise KeyError(
            "batch has no 'frame_index' key (needed by the frame-conditioned discriminator; set "
            "loss.admd.frame_conditioning=false for data without it)"
        )
    fi = batch["frame_index"]
    if tuple(fi.shape) != (b, t):
        raise ValueError(f"batch['frame_index'] must be (B, T) = ({b}, {t}), got {tuple(fi.shape)}")
    return torch.argsort(torch.argsort(fi, dim=1, stable=True), dim=1, stable=True).reshape(-1)


class ADMDStage(StageModule):
    """Step 2 of ADMD (see the module docstring). ``depth_net``: frozen streams net; ``hall``: net with one stream
    ``hall``; ``disc``: FrameDiscriminator (``num_classes`` = 1 for the naive baseline). Terms ``loss_d``,
    ``loss_h`` (and ``loss_ce`` if ``h_ce``)."""

    frozen = ("depth_net",)

    def __init__(
        self,
        hall: nn.Module,
        depth_net: nn.Module,
        disc: FrameDiscriminator,
        *,
        naive: bool = ADMD_DEFAULTS["naive"],
        d_weight: float = ADMD_DEFAULTS["d_weight"],
        h_weight: float = ADMD_DEFAULTS["h_weight"],
        h_ce: float = ADMD_DEFAULTS["h_ce"],
        depth_stream: str = "depth",
        frame_conditioning: bool = ADMD_DEFAULTS["frame_conditioning"],
    ) -> None:
        super().__init__()
        self.hall, self.depth_net, self.discriminator = hall, freeze(depth_net), disc
        self.naive, self.d_weight, self.h_weight, self.h_ce = bool(naive), float(d_weight), float(h_weight), float(h_ce)
        self.frame_conditioning = bool(frame_conditioning)
        if (disc.num_frames > 0) != self.frame_conditioning:
            raise ValueError(
                f"discriminator num_frames={disc.num_frames} disagrees with frame_conditioning={frame_conditioning}"
            )
        self.real_path = depth_net.feature_paths[f"bottleneck.{depth_stream}"]
        self.fake_path = hall.feature_paths["bottleneck.hall"]
        self.num_classes = disc.num_classes if not naive else None

    def forward(self, batch: Batch) -> tuple[Tensor, LossDict]:
        if "label" not in batch:
            raise KeyError("batch has no 'label' key (needed by the ADMD discriminator targets)")
        with torch.no_grad(), FeatureExtractor(self.depth_net, [self.real_path], detach=True) as rf:
            self.depth_net(batch)
        with FeatureExtractor(self.hall, [self.fake_path]) as ff:
            logits = self.hall(batch)
        real, fake = rf[self.real_path].flatten(1), ff[self.fake_path].flatten(1)
        b = batch["label"].shape[0]
        t = real.shape[0] // b
        y = batch["label"].repeat_interleave(t)
        fi = frame_indices(batch, b, t, self.frame_conditioning)
        y_real, y_fake, y_h = admd_targets(y, self.discriminator.num_classes, self.naive)
        d_loss = admd_discriminator_loss(
            self.discriminator(real, fi), self.discriminator(fake.detach(), fi), y_real, y_fake
        )
        frozen_d = {k: v.detach() for k, v in self.discriminator.named_parameters()}
        h_loss = admd_hallucination_loss(functional_call(self.discriminator, frozen_d, (fake, fi)), y_h)
        losses = {"loss_d": self.d_weight * d_loss, "loss_h": self.h_weight * h_loss}
        if self.h_ce:
            losses["loss_ce"] = cross_entropy_term(logits, batch, self.h_ce)
        return logits, losses

    def deployable(self) -> nn.Module:
        return self.hall

    def artifacts(self) -> dict[str, dict[str, Tensor]]:
        """``discriminator``: D's weights (rebuild with :func:`discriminator_from_state`, ``prefix=""``)."""
        return {"discriminator": {k: v.detach().cpu() for k, v in self.discriminator.state_dict().items()}}


class AssembleStage(StageModule):
    """A non-training stage whose network was assembled by its builder (e.g. RGB + hallucination late fusion)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: Batch) -> tuple[Tensor, LossDict]:
        raise RuntimeError("an assembling stage is not trained (Stage.trains is False)")

    def deployable(self) -> nn.Module:
        return self.model


def _build_streams(ctx: StageContext) -> StreamsCE:
    return StreamsCE(ctx.build_model("teacher"))


def _build_hall(ctx: StageContext, naive: bool) -> ADMDStage:
    c = {**ctx.loss_cfg("admd"), "naive": naive}
    depth_net = ctx.input("streams")
    hall = ctx.build_model("student", streams={"hall": ctx.modalities("student")[0]})
    copy_stream(hall, "hall", depth_net, "depth")
    dim = hall.streams["hall"].bottleneck.out_channels
    frames = int(ctx.model_kwargs.get("num_frames") or 1) if c["frame_conditioning"] else 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(ctx.cfg["seed"]) + 1)
        disc = FrameDiscriminator(
            dim, 1 if c["naive"] else ctx.num_classes, frames, tuple(c["hidden"]), tuple(c["residual"])
        )
    return ADMDStage(
        hall,
        depth_net,
        disc,
        naive=c["naive"],
        d_weight=c["d_weight"],
        h_weight=c["h_weight"],
        h_ce=c["h_ce"],
        frame_conditioning=bool(c["frame_conditioning"]),
    )


def _build_fusion(ctx: StageContext) -> AssembleStage:
    rgb = ctx.modalities("student")[0]
    fused = ctx.build_model("student", streams={"rgb": rgb, "hall": rgb})
    copy_stream(fused, "rgb", ctx.input("streams"), "rgb")
    copy_stream(fused, "hall", ctx.input("hallucination"), "hall")
    return AssembleStage(fused)


def admd_stages(naive: bool = False) -> list[Stage]:
    """streams -> hallucination (adversarial; ``naive``: binary D) -> fusion (assembled, not trained)."""
    kind = "admd_naive" if naive else "admd"

    def build_hall(ctx: StageContext) -> ADMDStage:
        return _build_hall(ctx, naive)

    return [
        Stage("streams", "admd/streams", _build_streams, section="streams", depends_on=("modalities.teacher",)),
        Stage(
            "hallucination",
            f"{kind}/hallucination",
            build_hall,
            inputs=("streams",),
            section="hallucination",
            depends_on=("loss.admd", "modalities"),
            artifacts=("discriminator",),
        ),
        Stage(
            "fusion",
            f"{kind}/fusion",
            _build_fusion,
            inputs=("streams", "hallucination"),
            trains=False,
            depends_on=("modalities",),
        ),
    ]


@register_method(
    "admd",
    "thesis ch. 4: adversarial hallucination with a (C+1)-way frame-aware discriminator "
    "(loss.admd); deploys RGB + hallucination late fusion",
    defaults={"admd": ADMD_DEFAULTS},
)
def admd(cfg: Mapping[str, Any]) -> list[Stage]:
    return admd_stages(bool(cfg["loss"]["admd"]["naive"]))


@register_method(
    "admd_naive",
    "ADMD baseline: the discriminator solves only real/fake (binary adversarial)",
    defaults={"admd": ADMD_DEFAULTS},
)
def admd_naive(cfg: Mapping[str, Any]) -> list[Stage]:
    return admd_stages(naive=True)


def discriminator_from_state(
    state: Mapping[str, Tensor],
    feature_dim: int,
    prefix: str = "discriminator.",
    residual: Iterable[int] | None = None,
) -> FrameDiscriminator:
    """Rebuild the discriminator saved in an ADMD stage checkpoint (``checkpoint["stage"]``) or published as the
    stage's ``discriminator`` artifact (``prefix=""``), sizes from the weights: hidden widths, ``num_classes``
    (outputs − 1) and ``num_frames`` (input − ``feature_dim``); the residual layers from the state's
    ``residual_layout`` (:class:`mmh.models.FrameDiscriminator` stores them).

    ``residual`` (``loss.admd.residual`` of the run, optional): checked against the stored layout, a ValueError when
    they differ; a state without a stored layout (written before it was stored) needs it, or is a ValueError."""
    ws = [(k, v) for k, v in state.items() if k.startswith(prefix + "net.") and k.endswith(".weight")]
    if not ws:
        raise KeyError(f"no discriminator weights under {prefix!r} in the checkpoint state")
    ws.sort(key=lambda kv: int(kv[0][len(prefix) + 4 :].split(".")[0]))
    want = None if residual is None else sorted(set(residual))
    stored = state.get(prefix + "residual_layout")
    if stored is not None:
        layout = [int(i) for i in stored.reshape(-1).tolist()]
        if want is not None and want != layout:
            raise ValueError(
                f"the discriminator state {prefix + 'residual_layout'!r} has residual layers {layout}, but "
                f"residual={want} was given (loss.admd.residual): the state was trained with {layout}"
            )
    elif want is None:
        raise ValueError(
            f"the discriminator state has no {prefix + 'residual_layout'!r} (written before the residual layout was "
            f"stored): pass residual= (loss.admd.residual of the run that trained it)"
        )
    else:
        layout = want
    d = FrameDiscriminator(
        feature_dim,
        int(ws[-1][1].shape[0]) - 1,
        int(ws[0][1].shape[1]) - feature_dim,
        [int(v.shape[0]) for _, v in ws[:-1]],
        tuple(layout),
    )
    sd = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    sd["residual_layout"] = torch.tensor(layout, dtype=torch.int64)  # the stored one, or the one given for an old state
    d.load_state_dict(sd)
    return d.eval()


@torch.no_grad()
def fake_probability(
    depth_net: nn.Module,
    disc: FrameDiscriminator,
    batches: Iterable[Batch],
    *,
    depth_stream: str = "depth",
    device: torch.device | str = "cpu",
) -> float:
    """Mean probability D assigns to "fake" for the depth stream's per-frame bottleneck features on ``batches``
    (apply the noise to the batches first). The switch signal of thesis Fig. 4.5."""
    path = depth_net.feature_paths[f"bottleneck.{depth_stream}"]
    depth_net.eval().to(device)
    disc.eval().to(device)
    total, n = 0.0, 0
    for batch in batches:
        batch = to_device(batch, device)
        with FeatureExtractor(depth_net, [path], detach=True) as feats:
            depth_net(batch)
        f = feats[path].flatten(1)
        b = batch["label"].shape[0]
        fi = frame_indices(batch, b, f.shape[0] // b, disc.num_frames > 0)
        p = F.softmax(disc(f, fi), dim=1)[:, disc.fake_index]
        total, n = total + float(p.sum()), n + p.numel()
    if n == 0:
        raise ValueError("fake_probability: no batches")
    return total / n
