"""Fixture trees in the action datasets' published layouts (tiny random frames), for the thesis recipe tests.

Each builder writes RGB frames, 16-bit millimetre depth PNGs and, with ``flow=True``, the optical-flow frames of
``mmh prepare flow`` (``<root>/flow/<video>/flow_{x,y}_<k>.jpg``, one fewer than the RGB frames).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def save(path: Path, array: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path)


def rgb(seed: int, size: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def gray(seed: int, size: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8)


def depth16(seed: int, size: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).integers(500, 4500, (size, size), dtype=np.uint16)


def _flow(folder: Path, frames: int, seed: int) -> None:
    for k in range(1, frames):
        save(folder / f"flow_x_{k:05d}.jpg", gray(seed + 7 * k))
        save(folder / f"flow_y_{k:05d}.jpg", gray(seed + 7 * k + 3))


def ntu(root: Path, *, subjects=(1, 3), actions=(1, 2), frames: int = 3, flow: bool = False, extra=()) -> None:
    """NTU RGB+D as extracted: ``rgb/<SsssCcccPpppRrrrAaaa>/<k>.jpg``, ``nturgb+d_depth_masked/<name>/MDepth-<k>.png``
    and ``flow/<name>/``. ``extra``: more (subject, action) pairs."""
    pairs = [(s, a) for s in subjects for a in actions] + list(extra)
    for subject, action in pairs:
        name = f"S001C001P{subject:03d}R001A{action:03d}"
        seed = 100 * subject + 10 * action
        for k in range(frames):
            save(root / "rgb" / name / f"{k + 1:05d}.jpg", rgb(seed + k))
            save(root / "nturgb+d_depth_masked" / name / f"MDepth-{k + 1:08d}.png", depth16(seed + k))
        if flow:
            _flow(root / "flow" / name, frames, seed)


def nwucla(root: Path, *, frames: int = 3, flow: bool = False) -> None:
    """NW-UCLA: ``view_<v>/a<AA>_s<SS>_e<EE>/frame_<k>_tc_<ts>_{rgb.jpg,depth.png}``; views 1, 2 train, 3 tests."""
    for view in (1, 2, 3):
        for action in (1, 2):
            rel = Path(f"view_{view}") / f"a{action:02d}_s{view:02d}_e00"
            seed = 100 * view + 10 * action
            for k in range(frames):
                save(root / rel / f"frame_{k}_tc_{1000 + k}_rgb.jpg", rgb(seed + k))
                save(root / rel / f"frame_{k}_tc_{1000 + k}_depth.png", depth16(seed + k))
            if flow:
                _flow(root / "flow" / rel, frames, seed)


def uwa3d2(root: Path, *, frames: int = 3, flow: bool = False) -> None:
    """UWA3D II: ``{rgb,depth}/a<AA>_s<SS>_v<VV>_e<EE>/*``; views 1, 2 train, 3, 4 test."""
    for view in (1, 2, 3, 4):
        for action in (1, 2):
            name = f"a{action:02d}_s01_v{view:02d}_e00"
            seed = 100 * view + 10 * action
            for k in range(frames):
                save(root / "rgb" / name / f"{k + 1:05d}.jpg", rgb(seed + k))
                save(root / "depth" / name / f"{k + 1:05d}.png", depth16(seed + k))
            if flow:
                _flow(root / "flow" / name, frames, seed)
