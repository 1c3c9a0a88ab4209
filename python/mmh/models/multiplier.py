"""Cross-stream multiplier networks (thesis ch. 3, after Feichtenhofer et al.).

Two (or more) ResNet streams run in lockstep. Before the 2nd residual unit (``unit=1``) of each of the four stages,
the *residual branch* of the gated stream (default: RGB) takes ``x_a * relu(x_m)``, where x_m is the gating
stream's (default: depth) input to the same unit; the skip path takes x_a unchanged:
``x_a(l+1) = x_a(l) + F(x_a(l) * relu(x_m(l)))`` (then ReLU, as in the ResNet unit). The product is computed by
``mmh_ext.cross_stream_inject``; gradients reach both streams. Logits are averaged over streams (late fusion), so
the network is a ``LateFusionNet`` whose streams interact.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from .blocks import conv_bn_relu
from .fusion import LateFusionNet, resolve_streams
from .inputs import InputSpec, as_clip, check_num_frames, image_specs, prepare
from .registry import register_model
from .resnet import ResNetStream, make_stage, torchvision_stream
from .video import TimeMean


class MultiplierNet(LateFusionNet):
    """Streams with multiplicative cross-stream connections, logits averaged (see the module docstring).

    ``gate_from`` / ``gate_into``: stream names (the direction: depth -> RGB by default, RGB -> depth for the
    thesis's ablation); ``connections=False`` gives plain independent streams; ``stages``: which stages (1-4) get a
    connection; ``unit``: index of the residual unit that receives it (1 = the 2nd). ``time_mode``: "channels"
    (clips folded time-into-channels, as the small nets) or "frames" (frames folded into the batch, temporal
    convolutions inside the streams, stream maps averaged over frames by ``time_pool`` before fusion).
    """

    def __init__(
        self,
        modalities: tuple[str, ...],
        specs: Mapping[str, InputSpec],
        backbones: Mapping[str, ResNetStream],
        streams: Mapping[str, str],
        num_classes: int,
        *,
        connections: bool = True,
        gate_from: str = "depth",
        gate_into: str = "rgb",
        stages: Sequence[int] = (1, 2, 3, 4),
        unit: int = 1,
        time_mode: str = "channels",
    ) -> None:
        super().__init__(
            modalities, specs, backbones, streams, {s: b.out_channels for s, b in backbones.items()}, num_classes
        )
        if time_mode not in ("channels", "frames"):
            raise ValueError(f"time_mode must be 'channels' or 'frames', got {time_mode!r}")
        if connections:
            for role, s in (("gate_from", gate_from), ("gate_into", gate_into)):
                if s not in streams:
                    raise ValueError(f"{role}={s!r} is not a stream; streams are {list(streams)}")
            if gate_from == gate_into:
                raise ValueError(f"gate_from and gate_into are the same stream {gate_from!r}")
            bad = [i for i in stages if i not in (1, 2, 3, 4)]
            if bad:
                raise ValueError(f"stages must be among 1..4, got {list(stages)}")
            short = [f"layer{i}" for i in stages if unit >= len(getattr(backbones[gate_into], f"layer{i}"))]
            if unit < 0 or short:
                raise ValueError(f"unit={unit} does not exist in stages {short or list(stages)}")
        self.connections = bool(connections)
        self.gate_from, self.gate_into = gate_from, gate_into
        self.connected_stages = {f"layer{i}" for i in stages} if connections else set()
        self.unit = unit
        self.time_mode = time_mode
        self.time_pool = TimeMean()
        self.feature_paths["injected"] = [f"streams.{gate_into}.{n}.{unit}" for n in sorted(self.connected_stages)]

    def _stream_inputs(self, inputs: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], int]:
        if self.time_mode == "channels":
            return {s: prepare(inputs, m, self.specs[m]) for s, m in self.stream_inputs.items()}, 1
        clips = {s: as_clip(inputs, m, self.specs[m].channels) for s, m in self.stream_inputs.items()}
        sizes = {s: tuple(int(d) for d in c.shape[:2]) for s, c in clips.items()}  # ints, also when traced
        if len(set(sizes.values())) > 1:
            raise ValueError(f"streams got clips of different (batch, frames): {sizes}")
        t = next(iter(clips.values())).shape[1]
        frames = {s: c.reshape(c.shape[0] * c.shape[1], *c.shape[2:]) for s, c in clips.items()}
        return frames, t

    def stream_maps(self, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Each stream's last map (B, C, H, W), with the cross-stream connections applied on the way."""
        xs, t = self._stream_inputs(inputs)
        xs = {s: self.streams[s].stem(x) for s, x in xs.items()}
        first = next(iter(xs))  # every stream has the same stages (a derived net may lack gate_into's stream)
        for name in self.streams[first].layer_names:
            stage = {s: getattr(self.streams[s], name) for s in xs}
            for u in range(len(stage[first])):
                gated = name in self.connected_stages and u == self.unit
                xs = {
                    s: stage[s][u](x, xs[self.gate_from], num_frames=t)
                    if gated and s == self.gate_into
                    else stage[s][u](x, num_frames=t)
                    for s, x in xs.items()
                }
            xs = {s: self.streams[s].after_stage(name, x, t) for s, x in xs.items()}
        if self.time_mode == "frames":
            xs = {s: self.time_pool(x, t) for s, x in xs.items()}
        return xs


def _inject_decomposed(x: Tensor, gate: Tensor) -> Tensor:
    return x * torch.relu(gate)


@contextmanager
def decomposed_injection() -> Iterator[None]:
    """Inside the block, cross-stream connections compute ``x * relu(gate)`` with two plain torch ops instead of
    ``mmh_ext.cross_stream_inject`` — the inference path that ``mmh export`` traces, so an exported multiplier net
    needs neither mmh_ext nor its library (TorchScript, ONNX, LibTorch). The forward values are the operator's
    (the same product); use it for inference and export only (not thread-safe: it swaps the function the
    residual units call, in ``mmh.models.resnet``, for the duration of the block)."""
    from . import resnet

    previous = resnet.cross_stream_inject
    resnet.cross_stream_inject = _inject_decomposed
    try:
        yield
    finally:
        resnet.cross_stream_inject = previous


def _multiplier_student_rule(config: dict[str, Any], kept: tuple[str, ...]) -> dict[str, Any]:
    """A derived student loses the connections whose gating or gated stream was removed."""
    streams = config.get("streams") or {m: m for m in kept}
    if config.get("gate_from", "depth") not in streams or config.get("gate_into", "rgb") not in streams:
        config["connections"] = False
    return config


def small_resnet_stream(in_channels: int, width: int = 16) -> ResNetStream:
    """A CPU-sized 4-stage ResNet stream: stride-2 3x3 stem, stages of two basic units with widths
    (w, 2w, 2w, 3w) and strides (1, 2, 1, 1): 32x32 input -> 8x8 map of 3w channels."""
    stem = nn.Sequential(OrderedDict(conv=conv_bn_relu(in_channels, width, stride=2)))
    widths = [width, 2 * width, 2 * width, 3 * width]
    layers, prev = [], width
    for w, stride in zip(widths, (1, 2, 1, 1), strict=True):
        layers.append(make_stage(prev, w, 2, stride))
        prev = w
    return ResNetStream(stem, layers)


@register_model("small_multiplier", student_rule=_multiplier_student_rule)
def small_multiplier(
    *,
    modalities: tuple[str, ...],
    num_classes: int,
    in_channels: Mapping[str, int] | None = None,
    num_frames: int = 1,
    width: int = 8,
    streams: Mapping[str, str] | None = None,
    connections: bool = True,
    gate_from: str = "depth",
    gate_into: str = "rgb",
    stages: Sequence[int] = (1, 2, 3, 4),
) -> MultiplierNet:
    """Multiplier network for the built-in 32x32 data: one ``small_resnet_stream`` per stream, clips folded
    time-into-channels. See MultiplierNet for the connection options."""
    specs = image_specs(modalities, in_channels, num_frames)
    smap = resolve_streams(modalities, streams)
    backbones = {s: small_resnet_stream(specs[m].folded_channels, width) for s, m in smap.items()}
    return MultiplierNet(
        modalities,
        specs,
        backbones,
        smap,
        num_classes,
        connections=connections,
        gate_from=gate_from,
        gate_into=gate_into,
        stages=stages,
    )


@register_model("multiplier_resnet", student_rule=_multiplier_student_rule)
def multiplier_resnet(
    *,
    modalities: tuple[str, ...],
    num_classes: int,
    in_channels: Mapping[str, int] | None = None,
    arch: str = "resnet50",
    temporal: bool | str = True,
    streams: Mapping[str, str] | None = None,
    connections: bool = True,
    gate_from: str = "depth",
    gate_into: str = "rgb",
    stages: Sequence[int] = (1, 2, 3, 4),
    num_frames: int | None = None,
) -> MultiplierNet:
    """The thesis's multiplier network: torchvision ResNet streams (``arch``, default resnet50, random init) on
    frames folded into the batch, identity-initialised 3x1x1 temporal convs inside the 2nd residual unit of each
    stage (``temporal``: True / "unit", thesis Fig. 3.2; "after_stage" the earlier placement; False none),
    stream maps averaged over frames, logits averaged over streams. Input clips (B, T, C, H, W) or images."""
    check_num_frames(num_frames, model="multiplier_resnet")  # any clip length: frames are folded into the batch
    specs = image_specs(modalities, in_channels, 1)
    smap = resolve_streams(modalities, streams)
    backbones = {s: torchvision_stream(arch, specs[m].channels, temporal) for s, m in smap.items()}
    return MultiplierNet(
        modalities,
        specs,
        backbones,
        smap,
        num_classes,
        connections=connections,
        gate_from=gate_from,
        gate_into=gate_into,
        stages=stages,
        time_mode="frames",
    )
