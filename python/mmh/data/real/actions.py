"""RGB-D action recognition datasets: NTU RGB+D 60 / 120, Northwestern-UCLA, UWA3D Multiview II.

All return clips ``(T, C, H, W)`` (``num_frames`` default 5, evenly spaced, as in the ECCV'18 / ADMD
papers; use ``sampling="segment"`` for TSN-style training, ``sampling="multi_clip", num_clips=N`` for the
N-clip test, see ``eval.clips``). Depth is read from 16-bit millimetre PNGs
(or 8-bit / ``.npy``) and divided by ``max_depth_mm``; apply :class:`mmh.data.transforms.DepthToJet` for
the 3-channel jet encoding. RGB must be extracted to frame folders (video decoding needs PyAV, which is
not a dependency: extract with e.g. ``ffmpeg -i S001C001P001R001A001_rgb.avi rgb/S001C001P001R001A001/%05d.jpg``).

Optical flow (modality ``"flow"``, 2 channels x / y in pixels per frame) is read from precomputed frames in the
layout of :mod:`mmh.data.flow` (``mmh prepare flow``): ``<flow_root>/<video>/flow_x_00001.jpg`` and
``flow_y_00001.jpg``, 8-bit, ``[0, 255]`` ↔ ``[-flow_bound, flow_bound]`` px; ``flow_root`` defaults to
``<root>/flow`` and ``<video>`` is the sample's folder name (NW-UCLA: ``view_<v>/<sample>``). A video of N RGB
frames has N-1 flow frames; the modalities are aligned by relative position in time.

Validation: NTU follows the thesis (ch. 3, "Hyperparameters and validation set", about 5 % of the training set)
unless ``val_fraction`` is given: cross-subject holds out training subject 1; cross-view sorts the training videos
of each action, seeds numpy with 0 and draws 31 videos per action (``numpy.random.choice``, without replacement;
all of them for an action with fewer). NTU120 cross-subject uses the same subject rule (ch. 5 names no validation
set); cross-setup, NW-UCLA and UWA3D II (the thesis gives no rule) hold out a deterministic ``val_fraction``
(default 5 %) of the training protocol's samples.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from ..flow import FLOW_BOUND, FLOW_PREFIXES, natural_key
from ..registry import check_split, register_dataset
from .base import Entry, FileListDataset, FileSample, in_val_subset, list_frames
from .io import IMAGE_EXTS, read_depth, read_flow, read_image

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
#: The thesis's NTU validation set (ch. 3): training subject 1 (cross-subject), 31 videos per action (cross-view).
NTU_VAL_SUBJECT = 1
NTU_VAL_PER_ACTION = 31


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


def _check_val_fraction(name: str, val_fraction: Any, optional: bool = False) -> None:
    if optional and val_fraction is None:
        return
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 <= val_fraction < 1:
        none = "None or " if optional else ""
        raise ValueError(f"{name}: val_fraction must be {none}a number in [0, 1), got {val_fraction!r}")


def ntu_thesis_val(train_names: Sequence[str], protocol: str) -> set[str]:
    """The thesis's NTU validation videos (ch. 3) among the training protocol's ``train_names``: subject
    :data:`NTU_VAL_SUBJECT` for "xsub"; for "xview" the videos of each action sorted, numpy seeded with 0, and
    :data:`NTU_VAL_PER_ACTION` drawn per action in increasing action order (without replacement)."""
    parsed = {n: tuple(map(int, _NTU_NAME.match(n).groups())) for n in train_names}
    if protocol == "xsub":
        return {n for n, (_, _, subject, _, _) in parsed.items() if subject == NTU_VAL_SUBJECT}
    if protocol != "xview":
        raise ValueError(f"ntu_thesis_val: the thesis defines validation for 'xsub' and 'xview', got {protocol!r}")
    by_action: dict[int, list[str]] = {}
    for n in sorted(parsed):
        by_action.setdefault(parsed[n][4], []).append(n)
    rs = np.random.RandomState(0)  # the stream of np.random.seed(0) + np.random.choice
    val: set[str] = set()
    for action in sorted(by_action):
        videos = by_action[action]
        val.update(rs.choice(videos, min(NTU_VAL_PER_ACTION, len(videos)), replace=False).tolist())
    return val


def _frame_files(folder: str, modality: str) -> list[Entry]:
    """Frames of one sample folder; depth may also be stored as ``.npy`` arrays; flow frames are (x, y) pairs."""
    if modality == "flow":
        return _flow_files(folder)
    return list_frames(folder, suffixes=IMAGE_EXTS + ((".npy",) if modality == "depth" else ()))


def _flow_files(folder: str) -> list[Entry]:
    """(x, y) image pairs of one video's flow folder, by frame number; a frame with only one of its two images
    keeps the missing one's path, so that the dataset reports that file as missing."""
    px, py = FLOW_PREFIXES
    names = {f for f in (os.listdir(folder) if os.path.isdir(folder) else []) if f.lower().endswith(IMAGE_EXTS)}
    stems = sorted({f[len(p) :] for f in names for p in (px, py) if f.startswith(p)}, key=natural_key)
    return [(os.path.join(folder, px + s), os.path.join(folder, py + s)) for s in stems]


def _flow_dir(root: str, flow_root: str | None, what: str) -> str:
    folder = flow_root if flow_root is not None else os.path.join(root, "flow")
    if not os.path.isdir(folder):
        raise FileNotFoundError(
            f"{what}: modality 'flow' needs the flow folder {folder} (flow_root=; compute it with "
            f"mmh prepare flow RGB_FRAMES {folder})"
        )
    return folder


def _readers(max_depth_mm: float, flow_bound: float) -> dict[str, Callable]:
    return {
        "rgb": read_image,
        "depth": functools.partial(read_depth, max_value=max_depth_mm),
        "flow": functools.partial(read_flow, bound=flow_bound),
    }


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
        flow_bound: float = FLOW_BOUND,
        **kwargs: Any,
    ) -> None:
        if not samples:
            raise ValueError(f"{self.name}: no samples found for this split / protocol")
        if isinstance(flow_bound, bool) or not isinstance(flow_bound, (int, float)) or not flow_bound > 0:
            raise ValueError(f"{self.name}: flow_bound must be a positive number of pixels, got {flow_bound!r}")
        super().__init__(
            samples,
            modalities=modalities,
            readers=_readers(max_depth_mm, flow_bound),
            class_names=class_names,
            num_frames=num_frames,
            resolution=resolution,
            **kwargs,
        )


class NTURGBD(_ActionDataset):
    """NTU RGB+D: ``<root>/{rgb|nturgb+d_rgb}/<SsssCcccPpppRrrrAaaa>/*.jpg`` (extracted frames),
    ``<root>/{depth|nturgb+d_depth_masked|nturgb+d_depth}/<name>/*.png`` (``MDepth-*.png``) and
    ``<flow_root>/<name>/flow_{x,y}_*.jpg`` (default ``<root>/flow``).

    Protocols: ``"xsub"`` (cross-subject, official training subjects), ``"xview"`` (NTU60: cameras 2, 3
    train, 1 test), ``"xset"`` (NTU120: even setups train). Labels = action id - 1. ``val_fraction=None``
    (default): the thesis's validation set (module docstring); a number: that deterministic fraction instead.
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
        val_fraction: float | None = None,
        max_depth_mm: float = 8000.0,
        flow_root: str | None = None,
        **kwargs: Any,
    ) -> None:
        check_split(split)
        if protocol not in self.protocols:
            raise ValueError(f"{self.name}: protocol must be one of {self.protocols}, got {protocol!r}")
        _check_val_fraction(self.name, val_fraction, optional=True)
        dirs = {"rgb": ("rgb", "nturgb+d_rgb"), "depth": ("depth", "nturgb+d_depth_masked", "nturgb+d_depth")}
        mdirs = {m: _first_dir(root, dirs[m], self.name) for m in modalities if m in dirs}
        if "flow" in modalities:
            mdirs["flow"] = _flow_dir(root, flow_root, self.name)
        names = sorted({n for d in mdirs.values() for n in os.listdir(d) if _NTU_NAME.match(n)})
        sides = {}
        for n in names:
            setup, camera, subject, _, action = map(int, _NTU_NAME.match(n).groups())
            if action <= self.num_actions:
                sides[n] = {"xsub": subject in self.xsub_train, "xview": camera in (2, 3), "xset": setup % 2 == 0}[
                    protocol
                ]
        if val_fraction is None and protocol in ("xsub", "xview"):
            val = ntu_thesis_val([n for n, is_train in sides.items() if is_train], protocol)
        else:
            fraction = 0.05 if val_fraction is None else val_fraction
            val = {n for n, is_train in sides.items() if is_train and in_val_subset(n, fraction)}
        samples = []
        for n, is_train in sides.items():
            if split == ("test" if not is_train else "val" if n in val else "train"):
                setup, camera, subject, _, action = map(int, _NTU_NAME.match(n).groups())
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
    and ``..._depth.png`` (frames in the order of their numbers); flow in
    ``<flow_root>/view_<v>/a<AA>_s<SS>_e<EE>/flow_{x,y}_*.jpg`` (default ``<root>/flow``: ``mmh prepare flow ROOT
    ROOT/flow``). Cross-view protocol: ``train_views`` (default 1, 2) train, the rest test.
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
        flow_root: str | None = None,
        **kwargs: Any,
    ) -> None:
        check_split(split)
        _check_val_fraction(self.name, val_fraction)
        suffix = {"rgb": "_rgb.jpg", "depth": "_depth.png"}
        flow_dir = _flow_dir(root, flow_root, self.name) if "flow" in modalities else None
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
                frames = sorted(
                    {f[: -len(suffix["rgb"])] for f in os.listdir(folder) if f.endswith(suffix["rgb"])}, key=natural_key
                )
                files: dict[str, list[Entry]] = {}
                for m, end in suffix.items():
                    files[m] = [os.path.join(folder, f + end) for f in frames]
                if flow_dir is not None:
                    files["flow"] = _flow_files(os.path.join(flow_dir, vdir, n))
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
    """UWA3D Multiview Activity II: ``<root>/{rgb,depth}/a<AA>_s<SS>_v<VV>_e<EE>/*.{jpg,png}`` (frame folders) and
    ``<flow_root>/a<AA>_s<SS>_v<VV>_e<EE>/flow_{x,y}_*.jpg`` (default ``<root>/flow``).

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
        flow_root: str | None = None,
        **kwargs: Any,
    ) -> None:
        check_split(split)
        _check_val_fraction(self.name, val_fraction)
        if set(train_views) & set(test_views):
            raise ValueError(f"uwa3d2: train_views {train_views} and test_views {test_views} overlap")
        mdirs = {
            m: _flow_dir(root, flow_root, self.name) if m == "flow" else _first_dir(root, (m,), self.name)
            for m in modalities
        }
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
