"""mmh.data: paired multimodal datasets, transforms, in-memory caching and the one reproducible loader.

Items are dicts: one float32 tensor per modality (``"rgb"``, ``"depth"``, ``"ir"``, ``"flow"``, or other
names such as the six UCI views), ``"label"`` (int64 scalar) and ``"frame_index"`` (int64, (T,)) for clips.
Images are (C, H, W), clips (T, C, H, W). Build any dataset by name with :func:`build_dataset`; importing
this package registers every built-in dataset.
"""

from . import real, synthetic, transforms
from .cached import CachedDataset, dataset_facts, materialize
from .loader import EpochBatchSampler, eval_batches, make_loader, seed_worker, to_device
from .manifest import Manifest
from .paired_folder import PairedFolder
from .real import FileListDataset, FileSample
from .registry import build_dataset, list_datasets, register_dataset
from .synthetic import (
    SyntheticAntiSpoof,
    SyntheticDataset,
    SyntheticMotion,
    SyntheticShapes,
)
from .uci import UCIMultiFeature

__all__ = [
    "CachedDataset",
    "EpochBatchSampler",
    "FileListDataset",
    "FileSample",
    "Manifest",
    "PairedFolder",
    "SyntheticAntiSpoof",
    "SyntheticDataset",
    "SyntheticMotion",
    "SyntheticShapes",
    "UCIMultiFeature",
    "build_dataset",
    "dataset_facts",
    "eval_batches",
    "list_datasets",
    "make_loader",
    "materialize",
    "real",
    "register_dataset",
    "seed_worker",
    "synthetic",
    "to_device",
    "transforms",
]
