"""Face anti-spoofing datasets: CASIA-SURF (list files) and CASIA-SURF CeFA (folder tree, race protocols).

Labels: 1 = live (real), 0 = spoof (attack) — ``class_names = ["spoof", "live"]``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from ..registry import check_split, register_dataset
from .base import FileListDataset, FileSample, list_frames
from .io import read_gray, read_image

__all__ = ["CEFA_RACES", "CasiaCeFA", "CasiaSurf", "parse_surf_list"]

_FAS_CLASSES = ["spoof", "live"]
_FAS_READERS = {"rgb": read_image, "depth": read_gray, "ir": read_gray}
SURF_LISTS = {"train": "train_list.txt", "val": "val_private_list.txt", "test": "test_private_list.txt"}
CEFA_RACES = ("AF", "CA", "EA")  # African, Central Asian, East Asian — races 1, 2, 3 of protocol 4
CEFA_MODALITY_DIRS = {"rgb": "profile", "depth": "depth", "ir": "ir"}


def parse_surf_list(list_file: str, root: str) -> list[FileSample]:
    """Parse a CASIA-SURF list: ``rgb depth ir label`` per line (label 1 = real); a line without a label
    (the public test list) gets label -1. Paths are relative to ``root``."""
    if not os.path.isfile(list_file):
        raise FileNotFoundError(f"casia_surf: missing list file {list_file}")
    samples = []
    with open(list_file, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) not in (3, 4):
                raise ValueError(f"casia_surf: {list_file}:{lineno}: expected 'rgb depth ir [label]', got {line!r}")
            label = -1
            if len(parts) == 4:
                if parts[3] not in ("0", "1"):
                    raise ValueError(f"casia_surf: {list_file}:{lineno}: label must be 0 or 1, got {parts[3]!r}")
                label = int(parts[3])
            files = {m: [os.path.join(root, p)] for m, p in zip(("rgb", "depth", "ir"), parts[:3])}
            samples.append(FileSample(files, label, name=parts[0]))
    return samples


@register_dataset("casia_surf")
class CasiaSurf(FileListDataset):
    """CASIA-SURF: still RGB / depth / IR face crops listed in ``<root>/<list>`` (see ``SURF_LISTS``)."""

    name = "casia_surf"

    def __init__(
        self,
        split: str = "train",
        *,
        root: str,
        list_file: str | None = None,
        modalities: Sequence[str] = ("rgb", "depth", "ir"),
        resolution: int | None = 112,
        **kwargs: Any,
    ) -> None:
        check_split(split)
        path = list_file if list_file is not None else os.path.join(root, SURF_LISTS[split])
        super().__init__(
            parse_surf_list(path, root),
            modalities=modalities,
            readers=_FAS_READERS,
            class_names=_FAS_CLASSES,
            resolution=resolution,
            **kwargs,
        )


def _cefa_subject_split(subject: int, ranges: Mapping[str, tuple[int, int]]) -> str | None:
    for split, (lo, hi) in ranges.items():
        if lo <= subject <= hi:
            return split
    return None


@register_dataset("casia_cefa")
class CasiaCeFA(FileListDataset):
    """CASIA-SURF CeFA: ``<root>/<Race>/<Race>-<ID>/<video>/{profile,depth,ir}/<frame>.jpg``.

    Protocol 4 (cross-ethnicity) ``"4@k"``: train and val on race k (AF, CA, EA for k = 1, 2, 3), test on
    the other two races; subjects are split by ID with ``subject_ranges`` (default train 1-200, val
    201-300, test 301-500). ``protocol=None`` uses every race for every split. The video folder name's
    last ``_`` field is the presentation type: ``live_code`` ("1") = live, anything else = attack; or
    pass ``labels={video_relpath: label}`` (e.g. from a protocol list). Frames of the three modalities are
    matched by file name — the modalities of one sample always stay aligned.
    """

    name = "casia_cefa"

    def __init__(
        self,
        split: str = "train",
        *,
        root: str,
        protocol: str | None = "4@1",
        modalities: Sequence[str] = ("rgb", "depth", "ir"),
        resolution: int | None = 112,
        subject_ranges: Mapping[str, tuple[int, int]] | None = None,
        live_code: str = "1",
        labels: Mapping[str, int] | None = None,
        **kwargs: Any,
    ) -> None:
        check_split(split)
        ranges = dict(subject_ranges or {"train": (1, 200), "val": (201, 300), "test": (301, 500)})
        if protocol is None:
            races = CEFA_RACES
        else:
            if not (isinstance(protocol, str) and protocol.startswith("4@") and protocol[2:] in ("1", "2", "3")):
                raise ValueError(f"casia_cefa: protocol must be '4@1', '4@2', '4@3' or None, got {protocol!r}")
            own = CEFA_RACES[int(protocol[2:]) - 1]
            races = (own,) if split != "test" else tuple(r for r in CEFA_RACES if r != own)
        if not os.path.isdir(root):
            raise FileNotFoundError(f"casia_cefa: missing root folder {root}")
        samples = []
        for race in races:
            race_dir = os.path.join(root, race)
            for subject_dir in sorted(os.listdir(race_dir)) if os.path.isdir(race_dir) else []:
                try:
                    subject = int(subject_dir.split("-")[-1])
                except ValueError:
                    continue
                if protocol is not None and _cefa_subject_split(subject, ranges) != split:
                    continue
                for video in sorted(os.listdir(os.path.join(race_dir, subject_dir))):
                    rel = f"{race}/{subject_dir}/{video}"
                    samples.append(self._video_sample(os.path.join(root, rel), rel, live_code, labels))
        if not samples:
            raise ValueError(f"casia_cefa: no videos for split {split!r} (protocol {protocol!r}) under {root}")
        super().__init__(
            samples,
            modalities=modalities,
            readers=_FAS_READERS,
            class_names=_FAS_CLASSES,
            resolution=resolution,
            **kwargs,
        )

    @staticmethod
    def _video_sample(path: str, rel: str, live_code: str, labels: Mapping[str, int] | None) -> FileSample:
        if labels is not None:
            if rel not in labels:
                raise KeyError(f"casia_cefa: no label given for video {rel!r}")
            label = int(labels[rel])
        else:
            label = int(os.path.basename(rel).split("_")[-1] == live_code)
        # the profile (RGB) frames define the frame names; depth / ir must have the same names
        names = [os.path.basename(p) for p in list_frames(os.path.join(path, CEFA_MODALITY_DIRS["rgb"]))]
        files = {m: [os.path.join(path, d, n) for n in names] for m, d in CEFA_MODALITY_DIRS.items()}
        return FileSample(files, label, name=rel)
