"""Methods: recipes of stages (see :mod:`mmh.methods.base`), in a registry.

Built in: ``teacher``, ``baseline``, ``kd``, ``rad``, ``rad_noweight``, ``rad_global``, ``dad``, ``rad_dad``,
``mars``, ``mers``, and the thesis methods of :mod:`mmh.methods.thesis` (``multistream``, ``hoffman``, ``moddrop``,
``admd``, ``admd_naive``, ``dmcl``, ``mcl_independent``, ``smcl``, ``cmcl``, ``mcl_random``). Register your own with
:func:`register_method`, declaring the defaults of the ``loss.<section>`` it reads (the config schema)::

    @register_method("my_kd", defaults={"my_kd": {"weight": 1.0}})
    def my_kd(cfg):
        return [teacher_stage(), Stage("student", "student/my_kd", build_fn, inputs=("teacher",))]

A stage builds a :class:`mmh.train.StageModule`, which the trainer runs.
"""

from . import dad, ensemble, feature_matching, kd, rad, supervised, thesis  # noqa: F401  (registration)
from .base import Distiller, Stage, StageContext, Supervised, freeze
from .dad import DADDistiller
from .ensemble import EnsembleStage, ensemble_stage
from .feature_matching import FeatureMSEDistiller
from .kd import KDDistiller, kd_loss
from .rad import RAD_VARIANTS, RADDistiller
from .registry import get_method, list_methods, method_defaults, method_stages, register_method
from .supervised import baseline_stage, teacher_stage

__all__ = [
    "DADDistiller",
    "Distiller",
    "EnsembleStage",
    "FeatureMSEDistiller",
    "KDDistiller",
    "RADDistiller",
    "RAD_VARIANTS",
    "Stage",
    "StageContext",
    "Supervised",
    "baseline_stage",
    "ensemble_stage",
    "freeze",
    "get_method",
    "kd_loss",
    "list_methods",
    "method_defaults",
    "method_stages",
    "register_method",
    "teacher_stage",
]
