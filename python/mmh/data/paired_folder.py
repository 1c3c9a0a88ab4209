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
- Outlier files are left out of those statistics: per modality, each train file's per-channel mean and std are
  compared with the other files' by a robust z-score (distance from the median over 1.4826 x the median absolute
  deviation, the deviation floored at a tenth of the median within-file std); a file beyond ``outlier_z``
  (default 8; None keeps every file) is excluded and listed in ``normalization_outliers`` (``mmh data check``
  reports it), so one file holding 3e38 no longer moves the mean. The same pass hashes every train file
  (``normalization_scan``), which :mod:`mmh.data.check` reuses instead of reading the files again.
- ``classes=`` (``paired_folder``) lists the class names: a class folder not in the list is an error naming it.
- Names that are not valid text (undecodable bytes, i.e. a non-UTF-8 file name, or control characters) are an
  error naming the entry by its ``repr``: such a file never becomes a modality of its own.
- ``allow_overlap`` (default False) is read by :func:`mmh.data.check.check_data`: with it, samples whose content
  repeats within or across splits are warnings instead of errors.
- ``resolution=`` resizes every modality (bilinear, nearest for ``depth``); without it all modalities of a sample
  must have the same size.
- Clips of different lengths within a sample (e.g. 30 RGB frames, 29 flow frames) are aligned by relative position
  in time; a still file next to clip folders is repeated for every frame.
- A class folder of the train split without sample folders, a split folder without samples, or a ``root`` that is
  not a folder is an error naming the folder.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import unicodedata
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .real.base import FileListDataset, FileSample
from .registry import SPLITS, check_split, register_dataset
from .transforms import PairedResize

__all__ = [
    "PairedFolder",
    "NormalizedFileDataset",
    "read_any",
    "read_bytes",
    "decode_frame",
    "FILE_EXTS",
    "FileStats",
    "NormalizationScan",
    "frame_stats",
    "pooled_stats",
    "robust_z",
    "scan_normalization",
    "read_frame",
    "find_outliers",
    "scan_paired_folder",
    "compute_stats",
    "load_stats",
    "check_name",
    "OUTLIER_Z",
]

#: File extensions a modality file (or a clip frame) may have.
FILE_EXTS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".npy")
#: A channel whose standard deviation is below this is not scaled (constant channel).
MIN_STD = 1e-6
#: Default robust z-score beyond which a train file is left out of the normalisation statistics.
OUTLIER_Z = 8.0
#: Files are read (and hashed) in chunks of this many bytes.
CHUNK = 1 << 20


def check_name(path: str, what: str = "file") -> None:
    """ValueError naming ``path`` by its repr when its last component is not valid text: undecodable bytes (a
    non-UTF-8 name, which Python keeps as surrogate escapes) or control characters."""
    name = os.path.basename(path)
    bad = any(0xD800 <= ord(ch) <= 0xDFFF or unicodedata.category(ch) == "Cc" for ch in name)
    if bad:
        raw = os.fsencode(path) if any(0xD800 <= ord(ch) <= 0xDFFF for ch in name) else path
        raise ValueError(f"{what} name {raw!r} is not valid text (non-UTF-8 bytes or control characters); rename it")


def read_bytes(path: str, digest: bool = True) -> tuple[bytes, str]:
    """The bytes of ``path`` and their BLAKE2b-128 digest (hex; '' with ``digest=False``), read in
    :data:`CHUNK`-byte pieces and hashed as they come."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"missing file: {path}")
    h, parts = hashlib.blake2b(digest_size=16), []
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            if digest:
                h.update(chunk)
            parts.append(chunk)
    return b"".join(parts), h.hexdigest() if digest else ""


def _open_image(data: bytes, path: str) -> Any:
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise OSError(f"unreadable image file {path}: empty file (0 bytes)")
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except UnidentifiedImageError as exc:
        raise OSError(f"unreadable image file {path}: not an image in a format Pillow reads") from exc
    except (OSError, SyntaxError, ValueError, EOFError, zlib.error, Image.DecompressionBombError) as exc:
        raise OSError(f"unreadable image file {path}: {exc}") from exc
    return img


def read_any(path: str, depth_scale: float = 65535.0) -> torch.Tensor:
    """One frame as float32 ``(C, H, W)``: 8-bit colour -> 3 channels / 255, 8-bit grey -> 1 channel / 255,
    16-bit (or 32-bit integer) grey -> 1 channel / ``depth_scale``, float images and ``.npy`` arrays ((H, W) or
    (C, H, W)) unchanged. Errors name the file: FileNotFoundError (missing), OSError (cannot be decoded: empty,
    truncated, not an image), ValueError (not a numeric array, NaN or inf)."""
    return decode_frame(read_bytes(path, digest=False)[0], path, depth_scale)


def decode_frame(data: bytes, path: str, depth_scale: float = 65535.0) -> torch.Tensor:
    """:func:`read_any` on bytes already read from ``path`` (``path`` picks the format and names the file)."""
    if path.lower().endswith(".npy"):
        if not data:
            raise OSError(f"unreadable .npy file {path}: empty file (0 bytes)")
        try:
            a = np.load(io.BytesIO(data), allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise OSError(f"unreadable .npy file {path}: {exc}") from exc
        if not isinstance(a, np.ndarray):
            raise ValueError(f"array file {path}: expected one array, got {type(a).__name__}")
        if a.ndim == 2:
            a = a[None]
        if a.ndim != 3 or a.size == 0 or not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
            raise ValueError(
                f"array file {path}: expected a numeric (H, W) or (C, H, W) array, got {a.dtype} {a.shape}"
            )
        a = a.astype(np.float32)
        if not np.isfinite(a).all():
            raise ValueError(f"array file {path} contains NaN or inf")
        return torch.from_numpy(np.ascontiguousarray(a))
    img = _open_image(data, path)
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
    frames = [
        os.path.join(folder, f)
        for f in sorted(os.listdir(folder), key=_natural_key)
        if f.lower().endswith(FILE_EXTS) and os.path.isfile(os.path.join(folder, f))
    ]
    for f in frames:
        check_name(f, "frame file")
    return frames


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
                check_name(path, "paired_folder: modality folder")
                files[entry] = frames
                clips.append(entry)
        elif ext.lower() in FILE_EXTS:
            check_name(path, "paired_folder: modality file")  # an odd name would become a modality of its own
            if stem in files:
                raise ValueError(f"paired_folder: sample {folder} has two files for modality {stem!r}")
            files[stem] = [path]
    return files, clips


def _subdirs(folder: str, what: str = "folder") -> list[str]:
    names = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)) and not d.startswith("."))
    for d in names:
        check_name(os.path.join(folder, d), f"paired_folder: {what}")
    return names


def scan_paired_folder(
    root: str, split: str, class_names: Sequence[str] | None = None
) -> tuple[list[FileSample], list[str], bool]:
    """The samples of ``root/<split>`` (files as found, not yet checked), the class names (given, or the split's
    class folders sorted) and whether any modality is a clip folder."""
    top = os.path.join(root, split)
    if not os.path.isdir(root):
        raise FileNotFoundError(
            f"paired_folder: root {root!r} is not a folder (dataset.kwargs.root=DIR: the folder "
            f"holding train/ and test/)"
        )
    if not os.path.isdir(top):
        have = [s for s in SPLITS if os.path.isdir(os.path.join(root, s))]
        raise FileNotFoundError(f"paired_folder: no {split!r} split folder {top} (root {root!r} has splits {have})")
    found = _subdirs(top, "class folder")
    classes = list(class_names) if class_names is not None else found
    if not classes:
        raise ValueError(f"paired_folder: {top} has no class folders (layout ROOT/<split>/<class>/<sample>/)")
    unknown = [c for c in found if c not in classes]
    if unknown:
        whose = "the given classes" if split == "train" else "a class of the train split"
        raise ValueError(f"paired_folder: class folder {unknown[0]!r} in {top} is not {whose} {list(classes)}")
    samples, any_clip = [], False
    for label, cls in enumerate(classes):
        cdir = os.path.join(top, cls)
        if not os.path.isdir(cdir):
            continue
        names = _subdirs(cdir, "sample folder")
        if not names and class_names is None:  # a class of the train split must have samples to be learnt
            raise ValueError(
                f"paired_folder: class folder {cdir} has no sample folders (layout "
                f"ROOT/<split>/<class>/<sample>/<modality>.<ext>); remove it or add its samples"
            )
        for name in names:
            files, clips = _sample_files(os.path.join(cdir, name))
            any_clip = any_clip or bool(clips)
            samples.append(FileSample(files, label, name=f"{split}/{cls}/{name}"))
    if not samples:
        raise ValueError(
            f"paired_folder: the {split!r} split {top} has no sample folders (layout "
            f"ROOT/<split>/<class>/<sample>/<modality>.<ext>)"
        )
    return samples, list(classes), any_clip


def load_stats(stats: str | os.PathLike | Mapping[str, Any]) -> dict[str, dict[str, list[float]]]:
    """Normalisation statistics ``{modality: {"mean": [...], "std": [...]}}`` from a mapping or a JSON file (a
    run's ``dataset.json`` holds them under ``"normalization"``). A file that is missing, not JSON or not such
    statistics is an error naming it (FileNotFoundError, else ValueError / TypeError)."""
    source = "stats"
    if isinstance(stats, (str, os.PathLike)):
        source = str(stats)
        if not os.path.isfile(stats):
            raise FileNotFoundError(f"normalisation statistics file not found: {stats}")
        try:
            stats = json.loads(Path(stats).read_bytes())
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
            raise ValueError(f"{source}: not a JSON file of normalisation statistics ({exc})") from None
    if not isinstance(stats, Mapping):
        raise TypeError(f"{source}: normalisation statistics must be a mapping, got {type(stats).__name__}")
    if "normalization" in stats:
        stats = stats["normalization"]
        if not isinstance(stats, Mapping):
            raise ValueError(f"{source}: 'normalization' holds no statistics ({stats!r:.100})")
    out = {}
    for m, s in stats.items():
        try:
            if not isinstance(s, Mapping) or isinstance(s.get("mean"), str) or isinstance(s.get("std"), str):
                raise TypeError
            mean, std = [float(v) for v in s["mean"]], [float(v) for v in s["std"]]
            if len(mean) != len(std):
                raise ValueError
        except (KeyError, TypeError, ValueError):
            raise ValueError(
                f"{source}: statistics of {m!r:.100} must be {{'mean': [...], 'std': [...]}}, numbers of equal "
                f"length; got {s!r:.100}"
            ) from None
        out[str(m)] = {"mean": mean, "std": std}
    return out


@dataclass(slots=True)
class FileStats:
    """What one read of a frame file tells: the file, its modality and sample, its stored shape ``(C, H, W)``, the
    digest of its bytes ('' when not hashed), per-channel ``sum`` / ``sumsq`` over ``count`` values after resizing
    (as the dataset normalises them) and per-channel ``min`` / ``max`` as stored."""

    path: str
    modality: str
    sample: str
    shape: tuple[int, ...]
    digest: str
    count: int
    sum: tuple[float, ...]
    sumsq: tuple[float, ...]
    min: tuple[float, ...]
    max: tuple[float, ...]

    @property
    def channels(self) -> int:
        """Number of channels."""
        return self.shape[0]

    @property
    def mean(self) -> list[float]:
        """Per-channel mean (after resizing)."""
        return [v / self.count for v in self.sum]

    @property
    def std(self) -> list[float]:
        """Per-channel population standard deviation (after resizing)."""
        return [math.sqrt(max(q / self.count - (v / self.count) ** 2, 0.0)) for v, q in zip(self.sum, self.sumsq)]


def frame_stats(
    x: torch.Tensor,
    path: str,
    modality: str,
    sample: str,
    digest: str = "",
    resize: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None,
) -> FileStats:
    """The :class:`FileStats` of one decoded frame ``x`` (C, H, W); ``resize`` as the dataset resizes it."""
    shape = tuple(int(v) for v in x.shape)
    raw = x.double().reshape(x.shape[0], -1)
    if resize is not None:
        x = resize({modality: x})[modality]
    flat = x.double().reshape(x.shape[0], -1)
    return FileStats(
        path,
        modality,
        sample,
        shape,
        digest,
        int(flat.shape[1]),
        tuple(flat.sum(1).tolist()),
        tuple((flat * flat).sum(1).tolist()),
        tuple(raw.min(1).values.tolist()),
        tuple(raw.max(1).values.tolist()),
    )


def pooled_stats(
    records: Sequence[FileStats], modalities: Sequence[str], exclude: Any = ()
) -> dict[str, dict[str, list[float]]]:
    """Per modality and channel, mean and population std over every value of ``records`` (float64 sums in record
    order) but those whose path is in ``exclude``; ValueError naming the sample when channel counts differ."""
    sums: dict[str, list[Any]] = {}
    for r in records:
        if r.path in exclude:
            continue
        acc = [np.asarray(r.sum), np.asarray(r.sumsq), float(r.count)]
        if r.modality in sums:
            if sums[r.modality][0].shape != acc[0].shape:
                raise ValueError(
                    f"modality {r.modality!r}: {r.sample} has {acc[0].shape[0]} channels ({r.path}), "
                    f"earlier samples {sums[r.modality][0].shape[0]}"
                )
            sums[r.modality] = [a + b for a, b in zip(sums[r.modality], acc, strict=True)]
        else:
            sums[r.modality] = acc
    out = {}
    for m in modalities:
        total, sq, n = sums[m]
        mean = total / n
        std = np.sqrt(np.clip(sq / n - mean * mean, 0.0, None))
        out[m] = {"mean": mean.tolist(), "std": std.tolist()}
    return out


def _features(records: Sequence[FileStats]) -> tuple[np.ndarray, np.ndarray]:
    """Per-file features ``[mean_c..., std_c...]`` and their scale floors (a tenth of the median within-file std of
    that channel, for both)."""
    feats = np.array([r.mean + r.std for r in records], dtype=np.float64)
    c = feats.shape[1] // 2
    floor = 0.1 * np.median(feats[:, c:], axis=0)
    return feats, np.concatenate([floor, floor])


def robust_z(features: np.ndarray, floor: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
    """Largest robust z-score of each row of ``features`` (n, k): ``|x - median| / max(1.4826 MAD, floor)`` per
    column, median and MAD over ``reference`` (default the rows themselves). Zero with fewer than 3 reference rows
    (no majority to compare with)."""
    ref = features if reference is None else reference
    if len(ref) < 3 or len(features) == 0:
        return np.zeros(len(features))
    with np.errstate(over="ignore", invalid="ignore"):
        med = np.median(ref, axis=0)
        mad = np.median(np.abs(ref - med), axis=0)
        scale = np.maximum(np.maximum(1.4826 * mad, floor), 1e-12 * (1.0 + np.abs(med)))
        z = np.abs(features - med) / scale
    return np.nan_to_num(z, nan=np.inf).max(axis=1)


def find_outliers(records: Sequence[FileStats], modalities: Sequence[str], outlier_z: float | None) -> dict[str, float]:
    """``{path: z}`` of the records whose per-channel mean or std is beyond ``outlier_z`` robust z-scores from the
    other files of their modality (see :func:`robust_z`); empty when ``outlier_z`` is None."""
    out: dict[str, float] = {}
    if outlier_z is None:
        return out
    for m in modalities:
        rs = [r for r in records if r.modality == m]
        if len({r.channels for r in rs}) != 1:
            continue  # channel mismatch: an error of its own
        feats, floor = _features(rs)
        for r, z in zip(rs, robust_z(feats, floor), strict=True):
            if z > outlier_z:
                out[r.path] = float(z)
    return out


@dataclass
class NormalizationScan:
    """One pass over the train files: the normalisation statistics (outliers left out), every file's
    :class:`FileStats` (with the digest of its bytes) and the outliers ``{path: robust z}``."""

    normalization: dict[str, dict[str, list[float]]]
    records: list[FileStats]
    outliers: dict[str, float]
    outlier_z: float | None


def read_frame(
    path: str,
    modality: str,
    sample: str,
    depth_scale: float = 65535.0,
    resize: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None,
) -> FileStats:
    """Read ``path`` once: hash its bytes and decode them into its :class:`FileStats`. Errors name the file:
    FileNotFoundError (missing), ValueError (cannot be decoded or holds bad values)."""
    data, digest = read_bytes(path)
    try:
        x = decode_frame(data, path, depth_scale)
    except FileNotFoundError:
        raise
    except OSError as exc:  # bad input, not a fault of this machine
        raise ValueError(str(exc)) from exc
    return frame_stats(x, path, modality, sample, digest, resize)


def scan_normalization(
    samples: Sequence[FileSample],
    modalities: Sequence[str],
    depth_scale: float = 65535.0,
    resolution: int | Sequence[int] | None = None,
    outlier_z: float | None = OUTLIER_Z,
) -> NormalizationScan:
    """Read every frame of ``samples`` once (bytes hashed in chunks, then decoded from memory) and return the
    normalisation statistics with the outlier files (:func:`find_outliers`) left out. Cost: one read and one decode
    of every train frame, the same as the plain statistics."""
    resize = {m: PairedResize(resolution, keys=[m]) for m in modalities} if resolution is not None else {}
    records = [
        read_frame(entry, m, s.name, depth_scale, resize.get(m))
        for s in samples
        for m in modalities
        for entry in s.files[m]
    ]
    pooled_stats(records, modalities)  # channel mismatches first: they make per-file comparisons meaningless
    outliers = find_outliers(records, modalities, outlier_z)  # never every file of a modality: the median is kept
    return NormalizationScan(pooled_stats(records, modalities, outliers), records, outliers, outlier_z)


def compute_stats(
    samples: Sequence[FileSample],
    modalities: Sequence[str],
    reader: Callable[[str], torch.Tensor],
    resolution: int | Sequence[int] | None = None,
) -> dict[str, dict[str, list[float]]]:
    """Per modality and channel, mean and population std over every pixel of every frame of ``samples`` read by
    ``reader`` (float64 sums), after resizing to ``resolution`` if given (as the dataset resizes); no file left
    out (:func:`scan_normalization` leaves outliers out)."""
    resize = {m: PairedResize(resolution, keys=[m]) for m in modalities} if resolution is not None else {}
    records = [
        frame_stats(reader(entry), entry, m, s.name, resize=resize.get(m))
        for s in samples
        for m in modalities
        for entry in s.files[m]
    ]
    return pooled_stats(records, modalities)


_STATS_MEMO: dict[Any, NormalizationScan] = {}


def _memo_key(
    samples: Sequence[FileSample],
    modalities: Sequence[str],
    resolution: Any,
    depth_scale: float,
    outlier_z: float | None,
) -> Any:
    files = []
    for s in samples:
        for m in modalities:
            for p in s.files[m]:
                st = os.stat(p)
                files.append((p, st.st_mtime_ns, st.st_size))
    return (tuple(files), tuple(modalities), json.dumps(resolution), float(depth_scale), outlier_z)


class NormalizedFileDataset(FileListDataset):
    """A :class:`FileListDataset` whose frames are read by :func:`read_any` and normalised per modality and
    channel with statistics of the train split (see the module docstring).

    ``train_samples``: a callable returning the train split's checked samples (only called when the statistics
    are needed and ``stats`` is not given). Subclasses build the samples; this class checks the modalities,
    computes (memoised per process, outlier files left out: ``outlier_z``) or loads the statistics and applies
    them. ``normalization_scan`` keeps the train pass (:class:`NormalizationScan`; None when the statistics were
    given or normalisation is off), ``normalization_outliers`` the train files left out; ``allow_overlap`` is
    stored for :func:`mmh.data.check.check_data`.
    """

    name = "files"

    def __init__(
        self,
        samples: Sequence[FileSample],
        *,
        modalities: Sequence[str],
        class_names: Sequence[str],
        train_samples: Callable[[], Sequence[FileSample]] | None,
        normalize: bool = True,
        stats: str | os.PathLike | Mapping[str, Any] | None = None,
        depth_scale: float = 65535.0,
        resolution: int | Sequence[int] | None = None,
        outlier_z: float | None = OUTLIER_Z,
        allow_overlap: bool = False,
        **kwargs: Any,
    ) -> None:
        if not isinstance(depth_scale, (int, float)) or isinstance(depth_scale, bool) or depth_scale <= 0:
            raise ValueError(f"{self.name}: depth_scale must be a positive number, got {depth_scale!r}")
        if outlier_z is not None and (
            not isinstance(outlier_z, (int, float)) or isinstance(outlier_z, bool) or not outlier_z > 0
        ):
            raise ValueError(f"{self.name}: outlier_z must be a positive number or None, got {outlier_z!r}")
        if not isinstance(allow_overlap, bool):
            raise ValueError(f"{self.name}: allow_overlap must be true or false, got {allow_overlap!r}")
        self.depth_scale = float(depth_scale)
        self.outlier_z = None if outlier_z is None else float(outlier_z)
        self.allow_overlap = allow_overlap
        self.resolution = resolution
        self.normalization_scan: NormalizationScan | None = None
        self.normalization_outliers: list[str] = []
        self._stats: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None
        mods = list(modalities)
        reader = self._read
        super().__init__(
            samples,
            modalities=mods,
            readers={m: reader for m in mods},
            class_names=class_names,
            resolution=resolution,
            **kwargs,
        )
        self.normalization: dict[str, dict[str, list[float]]] | None = None
        if stats is not None:
            loaded = load_stats(stats)
            missing = [m for m in self.modalities if m not in loaded]
            if missing:
                raise ValueError(
                    f"{self.name}: the given normalisation statistics have no entry for modality "
                    f"{missing[0]!r} (they cover {sorted(loaded)})"
                )
            self.normalization = {m: loaded[m] for m in self.modalities}
        elif normalize:
            if train_samples is None:
                raise ValueError(
                    f"{self.name}: cannot compute normalisation statistics without the train split; "
                    f"pass stats= (a mapping or a run's dataset.json) or normalize=False"
                )
            train = list(train_samples())
            key = _memo_key(train, self.modalities, resolution, self.depth_scale, self.outlier_z)
            if key not in _STATS_MEMO:
                _STATS_MEMO[key] = scan_normalization(
                    train, self.modalities, self.depth_scale, resolution, self.outlier_z
                )
            scan = self.normalization_scan = _STATS_MEMO[key]
            self.normalization_outliers = sorted(scan.outliers)
            self.normalization = {m: dict(v) for m, v in scan.normalization.items()}
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
                raise ValueError(
                    f"{self.name}: {entry} has {x.shape[0]} channels but the normalisation statistics "
                    f"of {m!r} have {mean.shape[0]}"
                )
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
        raise ValueError(
            f"paired_folder: modality {unknown[0]!r} is in no sample of {where} (found modalities {sorted(found)})"
        )
    return list(modalities)


def _check_discovered(train: Sequence[FileSample], mods: Sequence[str]) -> None:
    """A discovered modality that some train samples lack: the error names a sample that lacks it and, when it is
    rarer than its absence (a stray file, e.g. ``rgb copy.png``), the samples that have it."""
    for m in mods:
        lacking = [s.name for s in train if m not in s.files]
        if not lacking:
            continue
        having = [s for s in train if m in s.files]
        msg = f"paired_folder: sample {lacking[0]!r} has no {m!r} file (modality found in the train split)"
        if len(having) < len(lacking):
            msg += (
                f"; only {len(having)} of {len(train)} train samples have one, e.g. {having[0].files[m][0]}: a "
                f"stray file? remove it or pass modalities=[...]"
            )
        raise FileNotFoundError(msg)


@register_dataset("paired_folder")
class PairedFolder(NormalizedFileDataset):
    """Your own paired recordings in ``ROOT/<split>/<class>/<sample>/<modality>.<ext>`` (see the module docstring).

    Args:
        root: the folder holding ``train/`` (and ``val/``, ``test/``).
        modalities: modalities to load (default: every one found in the train split, sorted).
        num_frames: clips (``<modality>/`` folders) are read as ``(T, C, H, W)`` with T = num_frames frames sampled
            by ``sampling``; required when the data has clip folders.
        resolution: resize every modality to this size (int or (h, w)); None keeps the file sizes.
        classes: the class names (label = index); default the train split's class folders, sorted. A class
            folder not in the list is an error naming it.
        normalize / stats / depth_scale / outlier_z / allow_overlap: see the module docstring. on_missing:
            "error" | "skip".
    """

    name = "paired_folder"

    def __init__(
        self,
        split: str = "train",
        *,
        root: str | os.PathLike,
        modalities: Sequence[str] | None = None,
        num_frames: int | None = None,
        resolution: int | Sequence[int] | None = None,
        normalize: bool = True,
        stats: str | os.PathLike | Mapping[str, Any] | None = None,
        depth_scale: float = 65535.0,
        on_missing: str = "error",
        classes: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        check_split(split)
        if root is None:
            raise ValueError("paired_folder: give the data folder: root=DIR (in a config: dataset.kwargs.root=DIR)")
        if classes is not None and (isinstance(classes, str) or not list(classes)):
            raise ValueError(f"paired_folder: classes must be a non-empty list of names, got {classes!r}")
        root = os.fspath(root)
        given = [str(c) for c in classes] if classes is not None else None
        train, classes, train_clip = scan_paired_folder(root, "train", given)  # classes, modalities come from train
        found = sorted({m for s in train for m in s.files})
        mods = _check_modalities(modalities, found, os.path.join(root, "train"))
        if modalities is None and on_missing == "error":
            _check_discovered(train, mods)
        if split == "train":
            samples, any_clip = train, train_clip
        else:
            samples, _, any_clip = scan_paired_folder(root, split, classes)
        if any_clip and num_frames is None:
            raise ValueError(
                f"paired_folder: {root} has clip folders (<sample>/<modality>/<frames>); pass num_frames=T"
            )

        def train_samples() -> list[FileSample]:
            # the train samples that the train split keeps (same modalities, same on_missing rule)
            return FileListDataset(
                train,
                modalities=mods,
                readers={m: self._read for m in mods},
                class_names=classes,
                on_missing=on_missing,
            ).samples

        super().__init__(
            samples,
            modalities=mods,
            class_names=classes,
            train_samples=train_samples,
            normalize=normalize,
            stats=stats,
            depth_scale=depth_scale,
            resolution=resolution,
            num_frames=num_frames,
            on_missing=on_missing,
            **kwargs,
        )
        self.root = root
