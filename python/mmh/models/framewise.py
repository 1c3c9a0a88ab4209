"""Late-fusion nets whose streams see one frame at a time (ADMD needs per-frame features).

* ``small_framewise`` (CPU-sized): each stream is ``small_stem`` + ``layer3`` + ``layer4`` + ``bottleneck`` (ADMD's
  pool + 1x1 conv, ``bottleneck`` channels) applied per frame;
* ``resnet50_framewise`` (thesis ch. 4, Fig. 4.1): each stream is a torchvision ResNet-50 with identity-initialised
  3x1x1 temporal convolutions in the 2nd residual unit of each stage (4.2.2, as ``resnet50_temporal``), followed by
  ADMD's 128-d bottleneck (``bottleneck_kind``, 4.2.2 / Table 4.2).

Clips (B, T, C, H, W) are folded frames-into-batch; the per-frame bottleneck vectors are aggregated over time
(``time_pool``: mean, or concatenated for ``small_framewise``'s default) and a linear head per stream gives logits,
averaged over streams. ``feature_paths["bottleneck.<stream>"]`` is the per-frame bottleneck module (output
(B*T, d, 1, 1), frame t of clip b at row b*T + t).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

from torch import Tensor, nn

from .blocks import BottleneckHead
from .fusion import LateFusionNet, resolve_streams
from .inputs import as_clip, check_num_frames, image_specs
from .registry import register_model
from .resnet import ResNetStream, torchvision_stream
from .small import small_stem, small_trunk
from .video import TimeMean

__all__ = [
    "BOTTLENECK_KINDS",
    "ConvBottleneck",
    "FCBottleneck",
    "FramewiseLateFusion",
    "FramewiseResNet",
    "ResNetBottleneckStream",
    "msra_init",
    "resnet50_framewise",
    "small_framewise",
]


class FramewiseLateFusion(LateFusionNet):
    """LateFusionNet over frames folded into the batch, stream maps averaged over time (see module docstring)."""

    def __init__(self, *args, temporal: str = "concat", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if temporal not in ("concat", "mean"):
            raise ValueError(f"temporal must be 'concat' or 'mean', got {temporal!r}")
        self.temporal = temporal
        self.time_pool = TimeMean()
        self.feature_paths.update({f"bottleneck.{s}": f"streams.{s}.bottleneck" for s in self.stream_inputs})

    def run_stream(self, stream: str, frames: Tensor, num_frames: int) -> Tensor:
        """Stream ``stream`` on (B*T, C, H, W) frames, clips of ``num_frames`` frames each."""
        return self.streams[stream](frames)

    def stream_maps(self, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        out = {}
        for s, m in self.stream_inputs.items():
            clip = as_clip(inputs, m, self.specs[m].channels)
            b, t = clip.shape[:2]
            y = self.run_stream(s, clip.reshape(b * t, *clip.shape[2:]), t)
            if self.temporal == "mean":
                out[s] = self.time_pool(y, t)
            else:  # (B*T, d, h, w) -> (B, T*d, h, w), frame-major channels
                out[s] = y.reshape(b, t * y.shape[1], *y.shape[2:])
        return out


@register_model("small_framewise")
def small_framewise(
    *,
    modalities: tuple[str, ...],
    num_classes: int,
    in_channels: Mapping[str, int] | None = None,
    num_frames: int = 1,
    width: int = 16,
    shared_width: int = 32,
    bottleneck: int = 128,
    streams: Mapping[str, str] | None = None,
    temporal: str = "concat",
) -> FramewiseLateFusion:
    """Per-frame small streams with a ``bottleneck``-d head, aggregated over time (``temporal``: "concat" — the
    heads take ``num_frames * bottleneck`` features, clips must have ``num_frames`` frames — or "mean"), logits
    averaged over streams."""
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
        raise ValueError(f"num_frames must be a positive int, got {num_frames!r}")
    specs = image_specs(modalities, in_channels, 1)
    smap = resolve_streams(modalities, streams)
    backbones = {
        s: nn.Sequential(
            OrderedDict(stem=small_stem(specs[m].channels, width), **small_trunk(width, shared_width, bottleneck))
        )
        for s, m in smap.items()
    }
    for b in backbones.values():
        assert isinstance(b.bottleneck, BottleneckHead)
    width_out = bottleneck * (num_frames if temporal == "concat" else 1)
    return FramewiseLateFusion(
        modalities, specs, backbones, smap, {s: width_out for s in smap}, num_classes, temporal=temporal
    )


class ConvBottleneck(nn.Module):
    """4.2.2 (i) / Table 4.2 "One conv": a ``kernel_size`` x ``kernel_size`` convolution, no padding, from the last
    map to ``dim`` channels — on ResNet-50's 7x7 map (224x224 input) a (B, dim, 1, 1) output. A map of another size
    is a ValueError (the layer is meant to cover the whole map)."""

    def __init__(self, in_channels: int, dim: int = 128, kernel_size: int = 7) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"bottleneck dim must be >= 1, got {dim}")
        self.conv = nn.Conv2d(in_channels, dim, kernel_size)
        self.out_channels = dim

    def forward(self, x: Tensor) -> Tensor:
        k = self.conv.kernel_size
        if tuple(x.shape[2:]) != tuple(k):
            raise ValueError(
                f"bottleneck_kind 'conv7' needs a {k[0]}x{k[1]} map (224x224 input to ResNet-50), got "
                f"{tuple(x.shape[2:])}; use bottleneck_kind 'pool_conv' for other input sizes"
            )
        return self.conv(x)


class FCBottleneck(nn.Module):
    """4.2.2 (ii): global average pooling then a ``dim``-unit fully connected layer; output (B, dim, 1, 1). (The same
    function class as :class:`BottleneckHead`'s pool + 1x1 conv, parameterised as a Linear.)"""

    def __init__(self, in_channels: int, dim: int = 128) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"bottleneck dim must be >= 1, got {dim}")
        self.fc = nn.Linear(in_channels, dim)
        self.out_channels = dim

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x.mean((2, 3)))[:, :, None, None]


def msra_init(module: nn.Module) -> nn.Module:
    """Thesis 4.3.2: the bottleneck "randomly initialized with the MSRA initialization" (He et al. 2015): every
    convolution / linear layer of ``module`` gets weights from N(0, 2 / fan_in) (``kaiming_normal_``; chosen:
    ``fan_in``, the forward-pass case of the paper and the default of Caffe's ``msra`` filler; fan_in = input
    channels x kernel area) and zero biases. Returns ``module``."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module


#: ``resnet50_framewise``'s ``bottleneck_kind`` -> the head on the last map (in_channels, dim).
BOTTLENECK_KINDS = {"pool_conv": BottleneckHead, "conv7": ConvBottleneck, "fc": FCBottleneck}


class ResNetBottleneckStream(ResNetStream):
    """A :class:`ResNetStream` (stem, layer1..layer4 with the optional temporal convolutions; torchvision's key names
    plus ``layer<i>.1.temporal.*``) followed by ``bottleneck``; ``forward(x, num_frames)`` gives (B*T, dim, 1, 1)."""

    def __init__(
        self, stem: nn.Module, layers: list[nn.Sequential], temporal: bool | str, bottleneck: nn.Module
    ) -> None:
        super().__init__(stem, layers, temporal)
        self.bottleneck = bottleneck
        self.out_channels = bottleneck.out_channels

    def forward(self, x: Tensor, num_frames: int = 1) -> Tensor:
        return self.bottleneck(super().forward(x, num_frames))


class FramewiseResNet(FramewiseLateFusion):
    """:class:`FramewiseLateFusion` whose streams take the clip length (their temporal convolutions mix the frames
    of each clip); built with ``temporal="mean"``, so stream outputs are averaged over frames."""

    def run_stream(self, stream: str, frames: Tensor, num_frames: int) -> Tensor:
        return self.streams[stream](frames, num_frames=num_frames)


@register_model("resnet50_framewise")
def resnet50_framewise(
    *,
    modalities: tuple[str, ...],
    num_classes: int,
    in_channels: Mapping[str, int] | None = None,
    num_frames: int | None = None,
    arch: str = "resnet50",
    temporal: bool = True,
    bottleneck: int = 128,
    bottleneck_kind: str = "pool_conv",
    streams: Mapping[str, str] | None = None,
) -> FramewiseResNet:
    """ADMD's streams (thesis 4.2.2, Fig. 4.1): per stream a torchvision ResNet (``arch``, default resnet50, random
    init; ``model.pretrained: imagenet`` loads torchvision's file into every stream) on every frame, with
    identity-initialised 3x1x1 temporal convolutions in the 2nd residual unit of each stage (``temporal``; ``False``
    for single images, as NYUD), then the ``bottleneck``-d head (``bottleneck_kind``: ``pool_conv`` — pooling + 1x1
    conv, Table 4.2's choice, the default; ``conv7`` — a 7x7 conv without padding on the 7x7 map; ``fc`` — pooling +
    a fully connected layer; MSRA-initialised, :func:`msra_init`), the per-frame vectors averaged over time and a
    linear head per stream (so the logits are the mean over frames of the per-frame logits), logits averaged over
    streams.

    ``num_frames`` (the data's clip length, passed by the runner) is only checked: any clip length runs. ``streams``:
    stream name -> modality (default one per modality). Modules: ``streams.<s>`` (:class:`ResNetBottleneckStream`),
    ``heads.<s>``, ``time_pool``, ``fuse``, ``classifier``; ``feature_paths["bottleneck.<s>"]`` =
    ``streams.<s>.bottleneck``."""
    check_num_frames(num_frames, model="resnet50_framewise")
    if bottleneck_kind not in BOTTLENECK_KINDS:
        raise ValueError(f"bottleneck_kind must be one of {sorted(BOTTLENECK_KINDS)}, got {bottleneck_kind!r}")
    if not isinstance(temporal, bool):
        raise ValueError(f"temporal must be true or false (the thesis's placement, or none), got {temporal!r}")
    if isinstance(bottleneck, bool) or not isinstance(bottleneck, int) or bottleneck < 1:
        raise ValueError(f"bottleneck must be a positive int (the feature size), got {bottleneck!r}")
    specs = image_specs(modalities, in_channels, 1)
    smap = resolve_streams(modalities, streams)
    backbones = {}
    for s, m in smap.items():
        plain = torchvision_stream(arch, specs[m].channels)
        layers = [plain.layer1, plain.layer2, plain.layer3, plain.layer4]
        head = msra_init(BOTTLENECK_KINDS[bottleneck_kind](plain.out_channels, bottleneck))
        backbones[s] = ResNetBottleneckStream(plain.stem, layers, temporal, head)
    return FramewiseResNet(
        modalities, specs, backbones, smap, {s: bottleneck for s in smap}, num_classes, temporal="mean"
    )
