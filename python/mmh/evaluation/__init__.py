"""Evaluation: metrics, the prediction loop, the thesis evaluations, reports and plots. Imports no training module.

==================================  ===================================================================================
:mod:`mmh.evaluation.metrics`       accuracy, APCER/BPCER/ACER (pooled and ISO/IEC 30107-3), ensemble Σ / oracle Φ,
                                    ``mean_std`` over seeds
:mod:`mmh.evaluation.prediction`    evaluation batches, the prediction loop (``predict``), ``evaluate_model``
:mod:`mmh.evaluation.thesis`        per-stream logits, Σ / Φ of multi-stream nets, subsets of streams, noise sweep
:mod:`mmh.evaluation.report`        run folders -> grouped final metrics, markdown table, ``make_report``
:mod:`mmh.evaluation.plots`         the PNG figures (training curves, methods over seeds, sweeps; matplotlib)
==================================  ===================================================================================

Data flows one way: ``mmh.data`` / ``mmh.models`` -> here; the runner, the benchmarks and the CLI call in.
"""

from __future__ import annotations

from .metrics import (
    METRICS,
    accuracy,
    compute_metrics,
    ensemble_metrics,
    mean_std,
    pad_error_rates,
    pad_error_rates_by_species,
    pad_metrics,
    species_of,
)
from .prediction import eval_batches, evaluate_model, predict, predict_outputs

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
    "eval_batches",
    "predict_outputs",
    "predict",
    "evaluate_model",
]
