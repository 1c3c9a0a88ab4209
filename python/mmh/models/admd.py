"""ADMD pieces (thesis ch. 4): the time-aware discriminator. The 128-d bottleneck is ``blocks.BottleneckHead``
(``bottleneck=128`` on the small nets)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn


class FrameDiscriminator(nn.Module):
    """MLP over [bottleneck features ‖ one-hot frame index] with ``num_classes + 1`` outputs.

    Outputs 0..C-1 are the classes (real depth features of that class), output C is "fake" (hallucinated).
    ``forward(features, frame_index)``: features (B, feature_dim) or (B, feature_dim, 1, 1); frame_index (B,) int64
    in [0, num_frames) — the temporal position of the frame the features come from; with ``num_frames=0`` there is
    no frame input (single images) and ``frame_index`` must be None. Hidden layers: Linear + LeakyReLU(0.2);
    the thesis's action-recognition discriminator is ``hidden=(2048, 1024)``.

    ``residual``: indices of hidden layers with a skip connection, ``act(fc(x) + x)`` (the layer's input and output
    widths must agree): the thesis's object-recognition discriminator (4.2.2, Fig. 4.3: "skip connections in the
    lower layers") is ``hidden=(1024, 1024, 1024, 2048, 3072), residual=(1, 2)`` — the 2nd and 3rd 1024-unit
    layers add their input, as in the released NYUD code. The layers' state-dict keys (``net.<i>.weight``) do not
    depend on ``residual``; the layout itself is stored with the weights, as the int64 buffer ``residual_layout``
    (the sorted indices), so a saved discriminator rebuilds as it was trained
    (:func:`mmh.methods.thesis.discriminator_from_state`). Loading a state whose layout differs from this
    discriminator's is a ValueError naming both; a state without ``residual_layout`` (written before the layout was
    stored, when every discriminator was a plain MLP) loads only into a discriminator without ``residual``.
    """

    def __init__(
        self,
        feature_dim: int = 128,
        num_classes: int = 2,
        num_frames: int = 0,
        hidden: Sequence[int] = (2048, 1024),
        residual: Sequence[int] = (),
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
        widths = [feature_dim + num_frames, *hidden]
        ints = all(isinstance(i, int) and not isinstance(i, bool) for i in residual)
        res = sorted(set(residual)) if ints else []
        bad = [i for i in res if not 0 <= i < len(hidden) or widths[i] != widths[i + 1]]
        if bad or not ints:
            raise ValueError(
                f"residual must list hidden layers (0..{len(hidden) - 1}) whose input and output widths agree; "
                f"hidden={list(hidden)} (input {feature_dim + num_frames}) does not allow {list(residual)}"
            )
        self.residual = tuple(res)
        self.register_buffer("residual_layout", torch.tensor(self.residual, dtype=torch.int64))

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        errors: list[str],
    ) -> None:
        """Check the stored residual layout against this discriminator's before loading (see the class docstring)."""
        key = prefix + "residual_layout"
        if key in state_dict:
            got = tuple(int(i) for i in state_dict[key].reshape(-1).tolist())
            if got != self.residual:
                raise ValueError(
                    f"discriminator state {key!r} has residual layers {list(got)}, this FrameDiscriminator "
                    f"{list(self.residual)}: build it with residual={list(got)} (loss.admd.residual of the run)"
                )
        elif self.residual:
            raise ValueError(
                f"discriminator state has no {key!r} (a plain MLP's, written before the layout was stored); this "
                f"FrameDiscriminator has residual layers {list(self.residual)}"
            )
        n = len(missing_keys)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errors)
        if key not in state_dict:  # a plain MLP's state from before the layout was stored: nothing to load
            missing_keys[n:] = [k for k in missing_keys[n:] if k != key]

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
            return self._mlp(features)
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
        return self._mlp(torch.cat([features, onehot], dim=1))

    def _mlp(self, x: Tensor) -> Tensor:
        if not self.residual:
            return self.net(x)
        mods = list(self.net)
        for i in range(len(mods) // 2):  # hidden layer i: net[2i] (Linear), net[2i + 1] (activation)
            y = mods[2 * i](x)
            x = mods[2 * i + 1](y + x if i in self.residual else y)
        return mods[-1](x)
