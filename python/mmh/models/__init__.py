"""The model zoo of mmh.

``build_model(name, *, modalities, num_classes, in_channels=None, seed=None, pretrained=None, **kwargs)`` builds a
registered model (``pretrained``: "imagenet", "kinetics400" or a weight file, see :mod:`mmh.models.pretrained`);
every model maps ``{modality: tensor}`` to logits (B, K), reads only its own ``modalities`` and exposes
``modalities``, ``config``, ``feature_paths`` and ``classifier`` (see ``ZooModel``). ``derive_student`` rebuilds a
teacher without some modalities' branches; ``FeatureExtractor`` records intermediate features by forward hooks.
"""

from . import framewise, i3d, multiplier, resnet, small, video  # noqa: F401  (register the models)
from .admd import FrameDiscriminator
from .base import ZooModel
from .blocks import AveragedLinear, BottleneckHead, SEBlock, TemporalConv
from .ensemble import LogitEnsemble, ensemble_members
from .framewise import FramewiseLateFusion, FramewiseResNet, resnet50_framewise, small_framewise
from .fusion import JointNet, LateFusionNet
from .hooks import FeatureExtractor, get_module
from .inputs import DEFAULT_CHANNELS, InputSpec, image_specs
from .multiplier import MultiplierNet
from .pretrained import PRETRAINED_NAMES, PretrainedReport, load_pretrained
from .registry import build_model, derive_student, list_models, register_model
from .resnet import GatedBasicBlock, GatedBottleneck, ResNetStream
from .video import TimeMean

__all__ = [
    "AveragedLinear",
    "BottleneckHead",
    "DEFAULT_CHANNELS",
    "FeatureExtractor",
    "FrameDiscriminator",
    "FramewiseLateFusion",
    "FramewiseResNet",
    "GatedBasicBlock",
    "GatedBottleneck",
    "InputSpec",
    "JointNet",
    "LateFusionNet",
    "LogitEnsemble",
    "MultiplierNet",
    "PRETRAINED_NAMES",
    "PretrainedReport",
    "ResNetStream",
    "SEBlock",
    "TemporalConv",
    "TimeMean",
    "ZooModel",
    "build_model",
    "derive_student",
    "ensemble_members",
    "get_module",
    "image_specs",
    "list_models",
    "load_pretrained",
    "register_model",
    "resnet50_framewise",
    "small_framewise",
]
