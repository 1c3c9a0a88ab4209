"""Thesis evaluations: Σ, oracle Φ, subsets, the noise sweep and its plot."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mmh.data import CachedDataset
from mmh.evaluation.plots import plot_sweep
from mmh.evaluation.thesis import SIGMA2_GRID, mcl_metrics, noise_sweep, noisy_batches, subset_logits
from mmh.models import build_model


def _data(n: int = 12) -> CachedDataset:
    g = torch.Generator().manual_seed(0)
    return CachedDataset(
        {
            "rgb": torch.rand(n, 3, 32, 32, generator=g),
            "depth": torch.rand(n, 1, 32, 32, generator=g),
            "label": torch.arange(n) % 3,
        },
        modalities=("rgb", "depth"),
        num_classes=3,
        class_names=["a", "b", "c"],
    )


def test_subset_sum_and_oracle_by_hand():
    per = {"a": torch.tensor([[2.0, 0.0], [0.0, 1.0]]), "b": torch.tensor([[0.0, 3.0], [1.0, 0.0]])}
    assert torch.equal(subset_logits(per, ["a", "b"]), torch.tensor([[1.0, 1.5], [0.5, 0.5]]))
    assert torch.equal(subset_logits(per, ["b"]), per["b"])
    with pytest.raises(KeyError, match="flow"):
        subset_logits(per, ["flow"])
    with pytest.raises(ValueError):
        subset_logits(per, [])


class _Readout(torch.nn.Module):
    """A two-stream "net" whose stream logits are its inputs (rgb, depth: (N, 3) tensors) — predictions chosen by
    hand. ``forward`` is the mean (Σ)."""

    def __init__(self) -> None:
        super().__init__()
        self.streams = torch.nn.ModuleDict({"rgb": torch.nn.Identity(), "depth": torch.nn.Identity()})

    def forward_all(self, batch):
        per = {"rgb": batch["rgb"], "depth": batch["depth"]}
        return (per["rgb"] + per["depth"]) / 2, per

    def forward(self, batch):
        return self.forward_all(batch)[0]


def _onehot(classes, scale=1.0):
    return scale * torch.nn.functional.one_hot(torch.tensor(classes), 3).float()


def test_mcl_metrics_with_a_nontrivial_oracle():
    # labels 0 1 2 0 1 2; rgb right on samples 0-2 (1.0 confident), depth right on 2-3 (2.0 confident)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    rgb = _onehot([0, 1, 2, 1, 2, 0])
    depth = _onehot([1, 2, 2, 0, 0, 1], 2.0)
    ds = CachedDataset(
        {"rgb": rgb, "depth": depth, "label": y},
        modalities=("rgb", "depth"),
        num_classes=3,
        class_names=["a", "b", "c"],
    )
    m = mcl_metrics(_Readout(), ds, batch_size=4)
    # rgb 3/6, depth 2/6; oracle: samples 0, 1, 2, 3 -> 4/6 > either; Σ = the more confident depth wins the
    # disagreements (0, 1, 3, 4, 5) and both agree on 2 -> right on 2, 3 -> 2/6
    assert m == pytest.approx({"accuracy/rgb": 0.5, "accuracy/depth": 1 / 3, "oracle": 2 / 3, "sum": 1 / 3})


def test_mcl_metrics_on_a_net():
    net = build_model("small_late_fusion", modalities=("rgb", "depth"), num_classes=3, width=4, shared_width=4, seed=0)
    m = mcl_metrics(net, _data(), batch_size=5)
    assert set(m) == {"accuracy/rgb", "accuracy/depth", "sum", "oracle"}
    with pytest.raises(TypeError, match="multi-stream"):
        mcl_metrics(build_model("small_joint", modalities=("rgb",), num_classes=3, seed=0), _data())


class _DepthThreshold(torch.nn.Module):
    """Predicts class 1 when a sample's mean depth exceeds 0.5, else class 0 (logits (0.5, mean, 0))."""

    def forward(self, batch):
        m = batch["depth"].flatten(1).mean(1)
        return torch.stack([torch.full_like(m, 0.5), m, torch.zeros_like(m)], 1)


def test_noise_sweep_values_by_hand():
    # depth constant 0.2 (label 0) or 0.8 (label 1), 4 of each: clean -> all right; σ² = 1e-3 multiplies by
    # n ~ N(1, 0.001) per pixel, the mean moves by ~1e-3 -> still all right; "void" zeroes depth -> every
    # prediction is 0 -> accuracy 4/8
    y = torch.tensor([0, 1] * 4)
    depth = (0.2 + 0.6 * y.float()).view(8, 1, 1, 1).expand(8, 1, 8, 8).contiguous()
    ds = CachedDataset({"depth": depth, "label": y}, modalities=("depth",), num_classes=3, class_names=["a", "b", "c"])
    sweep = noise_sweep(_DepthThreshold(), ds, sigma2s=(0.0, 1e-3, "void"), batch_size=3)
    assert sweep == {"0.0": 1.0, "0.001": 1.0, "void": 0.5}


class _DepthSpread(torch.nn.Module):
    """Predicts class 1 when the spread (std over the pixels) of a sample's depth exceeds 0.1, else class 0."""

    def forward(self, batch):
        s = batch["depth"].flatten(1).std(1)
        return torch.stack([torch.full_like(s, 0.1), s, torch.zeros_like(s)], 1)


def test_noise_sweep_uses_sigma2_as_the_variance():
    # depth constant 0.5 over 16x16 pixels, every label 1. I·n with n ~ N(1, σ²) has a pixel std of 0.5·σ:
    # σ² = 0 and void -> std 0 -> class 0 (accuracy 0); σ² = 1e-3 -> 0.5 · 0.0316 = 0.016 < 0.1 -> 0;
    # σ² = 1e-1 -> 0.5 · 0.316 = 0.158 > 0.1 -> 1 (had σ² been taken as the std: 0.05 -> 0); σ² = 1 -> 0.5 -> 1.
    # With 256 pixels the sample std is within ~5 % of 0.5·σ, far from the threshold at every level.
    ds = CachedDataset(
        {"depth": torch.full((8, 1, 16, 16), 0.5), "label": torch.ones(8, dtype=torch.long)},
        modalities=("depth",),
        num_classes=3,
        class_names=["a", "b", "c"],
    )
    sweep = noise_sweep(_DepthSpread(), ds, sigma2s=(0.0, 1e-3, 1e-1, 1, "void"), batch_size=3)
    assert sweep == {"0.0": 0.0, "0.001": 0.0, "0.1": 1.0, "1": 1.0, "void": 0.0}


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
    png = plot_sweep({"net": {k: [v] for k, v in sweep.items()}}, tmp_path / "sweep.png")
    assert png.is_file() and png.stat().st_size > 1000
    with pytest.raises(ValueError, match="sigma2"):
        next(noisy_batches(ds, 4, "depth", -1.0))


def test_stream_accuracies_by_hand():
    """Each stream alone, against predictions chosen by hand (rgb right on 3 of 6, depth on 2 of 6)."""
    from mmh.evaluation import eval_batches
    from mmh.evaluation.thesis import stream_accuracies

    y = torch.tensor([0, 1, 2, 0, 1, 2])
    ds = CachedDataset(
        {"rgb": _onehot([0, 1, 2, 1, 2, 0]), "depth": _onehot([1, 2, 2, 0, 0, 1], 2.0), "label": y},
        modalities=("rgb", "depth"),
        num_classes=3,
        class_names=["a", "b", "c"],
    )
    assert stream_accuracies(_Readout(), eval_batches(ds, 4)) == pytest.approx({"rgb": 0.5, "depth": 1 / 3})
