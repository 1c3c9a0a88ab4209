"""The CPU-sized models: small_joint, small_late_fusion, mlp_joint."""

from __future__ import annotations

import pytest
import torch
from models_testutil import check_contract, make_batch

from mmh.models import build_model, derive_student
from mmh.train.checkpoint import load_model, save_model


@pytest.mark.parametrize("name", ["small_joint", "small_late_fusion"])
@pytest.mark.parametrize("frames", [None, 4])
def test_small_models_contract(name, frames):
    m = build_model(name, modalities=["rgb", "depth"], num_classes=3, num_frames=frames or 1, seed=0)
    batch = make_batch(["rgb", "depth"], batch=3, frames=frames)
    logits, feats = check_contract(m, batch)
    assert feats[m.feature_paths["penultimate"]].shape[-2:] == (8, 8)
    s = derive_student(m, ["rgb"])
    check_contract(s, make_batch(["rgb"], batch=3, frames=frames))


def test_clip_time_is_folded_into_channels():
    m = build_model("small_joint", modalities=["rgb"], num_classes=3, num_frames=4, seed=0).eval()
    x = make_batch(["rgb"], frames=4)
    y = m(x)
    assert m.stems["rgb"][0][0].in_channels == 12
    # permuting the frames changes the output (time order is seen by the first conv)
    y2 = m({"rgb": x["rgb"].flip(1)})
    assert not torch.allclose(y, y2)


def test_wrong_inputs_raise_clear_errors():
    m = build_model("small_joint", modalities=["rgb", "depth"], num_classes=3, num_frames=4)
    good = make_batch(["rgb", "depth"], frames=4)
    with pytest.raises(KeyError, match="depth"):
        m({"rgb": good["rgb"]})
    with pytest.raises(ValueError, match="num_frames=5"):
        m(make_batch(["rgb", "depth"], frames=5))
    with pytest.raises(ValueError, match="'depth' has 3 channels"):
        m({"rgb": good["rgb"], "depth": good["rgb"]})
    with pytest.raises(TypeError, match="'rgb' must be a floating-point"):
        m({"rgb": good["rgb"].long(), "depth": good["depth"]})
    with pytest.raises(ValueError, match="'rgb' is an empty batch"):
        m({"rgb": good["rgb"][:0], "depth": good["depth"][:0]})
    with pytest.raises(ValueError, match="'rgb' must have shape"):
        m({"rgb": good["rgb"][0], "depth": good["depth"]})
    with pytest.raises(TypeError, match="mapping"):
        m(good["rgb"])
    with pytest.raises(ValueError, match="spatial sizes"):
        m({"rgb": good["rgb"], "depth": torch.randn(2, 4, 1, 64, 64)})
    with pytest.raises(ValueError, match="num_frames"):
        build_model("small_joint", modalities=["rgb"], num_classes=3, num_frames=0)


def test_extra_keys_ignored_and_inputs_not_modified():
    m = build_model("small_joint", modalities=["rgb"], num_classes=3, seed=0).eval()
    x = make_batch(["rgb", "depth"])
    before = x["rgb"].clone()
    torch.testing.assert_close(m(x), m({"rgb": x["rgb"]}))
    assert torch.equal(before, x["rgb"])


def test_late_fusion_averages_stream_logits():
    m = build_model("small_late_fusion", modalities=["rgb", "depth"], num_classes=4, seed=0).eval()
    x = make_batch(["rgb", "depth"])
    logits, per = m.forward_all(x)
    assert set(per) == {"rgb", "depth"}
    torch.testing.assert_close(logits, (per["rgb"] + per["depth"]) / 2, rtol=1e-5, atol=1e-6)
    # the averaged classifier is differentiable into every head
    m.classifier.weight.sum().backward()
    assert m.heads["rgb"].weight.grad is not None and m.heads["depth"].weight.grad is not None
    # classifier weights are not double-registered in the state dict
    assert not any(k.startswith("classifier.") for k in m.state_dict())


def test_late_fusion_two_streams_on_one_modality():
    m = build_model(
        "small_late_fusion", modalities=["rgb"], num_classes=2, seed=0, streams={"rgb": "rgb", "hall": "rgb"}
    )
    per = m.forward_streams(make_batch(["rgb"]))
    assert set(per) == {"rgb", "hall"} and not torch.allclose(per["rgb"], per["hall"])
    with pytest.raises(ValueError, match="depth"):
        build_model("small_late_fusion", modalities=["rgb"], num_classes=2, streams={"d": "depth"})


def test_bottleneck_variant():
    m = build_model("small_joint", modalities=["depth"], num_classes=5, bottleneck=16, seed=0)
    assert m.feature_paths["penultimate"] == "bottleneck"
    _, feats = check_contract(m, make_batch(["depth"], batch=3))
    assert feats["bottleneck"].shape == (3, 16, 1, 1)


def test_mlp_joint_on_vector_views():
    views = {"fou": 76, "kar": 64, "mor": 6}
    m = build_model("mlp_joint", modalities=list(views), num_classes=10, in_channels=views, seed=0)
    g = torch.Generator().manual_seed(0)
    x = {k: torch.randn(5, d, generator=g) for k, d in views.items()}
    x["label"] = torch.zeros(5, dtype=torch.long)
    _, feats = check_contract(m, x)
    assert feats["layer4"].shape == (5, 64, 1, 1)
    s = derive_student(m, ["kar"])
    assert s(x).shape == (5, 10)
    with pytest.raises(ValueError, match="in_channels has no entry for modality 'fou'"):
        build_model("mlp_joint", modalities=["fou"], num_classes=10)
    with pytest.raises(ValueError, match=r"'kar' must have shape \(B, 64\)"):
        m({**x, "kar": torch.randn(5, 63)})


def test_small_joint_learns_a_toy_task():
    """A few Adam steps on a separable toy task lower the loss clearly (the model can learn)."""
    torch.manual_seed(0)
    m = build_model("small_joint", modalities=["rgb", "depth"], num_classes=2, width=8, shared_width=8, seed=0)
    x = make_batch(["rgb", "depth"], batch=16, size=16)
    y = torch.arange(16) % 2
    x["depth"] = x["depth"] + 2.0 * y.view(-1, 1, 1, 1).float()
    opt = torch.optim.Adam(m.parameters(), 1e-2)
    first = None
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(m(x), y)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.3 * first


def test_late_fusion_copies_and_saves(tmp_path):
    import copy

    m = build_model(
        "small_late_fusion", modalities=["rgb", "depth"], num_classes=3, width=4, shared_width=4, seed=0
    ).eval()
    x = make_batch(["rgb", "depth"])
    c = copy.deepcopy(m)
    with torch.no_grad():
        c.heads["rgb"].bias.add_(1.0)
    # the copy's averaged classifier follows the copy's heads, not the original's
    torch.testing.assert_close(c.classifier.bias, m.classifier.bias + 0.5)
    torch.testing.assert_close(c(x), m(x) + 0.5)
    # the artifact (config + weights; the copy's weights differ from its seed's), read back without unpickling
    save_model(c, tmp_path / "c.pt")
    loaded = load_model(tmp_path / "c.pt").eval()
    torch.testing.assert_close(loaded(x), m(x) + 0.5)
