"""Optical flow: ``mmh prepare flow`` (a translating texture's flow is its known shift; resumable; parallel; the
missing-extra error) and the action loaders reading the flow layout (x / y as channels 0 / 1, aligned with RGB)."""

import builtins
import importlib.util
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from mmh._optional import MissingExtraError
from mmh.cli import main
from mmh.data import build_dataset
from mmh.data.flow import FLOW_DONE, decode_flow, encode_flow, find_videos, prepare_flow
from mmh.data.real.io import read_flow
from mmh.data.transforms import PairedRandomHorizontalFlip

SHIFT = (1.5, -0.75)  # (dx, dy) pixels per frame
SIZE = 64
MARGIN = 8


def _texture(x, y, seed=0):
    """A smooth random texture defined everywhere (sum of sinusoids), so a sub-pixel shift is exact."""
    rng = np.random.default_rng(seed)
    out = np.zeros_like(x, dtype=np.float64)
    for _ in range(12):
        kx, ky = rng.uniform(-0.45, 0.45, size=2)
        out += rng.uniform(0.5, 1.0) * np.sin(kx * x + ky * y + rng.uniform(0, 2 * np.pi))
    return out


def _write_translating_video(folder, frames=4, shift=SHIFT, seed=0):
    """RGB frames of the texture moved by ``shift`` per frame: frame k shows I(x - k dx, y - k dy)."""
    os.makedirs(folder, exist_ok=True)
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    for k in range(frames):
        t = _texture(x - k * shift[0], y - k * shift[1], seed)
        g = np.clip(128 + 40 * t, 0, 255).astype(np.uint8)
        Image.fromarray(np.stack([g] * 3, -1)).save(os.path.join(folder, f"{k + 1:05d}.jpg"), quality=95)


def _flow_of(folder, k):
    return read_flow((os.path.join(folder, f"flow_x_{k:05d}.jpg"), os.path.join(folder, f"flow_y_{k:05d}.jpg")))


def test_encoding_round_trip_matches_the_reader(tmp_path):
    f = np.linspace(-25, 25, 101).reshape(1, -1)
    q = encode_flow(f, bound=20.0)
    assert q.dtype == np.uint8 and q.min() == 0 and q.max() == 255  # clipped beyond +-20 px
    inside = np.abs(f) <= 20
    assert np.abs(decode_flow(q)[inside] - f[inside]).max() <= 20.0 / 255 + 1e-6  # half a step of 40/255 px
    Image.fromarray(q).save(tmp_path / "x.png")
    Image.fromarray(255 - q).save(tmp_path / "y.png")
    got = read_flow((str(tmp_path / "x.png"), str(tmp_path / "y.png")), bound=20.0)
    assert torch.allclose(got[0, 0], torch.from_numpy(decode_flow(q)[0]), atol=1e-5)
    assert torch.allclose(got[1, 0], torch.from_numpy(decode_flow(255 - q)[0]), atol=1e-5)


#: The tests that compute flow need OpenCV (the optional extra ``flow``). CI installs it and runs them (``CI=true``: a
#: missing OpenCV fails them there); elsewhere they are skipped when it is not installed.
needs_opencv = pytest.mark.skipif(
    importlib.util.find_spec("cv2") is None and os.environ.get("CI") != "true",
    reason="needs the optional extra 'flow' (pip install 'mmh[flow]')",
)


@needs_opencv
def test_prepare_flow_cli_gives_the_shift(tmp_path, capsys):
    src, dst = tmp_path / "rgb", tmp_path / "flow"
    _write_translating_video(src / "S001C001P001R001A001")
    _write_translating_video(src / "S001C002P001R001A001", shift=(-1.0, 2.0), seed=1)
    assert main(["prepare", "flow", str(src), str(dst), "--workers", "2", "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out) == {"videos": 2, "computed": 2, "skipped": 0, "failed": []}
    for name, shift in (("S001C001P001R001A001", SHIFT), ("S001C002P001R001A001", (-1.0, 2.0))):
        out = dst / name
        assert sorted(os.listdir(out)) == [FLOW_DONE] + [f"flow_{c}_{k:05d}.jpg" for c in "xy" for k in (1, 2, 3)]
        for k in (1, 2, 3):
            flow = _flow_of(out, k)[:, MARGIN:-MARGIN, MARGIN:-MARGIN]
            err = (flow - torch.tensor(shift).view(2, 1, 1)).abs().mean(dim=(1, 2))
            assert (err < 0.5).all(), (name, k, err)


@needs_opencv
def test_farneback_gives_the_shift(tmp_path):
    _write_translating_video(tmp_path / "rgb" / "v")
    s = prepare_flow(tmp_path / "rgb", tmp_path / "flow", algorithm="farneback", progress=False)
    assert (s.videos, s.computed) == (1, 1)
    flow = _flow_of(tmp_path / "flow" / "v", 2)[:, MARGIN:-MARGIN, MARGIN:-MARGIN]
    assert ((flow - torch.tensor(SHIFT).view(2, 1, 1)).abs().mean(dim=(1, 2)) < 0.5).all()


@needs_opencv
def test_prepare_flow_resumes(tmp_path):
    src, dst = tmp_path / "rgb", tmp_path / "flow"
    for n in ("a", "b", "c"):
        _write_translating_video(src / n, frames=3)
    first = prepare_flow(src, dst, algorithm="farneback", progress=False)
    assert (first.computed, first.skipped) == (3, 0)
    stamp = {n: os.stat(dst / n / "flow_x_00001.jpg").st_mtime_ns for n in "abc"}
    os.remove(dst / "b" / FLOW_DONE)  # killed after its frames, before its marker: redone
    os.remove(dst / "c" / "flow_y_00002.jpg")  # a frame lost after the marker: redone
    (dst / "b" / "flow_x_00009.jpg").write_bytes(b"stale")  # a leftover of an older run: removed
    again = prepare_flow(src, dst, algorithm="farneback", progress=False)
    assert (again.computed, again.skipped, again.failed) == (2, 1, [])
    assert os.stat(dst / "a" / "flow_x_00001.jpg").st_mtime_ns == stamp["a"]
    assert os.path.isfile(dst / "c" / "flow_y_00002.jpg") and not os.path.exists(dst / "b" / "flow_x_00009.jpg")
    _write_translating_video(src / "a", frames=4)  # a video with more frames now: redone
    third = prepare_flow(src, dst, algorithm="farneback", progress=False)
    assert (third.computed, third.skipped) == (1, 2) and os.path.isfile(dst / "a" / "flow_x_00003.jpg")
    with pytest.raises(ValueError, match="bound=20.0.*bound=30.0"):  # never a mix of encodings in one DST
        prepare_flow(src, dst, algorithm="farneback", bound=30.0, progress=False)


@needs_opencv
def test_prepare_flow_reports_bad_videos_and_goes_on(tmp_path, capsys):
    src = tmp_path / "rgb"
    _write_translating_video(src / "good", frames=2)
    _write_translating_video(src / "short", frames=1)
    _write_translating_video(src / "broken", frames=2)
    (src / "broken" / "00002.jpg").write_bytes(b"not a jpeg")
    s = prepare_flow(src, tmp_path / "flow", algorithm="farneback", progress=False)
    assert s.computed == 1 and sorted(v for v, _ in s.failed) == ["broken", "short"]
    assert "00002.jpg" in dict(s.failed)["broken"] and "at least 2" in dict(s.failed)["short"]
    assert not os.path.exists(tmp_path / "flow" / "broken" / FLOW_DONE)
    code = main(["prepare", "flow", str(src), str(tmp_path / "flow"), "--workers", "1", "--algorithm", "farneback"])
    assert code == 2 and "2 of 3 video(s) failed" in capsys.readouterr().err


@needs_opencv
def test_prepare_flow_bad_arguments(tmp_path):
    _write_translating_video(tmp_path / "rgb" / "v", frames=2)
    with pytest.raises(FileNotFoundError, match="SRC"):
        prepare_flow(tmp_path / "nowhere", tmp_path / "flow")
    with pytest.raises(ValueError, match="algorithm"):
        prepare_flow(tmp_path / "rgb", tmp_path / "flow", algorithm="liu")
    with pytest.raises(ValueError, match="bound"):
        prepare_flow(tmp_path / "rgb", tmp_path / "flow", bound=0)
    with pytest.raises(ValueError, match="workers"):
        prepare_flow(tmp_path / "rgb", tmp_path / "flow", workers=0)
    with pytest.raises(FileNotFoundError, match=r"\*\.png"):
        prepare_flow(tmp_path / "rgb", tmp_path / "flow", glob="*.png")


def test_videos_found_recursively_without_dst(tmp_path):
    """NW-UCLA keeps RGB beside depth in view_<v>/<sample>/: SRC = the root, DST = root/flow inside it."""
    root = tmp_path
    for v in ("view_1", "view_2"):
        folder = root / v / "a01_s01_e00"
        _write_translating_video(folder, frames=2)
        (folder / "frame_1_depth.png").write_bytes(b"")
    (root / "flow" / "view_1" / "a01_s01_e00").mkdir(parents=True)
    Image.new("L", (4, 4)).save(root / "flow" / "view_1" / "a01_s01_e00" / "flow_x_00001.jpg")
    found = find_videos(str(root), "*.jpg", exclude=[str(root / "flow")])
    assert sorted(found) == ["view_1/a01_s01_e00", "view_2/a01_s01_e00"]
    assert [os.path.basename(p) for p in found["view_1/a01_s01_e00"]] == ["00001.jpg", "00002.jpg"]


def test_missing_opencv_names_the_extra(tmp_path, monkeypatch, capsys):
    _write_translating_video(tmp_path / "rgb" / "v", frames=2)
    real_import = builtins.__import__

    def no_cv2(name, *args, **kwargs):
        if name == "cv2" or name.startswith("cv2."):
            raise ImportError("No module named 'cv2'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_cv2)
    with pytest.raises(MissingExtraError, match=r"mmh\[flow\]") as info:
        prepare_flow(tmp_path / "rgb", tmp_path / "flow")
    assert info.value.extra == "flow"
    assert main(["prepare", "flow", str(tmp_path / "rgb"), str(tmp_path / "flow")]) == 2
    assert "pip install 'mmh[flow]'" in capsys.readouterr().err
    assert not (tmp_path / "flow").exists()  # nothing was started


# ------------------------------------------------------------------------------------- the loaders read the layout
def _gray(path, value, size=(8, 8)):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.full(size, value, np.uint8)).save(path)


def _rgb_frames(folder, n, name=lambda k: f"{k + 1:05d}.jpg"):
    for k in range(n):
        _gray(os.path.join(folder, name(k)), 20 * k)


def _flow_frames(folder, n, bound=20.0):
    """Flow frame k (1-based) has x = k - 3 px, y = 2 - k px, except a first row of x from 0 (left) to 4 (right)."""
    os.makedirs(folder, exist_ok=True)
    for k in range(1, n + 1):
        x = np.full((8, 8), k - 3.0)
        x[0] = np.linspace(0, 4, 8)
        Image.fromarray(encode_flow(x, bound)).save(os.path.join(folder, f"flow_x_{k:05d}.png"))
        Image.fromarray(encode_flow(np.full((8, 8), 2.0 - k), bound)).save(os.path.join(folder, f"flow_y_{k:05d}.png"))


def _check_flow_item(ds, index, n_rgb):
    """Channels 0 / 1 are x / y, each frame the flow frame at the RGB frame's relative position."""
    item = ds[index]
    idx = item["frame_index"]
    rgb_k = (item["rgb"][:, 0, 4, 4] * 255 / 20).round().long()
    assert torch.equal(rgb_k, idx)
    flow_k = idx * (n_rgb - 1) // n_rgb + 1  # 1-based flow frame at the same relative position
    q = lambda v: torch.from_numpy(decode_flow(encode_flow(np.asarray(v, dtype=np.float64))))  # noqa: E731
    assert item["flow"].shape == (len(idx), 2, 8, 8)
    assert torch.allclose(item["flow"][:, 0, 4, 4], q((flow_k - 3).numpy()), atol=1e-5)
    assert torch.allclose(item["flow"][:, 1, 4, 4], q((2 - flow_k).numpy()), atol=1e-5)
    flipped = PairedRandomHorizontalFlip(p=1.0)(item)
    assert torch.equal(flipped["rgb"], item["rgb"].flip(-1))
    assert torch.allclose(flipped["flow"][:, 0], -item["flow"][:, 0].flip(-1))  # x negated (and mirrored)
    assert torch.equal(flipped["flow"][:, 1], item["flow"][:, 1].flip(-1))
    assert torch.allclose(flipped["flow"][0, 0, 0, 0], torch.tensor(-4.0), atol=0.1)  # was +4 px at the right edge
    return item


def test_ntu_reads_flow(tmp_path):
    names = ["S001C001P002R001A001", "S001C002P003R001A002"]
    for n in names:
        _rgb_frames(tmp_path / "rgb" / n, 6)
        _flow_frames(tmp_path / "flow" / n, 5)
    ds = build_dataset(
        "ntu60", split="test", root=str(tmp_path), modalities=("rgb", "flow"), resolution=None, val_fraction=0.0
    )
    assert [s.name for s in ds.samples] == ["S001C002P003R001A002"]
    _check_flow_item(ds, 0, 6)
    other = tmp_path / "elsewhere"
    os.rename(tmp_path / "flow", other)
    with pytest.raises(FileNotFoundError, match="flow"):
        build_dataset("ntu60", split="test", root=str(tmp_path), modalities=("rgb", "flow"))
    ds = build_dataset(
        "ntu60", split="test", root=str(tmp_path), modalities=("rgb", "flow"), flow_root=str(other), resolution=None
    )
    _check_flow_item(ds, 0, 6)
    os.remove(other / names[1] / "flow_y_00003.png")
    with pytest.raises(FileNotFoundError, match="flow_y_00003.png"):
        build_dataset("ntu60", split="test", root=str(tmp_path), modalities=("rgb", "flow"), flow_root=str(other))


def test_ntu_flow_bound_scales(tmp_path):
    n = "S001C002P003R001A002"
    _rgb_frames(tmp_path / "rgb" / n, 3)
    _flow_frames(tmp_path / "flow" / n, 2, bound=10.0)
    kw = dict(split="test", root=str(tmp_path), modalities=("flow",), resolution=None, num_frames=2)
    ten = build_dataset("ntu60", flow_bound=10.0, **kw)[0]["flow"]
    assert torch.allclose(ten[:, 1, 4, 4], torch.tensor([1.0, 0.0]), atol=0.05)  # a step is 20/255 px
    twenty = build_dataset("ntu60", **kw)[0]["flow"]  # read with the default bound: twice the values
    assert torch.allclose(twenty[:, 1, 4, 4], 2 * ten[:, 1, 4, 4], atol=1e-5)
    with pytest.raises(ValueError, match="flow_bound"):
        build_dataset("ntu60", flow_bound=0, **kw)


def test_nwucla_reads_flow(tmp_path):
    for view in (1, 3):
        folder = tmp_path / f"view_{view}" / "a01_s01_e00"
        for k in range(12):  # frame numbers not zero-padded: read in numeric order
            _gray(str(folder / f"frame_{k}_tc_{900 + k}_rgb.jpg"), 20 * k)
            _gray(str(folder / f"frame_{k}_tc_{900 + k}_depth.png"), 10)
        _flow_frames(tmp_path / "flow" / f"view_{view}" / "a01_s01_e00", 11)
    ds = build_dataset(
        "nwucla", split="test", root=str(tmp_path), modalities=("rgb", "flow"), resolution=None, num_frames=5
    )
    assert [s.name for s in ds.samples] == ["view_3/a01_s01_e00"]
    _check_flow_item(ds, 0, 12)


def test_uwa3d2_reads_flow(tmp_path):
    n = "a05_s01_v03_e01"
    _rgb_frames(tmp_path / "rgb" / n, 7)
    _flow_frames(tmp_path / "flow" / n, 6)
    ds = build_dataset("uwa3d2", split="test", root=str(tmp_path), modalities=("rgb", "flow"), resolution=None)
    _check_flow_item(ds, 0, 7)
    assert ds.labels == [4]
