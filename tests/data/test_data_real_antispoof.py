import os

import pytest
import torch

from mmh.data import build_dataset


def _surf_tree(root, img, text, n=4):
    lines = []
    for k in range(n):
        rel = [f"Training/{kind}/{k:03d}.jpg" for kind in ("color", "depth", "ir")]
        img(os.path.join(root, rel[0]), 40 * k, size=(10, 12))
        img(os.path.join(root, rel[1]), 40 * k + 1, size=(10, 12), mode="L")
        img(os.path.join(root, rel[2]), 40 * k + 2, size=(10, 12), mode="L")
        lines.append(" ".join(rel + [str(k % 2)]))
    text(os.path.join(root, "train_list.txt"), lines)
    return lines


def test_casia_surf_items(tmp_path, img, text):
    _surf_tree(str(tmp_path), img, text)
    ds = build_dataset("casia_surf", split="train", root=str(tmp_path), resolution=16)
    assert len(ds) == 4 and ds.class_names == ["spoof", "live"] and ds.labels == [0, 1, 0, 1]
    item = ds[2]
    assert item["rgb"].shape == (3, 16, 16) and item["depth"].shape == (1, 16, 16) and item["ir"].shape == (1, 16, 16)
    assert abs(float(item["rgb"].mean()) - 80 / 255) < 0.02 and abs(float(item["depth"].mean()) - 81 / 255) < 0.02
    assert item["label"].dtype == torch.int64 and int(item["label"]) == 0
    assert build_dataset("casia_surf", root=str(tmp_path), resolution=None)[0]["rgb"].shape == (3, 10, 12)


def test_casia_surf_missing_file_error_and_skip(tmp_path, img, text):
    _surf_tree(str(tmp_path), img, text)
    os.remove(tmp_path / "Training/depth/001.jpg")
    with pytest.raises(FileNotFoundError, match="Training/depth/001.jpg"):
        build_dataset("casia_surf", root=str(tmp_path))
    ds = build_dataset("casia_surf", root=str(tmp_path), on_missing="skip")
    assert len(ds) == 3 and ds.num_skipped == 1 and "001.jpg" in ds.skipped[0][1]
    with pytest.raises(ValueError, match="on_missing"):
        build_dataset("casia_surf", root=str(tmp_path), on_missing="ignore")


def test_casia_surf_corrupt_file(tmp_path, img, text):
    _surf_tree(str(tmp_path), img, text)
    (tmp_path / "Training/ir/003.jpg").write_bytes(b"not a jpeg")
    ds = build_dataset("casia_surf", root=str(tmp_path))
    with pytest.raises(OSError, match="Training/ir/003.jpg"):
        ds[3]
    checked = build_dataset("casia_surf", root=str(tmp_path), verify=True, on_missing="skip")
    assert len(checked) == 3 and checked.num_skipped == 1
    with pytest.raises(FileNotFoundError, match="003.jpg"):
        build_dataset("casia_surf", root=str(tmp_path), verify=True)


def test_casia_surf_bad_list(tmp_path, text):
    text(str(tmp_path / "train_list.txt"), ["a.jpg b.jpg c.jpg 1", "a.jpg b.jpg"])
    with pytest.raises(ValueError, match="train_list.txt:2"):
        build_dataset("casia_surf", root=str(tmp_path))
    text(str(tmp_path / "train_list.txt"), ["a.jpg b.jpg c.jpg 7"])
    with pytest.raises(ValueError, match="label"):
        build_dataset("casia_surf", root=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="val_private_list.txt"):
        build_dataset("casia_surf", split="val", root=str(tmp_path))


def _cefa_tree(root, img, frames=3, missing=None, subjects=(1, 250, 400), pais=(1, 2, 4)):
    """Races AF/CA/EA, subjects 1 (train), 250 (val), 400 (test) (``<Race>-<ID>`` folders, the first race's with
    an ID-card suffix as in the full release); a live (…_1), a cloth print (…_2) and a screen replay (…_4) video each.
    Every frame's pixel value encodes (frame number, modality) so alignment can be checked."""
    for r, race in enumerate(("AF", "CA", "EA")):
        for subject in subjects:
            folder = f"{race}-{subject:03d}" + ("-198006250024" if race == "AF" else "")
            for kind in pais:
                video = os.path.join(root, race, folder, f"{r + 1}_{subject:03d}_1_1_{kind}")
                for f in range(frames):
                    for m, d in enumerate(("profile", "depth", "ir")):
                        path = os.path.join(video, d, f"{f + 1:04d}.jpg")
                        if path != missing:
                            img(path, 50 * f + m, size=(6, 6), mode="RGB" if d == "profile" else "L")
    return root


def _video(root, img, rel, frames=2, rgb_dir="profile"):
    for f in range(frames):
        for m, d in enumerate((rgb_dir, "depth", "ir")):
            img(os.path.join(root, rel, d, f"{f + 1:04d}.jpg"), 50 * f + m, size=(6, 6), mode="RGB" if m == 0 else "L")


def test_cefa_protocol_and_alignment(tmp_path, img):
    root = _cefa_tree(str(tmp_path), img)
    train = build_dataset("casia_cefa", split="train", root=root, protocol="4@2", resolution=None, num_frames=3)
    assert sorted(s.name for s in train.samples) == ["CA/CA-001/2_001_1_1_1", "CA/CA-001/2_001_1_1_4"]
    assert [s.label for s in train.samples] == [1, 0]
    val = build_dataset("casia_cefa", split="val", root=root, protocol="4@2", resolution=None)
    assert {s.name.split("/")[1] for s in val.samples} == {"CA-250"}
    test = build_dataset("casia_cefa", split="test", root=root, protocol="4@2", resolution=None)
    assert {s.name.split("/")[0] for s in test.samples} == {"AF", "EA"}
    assert {s.name.split("/")[1][3:6] for s in test.samples} == {"400"}
    item = train[0]
    assert item["rgb"].shape == (3, 3, 6, 6) and item["frame_index"].tolist() == [0, 1, 2]
    for t in range(3):  # each modality's frame t holds 50 t + m: the modalities stay aligned
        for m, key in enumerate(("rgb", "depth", "ir")):
            assert abs(float(item[key][t].mean()) * 255 - (50 * t + m)) < 2, (t, key)
    still = build_dataset("casia_cefa", split="train", root=root, protocol="4@2")
    assert still[0]["rgb"].shape == (3, 112, 112) and "frame_index" not in still[0]


def test_cefa_protocol4_is_cross_ethnicity_and_cross_attack(tmp_path, img):
    """Protocol 4 as the dataset's published lists (CASIA_CeFA@p4.1_video_*.txt): train/val on live + screen replay
    of the own race, test on live + cloth print of the other two, plus the mask attacks; 0-based subject IDs."""
    root = _cefa_tree(str(tmp_path), img, frames=1, subjects=(0, 199, 200, 299, 300, 499, 500))
    _video(root, img, "Mask/3D-Mask/073/1_073_1_0_2_1_2")
    _video(root, img, "Mask/Silicone-Mask/001/2_001_1_1_2_1_3")

    def videos(split, **kw):
        ds = build_dataset("casia_cefa", split=split, root=root, protocol="4@1", resolution=None, **kw)
        return {(s.name.split("/")[-1], ds.attack_type(i), s.label) for i, s in enumerate(ds.samples)}

    train = videos("train")
    own = ((1, "live"), (4, "replay"))
    assert train == {(f"1_{i:03d}_1_1_{k}", sp, int(k == 1)) for i in (0, 199) for k, sp in own}
    assert {v[0][2:5] for v in videos("val")} == {"200", "299"} and {v[1] for v in videos("val")} == {"live", "replay"}
    test = videos("test")
    ethnic, other = {v for v in test if v[1] in ("live", "print")}, ((1, "live"), (2, "print"))
    assert ethnic == {(f"{r}_{i:03d}_1_1_{k}", sp, int(k == 1)) for r in (2, 3) for i in (300, 499) for k, sp in other}
    assert test - ethnic == {("1_073_1_0_2_1_2", "3d_mask", 0), ("2_001_1_1_2_1_3", "silicone_mask", 0)}
    assert {v[1] for v in videos("test", masks=False)} == {"live", "print"}
    assert {v[1] for v in videos("train", cross_attack=False)} == {"live", "print", "replay"}
    everything = build_dataset("casia_cefa", split="train", root=root, protocol=None, resolution=None)
    assert len(everything) == 3 * 7 * 3  # every race, subject and species


def test_cefa_published_list_and_frame_samples(tmp_path, img, text):
    root = str(tmp_path)
    live, replay = "CASIA_CeFA/Ethnicity/AF/AF-120/1_120_1_1_1", "CASIA_CeFA/Ethnicity/AF/AF-120/1_120_3_1_4"
    mask = "CASIA_CeFA/Mask/3D-Mask/073/1_073_1_0_2_1_2"
    for rel in (live, replay, mask):
        _video(root, img, rel, frames=3, rgb_dir="color")
    text(os.path.join(root, "p41_train.txt"), [f"{live}/color 0", f"{replay}/color 1", f"{mask}/color 1"])
    ds = build_dataset("casia_cefa", root=root, list_file=os.path.join(root, "p41_train.txt"), resolution=None)
    assert [s.name for s in ds.samples] == [live, replay, mask] and ds.labels == [1, 0, 0]
    assert [ds.attack_type(i) for i in range(3)] == ["live", "replay", "3d_mask"]
    assert abs(float(ds[0]["depth"].mean()) * 255 - 51) < 2  # the middle frame; the "color" folder read as rgb
    frames = build_dataset(
        "casia_cefa", root=root, list_file=os.path.join(root, "p41_train.txt"), resolution=None, frame_samples=True
    )
    assert len(frames) == 9 and frames.labels == [1, 1, 1, 0, 0, 0, 0, 0, 0]
    assert [round(float(frames[k]["ir"].mean()) * 255) for k in range(3)] == [2, 52, 102]
    text(os.path.join(root, "bad.txt"), [f"{live} 0", f"{replay}"])
    with pytest.raises(ValueError, match="bad.txt:2"):
        build_dataset("casia_cefa", root=root, list_file=os.path.join(root, "bad.txt"))
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        build_dataset("casia_cefa", root=root, list_file=os.path.join(root, "nope.txt"))


def test_cefa_missing_frame_and_bad_protocol(tmp_path, img):
    missing = os.path.join(str(tmp_path), "AF", "AF-001-198006250024", "1_001_1_1_4", "ir", "0002.jpg")
    root = _cefa_tree(str(tmp_path), img, missing=missing)
    with pytest.raises(FileNotFoundError, match="1_001_1_1_4/ir/0002.jpg"):
        build_dataset("casia_cefa", root=root, protocol="4@1")
    ds = build_dataset("casia_cefa", root=root, protocol="4@1", on_missing="skip")
    assert len(ds) == 1 and ds.num_skipped == 1
    with pytest.raises(ValueError, match="protocol"):
        build_dataset("casia_cefa", root=root, protocol="4@9")
    with pytest.raises(FileNotFoundError, match="missing root"):
        build_dataset("casia_cefa", root=os.path.join(root, "nowhere"))
