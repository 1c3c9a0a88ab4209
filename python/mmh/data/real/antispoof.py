"""Face anti-spoofing datasets: CASIA-SURF (list files) and CASIA-SURF CeFA (folder tree or protocol lists; protocol 4).

Labels: 1 = live (real), 0 = spoof (attack) — ``class_names = ["spoof", "live"]``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from ..registry import check_split, register_dataset
from .base import FileListDataset, FileSample, list_frames
from .io import read_gray, read_image

__all__ = [
    "CEFA_MASKS",
    "CEFA_PAI",
    "CEFA_PROTOCOL4_PAIS",
    "CEFA_RACES",
    "CEFA_SUBJECTS",
    "CasiaCeFA",
    "CasiaSurf",
    "parse_surf_list",
]

_FAS_CLASSES = ["spoof", "live"]
_FAS_READERS = {"rgb": read_image, "depth": read_gray, "ir": read_gray}
SURF_LISTS = {"train": "train_list.txt", "val": "val_private_list.txt", "test": "test_private_list.txt"}
CEFA_RACES = ("AF", "CA", "EA")  # African, Central Asian, East Asian — races 1, 2, 3 of protocol 4


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


#: The CeFA video name's last field (``<race>_<ID>_<device>_<scene>_<PAI>``): the presentation species.
CEFA_PAI = {"1": "live", "2": "print", "3": "photo", "4": "replay"}  # 1 real, 2 cloth print, 3 photo, 4 screen replay
#: Protocol 4 (cross-ethnicity AND cross-attack): the PAI codes of each split — train and val on live + screen
#: replay, test on live + cloth print (the dataset's published lists ``CASIA_CeFA@p4.{1,3,5}_video_*.txt``).
CEFA_PROTOCOL4_PAIS = {"train": ("1", "4"), "val": ("1", "4"), "test": ("1", "2")}
#: Subject IDs (0-based, as in the folder names ``AF-000`` ... ``AF-499``) of each split of protocol 4.
CEFA_SUBJECTS = {"train": (0, 199), "val": (200, 299), "test": (300, 499)}
#: The mask attacks that protocol 4's test lists add (``<root>/Mask/<kind>/<ID>/<video>/``), and their species.
CEFA_MASKS = {"3D-Mask": "3d_mask", "Silicone-Mask": "silicone_mask"}
_CEFA_RGB_DIRS = ("profile", "color")  # the RGB folder: "profile" (challenge release) or "color" (dataset lists)


def _cefa_subject_split(subject: int, ranges: Mapping[str, tuple[int, int]]) -> str | None:
    for split, (lo, hi) in ranges.items():
        if lo <= subject <= hi:
            return split
    return None


def _cefa_subject_id(folder: str) -> int | None:
    """The subject ID of a subject folder ``<Race>-<ID>`` or ``<Race>-<ID>-<IdCard>`` (None for other names)."""
    parts = folder.split("-")
    if len(parts) < 2 or not parts[1].isdigit():
        return None
    return int(parts[1])


@register_dataset("casia_cefa")
class CasiaCeFA(FileListDataset):
    """CASIA-SURF CeFA: ``<root>/<Race>/<Race>-<ID>[-<IdCard>]/<video>/{profile|color,depth,ir}/<frame>.jpg``
    (the races may also sit under ``<root>/Ethnicity/``, as in the dataset's own lists).

    The video name is ``<race>_<ID>_<device>_<scene>_<PAI>``; its last field is the presentation species
    (:data:`CEFA_PAI`: 1 live, 2 cloth print, 3 photo, 4 screen replay). Labels: 1 = live, 0 = attack.

    Protocol 4 ``"4@k"`` is the dataset's cross-ethnicity **and** cross-attack protocol (the MMH paper's): train
    and val on race k (AF, CA, EA for k = 1, 2, 3) with live and *screen replay* videos, test on the other two
    races with live and *cloth print* videos (:data:`CEFA_PROTOCOL4_PAIS`), plus the 3D and silicone mask attacks
    when ``<root>/Mask/{3D-Mask,Silicone-Mask}`` exist and ``masks`` is true; subjects by ID
    (:data:`CEFA_SUBJECTS`: train 000-199, val 200-299, test 300-499; ``subject_ranges`` to change them).
    ``cross_attack=False`` keeps every species (cross-ethnicity only); ``protocol=None`` uses every race, subject
    and species for every split.

    ``list_file``: read the split from one of the dataset's published protocol lists instead
    (``CASIA_CeFA@p4.1_video_train.txt``: ``<video path>[/<modality folder>] <label>`` per line, paths relative to
    ``root``, label ``live_label`` (0 in those lists) = live, anything else = attack).

    ``frame_samples``: every frame is a sample of its own (the dataset's image-level protocol: p4.1 trains on 36,513
    frames of 400 videos); otherwise a video is one sample (``num_frames`` frames, or one frame as a still image).
    ``labels={video_relpath: label}`` overrides the labels. Frames of the three modalities are matched by file
    name — the modalities of one sample always stay aligned. ``attack_type(i)`` gives each sample's species
    ("live", "print", "photo", "replay", "3d_mask", "silicone_mask") for the ISO per-species APCER.
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
        cross_attack: bool = True,
        masks: bool = True,
        list_file: str | None = None,
        live_label: int = 0,
        frame_samples: bool = False,
        live_code: str = "1",
        labels: Mapping[str, int] | None = None,
        **kwargs: Any,
    ) -> None:
        check_split(split)
        if not isinstance(root, str) or not os.path.isdir(root):
            raise FileNotFoundError(f"casia_cefa: missing root folder {root}")
        if protocol is not None and not (
            isinstance(protocol, str) and protocol.startswith("4@") and protocol[2:] in ("1", "2", "3")
        ):
            raise ValueError(f"casia_cefa: protocol must be '4@1', '4@2', '4@3' or None, got {protocol!r}")
        if list_file is not None:
            videos = self._from_list(list_file, root, live_label)
        else:
            videos = self._from_folders(split, root, protocol, subject_ranges, cross_attack, masks, live_code)
        if not videos:
            where = list_file if list_file is not None else root
            raise ValueError(f"casia_cefa: no videos for split {split!r} (protocol {protocol!r}) in {where}")
        samples = []
        for rel, label, species in videos:
            if labels is not None:
                if rel not in labels:
                    raise KeyError(f"casia_cefa: no label given for video {rel!r}")
                label = int(labels[rel])
            samples.extend(self._video_samples(root, rel, label, species, frame_samples))
        super().__init__(
            samples,
            modalities=modalities,
            readers=_FAS_READERS,
            class_names=_FAS_CLASSES,
            resolution=resolution,
            **kwargs,
        )

    def attack_type(self, index: int) -> str:
        """The presentation species of sample ``index`` ("live", "print", "photo", "replay", "3d_mask", ...)."""
        return str(self.samples[index].meta["species"])

    @staticmethod
    def _from_folders(
        split: str,
        root: str,
        protocol: str | None,
        subject_ranges: Mapping[str, tuple[int, int]] | None,
        cross_attack: bool,
        masks: bool,
        live_code: str,
    ) -> list[tuple[str, int, str]]:
        """(video path relative to ``root``, label, species) of the split's videos, found by walking the tree."""
        ranges = dict(subject_ranges or CEFA_SUBJECTS)
        base = "Ethnicity/" if os.path.isdir(os.path.join(root, "Ethnicity")) else ""
        if protocol is None:
            races: tuple[str, ...] = CEFA_RACES
        else:
            own = CEFA_RACES[int(protocol[2:]) - 1]
            races = (own,) if split != "test" else tuple(r for r in CEFA_RACES if r != own)
        pais = CEFA_PROTOCOL4_PAIS[split] if protocol is not None and cross_attack else None
        out = []
        for race in races:
            race_dir = os.path.join(root, base + race)
            for subject_dir in sorted(os.listdir(race_dir)) if os.path.isdir(race_dir) else []:
                subject = _cefa_subject_id(subject_dir)
                if subject is None:
                    continue
                if protocol is not None and _cefa_subject_split(subject, ranges) != split:
                    continue
                for video in sorted(os.listdir(os.path.join(race_dir, subject_dir))):
                    pai = video.split("_")[-1]
                    if pais is not None and pai not in pais:
                        continue
                    species = "live" if pai == live_code else CEFA_PAI.get(pai, f"pai_{pai}")
                    out.append((f"{base}{race}/{subject_dir}/{video}", int(pai == live_code), species))
        if protocol is not None and split == "test" and masks:
            mask_root = os.path.join(root, "Mask") if os.path.isdir(os.path.join(root, "Mask")) else root
            for kind, species in CEFA_MASKS.items():
                kind_dir = os.path.join(mask_root, kind)
                for subject_dir in sorted(os.listdir(kind_dir)) if os.path.isdir(kind_dir) else []:
                    if not os.path.isdir(os.path.join(kind_dir, subject_dir)):
                        continue
                    for video in sorted(os.listdir(os.path.join(kind_dir, subject_dir))):
                        rel = os.path.relpath(os.path.join(kind_dir, subject_dir, video), root).replace(os.sep, "/")
                        out.append((rel, 0, species))
        return out

    @staticmethod
    def _from_list(list_file: str, root: str, live_label: int) -> list[tuple[str, int, str]]:
        """(video path, label, species) from a published protocol list: ``<video>[/<modality folder>] <label>``."""
        if not os.path.isfile(list_file):
            raise FileNotFoundError(f"casia_cefa: missing protocol list {list_file}")
        out = []
        with open(list_file, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
                    raise ValueError(f"casia_cefa: {list_file}:{lineno}: expected '<video path> <label>', got {line!r}")
                rel = parts[0].rstrip("/")
                head, last = os.path.split(rel)
                if last in _CEFA_RGB_DIRS + ("depth", "ir"):
                    rel = head
                live = int(parts[1]) == live_label
                kind = next((s for k, s in CEFA_MASKS.items() if f"/{k}/" in f"/{rel}/"), None)
                pai = os.path.basename(rel).split("_")[-1]
                species = "live" if live else (kind or CEFA_PAI.get(pai, "attack"))
                out.append((rel, int(live), species))
        return out

    @staticmethod
    def _video_samples(root: str, rel: str, label: int, species: str, frame_samples: bool) -> list[FileSample]:
        path = os.path.join(root, rel)
        rgb_dir = next((d for d in _CEFA_RGB_DIRS if os.path.isdir(os.path.join(path, d))), _CEFA_RGB_DIRS[0])
        dirs = {"rgb": rgb_dir, "depth": "depth", "ir": "ir"}
        # the RGB frames define the frame names; depth / ir must have the same names
        names = [os.path.basename(p) for p in list_frames(os.path.join(path, rgb_dir))]
        meta = {"species": species}
        if not frame_samples or not names:
            files = {m: [os.path.join(path, d, n) for n in names] for m, d in dirs.items()}
            return [FileSample(files, label, name=rel, meta=meta)]
        return [
            FileSample({m: [os.path.join(path, d, n)] for m, d in dirs.items()}, label, name=f"{rel}/{n}", meta=meta)
            for n in names
        ]
