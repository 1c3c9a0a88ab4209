"""Small building blocks shared by the models."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1) -> nn.Sequential:
    """Conv (no bias) + BatchNorm + ReLU, 'same' padding for odd kernels."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class SEBlock(nn.Module):
    """Squeeze-and-excitation: x * sigmoid(W2 relu(W1 mean_hw(x)))."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(s))))


class BottleneckHead(nn.Module):
    """ADMD's bottleneck: global average pooling then a 1x1 convolution to ``dim`` channels.

    Input (B, C, H, W); output (B, dim, 1, 1) (use ``.flatten(1)`` for the (B, dim) vector). Linear, so a
    classifier on top keeps ``logits == classifier(bottleneck.mean((2, 3)))``.
    """

    def __init__(self, in_channels: int, dim: int = 128) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"bottleneck dim must be >= 1, got {dim}")
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv = nn.Conv2d(in_channels, dim, 1)
        self.out_channels = dim

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(self.pool(x))


class Concat(nn.Module):
    """Concatenate a sequence of maps along channels (a module so the fused map can be hooked)."""

    def forward(self, maps: Sequence[Tensor]) -> Tensor:
        return torch.cat(list(maps), dim=1)


class TemporalConv(nn.Module):
    """A 3x1x1 (``kernel_size``x1x1) temporal convolution over frames folded into the batch.

    ``forward(x, num_frames)`` takes (B*T, C, H, W), convolves over T with zero padding and returns the same shape.
    Initialised to the exact identity: weight 0 everywhere except eye(C) at the centre tap, bias 0 (the released
    TF code padded with a constant and was not an identity; this is).
    """

    def __init__(self, channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"temporal kernel_size must be odd and >= 1, got {kernel_size}")
        self.conv = nn.Conv3d(channels, channels, (kernel_size, 1, 1), padding=(kernel_size // 2, 0, 0))
        self.reset_identity()

    @torch.no_grad()
    def reset_identity(self) -> None:
        """Set the weights to the identity map."""
        self.conv.weight.zero_()
        centre = self.conv.kernel_size[0] // 2
        c = self.conv.out_channels
        self.conv.weight[:, :, centre, 0, 0] = torch.eye(c, dtype=self.conv.weight.dtype)
        self.conv.bias.zero_()

    def forward(self, x: Tensor, num_frames: int) -> Tensor:
        bt, c, h, w = x.shape
        if num_frames < 1 or bt % num_frames:
            raise ValueError(f"TemporalConv: batch of {bt} frames is not a multiple of num_frames={num_frames}")
        b = bt // num_frames
        y = x.reshape(b, num_frames, c, h, w).transpose(1, 2)
        y = self.conv(y)
        return y.transpose(1, 2).reshape(bt, c, h, w)


class AveragedLinear(nn.Linear):
    """The linear map equal to averaging the logits of several heads (late fusion).

    For heads W_m, b_m over per-stream features p_m: mean_m(W_m p_m + b_m) = W [p_1; ...; p_M] + b with
    W = [W_1 ... W_M] / M and b = mean_m b_m. ``weight`` and ``bias`` are computed from the heads on every access
    (differentiable, always current); the heads' parameters belong to the model, not to this module.
    """

    def __init__(self, heads: Mapping[str, nn.Linear]) -> None:
        nn.Module.__init__(self)
        if not heads:
            raise ValueError("AveragedLinear needs at least one head")
        outs = {h.out_features for h in heads.values()}
        if len(outs) != 1:
            raise ValueError(f"heads have different numbers of outputs {outs}")
        object.__setattr__(self, "_heads", heads)  # not registered: parameters stay owned by the model
        self.in_features = sum(h.in_features for h in heads.values())
        self.out_features = outs.pop()

    @property
    def weight(self) -> Tensor:  # type: ignore[override]
        heads = list(self._heads.values())
        return torch.cat([h.weight for h in heads], dim=1) / len(heads)

    @property
    def bias(self) -> Tensor:  # type: ignore[override]
        return torch.stack([h.bias for h in self._heads.values()]).mean(0)

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.linear(x, self.weight, self.bias)
