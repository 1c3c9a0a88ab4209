"""Dataset registry: configs name datasets by string.

>>> @register_dataset("my_set")
... def build_my_set(split="train", **kwargs): ...
>>> ds = build_dataset("my_set", split="test")
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from torch.utils.data import Dataset

from ..utils.registry import check_name, register_unique

__all__ = ["SPLITS", "build_dataset", "dataset_factory", "list_datasets", "register_dataset"]

#: Split names understood by every built-in dataset.
SPLITS: tuple[str, ...] = ("train", "val", "test")

_REGISTRY: dict[str, Callable[..., Dataset]] = {}
F = TypeVar("F", bound=Callable[..., Dataset])


def register_dataset(name: str) -> Callable[[F], F]:
    """Register a dataset class or factory under ``name``.

    The registered callable is invoked as ``factory(split=split, **kwargs)``.
    Registering the same name twice raises ``ValueError`` (no silent override).
    """
    check_name("dataset", name)

    def decorator(factory: F) -> F:
        return register_unique(_REGISTRY, "dataset", name, factory, factory)

    return decorator


def build_dataset(name: str, split: str = "train", **kwargs: Any) -> Dataset:
    """Build the dataset registered as ``name`` for ``split`` ("train", "val" or "test").

    Every dataset built this way exposes ``modalities``, ``num_classes`` and ``class_names``.
    """
    if name not in _REGISTRY:
        raise KeyError(f"build_dataset: unknown dataset name {name!r}; known: {sorted(_REGISTRY)}")
    if not isinstance(split, str):
        raise TypeError(f"build_dataset: split must be a str, got {type(split).__name__}")
    return _REGISTRY[name](split=split, **kwargs)


def dataset_factory(name: str) -> Callable[..., Dataset]:
    """The class or factory registered as ``name`` (KeyError naming the known names otherwise)."""
    if name not in _REGISTRY:
        raise KeyError(f"unknown dataset name {name!r}; known: {sorted(_REGISTRY)}")
    return _REGISTRY[name]


def list_datasets() -> list[str]:
    """Names of all registered datasets, sorted."""
    return sorted(_REGISTRY)


def check_split(split: str, allowed: tuple[str, ...] = SPLITS) -> str:
    """Return ``split`` if it is one of ``allowed``, else raise a ValueError naming it."""
    if split not in allowed:
        raise ValueError(f"split must be one of {allowed}, got {split!r}")
    return split
