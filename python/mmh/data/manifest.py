"""``manifest``: your own paired recordings listed in a CSV file.

One row per sample: a ``label`` column, one column per modality holding a path (relative to the CSV file's folder,
or absolute) to a file (png / jpg / 16-bit png / .npy, read as in ``paired_folder``) or to a folder of frames (a
clip, frames in sorted order); optional ``split`` (train / val / test) and ``name`` columns. Labels are class names
(classes = the train rows' labels, sorted, unless ``classes=`` lists them) or integers 0..K-1.

The rows of a split are those whose ``split`` column says so; without that column give one CSV per split
(``csv={"train": "train.csv", "test": "test.csv"}``, or ``dataset.split_kwargs.<split>.csv``). Normalisation
(statistics of the train rows), ``resolution``, ``on_missing`` and ``stats`` work as in ``paired_folder``.

    label,rgb,depth
    cat,cat/001/rgb.png,cat/001/depth.png
"""

from __future__ import annotations

import csv as csv_module
import io
import os
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

from .paired_folder import FILE_EXTS, NormalizedFileDataset, _frames
from .real.base import FileListDataset, FileSample
from .registry import check_split, register_dataset

__all__ = ["Manifest", "read_manifest"]

_RESERVED = ("label", "split", "name")


def read_manifest(path: str | os.PathLike) -> tuple[list[str], list[dict[str, str]]]:
    """The modality columns and the rows (dicts, with ``_line``) of a manifest CSV; errors name the file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"manifest: CSV file not found: {path}")
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            text = fh.read()
    except UnicodeDecodeError as exc:
        line = text_line(path, exc.start)
        raise ValueError(
            f"manifest: {path}:{line} is not UTF-8 text (byte {exc.object[exc.start]:#04x}); save the CSV as UTF-8"
        ) from None
    reader = csv_module.DictReader(io.StringIO(text, newline=""))
    fields = [f.strip() for f in (reader.fieldnames or [])]
    if "label" not in fields:
        raise ValueError(f"manifest: {path} has no 'label' column (columns: {fields})")
    mods = [f for f in fields if f not in _RESERVED]
    if not mods:
        raise ValueError(f"manifest: {path} has no modality column besides {list(_RESERVED)}")
    rows = []
    for row in reader:
        if None in row:  # DictReader keeps the cells beyond the header under the key None
            raise ValueError(
                f"manifest: {path}:{reader.line_num}: {len(fields) + len(row[None])} cells for "
                f"{len(fields)} columns ({fields})"
            )
        row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
        row["_line"] = f"{path}:{reader.line_num}"
        for k, v in row.items():
            if any(unicodedata.category(ch) == "Cc" for ch in v):
                raise ValueError(f"manifest: {row['_line']}: column {k!r} holds a control character ({v!r})")
        rows.append(row)
    return mods, rows


def text_line(path: str, offset: int) -> int:
    """The 1-based line number of byte ``offset`` in ``path``."""
    with open(path, "rb") as fh:
        return fh.read(offset).count(b"\n") + 1


def _entries(value: str, base: str) -> list[str]:
    """Frames of one cell: a file, or the sorted frames of a folder ([] when it is empty / missing)."""
    if not value:
        return []
    p = value if os.path.isabs(value) else os.path.join(base, value)
    if os.path.isdir(p):
        return _frames(p)
    return [p]


@register_dataset("manifest")
class Manifest(NormalizedFileDataset):
    """Samples listed in a CSV (see the module docstring).

    Args:
        csv: the CSV path, or ``{split: path}``.
        modalities: modality columns to load (default: every column but label / split / name, in file order).
        classes: class names (label = index); default the train rows' labels sorted (or 0..K-1 for integers).
        num_frames, resolution, normalize, stats, depth_scale, on_missing: as in ``paired_folder``.
    """

    name = "manifest"

    def __init__(
        self,
        split: str = "train",
        *,
        csv: str | os.PathLike | Mapping[str, str | os.PathLike],
        modalities: Sequence[str] | None = None,
        classes: Sequence[str] | None = None,
        num_frames: int | None = None,
        resolution: int | Sequence[int] | None = None,
        normalize: bool = True,
        stats: Any = None,
        depth_scale: float = 65535.0,
        on_missing: str = "error",
        **kwargs: Any,
    ) -> None:
        check_split(split)
        if isinstance(csv, Mapping):
            if split not in csv:
                raise KeyError(f"manifest: csv has no file for split {split!r} (given: {sorted(csv)})")
            path, train_path = os.fspath(csv[split]), (os.fspath(csv["train"]) if "train" in csv else None)
        else:
            path = train_path = os.fspath(csv)
        cols, all_rows = read_manifest(path)
        rows = self._split_rows(all_rows, split, path)
        if not rows:
            raise ValueError(f"manifest: {path} has no rows" + (f" for split {split!r}" if all_rows else ""))
        train_rows: list[dict[str, str]] | None = None  # None: not known (a per-split file without its train file)
        if train_path is not None:
            t_all = all_rows if train_path == path else read_manifest(train_path)[1]
            if any(r.get("split") for r in t_all):
                train_rows = self._split_rows(t_all, "train", train_path)
            elif train_path != path or split == "train":
                train_rows = t_all
        mods = list(modalities) if modalities is not None else cols
        unknown = [m for m in mods if m not in cols]
        if isinstance(modalities, str) or not mods or unknown:
            raise ValueError(
                f"manifest: modality {unknown[0] if unknown else modalities!r} is not a column of "
                f"{path} (modality columns: {cols})"
            )
        class_names = self._classes(classes, train_rows, rows, path)
        base = os.path.dirname(os.path.abspath(path))
        samples = self._samples(rows, mods, class_names, base)
        tbase = os.path.dirname(os.path.abspath(train_path)) if train_path is not None else base

        def train_samples() -> list[FileSample]:
            if train_rows is None:
                raise ValueError(
                    f"manifest: {path} gives no train rows to compute normalisation statistics from; "
                    f"pass csv={{train: ..., {split}: ...}}, a split column, or stats="
                )
            tr = self._samples(train_rows, mods, class_names, tbase)
            return FileListDataset(
                tr,
                modalities=mods,
                readers={m: self._read for m in mods},
                class_names=class_names,
                on_missing=on_missing,
            ).samples

        if (
            any(len(s.files[m]) > 1 or os.path.isdir(s.meta.get(m, "")) for s in samples for m in mods)
            and num_frames is None
        ):
            raise ValueError(f"manifest: {path} lists clip folders; pass num_frames=T")
        super().__init__(
            samples,
            modalities=mods,
            class_names=class_names,
            train_samples=train_samples,
            normalize=normalize,
            stats=stats,
            depth_scale=depth_scale,
            resolution=resolution,
            num_frames=num_frames,
            on_missing=on_missing,
            **kwargs,
        )
        self.csv = path

    @staticmethod
    def _split_rows(rows: list[dict[str, str]], split: str, path: str) -> list[dict[str, str]]:
        if not any(r.get("split") for r in rows):
            return rows
        bad = [r for r in rows if r.get("split") not in ("train", "val", "test")]
        if bad:
            raise ValueError(
                f"manifest: {bad[0]['_line']}: split must be train / val / test, got {bad[0].get('split')!r}"
            )
        return [r for r in rows if r["split"] == split]

    @staticmethod
    def _classes(
        classes: Sequence[str] | None, train_rows: list[dict[str, str]] | None, rows: list[dict[str, str]], path: str
    ) -> list[str]:
        if classes is not None:
            if isinstance(classes, str) or not list(classes):
                raise ValueError(f"manifest: classes must be a non-empty list of names, got {classes!r}")
            return [str(c) for c in classes]
        source = train_rows if train_rows is not None else rows
        labels = [r["label"] for r in source]
        empty = [r for r in source if not r["label"]]
        if empty:
            raise ValueError(f"manifest: {empty[0]['_line']}: empty label")
        if labels and all(lab.lstrip("-").isdigit() for lab in labels):
            values = [int(lab) for lab in labels]
            if min(values) < 0:
                raise ValueError(f"manifest: integer labels must be >= 0 (got {min(values)} in {path})")
            return [str(i) for i in range(max(values) + 1)]
        if train_rows is None:
            raise ValueError(
                f"manifest: {path} has class-name labels but no train rows to take the classes from; pass classes=[...]"
            )
        return sorted(set(labels))

    @staticmethod
    def _samples(
        rows: list[dict[str, str]], mods: Sequence[str], class_names: list[str], base: str
    ) -> list[FileSample]:
        index = {c: i for i, c in enumerate(class_names)}
        samples = []
        for r in rows:
            lab = r["label"]
            if lab in index:
                label = index[lab]
            elif lab.isdigit() and int(lab) < len(class_names) and all(c.isdigit() for c in class_names):
                label = int(lab)
            else:
                raise ValueError(f"manifest: {r['_line']}: label {lab!r} is not a class ({class_names})")
            files = {m: _entries(r.get(m, ""), base) for m in mods}
            meta = {
                m: (r.get(m, "") if os.path.isabs(r.get(m, "")) else os.path.join(base, r.get(m, "")))
                for m in mods
                if r.get(m)
            }
            for m, v in meta.items():
                if not os.path.isdir(v) and not v.lower().endswith(FILE_EXTS):
                    raise ValueError(
                        f"manifest: {r['_line']}: {m} path {v} has an unsupported extension "
                        f"(use {', '.join(FILE_EXTS)})"
                    )
            samples.append(FileSample(files, label, name=r.get("name") or r["_line"], meta=meta))
        return samples
