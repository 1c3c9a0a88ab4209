"""Shared setup of the thesis-method tests: import paths, one thread, the tiny overrides."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
for p in (ROOT / "python", ROOT):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

torch.set_num_threads(1)

#: Overrides that make any thesis config run in about a second.
TINY = [
    "dataset.split_kwargs={train: {size: 32}, test: {size: 24}}",
    "train.batch_size=16",
    "train.steps=3",
    "train.progress=false",
    "threads=1",
]


@pytest.fixture
def tiny() -> list[str]:
    return list(TINY)
