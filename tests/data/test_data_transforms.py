import pytest
import torch

from mmh.data.transforms import (
    Compose,
    DepthToJet,
    FrameSampler,
    PairedCenterCrop,
    PairedRandomCrop,
    PairedRandomHorizontalFlip,
    PairedResize,
    SpeckleNoise,
    jet,
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
