"""Metrics from logits: accuracy, ISO/IEC 30107-3 APCER/BPCER/ACER, ensemble (mean-of-logits and oracle) metrics.

Presentation-attack convention (as the built-in anti-spoofing data): label **1 = bona fide (live)**, 0 = attack.

Two definitions of APCER are offered, and named:

* **pooled** (:func:`pad_error_rates`, metric ``"acer"``: keys ``apcer``, ``bpcer``, ``acer``) — the MMH paper's and
  the CASIA-SURF challenge's: APCER = attack presentations accepted as bona fide / all attack presentations, every
  attack species pooled; BPCER = bona fide presentations rejected / bona fide presentations; ACER = the mean;
* **ISO/IEC 30107-3** (:func:`pad_error_rates_by_species`, :func:`pad_metrics`: keys ``apcer_iso/<species>``,
  ``apcer_iso``, ``acer_iso``) — APCER is computed per presentation-attack-instrument (PAI) species, and the
  system's APCER is the worst species' (``max``); ACER_iso = (APCER_iso + BPCER) / 2. Needs each sample's species
  (``synthetic_antispoof``: ``attack_type(i)`` is "live", "print" or "replay").

Over seeds, every table of the project reports :func:`mean_std` (mean and sample standard deviation).

(The reference MMH code's "APCER/NPCER" are swapped relative to ISO; these follow the standard's orientation.)
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "accuracy",
    "pad_error_rates",
    "pad_error_rates_by_species",
    "pad_metrics",
    "species_of",
    "ensemble_metrics",
    "compute_metrics",
    "METRICS",
    "mean_std",
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
        raise ValueError(
            f"labels must lie in [0, {logits.shape[1]}), got range [{int(labels.min())}, {int(labels.max())}]"
        )


def accuracy(logits: Tensor, labels: Tensor) -> float:
    """Top-1 accuracy of (N, K) logits against (N,) integer labels."""
    _check_logits_labels(logits, labels)
    return float((logits.argmax(1) == labels).float().mean())


def pad_error_rates(pred_bona_fide: Tensor, is_bona_fide: Tensor) -> dict[str, float]:
    """The paper's *pooled* APCER, BPCER and ACER (all attack species together) from boolean decisions and ground
    truth (ISO/IEC 30107-3 computes APCER per species instead: :func:`pad_error_rates_by_species`).

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
        raise ValueError(
            f"APCER/BPCER/ACER need binary logits (N, 2) with class 1 = bona fide, got {tuple(logits.shape)}"
        )
    return pad_error_rates(logits.argmax(1) == 1, labels == 1)


def pad_error_rates_by_species(
    pred_bona_fide: Tensor, is_bona_fide: Tensor, species: Sequence[str]
) -> dict[str, float]:
    """ISO/IEC 30107-3 rates: APCER of each PAI species (``apcer_iso/<species>``: that species' attack
    presentations accepted as bona fide / that species' attack presentations), ``apcer_iso`` = the worst species'
    APCER, ``bpcer``, ``acer_iso`` = (apcer_iso + bpcer) / 2.

    ``species[i]``: the species of sample i (ignored for bona fide samples). ValueError when lengths differ or no
    attack/bona fide sample exists."""
    pred = torch.as_tensor(pred_bona_fide).bool().flatten()
    truth = torch.as_tensor(is_bona_fide).bool().flatten()
    if pred.shape != truth.shape or len(species) != pred.numel():
        raise ValueError(
            f"pred_bona_fide ({pred.numel()}), is_bona_fide ({truth.numel()}) and species "
            f"({len(species)}) must have one entry per sample"
        )
    pooled = pad_error_rates(pred, truth)
    out: dict[str, float] = {}
    names = [str(x) for x in species]  # one pass over the samples in Python; the rest on tensors
    index = {sp: j for j, sp in enumerate(sorted(set(names)))}
    code = torch.tensor([index[n] for n in names], dtype=torch.long)
    attack = ~truth
    for sp in sorted({sp for sp, is_attack in zip(names, attack.tolist()) if is_attack}):
        mask = (code == index[sp]) & attack
        out[f"apcer_iso/{sp}"] = float((pred & mask).sum()) / float(mask.sum())
    out["apcer_iso"] = max(out.values())
    out["bpcer"] = pooled["bpcer"]
    out["acer_iso"] = (out["apcer_iso"] + pooled["bpcer"]) / 2
    return out


def pad_metrics(logits: Tensor, labels: Tensor, species: Sequence[str]) -> dict[str, float]:
    """Both definitions from binary logits (class 1 = bona fide): the paper's pooled ``apcer``, ``bpcer``,
    ``acer`` and the ISO/IEC 30107-3 ``apcer_iso/<species>``, ``apcer_iso``, ``acer_iso``."""
    out = _pad_from_logits(logits, labels)
    out.update(pad_error_rates_by_species(logits.argmax(1) == 1, labels == 1, species))
    return out


def species_of(dataset: Any) -> list[str]:
    """Each sample's presentation species (``dataset.attack_type(i)``), in dataset order; TypeError naming the
    dataset when it cannot tell."""
    fn = getattr(dataset, "attack_type", None)
    if fn is None:
        raise TypeError(
            f"{type(dataset).__name__} has no attack_type(i): the ISO per-species APCER needs each "
            f"sample's presentation-attack species"
        )
    return [str(fn(i)) for i in range(len(dataset))]


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


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value); ValueError on an empty list."""
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("mean_std of an empty list")
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)
