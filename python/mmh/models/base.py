"""The shared base of the built-in models (attributes of the model contract)."""

from __future__ import annotations

from typing import Any

from torch import nn


class ZooModel(nn.Module):
    """Base class of the built-in models.

    Attributes of the contract: ``modalities`` (keys read by ``forward``), ``config`` (filled by ``build_model``),
    ``feature_paths`` (role -> dotted module path; ``"penultimate"``: the last feature map (B, C, H, W) before
    global average pooling; ``"dad"``: list of paths of the shared layers) and ``classifier`` (nn.Linear with
    ``logits == classifier(penultimate.mean((2, 3)))``).
    """

    classifier: nn.Linear

    def __init__(self, modalities: tuple[str, ...]) -> None:
        super().__init__()
        self.modalities: tuple[str, ...] = tuple(modalities)
        self.config: dict[str, Any] = {}
        self.feature_paths: dict[str, Any] = {}
