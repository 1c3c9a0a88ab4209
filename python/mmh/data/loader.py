"""DataLoader construction with reproducible shuffling and worker seeding."""

from __future__ import annotations

import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

__all__ = ["make_loader", "seed_worker"]


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn``: seed numpy and ``random`` from the worker's torch seed.

    PyTorch already gives every worker a distinct torch seed derived from the loader's generator;
    numpy's and Python's global generators would otherwise be copies of the parent's in every worker.
    """
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    num_workers: int = 0,
    drop_last: bool = False,
    distributed: bool = False,
) -> DataLoader:
    """Build a reproducible DataLoader.

    - The shuffling order comes from a ``torch.Generator`` seeded with ``seed`` (the same seed gives the
      same sequence of epochs); workers get distinct, reproducible seeds (``seed_worker``).
    - ``pin_memory`` is on when CUDA is available.
    - ``distributed=True`` uses a ``DistributedSampler(shuffle=shuffle, seed=seed, drop_last=drop_last)``
      (requires an initialised process group); call ``loader.sampler.set_epoch(epoch)`` every epoch.
    """
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
    generator = torch.Generator()
    generator.manual_seed(seed)
    sampler = None
    if distributed:
        sampler = DistributedSampler(dataset, shuffle=shuffle, seed=seed, drop_last=drop_last)
        shuffle = False
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        sampler=sampler,
        num_workers=num_workers,
        drop_last=drop_last,
        pin_memory=torch.cuda.is_available(),
        worker_init_fn=seed_worker,
        generator=generator,
        persistent_workers=False,
    )
