"""Base class of the procedural datasets: per-sample seeding, item assembly, validation."""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..registry import SPLITS, check_split

__all__ = ["SceneRNG", "SyntheticDataset"]

_SPLIT_IDS = {name: k for k, name in enumerate(SPLITS)}


class SceneRNG:
    """Independent generators for one sample: scene layout and one noise stream per modality.

    Drawing the noise of one modality never shifts another's, so sample i is the same whatever
    subset of modalities is requested, and whatever worker, order or batch produced it.
    """

    def __init__(self, entropy: Sequence[int], modalities: Sequence[str]) -> None:
        seq = np.random.SeedSequence(list(entropy))
        children = seq.spawn(1 + len(modalities))
        self.scene = np.random.default_rng(children[0])
        self._seeds = dict(zip(modalities, children[1:]))
        self._noise: dict[str, np.random.Generator] = {}

    def noise(self, modality: str) -> np.random.Generator:
        """The noise generator reserved for ``modality`` (created on first use)."""
        if modality not in self._noise:
            self._noise[modality] = np.random.default_rng(self._seeds[modality])
        return self._noise[modality]


class SyntheticDataset(Dataset):
    """A procedural dataset whose sample ``i`` is a pure function of ``(seed, split, name, i)``.

    Subclasses set ``name``, ``class_names``, ``available_modalities``, ``default_modalities``,
    ``default_sizes``, ``is_clip`` and implement :meth:`generate`. Labels are balanced: ``i % num_classes``.
    Items: one float32 tensor per requested modality ((C, H, W), or (T, C, H, W) for clips),
    ``"label"`` (int64 scalar) and, for clips, ``"frame_index"`` (int64, (T,)).
    """

    name: str = ""
    class_names: list[str]
    available_modalities: tuple[str, ...] = ()
    default_modalities: tuple[str, ...] = ()
    default_sizes: Mapping[str, int] = {"train": 500, "val": 200, "test": 1000}
    is_clip: bool = False

    def __init__(
        self,
        split: str = "train",
        *,
        size: int | None = None,
        resolution: int = 32,
        difficulty: float = 0.5,
        seed: int = 0,
        modalities: Sequence[str] | None = None,
        transform: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None,
    ) -> None:
        self.split = check_split(split)
        size = self.default_sizes[split] if size is None else size
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ValueError(f"{self.name}: size must be a positive int, got {size!r}")
        if not isinstance(resolution, int) or isinstance(resolution, bool) or not 16 <= resolution <= 512:
            raise ValueError(f"{self.name}: resolution must be an int in [16, 512], got {resolution!r}")
        if not isinstance(difficulty, (int, float)) or not 0.0 <= float(difficulty) <= 1.0:
            raise ValueError(f"{self.name}: difficulty must be a number in [0, 1], got {difficulty!r}")
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"{self.name}: seed must be a non-negative int, got {seed!r}")
        mods = tuple(self.default_modalities if modalities is None else modalities)
        if isinstance(modalities, str):
            raise TypeError(f"{self.name}: modalities must be a sequence of names, not the str {modalities!r}")
        unknown = [m for m in mods if m not in self.available_modalities]
        if not mods or unknown or len(set(mods)) != len(mods):
            raise ValueError(
                f"{self.name}: modalities must be distinct names from {self.available_modalities}, got {mods!r}"
            )
        if transform is not None and not callable(transform):
            raise TypeError(f"{self.name}: transform must be callable, got {type(transform).__name__}")
        self.size = size
        self.resolution = resolution
        self.difficulty = float(difficulty)
        self.seed = seed
        self.modalities: tuple[str, ...] = mods
        self.transform = transform
        self._salt = zlib.crc32(self.name.encode())

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    def __len__(self) -> int:
        return self.size

    def scene_rng(self, index: int) -> SceneRNG:
        """The generators of sample ``index`` (a function of seed, split, dataset name and index only)."""
        return SceneRNG((self.seed, _SPLIT_IDS[self.split], self._salt, index), self.available_modalities)

    def label_of(self, index: int) -> int:
        """Label of sample ``index`` (balanced classes)."""
        return index % self.num_classes

    def generate(self, rng: SceneRNG, label: int, index: int) -> dict[str, np.ndarray]:
        """Return ``{modality: float32 array}`` for the requested ``self.modalities``."""
        raise NotImplementedError

    def raw_item(self, index: int) -> dict[str, torch.Tensor]:
        """Item ``index`` before ``transform``."""
        if not isinstance(index, (int, np.integer)) or isinstance(index, bool):
            raise TypeError(f"{self.name}: index must be an int, got {type(index).__name__}")
        if not -self.size <= index < self.size:
            raise IndexError(f"{self.name}: index {index} out of range for size {self.size}")
        index = int(index) % self.size
        label = self.label_of(index)
        arrays = self.generate(self.scene_rng(index), label, index)
        item = {m: torch.from_numpy(np.ascontiguousarray(arrays[m], dtype=np.float32)) for m in self.modalities}
        item["label"] = torch.tensor(label, dtype=torch.int64)
        if self.is_clip:
            num_frames = next(iter(item.values())).shape[0]
            item["frame_index"] = torch.arange(num_frames, dtype=torch.int64)
        return item

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = self.raw_item(index)
        return self.transform(item) if self.transform is not None else item

    def extra_repr(self) -> str:
        return (
            f"split={self.split!r}, size={self.size}, resolution={self.resolution}, "
            f"difficulty={self.difficulty}, seed={self.seed}, modalities={self.modalities}"
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"
