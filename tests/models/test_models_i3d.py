"""I3D: the port's state-dict format, TF "SAME" padding, the model contract RAD/DAD rely on, students and errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from models_testutil import check_contract, make_batch

from mmh.models import FeatureExtractor, build_model, derive_student
from mmh.models.i3d import InceptionI3d, MaxPool3dSamePadding, Unit3D

# The port's constructor (piergiaj/pytorch-i3d, pytorch_i3d.py), written out by hand: the convolution units before
# the Inception blocks as (name, in, out, kernel), and each Inception block as (name, in, [b0, b1a, b1b, b2a, b2b,
# b3b]) with the port's in-channel sums.
PORT_UNITS = [("Conv3d_1a_7x7", None, 64, 7), ("Conv3d_2b_1x1", 64, 64, 1), ("Conv3d_2c_3x3", 64, 192, 3)]
PORT_MIXED = [
    ("Mixed_3b", 192, [64, 96, 128, 16, 32, 32]),
    ("Mixed_3c", 256, [128, 128, 192, 32, 96, 64]),
    ("Mixed_4b", 128 + 192 + 96 + 64, [192, 96, 208, 16, 48, 64]),
    ("Mixed_4c", 192 + 208 + 48 + 64, [160, 112, 224, 24, 64, 64]),
    ("Mixed_4d", 160 + 224 + 64 + 64, [128, 128, 256, 24, 64, 64]),
    ("Mixed_4e", 128 + 256 + 64 + 64, [112, 144, 288, 32, 64, 64]),
    ("Mixed_4f", 112 + 288 + 64 + 64, [256, 160, 320, 32, 128, 128]),
    ("Mixed_5b", 256 + 320 + 128 + 128, [256, 160, 320, 32, 128, 128]),
    ("Mixed_5c", 256 + 320 + 128 + 128, [384, 192, 384, 48, 128, 128]),
]
BN_KEYS = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]


def port_units(in_channels):
    """(module prefix, in, out, kernel) of every Unit3D of the port's backbone, in the port's order."""
    units = [(n, in_channels if cin is None else cin, cout, k) for n, cin, cout, k in PORT_UNITS]
    for name, cin, (c0, c1a, c1b, c2a, c2b, c3b) in PORT_MIXED:
        branches = [("b0", cin, c0, 1), ("b1a", cin, c1a, 1), ("b1b", c1a, c1b, 3)]
        branches += [("b2a", cin, c2a, 1), ("b2b", c2a, c2b, 3), ("b3b", cin, c3b, 1)]
        units += [(f"{name}.{b}", i, o, k) for b, i, o, k in branches]
    return units


def port_state_dict_shapes(in_channels):
    """The port's backbone state dict (minus logits.conv3d.*): key -> shape, in the port's order."""
    out = {}
    for prefix, cin, cout, k in port_units(in_channels):
        out[f"{prefix}.conv3d.weight"] = (cout, cin, k, k, k)
        for b in BN_KEYS:
            out[f"{prefix}.bn.{b}"] = () if b == "num_batches_tracked" else (cout,)
    return out


def clip(b=2, t=8, c=3, size=32, seed=0):
    return torch.randn(b, c, t, size, size, generator=torch.Generator().manual_seed(seed))


def randomise_bn(module, seed=0):
    """Non-trivial BatchNorm statistics and affine parameters, so eval-mode comparisons test them."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)


@pytest.mark.parametrize("in_channels", [3, 2, 1])
def test_backbone_state_dict_is_the_ports_minus_logits(in_channels):
    sd = InceptionI3d(in_channels).state_dict()
    want = port_state_dict_shapes(in_channels)
    assert list(sd) == list(want)  # same keys, same order
    assert {k: tuple(v.shape) for k, v in sd.items()} == want
    assert sd["Conv3d_1a_7x7.conv3d.weight"].shape[1] == in_channels
    assert "Mixed_5c.b3b.bn.running_var" in sd and not any(k.startswith("logits.") for k in sd)


def test_parameter_count_matches_the_ports():
    # count from the port's code: conv weights (no bias) + BN weight and bias per unit, plus the 400-class logits
    # Unit3D (1x1x1 conv 1024 -> 400 with bias, no BN)
    by_hand = sum(cin * cout * k**3 + 2 * cout for _, cin, cout, k in port_units(3)) + 1024 * 400 + 400
    assert by_hand == 12_697_264  # the port's InceptionI3d(num_classes=400) has 12.7 M parameters
    logits = Unit3D(1024, 400, 1, activation=None, use_batch_norm=False, use_bias=True)
    ours = sum(p.numel() for p in InceptionI3d(3).parameters()) + sum(p.numel() for p in logits.parameters())
    assert ours == by_hand


def test_a_port_checkpoint_loads_strictly_and_old_files_without_num_batches_tracked_too():
    src = InceptionI3d(3)
    randomise_bn(src, seed=1)
    # a port file as saved by PyTorch 0.3: a plain dict, no num_batches_tracked, with the classifier
    port = {k: v.clone() for k, v in src.state_dict().items() if not k.endswith("num_batches_tracked")}
    port["logits.conv3d.weight"] = torch.zeros(400, 1024, 1, 1, 1)
    port["logits.conv3d.bias"] = torch.zeros(400)
    dst = InceptionI3d(3)
    with pytest.raises(RuntimeError, match="logits.conv3d"):
        dst.load_state_dict(port, strict=True)
    dst.load_state_dict({k: v for k, v in port.items() if not k.startswith("logits.")}, strict=True)
    for k, v in src.state_dict().items():
        if not k.endswith("num_batches_tracked"):
            assert torch.equal(dst.state_dict()[k], v), k


def port_pad(size, kernel, stride):
    """The port's compute_pad: the total "SAME" padding, split front = total // 2."""
    total = max(kernel - stride, 0) if size % stride == 0 else max(kernel - size % stride, 0)
    return total // 2, total - total // 2


@pytest.mark.parametrize(
    ("kernel", "stride", "size"),
    [((7, 7, 7), (2, 2, 2), (5, 9, 11)), ((7, 7, 7), (2, 2, 2), (8, 10, 3)), ((3, 3, 3), (1, 1, 1), (4, 5, 6))],
)
def test_unit3d_same_padding_against_pad_and_conv_by_hand(kernel, stride, size):
    torch.manual_seed(0)
    unit = Unit3D(2, 4, kernel, stride)
    randomise_bn(unit)
    unit.eval()
    x = torch.randn(1, 2, *size)
    (tf, tb), (hf, hb), (wf, wb) = (port_pad(s, k, st) for s, k, st in zip(size, kernel, stride, strict=True))
    bn = unit.bn
    got = unit(x)
    # TF "SAME": ceil(size / stride) outputs
    assert got.shape[2:] == tuple(math.ceil(s / st) for s, st in zip(size, stride, strict=True))
    want = F.relu(
        F.conv3d(F.pad(x, (wf, wb, hf, hb, tf, tb)), unit.conv3d.weight, stride=stride)
        .sub(bn.running_mean.view(1, -1, 1, 1, 1))
        .div(torch.sqrt(bn.running_var.view(1, -1, 1, 1, 1) + 1e-3))
        .mul(bn.weight.view(1, -1, 1, 1, 1))
        .add(bn.bias.view(1, -1, 1, 1, 1))
    )
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert bn.eps == 1e-3 and bn.momentum == 0.01 and unit.conv3d.bias is None


def test_maxpool_same_padding_pads_with_zeros_like_the_port():
    pool = MaxPool3dSamePadding((3, 3, 3), (2, 2, 2))
    x = -torch.rand(1, 2, 5, 7, 6) - 0.1  # negative: the zero padding shows at the borders
    (tf, tb), (hf, hb), (wf, wb) = (port_pad(s, 3, 2) for s in (5, 7, 6))
    want = F.max_pool3d(F.pad(x, (wf, wb, hf, hb, tf, tb)), 3, 2)
    got = pool(x)
    assert torch.equal(got, want)
    assert got.shape[2:] == (3, 4, 3) and (got[:, :, 0] == 0).all()  # the front frame pad is 1: zeros win


@pytest.mark.parametrize(("t", "h", "w"), [(17, 65, 40), (8, 32, 33)])
def test_feature_map_size_follows_the_total_stride(t, h, w):
    # strides: Conv3d_1a 2x2x2, MaxPool3d_2a and 3a 1x2x2, MaxPool3d_4a 2x2x2, MaxPool3d_5a 2x2x2; each "SAME" layer
    # gives ceil(size / stride)
    net = InceptionI3d(1).eval()
    sizes = [t, h, w]
    for strides in [(2, 2, 2), (1, 2, 2), (1, 2, 2), (2, 2, 2), (2, 2, 2)]:
        sizes = [math.ceil(s / st) for s, st in zip(sizes, strides, strict=True)]
    with torch.no_grad():
        x = torch.randn(1, 1, t, h, w)
        assert net.features(x).shape == (1, 1024, *sizes)
        assert net(x).shape == (1, 1024, *sizes[1:])


def calibrate_bn(model, batch):
    """Running statistics of one batch (momentum 1), so that eval-mode activations are O(1) rather than shrinking
    layer by layer with the initial statistics (0, 1) — a comparison at atol 1e-5 then means something."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm3d)]
    model.train()
    for bn in bns:
        bn.momentum = 1.0
    with torch.no_grad():
        model(batch)
    for bn in bns:
        bn.momentum = 0.01
    return model.eval()


@pytest.fixture(scope="module")
def two_stream():
    m = build_model("i3d", modalities=["rgb", "depth"], num_classes=5, seed=0)
    return calibrate_bn(m, make_batch(["rgb", "depth"], batch=4, frames=16, size=32, seed=9))


def test_i3d_contract_streams_and_features(two_stream):
    m = two_stream.eval()
    assert m.streams["rgb"].Conv3d_1a_7x7.conv3d.in_channels == 3
    assert m.streams["depth"].Conv3d_1a_7x7.conv3d.in_channels == 1  # the paper's depth stream
    assert m.feature_paths["penultimate"] == "fuse" and m.feature_paths["dad"] == ["fuse"]
    x = make_batch(["rgb", "depth"], batch=2, frames=16, size=32)
    with FeatureExtractor(m, ["streams.rgb.Mixed_5c", "streams.depth", "streams.rgb"]) as inner:
        logits, feats = check_contract(m, x)
    assert feats["fuse"].shape == (2, 2048, 1, 1)
    # each stream's map is its Mixed_5c map averaged over time; the fused map is their concatenation
    five = inner["streams.rgb.Mixed_5c"]
    assert five.shape == (2, 1024, 2, 1, 1) and (five[:, :, 0] - five[:, :, 1]).abs().max() > 0.1
    torch.testing.assert_close(inner["streams.rgb"], five.mean(2))
    assert torch.equal(feats["fuse"], torch.cat([inner["streams.rgb"], inner["streams.depth"]], 1))
    # the rgb stream is the backbone applied to the (B, C, T, H, W) clip
    torch.testing.assert_close(inner["streams.rgb"], m.streams["rgb"](x["rgb"].transpose(1, 2)))
    per = m.forward_streams(x)
    torch.testing.assert_close((per["rgb"] + per["depth"]) / 2, logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(per["rgb"], m.heads["rgb"](inner["streams.rgb"].mean((2, 3))), rtol=1e-5, atol=1e-5)
    # the torchvision layout gives the same logits
    bcthw = build_model("i3d", modalities=["rgb", "depth"], num_classes=5, layout="BCTHW").eval()
    bcthw.load_state_dict(m.state_dict())
    xt = {k: v.transpose(1, 2) for k, v in x.items() if k != "label"}
    torch.testing.assert_close(bcthw(xt), logits)


def test_dropout_drops_whole_channels_before_the_fused_map_so_the_contract_holds_in_training(two_stream):
    m = two_stream
    x = make_batch(["rgb", "depth"], batch=2, frames=8, size=48)
    m.eval()
    with torch.no_grad(), FeatureExtractor(m, ["fuse"]) as ref:
        m(x)
    m.train()
    m.streams.eval()  # batch norm with running statistics: only the dropout differs from eval
    torch.manual_seed(3)
    with torch.no_grad(), FeatureExtractor(m, ["fuse"]) as tr:
        logits = m(x)
    fused, clean = tr["fuse"], ref["fuse"]
    assert fused.shape == clean.shape == (2, 2048, 2, 2)
    kept = (fused != 0).flatten(2).any(2)  # (B, C): a channel is dropped in every position or in none
    torch.testing.assert_close(fused, clean * 2 * kept[..., None, None])  # p = 0.5: kept channels scaled by 2
    assert 0.3 < kept.float().mean() < 0.7
    torch.testing.assert_close(m.classifier(fused.mean((2, 3))), logits, rtol=1e-5, atol=1e-5)
    m.eval()
    no_drop = build_model("i3d", modalities=["rgb"], num_classes=5, dropout=0.0, seed=0).train()
    no_drop.streams.eval()
    with torch.no_grad():
        assert torch.equal(no_drop(x), no_drop.eval()(x))


def test_derive_student_keeps_the_rgb_streams_names(two_stream):
    s = derive_student(two_stream, ["rgb"])
    assert list(s.streams) == ["rgb"] and s.config["modalities"] == ["rgb"]
    teacher_rgb = {k: v for k, v in two_stream.state_dict().items() if k.startswith(("streams.rgb.", "heads.rgb."))}
    assert list(s.state_dict()) == list(teacher_rgb)
    s.load_state_dict(teacher_rgb, strict=True)
    check_contract(s.eval(), make_batch(["rgb"], batch=2, frames=8, size=32))
    named = build_model(
        "i3d", modalities=["rgb", "depth"], num_classes=5, streams={"video": "rgb", "hall": "rgb", "d": "depth"}
    )
    assert list(derive_student(named, ["rgb"]).streams) == ["video", "hall"]
    # the runner passes the data's clip length; the student keeps it
    clips16 = build_model("i3d", modalities=["rgb", "depth"], num_classes=5, num_frames=16)
    assert derive_student(clips16, ["rgb"]).config["num_frames"] == 16


def test_one_backward_step_gives_finite_gradients_to_both_streams():
    m = build_model("i3d", modalities=["rgb", "depth"], num_classes=3, seed=1).train()
    x = make_batch(["rgb", "depth"], batch=2, frames=8, size=32)
    F.cross_entropy(m(x), torch.tensor([0, 2])).backward()
    for s in ("rgb", "depth"):
        first = m.streams[s].Conv3d_1a_7x7.conv3d.weight.grad
        last = m.streams[s].Mixed_5c.b3b.conv3d.weight.grad
        assert first is not None and last is not None and m.heads[s].weight.grad is not None
        assert torch.isfinite(first).all() and first.abs().sum() > 0 and last.abs().sum() > 0


def test_clear_errors_for_inputs_and_options(two_stream):
    m = two_stream
    good = make_batch(["rgb", "depth"], batch=1, frames=8, size=32)
    with pytest.raises(ValueError, match=r"'rgb'.*clips.*not single images"):
        m({"rgb": good["rgb"][:, 0], "depth": good["depth"]})
    with pytest.raises(ValueError, match=r"'depth'.*T=4 frames.*at least T=8 frames"):
        m({"rgb": good["rgb"], "depth": good["depth"][:, :4]})
    with pytest.raises(ValueError, match=r"'rgb'.*16x32 pixels.*H, W >= 32"):
        m({"rgb": good["rgb"][..., :16, :], "depth": good["depth"]})
    with pytest.raises(ValueError, match=r"'depth' has 3 channels"):
        m({"rgb": good["rgb"], "depth": good["rgb"]})
    with pytest.raises(KeyError, match="'depth' is missing"):
        m({"rgb": good["rgb"]})
    with pytest.raises(ValueError, match=r"I3D input 'x' must be a 5-D clip"):
        m.streams["rgb"](torch.randn(1, 3, 32, 32))
    net = InceptionI3d(1).train()
    with pytest.raises(ValueError, match=r"one clip of T=8 frames of 32x32.*batch of >= 2"):
        net(clip(b=1, c=1))
    net(clip(b=1, t=9, c=1))  # a 2x1x1 map trains
    net.eval()(clip(b=1, c=1))  # one clip evaluates
    with pytest.raises(ValueError, match="dropout"):
        build_model("i3d", modalities=["rgb"], num_classes=3, dropout=1.0)
    with pytest.raises(ValueError, match=r"num_frames.*>= 8"):
        build_model("i3d", modalities=["rgb"], num_classes=3, num_frames=4)
    with pytest.raises(ValueError, match="layout"):
        build_model("i3d", modalities=["rgb"], num_classes=3, layout="TCHW")
    with pytest.raises(ValueError, match="in_channels"):
        InceptionI3d(0)
