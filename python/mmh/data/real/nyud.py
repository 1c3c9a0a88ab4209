"""NYUD (v2) RGB-D object crops (19 classes; Hoffman et al.'s modality-hallucination benchmark).

Layout: ``<root>/rgb/<split>/<class>/<name>.<ext>`` and ``<root>/depth/<split>/<class>/<name>.<ext>``
(paired by class and file stem; ``split`` folder names from ``split_dirs``, default train / val / test).
Depth is HHA-encoded (3-channel PNG, the thesis' setting) with ``depth_encoding="hha"``, or a raw depth map
(16-bit millimetre PNG or ``.npy``) with ``"raw"``. Classes are the sorted class folders of the train split,
or ``class_names=``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from typing import Any

from ..registry import check_split, register_dataset
from .base import FileListDataset, FileSample
from .io import IMAGE_EXTS, read_depth, read_hha, read_image

__all__ = ["NYUDObjects"]


def _by_stem(folder: str, exts: Sequence[str]) -> dict[str, str]:
    if not os.path.isdir(folder):
        return {}
    return {
        os.path.splitext(f)[0]: os.path.join(folder, f)
        for f in sorted(os.listdir(folder))
        if f.lower().endswith(tuple(exts))
    }


@register_dataset("nyud_objects")
class NYUDObjects(FileListDataset):
    """Still RGB-D object crops ``(C, H, W)``; a crop whose depth file is missing is a missing file."""

    name = "nyud_objects"

    def __init__(
        self,
        split: str = "train",
        *,
        root: str,
        modalities: Sequence[str] = ("rgb", "depth"),
        depth_encoding: str = "hha",
        class_names: Sequence[str] | None = None,
        split_dirs: Mapping[str, str] | None = None,
        resolution: int | Sequence[int] | None = 112,
        max_depth_mm: float = 10000.0,
        **kwargs: Any,
    ) -> None:
        check_split(split)
        if depth_encoding not in ("hha", "raw"):
            raise ValueError(f"nyud_objects: depth_encoding must be 'hha' or 'raw', got {depth_encoding!r}")
        dirs = {"train": "train", "val": "val", "test": "test", **(split_dirs or {})}
        rgb_root = os.path.join(root, "rgb", dirs[split])
        if not os.path.isdir(rgb_root):
            raise FileNotFoundError(f"nyud_objects: missing folder {rgb_root}")
        if class_names is None:
            train_root = os.path.join(root, "rgb", dirs["train"])
            class_names = sorted(d for d in os.listdir(train_root) if os.path.isdir(os.path.join(train_root, d)))
        classes = list(class_names)
        depth_exts = IMAGE_EXTS + (".npy",)
        samples = []
        for cls in sorted(os.listdir(rgb_root)):
            if cls not in classes:
                raise ValueError(f"nyud_objects: class folder {cls!r} in {rgb_root} is not one of {classes}")
            depth = _by_stem(os.path.join(root, "depth", dirs[split], cls), depth_exts)
            for stem, path in _by_stem(os.path.join(rgb_root, cls), IMAGE_EXTS).items():
                dpath = depth.get(stem, os.path.join(root, "depth", dirs[split], cls, stem + ".png"))
                samples.append(FileSample({"rgb": [path], "depth": [dpath]}, classes.index(cls), name=f"{cls}/{stem}"))
        depth_reader = read_hha if depth_encoding == "hha" else functools.partial(read_depth, max_value=max_depth_mm)
        super().__init__(
            samples,
            modalities=modalities,
            readers={"rgb": read_image, "depth": depth_reader},
            class_names=classes,
            resolution=resolution,
            **kwargs,
        )
