"""CPU-sized models for the built-in synthetic datasets: ``small_joint``, ``small_late_fusion``, ``mlp_joint``.

Clips (B, T, C, H, W) are folded time-into-channels (the stem's first convolution sees all T*C planes), so
``num_frames`` must be given at build time; images (B, C, H, W) use ``num_frames=1``.
On 32x32 inputs the stems give an 8x8 map.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

from torch import nn

from .blocks import BottleneckHead, conv_bn_relu
from .fusion import JointNet, LateFusionNet, resolve_streams
from .inputs import InputSpec, image_specs, resolve_in_channels
from .registry import register_model


def small_stem(in_channels: int, width: int = 24, first_stride: int = 2) -> nn.Sequential:
    """Two 3x3 conv-BN-ReLU layers to an H/4 x W/4 map of ``width`` channels.

    ``first_stride=2`` (default, ~2.5x cheaper): the first conv has stride 2, the second is followed by 2x2 max
    pooling. ``first_stride=1``: both convs are followed by 2x2 max pooling."""
    if first_stride not in (1, 2):
        raise ValueError(f"first_stride must be 1 or 2, got {first_stride!r}")
    first = [conv_bn_relu(in_channels, width, stride=first_stride)]
    if first_stride == 1:
        first.append(nn.MaxPool2d(2))
    return nn.Sequential(*first, conv_bn_relu(width, width), nn.MaxPool2d(2))


def small_trunk(in_channels: int, width: int = 48, bottleneck: int | None = None) -> dict[str, nn.Module]:
    """The shared part: ``layer3``, ``layer4`` (3x3 conv-BN-ReLU, ``width`` channels), optional ``bottleneck``."""
    layers: dict[str, nn.Module] = {"layer3": conv_bn_relu(in_channels, width), "layer4": conv_bn_relu(width, width)}
    if bottleneck is not None:
        layers["bottleneck"] = BottleneckHead(width, bottleneck)
    return layers


@register_model("small_joint")
def small_joint(
    *,
    modalities: tuple[str, ...],
    num_classes: int,
    in_channels: Mapping[str, int] | None = None,
    num_frames: int = 1,
    width: int = 24,
    shared_width: int = 48,
    first_stride: int = 2,
    bottleneck: int | None = None,
) -> JointNet:
    """SURF-style joint net sized for CPU: a ``width``-channel stem per modality (``stems.<m>``), concatenated,
    two shared ``shared_width``-channel 3x3 convs (``layer3``, ``layer4``; 8x8 on 32x32 input), GAP, linear
    ``classifier``. ``first_stride``: see ``small_stem``. ``bottleneck=d`` adds ADMD's pool + 1x1 conv head
    (then the penultimate is ``bottleneck``, a (B, d, 1, 1) map). Clips: time folded into channels
    (``num_frames`` must match T)."""
    specs = image_specs(modalities, in_channels, num_frames)
    stems = {m: small_stem(specs[m].folded_channels, width, first_stride) for m in modalities}
    shared = small_trunk(width * len(modalities), shared_width, bottleneck)
    return JointNet(modalities, specs, stems, shared, bottleneck or shared_width, num_classes)


@register_model("small_late_fusion")
def small_late_fusion(
    *,
    modalities: tuple[str, ...],
    num_classes: int,
    in_channels: Mapping[str, int] | None = None,
    num_frames: int = 1,
    width: int = 24,
    shared_width: int = 48,
    first_stride: int = 2,
    streams: Mapping[str, str] | None = None,
    bottleneck: int | None = None,
) -> LateFusionNet:
    """One small net (stem + layer3 + layer4 [+ bottleneck]) per stream, logits averaged (see LateFusionNet).
    ``streams``: stream name -> modality (default one per modality)."""
    specs = image_specs(modalities, in_channels, num_frames)
    smap = resolve_streams(modalities, streams)
    backbones = {
        s: nn.Sequential(
            OrderedDict(
                stem=small_stem(specs[m].folded_channels, width, first_stride),
                **small_trunk(width, shared_width, bottleneck),
            )
        )
        for s, m in smap.items()
    }
    out = {s: bottleneck or shared_width for s in smap}
    return LateFusionNet(modalities, specs, backbones, smap, out, num_classes)


@register_model("mlp_joint")
def mlp_joint(
    *,
    modalities: tuple[str, ...],
    num_classes: int,
    in_channels: Mapping[str, int] | None = None,
    hidden: int = 64,
    width: int = 64,
) -> JointNet:
    """Joint net for vector modalities (e.g. the six UCI mfeat views): per-view Linear-BN-ReLU encoders
    (``stems.<m>``, ``hidden`` units), concatenated, two shared Linear-BN-ReLU layers (``layer3``, ``layer4``,
    ``width`` units), classifier. ``in_channels`` gives each view's length and is required.
    Vectors are carried as (B, D, 1, 1) maps (linear layers as 1x1 convs), so the penultimate map is
    (B, width, 1, 1) and the contract ``logits == classifier(penultimate.mean((2, 3)))`` holds."""
    chans = resolve_in_channels(modalities, in_channels, defaults=None)
    specs = {m: InputSpec("vector", chans[m]) for m in modalities}
    stems = {m: conv_bn_relu(chans[m], hidden, kernel_size=1) for m in modalities}
    shared = {
        "layer3": conv_bn_relu(hidden * len(modalities), width, kernel_size=1),
        "layer4": conv_bn_relu(width, width, kernel_size=1),
    }
    return JointNet(modalities, specs, stems, shared, width, num_classes)
