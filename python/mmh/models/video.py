"""Video backbones: ``r2plus1d_18`` (torchvision, random init), ``r2plus1d_18_streams`` (one R(2+1)D-18 per
modality, logits averaged: the thesis's ch. 5 ensemble) and ``resnet50_temporal`` (a per-frame ResNet-50 with
identity-initialised 3x1x1 temporal convolutions, logits averaged over frames).

Inputs are clips (B, T, C, H, W) (the mmh data layout; ``layout="BCTHW"`` accepts torchvision's (B, C, T, H, W));
a 4-D image is a one-frame clip. Several modalities are fused early: their channels are concatenated, so a student
derived without a modality has a narrower first convolution.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torchvision.models.video import r2plus1d_18 as tv_r2plus1d_18

from .base import ZooModel
from .fusion import LateFusionNet, resolve_streams
from .inputs import as_clip, check_layout, check_num_frames, image_specs, resolve_in_channels
from .registry import register_model
from .resnet import torchvision_stream


class TimeMean(nn.Module):
    """Average over time: (B, C, T, H, W) -> (B, C, H, W), or frames in the batch (B*T, C, H, W) -> (B, C, H, W)."""

    def forward(self, x: Tensor, num_frames: int | None = None) -> Tensor:
        if x.ndim == 5:
            return x.mean(2)
        if num_frames is None or x.shape[0] % num_frames:
            raise ValueError(f"TimeMean: cannot split a batch of {x.shape[0]} frames into clips of {num_frames}")
        return x.reshape(x.shape[0] // num_frames, num_frames, *x.shape[1:]).mean(1)


class _ClipModel(ZooModel):
    """Shared input handling: modalities concatenated along channels into one (B, T, C, H, W) clip."""

    def __init__(self, modalities: tuple[str, ...], in_channels: Mapping[str, int] | None, layout: str) -> None:
        super().__init__(modalities)
        check_layout(layout)
        self.channels = resolve_in_channels(modalities, in_channels)
        self.layout = layout
        self.time_pool = TimeMean()

    def clip(self, inputs: Mapping[str, Tensor]) -> Tensor:
        """The input clip (B, T, sum C, H, W)."""
        clips = [as_clip(inputs, m, self.channels[m], self.layout) for m in self.modalities]
        shapes = {m: (c.shape[0], c.shape[1], *c.shape[3:]) for m, c in zip(self.modalities, clips, strict=True)}
        if len(set(shapes.values())) > 1:
            raise ValueError(f"clips of different batch/frames/size per modality (B, T, H, W): {shapes}")
        return torch.cat(clips, dim=2)


@register_model("r2plus1d_18")
class R2Plus1D18(_ClipModel):
    """torchvision's R(2+1)D-18 (weights=None). Modules ``stem``, ``layer1``..``layer4`` (5-D maps
    (B, C, T', H', W')), ``time_pool`` (mean over time: the penultimate map (B, 512, H', W')), ``classifier``.
    ``logits == classifier(time_pool_output.mean((2, 3)))``, which is torchvision's 3-D average pooling + fc."""

    def __init__(
        self,
        *,
        modalities: tuple[str, ...],
        num_classes: int,
        in_channels: Mapping[str, int] | None = None,
        layout: str = "BTCHW",
        num_frames: int | None = None,
    ) -> None:
        check_num_frames(num_frames, model="r2plus1d_18")
        super().__init__(modalities, in_channels, layout)
        net = tv_r2plus1d_18(weights=None, num_classes=num_classes)
        total = sum(self.channels.values())
        if total != 3:
            old = net.stem[0]
            new = nn.Conv3d(total, old.out_channels, old.kernel_size, old.stride, old.padding, bias=False)
            nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
            net.stem[0] = new
        self.stem, self.layer1, self.layer2 = net.stem, net.layer1, net.layer2
        self.layer3, self.layer4, self.classifier = net.layer3, net.layer4, net.fc
        self.feature_paths = {"penultimate": "time_pool", "dad": ["layer3", "layer4"]}

    def forward(self, inputs: Mapping[str, Tensor]) -> Tensor:
        """Logits (B, K)."""
        x = self.clip(inputs).transpose(1, 2)  # (B, C, T, H, W)
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))
        return self.classifier(self.time_pool(x).mean((2, 3)))


class R2Plus1DStream(nn.Module):
    """One torchvision R(2+1)D-18 backbone (``stem``, ``layer1``..``layer4``, torchvision's module names, so its
    state dict keys are the published file's without ``fc.``) on a (B, C, T, H, W) clip of ``in_channels``
    channels; the output is layer4 averaged over time, (B, 512, H', W')."""

    out_channels = 512

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        net = tv_r2plus1d_18(weights=None)
        if in_channels != 3:
            old = net.stem[0]
            new = nn.Conv3d(in_channels, old.out_channels, old.kernel_size, old.stride, old.padding, bias=False)
            nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
            net.stem[0] = new
        self.stem, self.layer1, self.layer2, self.layer3, self.layer4 = (
            net.stem,
            net.layer1,
            net.layer2,
            net.layer3,
            net.layer4,
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x))))).mean(2)


@register_model("r2plus1d_18_streams")
class R2Plus1D18Streams(LateFusionNet):
    """One R(2+1)D-18 per stream (thesis ch. 5, sec. 5.3.2: "Each modality network is implemented as the
    R(2+1)D-18 architecture"), each with its own head, logits averaged over streams (Σ); ``forward_streams`` gives
    each modality network's logits, which the MCL methods train jointly.

    ``streams``: stream name -> modality (default one per modality); each stream's first convolution takes the
    modality's channel count (rgb 3, depth 1, flow 2; ``in_channels`` overrides). Inputs are clips (B, T, C, H, W)
    (``layout="BCTHW"`` accepts (B, C, T, H, W)), every modality at the same size; a 4-D image is a one-frame clip.
    ``num_frames`` (the data's clip length, passed by the runner) is only checked: the network is convolutional in
    time. Random initialisation (the thesis trains from scratch); ``pretrained="kinetics400"`` starts every stream
    from torchvision's Kinetics-400 file (first convolution adapted for other channel counts).

    Modules: ``streams.<s>`` (:class:`R2Plus1DStream`, output (B, 512, H', W')), ``fuse``, ``heads.<s>``,
    ``classifier``; ``logits == classifier(penultimate.mean((2, 3)))``.
    """

    def __init__(
        self,
        *,
        modalities: tuple[str, ...],
        num_classes: int,
        in_channels: Mapping[str, int] | None = None,
        streams: Mapping[str, str] | None = None,
        layout: str = "BTCHW",
        num_frames: int | None = None,
    ) -> None:
        check_num_frames(num_frames, model="r2plus1d_18_streams")
        check_layout(layout)
        specs = image_specs(modalities, in_channels, 1)
        smap = resolve_streams(modalities, streams)
        backbones = {s: R2Plus1DStream(specs[m].channels) for s, m in smap.items()}
        out = {s: R2Plus1DStream.out_channels for s in smap}
        super().__init__(modalities, specs, backbones, smap, out, num_classes)
        self.layout = layout

    def stream_maps(self, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """{stream: (B, 512, H', W')}, each stream on its modality's clip."""
        clips = {
            m: as_clip(inputs, m, self.specs[m].channels, self.layout).transpose(1, 2)
            for m in dict.fromkeys(self.stream_inputs.values())
        }
        return {s: self.streams[s](clips[m]) for s, m in self.stream_inputs.items()}


@register_model("resnet50_temporal")
class ResNetTemporal(_ClipModel):
    """A 2-D ResNet (``arch``, default resnet50, random init) applied to every frame (frames folded into the
    batch), a 3x1x1 temporal convolution inside the 2nd residual unit of each stage (``backbone.layer<i>.1.temporal``,
    thesis Fig. 3.2, initialised to the exact identity; ``temporal="after_stage"`` puts it after each stage,
    ``False`` leaves it out), and per-frame logits averaged over frames.

    Modules: ``backbone`` (``stem``, ``layer1``..``layer4`` on (B*T, C, H, W) maps), ``time_pool`` (the
    penultimate map: layer4 averaged over frames, (B, C, H', W')), ``classifier``. By linearity
    ``logits == classifier(time_pool_output.mean((2, 3)))`` equals the mean over frames of the per-frame logits
    (``forward_frames``). The ``dad`` layers (backbone.layer3/layer4) hold frames in the batch: B*T rows,
    sample-major (row b*T + t is frame t of sample b).
    """

    def __init__(
        self,
        *,
        modalities: tuple[str, ...],
        num_classes: int,
        in_channels: Mapping[str, int] | None = None,
        layout: str = "BTCHW",
        arch: str = "resnet50",
        temporal: bool | str = True,
        num_frames: int | None = None,
    ) -> None:
        check_num_frames(num_frames, model="resnet50_temporal")
        super().__init__(modalities, in_channels, layout)
        self.backbone = torchvision_stream(arch, sum(self.channels.values()), temporal=temporal)
        self.classifier = nn.Linear(self.backbone.out_channels, num_classes)
        self.feature_paths = {
            "penultimate": "time_pool",
            "dad": ["backbone.layer3", "backbone.layer4"],
            "frames": "backbone.layer4",
        }

    def _frame_maps(self, inputs: Mapping[str, Tensor]) -> tuple[Tensor, int]:
        x = self.clip(inputs)
        b, t = x.shape[:2]
        return self.backbone(x.reshape(b * t, *x.shape[2:]), num_frames=t), t

    def forward_frames(self, inputs: Mapping[str, Tensor]) -> Tensor:
        """Per-frame logits (B, T, K)."""
        maps, t = self._frame_maps(inputs)
        logits = self.classifier(maps.mean((2, 3)))
        return logits.reshape(-1, t, logits.shape[-1])

    def forward(self, inputs: Mapping[str, Tensor]) -> Tensor:
        """Logits (B, K), the mean over frames of the per-frame logits."""
        maps, t = self._frame_maps(inputs)
        return self.classifier(self.time_pool(maps, t).mean((2, 3)))
