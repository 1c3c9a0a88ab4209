"""Thesis evaluations: Σ, oracle Φ, subsets, the noise sweep and its plot."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mmh.evaluation_thesis import (
    SIGMA2_GRID, mcl_metrics, noise_sweep, noisy_batches, plot_noise_sweep, subset_logits,
)
from mmh.models import build_model
from mmh.train.data import CachedDataset


def _data(n: int = 12) -> CachedDataset:
    g = torch.Generator().manual_seed(0)
    return CachedDataset({"rgb": torch.rand(n, 3, 32, 32, generator=g), "depth": torch.rand(n, 1, 32, 32, generator=g),
                          "label": torch.arange(n) % 3}, modalities=("rgb", "depth"), num_classes=3,
                         class_names=["a", "b", "c"])


def test_subset_sum_and_oracle_by_hand():
    per = {"a": torch.tensor([[2.0, 0.0], [0.0, 1.0]]), "b": torch.tensor([[0.0, 3.0], [1.0, 0.0]])}
    assert torch.equal(subset_logits(per, ["a", "b"]), torch.tensor([[1.0, 1.5], [0.5, 0.5]]))
    assert torch.equal(subset_logits(per, ["b"]), per["b"])
    with pytest.raises(KeyError, match="flow"):
        subset_logits(per, ["flow"])
    with pytest.raises(ValueError):
        subset_logits(per, [])


def test_mcl_metrics_on_a_net():
    net = build_model("small_late_fusion", modalities=("rgb", "depth"), num_classes=3, width=4, shared_width=4, seed=0)
    m = mcl_metrics(net, _data(), batch_size=5)
    assert set(m) == {"accuracy/rgb", "accuracy/depth", "sum", "oracle"}
    assert m["oracle"] >= max(m["accuracy/rgb"], m["accuracy/depth"])
    with pytest.raises(TypeError, match="multi-stream"):
        mcl_metrics(build_model("small_joint", modalities=("rgb",), num_classes=3, seed=0), _data())


def test_noise_is_reproducible_and_void_zeroes(tmp_path: Path):
    ds = _data()
    a = next(noisy_batches(ds, 4, "depth", 1e-1, seed=3))["depth"]
    b = next(noisy_batches(ds, 4, "depth", 1e-1, seed=3))["depth"]
    assert torch.equal(a, b) and not torch.equal(a, ds.tensors["depth"][:4])
    assert torch.equal(next(noisy_batches(ds, 4, "depth", 0.0))["depth"], ds.tensors["depth"][:4])
    assert next(noisy_batches(ds, 4, "depth", "void"))["depth"].abs().sum() == 0
    net = build_model("small_late_fusion", modalities=("rgb", "depth"), num_classes=3, width=4, shared_width=4, seed=0)
    sweep = noise_sweep(net, ds, batch_size=6)
    assert list(sweep) == [str(s) for s in SIGMA2_GRID] and all(0.0 <= v <= 1.0 for v in sweep.values())
    png = plot_noise_sweep({"net": sweep}, tmp_path / "sweep.png")
    assert png.is_file() and png.stat().st_size > 1000
    with pytest.raises(ValueError, match="sigma2"):
        next(noisy_batches(ds, 4, "depth", -1.0))
