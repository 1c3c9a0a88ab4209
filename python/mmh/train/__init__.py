"""Training: the stage protocol, the one trainer, checkpoints and model artifacts, optimisers and schedules.

The trainer runs any :class:`StageModule` and knows no method; the runner (:mod:`mmh.runner`) drives a method's
stages through it.
"""

from .checkpoint import load_checkpoint, load_model, save_checkpoint, save_model
from .optim import build_optimizer, build_scheduler
from .stage import StageModule
from .trainer import Trainer, TrainResult

__all__ = [
    "StageModule", "TrainResult", "Trainer", "build_optimizer", "build_scheduler", "load_checkpoint", "load_model",
    "save_checkpoint", "save_model",
]
