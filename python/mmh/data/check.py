"""``mmh data check``: what is wrong with your own data, found before any training.

:func:`check_data` builds an own-data dataset (``paired_folder`` for a folder, ``manifest`` for a CSV file, or any
registered :class:`~mmh.data.paired_folder.NormalizedFileDataset` by name) for every split present (or the splits
asked for) and returns a :class:`DataReport`:

- **values** per modality and split: files, channels, stored sizes, per-channel mean / std (every file) and
  min / max;
- **unreadable files** (empty, truncated, not an image, an array that is not numeric, NaN or inf): errors naming
  the file;
- **outliers**: a train file whose per-channel mean or std is beyond ``outlier_z`` robust z-scores (median / MAD
  over the files of its modality) is named in a warning and left out of the normalisation statistics (the dataset
  does that itself, :func:`~mmh.data.paired_folder.scan_normalization`); a val / test file that far from the train
  files is a warning;
- **mismatches**: a file with another channel count than its modality's is an error; without ``resolution`` a file
  of another size than its modality's, or modalities of different sizes, are errors (with it, the sizes are listed);
- **duplicates and overlap** by the content hash of a sample's files: the same sample twice in a split, or a sample
  of one split repeated in another, is an error unless the dataset option ``allow_overlap`` is set (then a warning);
  a single file shared between splits is a warning;
- **labels**: samples per class and split; a class with far fewer train samples than the others (a label typo?) is
  a warning; with ``classes=`` a label outside the list is an error naming the row (manifest) or folder;
- **names that are not valid text** (non-UTF-8 file names, control characters): an error naming the file by its
  repr, raised while the dataset is built (so such a file never becomes a modality).

Cost: every file is read once. The train files' statistics and digests come from the dataset's own normalisation
pass (memoised per process), so when the datasets were built before (as :mod:`mmh.runner` does) the check reads only
the val / test files, once each: the bytes in 1 MiB chunks, hashed as they are read, then decoded from memory. With
``stats=`` or ``normalize=False`` the train files are read by the check instead. ``DataReport.cost`` counts the
files read and reused.

:func:`check_before_training` is what the runner calls for own data: the report goes to ``data_check.json`` and
``data_check.txt`` in the run folder, and errors raise :class:`DataCheckError` before any training.
"""

from __future__ import annotations

import math
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..utils.io import write_json, write_text
from .manifest import read_manifest
from .paired_folder import (
    OUTLIER_Z,
    FileStats,
    NormalizedFileDataset,
    _features,
    find_outliers,
    read_frame,
    robust_z,
)
from .registry import SPLITS, build_dataset, dataset_factory
from .transforms import PairedResize

__all__ = ["DataReport", "DataCheckError", "check_data", "check_before_training", "is_own_data", "REPORT_FILES"]

#: The files a report is written to in a run folder (JSON, text).
REPORT_FILES: tuple[str, str] = ("data_check.json", "data_check.txt")
#: Examples named per problem in a message.
_EXAMPLES = 3


class DataCheckError(ValueError):
    """The data check found errors; ``report`` is the :class:`DataReport`."""

    def __init__(self, report: DataReport) -> None:
        super().__init__(report.error_line())
        self.report = report


@dataclass
class DataReport:
    """The outcome of :func:`check_data` (see the module docstring); ``ok`` when there are no errors."""

    target: str
    dataset: str
    splits: dict[str, dict[str, Any]] = field(default_factory=dict)
    modalities: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    normalization: dict[str, dict[str, list[float]]] | None = None
    outliers: list[dict[str, Any]] = field(default_factory=list)
    duplicates: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    cost: dict[str, int] = field(default_factory=lambda: {"files": 0, "read": 0, "reused": 0, "bytes_read": 0})

    @property
    def ok(self) -> bool:
        """True when no error was found (warnings allowed)."""
        return not self.errors

    def error_line(self) -> str:
        """One line: the first error and how many more there are."""
        if not self.errors:
            return f"no problems in {self.target}"
        more = f" (and {len(self.errors) - 1} more problem(s); see the report)" if len(self.errors) > 1 else ""
        return f"{self.errors[0]}{more}"

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``data_check.json``)."""
        return {
            "target": self.target,
            "dataset": self.dataset,
            "ok": self.ok,
            "errors": self.errors,
            "warnings": self.warnings,
            "splits": self.splits,
            "modalities": self.modalities,
            "normalization": self.normalization,
            "outliers": self.outliers,
            "duplicates": self.duplicates,
            "cost": self.cost,
        }

    def to_text(self) -> str:
        """The short text form (``data_check.txt``, printed by ``mmh data check``)."""
        lines = [
            f"data check: {self.dataset} {self.target}: {'ok' if self.ok else 'ERRORS'} "
            f"({len(self.errors)} error(s), {len(self.warnings)} warning(s))"
        ]
        for split, info in self.splits.items():
            per = ", ".join(f"{c} {n}" for c, n in info["classes"].items())
            skipped = f", {info['skipped']} skipped" if info.get("skipped") else ""
            lines.append(f"  {split}: {info['samples']} samples{skipped} ({per})")
        for m, per_split in self.modalities.items():
            for split, s in per_split.items():
                sizes = ", ".join(f"{k} x{v}" for k, v in s["sizes"].items())
                lines.append(
                    f"  {m} {split}: {s['files']} files, channels {s['channels']}, sizes {sizes}; mean "
                    f"{_fmt(s['mean'])} std {_fmt(s['std'])} min {_fmt(s['min'])} max {_fmt(s['max'])}"
                )
        if self.normalization:
            left = sum(1 for o in self.outliers if o.get("excluded"))
            lines.append(
                f"  normalisation (train{f', {left} outlier file(s) left out' if left else ''}): "
                + "; ".join(f"{m} mean {_fmt(v['mean'])} std {_fmt(v['std'])}" for m, v in self.normalization.items())
            )
        c = self.cost
        lines.append(
            f"  cost: {c['files']} files, {c['read']} read by the check ({c['bytes_read']} bytes), "
            f"{c['reused']} from the normalisation pass"
        )
        lines += [f"  error: {e}" for e in self.errors] + [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines) + "\n"

    def write(self, folder: str | os.PathLike) -> tuple[Path, Path]:
        """Write ``data_check.json`` and ``data_check.txt`` into ``folder`` (atomically); returns their paths."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = (folder / REPORT_FILES[0], folder / REPORT_FILES[1])
        write_json(self.to_dict(), paths[0])
        write_text(self.to_text(), paths[1])
        return paths


def _fmt(values: Sequence[float] | None) -> str:
    if values is None:
        return "-"
    return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"


def is_own_data(name: str) -> bool:
    """Whether the dataset registered as ``name`` reads your own files (a :class:`NormalizedFileDataset`)."""
    factory = dataset_factory(name)
    return isinstance(factory, type) and issubclass(factory, NormalizedFileDataset)


def _resolve(target: str | os.PathLike, dataset: str | None, kwargs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The dataset name and kwargs for ``target`` (a folder, a CSV file or a dataset name)."""
    text = os.fspath(target)
    if dataset is None:
        if os.path.isdir(text):
            dataset = "paired_folder"
        elif os.path.isfile(text):
            if not text.lower().endswith(".csv"):
                raise ValueError(f"{text} is neither a folder (paired_folder) nor a .csv file (manifest)")
            dataset = "manifest"
        elif not os.path.exists(text) and os.sep not in text and _registered(text):
            dataset, text = text, ""
        else:
            raise FileNotFoundError(f"no such folder or CSV file: {text}")
    if not _registered(dataset) or not is_own_data(dataset):
        raise ValueError(
            f"{dataset!r} is not an own-data dataset (paired_folder, manifest, or a registered NormalizedFileDataset)"
        )
    kwargs = dict(kwargs)
    if text:
        key = {"paired_folder": "root", "manifest": "csv"}.get(dataset)
        if key is None:
            raise ValueError(f"give {dataset!r} its files through its own options, not a path")
        kwargs[key] = text
    return dataset, kwargs


def _registered(name: str) -> bool:
    try:
        dataset_factory(name)
    except KeyError:
        return False
    return True


def _present_splits(name: str, kwargs: Mapping[str, Any]) -> list[str]:
    """The splits a folder or a manifest holds (train first)."""
    if name == "paired_folder" and kwargs.get("root") is not None:
        root = os.fspath(kwargs["root"])
        return ["train"] + [s for s in SPLITS if s != "train" and os.path.isdir(os.path.join(root, s))]
    if name == "manifest" and kwargs.get("csv") is not None:
        csv = kwargs["csv"]
        if isinstance(csv, Mapping):
            return ["train"] + [s for s in SPLITS if s != "train" and s in csv]
        _, rows = read_manifest(csv)
        named = {r.get("split") for r in rows if r.get("split")}
        return ["train"] + [s for s in SPLITS if s != "train" and s in named]
    return ["train"]


def _where(target: str | os.PathLike, kwargs: Mapping[str, Any]) -> str:
    """The data's location for the report: the folder or CSV (the train CSV of a per-split mapping)."""
    for key in ("root", "csv"):
        value = kwargs.get(key)
        if isinstance(value, Mapping):
            value = value.get("train")
        if value is not None:
            return os.fspath(value)
    return os.fspath(target)


def _message(exc: BaseException) -> str:
    return str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)


def _examples(items: Sequence[str]) -> str:
    shown = ", ".join(items[:_EXAMPLES])
    return shown + (f" and {len(items) - _EXAMPLES} more" if len(items) > _EXAMPLES else "")


@dataclass
class _File:
    split: str
    sample: str
    record: FileStats


def check_data(
    target: str | os.PathLike,
    *,
    dataset: str | None = None,
    splits: Sequence[str] | None = None,
    split_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
    **kwargs: Any,
) -> DataReport:
    """Check own data (see the module docstring) and return the report; nothing is raised for problems in the data
    (they are the report's ``errors``), only for a ``target`` that is no data set.

    Args:
        target: a folder (``paired_folder`` root), a CSV file (``manifest``) or the name of an own-data dataset
            (then its options, e.g. ``root=``, come in ``kwargs`` / ``split_kwargs``).
        dataset: the dataset name when ``target`` is a path (default: inferred from it).
        splits: the splits to check (default: those of ``split_kwargs``, else every split the folder / CSV holds).
        split_kwargs: per-split dataset options merged over ``kwargs`` (as ``dataset.split_kwargs``).
        kwargs: dataset options: ``modalities``, ``classes``, ``allow_overlap``, ``resolution``, ``num_frames``,
            ``depth_scale``, ``outlier_z``, ``on_missing``, ...
    """
    name, base = _resolve(target, dataset, kwargs)
    per_split = {s: dict(v or {}) for s, v in (split_kwargs or {}).items()}
    if splits is None:
        splits = list(per_split) if per_split else _present_splits(name, base)
    splits = sorted(dict.fromkeys(splits), key=lambda s: (s != "train", SPLITS.index(s) if s in SPLITS else 9))
    report = DataReport(target=_where(target, {**base, **per_split.get("train", {})}), dataset=name)
    built: dict[str, NormalizedFileDataset] = {}
    for s in splits:
        try:
            ds = build_dataset(name, split=s, **{**base, **per_split.get(s, {})})
        except (FileNotFoundError, ValueError, KeyError, TypeError, OSError) as exc:
            report.errors.append(f"{s} split: {_message(exc)}")
            if s == "train":  # the other splits take their classes and statistics from train
                break
            continue
        if not isinstance(ds, NormalizedFileDataset):
            raise ValueError(f"dataset {name!r} gave a {type(ds).__name__}, not own data")
        built[s] = ds
    if built:
        _Checker(report, built).run()
    return report


class _Checker:
    """The checks over built datasets (one object per :func:`check_data` call)."""

    def __init__(self, report: DataReport, built: Mapping[str, NormalizedFileDataset]) -> None:
        self.report, self.built = report, dict(built)
        self.train = built.get("train")
        first = next(iter(built.values()))
        self.modalities = list(first.modalities)
        self.allow_overlap = bool(getattr(self.train or first, "allow_overlap", False))
        self.files: list[_File] = []
        self.bad: set[tuple[str, str]] = set()  # (split, sample) with an unreadable file

    def run(self) -> None:
        for split, ds in self.built.items():
            self._read_split(split, ds)
            self._labels(split, ds)
        self._values()
        self._mismatches()
        self._outliers()
        self._overlap()
        if self.train is not None:
            self.report.normalization = self.train.normalization

    # ---------------------------------------------------------------------------------------------- reading
    def _read_split(self, split: str, ds: NormalizedFileDataset) -> None:
        r = self.report
        scan = ds.normalization_scan
        known = {(x.modality, x.path): x for x in scan.records} if scan is not None else {}
        resize = {m: PairedResize(ds.resolution, keys=[m]) for m in ds.modalities} if ds.resolution else {}
        r.splits[split] = {"samples": len(ds), "skipped": ds.num_skipped, "classes": {c: 0 for c in ds.class_names}}
        if ds.num_skipped:
            r.warnings.append(
                f"{split}: {ds.num_skipped} sample(s) skipped for missing files (on_missing=skip), "
                f"e.g. {ds.skipped[0][0]}: {ds.skipped[0][1]}"
            )
        for s in ds.samples:
            for m in ds.modalities:
                for entry in s.files[m]:
                    r.cost["files"] += 1
                    rec = known.get((m, entry))
                    if rec is not None:
                        r.cost["reused"] += 1
                    else:
                        try:
                            rec = read_frame(entry, m, s.name, ds.depth_scale, resize.get(m))
                        except (OSError, ValueError) as exc:
                            r.errors.append(f"{split} sample {s.name!r}: {exc}")
                            self.bad.add((split, s.name))
                            continue
                        r.cost["read"] += 1
                        r.cost["bytes_read"] += os.path.getsize(entry)
                    self.files.append(_File(split, s.name, rec))

    def _labels(self, split: str, ds: NormalizedFileDataset) -> None:
        counts = Counter(ds.class_names[s.label] for s in ds.samples)
        self.report.splits[split]["classes"] = {c: counts.get(c, 0) for c in ds.class_names}
        if split != "train" or not counts:
            return
        per = [counts.get(c, 0) for c in ds.class_names]
        median = float(np.median(per))
        for c, n in zip(ds.class_names, per, strict=True):
            if n == 0:
                self.report.warnings.append(f"class {c!r} has no train samples")
            elif median >= 3 and (n == 1 or n * 10 < median):
                self.report.warnings.append(
                    f"class {c!r} has {n} train sample(s) against a median of {median:g} per class: a label typo? "
                    f"(pass classes=[...] to make a label outside the list an error)"
                )

    # ---------------------------------------------------------------------------------------------- values
    def _values(self) -> None:
        by: dict[tuple[str, str], list[FileStats]] = defaultdict(list)
        for f in self.files:
            by[(f.record.modality, f.split)].append(f.record)
        for m in self.modalities:
            self.report.modalities[m] = {}
            for split in self.built:
                recs = by.get((m, split), [])
                if not recs:
                    continue
                sizes = Counter("x".join(str(v) for v in r.shape[1:]) for r in recs)
                chans = sorted({r.channels for r in recs})
                entry: dict[str, Any] = {
                    "files": len(recs),
                    "channels": chans,
                    "sizes": dict(sizes.most_common()),
                    "mean": None,
                    "std": None,
                    "min": None,
                    "max": None,
                }
                if len(chans) == 1:
                    n = sum(r.count for r in recs)
                    total = np.sum([r.sum for r in recs], axis=0)
                    sq = np.sum([r.sumsq for r in recs], axis=0)
                    mean = total / n
                    with np.errstate(over="ignore", invalid="ignore"):
                        std = np.sqrt(np.clip(sq / n - mean * mean, 0.0, None))
                    entry.update(
                        mean=mean.tolist(),
                        std=std.tolist(),
                        min=np.min([r.min for r in recs], axis=0).tolist(),
                        max=np.max([r.max for r in recs], axis=0).tolist(),
                    )
                self.report.modalities[m][split] = entry

    def _mismatches(self) -> None:
        r = self.report
        ref = self.train or next(iter(self.built.values()))
        by_mod: dict[str, list[_File]] = defaultdict(list)
        for f in self.files:
            by_mod[f.record.modality].append(f)
        usual_size: dict[str, tuple[int, ...]] = {}
        for m, files in by_mod.items():
            base = [f for f in files if f.split == "train"] or files
            chans = Counter(f.record.channels for f in base).most_common(1)[0][0]
            odd = [f for f in files if f.record.channels != chans]
            if odd:
                r.errors.append(
                    f"{m}: {len(odd)} file(s) have another channel count than the {chans} of the "
                    f"{m} files: " + _examples([f"{f.record.path} ({f.record.channels})" for f in odd])
                )
            sizes = Counter(f.record.shape[1:] for f in base)
            usual_size[m] = sizes.most_common(1)[0][0]
            if ref.resolution is None:
                odd = [f for f in files if f.record.shape[1:] != usual_size[m]]
                if odd:
                    r.errors.append(
                        f"{m}: {len(odd)} file(s) are not {_hw(usual_size[m])} like the other {m} "
                        f"files (pass resolution= to resize): "
                        + _examples([f"{f.record.path} ({_hw(f.record.shape[1:])})" for f in odd])
                    )
        if ref.resolution is None and len({usual_size[m] for m in usual_size}) > 1:
            r.errors.append(
                "modalities have different sizes ("
                + ", ".join(f"{m} {_hw(v)}" for m, v in usual_size.items())
                + "); pass resolution= to resize them to one size"
            )

    def _outliers(self) -> None:
        r = self.report
        z_max = getattr(self.train, "outlier_z", OUTLIER_Z) if self.train is not None else OUTLIER_Z
        train = [f for f in self.files if f.split == "train"]
        scan = self.train.normalization_scan if self.train is not None else None
        if scan is not None:
            found, excluded = scan.outliers, True
        else:
            found = find_outliers([f.record for f in train], self.modalities, z_max if z_max else OUTLIER_Z)
            excluded = False
        for f in train:
            z = found.get(f.record.path)
            if z is None:
                continue
            what = (
                "left out of the normalisation statistics"
                if excluded
                else "the normalisation statistics were given or are off: nothing left out"
            )
            r.outliers.append(self._outlier_entry(f, z, excluded))
            r.warnings.append(
                f"{f.record.modality}: train file {f.record.path} is an outlier (robust z {z:.3g}; "
                f"values {_fmt(f.record.min)}..{_fmt(f.record.max)}); {what}"
            )
        limit = z_max if z_max else OUTLIER_Z
        for m in self.modalities:
            ref = [f.record for f in train if f.record.modality == m]
            others = [f for f in self.files if f.split != "train" and f.record.modality == m]
            if len({x.channels for x in ref + [f.record for f in others]}) != 1 or not others or len(ref) < 3:
                continue
            ref_feats, floor = _features(ref)
            feats, _ = _features([f.record for f in others])
            for f, z in zip(others, robust_z(feats, floor, ref_feats), strict=True):
                if z > limit:
                    r.outliers.append(self._outlier_entry(f, float(z), False))
                    r.warnings.append(
                        f"{m}: {f.split} file {f.record.path} is unlike the train files (robust z "
                        f"{z:.3g}; values {_fmt(f.record.min)}..{_fmt(f.record.max)})"
                    )

    @staticmethod
    def _outlier_entry(f: _File, z: float, excluded: bool) -> dict[str, Any]:
        return {
            "split": f.split,
            "modality": f.record.modality,
            "file": f.record.path,
            "sample": f.sample,
            "z": z if math.isfinite(z) else str(z),
            "min": list(f.record.min),
            "max": list(f.record.max),
            "excluded": excluded,
        }

    # ---------------------------------------------------------------------------------------------- overlap
    def _overlap(self) -> None:
        r = self.report
        digests: dict[tuple[str, str], dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
        for f in self.files:
            digests[(f.split, f.sample)][f.record.modality].append(f.record.digest)
        keys: dict[str, dict[Any, list[str]]] = defaultdict(lambda: defaultdict(list))
        for (split, sample), mods in digests.items():
            if (split, sample) in self.bad or set(mods) != set(self.modalities):
                continue
            keys[split][tuple((m, tuple(mods[m])) for m in self.modalities)].append(sample)
        report = r.warnings.append if self.allow_overlap else r.errors.append
        hint = "" if self.allow_overlap else "; set the dataset option allow_overlap=true if this is intended"
        for split, groups in keys.items():
            dups = [names for names in groups.values() if len(names) > 1]
            for names in dups:
                r.duplicates.append({"samples": [{"split": split, "name": n} for n in names]})
            if dups:
                report(
                    f"{split}: {len(dups)} sample(s) appear more than once with the same content, e.g. "
                    + _examples([" = ".join(repr(n) for n in names) for names in dups])
                    + hint
                )
        splits = list(keys)
        for i, a in enumerate(splits):
            for b in splits[i + 1 :]:
                shared = [k for k in keys[b] if k in keys[a]]
                for k in shared:
                    r.duplicates.append(
                        {
                            "samples": [{"split": a, "name": n} for n in keys[a][k]]
                            + [{"split": b, "name": n} for n in keys[b][k]]
                        }
                    )
                if shared:
                    report(
                        f"{len(shared)} {b} sample(s) have the same content as {a} samples (a {a}/{b} overlap), "
                        f"e.g. " + _examples([f"{keys[b][k][0]!r} = {keys[a][k][0]!r}" for k in shared]) + hint
                    )
        # single files shared between splits (a sample not repeated as a whole): leakage through one modality
        whole = {(x["split"], x["name"]) for d in r.duplicates for x in d["samples"]}
        seen: dict[tuple[str, str], _File] = {}
        shared_files: list[str] = []
        for f in self.files:
            key = (f.record.modality, f.record.digest)
            first = seen.setdefault(key, f)
            if first.split != f.split and (f.split, f.sample) not in whole and len(shared_files) < 1000:
                shared_files.append(f"{f.record.path} ({f.split}) = {first.record.path} ({first.split})")
        if shared_files:
            r.warnings.append(
                f"{len(shared_files)} file(s) of one split have the same content as a file of "
                f"another: " + _examples(shared_files)
            )


def _hw(shape: Sequence[int]) -> str:
    return "x".join(str(v) for v in shape)


def check_before_training(
    name: str,
    split_kwargs: Mapping[str, Mapping[str, Any]],
    out_dir: str | os.PathLike | None,
    log: Callable[[str], None] = print,
) -> DataReport | None:
    """The runner's check of own data (None for other datasets): :func:`check_data` over the run's splits
    (``{split: dataset kwargs}``), the report written to ``out_dir`` (``data_check.json`` / ``.txt``; None: not
    written), a summary and the warnings logged; :class:`DataCheckError` when there are errors. Cheap after the
    datasets were built: only the val / test files are read (see the module docstring)."""
    if not is_own_data(name):
        return None
    report = check_data(name, split_kwargs=split_kwargs)
    where = ""
    if out_dir is not None:
        where = f" -> {report.write(out_dir)[1]}"
    c = report.cost
    log(
        f"[data check] {name}: {c['files']} files ({c['read']} read by the check, {c['reused']} from the "
        f"normalisation pass), {len(report.errors)} error(s), {len(report.warnings)} warning(s){where}"
    )
    for w in report.warnings:
        log(f"[data check] warning: {w}")
    if report.errors:
        raise DataCheckError(report)
    return report
