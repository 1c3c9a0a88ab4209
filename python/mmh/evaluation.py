"""Evaluation metrics: accuracy, ISO/IEC 30107-3 APCER/BPCER/ACER, ensemble (mean-of-logits and oracle) metrics.

Presentation-attack convention (as the built-in anti-spoofing data): label **1 = bona fide (live)**, 0 = attack.

* APCER — attack presentations classified as bona fide / attack presentations;
* BPCER — bona fide presentations classified as attacks / bona fide presentations;
* ACER  — (APCER + BPCER) / 2.

(The reference MMH code's "APCER/NPCER" are swapped relative to ISO; these follow the standard.)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "accuracy", "pad_error_rates", "ensemble_metrics", "compute_metrics", "predict", "evaluate", "METRICS",
]


def _check_logits_labels(logits: Tensor, labels: Tensor) -> None:
    if not isinstance(logits, Tensor) or not isinstance(labels, Tensor):
        raise TypeError("logits and labels must be tensors")
    if logits.dim() != 2:
        raise ValueError(f"logits must be (N, K), got shape {tuple(logits.shape)}")
    if labels.dim() != 1 or labels.shape[0] != logits.shape[0]:
        raise ValueError(f"labels must be (N,) matching logits {tuple(logits.shape)}, got {tuple(labels.shape)}")
    if logits.shape[0] == 0:
        raise ValueError("cannot compute metrics on an empty set (0 samples)")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise TypeError(f"labels must be an integer tensor, got {labels.dtype}")
    if not torch.isfinite(logits).all():
        raise ValueError("logits contain NaN or Inf")
    if labels.min() < 0 or labels.max() >= logits.shape[1]:
        raise ValueError(f"labels must lie in [0, {logits.shape[1]}), got range [{int(labels.min())}, "
                         f"{int(labels.max())}]")


def accuracy(logits: Tensor, labels: Tensor) -> float:
    """Top-1 accuracy of (N, K) logits against (N,) integer labels."""
    _check_logits_labels(logits, labels)
    return float((logits.argmax(1) == labels).float().mean())


def pad_error_rates(pred_bona_fide: Tensor, is_bona_fide: Tensor) -> dict[str, float]:
    """APCER, BPCER and ACER (ISO/IEC 30107-3) from boolean decisions and ground truth.

    ``pred_bona_fide[i]``: the system accepted sample i as bona fide; ``is_bona_fide[i]``: it is bona fide.
    A rate whose denominator is empty (no attacks, or no bona fide samples) is a ValueError: the ACER would be
    meaningless.
    """
    pred = torch.as_tensor(pred_bona_fide).bool().flatten()
    truth = torch.as_tensor(is_bona_fide).bool().flatten()
    if pred.shape != truth.shape:
        raise ValueError(f"pred_bona_fide {tuple(pred.shape)} and is_bona_fide {tuple(truth.shape)} differ in shape")
    attacks, bona = ~truth, truth
    if not attacks.any():
        raise ValueError("APCER is undefined: is_bona_fide has no attack presentations (label 0)")
    if not bona.any():
        raise ValueError("BPCER is undefined: is_bona_fide has no bona fide presentations (label 1)")
    apcer = float((pred & attacks).sum()) / float(attacks.sum())
    bpcer = float((~pred & bona).sum()) / float(bona.sum())
    return {"apcer": apcer, "bpcer": bpcer, "acer": (apcer + bpcer) / 2}


def _pad_from_logits(logits: Tensor, labels: Tensor) -> dict[str, float]:
    _check_logits_labels(logits, labels)
    if logits.shape[1] != 2:
        raise ValueError(f"APCER/BPCER/ACER need binary logits (N, 2) with class 1 = bona fide, got "
                         f"{tuple(logits.shape)}")
    return pad_error_rates(logits.argmax(1) == 1, labels == 1)


#: Metric name -> function(logits, labels) returning a float or a dict of floats.
METRICS: dict[str, Callable[[Tensor, Tensor], Any]] = {"accuracy": accuracy, "acer": _pad_from_logits}


def compute_metrics(logits: Tensor, labels: Tensor, names: Sequence[str] = ("accuracy",)) -> dict[str, float]:
    """The named metrics (see :data:`METRICS`; ``"acer"`` adds apcer, bpcer and acer)."""
    out: dict[str, float] = {}
    for name in names:
        if name not in METRICS:
            raise ValueError(f"unknown metric {name!r}; known: {sorted(METRICS)}")
        value = METRICS[name](logits, labels)
        out.update(value if isinstance(value, dict) else {name: value})
    return out


def ensemble_metrics(member_logits: Mapping[str, Tensor], labels: Tensor) -> dict[str, float]:
    """Accuracy of each member, of the mean of logits ("ensemble", the Σ of DMCL) and the oracle.

    The oracle counts a sample correct when at least one member is correct (an upper bound for any selector).
    """
    if not member_logits:
        raise ValueError("member_logits is empty")
    out = {f"accuracy/{name}": accuracy(lg, labels) for name, lg in member_logits.items()}
    stacked = torch.stack(list(member_logits.values()))
    out["accuracy/ensemble"] = accuracy(stacked.mean(0), labels)
    out["accuracy/oracle"] = float((stacked.argmax(2) == labels).any(0).float().mean())
    return out


@torch.no_grad()
def predict(model: nn.Module | Callable[[Mapping[str, Tensor]], Tensor], batches: Any,
            device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """Run ``model`` over an iterable of batch dicts; return (logits (N, K) float32 on CPU, labels (N,)).

    The model is put in eval mode for the pass and restored afterwards.
    """
    was_training = getattr(model, "training", None)
    if isinstance(model, nn.Module):
        model.eval()
    logits, labels = [], []
    try:
        for batch in batches:
            if "label" not in batch:
                raise KeyError("evaluation batch has no 'label' key")
            inputs = {k: (v.to(device) if isinstance(v, Tensor) else v) for k, v in batch.items()}
            out = model(inputs)
            logits.append(out.float().cpu())
            labels.append(batch["label"].cpu())
    finally:
        if isinstance(model, nn.Module) and was_training:
            model.train()
    if not logits:
        raise ValueError("predict: the evaluation data produced no batches")
    return torch.cat(logits), torch.cat(labels)


def evaluate(model: nn.Module | Callable[[Mapping[str, Tensor]], Tensor], batches: Any,
             metrics: Sequence[str] = ("accuracy",), device: torch.device | str = "cpu") -> dict[str, float]:
    """:func:`predict` then :func:`compute_metrics`."""
    logits, labels = predict(model, batches, device)
    return compute_metrics(logits, labels, metrics)
