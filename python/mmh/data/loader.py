"""The one loader of mmh: :func:`make_loader`, used by training, evaluation and your own scripts.

Batches come from :class:`EpochBatchSampler`: epoch ``e``'s order is drawn from ``(seed, e)`` alone and a loader can
start at any batch, so resuming a killed run in the middle of an epoch reproduces the exact batches an
uninterrupted run would have seen. Under DDP, global batch ``j`` (``batch_size * world_size`` indices) is split
into contiguous per-rank slices, so two ranks with batch ``b`` see exactly the samples one process with batch
``2b`` sees. Workers get distinct, reproducible numpy / ``random`` seeds (:func:`seed_worker`). A
:class:`mmh.data.CachedDataset` is indexed a whole batch at a time. :func:`to_device` moves a batch dict.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from .cached import CachedDataset

__all__ = ["make_loader", "eval_batches", "EpochBatchSampler", "seed_worker", "to_device"]


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn``: seed numpy and ``random`` from the worker's torch seed.

    PyTorch already gives every worker a distinct torch seed derived from the loader's generator;
    numpy's and Python's global generators would otherwise be copies of the parent's in every worker.
    """
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


class EpochBatchSampler(Sampler[list[int]]):
    """Batches of one epoch, resumable at any batch, sharded over ranks (see the module docstring).

    ``shuffle``: the permutation comes from ``torch.Generator().manual_seed(seed * 100003 + epoch)``.
    ``drop_last``: drop the last incomplete global batch (otherwise it is kept and split as evenly as possible).
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        *,
        seed: int,
        epoch: int,
        shuffle: bool = True,
        drop_last: bool = True,
        start_batch: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
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
        return max(
            0, self.batches_per_epoch(self.n, self.batch_size, self.world_size, self.drop_last) - self.start_batch
        )

    def __iter__(self) -> Iterator[list[int]]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        g_size = self.batch_size * self.world_size
        total = self.batches_per_epoch(self.n, self.batch_size, self.world_size, self.drop_last)
        for j in range(self.start_batch, total):
            chunk = order[j * g_size : (j + 1) * g_size]
            per = math.ceil(len(chunk) / self.world_size)
            part = chunk[self.rank * per : (self.rank + 1) * per]
            if part:
                yield part


def _passthrough(batch: Any) -> Any:
    return batch


def _check_args(dataset: Dataset, batch_size: Any, num_workers: Any, seed: Any) -> int:
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"make_loader: batch_size must be a positive int, got {batch_size!r}")
    if not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(f"make_loader: num_workers must be a non-negative int, got {num_workers!r}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"make_loader: seed must be an int, got {seed!r}")
    try:
        n = len(dataset)  # type: ignore[arg-type]
    except TypeError as exc:
        raise TypeError("make_loader: dataset must define __len__") from exc
    if n == 0:
        raise ValueError("make_loader: dataset is empty")
    return n


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    epoch: int = 0,
    start_batch: int = 0,
    drop_last: bool = False,
    num_workers: int = 0,
    rank: int | None = None,
    world_size: int | None = None,
    distributed: bool = False,
) -> DataLoader:
    """A reproducible DataLoader over one epoch of :class:`EpochBatchSampler` batches.

    - ``shuffle``: epoch ``epoch``'s order from ``(seed, epoch)``; the same arguments give the same batches,
      whatever ``num_workers``. ``start_batch``: skip the epoch's first batches (resuming).
    - ``rank`` / ``world_size``: this process's share of each global batch (see the module docstring);
      ``distributed=True`` takes them from the initialised process group.
    - Workers get distinct, reproducible seeds (:func:`seed_worker`); ``pin_memory`` is on when CUDA is available.
    """
    n = _check_args(dataset, batch_size, num_workers, seed)
    if distributed and (rank is None or world_size is None):
        from ..utils.distributed import dist_info

        info = dist_info()
        rank, world_size = info.rank, info.world_size
    sampler = EpochBatchSampler(
        n,
        batch_size,
        seed=seed,
        epoch=epoch,
        shuffle=shuffle,
        drop_last=drop_last,
        start_batch=start_batch,
        rank=rank or 0,
        world_size=world_size or 1,
    )
    cached = isinstance(dataset, CachedDataset)
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=num_workers,
        collate_fn=_passthrough if cached else None,
        pin_memory=torch.cuda.is_available(),
        worker_init_fn=seed_worker if num_workers else None,
        generator=torch.Generator().manual_seed(seed * 100003 + epoch),
    )


def eval_batches(dataset: Dataset, batch_size: int, *, num_workers: int = 0) -> DataLoader:
    """Sequential, complete batches for evaluation (no shuffling, nothing dropped)."""
    return make_loader(dataset, batch_size, shuffle=False, seed=0, drop_last=False, num_workers=num_workers)


def to_device(batch: Mapping[str, Any], device: torch.device | str) -> dict[str, Any]:
    """Every tensor of a batch dict moved to ``device`` (non-blocking on CUDA; other entries as they are)."""
    device = torch.device(device)
    non_blocking = device.type == "cuda"
    return {k: (v.to(device, non_blocking=non_blocking) if isinstance(v, Tensor) else v) for k, v in batch.items()}
