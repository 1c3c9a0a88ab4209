"""The thesis methods (García, chapters 3-5) on the mmh framework.

Importing this package registers the methods ``multistream`` (ch. 3, four steps), ``hoffman``, ``moddrop``,
``admd``, ``admd_naive`` (ch. 4), ``dmcl``, ``mcl_independent``, ``smcl``, ``cmcl``, ``mcl_random`` (ch. 5), each
with the defaults of the ``loss.<name>`` sections it reads. ADMD's per-frame network is the model
``small_framewise`` of :mod:`mmh.models`.
"""

from . import admd, mcl, multistream  # noqa: F401  (registration)
from .admd import ADMD_DEFAULTS, ADMDStage, AssembleStage, admd_targets, discriminator_from_state, fake_probability
from .common import StreamsCE, copy_stream, generalized_distillation, hallucination_loss, soft_cross_entropy
from .mcl import MCL_DEFAULTS, MCL_MODES, METHOD_OF_MODE, MCLStage, mcl_loss
from .multistream import (
    HOFFMAN_DEFAULTS,
    MODDROP_DEFAULTS,
    MULTISTREAM_DEFAULTS,
    HallucinationStage,
    HoffmanStage,
    ModDropStage,
    multistream_stages,
)

__all__ = [
    "ADMDStage",
    "ADMD_DEFAULTS",
    "AssembleStage",
    "HOFFMAN_DEFAULTS",
    "HallucinationStage",
    "HoffmanStage",
    "MCLStage",
    "MCL_DEFAULTS",
    "MCL_MODES",
    "METHOD_OF_MODE",
    "MODDROP_DEFAULTS",
    "MULTISTREAM_DEFAULTS",
    "ModDropStage",
    "StreamsCE",
    "admd_targets",
    "copy_stream",
    "discriminator_from_state",
    "fake_probability",
    "generalized_distillation",
    "hallucination_loss",
    "mcl_loss",
    "multistream_stages",
    "soft_cross_entropy",
]
