"""Training-side data plumbing: in-memory caching, resumable epoch batches, dataset facts for model building.

Why the trainer has its own batch sampler rather than a shuffling DataLoader: resuming a killed run in the middle
of an epoch must reproduce the exact batches an uninterrupted run would have seen. :class:`EpochBatchSampler`
draws epoch ``e``'s permutation from ``(seed, e)`` alone and can start at any batch. Under DDP, global batch ``j``
(``batch_size * world_size`` indices) is split into contiguous per-rank slices, so two ranks with batch ``b`` see
exactly the samples one process with batch ``2b`` sees.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

__all__ = ["CachedDataset", "materialize", "EpochBatchSampler", "batch_loader", "eval_batches", "dataset_facts",
           "to_device"]


class CachedDataset(Dataset):
    """A dataset held as stacked tensors (one per key); indexing by a list of indices returns a batch dict.

    Keeps ``modalities``, ``num_classes`` and ``class_names`` of the source dataset.
    """

    def __init__(self, tensors: Mapping[str, Tensor], *, modalities: tuple[str, ...], num_classes: int,
                 class_names: list[str]) -> None:
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
    cached = CachedDataset(stacked, modalities=tuple(getattr(dataset, "modalities", ())),
                           num_classes=int(getattr(dataset, "num_classes")),
                           class_names=list(getattr(dataset, "class_names", [])))
    cached.normalization = getattr(dataset, "normalization", None)  # statistics the items were normalised with
    return cached


class EpochBatchSampler(Sampler[list[int]]):
    """Batches of one epoch, resumable at any batch, sharded over ranks (see the module docstring).

    ``shuffle``: the permutation comes from ``torch.Generator().manual_seed(seed * 100003 + epoch)``.
    ``drop_last``: drop the last incomplete global batch (otherwise it is kept and split as evenly as possible).
    """

    def __init__(self, n: int, batch_size: int, *, seed: int, epoch: int, shuffle: bool = True,
                 drop_last: bool = True, start_batch: int = 0, rank: int = 0, world_size: int = 1) -> None:
        if n <= 0:
            raise ValueError(f"EpochBatchSampler: the dataset is empty (n = {n})")
        if batch_size < 1:
            raise ValueError(f"EpochBatchSampler: batch_size must be positive, got {batch_size}")
        self.n, self.batch_size, self.seed, self.epoch = n, batch_size, seed, epoch
        self.shuffle, self.drop_last, self.start_batch = shuffle, drop_last, start_batch
        self.rank, self.world_size = rank, world_size

    @staticmethod
    def batches_per_epoch(n: int, batch_size: int, world_size: int = 1, drop_last: bool = True) -> int:
        """Number of (global) batches in one epoch."""
        g = batch_size * world_size
        return n // g if drop_last else math.ceil(n / g)

    def __len__(self) -> int:
        return max(0, self.batches_per_epoch(self.n, self.batch_size, self.world_size, self.drop_last)
                   - self.start_batch)

    def __iter__(self) -> Iterator[list[int]]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        g_size = self.batch_size * self.world_size
        total = self.batches_per_epoch(self.n, self.batch_size, self.world_size, self.drop_last)
        for j in range(self.start_batch, total):
            chunk = order[j * g_size:(j + 1) * g_size]
            per = math.ceil(len(chunk) / self.world_size)
            part = chunk[self.rank * per:(self.rank + 1) * per]
            if part:
                yield part


def _passthrough(batch: Any) -> Any:
    return batch


def batch_loader(dataset: Dataset, sampler: Sampler[list[int]], *, num_workers: int = 0, seed: int = 0) -> DataLoader:
    """A DataLoader over ``sampler``'s batches (cached datasets are indexed a whole batch at a time)."""
    from ..data.loader import seed_worker

    cached = isinstance(dataset, CachedDataset)
    return DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers,
                      collate_fn=_passthrough if cached else None, pin_memory=torch.cuda.is_available(),
                      worker_init_fn=seed_worker if num_workers else None,
                      generator=torch.Generator().manual_seed(seed))


def eval_batches(dataset: Dataset, batch_size: int, *, num_workers: int = 0) -> DataLoader:
    """Sequential, complete batches for evaluation (no shuffling, nothing dropped)."""
    sampler = EpochBatchSampler(len(dataset), batch_size, seed=0, epoch=0, shuffle=False,  # type: ignore[arg-type]
                                drop_last=False)
    return batch_loader(dataset, sampler, num_workers=num_workers)


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
    return {"num_classes": int(dataset.num_classes), "modalities": tuple(dataset.modalities),  # type: ignore
            "in_channels": in_channels, "num_frames": num_frames}


def to_device(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    """Move every tensor of a batch dict to ``device``."""
    non_blocking = device.type == "cuda"
    return {k: (v.to(device, non_blocking=non_blocking) if isinstance(v, Tensor) else v) for k, v in batch.items()}
