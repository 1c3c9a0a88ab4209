import os

import numpy as np
import pytest
import torch

from mmh.data import build_dataset
from mmh.data.real.base import in_val_subset


def _ntu_tree(root, img, names, frames=6, depth_dir="nturgb+d_depth_masked"):
    for n in names:
        for f in range(frames):
            img(os.path.join(root, "rgb", n, f"{f + 1:05d}.jpg"), 10 * f, size=(8, 10))
            img(os.path.join(root, depth_dir, n, f"MDepth-{f + 1:08d}.png"), 1000 * (f + 1), size=(6, 8), mode="I;16")
    return root


NTU_NAMES = ["S001C001P001R001A001", "S001C002P003R001A002", "S002C003P006R002A060", "S018C001P045R001A120"]


def test_ntu60_protocols_and_items(tmp_path, img):
    root = _ntu_tree(str(tmp_path), img, NTU_NAMES)
    xsub = build_dataset("ntu60", split="test", root=root, protocol="xsub", val_fraction=0.0, resolution=16)
    assert [s.name for s in xsub.samples] == [
        "S001C002P003R001A002",
        "S002C003P006R002A060",
    ]  # P003, P006: not training subjects
    assert xsub.labels == [1, 59] and xsub.num_classes == 60
    tr = build_dataset("ntu60", split="train", root=root, protocol="xview", val_fraction=0.0)
    assert [s.name for s in tr.samples] == ["S001C002P003R001A002", "S002C003P006R002A060"]  # cameras 2, 3
    item = xsub[0]
    assert item["rgb"].shape == (5, 3, 16, 16) and item["depth"].shape == (5, 1, 16, 16)
    assert item["frame_index"].tolist() == [0, 1, 3, 4, 5]  # 5 segment centres of 6 frames
    assert abs(float(item["depth"][1].mean()) - 2000 / 8000) < 1e-3  # 16-bit millimetres / max_depth_mm
    with pytest.raises(ValueError, match="protocol"):
        build_dataset("ntu60", root=root, protocol="xset")


def test_ntu120_xset_and_train_val_disjoint(tmp_path, img):
    names = [f"S{s:03d}C001P001R001A{a:03d}" for s in (1, 2) for a in range(1, 41)]
    root = _ntu_tree(str(tmp_path), img, names, frames=2)
    tr = build_dataset("ntu120", split="train", root=root, protocol="xset", num_frames=2)
    va = build_dataset("ntu120", split="val", root=root, protocol="xset", num_frames=2, val_fraction=0.2)
    te = build_dataset("ntu120", split="test", root=root, protocol="xset", num_frames=2)
    assert all(s.name.startswith("S002") for s in tr.samples + va.samples)
    assert all(s.name.startswith("S001") for s in te.samples) and len(te) == 40
    tr20 = build_dataset("ntu120", split="train", root=root, protocol="xset", num_frames=2, val_fraction=0.2)
    assert len(tr20) + len(va) == 40 and not {s.name for s in tr20.samples} & {s.name for s in va.samples}
    assert all(in_val_subset(s.name, 0.2) for s in va.samples)


def test_ntu_missing_depth_folder(tmp_path, img):
    root = _ntu_tree(str(tmp_path), img, NTU_NAMES[:2])
    import shutil

    shutil.rmtree(os.path.join(root, "nturgb+d_depth_masked", NTU_NAMES[1]))
    with pytest.raises(FileNotFoundError, match="no depth files"):
        build_dataset("ntu60", split="test", root=root, val_fraction=0.0)
    ds = build_dataset("ntu60", split="test", root=root, val_fraction=0.0, on_missing="skip", modalities=("rgb",))
    assert len(ds) == 1 and ds.num_skipped == 0 and "depth" not in ds[0]


def test_nwucla_cross_view(tmp_path, img):
    for view in (1, 2, 3):
        for action, subject in ((1, 1), (12, 2), (7, 3)):  # action 7 is not part of NW-UCLA's 10
            folder = tmp_path / f"view_{view}" / f"a{action:02d}_s{subject:02d}_e00"
            for f in range(4):
                img(str(folder / f"frame_{f:02d}_tc_{1000 + f}_rgb.jpg"), 20 * f, size=(8, 8))
                img(str(folder / f"frame_{f:02d}_tc_{1000 + f}_depth.png"), 500 * f, size=(8, 8), mode="I;16")
    tr = build_dataset("nwucla", split="train", root=str(tmp_path), val_fraction=0.0, num_frames=4, resolution=None)
    te = build_dataset("nwucla", split="test", root=str(tmp_path), num_frames=4, resolution=None)
    assert len(tr) == 4 and len(te) == 2 and {s.meta["view"] for s in te.samples} == {3}
    assert sorted(te.labels) == [0, 9] and te.num_classes == 10
    item = te[0]
    assert item["rgb"].shape == (4, 3, 8, 8)
    assert torch.allclose(item["depth"][:, 0, 0, 0], torch.tensor([0.0, 500, 1000, 1500]) / 8000)
    assert torch.allclose(item["rgb"][:, 0, 0, 0], torch.tensor([0.0, 20, 40, 60]) / 255)


def test_uwa3d2_cross_view(tmp_path, img):
    for view in (1, 2, 3, 4):
        n = f"a05_s01_v{view:02d}_e01"
        os.makedirs(tmp_path / "depth" / n)
        for f in range(3):
            img(str(tmp_path / "rgb" / n / f"{f:04d}.jpg"), 30, size=(8, 8))
            np.save(tmp_path / "depth" / n / f"{f:04d}.npy", np.full((8, 8), 0.5, np.float32))
    te = build_dataset("uwa3d2", split="test", root=str(tmp_path), num_frames=2, resolution=None)
    assert sorted(s.meta["view"] for s in te.samples) == [3, 4] and te.labels == [4, 4] and te.num_classes == 30
    assert torch.allclose(te[0]["depth"], torch.full((2, 1, 8, 8), 0.5))
    with pytest.raises(ValueError, match="overlap"):
        build_dataset("uwa3d2", root=str(tmp_path), train_views=(1, 3), test_views=(3, 4))


def _rgb_only_tree(root, img, names):
    for n in names:
        img(os.path.join(root, "rgb", n, "00001.jpg"), 50, size=(4, 4))
    return root


def test_ntu_thesis_validation_cross_subject(tmp_path, img):
    """Thesis ch. 3: cross-subject validation = training subject 1 (P001); the test side is untouched."""
    names = [f"S001C00{c}P{p:03d}R001A00{a}" for c in (1, 2) for p in (1, 2, 3) for a in (1, 2)]
    root = _rgb_only_tree(str(tmp_path), img, names)
    kw = dict(root=root, modalities=("rgb",), num_frames=1, resolution=None)
    split = {s: {x.name for x in build_dataset("ntu60", split=s, **kw).samples} for s in ("train", "val", "test")}
    assert split["val"] == {n for n in names if "P001" in n}
    assert split["train"] == {n for n in names if "P002" in n}
    assert split["test"] == {n for n in names if "P003" in n}  # subject 3 is not a training subject
    by_fraction = build_dataset("ntu60", split="train", val_fraction=0.0, **kw)
    assert {x.name for x in by_fraction.samples} == split["train"] | split["val"]  # a number: the fraction rule
    ntu120 = build_dataset("ntu120", split="val", **kw)
    assert {x.name for x in ntu120.samples} == split["val"]
    with pytest.raises(ValueError, match="val_fraction"):
        build_dataset("ntu60", split="val", val_fraction=1.5, **kw)


def test_ntu_thesis_validation_cross_view(tmp_path, img):
    """Thesis ch. 3: per action the sorted training videos, numpy seeded with 0, 31 drawn per action."""
    train = [f"S001C002P{p:03d}R00{r}A001" for p in range(1, 21) for r in (1, 2)]  # 40 videos of action 1
    train += [f"S001C003P{p:03d}R001A002" for p in range(1, 6)]  # 5 of action 2: all of them
    test = ["S001C001P001R001A001"]
    root = _rgb_only_tree(str(tmp_path), img, train + test)
    kw = dict(root=root, protocol="xview", modalities=("rgb",), num_frames=1, resolution=None)
    by_action = {}
    for n in sorted(train):
        by_action.setdefault(n[-4:], []).append(n)
    np.random.seed(0)  # the text's recipe, step by step
    want = set()
    for action in by_action:
        want |= set(np.random.choice(by_action[action], min(31, len(by_action[action])), replace=False))
    val = {x.name for x in build_dataset("ntu60", split="val", **kw).samples}
    tr = {x.name for x in build_dataset("ntu60", split="train", **kw).samples}
    assert val == want and len(val) == 36 and tr == set(train) - want and len(tr) == 9
    assert {x.name for x in build_dataset("ntu60", split="test", **kw).samples} == set(test)
