"""The thesis methods (García, chapters 3-5) on the mmh framework.

Importing this package registers the methods ``multistream`` (ch. 3, four steps), ``hoffman``, ``moddrop``,
``admd``, ``admd_naive`` (ch. 4), ``dmcl``, ``mcl_independent``, ``smcl``, ``cmcl``, ``mcl_random`` (ch. 5), the
model ``small_framewise`` (per-frame streams for ADMD), and the ``loss.<name>`` defaults of these methods in
:data:`mmh.config.DEFAULTS` (so config files may set them).
"""

from ...config import DEFAULTS
from . import admd, framewise, mcl, multistream  # noqa: F401  (registration)
from .admd import ADMDStage, AssembleStage, admd_targets, discriminator_from_state, fake_probability
from .common import (
    LOSS_DEFAULTS,
    StreamsCE,
    copy_stream,
    generalized_distillation,
    hallucination_loss,
    method_cfg,
    register_loss_defaults,
    soft_cross_entropy,
)
from .framewise import FramewiseLateFusion, small_framewise
from .mcl import MCL_MODES, METHOD_OF_MODE, MCLStage, mcl_loss
from .multistream import HallucinationStage, HoffmanStage, ModDropStage, multistream_stages

register_loss_defaults(DEFAULTS)

__all__ = [
    "ADMDStage", "AssembleStage", "FramewiseLateFusion", "HallucinationStage", "HoffmanStage", "LOSS_DEFAULTS",
    "MCLStage", "MCL_MODES", "METHOD_OF_MODE", "ModDropStage", "StreamsCE", "admd_targets", "copy_stream",
    "discriminator_from_state", "fake_probability", "generalized_distillation", "hallucination_loss", "mcl_loss",
    "method_cfg", "multistream_stages", "register_loss_defaults", "small_framewise", "soft_cross_entropy",
]
