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


@pytest.fixture
def own_data_train_args(repo_root: Path):
    """``mmh train`` arguments for the paired_folder teacher template on a tiny tree at ``root``: 8x8 inputs, a
    4-wide ``small_joint``, ``steps`` steps of batch 4 on one thread, no stage cache; ``extra`` overrides follow."""

    def make(root: Path, *extra: str, steps: int = 2) -> list[str]:
        return [
            "train",
            str(repo_root / "configs/templates/paired_folder/teacher.yaml"),
            f"dataset.kwargs.root={root}",
            "dataset.kwargs.resolution=8",
            "train.epochs=null",
            f"train.steps={steps}",
            "train.batch_size=4",
            "train.progress=false",
            "threads=1",
            "model.kwargs={width: 4, shared_width: 4}",
            "output.cache=''",
            *extra,
        ]

    return make
