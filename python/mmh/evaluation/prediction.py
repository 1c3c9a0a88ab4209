"""The prediction loop (written once): evaluation batches, a model's outputs over them, and a model's metrics.

:func:`predict_outputs` runs a network (or any ``forward``, e.g. a multi-stream net's per-stream logits) in eval mode
over batch dicts; :func:`predict` gives its logits, :func:`evaluate_model` its metrics on a dataset (an ensemble of
named members also gets each member's, the mean's and the oracle's accuracy).

The N-clip test (``eval.clips: N``; thesis ch. 5: "we sample ten clips per video ... The final prediction for each
video is the average of the ten clip predictions"): the evaluation splits are built with ``sampling="multi_clip"``,
``num_clips=N`` (:func:`multi_clip_kwargs`), so each item holds ``(N, T, C, H, W)`` clips and an ``(N, T)``
``frame_index``; the loop calls the model on each clip of a batch in turn (a forward sees ``eval.batch_size`` clips,
as with one clip) and a video's output is the mean of its N clips' outputs. The thesis does not say which outputs it
averages; mmh averages the logits (what every metric and the ensembles' Σ read; for an ensemble, each member's
logits). The clips are N evenly shifted offsets of the segments (:func:`mmh.data.transforms.sample_frame_indices`),
a deterministic stand-in for the text's randomly sampled clips.
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

__all__ = [
    "MCL_METRIC",
    "eval_batches",
    "check_clips",
    "multi_clip_kwargs",
    "predict_outputs",
    "predict",
    "evaluate_model",
]

#: The ``eval.metrics`` entry of the MCL tables (thesis ch. 5): per-stream accuracy, Σ and Φ (:func:`evaluate_model`).
MCL_METRIC = "mcl"

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


def check_clips(clips: Any) -> int:
    """``clips`` (``eval.clips``) as a positive int; ValueError naming ``eval.clips`` otherwise."""
    if isinstance(clips, bool) or not isinstance(clips, int) or clips < 1:
        raise ValueError(f"eval.clips must be a positive int (clips per video), got {clips!r}")
    return clips


def multi_clip_kwargs(kwargs: Mapping[str, Any], clips: int) -> dict[str, Any]:
    """The dataset options of an evaluation split for ``clips`` clips per video: ``kwargs`` as they are for one
    clip, else with ``sampling="multi_clip"`` and ``num_clips=clips`` (replacing a training ``sampling``)."""
    if check_clips(clips) == 1:
        return dict(kwargs)
    return {**kwargs, "sampling": "multi_clip", "num_clips": clips}


def _clip_views(batch: Mapping[str, Any], clips: int) -> list[dict[str, Any]]:
    """The ``clips`` single-clip batches of a multi-clip batch (every tensor but ``label`` has the clip axis at
    dim 1); ValueError naming ``eval.clips`` when the batch does not hold ``clips`` clips per video."""
    fi = batch.get("frame_index")
    if not isinstance(fi, Tensor) or fi.ndim != 3 or fi.shape[1] != clips:
        got = "no clips (no frame_index)" if not isinstance(fi, Tensor) else f"frame_index {tuple(fi.shape)}"
        raise ValueError(
            f"eval.clips={clips}: the evaluation data must give (batch, {clips}, T) clips per video "
            f"(a clip dataset with sampling='multi_clip', num_clips={clips}), got {got}"
        )
    multi = {k for k, v in batch.items() if k != "label" and isinstance(v, Tensor)}
    for k in multi:
        if batch[k].ndim < 2 or batch[k].shape[1] != clips:
            raise ValueError(f"eval.clips={clips}: {k!r} has shape {tuple(batch[k].shape)}, not (batch, {clips}, ...)")
    return [{k: (v[:, j] if k in multi else v) for k, v in batch.items()} for j in range(clips)]


def _mean(outs: list[Any]) -> Any:
    if isinstance(outs[0], Mapping):
        return {k: torch.stack([o[k] for o in outs]).mean(0) for k in outs[0]}
    return torch.stack(outs).mean(0)


@torch.no_grad()
def predict_outputs(
    model: Model,
    batches: Iterable[Mapping[str, Any]],
    device: torch.device | str = "cpu",
    *,
    forward: Callable[[dict[str, Any]], Any] | None = None,
    who: str = "predict",
    clips: int = 1,
) -> tuple[list[Any], Tensor]:
    """The prediction loop: ``forward(inputs)`` (default ``model(inputs)``; a tensor or a dict of tensors) for
    every batch dict, its tensors moved to ``device``, with ``model`` in eval mode (restored afterwards). Returns
    the outputs per batch (float32, on CPU) and the labels (N,). KeyError for a batch without ``label``,
    ValueError (naming ``who``) when there is no batch.

    ``clips > 1``: every batch holds ``clips`` clips per video (module docstring); ``forward`` runs on each clip in
    turn and a video's output is the mean of its clips' outputs."""
    check_clips(clips)
    call = model if forward is None else forward
    outputs: list[Any] = []
    labels: list[Tensor] = []
    with _eval_mode(model):
        for batch in batches:
            if "label" not in batch:
                raise KeyError("evaluation batch has no 'label' key")
            if clips == 1:
                outputs.append(_float_cpu(call(to_device(batch, device))))
            else:
                outputs.append(_mean([_float_cpu(call(to_device(b, device))) for b in _clip_views(batch, clips)]))
            labels.append(batch["label"].cpu())
    if not labels:
        raise ValueError(f"{who}: the evaluation data produced no batches")
    return outputs, torch.cat(labels)


def predict(
    model: Model, batches: Iterable[Mapping[str, Any]], device: torch.device | str = "cpu", *, clips: int = 1
) -> tuple[Tensor, Tensor]:
    """Run ``model`` over an iterable of batch dicts; return (logits (N, K) float32 on CPU, labels (N,)).

    The model is put in eval mode for the pass and restored afterwards. ``clips > 1``: each video's logits are the
    mean of its clips' (module docstring).
    """
    outputs, labels = predict_outputs(model, batches, device, clips=clips)
    return torch.cat(outputs), labels


def evaluate_model(
    model: nn.Module,
    dataset: Dataset,
    metrics: Sequence[str],
    batch_size: int,
    device: torch.device | str = "cpu",
    *,
    clips: int = 1,
) -> dict[str, float]:
    """``metrics`` of ``model`` on ``dataset`` (moved to ``device``). For an output ensemble (the mean of its
    members' logits, e.g. RAD+DAD) the metrics of that mean, plus each member's, the mean's and the oracle's
    accuracy (:func:`mmh.evaluation.metrics.ensemble_metrics`). ``clips`` (``eval.clips``): clips per video of
    ``dataset``'s items, whose outputs are averaged (module docstring).

    ``"mcl"`` among ``metrics`` (the thesis's MCL tables; a multi-stream network with ``forward_streams``): each
    stream's ``accuracy/<stream>``, ``sum`` (Σ: the accuracy of the mean of the streams' logits) and ``oracle`` (Φ: a
    video counts when at least one stream is right), as :func:`mmh.evaluation.thesis.mcl_metrics`; the other
    metrics are then those of Σ."""
    model = model.to(device)
    if MCL_METRIC in metrics:
        return _mcl_metrics(model, dataset, [m for m in metrics if m != MCL_METRIC], batch_size, device, clips)
    members = ensemble_members(model)
    if members is None:
        logits, labels = predict(model, eval_batches(dataset, batch_size), device, clips=clips)
        return compute_metrics(logits, labels, metrics)
    outputs, labels = predict_outputs(
        model,
        eval_batches(dataset, batch_size),
        device,
        forward=lambda inputs: {n: m(inputs) for n, m in members.items()},
        clips=clips,
    )
    per = {name: torch.cat([o[name] for o in outputs]) for name in members}
    out = compute_metrics(torch.stack(list(per.values())).mean(0), labels, metrics)
    out.update(ensemble_metrics(per, labels))
    return out


def _mcl_metrics(
    model: nn.Module, dataset: Dataset, metrics: Sequence[str], batch_size: int, device: torch.device | str, clips: int
) -> dict[str, float]:
    streams = getattr(model, "forward_streams", None)
    if not callable(streams):
        raise ValueError(
            f"eval.metrics {MCL_METRIC!r} needs a multi-stream network (forward_streams: one network per modality), "
            f"got {type(model).__name__}"
        )
    outputs, labels = predict_outputs(model, eval_batches(dataset, batch_size), device, forward=streams, clips=clips)
    per = {name: torch.cat([o[name] for o in outputs]) for name in outputs[0]}
    ens = ensemble_metrics(per, labels)
    out = compute_metrics(torch.stack(list(per.values())).mean(0), labels, metrics)
    out.update({k: v for k, v in ens.items() if k not in ("accuracy/ensemble", "accuracy/oracle")})
    out["sum"], out["oracle"] = ens["accuracy/ensemble"], ens["accuracy/oracle"]
    return out
