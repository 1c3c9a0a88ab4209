"""Shared fixtures of the framework tests: a tiny registered dataset and tiny models, fast on 2 CPU cores."""

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


@pytest.fixture
def repo_root() -> Path:
    return ROOT
