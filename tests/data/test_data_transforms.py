import math
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms as T
from torchvision.transforms.v2 import functional as TF

from mmh.data import make_loader
from mmh.data.transforms import (
    Compose,
    DepthToJet,
    FrameSampler,
    Normalize,
    PairedCenterCrop,
    PairedColorJitter,
    PairedRandomCrop,
    PairedRandomHorizontalFlip,
    PairedRandomResizedCrop,
    PairedRandomRotation,
    PairedResize,
    SpeckleNoise,
    TransformedDataset,
    build_transform,
    build_transforms,
    jet,
    list_transforms,
    register_transform,
    sample_frame_indices,
)


def _sample(h=8, w=10, clip=False):
    g = torch.Generator().manual_seed(0)
    rgb = torch.rand(3, h, w, generator=g)
    lead = (4,) if clip else ()
    rgb = rgb.expand(*lead, 3, h, w).clone()
    return {
        "rgb": rgb,
        "depth": rgb[..., :1, :, :].clone(),  # depth == red channel: alignment is checkable
        "flow": torch.stack([torch.ones(h, w), torch.full((h, w), 2.0)]).expand(*lead, 2, h, w).clone(),
        "label": torch.tensor(1),
    }


def test_speckle_statistics_and_void():
    x = {"depth": torch.full((200, 200), 2.0), "label": torch.tensor(0)}
    g = torch.Generator().manual_seed(0)
    y = SpeckleNoise("depth", 0.01, generator=g)(x)["depth"]
    n = y / 2.0
    assert abs(float(n.mean()) - 1.0) < 0.005 and abs(float(n.var()) - 0.01) < 0.001
    assert torch.equal(x["depth"], torch.full((200, 200), 2.0))  # input untouched
    assert torch.equal(SpeckleNoise("depth", 0)(x)["depth"], x["depth"])
    v = SpeckleNoise("depth", "void")(x)
    assert v["depth"].abs().sum() == 0 and v["label"] == 0


@pytest.mark.parametrize("sigma2", [-1, float("nan"), "loud", True])
def test_speckle_rejects_bad_sigma(sigma2):
    with pytest.raises(ValueError, match="sigma2"):
        SpeckleNoise("depth", sigma2)


def test_speckle_missing_modality_and_int_dtype():
    with pytest.raises(KeyError, match="'ir'"):
        SpeckleNoise("ir", 0.1)({"rgb": torch.zeros(3, 2, 2)})
    with pytest.raises(TypeError, match="floating"):
        SpeckleNoise("rgb", 0.1)({"rgb": torch.zeros(3, 2, 2, dtype=torch.uint8)})


@pytest.mark.parametrize("clip", [False, True])
def test_paired_crop_is_identical_across_modalities(clip):
    s = _sample(clip=clip)
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        out = PairedRandomCrop((5, 6), generator=g)(s)
        assert out["rgb"].shape[-2:] == (5, 6) and out["depth"].shape[-2:] == (5, 6)
        assert torch.equal(out["depth"], out["rgb"][..., :1, :, :])
        assert out["label"] == 1
    c = PairedCenterCrop(4)(s)
    assert torch.equal(c["rgb"], s["rgb"][..., 2:6, 3:7])
    with pytest.raises(ValueError, match="larger"):
        PairedRandomCrop(20)(s)


def test_paired_crop_needs_equal_sizes():
    s = _sample()
    s["depth"] = torch.zeros(1, 4, 4)
    with pytest.raises(ValueError, match="equal H, W"):
        PairedRandomCrop(3)(s)


def test_flip_flips_all_and_negates_flow_x():
    s = _sample()
    out = PairedRandomHorizontalFlip(p=1.0)(s)
    assert torch.equal(out["rgb"], s["rgb"].flip(-1)) and torch.equal(out["depth"], s["depth"].flip(-1))
    assert (out["flow"][0] == -1).all() and (out["flow"][1] == 2).all()
    assert PairedRandomHorizontalFlip(p=0.0)(s) is s


def test_resize_scales_flow_and_keeps_depth_values():
    s = _sample(clip=True)
    s["depth"] = (torch.arange(80).reshape(1, 8, 10).float() % 3).expand(4, 1, 8, 10).clone()
    out = PairedResize((16, 5))(s)
    assert out["rgb"].shape == (4, 3, 16, 5) and out["depth"].shape == (4, 1, 16, 5)
    assert set(out["depth"].unique().tolist()) <= {0.0, 1.0, 2.0}  # nearest: no blended depth
    assert torch.allclose(out["flow"][:, 0], torch.full((4, 16, 5), 0.5))  # x scaled by 5/10
    assert torch.allclose(out["flow"][:, 1], torch.full((4, 16, 5), 4.0))  # y scaled by 16/8


def test_jet_colormap():
    x = torch.tensor([0.0, 0.5, 1.0]).view(1, 1, 3)
    c = jet(x)[:, 0, :].T
    assert torch.allclose(c, torch.tensor([[0.0, 0.0, 0.5], [0.5, 1.0, 0.5], [0.5, 0.0, 0.0]]))
    with pytest.raises(ValueError):
        jet(torch.zeros(3, 2, 2))


def test_depth_to_jet():
    s = {"depth": torch.tensor([[[0.0, 0.2], [0.6, 1.0]]]).expand(2, 1, 2, 2).clone()}
    out = DepthToJet()(s)
    assert out["depth"].shape == (2, 3, 2, 2)
    st = DepthToJet(normalize="sample")(s)["depth"]
    assert torch.allclose(st[0, :, 1, 1], torch.tensor([0.5, 0.0, 0.0]))  # max valid depth → dark red
    assert torch.allclose(st[0, :, 0, 0], torch.tensor([0.0, 0.0, 0.5]))  # missing → dark blue
    with pytest.raises(KeyError, match="depth"):
        DepthToJet()({"rgb": torch.zeros(3, 2, 2)})
    with pytest.raises(ValueError, match="1 channel"):
        DepthToJet()({"depth": torch.zeros(3, 2, 2)})


def test_frame_indices():
    assert sample_frame_indices(10, 5).tolist() == [1, 3, 5, 7, 9]
    assert sample_frame_indices(3, 5).tolist() == [0, 0, 1, 2, 2]  # centres 0.3, 0.9, 1.5, 2.1, 2.7
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        idx = sample_frame_indices(40, 8, "segment", generator=g)
        assert ((idx // 5) == torch.arange(8)).all()
    mc = sample_frame_indices(40, 4, "multi_clip", num_clips=3)
    assert mc.shape == (3, 4) and (mc[1:] > mc[:-1]).all()
    with pytest.raises(ValueError, match="mode"):
        sample_frame_indices(10, 2, "random")
    with pytest.raises(ValueError, match="num_total"):
        sample_frame_indices(0, 2)


def test_frame_sampler_and_compose():
    s = _sample(clip=True)
    s["rgb"] = s["rgb"] * torch.arange(4).view(4, 1, 1, 1)
    s["frame_index"] = torch.arange(4) + 10
    out = Compose([FrameSampler(2), PairedCenterCrop(4)])(s)
    assert out["frame_index"].tolist() == [11, 13]
    assert torch.equal(out["rgb"], s["rgb"][[1, 3], :, 2:6, 3:7])
    mc = FrameSampler(2, "multi_clip", num_clips=2)(s)
    assert mc["rgb"].shape == (2, 2, 3, 8, 10) and mc["frame_index"].shape == (2, 2)
    with pytest.raises(ValueError, match="clip"):
        FrameSampler(2)({"rgb": torch.zeros(3, 4, 4)})
    with pytest.raises(TypeError):
        Compose([1])


# ------------------------------------------------------------------------------------------- random_rotation
def _square(n=9, clip=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    rgb = torch.rand(3, n, n, generator=g)
    if clip:
        rgb = rgb.expand(4, 3, n, n).clone()
    return {"rgb": rgb, "depth": rgb[..., :1, :, :].clone(), "label": torch.tensor(2)}


@pytest.mark.parametrize("clip", [False, True])
@pytest.mark.parametrize("k", [1, -1, 2])
def test_rotation_by_right_angles_equals_rot90(clip, k):
    s = _square(clip=clip)
    out = PairedRandomRotation(180).rotate(s, 90.0 * k)  # counter-clockwise, like torch.rot90 over (H, W)
    assert torch.allclose(out["rgb"], torch.rot90(s["rgb"], k, (-2, -1)), atol=1e-5)
    assert torch.equal(out["depth"], torch.rot90(s["depth"], k, (-2, -1)))  # nearest: exact values
    assert out["label"] == 2


def test_rotation_matches_torchvision_rotate():
    x = torch.rand(3, 20, 24, generator=torch.Generator().manual_seed(3))
    for angle in (30.0, -17.5):
        ours = PairedRandomRotation(45, depth_keys=()).rotate({"rgb": x}, angle)["rgb"]
        ref = TF.rotate(x, angle, interpolation=TF.InterpolationMode.BILINEAR)
        assert torch.allclose(ours, ref, atol=1e-5)
        nearest = PairedRandomRotation(45).rotate({"depth": x[:1]}, angle)["depth"]
        assert torch.allclose(nearest, TF.rotate(x[:1], angle), atol=1e-6)


def test_rotation_draws_one_angle_for_all_modalities_and_frames():
    s = _square(clip=True)
    torch.manual_seed(5)
    angles = [float(torch.empty(1).uniform_(-30, 30)) for _ in range(3)]  # what the transform draws, in order
    torch.manual_seed(5)
    t = PairedRandomRotation(30, depth_keys=())
    for angle in angles:
        out = t(s)
        assert torch.equal(out["depth"], out["rgb"][..., :1, :, :])  # the same rotation of every modality
        assert all(torch.equal(out["rgb"][0], f) for f in out["rgb"])  # one draw per clip
        assert torch.allclose(out["rgb"], t.rotate(s, angle)["rgb"])
    assert len({round(a, 3) for a in angles}) == 3


def test_rotation_turns_flow_vectors():
    """A rightward flow (+x) turned 90 degrees counter-clockwise points up (-y); the field moves like rot90."""
    n = 7
    g = torch.Generator().manual_seed(0)
    flow = torch.randn(2, n, n, generator=g)
    out = PairedRandomRotation(90).rotate({"flow": flow}, 90.0)["flow"]
    moved = torch.rot90(flow, 1, (-2, -1))
    assert torch.allclose(out[0], moved[1], atol=1e-5) and torch.allclose(out[1], -moved[0], atol=1e-5)
    right = torch.zeros(2, n, n)
    right[0] = 1.0
    up = PairedRandomRotation(90).rotate({"flow": right}, 90.0)["flow"][:, n // 2, n // 2]
    assert torch.allclose(up, torch.tensor([0.0, -1.0]), atol=1e-6)
    with pytest.raises(ValueError, match="2 channels"):
        PairedRandomRotation(10).rotate({"flow": torch.zeros(3, 4, 4)}, 5.0)


def test_rotation_canvas_follows_the_casia_surf_reference():
    """expand=0.8: the reference code's canvas, int(0.8 h |sin| + 0.8 w |cos|) wide (cv2.getRotationMatrix2D)."""
    t = PairedRandomRotation(30, expand=0.8)
    for angle in (0, 7, -30, 30):
        rad = math.radians(angle)
        cos, sin = abs(np.cos(rad)) * 0.8, abs(np.sin(rad)) * 0.8
        nw, nh = int((144 * sin) + (144 * cos)), int((144 * cos) + (144 * sin))
        assert t.canvas(144, 144, angle) == (nh, nw)
        assert t.rotate({"rgb": torch.zeros(3, 144, 144)}, angle)["rgb"].shape == (3, nh, nw)
    x = _square(n=8)
    same = PairedRandomRotation(0, expand=True).rotate(x, 0.0)  # the bounding box of an unrotated image: itself
    assert torch.allclose(same["rgb"], x["rgb"], atol=1e-6)
    filled = PairedRandomRotation(45, fill=0.5, depth_keys=()).rotate({"rgb": torch.ones(1, 8, 8)}, 45.0)["rgb"]
    assert torch.isclose(filled[0, 0, 0], torch.tensor(0.5)) and torch.isclose(filled[0, 4, 4], torch.tensor(1.0))
    for bad in (-1, 0, "wide"):
        with pytest.raises(ValueError, match="expand"):
            PairedRandomRotation(10, expand=bad)
    with pytest.raises(ValueError, match="degrees"):
        PairedRandomRotation(-5)
    with pytest.raises(TypeError, match="degrees"):
        PairedRandomRotation("10")


# ------------------------------------------------------------------------------------------- random_resized_crop
def test_random_resized_crop_draws_torchvisions_window_for_every_modality():
    s = _sample(h=30, w=40, clip=True)
    t = PairedRandomResizedCrop((12, 16), scale=(0.2, 0.9), ratio=(0.5, 2.0), depth_keys=())
    for seed in range(5):
        torch.manual_seed(seed)
        top, left, h, w = T.RandomResizedCrop.get_params(torch.zeros(3, 30, 40), [0.2, 0.9], [0.5, 2.0])
        torch.manual_seed(seed)
        out = t(s)
        window = s["rgb"][..., top : top + h, left : left + w]
        ref = F.interpolate(window, size=(12, 16), mode="bilinear", align_corners=False, antialias=True)
        assert torch.allclose(out["rgb"], ref, atol=1e-6)
        assert torch.equal(out["depth"], out["rgb"][..., :1, :, :])  # same window for every modality
        assert all(torch.equal(out["rgb"][0], f) for f in out["rgb"])  # one draw per clip
        assert torch.allclose(out["flow"][:, 0], torch.full((4, 12, 16), 16 / w))  # flow rescaled as displacements
        assert torch.allclose(out["flow"][:, 1], torch.full((4, 12, 16), 2.0 * 12 / h))


def test_random_resized_crop_falls_back_to_the_central_crop():
    torch.manual_seed(0)  # a square image never has a width / height ratio in [3, 4]: ten misses, then the fallback
    ours = PairedRandomResizedCrop(4, scale=(1.0, 1.0), ratio=(3.0, 4.0)).window(10, 10)
    assert ours == T.RandomResizedCrop.get_params(torch.zeros(1, 10, 10), [1.0, 1.0], [3.0, 4.0]) == (3, 0, 3, 10)
    bad_args = (({"scale": (0.5, 0.1)}, "scale"), ({"scale": (0.1, 1.5)}, "scale"), ({"ratio": (0, 1)}, "ratio"))
    for bad, match in bad_args:
        with pytest.raises(ValueError, match=match):
            PairedRandomResizedCrop(4, **bad)


# ------------------------------------------------------------------------------------------- color_jitter
def test_color_jitter_is_torchvisions_on_rgb_and_leaves_depth_alone():
    s = _sample(h=12, w=12)
    s["ir"] = s["rgb"].clone()
    t = PairedColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)
    for seed in range(4):
        torch.manual_seed(seed)
        ref = T.ColorJitter(0.4, 0.4, 0.4, 0.1)(s["rgb"])
        torch.manual_seed(seed)
        out = t(s)
        assert torch.allclose(out["rgb"], ref, atol=1e-5)
        assert not torch.allclose(out["rgb"], s["rgb"], atol=1e-3)
        for k in ("depth", "ir", "flow"):
            assert torch.equal(out[k], s[k])  # not a colour image: untouched by default
    both = PairedColorJitter(brightness=0.5, hue=0.2, keys=["rgb", "ir"])(s)
    assert torch.equal(both["rgb"], both["ir"])  # the same draw for every listed modality


def test_color_jitter_one_draw_per_clip_and_needs_unit_range():
    s = _sample(clip=True)
    torch.manual_seed(1)
    ref = T.ColorJitter(brightness=0.3, saturation=0.5)(s["rgb"][0])
    torch.manual_seed(1)
    out = PairedColorJitter(brightness=0.3, saturation=0.5)(s)["rgb"]
    assert all(torch.allclose(f, ref, atol=1e-5) for f in out)
    with pytest.raises(ValueError, match=r"'rgb'.*\[0, 1\]"):
        PairedColorJitter(brightness=0.3)({"rgb": s["rgb"] * 2 - 1})
    with pytest.raises(ValueError, match="hue"):
        PairedColorJitter(hue=0.7)
    with pytest.raises(ValueError, match="brightness"):
        PairedColorJitter(brightness=(-0.5, 1.0))
    with pytest.raises(TypeError, match="keys"):
        PairedColorJitter(keys="rgb")
    with pytest.raises(KeyError, match="'rgb'"):
        PairedColorJitter(brightness=0.3)({"depth": torch.zeros(1, 4, 4)})


# ------------------------------------------------------------------------------------------- normalize
@pytest.mark.parametrize("clip", [False, True])
def test_normalize_matches_a_hand_computation_per_channel(clip):
    s = _sample(h=5, w=6, clip=clip)
    out = Normalize(mean=[0.1, 0.2, 0.3], std=[0.5, 0.25, 2.0], keys=["rgb"])(s)
    rgb = s["rgb"].numpy()
    want = np.empty_like(rgb)
    for c, (m, sd) in enumerate([(0.1, 0.5), (0.2, 0.25), (0.3, 2.0)]):
        for idx in np.ndindex(*rgb.shape[:-3], rgb.shape[-2], rgb.shape[-1]):
            lead, (i, j) = idx[:-2], idx[-2:]
            want[(*lead, c, i, j)] = (rgb[(*lead, c, i, j)] - m) / sd
    np.testing.assert_allclose(out["rgb"].numpy(), want, rtol=1e-6, atol=1e-7)
    for k in ("depth", "flow", "label"):  # not named: untouched
        assert out[k] is s[k]


def test_normalize_broadcasts_one_value_and_maps_unit_range_to_minus_one_one():
    s = _sample(h=4, w=4, clip=True)
    out = build_transform({"name": "normalize", "keys": ["rgb", "depth"], "mean": [0.5], "std": [0.5]})(s)
    assert torch.allclose(out["rgb"], s["rgb"] * 2 - 1) and torch.allclose(out["depth"], s["depth"] * 2 - 1)
    assert out["flow"] is s["flow"]  # flow is normalised only when named
    assert (out["rgb"].min() >= -1) and (out["rgb"].max() <= 1)


def test_normalize_stats_are_torchvisions_imagenet_and_kinetics_values():
    s = _sample(h=4, w=5)
    got = build_transform({"name": "normalize", "stats": "imagenet", "keys": ["rgb"]})(s)["rgb"]
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]  # torchvision's ImageNet preset
    want = torch.stack([(s["rgb"][c] - mean[c]) / std[c] for c in range(3)])
    assert torch.allclose(got, want, atol=1e-6)
    kin = Normalize(stats="kinetics400")
    assert kin.mean == pytest.approx((0.43216, 0.394666, 0.37645))
    assert kin.std == pytest.approx((0.22803, 0.22145, 0.216989))
    assert "stats='imagenet'" in repr(Normalize(stats="imagenet"))


@pytest.mark.parametrize(
    ("spec", "error", "match"),
    [
        ({"mean": [0.5], "std": [0.0]}, ValueError, r"train\[2\] \(normalize\).*std must be > 0"),
        ({"mean": [0.5], "std": [-1.0]}, ValueError, r"train\[2\] \(normalize\).*std must be > 0"),
        ({"mean": [0.1, 0.2], "std": [1, 2, 3]}, ValueError, r"train\[2\] \(normalize\).*must agree"),
        ({"mean": [0.5]}, TypeError, r"train\[2\] \(normalize\).*needs mean and std"),
        ({"mean": "0.5", "std": [1]}, TypeError, r"train\[2\] \(normalize\).*mean must be a non-empty list"),
        ({"mean": [], "std": [1]}, TypeError, r"train\[2\] \(normalize\).*mean must be a non-empty list"),
        ({"mean": [float("nan")], "std": [1]}, ValueError, r"train\[2\] \(normalize\).*finite"),
        ({"stats": "places365"}, ValueError, r"train\[2\] \(normalize\).*unknown stats 'places365'.*imagenet"),
        ({"stats": "imagenet", "mean": [0.5]}, ValueError, r"train\[2\] \(normalize\).*not both"),
        ({"mean": [0.5], "std": [0.5], "keys": "rgb"}, TypeError, r"train\[2\] \(normalize\): keys must be a list"),
        ({"mean": [0.5], "std": [0.5], "keys": []}, ValueError, r"train\[2\] \(normalize\).*keys is empty"),
    ],
)
def test_normalize_config_errors_name_the_entry(spec, error, match):
    specs = [{"name": "center_crop", "size": 4}, "hflip", {"name": "normalize", **spec}]
    with pytest.raises(error, match=match):
        build_transforms(specs, "dataset.transforms.train")


def test_normalize_errors_on_the_sample_name_the_entry_and_the_modality():
    s = _sample(h=4, w=4, clip=True)
    with pytest.raises(ValueError, match=r"Normalize\(keys=\['rgb'\].*mean has 2 values.*'rgb' has 3 channels"):
        Normalize(mean=[0.1, 0.2], std=[1.0])(s)
    with pytest.raises(ValueError, match=r"std has 3 values.*'depth' has 1 channels"):
        Normalize(mean=[0.5], std=[0.2, 0.3, 0.4], keys=["rgb", "depth"])(s)
    with pytest.raises(KeyError, match=r"Normalize\(keys=\['ir'\].*no modality 'ir'"):
        Normalize(mean=[0.5], std=[0.5], keys=["ir"])(s)
    with pytest.raises(TypeError, match=r"'label' must be a floating-point"):
        Normalize(mean=[0.5], std=[0.5], keys=["label"])(s)
    with pytest.raises(TypeError, match=r"'rgb' must be a floating-point"):
        Normalize(mean=[0.5], std=[0.5])({"rgb": torch.zeros(3, 4, 4, dtype=torch.uint8)})


# ------------------------------------------------------------------------------------------- registry
def test_registry_names_and_building():
    assert {
        "random_crop",
        "center_crop",
        "hflip",
        "resize",
        "random_resized_crop",
        "random_rotation",
        "color_jitter",
        "depth_to_jet",
        "normalize",
    } <= set(list_transforms())
    s = _sample(h=8, w=10)
    c = build_transforms([{"name": "center_crop", "size": [4, 6]}, {"name": "hflip", "p": 1.0}], "x")
    assert torch.equal(c(s)["rgb"], s["rgb"][..., 2:6, 2:8].flip(-1))
    assert torch.equal(build_transform("depth_to_jet")(s)["depth"], jet(s["depth"]))  # a bare name: no kwargs
    assert build_transforms(None)(s) is s and build_transforms([])(s) is s


@pytest.mark.parametrize(
    ("specs", "error", "match"),
    [
        (
            [{"name": "random_crop", "size": 4}, {"name": "jitter"}],
            ValueError,
            r"train\[1\]: unknown transform 'jitter'.*known:.*color_jitter",
        ),
        (["nope"], ValueError, r"train\[0\]: unknown transform 'nope'"),
        ([{"size": 4}], ValueError, r"train\[0\]: a transform entry needs a 'name'"),
        ([{"name": "random_crop", "sizes": 4}], TypeError, r"train\[0\] \(random_crop\).*sizes"),
        ([{"name": "random_crop"}], TypeError, r"train\[0\] \(random_crop\).*size"),
        ([{"name": "hflip", "p": "half"}], ValueError, r"train\[0\] \(hflip\).*p must"),
        ([{"name": "random_rotation", "degrees": -3}], ValueError, r"train\[0\] \(random_rotation\).*degrees"),
        ([{"name": "hflip", "keys": "rgb"}], TypeError, r"train\[0\] \(hflip\): keys must be a list"),
        ([{"name": "hflip", "generator": None}], TypeError, r"train\[0\] \(hflip\).*generator"),
        ([3], TypeError, r"train\[0\]: a transform is a name or a mapping"),
        ("hflip", TypeError, r"dataset.transforms.train must be a list"),
        ({"name": "hflip"}, TypeError, r"dataset.transforms.train must be a list"),
    ],
)
def test_registry_errors_name_the_entry(specs, error, match):
    with pytest.raises(error, match=match):
        build_transforms(specs, "dataset.transforms.train")


def test_register_transform_refuses_a_second_object_under_a_name():
    @register_transform("_test_scale_rgb")
    def scale(factor: float = 2.0):
        return lambda sample: {**sample, "rgb": sample["rgb"] * factor}

    assert register_transform("_test_scale_rgb")(scale) is scale  # the same object again: allowed
    with pytest.raises(ValueError, match="already registered"):
        register_transform("_test_scale_rgb")(lambda: None)
    with pytest.raises(ValueError, match="name"):
        register_transform("")
    s = _sample()
    assert torch.equal(build_transform({"name": "_test_scale_rgb", "factor": 3.0})(s)["rgb"], s["rgb"] * 3.0)


# ------------------------------------------------------------------------------------------- datasets and loaders
class _Same(torch.utils.data.Dataset):
    """n identical items: what differs between reads is the augmentation alone."""

    modalities = ("rgb",)
    num_classes = 2
    class_names = ["a", "b"]

    def __init__(self, n: int = 8) -> None:
        self.n = n
        self.image = torch.arange(40 * 40, dtype=torch.float32).reshape(1, 40, 40)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        return {"rgb": self.image, "label": torch.tensor(i % 2)}


def test_transformed_dataset_reads_anew_and_keeps_the_contract():
    ds = TransformedDataset(_Same(), PairedRandomCrop(4), spec=[{"name": "random_crop", "size": 4}])
    assert ds.modalities == ("rgb",) and ds.num_classes == 2 and ds.class_names == ["a", "b"] and len(ds) == 8
    torch.manual_seed(0)
    reads = [ds[0]["rgb"] for _ in range(5)]
    assert len({float(r[0, 0, 0]) for r in reads}) > 1  # a random transform draws at every read
    assert torch.equal(_Same()[0]["rgb"], torch.arange(1600.0).reshape(1, 40, 40))  # the source is not modified
    back = pickle.loads(pickle.dumps(ds))  # spawn-started workers receive the dataset pickled
    assert back.spec == ds.spec and back.num_classes == 2
    with pytest.raises(AttributeError):
        _ = ds.no_such_attribute
    with pytest.raises(TypeError, match="callable"):
        TransformedDataset(_Same(), 3)


def _batches(ds, num_workers, seed=7, batch_size=2):
    loader = make_loader(ds, batch_size, shuffle=True, seed=seed, num_workers=num_workers)
    return [b["rgb"].clone() for b in loader]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_augmented_batches_repeat_with_the_seed_and_differ_between_workers(num_workers):
    ds = TransformedDataset(_Same(), Compose([PairedRandomCrop(4), PairedRandomHorizontalFlip()]))
    torch.manual_seed(0)  # the run's seed (workers derive theirs from the loader's seed)
    first = _batches(ds, num_workers)
    torch.manual_seed(0)
    again = _batches(ds, num_workers)
    assert len(first) == 4 and all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], first[1])  # batches 0 and 1: another draw (with 2 workers: another worker)
    if num_workers:  # one worker per batch, alternating: distinct worker seeds give distinct windows
        per_worker = [torch.stack(first[w::2]) for w in range(2)]
        assert not torch.equal(per_worker[0], per_worker[1])
