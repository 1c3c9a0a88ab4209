"""Evaluations of the thesis: per-stream accuracy, Σ (mean of logits), oracle Φ, prediction from any subset of
modalities, and the noisy-privileged-modality sweep (multiplicative speckle ``I·n, n ~ N(1, σ²)``).

Models here are multi-stream nets (``LateFusionNet`` and subclasses: ``forward_all`` gives the averaged and the
per-stream logits).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from .data.transforms import SpeckleNoise
from .evaluation import accuracy, ensemble_metrics
from .data.loader import eval_batches

__all__ = ["SIGMA2_GRID", "stream_logits", "subset_logits", "mcl_metrics", "subset_accuracy", "noisy_batches",
           "noise_sweep", "plot_noise_sweep"]

#: The thesis's noise grid (variance σ² of the multiplicative noise; "void" zeroes the modality).
SIGMA2_GRID: tuple[float | str, ...] = (0.0, 1e-3, 1e-2, 1e-1, 1.0, 10.0, "void")


def _streams_of(model: nn.Module) -> list[str]:
    if not hasattr(model, "forward_all") or not isinstance(getattr(model, "streams", None), nn.ModuleDict):
        raise TypeError(f"{type(model).__name__} is not a multi-stream network (needs forward_all and streams)")
    return list(model.streams)


@torch.no_grad()
def stream_logits(model: nn.Module, batches: Any, device: torch.device | str = "cpu"
                  ) -> tuple[dict[str, Tensor], Tensor]:
    """Per-stream logits {stream: (N, K)} and labels (N,) of ``model`` over ``batches`` (eval mode)."""
    streams = _streams_of(model)
    was = model.training
    model.eval().to(device)
    per: dict[str, list[Tensor]] = {s: [] for s in streams}
    labels: list[Tensor] = []
    try:
        for batch in batches:
            if "label" not in batch:
                raise KeyError("evaluation batch has no 'label' key")
            inputs = {k: (v.to(device) if isinstance(v, Tensor) else v) for k, v in batch.items()}
            for s, z in model.forward_all(inputs)[1].items():
                per[s].append(z.float().cpu())
            labels.append(batch["label"].cpu())
    finally:
        model.train(was)
    if not labels:
        raise ValueError("stream_logits: the evaluation data produced no batches")
    return {s: torch.cat(v) for s, v in per.items()}, torch.cat(labels)


def subset_logits(per_stream: Mapping[str, Tensor], subset: Sequence[str]) -> Tensor:
    """Σ over a subset of streams: the mean of their logits (KeyError naming a stream that does not exist)."""
    if not subset:
        raise ValueError("subset must name at least one stream")
    missing = [s for s in subset if s not in per_stream]
    if missing:
        raise KeyError(f"streams {missing} not among {sorted(per_stream)}")
    return torch.stack([per_stream[s] for s in subset]).mean(0)


def subset_accuracy(model: nn.Module, dataset: Dataset, subset: Sequence[str], batch_size: int = 256) -> float:
    """Accuracy of the mean of the logits of the streams in ``subset`` (prediction from any subset of modalities)."""
    per, labels = stream_logits(model, eval_batches(dataset, batch_size))
    return accuracy(subset_logits(per, subset), labels)


def mcl_metrics(model: nn.Module, dataset: Dataset, batch_size: int = 256) -> dict[str, float]:
    """``accuracy/<stream>`` per stream, ``sum`` (Σ: accuracy of the mean of logits) and ``oracle`` (Φ: a sample
    counts when at least one stream is right)."""
    per, labels = stream_logits(model, eval_batches(dataset, batch_size))
    m = ensemble_metrics(per, labels)
    out = {k: v for k, v in m.items() if k not in ("accuracy/ensemble", "accuracy/oracle")}
    out["sum"], out["oracle"] = m["accuracy/ensemble"], m["accuracy/oracle"]
    return out


def noisy_batches(dataset: Dataset, batch_size: int, modality: str, sigma2: float | str, seed: int = 0
                  ) -> Iterator[dict[str, Tensor]]:
    """Evaluation batches of ``dataset`` with :class:`mmh.data.transforms.SpeckleNoise` on ``modality`` (noise
    drawn from a generator seeded with ``seed``: the same seed gives the same noise)."""
    noise = SpeckleNoise(modality, sigma2, generator=torch.Generator().manual_seed(seed))
    for batch in eval_batches(dataset, batch_size):
        yield noise(dict(batch))


@torch.no_grad()
def noise_sweep(model: nn.Module, dataset: Dataset, *, modality: str = "depth",
                sigma2s: Sequence[float | str] = SIGMA2_GRID, batch_size: int = 256, seed: int = 0
                ) -> dict[str, float]:
    """Accuracy of ``model`` with speckle noise of variance σ² on ``modality`` for every σ² (keys ``str(σ²)``)."""
    from .evaluation import predict

    out = {}
    for s2 in sigma2s:
        logits, labels = predict(model, noisy_batches(dataset, batch_size, modality, s2, seed))
        out[str(s2)] = accuracy(logits, labels)
    return out


def plot_noise_sweep(curves: Mapping[str, Mapping[str, float]], path: str | Path, *,
                     title: str = "noisy depth at test time", ylabel: str = "accuracy") -> Path:
    """Plot ``{label: {σ²: value}}`` (one line per label, σ² as categories) to a PNG (matplotlib Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not curves:
        raise ValueError("plot_noise_sweep: no curves")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for label, curve in curves.items():
        keys = list(curve)
        ax.plot(range(len(keys)), [curve[k] for k in keys], marker="o", label=label)
        ax.set_xticks(range(len(keys)), keys)
    ax.set_xlabel("σ² of the multiplicative noise on depth")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
