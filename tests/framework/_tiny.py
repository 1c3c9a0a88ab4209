"""Tiny models and datasets for fast framework tests."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset


class TinyNet(nn.Module):
    """x (B, D) -> body (B, H, 1, 1 map) -> dropout -> classifier; follows the model contract."""

    def __init__(self, d: int = 6, h: int = 8, k: int = 3, dropout: float = 0.3, key: str = "x") -> None:
        super().__init__()
        self.key = key
        self.modalities = (key,)
        self.body = nn.Sequential(nn.Linear(d, h), nn.Tanh())
        self.drop = nn.Dropout(dropout)
        self.classifier = nn.Linear(h, k)
        self.feature_paths = {"penultimate": "body", "dad": ["body"]}
        self.config = {}

    def forward(self, batch):
        return self.classifier(self.drop(self.body(batch[self.key])))


class TinySet(Dataset):
    """n samples of D features; class = argmax of the first K features (learnable)."""

    modalities = ("x",)
    num_classes = 3
    class_names = ["a", "b", "c"]

    def __init__(self, n: int = 40, d: int = 6, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, d, generator=g)
        self.y = self.x[:, :3].argmax(1)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i):
        return {"x": self.x[i], "label": self.y[i]}
