"""The prediction loop (written once): evaluation batches, a model's outputs over them, and a model's metrics.

:func:`predict_outputs` runs a network (or any ``forward``, e.g. a multi-stream net's per-stream logits) in eval mode
over batch dicts; :func:`predict` gives its logits, :func:`evaluate_model` its metrics on a dataset (an ensemble of
named members also gets each member's, the mean's and the oracle's accuracy).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from ..data.loader import eval_batches, to_device
from ..models.ensemble import ensemble_members
from .metrics import compute_metrics, ensemble_metrics

__all__ = ["eval_batches", "predict_outputs", "predict", "evaluate_model"]

Model = nn.Module | Callable[[Mapping[str, Tensor]], Tensor]


@contextmanager
def _eval_mode(model: Any) -> Iterator[None]:
    """``model`` in eval mode inside the block (a module that was training is put back in training mode)."""
    was_training = isinstance(model, nn.Module) and model.training
    if isinstance(model, nn.Module):
        model.eval()
    try:
        yield
    finally:
        if was_training:
            model.train()


def _float_cpu(out: Tensor | Mapping[str, Tensor]) -> Tensor | dict[str, Tensor]:
    if isinstance(out, Mapping):
        return {k: z.float().cpu() for k, z in out.items()}
    return out.float().cpu()


@torch.no_grad()
def predict_outputs(
    model: Model,
    batches: Iterable[Mapping[str, Any]],
    device: torch.device | str = "cpu",
    *,
    forward: Callable[[dict[str, Any]], Any] | None = None,
    who: str = "predict",
) -> tuple[list[Any], Tensor]:
    """The prediction loop: ``forward(inputs)`` (default ``model(inputs)``; a tensor or a dict of tensors) for
    every batch dict, its tensors moved to ``device``, with ``model`` in eval mode (restored afterwards). Returns
    the outputs per batch (float32, on CPU) and the labels (N,). KeyError for a batch without ``label``,
    ValueError (naming ``who``) when there is no batch."""
    call = model if forward is None else forward
    outputs: list[Any] = []
    labels: list[Tensor] = []
    with _eval_mode(model):
        for batch in batches:
            if "label" not in batch:
                raise KeyError("evaluation batch has no 'label' key")
            inputs = to_device(batch, device)
            outputs.append(_float_cpu(call(inputs)))
            labels.append(batch["label"].cpu())
    if not labels:
        raise ValueError(f"{who}: the evaluation data produced no batches")
    return outputs, torch.cat(labels)


def predict(
    model: Model, batches: Iterable[Mapping[str, Any]], device: torch.device | str = "cpu"
) -> tuple[Tensor, Tensor]:
    """Run ``model`` over an iterable of batch dicts; return (logits (N, K) float32 on CPU, labels (N,)).

    The model is put in eval mode for the pass and restored afterwards.
    """
    outputs, labels = predict_outputs(model, batches, device)
    return torch.cat(outputs), labels


def evaluate_model(
    model: nn.Module, dataset: Dataset, metrics: Sequence[str], batch_size: int, device: torch.device | str = "cpu"
) -> dict[str, float]:
    """``metrics`` of ``model`` on ``dataset`` (moved to ``device``). For an output ensemble (the mean of its
    members' logits, e.g. RAD+DAD) the metrics of that mean, plus each member's, the mean's and the oracle's
    accuracy (:func:`mmh.evaluation.metrics.ensemble_metrics`)."""
    model = model.to(device)
    members = ensemble_members(model)
    if members is None:
        logits, labels = predict(model, eval_batches(dataset, batch_size), device)
        return compute_metrics(logits, labels, metrics)
    outputs, labels = predict_outputs(
        model,
        eval_batches(dataset, batch_size),
        device,
        forward=lambda inputs: {n: m(inputs) for n, m in members.items()},
    )
    per = {name: torch.cat([o[name] for o in outputs]) for name in members}
    out = compute_metrics(torch.stack(list(per.values())).mean(0), labels, metrics)
    out.update(ensemble_metrics(per, labels))
    return out
