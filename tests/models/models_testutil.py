"""Helpers for the model tests: tiny random batches."""

from __future__ import annotations

import torch

from mmh.models import FeatureExtractor

CH = {"rgb": 3, "depth": 1, "ir": 1, "flow": 2}


def make_batch(modalities, batch=2, frames=None, size=32, seed=0, channels=None):
    """{modality: (B, [T,] C, H, W) float tensor, "label": int64} with a fixed seed."""
    g = torch.Generator().manual_seed(seed)
    chans = {**CH, **(channels or {})}
    out = {}
    for m in modalities:
        shape = (batch, chans[m], size, size) if frames is None else (batch, frames, chans[m], size, size)
        out[m] = torch.randn(shape, generator=g)
    out["label"] = torch.zeros(batch, dtype=torch.long)
    return out


def check_contract(model, batch, rows_per_sample=1):
    """logits == classifier(penultimate.mean((2, 3))) through FeatureExtractor; dad paths exist and give
    ``rows_per_sample`` rows per sample (T for models with frames folded into the batch)."""
    paths = [model.feature_paths["penultimate"], *model.feature_paths["dad"]]
    with FeatureExtractor(model, paths) as feats:
        logits = model(batch)
    pen = feats[model.feature_paths["penultimate"]]
    assert pen.ndim == 4
    assert logits.shape == (batch["label"].shape[0], model.classifier.out_features)
    torch.testing.assert_close(model.classifier(pen.mean((2, 3))), logits, rtol=1e-5, atol=1e-5)
    for p in model.feature_paths["dad"]:
        assert feats[p].shape[0] == logits.shape[0] * rows_per_sample
    return logits, feats
