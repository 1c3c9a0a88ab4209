"""ADMD pieces: bottleneck head and the time-aware discriminator."""

from __future__ import annotations

import pytest
import torch

from mmh.models import BottleneckHead, FrameDiscriminator


def test_bottleneck_is_pool_then_1x1_conv():
    head = BottleneckHead(8, 4)
    x = torch.randn(3, 8, 5, 5)
    y = head(x)
    assert y.shape == (3, 4, 1, 1)
    expected = x.mean((2, 3)) @ head.conv.weight.view(4, 8).T + head.conv.bias
    torch.testing.assert_close(y.flatten(1), expected)


def test_discriminator_layout_and_frame_one_hot():
    torch.manual_seed(0)
    d = FrameDiscriminator(feature_dim=6, num_classes=3, num_frames=5, hidden=(7,))
    assert d.fake_index == 3
    assert d.net[0].in_features == 6 + 5 and d.net[-1].out_features == 4
    f = torch.randn(2, 6)
    idx = torch.tensor([0, 4])
    out = d(f, idx)
    onehot = torch.zeros(2, 5)
    onehot[0, 0] = onehot[1, 4] = 1
    torch.testing.assert_close(out, d.net(torch.cat([f, onehot], 1)))
    # the frame index changes the output; (B, D, 1, 1) bottleneck maps are accepted
    assert not torch.allclose(d(f, torch.tensor([1, 4])), out)
    torch.testing.assert_close(d(f.view(2, 6, 1, 1), idx), out)


def test_discriminator_errors():
    d = FrameDiscriminator(feature_dim=4, num_classes=2, num_frames=3, hidden=(5,))
    f = torch.randn(2, 4)
    with pytest.raises(ValueError, match="frame_index values"):
        d(f, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="frame_index is required"):
        d(f)
    with pytest.raises(ValueError, match=r"features must have shape \(B, 4\)"):
        d(torch.randn(2, 5), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="frame_index must be an integer"):
        d(f, torch.tensor([0.0, 1.0]))
    still = FrameDiscriminator(feature_dim=4, num_classes=2, hidden=())
    assert still(f).shape == (2, 3)
    with pytest.raises(ValueError, match="num_frames=0"):
        still(f, torch.tensor([0, 1]))
