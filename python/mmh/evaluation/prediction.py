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
from torch.utils.data import DataLoader, Dataset
from torch.utils.data._utils.collate import default_collate

from .metrics import compute_metrics, ensemble_metrics

__all__ = ["eval_batches", "predict_outputs", "predict", "evaluate_model"]

Model = nn.Module | Callable[[Mapping[str, Tensor]], Tensor]


def _collate(batch: Any) -> Any:
    """A dataset read a whole batch at a time (``__getitems__`` giving a dict of stacked tensors, as the trainer's
    in-memory datasets do) yields its batch as is; other datasets' items go through the default collate."""
    return batch if isinstance(batch, Mapping) else default_collate(batch)


def eval_batches(dataset: Dataset, batch_size: int, *, num_workers: int = 0) -> DataLoader:
    """Sequential, complete batches of ``dataset`` for evaluation (no shuffling, nothing dropped)."""
    from ..data.loader import seed_worker

    n = len(dataset)  # type: ignore[arg-type]
    if n <= 0:
        raise ValueError(f"eval_batches: the dataset is empty (n = {n})")
    if batch_size < 1:
        raise ValueError(f"eval_batches: batch_size must be positive, got {batch_size}")
    batches = [list(range(i, min(i + batch_size, n))) for i in range(0, n, batch_size)]
    # the seeded generator keeps the loader's worker base seed off the global RNG
    return DataLoader(dataset, batch_sampler=batches, num_workers=num_workers, collate_fn=_collate,
                      pin_memory=torch.cuda.is_available(), worker_init_fn=seed_worker if num_workers else None,
                      generator=torch.Generator().manual_seed(0))


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
def predict_outputs(model: Model, batches: Iterable[Mapping[str, Any]], device: torch.device | str = "cpu", *,
                    forward: Callable[[dict[str, Any]], Any] | None = None, who: str = "predict"
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
            inputs = {k: (v.to(device) if isinstance(v, Tensor) else v) for k, v in batch.items()}
            outputs.append(_float_cpu(call(inputs)))
            labels.append(batch["label"].cpu())
    if not labels:
        raise ValueError(f"{who}: the evaluation data produced no batches")
    return outputs, torch.cat(labels)


def predict(model: Model, batches: Iterable[Mapping[str, Any]], device: torch.device | str = "cpu"
            ) -> tuple[Tensor, Tensor]:
    """Run ``model`` over an iterable of batch dicts; return (logits (N, K) float32 on CPU, labels (N,)).

    The model is put in eval mode for the pass and restored afterwards.
    """
    outputs, labels = predict_outputs(model, batches, device)
    return torch.cat(outputs), labels


def _members(model: nn.Module) -> Mapping[str, nn.Module] | None:
    """The named members of an output ensemble (a network with ``members`` and ``member_logits``), else None."""
    members = getattr(model, "members", None)
    if isinstance(members, nn.ModuleDict) and callable(getattr(model, "member_logits", None)):
        return members
    return None


def evaluate_model(model: nn.Module, dataset: Dataset, metrics: Sequence[str], batch_size: int,
                   device: torch.device | str = "cpu") -> dict[str, float]:
    """``metrics`` of ``model`` on ``dataset`` (moved to ``device``). For an output ensemble (the mean of its
    members' logits, e.g. RAD+DAD) the metrics of that mean, plus each member's, the mean's and the oracle's
    accuracy (:func:`mmh.evaluation.metrics.ensemble_metrics`)."""
    model = model.to(device)
    members = _members(model)
    if members is None:
        logits, labels = predict(model, eval_batches(dataset, batch_size), device)
        return compute_metrics(logits, labels, metrics)
    per: dict[str, Tensor] = {}
    for name, member in members.items():
        per[name], labels = predict(member, eval_batches(dataset, batch_size), device)
    out = compute_metrics(torch.stack(list(per.values())).mean(0), labels, metrics)
    out.update(ensemble_metrics(per, labels))
    return out
