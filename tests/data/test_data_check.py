"""``mmh data check`` (mmh.data.check) and the checks own data gets when it is built: outliers left out of the
normalisation, unreadable files, duplicates and split overlap, labels, sizes/channels, names that are not text."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from mmh.data import build_dataset
from mmh.data import paired_folder as pf
from mmh.data.check import DataCheckError, check_before_training, check_data


def _png(path, arr):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(arr).save(path)


def write_npy_tree(root, *, n=6, size=8, seed=0, splits=("train", "test")):
    """RGB noise png + float depth .npy (class 0 around 1, class 1 around 2) in ROOT/<split>/<class>/<sample>/."""
    rng = np.random.default_rng(seed)
    for split in splits:
        for label, cls in enumerate(("far", "near")):
            for i in range(n):
                d = os.path.join(root, split, cls, f"s{i:02d}")
                _png(os.path.join(d, "rgb.png"), rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
                np.save(os.path.join(d, "depth.npy"), rng.normal(1 + label, 0.1, (size, size)).astype(np.float32))


def write_manifest(root, rows, name="m.csv"):
    lines = ["label,rgb,depth,split"] + [
        f"{lab},{split}/{cls}/s{i:02d}/rgb.png,{split}/{cls}/s{i:02d}/depth.npy,{sp}" for lab, split, cls, i, sp in rows
    ]
    path = os.path.join(root, name)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    return path


def _clean_rows(n_train=6, n_test=3):
    rows = [(c, "train", c, i, "train") for c in ("far", "near") for i in range(n_train)]
    return rows + [(c, "test", c, i, "test") for c in ("far", "near") for i in range(n_test)]


# ------------------------------------------------------------------------------------------------ outliers
def test_one_outlier_file_no_longer_moves_the_normalisation(tmp_path):
    write_npy_tree(tmp_path / "clean")
    write_npy_tree(tmp_path / "bad")
    bad_file = tmp_path / "bad" / "train" / "far" / "s03" / "depth.npy"
    a = np.load(bad_file)
    a[2, 2] = 3e38  # finite, but no depth map holds it
    np.save(bad_file, a)
    clean = build_dataset("paired_folder", root=str(tmp_path / "clean"))
    bad = build_dataset("paired_folder", root=str(tmp_path / "bad"))
    kept = bad.normalization["depth"]
    ref = clean.normalization["depth"]
    # the outlier file's 63 ordinary values (of class 'far') are left out too: close, not equal
    assert abs(kept["mean"][0] - ref["mean"][0]) < 0.15 * ref["std"][0]
    assert kept["std"][0] == pytest.approx(ref["std"][0], rel=0.05)
    assert bad.normalization["rgb"] == clean.normalization["rgb"]  # the rgb files are the same
    assert bad.normalization_outliers == [str(bad_file)]
    # every file kept: the mean is what the issue saw
    assert (
        build_dataset("paired_folder", root=str(tmp_path / "bad"), outlier_z=None).normalization["depth"]["mean"][0]
        > 1e34
    )
    # items are normalised with the kept statistics
    item = bad[[s.name for s in bad.samples].index("train/near/s00")]
    assert abs(float(item["depth"].mean())) < 5
    report = check_data(tmp_path / "bad")
    assert report.ok
    assert any(
        str(bad_file) in w and "outlier" in w and "left out of the normalisation" in w for w in report.warnings
    ), report.warnings
    assert [o["file"] for o in report.outliers] == [str(bad_file)] and report.outliers[0]["excluded"]
    assert report.normalization["depth"] == kept
    assert check_data(tmp_path / "clean").warnings == []  # no false alarm on ordinary data


def test_outlier_in_the_test_split_is_a_warning(tmp_path):
    write_npy_tree(tmp_path)
    f = tmp_path / "test" / "near" / "s01" / "depth.npy"
    np.save(f, np.load(f) * 1000)  # millimetres among metres
    report = check_data(tmp_path)
    assert report.ok and any(str(f) in w and "unlike the train files" in w for w in report.warnings)


def test_check_reuses_the_normalisation_pass(tmp_path, monkeypatch):
    write_npy_tree(tmp_path, n=4)
    reads: list[str] = []
    real = pf.read_bytes

    def counting(path, *args, **kwargs):
        reads.append(path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(pf, "read_bytes", counting)
    pf._STATS_MEMO.clear()
    build_dataset("paired_folder", root=str(tmp_path))  # what the runner does first: the train statistics
    assert len(reads) == 16 and all("/train/" in p for p in reads)
    report = check_data(tmp_path)
    assert len(reads) == 32 and len(set(reads)) == 32  # every file read once: the test files by the check
    assert report.cost == {
        "files": 32,
        "read": 16,
        "reused": 16,
        "bytes_read": sum(os.path.getsize(p) for p in reads if "/test/" in p),
    }


# ------------------------------------------------------------------------------------------------ unreadable files
def test_truncated_png_and_zero_byte_file_are_named(tmp_path, capsys):
    from mmh.cli import main

    write_npy_tree(tmp_path)
    png = tmp_path / "test" / "near" / "s02" / "rgb.png"
    png.write_bytes(png.read_bytes()[:60])
    empty = tmp_path / "test" / "far" / "s01" / "depth.npy"
    empty.write_bytes(b"")
    report = check_data(tmp_path)
    assert not report.ok
    assert any(str(png) in e and "truncated" in e for e in report.errors), report.errors
    assert any(str(empty) in e and "empty file" in e for e in report.errors), report.errors
    assert main(["data", "check", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mmh data: error: ") and "1 more problem" in err[0]
    # in the train split the dataset itself refuses (its statistics read every train file): a ValueError naming it
    (tmp_path / "train" / "far" / "s00" / "rgb.png").write_bytes(b"")
    with pytest.raises(ValueError, match=r"train.far.s00.rgb\.png: empty file"):
        build_dataset("paired_folder", root=str(tmp_path))
    report = check_data(tmp_path)
    assert len(report.errors) == 1 and "train/far/s00/rgb.png" in report.errors[0]


# ------------------------------------------------------------------------------------------------ duplicates, overlap
def test_manifest_repeating_train_rows_as_test_rows_is_an_error(tmp_path):
    write_npy_tree(tmp_path)
    rows = _clean_rows() + [("near", "train", "near", 4, "test")]  # a train sample listed again as a test row
    csv = write_manifest(tmp_path, rows)
    report = check_data(csv)
    assert not report.ok
    (err,) = [e for e in report.errors if "overlap" in e]
    assert "m.csv:20" in err and "m.csv:12" in err and "allow_overlap" in err
    assert report.duplicates == [
        {"samples": [{"split": "train", "name": f"{csv}:12"}, {"split": "test", "name": f"{csv}:20"}]}
    ]
    # a copy of the files under another name is the same content
    os.makedirs(tmp_path / "test" / "near" / "s09")
    for name in ("rgb.png", "depth.npy"):
        (tmp_path / "test" / "near" / "s09" / name).write_bytes((tmp_path / "train/far/s02" / name).read_bytes())
    csv2 = write_manifest(tmp_path, _clean_rows() + [("near", "test", "near", 9, "test")], "m2.csv")
    assert any("overlap" in e for e in check_data(csv2).errors)
    # allowed: a warning, and the check passes
    report = check_data(csv, allow_overlap=True)
    assert report.ok and any("overlap" in w for w in report.warnings)
    # the dataset takes the option (a config can set dataset.kwargs.allow_overlap=true)
    assert build_dataset("manifest", csv=csv, allow_overlap=True).allow_overlap is True
    with pytest.raises(ValueError, match="allow_overlap"):
        build_dataset("manifest", csv=csv, allow_overlap="yes")


def test_duplicate_rows_are_an_error(tmp_path):
    write_npy_tree(tmp_path)
    csv = write_manifest(tmp_path, _clean_rows() + [("far", "train", "far", 2, "train")])
    report = check_data(csv)
    (err,) = report.errors
    assert err.startswith("train: 1 sample(s) appear more than once") and "m.csv:4" in err and "m.csv:20" in err
    assert check_data(write_manifest(tmp_path, _clean_rows(), "ok.csv")).ok


# ------------------------------------------------------------------------------------------------ labels
def test_label_typo(tmp_path, capsys):
    from mmh.cli import main

    write_npy_tree(tmp_path)
    rows = _clean_rows()
    rows[3] = ("A", "train", "far", 3, "train")  # a typo: a third class
    csv = write_manifest(tmp_path, rows)
    report = check_data(csv)
    assert report.splits["train"]["classes"] == {"A": 1, "far": 5, "near": 6}
    assert any("class 'A' has 1 train sample(s)" in w and "label typo" in w for w in report.warnings)
    # with the classes given, a label outside them is an error naming the row
    report = check_data(csv, classes=["far", "near"])
    assert report.errors == [f"train split: manifest: {csv}:5: label 'A' is not a class (['far', 'near'])"]
    assert main(["data", "check", csv, "--classes", "far,near"]) == 2
    assert (
        capsys.readouterr().err == f"mmh data: error: train split: manifest: {csv}:5: label 'A' is not a class "
        f"(['far', 'near'])\n"
    )
    # paired_folder: classes= makes a class folder outside the list an error naming it
    os.rename(tmp_path / "train" / "near", tmp_path / "train" / "naer")
    with pytest.raises(ValueError, match=r"class folder 'naer' .* is not the given classes \['far', 'near'\]"):
        build_dataset("paired_folder", root=str(tmp_path), classes=["far", "near"])
    report = check_data(tmp_path, classes=["far", "near"])
    assert len(report.errors) == 1 and "class folder 'naer'" in report.errors[0]


# ------------------------------------------------------------------------------------------------ sizes, channels
def test_size_and_channel_mismatches(tmp_path):
    write_npy_tree(tmp_path)
    grey = tmp_path / "test" / "far" / "s00" / "rgb.png"
    _png(str(grey), np.zeros((8, 8), np.uint8))  # 1 channel among 3
    big = tmp_path / "test" / "near" / "s00" / "depth.npy"
    np.save(big, np.ones((10, 10), np.float32))
    report = check_data(tmp_path)
    assert any(
        e.startswith("rgb: 1 file(s) have another channel count than the 3") and str(grey) in e for e in report.errors
    ), report.errors
    assert any(
        e.startswith("depth: 1 file(s) are not 8x8") and str(big) in e and "resolution=" in e for e in report.errors
    ), report.errors
    # resized as training would resize: the size is no error (the channels still are)
    report = check_data(tmp_path, resolution=8)
    assert [e.split(":")[0] for e in report.errors] == ["rgb"]
    assert report.modalities["depth"]["test"]["sizes"] == {"8x8": 11, "10x10": 1}
    # modalities of different sizes
    write_npy_tree(tmp_path / "two", n=3)
    for p in (tmp_path / "two").glob("*/*/*/depth.npy"):
        np.save(p, np.ones((6, 6), np.float32))
    (err,) = check_data(tmp_path / "two").errors
    assert err.startswith("modalities have different sizes (depth 6x6, rgb 8x8)")


# ------------------------------------------------------------------------------------------------ names
def test_non_utf8_file_name_is_an_error_naming_it(tmp_path):
    write_npy_tree(tmp_path, n=3)
    sample = os.fsencode(tmp_path / "train" / "near" / "s01")
    bad = sample + b"/rgb\xff.png"
    os.rename(sample + b"/rgb.png", bad)
    with pytest.raises(ValueError) as info:
        build_dataset("paired_folder", root=str(tmp_path))
    assert repr(bad) in str(info.value) and "not valid text" in str(info.value)
    report = check_data(tmp_path)
    assert len(report.errors) == 1 and repr(bad) in report.errors[0]
    # a valid but stray name: the error names the file that has it, not only a sample that lacks it
    os.rename(bad, sample + b"/rgb.png")
    stray = tmp_path / "train" / "near" / "s01" / "rgb copy.png"
    stray.write_bytes((tmp_path / "train" / "near" / "s01" / "rgb.png").read_bytes())
    with pytest.raises(FileNotFoundError, match=r"only 1 of 6 train samples have one, e.g. .*rgb copy\.png"):
        build_dataset("paired_folder", root=str(tmp_path))


def test_manifest_that_is_not_utf8(tmp_path):
    write_npy_tree(tmp_path, n=2)
    csv = tmp_path / "m.csv"
    csv.write_bytes(
        b"label,rgb,depth\nfar,train/far/s00/rgb.png,train/far/s00/depth.npy\n"
        b"n\xe9ar,train/near/s00/rgb.png,train/near/s00/depth.npy\n"
    )
    with pytest.raises(ValueError, match=r"m\.csv:3 is not UTF-8 text"):
        build_dataset("manifest", csv=str(csv))
    csv.write_bytes(b"label,rgb,depth\nfar,train/far/s00/rgb.png,train/far/s00/depth.npy,extra\n")
    with pytest.raises(ValueError, match=r"m\.csv:2: 4 cells for 3 columns"):
        build_dataset("manifest", csv=str(csv))


# ------------------------------------------------------------------------------------------------ CLI, runner helper
def test_cli_report_and_out_folder(tmp_path, capsys):
    from mmh.cli import main

    write_npy_tree(tmp_path / "d", n=3)
    assert main(["data", "check", str(tmp_path / "d"), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr()
    assert out.err == "" and out.out.startswith(f"data check: paired_folder {tmp_path / 'd'}: ok")
    data = json.loads((tmp_path / "out" / "data_check.json").read_text())
    assert data["ok"] and data["splits"]["test"]["classes"] == {"far": 3, "near": 3}
    assert (tmp_path / "out" / "data_check.txt").read_text() == out.out
    assert main(["data", "check", str(tmp_path / "nothere")]) == 2
    assert capsys.readouterr().err == f"mmh data: error: no such folder or CSV file: {tmp_path / 'nothere'}\n"


def test_check_before_training(tmp_path):
    write_npy_tree(tmp_path / "d", n=3)
    kw = {"root": str(tmp_path / "d")}
    logged: list[str] = []
    report = check_before_training("paired_folder", {"train": kw, "test": kw}, tmp_path / "run", logged.append)
    assert report is not None and report.ok and (tmp_path / "run" / "data_check.json").is_file()
    assert logged[0].startswith(
        "[data check] paired_folder: 24 files (12 read by the check, 12 from the normalisation pass)"
    )
    assert check_before_training("synthetic_shapes", {"train": {}}, tmp_path / "run2", logged.append) is None
    assert not (tmp_path / "run2").exists()
    (tmp_path / "d" / "test" / "far" / "s00" / "rgb.png").write_bytes(b"junk")
    with pytest.raises(DataCheckError, match=r"test.far.s00.rgb\.png: not an image"):
        check_before_training("paired_folder", {"train": kw, "test": kw}, tmp_path / "run3", logged.append)
    assert not json.loads((tmp_path / "run3" / "data_check.json").read_text())["ok"]
