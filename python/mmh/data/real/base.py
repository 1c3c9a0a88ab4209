"""One base for every file-backed dataset: a list of samples, each with per-modality frame files.

A sample lists, for each modality, its frames (one entry for a still image); an entry is a path, or a
tuple of paths read together (the x / y images of one flow frame). Missing files are found when the
dataset is built: ``on_missing="error"`` raises ``FileNotFoundError`` naming the first one, ``"skip"``
drops the sample and counts it (``num_skipped``, ``skipped``). ``verify=True`` also decodes every file
up front so that corrupt ones are handled the same way; otherwise a corrupt file raises an ``OSError``
naming it when read.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import Dataset

from ..transforms import PairedResize, sample_frame_indices
from .io import verify_file

__all__ = ["Entry", "FileListDataset", "FileSample", "in_val_subset", "list_frames"]

Entry = str | tuple
Reader = Callable[[Any], torch.Tensor]


@dataclass
class FileSample:
    """One sample: ``files[modality]`` = list of frame entries; ``label``; free-form ``meta``."""

    files: dict[str, list[Entry]]
    label: int
    name: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


def _paths(entry: Entry) -> tuple[str, ...]:
    return tuple(entry) if isinstance(entry, tuple) else (entry,)


def in_val_subset(name: str, fraction: float) -> bool:
    """Deterministic hold-out: ``name`` belongs to the validation part of a training set (by CRC32)."""
    return (zlib.crc32(name.encode()) % 10000) < fraction * 10000


def list_frames(folder: str, prefix: str = "", suffixes: Sequence[str] = (".jpg", ".jpeg", ".png")) -> list[str]:
    """Sorted files in ``folder`` starting with ``prefix`` and ending with one of ``suffixes`` ([] if absent)."""
    if not os.path.isdir(folder):
        return []
    return sorted(
        os.path.join(folder, f)
        for f in os.listdir(folder)
        if f.startswith(prefix) and f.lower().endswith(tuple(suffixes))
    )


class FileListDataset(Dataset):
    """Items ``{modality: tensor, "label": int64, ["frame_index": (T,)]}`` from a list of :class:`FileSample`.

    Args:
        samples: the samples (built by a dataset-specific parser).
        modalities: modalities to load (each must be a key of every sample's ``files`` and of ``readers``).
        readers: ``modality -> callable(entry) -> (C, H, W) tensor``.
        class_names: names of the classes (``num_classes = len(class_names)``).
        num_frames: ``None`` → still images ``(C, H, W)`` (a video sample gives the frame chosen by
            ``sampling``); an int → clips ``(T, C, H, W)``. Frames of all modalities are aligned by relative
            position in time (so RGB with N frames and flow with N-1 stay in step).
        sampling: "uniform" | "segment" (random frame per segment; use it for training) | "multi_clip".
        resolution: resize every modality to this size (int or (h, w)); ``None`` keeps the file sizes.
        on_missing: "error" or "skip". verify: decode every file when building (slow on big sets).
    """

    name = "files"

    def __init__(
        self,
        samples: Sequence[FileSample],
        *,
        modalities: Sequence[str],
        readers: Mapping[str, Reader],
        class_names: Sequence[str],
        num_frames: int | None = None,
        sampling: str = "uniform",
        num_clips: int = 1,
        resolution: int | Sequence[int] | None = None,
        on_missing: str = "error",
        verify: bool = False,
        transform: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None,
    ) -> None:
        if on_missing not in ("error", "skip"):
            raise ValueError(f"{self.name}: on_missing must be 'error' or 'skip', got {on_missing!r}")
        mods = tuple(modalities)
        if isinstance(modalities, str) or not mods:
            raise ValueError(f"{self.name}: modalities must be a non-empty sequence of names, got {modalities!r}")
        unknown = [m for m in mods if m not in readers]
        if unknown:
            raise ValueError(f"{self.name}: unsupported modality {unknown[0]!r}; available: {sorted(readers)}")
        if num_frames is not None and (not isinstance(num_frames, int) or num_frames < 1):
            raise ValueError(f"{self.name}: num_frames must be None or a positive int, got {num_frames!r}")
        sample_frame_indices(1, 1, sampling, num_clips=num_clips)  # validates sampling / num_clips
        if num_frames is None and sampling == "multi_clip":
            raise ValueError(f"{self.name}: sampling='multi_clip' needs num_frames (clips)")
        self.modalities: tuple[str, ...] = mods
        self.class_names = list(class_names)
        self.readers = dict(readers)
        self.num_frames, self.sampling, self.num_clips = num_frames, sampling, num_clips
        self.is_clip = num_frames is not None
        self.resize = PairedResize(resolution, keys=mods) if resolution is not None else None
        self.transform = transform
        self.skipped: list[tuple[str, str]] = []
        kept = []
        for s in samples:
            problem = self._check(s, verify)
            if problem is None:
                kept.append(s)
            elif on_missing == "skip":
                self.skipped.append((s.name, problem))
            else:
                raise FileNotFoundError(f"{self.name}: sample {s.name!r}: {problem}")
        if not kept:
            raise ValueError(f"{self.name}: no usable samples ({len(self.skipped)} skipped for missing files)")
        self.samples: list[FileSample] = kept

    def _check(self, s: FileSample, verify: bool) -> str | None:
        for m in self.modalities:
            frames = s.files.get(m)
            if not frames:
                return f"no {m} files found"
            for entry in frames:
                for p in _paths(entry):
                    if not os.path.isfile(p):
                        return f"missing file {p}"
                    if verify:
                        try:
                            verify_file(p)
                        except (OSError, ValueError) as exc:
                            return str(exc)
        return None

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    @property
    def num_skipped(self) -> int:
        """Samples dropped by ``on_missing="skip"``."""
        return len(self.skipped)

    @property
    def labels(self) -> list[int]:
        """Label of every sample, in order."""
        return [s.label for s in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def _load(self, m: str, entry: Entry) -> torch.Tensor:
        try:
            x = self.readers[m](entry)
        except FileNotFoundError as exc:  # deleted after the dataset was built
            raise FileNotFoundError(f"{self.name}: {exc}") from exc
        except (OSError, ValueError) as exc:
            raise OSError(f"{self.name}: {exc}") from exc
        return x

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        s = self.samples[index]
        first = s.files[self.modalities[0]]
        t = self.num_frames or 1
        idx = sample_frame_indices(len(first), t, self.sampling, num_clips=self.num_clips)
        item: dict[str, torch.Tensor] = {}
        for m in self.modalities:
            frames = s.files[m]
            mapped = (idx * len(frames)) // len(first)  # align by relative position in time
            loaded = {int(k): self._load(m, frames[int(k)]) for k in mapped.unique()}
            shapes = {tuple(v.shape) for v in loaded.values()}
            if len(shapes) != 1:
                raise ValueError(f"{self.name}: sample {s.name!r}: {m} frames have different shapes {shapes}")
            stack = torch.stack([loaded[int(k)] for k in mapped.reshape(-1)]).reshape(*mapped.shape, *shapes.pop())
            item[m] = stack if self.is_clip else stack.reshape(stack.shape[-3:])
        if self.resize is not None:
            item = self.resize(item)
        sizes = {m: tuple(item[m].shape[-2:]) for m in self.modalities}
        if len(set(sizes.values())) != 1:
            raise ValueError(
                f"{self.name}: sample {s.name!r}: modalities have different sizes {sizes}; pass resolution="
            )
        item["label"] = torch.tensor(s.label, dtype=torch.int64)
        if self.is_clip:
            item["frame_index"] = idx
        return self.transform(item) if self.transform is not None else item
