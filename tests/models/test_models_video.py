"""Video backbones and the identity-initialised temporal convolution."""

from __future__ import annotations

import pytest
import torch
from models_testutil import check_contract, make_batch

from mmh.models import TemporalConv, build_model, derive_student


def test_temporal_conv_is_exactly_the_identity_at_init():
    tc = TemporalConv(6)
    w = tc.conv.weight
    assert torch.equal(w[:, :, 1, 0, 0], torch.eye(6))
    assert torch.count_nonzero(w[:, :, 0]) == 0 and torch.count_nonzero(w[:, :, 2]) == 0
    assert torch.count_nonzero(tc.conv.bias) == 0
    x = torch.randn(2 * 5, 6, 3, 3)
    assert torch.equal(tc(x, 5), x)


def test_temporal_conv_mixes_neighbouring_frames_only():
    tc = TemporalConv(1)
    with torch.no_grad():
        tc.conv.weight.copy_(torch.tensor([1.0, 0.0, 0.0]).view(1, 1, 3, 1, 1))  # output t sees frame t-1
    x = torch.arange(4.0).view(4, 1, 1, 1)  # one clip of 4 frames
    assert tc(x, 4).flatten().tolist() == [0.0, 0.0, 1.0, 2.0]  # zero padding, no leak across clips
    with pytest.raises(ValueError, match="num_frames"):
        tc(torch.randn(5, 1, 1, 1), 4)
    with pytest.raises(ValueError, match="odd"):
        TemporalConv(3, kernel_size=2)


def test_resnet50_temporal_contract_and_identity():
    m = build_model("resnet50_temporal", modalities=["rgb"], num_classes=3, seed=0).eval()
    x = make_batch(["rgb"], batch=2, frames=2)
    logits, feats = check_contract(m, x, rows_per_sample=2)
    assert feats["time_pool"].shape == (2, 2048, 1, 1)
    torch.testing.assert_close(m.forward_frames(x).mean(1), logits, rtol=1e-5, atol=1e-5)
    # at init the temporal convs are the identity: the same backbone without them gives the same output
    plain = build_model("resnet50_temporal", modalities=["rgb"], num_classes=3, seed=0, temporal=False).eval()
    missing, unexpected = plain.load_state_dict(m.state_dict(), strict=False)
    assert not missing and unexpected and all(".1.temporal." in k for k in unexpected)
    assert torch.equal(plain(x), logits)


def test_resnet_temporal_uses_time_after_training_the_temporal_conv():
    m = build_model("resnet50_temporal", modalities=["rgb"], num_classes=3, arch="resnet18", seed=0).eval()
    x = make_batch(["rgb"], batch=1, frames=3)
    swapped = {"rgb": x["rgb"][:, [1, 0, 2]]}
    # identity temporal convs + mean over frames: frame order does not matter
    torch.testing.assert_close(m(x), m(swapped), rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        m.backbone.layer1[1].temporal.conv.weight[:, :, 0] += 0.05
    assert not torch.allclose(m(x), m(swapped), atol=1e-5)


def test_temporal_conv_sits_on_the_residual_branch_of_the_second_unit():
    # thesis Fig. 3.2: unit 2 of each stage computes relu(F(T(x)) + x); T a 3x1x1 conv over the frames of a clip
    m = build_model("resnet50_temporal", modalities=["rgb"], num_classes=3, arch="resnet18", seed=0).eval()
    unit = m.backbone.layer2[1]
    with torch.no_grad():
        unit.temporal.conv.weight[:, :, 0] += 0.1  # the previous frame leaks into the branch
    x = torch.randn(2 * 3, 128, 4, 4)  # 2 clips of 3 frames
    xt = x.view(2, 3, 128, 4, 4)
    prev = torch.cat([torch.zeros_like(xt[:, :1]), xt[:, :-1]], 1)  # zero padding before frame 0
    w0 = unit.temporal.conv.weight[:, :, 0, 0, 0]
    branch_in = (xt + torch.einsum("oc,btchw->btohw", w0, prev)).reshape_as(x)
    want = torch.relu(unit.bn2(unit.conv2(unit.relu(unit.bn1(unit.conv1(branch_in))))) + x)
    torch.testing.assert_close(unit(x, num_frames=3), want, rtol=1e-5, atol=1e-5)
    old = build_model(
        "resnet50_temporal", modalities=["rgb"], num_classes=3, arch="resnet18", seed=0, temporal="after_stage"
    )
    assert old.backbone.temporal is not None and "temporal" not in dict(old.backbone.layer2[1].named_children())
    with pytest.raises(ValueError, match="temporal"):
        build_model("resnet50_temporal", modalities=["rgb"], num_classes=3, arch="resnet18", temporal="middle")


def test_r2plus1d_contract_layouts_and_student():
    m = build_model("r2plus1d_18", modalities=["rgb", "depth"], num_classes=4, seed=0).eval()
    assert m.stem[0].in_channels == 4
    x = make_batch(["rgb", "depth"], batch=2, frames=4, size=16)
    logits, feats = check_contract(m, x)
    assert feats["layer4"].ndim == 5
    m2 = build_model("r2plus1d_18", modalities=["rgb", "depth"], num_classes=4, seed=0, layout="BCTHW").eval()
    xt = {k: v.transpose(1, 2) for k, v in x.items() if k != "label"}
    torch.testing.assert_close(m2(xt), logits)
    s = derive_student(m, ["rgb"])
    assert s.stem[0].in_channels == 3
    with pytest.raises(ValueError, match="'rgb' has 4 channels"):
        m2({"rgb": x["rgb"], "depth": x["depth"].transpose(1, 2)})


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [("r2plus1d_18", {}), ("resnet50_temporal", {"arch": "resnet18"}), ("multiplier_resnet", {"arch": "resnet18"})],
)
def test_clip_models_train_on_clip_data_through_the_runner(tmp_path, name, kwargs):
    """The runner passes the data's clip length (``num_frames``) to every model fed clips; the clip models of any
    length accept it (checked, otherwise unused), so a config trains them on clip data, and bad values are refused."""
    from mmh.config import load_config
    from mmh.runner import run_experiment

    a = build_model(name, modalities=["rgb", "depth"], num_classes=3, seed=0, num_frames=8, **kwargs)
    b = build_model(name, modalities=["rgb", "depth"], num_classes=3, seed=0, **kwargs)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    for bad in (0, True, 2.5):
        with pytest.raises(ValueError, match=f"num_frames .* for {name}"):
            build_model(name, modalities=["rgb"], num_classes=3, num_frames=bad, **kwargs)
    cfg = load_config(
        None,
        [
            "method=baseline",
            f"model.name={name}",
            f"model.kwargs={kwargs}",
            "dataset.split_kwargs={train: {size: 8}, test: {size: 4}}",
            "train.steps=1",
            "train.batch_size=4",
            "train.progress=false",
            f"output.root={tmp_path}",
            "output.cache=''",
        ],
    )
    out = run_experiment(cfg, run_dir=tmp_path / "run", log=lambda _m: None)
    network = out["stages"]["student"]["network"]["config"]
    assert (network["name"], network["num_frames"], out["status"]) == (name, 8, "done")
