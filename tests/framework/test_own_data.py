"""Your own data: the ``paired_folder`` and ``manifest`` datasets, and training on a paired folder through the CLI."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from mmh.data import build_dataset
from mmh.data.paired_folder import read_any


def _save_png(path, arr):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(arr).save(path)


def write_tree(root, *, splits=("train", "test"), n=6, size=8, seed=0, classes=("far", "near"), ir=False):
    """RGB noise (no class information) + a 16-bit depth map whose level carries the class. Returns
    {split: {sample name: {modality: array}}} of what was written."""
    rng = np.random.default_rng(seed)
    written = {}
    for split in splits:
        written[split] = {}
        for label, cls in enumerate(classes):
            for i in range(n):
                d = os.path.join(root, split, cls, f"s{i:02d}")
                rgb = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                depth = (rng.integers(0, 4000, (size, size)) + 20000 * label + 5000).astype(np.uint16)
                _save_png(os.path.join(d, "rgb.png"), rgb)
                _save_png(os.path.join(d, "depth.png"), depth)
                item = {"rgb": rgb, "depth": depth}
                if ir:
                    a = rng.random((2, size, size)).astype(np.float32)
                    np.save(os.path.join(d, "ir.npy"), a)
                    item["ir"] = a
                written[split][f"{split}/{cls}/s{i:02d}"] = item
    return written


def _by_name(ds):
    return {s.name: i for i, s in enumerate(ds.samples)}


def test_paired_folder_reads_back_and_classes(tmp_path):
    w = write_tree(tmp_path, ir=True)
    ds = build_dataset("paired_folder", split="test", root=str(tmp_path), normalize=False)
    assert ds.class_names == ["far", "near"] and ds.modalities == ("depth", "ir", "rgb") and len(ds) == 12
    idx = _by_name(ds)
    for name, arrays in w["test"].items():
        item = ds[idx[name]]
        assert int(item["label"]) == (1 if "/near/" in name else 0)
        np.testing.assert_array_equal(item["rgb"].numpy(), np.moveaxis(arrays["rgb"], -1, 0).astype(np.float32) / 255)
        np.testing.assert_allclose(item["depth"][0].numpy(), arrays["depth"].astype(np.float64) / 65535, rtol=1e-6)
        np.testing.assert_array_equal(item["ir"].numpy(), arrays["ir"])
    assert read_any(os.path.join(tmp_path, "test/near/s00/depth.png"), depth_scale=1.0)[0, 0, 0] == float(
        w["test"]["test/near/s00"]["depth"][0, 0]
    )


def test_paired_folder_normalisation_is_the_train_statistics(tmp_path):
    w = write_tree(tmp_path)
    train = build_dataset("paired_folder", split="train", root=str(tmp_path))
    test = build_dataset("paired_folder", split="test", root=str(tmp_path))
    # by hand, over every pixel of the train split, per channel
    rgb = np.stack([np.moveaxis(a["rgb"], -1, 0) for a in w["train"].values()]).astype(np.float64) / 255
    depth = np.stack([a["depth"] for a in w["train"].values()]).astype(np.float64) / 65535
    mean_rgb, std_rgb = rgb.mean((0, 2, 3)), rgb.std((0, 2, 3))
    np.testing.assert_allclose(train.normalization["rgb"]["mean"], mean_rgb, rtol=1e-6)
    np.testing.assert_allclose(train.normalization["rgb"]["std"], std_rgb, rtol=1e-6)
    np.testing.assert_allclose(train.normalization["depth"]["mean"], [depth.mean()], rtol=1e-6)
    np.testing.assert_allclose(train.normalization["depth"]["std"], [depth.std()], rtol=1e-6)
    assert test.normalization == train.normalization  # every split uses the train statistics
    name = "test/near/s03"
    item = test[_by_name(test)[name]]
    want = (np.moveaxis(w["test"][name]["rgb"], -1, 0) / 255 - mean_rgb[:, None, None]) / std_rgb[:, None, None]
    np.testing.assert_allclose(item["rgb"].numpy(), want, atol=1e-5)
    want_d = (w["test"][name]["depth"] / 65535 - depth.mean()) / depth.std()
    np.testing.assert_allclose(item["depth"][0].numpy(), want_d, atol=1e-5)
    # given statistics (e.g. a run's dataset.json) replace the computed ones
    stats = {"rgb": {"mean": [0.5] * 3, "std": [0.25] * 3}, "depth": {"mean": [0.0], "std": [2.0]}}
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps({"normalization": stats}))
    given = build_dataset("paired_folder", split="test", root=str(tmp_path), stats=str(path))
    g = given[_by_name(given)[name]]
    np.testing.assert_allclose(
        g["rgb"].numpy(), (np.moveaxis(w["test"][name]["rgb"], -1, 0) / 255 - 0.5) / 0.25, atol=1e-6
    )
    with pytest.raises(ValueError, match="'depth'"):
        build_dataset("paired_folder", split="test", root=str(tmp_path), stats={"rgb": stats["rgb"]})


def test_paired_folder_resize_and_clips(tmp_path):
    rng = np.random.default_rng(1)
    frames = {}
    for cls in ("a", "b"):
        for i in range(2):
            d = tmp_path / "train" / cls / f"v{i}"
            for t in (0, 1, 2, 10):  # natural order: frame10 after frame2
                a = rng.integers(0, 256, (6, 6), dtype=np.uint8)
                _save_png(str(d / "ir" / f"frame{t}.png"), a)
                frames[(cls, i, t)] = a
            _save_png(str(d / "rgb.png"), rng.integers(0, 256, (6, 6, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="num_frames"):
        build_dataset("paired_folder", root=str(tmp_path))
    ds = build_dataset("paired_folder", root=str(tmp_path), num_frames=4, normalize=False)
    item = ds[_by_name(ds)["train/b/v1"]]
    assert item["ir"].shape == (4, 1, 6, 6) and item["rgb"].shape == (4, 3, 6, 6)
    for k, t in enumerate((0, 1, 2, 10)):
        np.testing.assert_array_equal(item["ir"][k, 0].numpy(), frames[("b", 1, t)] / np.float32(255))
    small = build_dataset("paired_folder", root=str(tmp_path), num_frames=4, resolution=3, normalize=False)
    ref = torch.nn.functional.interpolate(item["ir"], size=(3, 3), mode="bilinear", align_corners=False, antialias=True)
    torch.testing.assert_close(small[_by_name(small)["train/b/v1"]]["ir"], ref)
    # normalising before resizing (what the dataset does) equals resizing before normalising
    norm = build_dataset("paired_folder", root=str(tmp_path), num_frames=4, resolution=3)
    mean, std = norm.normalization["ir"]["mean"][0], norm.normalization["ir"]["std"][0]
    torch.testing.assert_close(norm[_by_name(norm)["train/b/v1"]]["ir"], (ref - mean) / std, atol=1e-5, rtol=0)


def test_paired_folder_missing_modality_error_and_skip(tmp_path):
    write_tree(tmp_path, n=3)
    os.remove(tmp_path / "test" / "near" / "s01" / "depth.png")
    with pytest.raises(FileNotFoundError, match=r"test/near/s01.*depth"):
        build_dataset("paired_folder", split="test", root=str(tmp_path))
    ds = build_dataset("paired_folder", split="test", root=str(tmp_path), on_missing="skip")
    assert len(ds) == 5 and ds.num_skipped == 1 and ds.skipped[0][0] == "test/near/s01"
    # the student's modalities alone: the sample is complete
    assert len(build_dataset("paired_folder", split="test", root=str(tmp_path), modalities=["rgb"])) == 6
    os.remove(tmp_path / "train" / "far" / "s00" / "rgb.png")
    with pytest.raises(FileNotFoundError, match=r"train/far/s00.*rgb"):
        build_dataset("paired_folder", split="test", root=str(tmp_path), modalities=["rgb"])  # train statistics
    ds = build_dataset("paired_folder", split="train", root=str(tmp_path), on_missing="skip")
    assert ds.num_skipped == 1 and len(ds) == 5


def test_paired_folder_bad_input(tmp_path):
    write_tree(tmp_path, n=2, splits=("train",))
    with pytest.raises(FileNotFoundError, match="'test'"):
        build_dataset("paired_folder", split="test", root=str(tmp_path))
    with pytest.raises(ValueError, match="'ir'"):
        build_dataset("paired_folder", root=str(tmp_path), modalities=["rgb", "ir"])
    (tmp_path / "test").mkdir()
    with pytest.raises(ValueError, match=r"'test' split .*test has no sample folders"):
        build_dataset("paired_folder", split="test", root=str(tmp_path))
    _save_png(str(tmp_path / "test" / "middle" / "s0" / "rgb.png"), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="'middle'"):
        build_dataset("paired_folder", split="test", root=str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"root .*nothere.* is not a folder"):
        build_dataset("paired_folder", root=str(tmp_path / "nothere"))
    (tmp_path / "train" / "empty").mkdir()  # a class without samples could never be learnt
    with pytest.raises(ValueError, match=r"class folder .*train.empty has no sample folders"):
        build_dataset("paired_folder", root=str(tmp_path))
    (tmp_path / "train" / "empty").rmdir()
    (tmp_path / "train" / "far" / "s00" / "rgb.png").write_bytes(b"not a png")  # corrupt: named when read
    with pytest.raises(ValueError, match=r"train.far.s00.rgb\.png: not an image"):
        build_dataset("paired_folder", root=str(tmp_path))  # the train statistics read every file
    ds = build_dataset("paired_folder", root=str(tmp_path), normalize=False)
    with pytest.raises(OSError, match=r"train.far.s00.rgb\.png"):
        ds[[s.name for s in ds.samples].index("train/far/s00")]


def test_manifest_matches_paired_folder(tmp_path):
    write_tree(tmp_path, n=3)
    lines = ["label,rgb,depth,split"]
    for split in ("train", "test"):
        for cls in ("far", "near"):
            for i in range(3):
                rel = f"{split}/{cls}/s{i:02d}"
                lines.append(f"{cls},{rel}/rgb.png,{rel}/depth.png,{split}")
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
    folder = build_dataset("paired_folder", split="test", root=str(tmp_path), modalities=["rgb", "depth"])
    man = build_dataset("manifest", split="test", csv=str(tmp_path / "m.csv"))
    assert man.class_names == folder.class_names and man.modalities == ("rgb", "depth") and len(man) == len(folder)
    assert man.normalization == folder.normalization
    for i in range(len(man)):
        a, b = man[i], folder[i]
        assert int(a["label"]) == int(b["label"])
        torch.testing.assert_close(a["rgb"], b["rgb"])
        torch.testing.assert_close(a["depth"], b["depth"])
    # one CSV per split (no split column), integer labels
    (tmp_path / "tr.csv").write_text(
        "label,rgb\n" + "".join(f"{k % 2},train/{c}/s0{k // 2}/rgb.png\n" for k, c in enumerate(["far", "near"] * 3))
    )
    (tmp_path / "te.csv").write_text("label,rgb\n1,test/near/s00/rgb.png\n")
    te = build_dataset(
        "manifest", split="test", csv={"train": str(tmp_path / "tr.csv"), "test": str(tmp_path / "te.csv")}
    )
    assert te.class_names == ["0", "1"] and int(te[0]["label"]) == 1
    for key in ("mean", "std"):  # the same train images, summed in another order
        np.testing.assert_allclose(te.normalization["rgb"][key], folder.normalization["rgb"][key], rtol=1e-12)


def test_manifest_errors(tmp_path):
    write_tree(tmp_path, n=1, splits=("train",))
    (tmp_path / "a.csv").write_text("rgb,depth\ntrain/far/s00/rgb.png,train/far/s00/depth.png\n")
    with pytest.raises(ValueError, match="'label'"):
        build_dataset("manifest", csv=str(tmp_path / "a.csv"))
    (tmp_path / "b.csv").write_text("label,rgb\nfar,train/far/s00/rgb.png\nnear,train/near/s00/nothere.png\n")
    with pytest.raises(FileNotFoundError, match="nothere.png"):
        build_dataset("manifest", csv=str(tmp_path / "b.csv"))
    ds = build_dataset("manifest", csv=str(tmp_path / "b.csv"), on_missing="skip")
    assert len(ds) == 1 and ds.num_skipped == 1
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        build_dataset("manifest", csv=str(tmp_path / "missing.csv"))
    (tmp_path / "c.csv").write_text("label,rgb,split\nfar,train/far/s00/rgb.png,train\n")
    with pytest.raises(ValueError, match=r"c\.csv has no rows for split 'test'"):
        build_dataset("manifest", split="test", csv=str(tmp_path / "c.csv"))
    (tmp_path / "d.csv").write_text("label,rgb\n")
    with pytest.raises(ValueError, match=r"d\.csv has no rows"):
        build_dataset("manifest", csv=str(tmp_path / "d.csv"))


def write_easy_tree(root, n_train=12, n_test=8, size=16, seed=0):
    """Two classes: 16-bit depth level carries the class strongly, RGB weakly (red offset) under noise."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        for label, cls in enumerate(("far", "near")):
            for i in range(n):
                d = os.path.join(root, split, cls, f"s{i:02d}")
                rgb = rng.integers(0, 160, (size, size, 3)).astype(np.uint8)
                rgb[..., 0] += np.uint8(90 * label)
                depth = (rng.integers(0, 3000, (size, size)) + 9000 * label + 2000).astype(np.uint16)
                _save_png(os.path.join(d, "rgb.png"), rgb)
                _save_png(os.path.join(d, "depth.png"), depth)


def test_train_teacher_and_rad_student_from_the_template(tmp_path, repo_root):
    pytest.importorskip("mmh_ext")
    from mmh.cli import main

    data = tmp_path / "data"
    write_easy_tree(data)
    run = tmp_path / "run"
    template = repo_root / "configs" / "templates" / "paired_folder" / "rad.yaml"
    args = [
        "train",
        str(template),
        f"dataset.kwargs.root={data}",
        "dataset.kwargs.resolution=16",
        "train.epochs=null",
        "train.steps=40",
        "train.batch_size=8",
        "train.progress=false",
        "threads=1",
        "model.kwargs={width: 8, shared_width: 16}",
        f"output.cache={tmp_path / 'cache'}",
        "--run-dir",
        str(run),
    ]
    assert main(args) == 0
    res = json.loads((run / "results.json").read_text())
    assert res["status"] == "done" and list(res["stages"]) == ["teacher", "student"]
    # 16 test samples, 2 classes: chance is 0.5; depth makes the teacher's task easy, red the student's
    assert res["stages"]["teacher"]["metrics"]["accuracy"] >= 0.9
    assert res["final"]["accuracy"] >= 0.8
    facts = json.loads((run / "dataset.json").read_text())
    assert facts["class_names"] == ["far", "near"] and facts["name"] == "paired_folder"
    assert facts["input_shapes"] == {"depth": [1, 16, 16], "rgb": [3, 16, 16]}
    # the saved statistics are those of the train images, computed here by hand
    rgb = np.stack([np.asarray(Image.open(p)) for p in sorted(data.glob("train/*/*/rgb.png"))]) / 255.0
    depth = np.stack([np.asarray(Image.open(p)) for p in sorted(data.glob("train/*/*/depth.png"))]) / 65535.0
    np.testing.assert_allclose(facts["normalization"]["rgb"]["mean"], rgb.mean((0, 1, 2)), rtol=1e-6)
    np.testing.assert_allclose(facts["normalization"]["rgb"]["std"], rgb.std((0, 1, 2)), rtol=1e-6)
    np.testing.assert_allclose(facts["normalization"]["depth"]["mean"], [depth.mean()], rtol=1e-6)
    np.testing.assert_allclose(facts["normalization"]["depth"]["std"], [depth.std()], rtol=1e-6)

    # the student exported to TorchScript: the sidecar carries the statistics, the file gives the run's logits on
    # the test images normalised with them (read back with stats= from the run, as a deployment would)
    out = tmp_path / "student.pt"
    assert main(["export", str(run), "--out", str(out)]) == 0
    side = json.loads((tmp_path / "student.pt.json").read_text())
    assert side["stage"] == "student" and side["class_names"] == ["far", "near"]
    assert [(i["name"], i["shape"], i["normalization"]) for i in side["inputs"]] == [
        ("rgb", ["batch", 3, 16, 16], facts["normalization"]["rgb"])
    ]
    test = build_dataset(
        "paired_folder",
        split="test",
        root=str(data),
        resolution=16,
        modalities=["rgb"],
        stats=str(run / "dataset.json"),
    )
    x = torch.stack([test[i]["rgb"] for i in range(len(test))])
    from mmh.train.checkpoint import load_model

    with torch.no_grad():
        want = load_model(run / "stages" / "student" / "model.pt").eval()({"rgb": x})
        got = torch.jit.load(str(out))(x)
    assert got.shape == (16, 2)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    labels = torch.tensor([int(test[i]["label"]) for i in range(len(test))])
    assert float((got.argmax(1) == labels).float().mean()) == pytest.approx(res["final"]["accuracy"])


def test_template_without_root_names_the_key(tmp_path, repo_root, capsys):
    from mmh.cli import main

    template = repo_root / "configs" / "templates" / "paired_folder" / "teacher.yaml"
    assert main(["train", str(template), "--run-dir", str(tmp_path / "r")]) == 2
    assert "dataset.kwargs.root" in capsys.readouterr().err


def test_skipped_samples_are_reported_by_the_run(tmp_path, repo_root, capsys, own_data_train_args):
    from mmh.cli import main

    write_tree(tmp_path / "data", n=3, size=8)
    os.remove(tmp_path / "data" / "test" / "near" / "s01" / "depth.png")
    args = own_data_train_args(tmp_path / "data", "dataset.kwargs.on_missing=skip", "--run-dir", str(tmp_path / "run"))
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "[paired_folder test] 1 sample(s) skipped (on_missing=skip), e.g. test/near/s01: no depth files" in err
    assert "[paired_folder train]" not in err


def test_run_checks_own_data_before_training(tmp_path, repo_root, capsys, own_data_train_args):
    """The runner checks own data (mmh.data.check) after building the datasets: a train/test overlap stops the run
    before any training; with dataset.kwargs.allow_overlap=true it trains, and the report is in the run folder."""
    import shutil

    from mmh.cli import main

    data = tmp_path / "data"
    write_tree(data, n=3, size=8)
    shutil.rmtree(data / "test" / "near" / "s02")
    shutil.copytree(data / "train" / "far" / "s01", data / "test" / "near" / "s02")  # a train sample, relabelled
    args = own_data_train_args(data)
    assert main(args + ["--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        err[-1].startswith("mmh train: error: 1 test sample(s) have the same content as train samples")
        and "'test/near/s02' = 'train/far/s01'" in err[-1]
        and "allow_overlap" in err[-1]
    )
    assert not (tmp_path / "run" / "stages").exists()  # stopped before training
    assert not json.loads((tmp_path / "run" / "data_check.json").read_text())["ok"]

    assert main(args + ["dataset.kwargs.allow_overlap=true", "--run-dir", str(tmp_path / "run2")]) == 0
    out = capsys.readouterr().out
    assert "[data check] paired_folder: 24 files (12 read by the check, 12 from the normalisation pass)" in out
    report = json.loads((tmp_path / "run2" / "data_check.json").read_text())
    assert report["ok"] and any("overlap" in w for w in report["warnings"])
    assert (tmp_path / "run2" / "data_check.txt").read_text().startswith(f"data check: paired_folder {data}: ok")
    assert (tmp_path / "run2" / "stages" / "teacher" / "model.pt").is_file()


@pytest.mark.parametrize(
    "content, problem",
    [
        (b'{"normalization": {"rgb": {"mean": [0.5], ', "not a JSON file of normalisation statistics"),
        (b'{"rgb": {"mean": [0.5], "std": [\xff]}}', "not a JSON file of normalisation statistics"),
        (b'{"rgb": {"mean": [0.5], "std": ["abc"]}}', "statistics of 'rgb' must be"),
        (b'{"rgb": {"mean": 0.5, "std": 0.2}}', "statistics of 'rgb' must be"),
        (b'{"rgb": {"mean": [0.5, 0.5], "std": [0.2]}}', "statistics of 'rgb' must be"),
        (b"[0.5, 0.2]", "must be a mapping, got list"),
    ],
    ids=["truncated", "not-utf8", "text-value", "not-lists", "lengths", "list"],
)
def test_bad_stats_file_is_an_error_naming_it(tmp_path, content, problem):
    from mmh.data.paired_folder import load_stats

    path = tmp_path / "dataset.json"
    path.write_bytes(content)
    with pytest.raises((ValueError, TypeError)) as info:
        load_stats(path)
    assert str(info.value).startswith(f"{path}: ") and problem in str(info.value), info.value
