"""Fixture trees in the datasets' published layouts (tiny random files), for the paper recipe tests.

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


def casia_surf(root: Path) -> None:
    """CASIA-SURF's published layout: ``train_list.txt`` / ``val_private_list.txt`` / ``test_private_list.txt``,
    ``rgb depth ir label`` per line (1 = live), the crops under ``Training/real_part/<subject>/<clip>/color/``."""
    names = {"train": ("Training", "train_list.txt"), "val": ("Val", "val_private_list.txt")}
    names["test"] = ("Testing", "test_private_list.txt")
    for s, (folder, list_name) in enumerate(names.values()):
        lines = []
        for k in range(4):
            label = k % 2
            part = "real_part" if label else "fake_part"
            clip = f"{folder}/{part}/CLKJ_AS{s}{k:03d}/{'real' if label else '04_enm_b'}.rssdk"
            rel = [f"{clip}/{kind}/{31 + k}.jpg" for kind in ("color", "depth", "ir")]
            save(root / rel[0], rgb(100 * s + k))
            save(root / rel[1], gray(100 * s + k + 1))
            save(root / rel[2], gray(100 * s + k + 2))
            lines.append(" ".join([*rel, str(label)]))
        (root / list_name).write_text("\n".join(lines) + "\n")


def casia_cefa(root: Path) -> None:
    """CeFA's published layout ``<Race>/<Race>-<ID>/<race>_<ID>_<device>_<session>_<PAI>/{profile,depth,ir}/*.jpg``:
    protocol 4@1 trains on AF subjects 000-199 (live + screen replay), validates on 200-299, tests on CA/EA
    300-499 (live + cloth print)."""
    videos = [("AF", 0, 1, 1), ("AF", 1, 1, 4), ("AF", 200, 1, 1), ("AF", 201, 1, 4)]
    videos += [("CA", 300, 3, 1), ("CA", 300, 3, 2), ("EA", 301, 3, 1), ("EA", 301, 3, 2)]
    for race, subject, device, pai in videos:
        code = "123"["AF CA EA".split().index(race)]
        video = root / race / f"{race}-{subject:03d}" / f"{code}_{subject:03d}_{device}_1_{pai}"
        for f in range(2):
            seed = 1000 * subject + 10 * pai + f
            save(video / "profile" / f"{f + 1:04d}.jpg", rgb(seed))
            save(video / "depth" / f"{f + 1:04d}.jpg", gray(seed + 1))
            save(video / "ir" / f"{f + 1:04d}.jpg", gray(seed + 2))


def hha(seed: int, size: int = 8) -> np.ndarray:
    """An HHA-encoded depth crop: 3 uint8 channels (horizontal disparity, height, angle)."""
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def nyud_objects(root: Path, *, classes=("chair", "table"), per_class: int = 2) -> None:
    """NYUD (v2) object crops: ``rgb/<split>/<class>/<name>.png`` and ``depth/<split>/<class>/<name>.png`` (HHA,
    3 channels, paired by class and file stem), splits train / val / test."""
    for s, split in enumerate(("train", "val", "test")):
        for c, cls in enumerate(classes):
            for k in range(per_class):
                seed = 1000 * s + 100 * c + k
                save(root / "rgb" / split / cls / f"{k:05d}.png", rgb(seed))
                save(root / "depth" / split / cls / f"{k:05d}.png", hha(seed + 1))


#: One fixture tree per dataset, in its published layout, that every shipped recipe of that dataset accepts (all
#: chapters' needs together: 9 frames and flow for the 8-frame clips of the flow stream, NTU subject 2 for the
#: thesis's xsub validation subject). A recipe on a dataset without an entry here fails its test.
TREES = {
    "casia_surf": casia_surf,
    "casia_cefa": casia_cefa,
    "nwucla": lambda root: nwucla(root, frames=9, flow=True),
    "uwa3d2": lambda root: uwa3d2(root, frames=9, flow=True),
    "ntu60": lambda root: ntu(root, subjects=(1, 2, 3), frames=9, flow=True),
    "ntu120": lambda root: ntu(root, subjects=(1, 2, 3), frames=9, flow=True),
    "nyud_objects": nyud_objects,
}
