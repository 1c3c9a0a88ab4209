"""Training: the one trainer, checkpoints/artifacts, resumable batching, and the experiment runner."""

from .checkpoint import load_checkpoint, load_model, save_checkpoint, save_model
from .data import CachedDataset, EpochBatchSampler, dataset_facts, eval_batches, materialize
from .optim import build_optimizer, build_scheduler
from .runner import evaluate_model, load_results, load_split, run_experiment, stage_key
from .trainer import Trainer, TrainResult, resolve_device

__all__ = [
    "CachedDataset", "EpochBatchSampler", "TrainResult", "Trainer", "build_optimizer", "build_scheduler",
    "dataset_facts", "eval_batches", "evaluate_model", "load_checkpoint", "load_model", "load_results", "load_split",
    "materialize", "resolve_device", "run_experiment", "save_checkpoint", "save_model", "stage_key",
]
