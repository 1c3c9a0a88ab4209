"""RGB-D action recognition datasets: NTU RGB+D 60 / 120, Northwestern-UCLA, UWA3D Multiview II.

All return clips ``(T, C, H, W)`` (``num_frames`` default 5, evenly spaced, as in the ECCV'18 / ADMD
papers; use ``sampling="segment"`` for TSN-style training). Depth is read from 16-bit millimetre PNGs
(or 8-bit / ``.npy``) and divided by ``max_depth_mm``; apply :class:`mmh.data.transforms.DepthToJet` for
the 3-channel jet encoding. RGB must be extracted to frame folders (video decoding needs PyAV, which is
not a dependency: extract with e.g. ``ffmpeg -i S001C001P001R001A001_rgb.avi rgb/S001C001P001R001A001/%05d.jpg``).
Validation is a deterministic ``val_fraction`` (default 5 %) of the training protocol's samples.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ..registry import check_split, register_dataset
from .base import FileListDataset, FileSample, in_val_subset, list_frames
from .io import IMAGE_EXTS, read_depth, read_image

__all__ = ["NTU60", "NTU60_XSUB_TRAIN", "NTU120", "NTU120_XSUB_TRAIN", "NTURGBD", "NWUCLA", "UWA3DII"]

NTU60_XSUB_TRAIN = frozenset({1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27, 28, 31, 34, 35, 38})
NTU120_XSUB_TRAIN = NTU60_XSUB_TRAIN | frozenset(
    {
        45,
        46,
        47,
        49,
        50,
        52,
        53,
        54,
        55,
        56,
        57,
        58,
        59,
        70,
        74,
        78,
        80,
        81,
        82,
        83,
        84,
        85,
        86,
        89,
        91,
        92,
        93,
        94,
        95,
        97,
        98,
        100,
        103,
    }
)
_NTU_NAME = re.compile(r"^S(\d{3})C(\d{3})P(\d{3})R(\d{3})A(\d{3})$")
_UWA_NAME = re.compile(r"^a(\d+)_s(\d+)_v(\d+)_e(\d+)$")
_UCLA_NAME = re.compile(r"^a(\d+)_s(\d+)_e(\d+)$")
NWUCLA_ACTIONS = (1, 2, 3, 4, 5, 6, 8, 9, 11, 12)


def _first_dir(root: str, candidates: Iterable[str], what: str) -> str:
    for c in candidates:
        if os.path.isdir(os.path.join(root, c)):
            return os.path.join(root, c)
    raise FileNotFoundError(f"{what}: none of the folders {list(candidates)} exists under {root}")


def _split_part(split: str, is_train: bool, name: str, val_fraction: float) -> bool:
    """Whether a sample of the train (``is_train``) or test protocol side belongs to ``split``."""
    if split == "test":
        return not is_train
    return is_train and (in_val_subset(name, val_fraction) == (split == "val"))


def _frame_files(folder: str, modality: str) -> list[str]:
    """Frames of one sample folder; depth may also be stored as ``.npy`` arrays."""
    return list_frames(folder, suffixes=IMAGE_EXTS + ((".npy",) if modality == "depth" else ()))


def _readers(max_depth_mm: float) -> dict[str, Callable]:
    return {"rgb": read_image, "depth": functools.partial(read_depth, max_value=max_depth_mm)}


class _ActionDataset(FileListDataset):
    """Shared constructor of the clip datasets."""

    def __init__(
        self,
        samples: list[FileSample],
        *,
        modalities: Sequence[str],
        class_names: Sequence[str],
        max_depth_mm: float,
        num_frames: int | None,
        resolution,
        **kwargs: Any,
    ) -> None:
        if not samples:
            raise ValueError(f"{self.name}: no samples found for this split / protocol")
        super().__init__(
            samples,
            modalities=modalities,
            readers=_readers(max_depth_mm),
            class_names=class_names,
            num_frames=num_frames,
            resolution=resolution,
            **kwargs,
        )


class NTURGBD(_ActionDataset):
    """NTU RGB+D: ``<root>/{rgb|nturgb+d_rgb}/<SsssCcccPpppRrrrAaaa>/*.jpg`` (extracted frames) and
    ``<root>/{depth|nturgb+d_depth_masked|nturgb+d_depth}/<name>/*.png`` (``MDepth-*.png``).

    Protocols: ``"xsub"`` (cross-subject, official training subjects), ``"xview"`` (NTU60: cameras 2, 3
    train, 1 test), ``"xset"`` (NTU120: even setups train). Labels = action id - 1.
    """

    name = "ntu"
    num_actions = 60
    protocols = ("xsub", "xview")
    xsub_train = NTU60_XSUB_TRAIN

    def __init__(
        self,
        split: str = "train",
        *,
        root: str,
        protocol: str = "xsub",
        modalities: Sequence[str] = ("rgb", "depth"),
        num_frames: int | None = 5,
        resolution: int | Sequence[int] | None = 112,
        val_fraction: float = 0.05,
        max_depth_mm: float = 8000.0,
        **kwargs: Any,
    ) -> None:
        check_split(split)
        if protocol not in self.protocols:
            raise ValueError(f"{self.name}: protocol must be one of {self.protocols}, got {protocol!r}")
        dirs = {"rgb": ("rgb", "nturgb+d_rgb"), "depth": ("depth", "nturgb+d_depth_masked", "nturgb+d_depth")}
        mdirs = {m: _first_dir(root, dirs[m], self.name) for m in modalities if m in dirs}
        names = sorted({n for d in mdirs.values() for n in os.listdir(d) if _NTU_NAME.match(n)})
        samples = []
        for n in names:
            setup, camera, subject, _, action = map(int, _NTU_NAME.match(n).groups())
            if action > self.num_actions:
                continue
            is_train = {"xsub": subject in self.xsub_train, "xview": camera in (2, 3), "xset": setup % 2 == 0}[protocol]
            if _split_part(split, is_train, n, val_fraction):
                files = {m: _frame_files(os.path.join(d, n), m) for m, d in mdirs.items()}
                samples.append(
                    FileSample(files, action - 1, name=n, meta={"setup": setup, "camera": camera, "subject": subject})
                )
        super().__init__(
            samples,
            modalities=modalities,
            class_names=[f"A{k + 1:03d}" for k in range(self.num_actions)],
            max_depth_mm=max_depth_mm,
            num_frames=num_frames,
            resolution=resolution,
            **kwargs,
        )


@register_dataset("ntu60")
class NTU60(NTURGBD):
    """NTU RGB+D 60 (``protocol`` "xsub" or "xview")."""

    name = "ntu60"


@register_dataset("ntu120")
class NTU120(NTURGBD):
    """NTU RGB+D 120 (``protocol`` "xsub": 53 training subjects, or "xset": even setup ids train)."""

    name = "ntu120"
    num_actions = 120
    protocols = ("xsub", "xset")
    xsub_train = NTU120_XSUB_TRAIN


@register_dataset("nwucla")
class NWUCLA(_ActionDataset):
    """Northwestern-UCLA Multiview Action3D: ``<root>/view_<v>/a<AA>_s<SS>_e<EE>/frame_<k>_tc_<ts>_rgb.jpg``
    and ``..._depth.png``. Cross-view protocol: ``train_views`` (default 1, 2) train, the rest test.
    Labels: the 10 action ids (1-6, 8, 9, 11, 12) mapped to 0..9.
    """

    name = "nwucla"

    def __init__(
        self,
        split: str = "train",
        *,
        root: str,
        train_views: Sequence[int] = (1, 2),
        modalities: Sequence[str] = ("rgb", "depth"),
        num_frames: int | None = 5,
        resolution: int | Sequence[int] | None = 112,
        val_fraction: float = 0.05,
        max_depth_mm: float = 8000.0,
        **kwargs: Any,
    ) -> None:
        check_split(split)
        suffix = {"rgb": "_rgb.jpg", "depth": "_depth.png"}
        samples = []
        views = sorted(d for d in os.listdir(root) if re.fullmatch(r"view_\d+", d)) if os.path.isdir(root) else []
        if not views:
            raise FileNotFoundError(f"nwucla: no view_<k> folders under {root}")
        for vdir in views:
            view = int(vdir.split("_")[1])
            for n in sorted(os.listdir(os.path.join(root, vdir))):
                m_ = _UCLA_NAME.match(n)
                if not m_ or int(m_.group(1)) not in NWUCLA_ACTIONS:
                    continue
                name = f"{vdir}/{n}"
                if not _split_part(split, view in train_views, name, val_fraction):
                    continue
                folder = os.path.join(root, vdir, n)
                frames = sorted({f[: -len(suffix["rgb"])] for f in os.listdir(folder) if f.endswith(suffix["rgb"])})
                files = {m: [os.path.join(folder, f + suffix[m]) for f in frames] for m in suffix}
                samples.append(
                    FileSample(
                        files,
                        NWUCLA_ACTIONS.index(int(m_.group(1))),
                        name=name,
                        meta={"view": view, "subject": int(m_.group(2))},
                    )
                )
        super().__init__(
            samples,
            modalities=modalities,
            class_names=[f"a{a:02d}" for a in NWUCLA_ACTIONS],
            max_depth_mm=max_depth_mm,
            num_frames=num_frames,
            resolution=resolution,
            **kwargs,
        )


@register_dataset("uwa3d2")
class UWA3DII(_ActionDataset):
    """UWA3D Multiview Activity II: ``<root>/{rgb,depth}/a<AA>_s<SS>_v<VV>_e<EE>/*.{jpg,png}`` (frame folders).

    Cross-view protocol: ``train_views`` (default 1, 2) train, ``test_views`` (default 3, 4) test.
    30 actions, labels = action id - 1.
    """

    name = "uwa3d2"

    def __init__(
        self,
        split: str = "train",
        *,
        root: str,
        train_views: Sequence[int] = (1, 2),
        test_views: Sequence[int] = (3, 4),
        modalities: Sequence[str] = ("rgb", "depth"),
        num_frames: int | None = 5,
        resolution: int | Sequence[int] | None = 112,
        val_fraction: float = 0.05,
        max_depth_mm: float = 8000.0,
        **kwargs: Any,
    ) -> None:
        check_split(split)
        if set(train_views) & set(test_views):
            raise ValueError(f"uwa3d2: train_views {train_views} and test_views {test_views} overlap")
        mdirs = {m: _first_dir(root, (m,), self.name) for m in modalities}
        names = sorted({n for d in mdirs.values() for n in os.listdir(d) if _UWA_NAME.match(n)})
        samples = []
        for n in names:
            action, subject, view, _ = map(int, _UWA_NAME.match(n).groups())
            if view not in train_views and view not in test_views:
                continue
            if _split_part(split, view in train_views, n, val_fraction):
                files = {m: _frame_files(os.path.join(d, n), m) for m, d in mdirs.items()}
                samples.append(FileSample(files, action - 1, name=n, meta={"view": view, "subject": subject}))
        super().__init__(
            samples,
            modalities=modalities,
            class_names=[f"a{k:02d}" for k in range(1, 31)],
            max_depth_mm=max_depth_mm,
            num_frames=num_frames,
            resolution=resolution,
            **kwargs,
        )
