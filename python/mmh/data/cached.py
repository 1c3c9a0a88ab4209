"""Datasets held in memory, and the facts about a dataset that model building needs.

:func:`materialize` reads every item once and stacks it into a :class:`CachedDataset`, which returns a whole batch
per index list (what :func:`mmh.data.make_loader` asks for); :func:`dataset_facts` reads item 0 for the number of
classes, the channels per modality and the clip length.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

__all__ = ["CachedDataset", "materialize", "dataset_facts"]


class CachedDataset(Dataset):
    """A dataset held as stacked tensors (one per key); indexing by a list of indices returns a batch dict.

    Keeps ``modalities``, ``num_classes`` and ``class_names`` of the source dataset.
    """

    def __init__(
        self, tensors: Mapping[str, Tensor], *, modalities: tuple[str, ...], num_classes: int, class_names: list[str]
    ) -> None:
        sizes = {k: v.shape[0] for k, v in tensors.items()}
        if not sizes or len(set(sizes.values())) != 1:
            raise ValueError(f"CachedDataset needs tensors with one common first dimension, got sizes {sizes}")
        self.tensors = dict(tensors)
        self.modalities, self.num_classes, self.class_names = tuple(modalities), int(num_classes), list(class_names)
        self._n = next(iter(sizes.values()))

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {k: v[index] for k, v in self.tensors.items()}

    def __getitems__(self, indices: list[int]) -> dict[str, Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return {k: v.index_select(0, idx) for k, v in self.tensors.items()}


def materialize(dataset: Dataset) -> CachedDataset:
    """Read every item of ``dataset`` once and stack it (items must be dicts of equally shaped tensors).

    Only valid for datasets whose items do not change between reads (no random transform).
    """
    n = len(dataset)  # type: ignore[arg-type]
    if n == 0:
        raise ValueError(f"cannot cache an empty dataset ({type(dataset).__name__})")
    items = [dataset[i] for i in range(n)]
    keys = list(items[0])
    stacked = {}
    for k in keys:
        try:
            stacked[k] = torch.stack([torch.as_tensor(it[k]) for it in items])
        except (RuntimeError, KeyError) as exc:
            raise ValueError(f"items of {type(dataset).__name__} differ in key {k!r}; cannot cache: {exc}") from exc
    cached = CachedDataset(
        stacked,
        modalities=tuple(getattr(dataset, "modalities", ())),
        num_classes=int(dataset.num_classes),
        class_names=list(getattr(dataset, "class_names", [])),
    )
    cached.normalization = getattr(dataset, "normalization", None)  # statistics the items were normalised with
    return cached


def dataset_facts(dataset: Dataset) -> dict[str, Any]:
    """``num_classes``, ``modalities``, ``in_channels`` per modality and ``num_frames`` (clips) from item 0.

    Images (C, H, W) and clips (T, C, H, W) give C channels; vectors (D,) give D.
    """
    for attr in ("num_classes", "modalities"):
        if not hasattr(dataset, attr):
            raise TypeError(f"dataset {type(dataset).__name__} lacks the attribute {attr!r} of the data contract")
    item = dataset[0]
    in_channels: dict[str, int] = {}
    num_frames = None
    for m in dataset.modalities:  # type: ignore[attr-defined]
        if m not in item:
            raise KeyError(f"dataset item has no key {m!r} although the dataset lists it in modalities")
        x = item[m]
        if x.dim() == 4:
            in_channels[m], num_frames = int(x.shape[1]), int(x.shape[0])
        elif x.dim() == 3:
            in_channels[m] = int(x.shape[0])
        elif x.dim() == 1:
            in_channels[m] = int(x.shape[0])
        else:
            raise ValueError(f"dataset item {m!r} has unsupported shape {tuple(x.shape)}")
    return {
        "num_classes": int(dataset.num_classes),
        "modalities": tuple(dataset.modalities),  # type: ignore
        "in_channels": in_channels,
        "num_frames": num_frames,
    }
