"""ResNet pieces: residual units that accept a cross-stream gate, per-modality ResNet streams, and the
registered ``surf_resnet18`` (SURF-style joint net) and ``late_fusion`` (one ResNet per stream) models.
torchvision architectures are built with ``weights=None`` (nothing is downloaded)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence

from torch import Tensor, nn
from torchvision.models import resnet as tvr

from .blocks import SEBlock, TemporalConv, conv_bn_relu
from .fusion import JointNet, LateFusionNet, resolve_streams
from .inputs import image_specs
from .registry import register_model


def cross_stream_inject(x: Tensor, gate: Tensor) -> Tensor:
    """``x * relu(gate)`` through ``mmh_ext.cross_stream_inject`` (the compiled operator package).

    Raises ImportError with instructions when mmh_ext is not installed (no silent pure-Python substitute).
    """
    try:
        import mmh_ext
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "cross-stream connections need the mmh_ext operator package "
            "(pip install --no-build-isolation -e <repo>); build the model with "
            "connections=False to run without it"
        ) from err
    return mmh_ext.cross_stream_inject(x, gate)


def _gated_input(x: Tensor, gate: Tensor | None) -> Tensor:
    if gate is None:
        return x
    if gate.shape != x.shape:
        raise ValueError(
            f"cross-stream gate of shape {tuple(gate.shape)} does not match the residual input {tuple(x.shape)}"
        )
    return cross_stream_inject(x, gate)


def _branch_input(unit: nn.Module, x: Tensor, gate: Tensor | None, num_frames: int) -> Tensor:
    """The residual branch's input: ``x ⊙ relu(gate)`` (if gated), then the unit's temporal convolution (if it
    has one: thesis Fig. 3.2, a C x C 3x1x1 convolution inside the residual unit; the skip path never sees it)."""
    y = _gated_input(x, gate)
    temporal = unit._modules.get("temporal")
    return y if temporal is None else temporal(y, num_frames)


class GatedBasicBlock(tvr.BasicBlock):
    """torchvision BasicBlock whose residual branch may take ``x * relu(gate)``; the skip path always takes x.

    ``forward(x, gate=None, num_frames=1)``: relu(F(x ⊙ relu(gate)) + shortcut(x)); without a gate it is the plain
    block. Same parameters and state-dict keys as torchvision's block, plus ``temporal.*`` when a temporal
    convolution was added to the branch (:class:`ResNetStream` with ``temporal="unit"``).
    """

    def forward(self, x: Tensor, gate: Tensor | None = None, num_frames: int = 1) -> Tensor:  # type: ignore[override]
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(_branch_input(self, x, gate, num_frames))))))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class GatedBottleneck(tvr.Bottleneck):
    """torchvision Bottleneck with the optional gate on the residual branch (see GatedBasicBlock)."""

    def forward(self, x: Tensor, gate: Tensor | None = None, num_frames: int = 1) -> Tensor:  # type: ignore[override]
        out = self.relu(self.bn1(self.conv1(_branch_input(self, x, gate, num_frames))))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


_ARCHS: dict[str, tuple[type[tvr.BasicBlock] | type[tvr.Bottleneck], list[int]]] = {
    "resnet18": (GatedBasicBlock, [2, 2, 2, 2]),
    "resnet34": (GatedBasicBlock, [3, 4, 6, 3]),
    "resnet50": (GatedBottleneck, [3, 4, 6, 3]),
}


def make_stage(inplanes: int, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
    """A stage of ``blocks`` GatedBasicBlocks (1x1 conv + BN shortcut when the shape changes), any input width,
    initialised as torchvision initialises ResNets (Kaiming-normal fan-out convs, BN weight 1, bias 0)."""
    down = None
    if stride != 1 or inplanes != planes:
        down = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes))
    units = [GatedBasicBlock(inplanes, planes, stride, down)]
    units += [GatedBasicBlock(planes, planes) for _ in range(blocks - 1)]
    stage = nn.Sequential(*units)
    for mod in stage.modules():
        if isinstance(mod, nn.Conv2d):
            nn.init.kaiming_normal_(mod.weight, mode="fan_out", nonlinearity="relu")
    return stage


class TemporalStage(nn.Sequential):
    """A stage whose units take ``num_frames`` (one of them holds a temporal convolution); same state-dict keys as
    the ``nn.Sequential`` it was made from."""

    def forward(self, x: Tensor, num_frames: int = 1) -> Tensor:  # type: ignore[override]
        for unit in self:
            x = unit(x, num_frames=num_frames)
        return x


#: Where :class:`ResNetStream` puts its temporal convolutions (``temporal``).
TEMPORAL_PLACEMENTS = ("unit", "after_stage")


class ResNetStream(nn.Module):
    """A ResNet without its classifier: ``stem`` then ``layer1..layer4`` (units accept a gate), optionally with
    identity-initialised 3x1x1 temporal convolutions over frames folded into the batch (``temporal``):

    * ``"unit"`` (``True``; thesis Fig. 3.2 / Feichtenhofer et al.): inside the 2nd residual unit of each stage, on
      its residual branch (``layer<i>.1.temporal``, C_l x C_l), after the cross-stream gate — the skip path is
      untouched;
    * ``"after_stage"`` (the earlier placement): after each stage's output (``temporal.layer<i>``).

    ``forward(x, num_frames=1)`` returns the layer4 map. ``out_channels`` is its channel count.
    """

    def __init__(self, stem: nn.Module, layers: Sequence[nn.Sequential], temporal: bool | str = False) -> None:
        super().__init__()
        if len(layers) != 4:
            raise ValueError(f"ResNetStream needs 4 stages, got {len(layers)}")
        placement = "unit" if temporal is True else (temporal or None)
        if placement is not None and placement not in TEMPORAL_PLACEMENTS:
            raise ValueError(f"temporal must be a bool or one of {TEMPORAL_PLACEMENTS}, got {temporal!r}")
        self.temporal_placement = placement
        self.stem = stem
        self.stage_channels = [_stage_out(layer) for layer in layers]
        for i, layer in enumerate(layers, 1):
            if placement == "unit":
                if len(layer) < 2:
                    raise ValueError(f"layer{i} has {len(layer)} unit(s); the temporal convolution goes into the 2nd")
                layer = TemporalStage(*layer)
                layer[1].temporal = TemporalConv(self.stage_channels[i - 1])
            self.add_module(f"layer{i}", layer)
        self.layer_names = [f"layer{i}" for i in range(1, 5)]
        self.out_channels = self.stage_channels[-1]
        pairs = zip(self.layer_names, self.stage_channels, strict=True)
        self.temporal = nn.ModuleDict({n: TemporalConv(c) for n, c in pairs}) if placement == "after_stage" else None

    def after_stage(self, name: str, x: Tensor, num_frames: int) -> Tensor:
        """Apply the temporal convolution that follows stage ``name`` (identity unless ``"after_stage"``)."""
        return x if self.temporal is None else self.temporal[name](x, num_frames)

    def forward(self, x: Tensor, num_frames: int = 1) -> Tensor:
        x = self.stem(x)
        for name in self.layer_names:
            stage = getattr(self, name)
            y = stage(x, num_frames) if isinstance(stage, TemporalStage) else stage(x)
            x = self.after_stage(name, y, num_frames)
        return x


def _stage_out(layer: nn.Sequential) -> int:
    last = layer[-1]
    return (last.bn3 if hasattr(last, "bn3") else last.bn2).num_features


def torchvision_stream(arch: str, in_channels: int, temporal: bool | str = False) -> ResNetStream:
    """ResNetStream from torchvision's ``arch`` (resnet18/34/50, random init) with a ``in_channels`` first conv;
    ``temporal``: see :class:`ResNetStream`."""
    if arch not in _ARCHS:
        raise ValueError(f"arch must be one of {sorted(_ARCHS)}, got {arch!r}")
    block, counts = _ARCHS[arch]
    net = tvr.ResNet(block, counts)
    conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
    nn.init.kaiming_normal_(conv1.weight, mode="fan_out", nonlinearity="relu")
    stem = nn.Sequential(OrderedDict(conv1=conv1, bn1=net.bn1, relu=net.relu, maxpool=net.maxpool))
    return ResNetStream(stem, [net.layer1, net.layer2, net.layer3, net.layer4], temporal)


@register_model("surf_resnet18")
def surf_resnet18(
    *,
    modalities: tuple[str, ...],
    num_classes: int,
    in_channels: Mapping[str, int] | None = None,
    num_frames: int = 1,
    se: bool = True,
    reduce: bool = True,
) -> JointNet:
    """SURF-style joint net: per modality a ResNet18 stem up to layer2 (``stems.<m>``: conv1 ... layer2, then an
    SE block if ``se``), concatenated (128*M channels), a 1x1 conv-BN-ReLU back to 128 channels if ``reduce``
    (else layer3 takes 128*M channels), shared ``layer3``, ``layer4``, GAP, ``classifier``.
    Penultimate: ``layer4`` (512 channels, H/32 x W/32); ``dad``: layer3, layer4. Clips fold time into channels."""
    specs = image_specs(modalities, in_channels, num_frames)
    stems = {}
    for m in modalities:
        s = torchvision_stream("resnet18", specs[m].folded_channels)
        parts = OrderedDict(s.stem.named_children())
        parts.update(layer1=s.layer1, layer2=s.layer2)
        if se:
            parts["se"] = SEBlock(128)
        stems[m] = nn.Sequential(parts)
    fused = 128 * len(modalities)
    trunk_in = 128 if reduce else fused
    shared = {"layer3": make_stage(trunk_in, 256, 2, 2), "layer4": make_stage(256, 512, 2, 2)}
    red = conv_bn_relu(fused, 128, kernel_size=1) if reduce else None
    return JointNet(modalities, specs, stems, shared, 512, num_classes, reduce=red)


@register_model("late_fusion")
def late_fusion(
    *,
    modalities: tuple[str, ...],
    num_classes: int,
    in_channels: Mapping[str, int] | None = None,
    num_frames: int = 1,
    arch: str = "resnet18",
    streams: Mapping[str, str] | None = None,
) -> LateFusionNet:
    """One torchvision ResNet (``arch``: resnet18/34/50, random init) per stream, logits averaged.
    ``streams``: stream name -> modality (default one per modality). Per-stream logits: ``forward_streams``.
    Clips fold time into channels."""
    specs = image_specs(modalities, in_channels, num_frames)
    smap = resolve_streams(modalities, streams)
    backbones = {s: torchvision_stream(arch, specs[m].folded_channels) for s, m in smap.items()}
    return LateFusionNet(
        modalities, specs, backbones, smap, {s: b.out_channels for s, b in backbones.items()}, num_classes
    )
