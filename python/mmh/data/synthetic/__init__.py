"""Procedural RGB-D(-IR/flow) datasets: the default data of every mmh command (nothing to download)."""

from .antispoof import SyntheticAntiSpoof
from .base import SceneRNG, SyntheticDataset
from .motion import SyntheticMotion
from .shapes import SyntheticShapes

__all__ = ["SceneRNG", "SyntheticAntiSpoof", "SyntheticDataset", "SyntheticMotion", "SyntheticShapes"]
