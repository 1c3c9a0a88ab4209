"""Evaluations of the thesis: per-stream accuracy, Σ (mean of logits), oracle Φ, prediction from any subset of
modalities, and the noisy-privileged-modality sweep (multiplicative speckle ``I·n, n ~ N(1, σ²)``; its figure:
:func:`mmh.evaluation.plots.plot_sweep`).

Models here are multi-stream nets (``LateFusionNet`` and subclasses: ``forward_all`` gives the averaged and the
per-stream logits).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from ..data.transforms import SpeckleNoise
from .metrics import accuracy, ensemble_metrics
from .prediction import eval_batches, predict, predict_outputs

__all__ = ["SIGMA2_GRID", "stream_logits", "subset_logits", "mcl_metrics", "noisy_batches", "noise_sweep"]

#: The thesis's noise grid (variance σ² of the multiplicative noise; "void" zeroes the modality).
SIGMA2_GRID: tuple[float | str, ...] = (0.0, 1e-3, 1e-2, 1e-1, 1.0, 10.0, "void")


def _streams_of(model: nn.Module) -> list[str]:
    if not hasattr(model, "forward_all") or not isinstance(getattr(model, "streams", None), nn.ModuleDict):
        raise TypeError(f"{type(model).__name__} is not a multi-stream network (needs forward_all and streams)")
    return list(model.streams)


def stream_logits(
    model: nn.Module, batches: Any, device: torch.device | str = "cpu"
) -> tuple[dict[str, Tensor], Tensor]:
    """Per-stream logits {stream: (N, K)} and labels (N,) of ``model`` over ``batches`` (eval mode)."""
    streams = _streams_of(model)
    model.to(device)
    outputs, labels = predict_outputs(
        model, batches, device, forward=lambda inputs: model.forward_all(inputs)[1], who="stream_logits"
    )
    return {s: torch.cat([out[s] for out in outputs]) for s in streams}, labels


def stream_accuracies(model: nn.Module, batches: Any, device: torch.device | str = "cpu") -> dict[str, float]:
    """Each stream's accuracy alone {stream: accuracy} of ``model`` over ``batches`` (eval mode)."""
    per, labels = stream_logits(model, batches, device)
    return {s: accuracy(z, labels) for s, z in per.items()}


def subset_logits(per_stream: Mapping[str, Tensor], subset: Sequence[str]) -> Tensor:
    """Σ over a subset of streams: the mean of their logits (KeyError naming a stream that does not exist)."""
    if not subset:
        raise ValueError("subset must name at least one stream")
    missing = [s for s in subset if s not in per_stream]
    if missing:
        raise KeyError(f"streams {missing} not among {sorted(per_stream)}")
    return torch.stack([per_stream[s] for s in subset]).mean(0)


def mcl_metrics(model: nn.Module, dataset: Dataset, batch_size: int = 256) -> dict[str, float]:
    """``accuracy/<stream>`` per stream, ``sum`` (Σ: accuracy of the mean of logits) and ``oracle`` (Φ: a sample
    counts when at least one stream is right)."""
    per, labels = stream_logits(model, eval_batches(dataset, batch_size))
    m = ensemble_metrics(per, labels)
    out = {k: v for k, v in m.items() if k not in ("accuracy/ensemble", "accuracy/oracle")}
    out["sum"], out["oracle"] = m["accuracy/ensemble"], m["accuracy/oracle"]
    return out


def noisy_batches(
    dataset: Dataset, batch_size: int, modality: str, sigma2: float | str, seed: int = 0
) -> Iterator[dict[str, Tensor]]:
    """Evaluation batches of ``dataset`` with :class:`mmh.data.transforms.SpeckleNoise` on ``modality`` (noise
    drawn from a generator seeded with ``seed``: the same seed gives the same noise)."""
    noise = SpeckleNoise(modality, sigma2, generator=torch.Generator().manual_seed(seed))
    for batch in eval_batches(dataset, batch_size):
        yield noise(dict(batch))


def noise_sweep(
    model: nn.Module,
    dataset: Dataset,
    *,
    modality: str = "depth",
    sigma2s: Sequence[float | str] = SIGMA2_GRID,
    batch_size: int = 256,
    seed: int = 0,
) -> dict[str, float]:
    """Accuracy of ``model`` with speckle noise of variance σ² on ``modality`` for every σ² (keys ``str(σ²)``)."""
    out = {}
    for s2 in sigma2s:
        logits, labels = predict(model, noisy_batches(dataset, batch_size, modality, s2, seed))
        out[str(s2)] = accuracy(logits, labels)
    return out
