"""ADMD pieces (thesis ch. 4): the time-aware discriminator. The 128-d bottleneck is ``blocks.BottleneckHead``
(``bottleneck=128`` on the small nets)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


class FrameDiscriminator(nn.Module):
    """MLP over [bottleneck features ‖ one-hot frame index] with ``num_classes + 1`` outputs.

    Outputs 0..C-1 are the classes (real depth features of that class), output C is "fake" (hallucinated).
    ``forward(features, frame_index)``: features (B, feature_dim) or (B, feature_dim, 1, 1); frame_index (B,) int64
    in [0, num_frames) — the temporal position of the frame the features come from; with ``num_frames=0`` there is
    no frame input (single images) and ``frame_index`` must be None. Hidden layers: Linear + LeakyReLU(0.2);
    the thesis's action-recognition discriminator is ``hidden=(2048, 1024)``.
    """

    def __init__(
        self, feature_dim: int = 128, num_classes: int = 2, num_frames: int = 0, hidden: Sequence[int] = (2048, 1024)
    ) -> None:
        super().__init__()
        if feature_dim < 1 or num_classes < 1 or num_frames < 0:
            raise ValueError(
                f"bad FrameDiscriminator sizes: feature_dim={feature_dim}, num_classes={num_classes}, "
                f"num_frames={num_frames}"
            )
        self.feature_dim, self.num_classes, self.num_frames = feature_dim, num_classes, num_frames
        layers: list[nn.Module] = []
        prev = feature_dim + num_frames
        for h in hidden:
            layers += [nn.Linear(prev, h), nn.LeakyReLU(0.2, inplace=True)]
            prev = h
        layers.append(nn.Linear(prev, num_classes + 1))
        self.net = nn.Sequential(*layers)

    @property
    def fake_index(self) -> int:
        """Index of the "fake" output."""
        return self.num_classes

    def forward(self, features: Tensor, frame_index: Tensor | None = None) -> Tensor:
        """Logits (B, num_classes + 1)."""
        if features.ndim == 4 and features.shape[2:] == (1, 1):
            features = features.flatten(1)
        if features.ndim != 2 or features.shape[1] != self.feature_dim:
            raise ValueError(f"features must have shape (B, {self.feature_dim}), got {tuple(features.shape)}")
        if self.num_frames == 0:
            if frame_index is not None:
                raise ValueError("frame_index given but the discriminator was built with num_frames=0")
            return self.net(features)
        if frame_index is None:
            raise ValueError(f"frame_index is required (discriminator built with num_frames={self.num_frames})")
        if frame_index.dtype not in (torch.int64, torch.int32) or frame_index.shape != features.shape[:1]:
            raise ValueError(
                f"frame_index must be an integer tensor of shape ({features.shape[0]},), got "
                f"{tuple(frame_index.shape)} {frame_index.dtype}"
            )
        if frame_index.numel() and (frame_index.min() < 0 or frame_index.max() >= self.num_frames):
            raise ValueError(
                f"frame_index values must lie in [0, {self.num_frames}), got "
                f"[{int(frame_index.min())}, {int(frame_index.max())}]"
            )
        onehot = nn.functional.one_hot(frame_index.long(), self.num_frames).to(features.dtype)
        return self.net(torch.cat([features, onehot], dim=1))
