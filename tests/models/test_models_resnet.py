"""surf_resnet18 and late_fusion (torchvision ResNets, random init)."""

from __future__ import annotations

import pytest
import torch
from models_testutil import check_contract, make_batch

from mmh.models import SEBlock, build_model, derive_student


def test_surf_resnet18_contract_and_student():
    m = build_model("surf_resnet18", modalities=["rgb", "depth", "ir"], num_classes=2, seed=0)
    assert isinstance(m.stems["rgb"].se, SEBlock)
    assert m.stems["depth"].conv1.in_channels == 1 and m.stems["rgb"].conv1.in_channels == 3
    assert m.reduce[0].in_channels == 3 * 128 and m.layer3[0].conv1.in_channels == 128
    _, feats = check_contract(m, make_batch(["rgb", "depth", "ir"], size=64))
    assert feats["layer4"].shape == (2, 512, 2, 2) and feats["layer3"].shape == (2, 256, 4, 4)
    s = derive_student(m, ["rgb"])
    assert set(s.stems) == {"rgb"} and s.reduce[0].in_channels == 128
    check_contract(s, make_batch(["rgb"], size=64))


def test_surf_resnet18_options():
    m = build_model("surf_resnet18", modalities=["rgb", "depth"], num_classes=2, se=False, reduce=False)
    assert not hasattr(m.stems["rgb"], "se")
    assert m.layer3[0].conv1.in_channels == 256 and m.layer3[0].downsample[0].in_channels == 256
    check_contract(m, make_batch(["rgb", "depth"]))


def test_late_fusion_resnet_streams():
    m = build_model("late_fusion", modalities=["rgb", "depth"], num_classes=3, seed=0).eval()
    x = make_batch(["rgb", "depth"])
    logits, _ = check_contract(m, x)
    per = m.forward_streams(x)
    torch.testing.assert_close(logits, (per["rgb"] + per["depth"]) / 2, rtol=1e-5, atol=1e-5)
    assert m.feature_paths["dad"] == []
    s = derive_student(m, ["depth"])
    assert list(s.streams) == ["depth"]
    with pytest.raises(ValueError, match="arch"):
        build_model("late_fusion", modalities=["rgb"], num_classes=3, arch="vgg")


def test_se_block_rescales_channels():
    se = SEBlock(32, reduction=8)
    x = torch.randn(2, 32, 4, 4)
    y = se(x)
    scale = y / x
    # one scale per (sample, channel), in (0, 1)
    assert torch.allclose(scale, scale[..., :1, :1].expand_as(scale), atol=1e-5)
    assert ((scale > 0) & (scale < 1)).all()
