import os

import numpy as np
import pytest
import torch

from mmh.data import build_dataset


def _frames(folder, img, n, flow_value=128):
    for f in range(1, n + 1):
        img(os.path.join(folder, f"img_{f:05d}.jpg"), 10 * f, size=(8, 8))
        if f < n:  # denseflow writes one flow frame fewer than RGB frames
            img(os.path.join(folder, f"flow_x_{f:05d}.jpg"), flow_value, size=(8, 8), mode="L")
            img(os.path.join(folder, f"flow_y_{f:05d}.jpg"), 255, size=(8, 8), mode="L")


def test_ucf101_rawframes_and_splits(tmp_path, img, text):
    root = str(tmp_path)
    text(f"{root}/ucfTrainTestlist/classInd.txt", ["1 ApplyEyeMakeup", "2 Archery"])
    text(
        f"{root}/ucfTrainTestlist/trainlist01.txt",
        ["ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1", "Archery/v_Archery_g08_c01.avi 2"],
    )
    text(f"{root}/ucfTrainTestlist/testlist01.txt", ["Archery/v_Archery_g01_c01.avi"])
    for v in ("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01", "Archery/v_Archery_g08_c01"):
        _frames(f"{root}/rawframes/{v}", img, 9)
    _frames(f"{root}/rawframes/v_Archery_g01_c01", img, 9)  # layout without class folders
    tr = build_dataset("ucf101", split="train", root=root, val_fraction=0.0, num_frames=3, resolution=None)
    te = build_dataset("ucf101", split="test", root=root, num_frames=3, resolution=None)
    assert tr.class_names == ["ApplyEyeMakeup", "Archery"] and tr.labels == [0, 1] and te.labels == [1]
    item = te[0]
    assert item["rgb"].shape == (3, 3, 8, 8) and item["flow"].shape == (3, 2, 8, 8)
    assert item["frame_index"].tolist() == [1, 4, 7]
    assert torch.allclose(item["rgb"][:, 0, 0, 0] * 255, torch.tensor([20.0, 50, 80]), atol=1.5)
    assert abs(float(item["flow"][:, 0].mean()) - (128 / 255 * 40 - 20)) < 0.01  # ~0 px
    assert abs(float(item["flow"][:, 1].mean()) - 20.0) < 0.01  # 255 → +bound
    segs = build_dataset("ucf101", split="train", root=root, val_fraction=0.0, num_frames=3, sampling="segment")
    assert segs[0]["rgb"].shape == (3, 3, 112, 112)
    multi = build_dataset(
        "ucf101", split="test", root=root, num_frames=2, sampling="multi_clip", num_clips=2, resolution=None
    )
    item = multi[0]
    assert item["rgb"].shape == (2, 2, 3, 8, 8) and item["flow"].shape == (2, 2, 2, 8, 8)
    assert item["frame_index"].tolist() == [[1, 5], [3, 7]]
    with pytest.raises(ValueError, match="multi_clip"):
        build_dataset("ucf101", split="test", root=root, num_frames=None, sampling="multi_clip")


def test_hmdb51_splits_and_missing_flow(tmp_path, img, text):
    root = str(tmp_path)
    text(f"{root}/testTrainMulti_7030_splits/brush_hair_test_split1.txt", ["a.avi 1", "b.avi 2", "c.avi 0"])
    text(f"{root}/testTrainMulti_7030_splits/cartwheel_test_split1.txt", ["d.avi 1", "e.avi 2"])
    for cls, v in (("brush_hair", "a"), ("brush_hair", "b"), ("cartwheel", "d"), ("cartwheel", "e")):
        _frames(f"{root}/rawframes/{cls}/{v}", img, 4)
    os.remove(f"{root}/rawframes/cartwheel/e/flow_y_00002.jpg")
    tr = build_dataset("hmdb51", split="train", root=root, val_fraction=0.0, num_frames=2)
    assert tr.class_names == ["brush_hair", "cartwheel"] and [s.name for s in tr.samples] == [
        "brush_hair/a.avi",
        "cartwheel/d.avi",
    ]
    with pytest.raises(FileNotFoundError, match="cartwheel/e.avi"):
        build_dataset("hmdb51", split="test", root=root)
    te = build_dataset("hmdb51", split="test", root=root, on_missing="skip", resolution=None)
    assert len(te) == 1 and te.num_skipped == 1
    rgb_only = build_dataset("hmdb51", split="test", root=root, modalities=("rgb",), num_frames=2)
    assert len(rgb_only) == 2 and set(rgb_only[1]) == {"rgb", "label", "frame_index"}
    with pytest.raises(FileNotFoundError, match="split2"):
        build_dataset("hmdb51", root=root, split_id=2)


def test_nyud_objects(tmp_path, img):
    root = str(tmp_path)
    for split, n in (("train", 2), ("test", 1)):
        for cls in ("bed", "chair"):
            for k in range(n):
                img(f"{root}/rgb/{split}/{cls}/{k}.png", 60, size=(9, 7))
                img(f"{root}/depth/{split}/{cls}/{k}.png", 90, size=(9, 7))
    os.remove(f"{root}/depth/test/chair/0.png")
    tr = build_dataset("nyud_objects", split="train", root=root, resolution=16)
    assert tr.class_names == ["bed", "chair"] and tr.labels == [0, 0, 1, 1]
    assert tr[0]["rgb"].shape == (3, 16, 16) and tr[0]["depth"].shape == (3, 16, 16)  # HHA: 3 channels
    with pytest.raises(FileNotFoundError, match="depth/test/chair/0.png"):
        build_dataset("nyud_objects", split="test", root=root)
    raw = build_dataset("nyud_objects", split="train", root=root, depth_encoding="raw", resolution=None)
    assert raw[0]["depth"].shape == (1, 9, 7)
    with pytest.raises(ValueError, match="depth_encoding"):
        build_dataset("nyud_objects", root=root, depth_encoding="jet")


def test_readers_name_bad_files(tmp_path):
    from mmh.data.real.io import read_depth, read_image

    with pytest.raises(FileNotFoundError, match="nope.png"):
        read_image(str(tmp_path / "nope.png"))
    np.save(tmp_path / "bad.npy", np.full((2, 2), np.nan))
    with pytest.raises(ValueError, match="bad.npy"):
        read_depth(str(tmp_path / "bad.npy"))
    (tmp_path / "trunc.npy").write_bytes(b"\x93NUMPY")
    with pytest.raises(OSError, match="trunc.npy"):
        read_depth(str(tmp_path / "trunc.npy"))
