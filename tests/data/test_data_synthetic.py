import hashlib

import numpy as np
import pytest
import torch

from mmh.data import (
    SyntheticAntiSpoof,
    SyntheticMotion,
    SyntheticShapes,
    build_dataset,
    make_loader,
)

ALL = {
    "synthetic_motion": ("rgb", "depth", "ir", "flow"),
    "synthetic_shapes": ("rgb", "depth", "ir"),
    "synthetic_antispoof": ("rgb", "depth", "ir"),
}
CHANNELS = {"rgb": 3, "depth": 1, "ir": 1, "flow": 2}


def _digest(item):
    h = hashlib.sha1()
    for k in sorted(item):
        h.update(k.encode())
        h.update(item[k].numpy().tobytes())
    return h.hexdigest()


@pytest.mark.parametrize("name", sorted(ALL))
@pytest.mark.parametrize("resolution", [32, 64])
def test_item_contract(name, resolution):
    ds = build_dataset(name, split="train", size=6, resolution=resolution, modalities=ALL[name])
    assert ds.modalities == ALL[name] and ds.num_classes == len(ds.class_names) >= 2
    for i in range(len(ds)):
        item = ds[i]
        assert item["label"].dtype == torch.int64 and item["label"].shape == ()
        assert 0 <= int(item["label"]) < ds.num_classes
        for m in ds.modalities:
            x = item[m]
            assert x.dtype == torch.float32 and torch.isfinite(x).all(), m
            assert x.shape[-3:] == (CHANNELS[m], resolution, resolution), (m, x.shape)
            if m != "flow":
                assert x.min() >= 0 and x.max() <= 1, m
        if ds.is_clip:
            assert item["frame_index"].dtype == torch.int64
            assert item["frame_index"].tolist() == list(range(item["rgb"].shape[0]))
        else:
            assert "frame_index" not in item and item["rgb"].ndim == 3


def test_default_modalities_and_112_resolution_and_frames():
    ds = SyntheticMotion("test", size=3, resolution=112, num_frames=5)
    item = ds[2]
    assert ds.modalities == ("rgb", "depth")
    assert item["rgb"].shape == (5, 3, 112, 112) and item["depth"].shape == (5, 1, 112, 112)


@pytest.mark.parametrize("name", sorted(ALL))
def test_sample_is_a_pure_function_of_seed_split_index(name):
    a = build_dataset(name, split="val", size=5, seed=3, modalities=ALL[name])
    b = build_dataset(name, split="val", size=5, seed=3, modalities=ALL[name])
    # reverse order, fresh instance: same bytes
    assert [_digest(a[i]) for i in range(5)] == [_digest(b[i]) for i in reversed(range(5))][::-1]
    c = build_dataset(name, split="val", size=5, seed=4, modalities=ALL[name])
    assert _digest(a[0]) != _digest(c[0])


@pytest.mark.parametrize("name", sorted(ALL))
def test_same_sample_whatever_modalities_requested(name):
    full = build_dataset(name, size=4, modalities=ALL[name])
    for m in ALL[name]:
        alone = build_dataset(name, size=4, modalities=(m,))
        for i in range(4):
            assert torch.equal(full[i][m], alone[i][m]), (m, i)


def test_same_batches_whatever_workers():
    ds = SyntheticMotion("train", size=12)
    runs = []
    for workers in (0, 2):
        loader = make_loader(ds, 4, shuffle=True, seed=11, num_workers=workers)
        runs.append([_digest(b) for b in loader])
    assert runs[0] == runs[1]


def test_splits_are_disjoint():
    train = {_digest(SyntheticShapes("train", size=40)[i]) for i in range(40)}
    test = {_digest(SyntheticShapes("test", size=40)[i]) for i in range(40)}
    assert len(train) == 40 and not train & test


def test_labels_balanced():
    ds = SyntheticShapes("train", size=40)
    counts = np.bincount([int(ds[i]["label"]) for i in range(40)], minlength=4)
    assert counts.tolist() == [10, 10, 10, 10]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"resolution": 8},
        {"difficulty": 1.5},
        {"difficulty": "hard"},
        {"size": 0},
        {"seed": -1},
        {"modalities": ("rgb", "thermal")},
        {"modalities": ()},
        {"modalities": ("rgb", "rgb")},
        {"num_frames": 1},
        {"depth_failure": 2.0},
        {"transform": 3},
    ],
)
def test_bad_arguments_raise_value_or_type_error(kwargs):
    with pytest.raises((ValueError, TypeError)):
        SyntheticMotion("train", **kwargs)


def test_bad_split_and_index():
    with pytest.raises(ValueError, match="split"):
        SyntheticMotion("dev")
    with pytest.raises(ValueError, match="task"):
        SyntheticShapes("train", task="colour")
    ds = SyntheticMotion("train", size=3)
    with pytest.raises(IndexError):
        ds[3]
    with pytest.raises(TypeError):
        ds["0"]
    assert torch.equal(ds[-1]["rgb"], ds[2]["rgb"])


def _object_depth(depth):
    """Per-frame depth of the nearest valid pixels (the moving object is the nearest surface)."""
    flat = depth.flatten(1)
    return torch.stack([f[f > 0].quantile(0.03) for f in flat])


def test_motion_in_depth_matches_label():
    ds = SyntheticMotion("train", size=30, difficulty=0.0, depth_failure=0.0)
    for i in range(len(ds)):
        item = ds[i]
        z = _object_depth(item["depth"][:, 0])
        change = float(z[-1] - z[0])
        label = ds.class_names[int(item["label"])]
        if label == "approach":
            assert change < -0.03, (i, change)
        elif label == "recede":
            assert change > 0.03, (i, change)


def test_flow_expands_on_approach_and_contracts_on_recede():
    ds = SyntheticMotion("train", size=12, difficulty=0.0, modalities=("flow",))
    res = ds.resolution
    yy, xx = torch.meshgrid(torch.arange(res) + 0.5, torch.arange(res) + 0.5, indexing="ij")
    for i in range(12):
        item = ds[i]
        f = item["flow"][3]
        mask = f.abs().sum(0) > 0
        assert mask.any()
        cx, cy = xx[mask].mean(), yy[mask].mean()
        f = f - f[:, mask].mean(1)[:, None, None]  # remove the translation
        div = (f[0][mask] * (xx[mask] - cx) + f[1][mask] * (yy[mask] - cy)).mean()
        label = ds.class_names[int(item["label"])]
        if label == "approach":
            assert div > 0, (i, float(div))
        elif label == "recede":
            assert div < 0, (i, float(div))


def test_depth_failure_zeroes_the_clip():
    failed = SyntheticMotion("train", size=2, depth_failure=1.0, modalities=("rgb", "depth"))[0]
    ok = SyntheticMotion("train", size=2, depth_failure=0.0, modalities=("rgb", "depth"))[0]
    assert failed["depth"].abs().sum() == 0 and ok["depth"].abs().sum() > 0
    assert torch.equal(failed["rgb"], ok["rgb"])


def test_antispoof_depth_and_ir_expose_attacks():
    ds = SyntheticAntiSpoof("test", size=24)
    kinds = [ds.attack_type(i) for i in range(24)]
    assert set(kinds) == {"live", "print", "replay"}
    assert all((k == "live") == (int(ds[i]["label"]) == 1) for i, k in enumerate(kinds))
    relief, ir = {}, {}
    for i, k in enumerate(kinds):
        item = ds[i]
        c = item["depth"][0, 8:24, 8:24]
        relief.setdefault(k, []).append(float(c.max() - c[c > 0].min()))
        ir.setdefault(k, []).append(float(item["ir"].mean()))
    assert min(relief["live"]) > 2 * max(relief["print"] + relief["replay"])
    assert max(ir["replay"]) < min(ir["print"])


def test_shapes_true_size_task():
    ds = SyntheticShapes("train", task="true_size", size=4, modalities=("rgb", "depth", "ir"))
    assert ds.class_names == ["small", "large"] and ds.num_classes == 2
    assert ds[1]["depth"].shape == (1, 32, 32)


def test_transforms_through_the_loader():
    from mmh.data.transforms import (
        Compose,
        DepthToJet,
        FrameSampler,
        PairedRandomCrop,
        SpeckleNoise,
    )

    tf = Compose([FrameSampler(5), PairedRandomCrop(28), DepthToJet(), SpeckleNoise("rgb", 0.01)])
    ds = SyntheticMotion("train", size=8, transform=tf)
    batch = next(iter(make_loader(ds, 4, shuffle=True, seed=0, num_workers=2)))
    assert batch["rgb"].shape == (4, 5, 3, 28, 28) and batch["depth"].shape == (4, 5, 3, 28, 28)
    assert batch["frame_index"][0].tolist() == [0, 2, 4, 5, 7]
    again = next(iter(make_loader(ds, 4, shuffle=True, seed=0, num_workers=2)))
    assert torch.equal(batch["rgb"], again["rgb"])  # random transforms are reproducible through the loader
