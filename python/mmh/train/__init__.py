"""Training: the stage protocol, the one trainer, checkpoints and model artifacts, optimisers and schedules.

The trainer runs any :class:`StageModule` and knows no method; the runner (:mod:`mmh.runner`) drives a method's
stages through it.
"""

from .checkpoint import load_checkpoint, load_model, save_checkpoint, save_model
from .finite import NonFiniteError, TrainingInterrupted, check_finite
from .optim import build_optimizer, build_scheduler
from .stage import StageModule
from .trainer import Trainer, TrainResult

__all__ = [
    "NonFiniteError",
    "StageModule",
    "TrainResult",
    "Trainer",
    "TrainingInterrupted",
    "build_optimizer",
    "build_scheduler",
    "check_finite",
    "load_checkpoint",
    "load_model",
    "save_checkpoint",
    "save_model",
]
