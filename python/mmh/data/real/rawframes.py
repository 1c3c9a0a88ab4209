"""HMDB51 and UCF101 as rawframes + optical flow (the mmaction2 / denseflow layout), with official splits.

Frames: ``<root>/<frames_dir>/[<class>/]<video>/img_00001.jpg`` and ``flow_x_00001.jpg`` /
``flow_y_00001.jpg`` (8-bit, 128 = zero flow, ``[0, 255]`` ↔ ``[-flow_bound, flow_bound]`` pixels).
Modalities: ``rgb`` (3 ch) and ``flow`` (2 ch, x / y). Clips ``(T, C, H, W)``; default 8 segments
(``sampling="segment"`` for training, ``"uniform"`` — the default — for evaluation).
Validation is a deterministic ``val_fraction`` of the official training list.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import Any

from ..registry import check_split, register_dataset
from .base import FileListDataset, FileSample, in_val_subset, list_frames
from .io import read_flow, read_image

__all__ = ["HMDB51", "UCF101", "RawFrames", "parse_hmdb51_split", "parse_ucf101_split"]


def _read_lines(path: str, what: str) -> list[list[str]]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what}: missing split file {path}")
    with open(path, encoding="utf-8") as fh:
        return [line.split() for line in fh if line.strip()]


def parse_ucf101_split(split_dir: str, split_id: int, train: bool) -> tuple[list[str], list[tuple[str, int]]]:
    """UCF101 ``ucfTrainTestlist``: ``classInd.txt`` (``1 ApplyEyeMakeup``) and ``trainlist0k.txt`` /
    ``testlist0k.txt`` (``ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi [label]``) → (classes, [(video, label)])."""
    classes = [
        parts[1]
        for parts in sorted(_read_lines(os.path.join(split_dir, "classInd.txt"), "ucf101"), key=lambda p: int(p[0]))
    ]
    lst = os.path.join(split_dir, f"{'train' if train else 'test'}list{split_id:02d}.txt")
    videos = []
    for parts in _read_lines(lst, "ucf101"):
        cls = parts[0].split("/")[0]
        if cls not in classes:
            raise ValueError(f"ucf101: {lst}: unknown class {cls!r} in {parts[0]!r}")
        videos.append((parts[0], classes.index(cls)))
    return classes, videos


def parse_hmdb51_split(split_dir: str, split_id: int, train: bool) -> tuple[list[str], list[tuple[str, int]]]:
    """HMDB51 ``testTrainMulti_7030_splits/<class>_test_split<k>.txt`` (``video.avi 1|2|0``: 1 train,
    2 test, 0 unused); classes sorted by name."""
    if not os.path.isdir(split_dir):
        raise FileNotFoundError(f"hmdb51: missing split folder {split_dir}")
    suffix = f"_test_split{split_id}.txt"
    classes = sorted(f[: -len(suffix)] for f in os.listdir(split_dir) if f.endswith(suffix))
    if not classes:
        raise FileNotFoundError(f"hmdb51: no '*{suffix}' files in {split_dir}")
    want = "1" if train else "2"
    videos = []
    for k, cls in enumerate(classes):
        for parts in _read_lines(os.path.join(split_dir, cls + suffix), "hmdb51"):
            if len(parts) != 2:
                raise ValueError(f"hmdb51: {cls + suffix}: expected 'video id', got {' '.join(parts)!r}")
            if parts[1] == want:
                videos.append((f"{cls}/{parts[0]}", k))
    return classes, videos


class RawFrames(FileListDataset):
    """Shared loader; subclasses give the split parser and the default split folder."""

    name = "rawframes"
    split_dir_name = ""
    parser = staticmethod(parse_ucf101_split)

    def __init__(
        self,
        split: str = "train",
        *,
        root: str,
        split_id: int = 1,
        split_dir: str | None = None,
        frames_dir: str = "rawframes",
        modalities: Sequence[str] = ("rgb", "flow"),
        num_frames: int | None = 8,
        resolution: int | Sequence[int] | None = 112,
        val_fraction: float = 0.05,
        flow_bound: float = 20.0,
        rgb_prefix: str = "img_",
        flow_prefixes: tuple[str, str] = ("flow_x_", "flow_y_"),
        **kwargs: Any,
    ) -> None:
        check_split(split)
        if split_id not in (1, 2, 3):
            raise ValueError(f"{self.name}: split_id must be 1, 2 or 3, got {split_id!r}")
        classes, videos = self.parser(split_dir or os.path.join(root, self.split_dir_name), split_id, split != "test")
        samples = []
        for rel, label in videos:
            if split != "test" and in_val_subset(rel, val_fraction) != (split == "val"):
                continue
            cls, stem = rel.split("/")[0], os.path.splitext(os.path.basename(rel))[0]
            folder = os.path.join(root, frames_dir, cls, stem)
            if not os.path.isdir(folder):
                folder = os.path.join(root, frames_dir, stem)
            fx, fy = (list_frames(folder, p) for p in flow_prefixes)
            if len(fx) != len(fy):
                fx = fy = []  # reported as missing flow by the base class
            files = {"rgb": list_frames(folder, rgb_prefix), "flow": list(zip(fx, fy))}
            samples.append(FileSample(files, label, name=rel))
        readers = {"rgb": read_image, "flow": functools.partial(read_flow, bound=flow_bound)}
        super().__init__(
            samples,
            modalities=modalities,
            readers=readers,
            class_names=classes,
            num_frames=num_frames,
            resolution=resolution,
            **kwargs,
        )


@register_dataset("ucf101")
class UCF101(RawFrames):
    """UCF101 rawframes + flow; splits from ``<root>/ucfTrainTestlist``."""

    name = "ucf101"
    split_dir_name = "ucfTrainTestlist"
    parser = staticmethod(parse_ucf101_split)


@register_dataset("hmdb51")
class HMDB51(RawFrames):
    """HMDB51 rawframes + flow; splits from ``<root>/testTrainMulti_7030_splits``."""

    name = "hmdb51"
    split_dir_name = "testTrainMulti_7030_splits"
    parser = staticmethod(parse_hmdb51_split)
