"""I3D: the Inflated Inception-v1 of Carreira & Zisserman 2017 ("Quo Vadis, Action Recognition?"), the backbone of
the MMH paper's action experiments (two-stream I3D initialised from Kinetics-400, sec. IV).

:class:`InceptionI3d` is the backbone without its classifier. Its module names, and so its ``state_dict()`` keys, are
those of the widely used PyTorch port (piergiaj/pytorch-i3d, ``pytorch_i3d.py``) minus the port's classifier
``logits.conv3d.*``: ``Conv3d_1a_7x7.conv3d.weight``, ``Conv3d_1a_7x7.bn.weight``, ..., ``Mixed_5c.b3b.bn.running_var``.
A checkpoint of the port (``rgb_imagenet.pt``: ImageNet-inflated, trained on Kinetics-400; ``flow_imagenet.pt``) with
its ``logits.*`` entries removed loads with ``load_state_dict(sd, strict=True)``. The padding is TensorFlow's "SAME"
computed from the input size in every layer (as the port and the original TF code do), so those weights give the
same activations.

The registered model ``"i3d"`` is a two-stream late-fusion net (:class:`~mmh.models.fusion.LateFusionNet`): one
``InceptionI3d`` per stream (default one stream per modality), each stream's Mixed_5c map averaged over time is the
stream's (B, 1024, H', W') map, one linear head per stream on its space-averaged map, logits averaged.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .fusion import LateFusionNet, resolve_streams
from .inputs import as_clip, check_layout, image_specs
from .registry import register_model
from .video import TimeMean

__all__ = ["I3D", "InceptionI3d", "InceptionModule", "MaxPool3dSamePadding", "Unit3D", "same_padding"]

Triple = tuple[int, int, int]


def _triple(v: int | Sequence[int], name: str) -> Triple:
    t = (v, v, v) if isinstance(v, int) else tuple(v)
    if len(t) != 3 or any(isinstance(i, bool) or not isinstance(i, int) or i < 1 for i in t):
        raise ValueError(f"{name} must be a positive int or three positive ints, got {v!r}")
    return t  # type: ignore[return-value]


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "SAME" padding of one dimension: (front, back) such that a ``kernel``/``stride`` window gives
    ``ceil(size / stride)`` outputs; the odd element goes to the back (as TF and the PyTorch port of I3D pad)."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _same_pad(x: Tensor, kernel: Triple, stride: Triple) -> Tensor:
    """Zero-pad a (B, C, T, H, W) tensor for a "SAME" window of ``kernel``/``stride``."""
    pads: list[int] = []
    for dim in (4, 3, 2):  # F.pad lists the last dimension first: (W front, W back, H ..., T ...)
        pads.extend(same_padding(x.shape[dim], kernel[dim - 2], stride[dim - 2]))
    return F.pad(x, pads) if any(pads) else x


class MaxPool3dSamePadding(nn.MaxPool3d):
    """3-D max pooling after TF "SAME" zero padding computed from the input size (the port's module of this name).

    The padding is zeros, not -inf, as in the port: every pooling in I3D follows a ReLU, so the result is the same.
    """

    def __init__(self, kernel_size: int | Sequence[int], stride: int | Sequence[int] = 1) -> None:
        kernel, step = _triple(kernel_size, "kernel_size"), _triple(stride, "stride")
        super().__init__(kernel_size=kernel, stride=step, padding=0)

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(_same_pad(x, self.kernel_size, self.stride))  # type: ignore[arg-type]


class Unit3D(nn.Module):
    """Conv3d (TF "SAME" padding from the input size, no bias) + BatchNorm3d (eps 1e-3, momentum 0.01: TF's decay
    0.99) + ReLU. Modules ``conv3d`` and ``bn``, as in the port. ``use_batch_norm=False, use_bias=True,
    activation=None`` gives the port's classifier unit (``logits``)."""

    def __init__(
        self,
        in_channels: int,
        output_channels: int,
        kernel_shape: int | Sequence[int] = 1,
        stride: int | Sequence[int] = 1,
        *,
        activation: Callable[[Tensor], Tensor] | None = F.relu,
        use_batch_norm: bool = True,
        use_bias: bool = False,
    ) -> None:
        super().__init__()
        self.kernel_shape = _triple(kernel_shape, "kernel_shape")
        self.stride = _triple(stride, "stride")
        self.activation = activation
        # padding 0: the "SAME" padding depends on the input size and is applied in forward
        self.conv3d = nn.Conv3d(in_channels, output_channels, self.kernel_shape, self.stride, padding=0, bias=use_bias)
        self.bn = nn.BatchNorm3d(output_channels, eps=1e-3, momentum=0.01) if use_batch_norm else None

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv3d(_same_pad(x, self.kernel_shape, self.stride))
        if self.bn is not None:
            x = self.bn(x)
        return x if self.activation is None else self.activation(x)


class InceptionModule(nn.Module):
    """The Inception block inflated to 3-D: branches b0 (1x1x1), b1a -> b1b (1x1x1 -> 3x3x3), b2a -> b2b
    (1x1x1 -> 3x3x3), b3a -> b3b (3x3x3 max pool, stride 1 -> 1x1x1), concatenated along channels.

    ``out_channels`` = (b0, b1a, b1b, b2a, b2b, b3b) output channels, the order of the port and of TF's code.
    """

    def __init__(self, in_channels: int, out_channels: Sequence[int]) -> None:
        super().__init__()
        if len(out_channels) != 6:
            raise ValueError(f"InceptionModule needs 6 output channel counts, got {list(out_channels)}")
        c0, c1a, c1b, c2a, c2b, c3b = out_channels
        self.b0 = Unit3D(in_channels, c0, 1)
        self.b1a = Unit3D(in_channels, c1a, 1)
        self.b1b = Unit3D(c1a, c1b, 3)
        self.b2a = Unit3D(in_channels, c2a, 1)
        self.b2b = Unit3D(c2a, c2b, 3)
        self.b3a = MaxPool3dSamePadding(3, 1)
        self.b3b = Unit3D(in_channels, c3b, 1)
        self.out_channels = c0 + c1b + c2b + c3b

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], dim=1)


#: (end point, in channels, (b0, b1a, b1b, b2a, b2b, b3b)) of the Inception blocks (Carreira & Zisserman, Fig. 3).
_MIXED: tuple[tuple[str, int, tuple[int, ...]], ...] = (
    ("Mixed_3b", 192, (64, 96, 128, 16, 32, 32)),
    ("Mixed_3c", 256, (128, 128, 192, 32, 96, 64)),
    ("Mixed_4b", 480, (192, 96, 208, 16, 48, 64)),
    ("Mixed_4c", 512, (160, 112, 224, 24, 64, 64)),
    ("Mixed_4d", 512, (128, 128, 256, 24, 64, 64)),
    ("Mixed_4e", 512, (112, 144, 288, 32, 64, 64)),
    ("Mixed_4f", 528, (256, 160, 320, 32, 128, 128)),
    ("Mixed_5b", 832, (256, 160, 320, 32, 128, 128)),
    ("Mixed_5c", 832, (384, 192, 384, 48, 128, 128)),
)


class InceptionI3d(nn.Module):
    """Inception-v1 I3D up to Mixed_5c, without the classifier (the port's ``InceptionI3d`` minus ``logits``).

    Child modules, in order (``END_POINTS``): Conv3d_1a_7x7 (7x7x7, stride 2), MaxPool3d_2a_3x3 (1x3x3, stride
    1x2x2), Conv3d_2b_1x1, Conv3d_2c_3x3, MaxPool3d_3a_3x3 (1x3x3, stride 1x2x2), Mixed_3b, Mixed_3c,
    MaxPool3d_4a_3x3 (3x3x3, stride 2), Mixed_4b .. Mixed_4f, MaxPool3d_5a_2x2 (2x2x2, stride 2), Mixed_5b, Mixed_5c;
    then ``time_pool`` (mean over time, no parameters).

    ``features(x)``: (B, C, T, H, W) (torch's video layout, the port's) -> the Mixed_5c map (B, 1024, T', H', W') with
    T' = ceil(T / 8), H' = ceil(H / 32), W' = ceil(W / 32). ``forward(x)`` is that map averaged over time,
    (B, 1024, H', W'). The clip must have at least ``MIN_FRAMES`` frames and ``MIN_SIZE`` x ``MIN_SIZE`` pixels
    (one cell of the network's total stride; smaller clips would give a map computed mostly from padding).
    """

    END_POINTS: tuple[str, ...] = (
        "Conv3d_1a_7x7",
        "MaxPool3d_2a_3x3",
        "Conv3d_2b_1x1",
        "Conv3d_2c_3x3",
        "MaxPool3d_3a_3x3",
        "Mixed_3b",
        "Mixed_3c",
        "MaxPool3d_4a_3x3",
        "Mixed_4b",
        "Mixed_4c",
        "Mixed_4d",
        "Mixed_4e",
        "Mixed_4f",
        "MaxPool3d_5a_2x2",
        "Mixed_5b",
        "Mixed_5c",
    )
    #: Total stride of the network: 8 in time, 32 in height and width; the smallest clip it accepts.
    MIN_FRAMES = 8
    MIN_SIZE = 32
    out_channels = 1024

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f"in_channels must be a positive int, got {in_channels!r}")
        self.in_channels = in_channels
        mixed = {name: (cin, outs) for name, cin, outs in _MIXED}
        for name in self.END_POINTS:
            if name in mixed:
                module: nn.Module = InceptionModule(*mixed[name])
            elif name == "Conv3d_1a_7x7":
                module = Unit3D(in_channels, 64, 7, 2)
            elif name == "Conv3d_2b_1x1":
                module = Unit3D(64, 64, 1)
            elif name == "Conv3d_2c_3x3":
                module = Unit3D(64, 192, 3)
            elif name in ("MaxPool3d_2a_3x3", "MaxPool3d_3a_3x3"):
                module = MaxPool3dSamePadding((1, 3, 3), (1, 2, 2))
            elif name == "MaxPool3d_4a_3x3":
                module = MaxPool3dSamePadding(3, 2)
            else:  # MaxPool3d_5a_2x2
                module = MaxPool3dSamePadding(2, 2)
            self.add_module(name, module)
        self.time_pool = TimeMean()

    def check_clip(self, shape: Sequence[int], name: str = "x") -> None:
        """ValueError naming ``name`` unless ``shape`` is (B, C, T, H, W) with C == in_channels, T >= MIN_FRAMES and
        H, W >= MIN_SIZE."""
        shape = tuple(int(d) for d in shape)
        if len(shape) != 5:
            raise ValueError(f"I3D input {name!r} must be a 5-D clip (B, C, T, H, W), got shape {shape}")
        _, c, t, h, w = shape
        if c != self.in_channels:
            raise ValueError(
                f"I3D input {name!r} has {c} channels (shape {shape} as B,C,T,H,W) but the backbone was built with "
                f"in_channels={self.in_channels}"
            )
        if t < self.MIN_FRAMES or h < self.MIN_SIZE or w < self.MIN_SIZE:
            raise ValueError(
                f"I3D input {name!r} is a clip of T={t} frames of {h}x{w} pixels; I3D needs at least "
                f"T={self.MIN_FRAMES} frames and H, W >= {self.MIN_SIZE} (its total stride is 8 in time and 32 in "
                f"space)"
            )

    def features(self, x: Tensor) -> Tensor:
        """The Mixed_5c map (B, 1024, T', H', W') of a clip (B, C, T, H, W)."""
        self.check_clip(x.shape)
        b, _, t, h, w = x.shape
        if self.training and b * math.ceil(t / 8) * math.ceil(h / 32) * math.ceil(w / 32) == 1:
            raise ValueError(
                f"I3D in training mode got one clip of T={t} frames of {h}x{w} pixels: its Mixed_5c map is 1x1x1, "
                f"and batch norm needs more than one value per channel; train with a batch of >= 2 clips (or "
                f"larger clips)"
            )
        for name in self.END_POINTS:
            x = self._modules[name](x)  # type: ignore[misc]
        return x

    def forward(self, x: Tensor) -> Tensor:
        """The Mixed_5c map averaged over time, (B, 1024, H', W')."""
        return self.time_pool(self.features(x))


@register_model("i3d")
class I3D(LateFusionNet):
    """Two-stream I3D (the MMH paper's action backbone): one :class:`InceptionI3d` per stream, logits averaged.

    ``streams``: stream name -> modality (default one per modality); each stream's first convolution has the
    modality's channel count (rgb 3, depth 1, flow 2; ``in_channels`` overrides). Inputs are clips (B, T, C, H, W)
    (``layout="BCTHW"`` accepts (B, C, T, H, W)) of at least 8 frames and 32x32 pixels; every modality at the same
    size. ``num_frames`` (the data's clip length, which the runner passes) is only checked against that minimum:
    the network is convolutional in time and takes clips of any length. ``dropout`` (default 0.5, the port's
    ``nn.Dropout`` before its logits) drops whole channels of each stream's map (``nn.Dropout2d``), which after the
    spatial mean is dropout on the pooled features, as the port does (per pooled time step there; the time mean here
    is taken first), while ``logits == classifier(penultimate.mean((2, 3)))`` holds in training as well.

    Modules: ``streams.<s>`` (the backbones, output (B, 1024, H', W')), ``fuse`` (their concatenation after dropout:
    ``feature_paths["penultimate"]`` and the one ``feature_paths["dad"]`` layer), ``heads.<s>``, ``classifier``
    (the ``AveragedLinear`` of the heads). The heads act on the time- and space-averaged Mixed_5c features: at
    224x224 this is DeepMind's Kinetics head (a 2x7x7 average pool over the 7x7 map, a 1x1x1 convolution, logits
    averaged over time) up to its 2-frame temporal window, which weighs the first and last time step by half.
    """

    def __init__(
        self,
        *,
        modalities: tuple[str, ...],
        num_classes: int,
        in_channels: Mapping[str, int] | None = None,
        streams: Mapping[str, str] | None = None,
        dropout: float = 0.5,
        layout: str = "BTCHW",
        num_frames: int | None = None,
    ) -> None:
        if num_frames is not None and (
            isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < InceptionI3d.MIN_FRAMES
        ):
            raise ValueError(
                f"num_frames (the data's clip length) must be an int >= {InceptionI3d.MIN_FRAMES} for i3d, "
                f"got {num_frames!r}"
            )
        if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be a probability in [0, 1), got {dropout!r}")
        check_layout(layout)
        specs = image_specs(modalities, in_channels, 1)
        smap = resolve_streams(modalities, streams)
        backbones = {s: InceptionI3d(specs[m].channels) for s, m in smap.items()}
        out = {s: InceptionI3d.out_channels for s in smap}
        super().__init__(modalities, specs, backbones, smap, out, num_classes)
        self.layout = layout
        self.dropout = nn.Dropout2d(float(dropout))
        self.feature_paths = {"penultimate": "fuse", "dad": ["fuse"], **{f"stream.{s}": f"streams.{s}" for s in smap}}

    def clip(self, inputs: Mapping[str, Tensor], modality: str) -> Tensor:
        """``inputs[modality]`` as a (B, C, T, H, W) clip, checked against the network's minimum size."""
        x = inputs.get(modality) if isinstance(inputs, Mapping) else None
        if isinstance(x, Tensor) and x.ndim == 4:
            raise ValueError(
                f"input {modality!r} has shape {tuple(x.shape)}: i3d needs clips ({', '.join(self.layout)}) of at "
                f"least {InceptionI3d.MIN_FRAMES} frames, not single images"
            )
        x = as_clip(inputs, modality, self.specs[modality].channels, self.layout).transpose(1, 2)
        stream = next(s for s, m in self.stream_inputs.items() if m == modality)
        self.streams[stream].check_clip(x.shape, modality)
        return x

    def stream_maps(self, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Each stream's Mixed_5c map averaged over time, after dropout: {stream: (B, 1024, H', W')}."""
        clips = {m: self.clip(inputs, m) for m in dict.fromkeys(self.stream_inputs.values())}
        return {s: self.dropout(self.streams[s](clips[m])) for s, m in self.stream_inputs.items()}
