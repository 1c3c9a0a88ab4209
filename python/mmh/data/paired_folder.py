"""Your own recordings as a dataset: ``paired_folder`` (a folder tree) and the shared machinery of ``manifest``.

Layout of ``paired_folder``::

    ROOT/<split>/<class>/<sample>/<modality>.<ext>         a still image / map of that modality
    ROOT/<split>/<class>/<sample>/<modality>/<frame>.<ext>  a clip: the folder's frames in sorted order

- ``<ext>``: ``png`` / ``jpg`` / ``jpeg`` / ``bmp`` — 8-bit colour (3 channels, value / 255), 8-bit grey (1 channel,
  value / 255), 16-bit grey such as depth (1 channel, value / ``depth_scale``, default 65535: lossless), 32-bit
  float images as they are — or ``.npy`` arrays ``(H, W)`` (1 channel) or ``(C, H, W)``, values as they are.
- Classes are the ``<class>`` folder names of the train split, sorted (label = index); ``class_names`` keeps
  them, and the runner saves them in the run (``dataset.json``). A class folder of another split that the train
  split lacks is an error naming it.
- Modalities are discovered: every ``<modality>`` name found in the train split (sorted), unless ``modalities=``
  names them. A sample lacking one raises ``FileNotFoundError`` naming the sample and the modality, or with
  ``on_missing="skip"`` is skipped and counted (``num_skipped``, ``skipped``).
- Normalisation (``normalize=True``, the default): each modality, per channel, ``(x - mean) / std`` with the mean
  and (population) standard deviation of every pixel of every frame of the *train* split (after the optional
  resizing) — the same numbers for every split, exposed as ``normalization = {modality: {"mean": [..], "std":
  [..]}}`` and saved in the run. A channel with std < 1e-6 (constant) is divided by 1. ``stats=`` gives the
  statistics instead (a mapping, or a JSON file such as a run's ``dataset.json``), e.g. to read new data the way
  a trained model expects it.
- ``resolution=`` resizes every modality (bilinear, nearest for ``depth``); without it all modalities of a sample
  must have the same size.
- Clips of different lengths within a sample (e.g. 30 RGB frames, 29 flow frames) are aligned by relative position
  in time; a still file next to clip folders is repeated for every frame.
- A class folder of the train split without sample folders, a split folder without samples, or a ``root`` that is
  not a folder is an error naming the folder.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .real.base import FileListDataset, FileSample
from .real.io import _open, load_npy
from .registry import SPLITS, check_split, register_dataset
from .transforms import PairedResize

__all__ = ["PairedFolder", "NormalizedFileDataset", "read_any", "FILE_EXTS", "scan_paired_folder",
           "compute_stats", "load_stats"]

#: File extensions a modality file (or a clip frame) may have.
FILE_EXTS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".npy")
#: A channel whose standard deviation is below this is not scaled (constant channel).
MIN_STD = 1e-6


def read_any(path: str, depth_scale: float = 65535.0) -> torch.Tensor:
    """One frame as float32 ``(C, H, W)``: 8-bit colour -> 3 channels / 255, 8-bit grey -> 1 channel / 255,
    16-bit (or 32-bit integer) grey -> 1 channel / ``depth_scale``, float images and ``.npy`` arrays ((H, W) or
    (C, H, W)) unchanged. Errors name the file."""
    if path.lower().endswith(".npy"):
        a = load_npy(path)
        if a.ndim == 2:
            a = a[None]
        if a.ndim != 3 or not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
            raise ValueError(f"array file {path}: expected a numeric (H, W) or (C, H, W) array, got {a.dtype} "
                             f"{a.shape}")
        a = a.astype(np.float32)
        if not np.isfinite(a).all():
            raise ValueError(f"array file {path} contains NaN or inf")
        return torch.from_numpy(np.ascontiguousarray(a))
    img = _open(path)
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        a = np.asarray(img).astype(np.float64) / float(depth_scale)
    elif img.mode == "F":
        a = np.asarray(img, dtype=np.float64)
    elif img.mode in ("L", "LA", "1"):
        a = np.asarray(img.convert("L"), dtype=np.float64) / 255.0
    else:  # RGB, RGBA, P, CMYK, YCbCr, ...
        a = np.asarray(img.convert("RGB"), dtype=np.float64) / 255.0
    a = a[None] if a.ndim == 2 else np.moveaxis(a, -1, 0)
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def _natural_key(name: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _frames(folder: str) -> list[str]:
    return [os.path.join(folder, f) for f in sorted(os.listdir(folder), key=_natural_key)
            if f.lower().endswith(FILE_EXTS) and os.path.isfile(os.path.join(folder, f))]


def _sample_files(folder: str) -> tuple[dict[str, list[str]], list[str]]:
    """``{modality: [frame paths]}`` of one sample folder and the names of its clip folders."""
    files: dict[str, list[str]] = {}
    clips = []
    for entry in sorted(os.listdir(folder)):
        path = os.path.join(folder, entry)
        stem, ext = os.path.splitext(entry)
        if os.path.isdir(path):
            frames = _frames(path)
            if frames:
                files[entry] = frames
                clips.append(entry)
        elif ext.lower() in FILE_EXTS:
            if stem in files:
                raise ValueError(f"paired_folder: sample {folder} has two files for modality {stem!r}")
            files[stem] = [path]
    return files, clips


def _subdirs(folder: str) -> list[str]:
    return sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)) and not d.startswith("."))


def scan_paired_folder(root: str, split: str, class_names: Sequence[str] | None = None
                       ) -> tuple[list[FileSample], list[str], bool]:
    """The samples of ``root/<split>`` (files as found, not yet checked), the class names (given, or the split's
    class folders sorted) and whether any modality is a clip folder."""
    top = os.path.join(root, split)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"paired_folder: root {root!r} is not a folder (dataset.kwargs.root=DIR: the folder "
                                f"holding train/ and test/)")
    if not os.path.isdir(top):
        have = [s for s in SPLITS if os.path.isdir(os.path.join(root, s))]
        raise FileNotFoundError(f"paired_folder: no {split!r} split folder {top} (root {root!r} has splits {have})")
    found = _subdirs(top)
    classes = list(class_names) if class_names is not None else found
    if not classes:
        raise ValueError(f"paired_folder: {top} has no class folders (layout ROOT/<split>/<class>/<sample>/)")
    unknown = [c for c in found if c not in classes]
    if unknown:
        raise ValueError(f"paired_folder: class folder {unknown[0]!r} in {top} is not a class of the train split "
                         f"{list(classes)}")
    samples, any_clip = [], False
    for label, cls in enumerate(classes):
        cdir = os.path.join(top, cls)
        if not os.path.isdir(cdir):
            continue
        names = _subdirs(cdir)
        if not names and class_names is None:  # a class of the train split must have samples to be learnt
            raise ValueError(f"paired_folder: class folder {cdir} has no sample folders (layout "
                             f"ROOT/<split>/<class>/<sample>/<modality>.<ext>); remove it or add its samples")
        for name in names:
            files, clips = _sample_files(os.path.join(cdir, name))
            any_clip = any_clip or bool(clips)
            samples.append(FileSample(files, label, name=f"{split}/{cls}/{name}"))
    if not samples:
        raise ValueError(f"paired_folder: the {split!r} split {top} has no sample folders (layout "
                         f"ROOT/<split>/<class>/<sample>/<modality>.<ext>)")
    return samples, list(classes), any_clip


def load_stats(stats: str | os.PathLike | Mapping[str, Any]) -> dict[str, dict[str, list[float]]]:
    """Normalisation statistics ``{modality: {"mean": [...], "std": [...]}}`` from a mapping or a JSON file (a
    run's ``dataset.json`` holds them under ``"normalization"``)."""
    source = "stats"
    if isinstance(stats, (str, os.PathLike)):
        source = str(stats)
        if not os.path.isfile(stats):
            raise FileNotFoundError(f"normalisation statistics file not found: {stats}")
        stats = json.loads(Path(stats).read_text())
    if not isinstance(stats, Mapping):
        raise TypeError(f"{source}: normalisation statistics must be a mapping, got {type(stats).__name__}")
    if "normalization" in stats:
        stats = stats["normalization"]
        if not isinstance(stats, Mapping):
            raise ValueError(f"{source}: 'normalization' holds no statistics ({stats!r})")
    out = {}
    for m, s in stats.items():
        if not isinstance(s, Mapping) or "mean" not in s or "std" not in s or len(s["mean"]) != len(s["std"]):
            raise ValueError(f"{source}: statistics of {m!r} must be {{'mean': [...], 'std': [...]}} of equal length")
        out[str(m)] = {"mean": [float(v) for v in s["mean"]], "std": [float(v) for v in s["std"]]}
    return out


def compute_stats(samples: Sequence[FileSample], modalities: Sequence[str], reader: Callable[[str], torch.Tensor],
                  resolution: int | Sequence[int] | None = None) -> dict[str, dict[str, list[float]]]:
    """Per modality and channel, mean and population std over every pixel of every frame of ``samples`` (float64
    sums), after resizing to ``resolution`` if given (as the dataset resizes)."""
    resize = {m: PairedResize(resolution, keys=[m]) for m in modalities} if resolution is not None else None
    sums: dict[str, list[torch.Tensor]] = {}
    for s in samples:
        for m in modalities:
            for entry in s.files[m]:
                x = reader(entry)
                if resize is not None:
                    x = resize[m]({m: x})[m]
                x = x.double().reshape(x.shape[0], -1)
                acc = [x.sum(1), (x * x).sum(1), torch.tensor(float(x.shape[1]), dtype=torch.float64)]
                if m in sums:
                    if sums[m][0].shape != acc[0].shape:
                        raise ValueError(f"modality {m!r}: {s.name} has {acc[0].shape[0]} channels, earlier samples "
                                         f"{sums[m][0].shape[0]}")
                    sums[m] = [a + b for a, b in zip(sums[m], acc, strict=True)]
                else:
                    sums[m] = acc
    out = {}
    for m in modalities:
        total, sq, n = sums[m]
        mean = total / n
        std = (sq / n - mean * mean).clamp_min(0).sqrt()
        out[m] = {"mean": mean.tolist(), "std": std.tolist()}
    return out


_STATS_MEMO: dict[Any, dict[str, dict[str, list[float]]]] = {}


def _memo_key(samples: Sequence[FileSample], modalities: Sequence[str], resolution: Any, depth_scale: float) -> Any:
    files = []
    for s in samples:
        for m in modalities:
            for p in s.files[m]:
                st = os.stat(p)
                files.append((p, st.st_mtime_ns, st.st_size))
    return (tuple(files), tuple(modalities), json.dumps(resolution), float(depth_scale))


class NormalizedFileDataset(FileListDataset):
    """A :class:`FileListDataset` whose frames are read by :func:`read_any` and normalised per modality and
    channel with statistics of the train split (see the module docstring).

    ``train_samples``: a callable returning the train split's checked samples (only called when the statistics
    are needed and ``stats`` is not given). Subclasses build the samples; this class checks the modalities,
    computes (memoised per process) or loads the statistics and applies them.
    """

    name = "files"

    def __init__(self, samples: Sequence[FileSample], *, modalities: Sequence[str], class_names: Sequence[str],
                 train_samples: Callable[[], Sequence[FileSample]] | None, normalize: bool = True,
                 stats: str | os.PathLike | Mapping[str, Any] | None = None, depth_scale: float = 65535.0,
                 resolution: int | Sequence[int] | None = None, **kwargs: Any) -> None:
        if not isinstance(depth_scale, (int, float)) or isinstance(depth_scale, bool) or depth_scale <= 0:
            raise ValueError(f"{self.name}: depth_scale must be a positive number, got {depth_scale!r}")
        self.depth_scale = float(depth_scale)
        self._stats: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None
        mods = list(modalities)
        reader = self._read
        super().__init__(samples, modalities=mods, readers={m: reader for m in mods}, class_names=class_names,
                         resolution=resolution, **kwargs)
        self.normalization: dict[str, dict[str, list[float]]] | None = None
        if stats is not None:
            loaded = load_stats(stats)
            missing = [m for m in self.modalities if m not in loaded]
            if missing:
                raise ValueError(f"{self.name}: the given normalisation statistics have no entry for modality "
                                 f"{missing[0]!r} (they cover {sorted(loaded)})")
            self.normalization = {m: loaded[m] for m in self.modalities}
        elif normalize:
            if train_samples is None:
                raise ValueError(f"{self.name}: cannot compute normalisation statistics without the train split; "
                                 f"pass stats= (a mapping or a run's dataset.json) or normalize=False")
            train = list(train_samples())
            key = _memo_key(train, self.modalities, resolution, self.depth_scale)
            if key not in _STATS_MEMO:
                _STATS_MEMO[key] = compute_stats(train, self.modalities, reader, resolution)
            self.normalization = {m: dict(v) for m, v in _STATS_MEMO[key].items()}
        if self.normalization is not None:
            self._stats = {}
            for m, s in self.normalization.items():
                mean = torch.tensor(s["mean"], dtype=torch.float64)
                std = torch.tensor(s["std"], dtype=torch.float64)
                std = torch.where(std < MIN_STD, torch.ones_like(std), std)
                self._stats[m] = (mean.float().view(-1, 1, 1), std.float().view(-1, 1, 1))

    def _read(self, entry: Any) -> torch.Tensor:
        return read_any(entry, self.depth_scale)

    def _load(self, m: str, entry: Any) -> torch.Tensor:
        # Normalising each frame before the (optional) resizing equals normalising after it: resizing averages
        # with weights summing to one (or picks pixels), and the per-channel map is affine.
        x = super()._load(m, entry)
        if self._stats is not None:
            mean, std = self._stats[m]
            if x.shape[0] != mean.shape[0]:
                raise ValueError(f"{self.name}: {entry} has {x.shape[0]} channels but the normalisation statistics "
                                 f"of {m!r} have {mean.shape[0]}")
            x = (x - mean) / std
        return x


def _check_modalities(modalities: Sequence[str] | None, found: Sequence[str], where: str) -> list[str]:
    if modalities is None:
        if not found:
            raise ValueError(f"paired_folder: no modality files found in {where}")
        return sorted(found)
    if isinstance(modalities, str) or not list(modalities):
        raise ValueError(f"paired_folder: modalities must be a non-empty list of names, got {modalities!r}")
    unknown = [m for m in modalities if m not in found]
    if unknown:
        raise ValueError(f"paired_folder: modality {unknown[0]!r} is in no sample of {where} "
                         f"(found modalities {sorted(found)})")
    return list(modalities)


@register_dataset("paired_folder")
class PairedFolder(NormalizedFileDataset):
    """Your own paired recordings in ``ROOT/<split>/<class>/<sample>/<modality>.<ext>`` (see the module docstring).

    Args:
        root: the folder holding ``train/`` (and ``val/``, ``test/``).
        modalities: modalities to load (default: every one found in the train split, sorted).
        num_frames: clips (``<modality>/`` folders) are read as ``(T, C, H, W)`` with T = num_frames frames sampled
            by ``sampling``; required when the data has clip folders.
        resolution: resize every modality to this size (int or (h, w)); None keeps the file sizes.
        normalize / stats / depth_scale: see the module docstring. on_missing: "error" | "skip".
    """

    name = "paired_folder"

    def __init__(self, split: str = "train", *, root: str | os.PathLike, modalities: Sequence[str] | None = None,
                 num_frames: int | None = None, resolution: int | Sequence[int] | None = None,
                 normalize: bool = True, stats: str | os.PathLike | Mapping[str, Any] | None = None,
                 depth_scale: float = 65535.0, on_missing: str = "error", **kwargs: Any) -> None:
        check_split(split)
        if root is None:
            raise ValueError("paired_folder: give the data folder: root=DIR (in a config: dataset.kwargs.root=DIR)")
        root = os.fspath(root)
        train, classes, train_clip = scan_paired_folder(root, "train")  # classes and modalities come from train
        found = sorted({m for s in train for m in s.files})
        mods = _check_modalities(modalities, found, os.path.join(root, "train"))
        if split == "train":
            samples, any_clip = train, train_clip
        else:
            samples, _, any_clip = scan_paired_folder(root, split, classes)
        if any_clip and num_frames is None:
            raise ValueError(f"paired_folder: {root} has clip folders (<sample>/<modality>/<frames>); pass "
                             f"num_frames=T")

        def train_samples() -> list[FileSample]:
            # the train samples that the train split keeps (same modalities, same on_missing rule)
            return FileListDataset(train, modalities=mods, readers={m: self._read for m in mods},
                                   class_names=classes, on_missing=on_missing).samples

        super().__init__(samples, modalities=mods, class_names=classes, train_samples=train_samples,
                         normalize=normalize, stats=stats, depth_scale=depth_scale, resolution=resolution,
                         num_frames=num_frames, on_missing=on_missing, **kwargs)
        self.root = root
