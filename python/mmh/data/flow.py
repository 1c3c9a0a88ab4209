"""Optical flow frames from RGB frames (``mmh prepare flow SRC DST``), in the layout the action loaders read.

Layout (the TSN / mmaction / denseflow one): for a video whose RGB frames are the folder ``SRC/<video>/``, the flow
between frames ``k`` and ``k + 1`` (``k = 1 .. N-1``) is the pair of 8-bit grey images
``DST/<video>/flow_x_<k:05d>.jpg`` and ``DST/<video>/flow_y_<k:05d>.jpg``: a displacement of ``f`` pixels per frame
is stored as ``round((f + bound) * 255 / (2 * bound))``, clipped to ``[0, 255]`` (so ``[-bound, bound]`` px ↔
``[0, 255]``, zero flow ≈ 128; default ``bound`` 20 px), which :func:`mmh.data.real.io.read_flow` decodes back to
pixels per frame (x: rightwards, y: downwards). ``<video>`` is the folder's path relative to ``SRC`` (e.g.
``S001C001P001R001A001`` for NTU, ``view_1/a01_s01_e00`` for NW-UCLA). A finished video also holds
``.flow_done.json`` (frames, algorithm, bound), written last and atomically: a video with it and all its flow frames
is skipped by a later run (resumable), a video without it (a killed run) is computed again.

Algorithms: ``"tvl1"`` (default; OpenCV contrib's Dual TV-L1, ``cv2.optflow.DualTVL1OpticalFlow_create`` with its
default parameters) or ``"farneback"`` (OpenCV's ``calcOpticalFlowFarneback``, much faster, less accurate). The thesis
(ch. 5) computed its flow with Ce Liu's coarse-to-fine implementation, which OpenCV does not ship; TV-L1 is the common
choice of the two-stream / TSN literature. OpenCV is the optional extra ``flow`` (``pip install 'mmh[flow]'``:
``opencv-contrib-python-headless``), imported only here; without it :func:`prepare_flow` raises
:class:`mmh._optional.MissingExtraError` naming the extra.

Videos are computed in parallel (``workers`` processes, each with one OpenCV thread), with a progress bar.
"""

from __future__ import annotations

import concurrent.futures
import fnmatch
import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._optional import MissingExtraError

__all__ = [
    "FLOW_ALGORITHMS",
    "FLOW_BOUND",
    "FLOW_DONE",
    "FLOW_PREFIXES",
    "FlowSummary",
    "decode_flow",
    "encode_flow",
    "find_videos",
    "flow_frame_names",
    "natural_key",
    "prepare_flow",
]

#: Algorithms of :func:`prepare_flow`.
FLOW_ALGORITHMS = ("tvl1", "farneback")
#: Default bound (pixels per frame) of the 8-bit encoding: ``[-20, 20]`` ↔ ``[0, 255]``.
FLOW_BOUND = 20.0
#: File name prefixes of the x and y images of one flow frame.
FLOW_PREFIXES = ("flow_x_", "flow_y_")
#: The completion marker of a finished video folder.
FLOW_DONE = ".flow_done.json"


def natural_key(name: str) -> list[Any]:
    """Sort key ordering embedded numbers by value (``frame_2`` before ``frame_10``)."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def encode_flow(flow: np.ndarray, bound: float = FLOW_BOUND) -> np.ndarray:
    """``(H, W)`` flow in pixels → uint8, ``round((f + bound) * 255 / (2 * bound))`` clipped to ``[0, 255]``."""
    q = np.rint((np.asarray(flow, dtype=np.float64) + bound) * (255.0 / (2.0 * bound)))
    return np.clip(q, 0, 255).astype(np.uint8)


def decode_flow(q: np.ndarray, bound: float = FLOW_BOUND) -> np.ndarray:
    """Inverse of :func:`encode_flow` (as :func:`mmh.data.real.io.read_flow` decodes): uint8 → pixels, float32."""
    return (np.asarray(q, dtype=np.float32) / 255.0 * (2.0 * bound) - bound).astype(np.float32)


def flow_frame_names(num_rgb_frames: int) -> list[tuple[str, str]]:
    """The (x, y) file names of the ``num_rgb_frames - 1`` flow frames of a video."""
    return [(f"{FLOW_PREFIXES[0]}{k:05d}.jpg", f"{FLOW_PREFIXES[1]}{k:05d}.jpg") for k in range(1, num_rgb_frames)]


def _import_cv2(algorithm: str) -> Any:
    """OpenCV, or :class:`MissingExtraError` naming the ``flow`` extra (TV-L1 also needs the contrib modules)."""
    try:
        import cv2
    except ImportError as exc:
        raise MissingExtraError("opencv-contrib-python-headless", "flow", "mmh prepare flow") from exc
    if algorithm == "tvl1" and not hasattr(getattr(cv2, "optflow", None), "DualTVL1OpticalFlow_create"):
        raise MissingExtraError(
            "opencv-contrib-python-headless", "flow", "mmh prepare flow --algorithm tvl1 (OpenCV's contrib modules)"
        )
    return cv2


@dataclass
class FlowSummary:
    """What :func:`prepare_flow` did: videos found, computed, skipped (already finished) and failed
    (``[(video, reason)]``)."""

    videos: int = 0
    computed: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "videos": self.videos,
            "computed": self.computed,
            "skipped": self.skipped,
            "failed": [{"video": v, "error": e} for v, e in self.failed],
        }


def _is_done(folder: str, num_frames: int, settings: dict[str, Any]) -> bool:
    """Whether ``folder`` holds a finished video of ``num_frames`` RGB frames computed with ``settings``;
    ValueError naming the folder when it was finished with other settings (mixing encodings is never silent)."""
    marker = os.path.join(folder, FLOW_DONE)
    if not os.path.isfile(marker):
        return False
    try:
        with open(marker, encoding="utf-8") as fh:
            done = json.load(fh)
    except (OSError, ValueError):
        return False
    if not isinstance(done, dict):
        return False
    for key, value in settings.items():
        if done.get(key) != value:
            raise ValueError(
                f"{folder} holds flow computed with {key}={done.get(key)!r}, this run asks {key}={value!r}: "
                f"write to another DST (or delete that folder)"
            )
    if done.get("frames") != num_frames:
        return False
    return all(os.path.isfile(os.path.join(folder, n)) for pair in flow_frame_names(num_frames) for n in pair)


def _compute(cv2: Any, algorithm: str) -> Any:
    if algorithm == "tvl1":
        tvl1 = cv2.optflow.DualTVL1OpticalFlow_create()
        return lambda a, b: tvl1.calc(a, b, None)
    return lambda a, b: cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)


def _flow_video(task: tuple[str, list[str], str, str, float]) -> tuple[str, str | None]:
    """Compute one video's flow (in a worker): (video, None) or (video, the reason it failed)."""
    video, frames, out, algorithm, bound = task
    cv2 = _import_cv2(algorithm)
    settings = {"algorithm": algorithm, "bound": bound}
    try:
        if len(frames) < 2:
            raise ValueError(f"{len(frames)} frame(s): flow needs at least 2")
        os.makedirs(out, exist_ok=True)
        marker = os.path.join(out, FLOW_DONE)
        if os.path.exists(marker):  # an older, incomplete or stale result: removed before anything is rewritten
            os.remove(marker)
        for f in os.listdir(out):
            if f.startswith(FLOW_PREFIXES):
                os.remove(os.path.join(out, f))
        calc = _compute(cv2, algorithm)
        prev = None
        for k, path in enumerate(frames):
            img = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
            if img is None:
                raise OSError(f"unreadable image file {path}")
            if prev is not None:
                if img.shape != prev.shape:
                    raise ValueError(f"frame {path} is {img.shape[::-1]}, the previous frame {prev.shape[::-1]}")
                flow = calc(prev, img)
                for c, name in enumerate(flow_frame_names(k + 1)[-1]):
                    target = os.path.join(out, name)
                    if not cv2.imwrite(target, encode_flow(flow[..., c], bound), [cv2.IMWRITE_JPEG_QUALITY, 95]):
                        raise OSError(f"could not write {target}")
            prev = img
        from ..utils.io import write_json

        write_json({"frames": len(frames), **settings}, marker)  # last: the video is complete
    except (OSError, ValueError, cv2.error) as exc:
        return video, str(exc)
    return video, None


def _init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)


def find_videos(src: str, glob: str = "*.jpg", exclude: Sequence[str] = ()) -> dict[str, list[str]]:
    """``{video: [frame paths in natural order]}`` of every folder under ``src`` holding files that match ``glob``
    (``video`` is the folder's path relative to ``src``); folders under ``exclude`` are not searched."""
    skip = {os.path.realpath(e) for e in exclude}
    videos: dict[str, list[str]] = {}
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames[:] = sorted(d for d in dirnames if os.path.realpath(os.path.join(dirpath, d)) not in skip)
        frames = sorted((f for f in filenames if fnmatch.fnmatch(f, glob)), key=natural_key)
        if frames:
            videos[os.path.relpath(dirpath, src)] = [os.path.join(dirpath, f) for f in frames]
    return videos


def prepare_flow(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    algorithm: str = "tvl1",
    bound: float = FLOW_BOUND,
    workers: int = 1,
    glob: str = "*.jpg",
    progress: bool = True,
) -> FlowSummary:
    """Optical flow of every video under ``src`` (a folder of RGB frames matching ``glob`` per video) written to
    ``dst`` in the layout of this module's docstring; finished videos are skipped, the others (re)computed.

    ``workers`` processes (1: in this process). A video that cannot be computed (an unreadable frame, fewer than two
    frames, frames of different sizes) is reported in the summary's ``failed`` and the others go on. ValueError /
    FileNotFoundError naming the argument for bad arguments, a missing ``src`` or one without frames.
    """
    src, dst = os.fspath(src), os.fspath(dst)
    if algorithm not in FLOW_ALGORITHMS:
        raise ValueError(f"prepare_flow: algorithm must be one of {FLOW_ALGORITHMS}, got {algorithm!r}")
    if isinstance(bound, bool) or not isinstance(bound, (int, float)) or not math.isfinite(bound) or bound <= 0:
        raise ValueError(f"prepare_flow: bound must be a positive number of pixels, got {bound!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"prepare_flow: workers must be a positive int, got {workers!r}")
    if not os.path.isdir(src):
        raise FileNotFoundError(f"prepare_flow: SRC {src} is not a folder")
    if os.path.exists(dst) and not os.path.isdir(dst):
        raise NotADirectoryError(f"prepare_flow: DST {dst} exists and is not a folder")
    _import_cv2(algorithm)  # the missing extra is reported before any work
    videos = find_videos(src, glob, exclude=[dst])
    if not videos:
        raise FileNotFoundError(f"prepare_flow: no folder of frames matching {glob!r} under SRC {src}")
    bound = float(bound)
    settings = {"algorithm": algorithm, "bound": bound}
    summary = FlowSummary(videos=len(videos))
    tasks = []
    for video, frames in videos.items():
        out = os.path.normpath(os.path.join(dst, video))
        if _is_done(out, len(frames), settings):
            summary.skipped += 1
        else:
            tasks.append((video, frames, out, algorithm, bound))
    from tqdm.auto import tqdm

    bar = tqdm(total=len(videos), initial=summary.skipped, desc="flow", unit="video", disable=not progress)
    try:
        if workers == 1 or len(tasks) <= 1:
            for task in tasks:
                _count(summary, *_flow_video(task))
                bar.update()
        else:
            with concurrent.futures.ProcessPoolExecutor(max_workers=workers, initializer=_init_worker) as pool:
                futures = [pool.submit(_flow_video, t) for t in tasks]
                for fut in concurrent.futures.as_completed(futures):
                    _count(summary, *fut.result())
                    bar.update()
    finally:
        bar.close()
    return summary


def _count(summary: FlowSummary, video: str, error: str | None) -> None:
    if error is None:
        summary.computed += 1
    else:
        summary.failed.append((video, error))
