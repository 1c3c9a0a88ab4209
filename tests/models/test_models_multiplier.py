"""Cross-stream multiplier networks: where the injection goes, gradients, connections on/off, direction.

The wiring is tested with the pure formula x * relu(gate) patched in for mmh_ext.cross_stream_inject, so these
tests do not depend on the compiled operators; one test runs the real operator when mmh_ext imports.
"""

from __future__ import annotations

import pytest
import torch
from models_testutil import check_contract, make_batch

import mmh.models.resnet as resnet_mod
from mmh.models import build_model, derive_student


def formula(x, gate):
    return x * torch.relu(gate)


@pytest.fixture
def pure_inject(monkeypatch):
    monkeypatch.setattr(resnet_mod, "cross_stream_inject", formula)


def small(**kw):
    kw = {"modalities": ["rgb", "depth"], "num_classes": 3, "width": 4, "seed": 0, **kw}
    return build_model("small_multiplier", **kw)


def capture_unit(model, path):
    """Record (args, output) of the unit at ``path``."""
    rec = {}
    handle = model.get_submodule(path).register_forward_hook(lambda mod, args, out: rec.update(args=args, out=out))
    return rec, handle


def test_injection_goes_into_the_residual_branch_only(pure_inject):
    m = small().eval()
    x = make_batch(["rgb", "depth"], batch=3, size=16)
    rgb_rec, h1 = capture_unit(m, "streams.rgb.layer2.1")
    depth_rec, h2 = capture_unit(m, "streams.depth.layer2.1")
    m(x)
    h1.remove(), h2.remove()
    xa, gate = rgb_rec["args"]
    # the gate is the depth stream's input to the same unit
    assert torch.equal(gate, depth_rec["args"][0])
    unit = m.streams["rgb"].layer2[1]
    with torch.no_grad():

        def branch(inp):
            return unit.bn2(unit.conv2(torch.relu(unit.bn1(unit.conv1(inp)))))

        expected = torch.relu(branch(xa * torch.relu(gate)) + xa)  # skip path takes x_a untouched
        tf_variant = torch.relu(branch(xa + xa * torch.relu(gate)) + xa)  # the released TF code's bug
        gated_skip = torch.relu(branch(xa * torch.relu(gate)) + xa * torch.relu(gate))
    torch.testing.assert_close(rgb_rec["out"], expected)
    assert not torch.allclose(rgb_rec["out"], tf_variant, atol=1e-4)
    assert not torch.allclose(rgb_rec["out"], gated_skip, atol=1e-4)
    # the depth unit got no gate
    assert len(depth_rec["args"]) == 1


def test_every_stage_is_connected_at_the_second_unit(pure_inject):
    m = small()
    assert m.feature_paths["injected"] == [f"streams.rgb.layer{i}.1" for i in range(1, 5)]
    recs = {}
    handles = []
    for name, mod in m.named_modules():
        if name.startswith("streams.") and name.count(".") == 3:
            handles.append(mod.register_forward_hook(lambda mod, args, out, n=name: recs.update({n: len(args)})))
    m(make_batch(["rgb", "depth"], size=16))
    for h in handles:
        h.remove()
    gated = sorted(n for n, k in recs.items() if k == 2)
    assert gated == m.feature_paths["injected"]


def test_gradients_reach_both_streams(pure_inject):
    m = small()
    per = m.forward_streams(make_batch(["rgb", "depth"], size=16))
    per["rgb"].pow(2).sum().backward()  # a loss on the RGB stream's logits only
    depth_grad = m.streams["depth"].layer1[0].conv1.weight.grad
    assert depth_grad is not None and depth_grad.abs().sum() > 0
    assert m.streams["rgb"].stem.conv[0].weight.grad.abs().sum() > 0
    off = small(connections=False)
    off.forward_streams(make_batch(["rgb", "depth"], size=16))["rgb"].pow(2).sum().backward()
    assert off.streams["depth"].layer1[0].conv1.weight.grad is None


def test_connections_off_equals_plain_streams(pure_inject):
    on, off = small().eval(), small(connections=False).eval()
    assert on.state_dict().keys() == off.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(on.state_dict().values(), off.state_dict().values(), strict=True))
    x = make_batch(["rgb", "depth"], size=16)
    maps = off.stream_maps(x)
    for s in ("rgb", "depth"):
        torch.testing.assert_close(maps[s], off.streams[s](x[s]))
    on_maps = on.stream_maps(x)
    torch.testing.assert_close(on_maps["depth"], maps["depth"])  # the gating stream is unchanged
    assert not torch.allclose(on_maps["rgb"], maps["rgb"])


def test_inverted_direction_and_stage_selection(pure_inject):
    m = small(gate_from="rgb", gate_into="depth", stages=(2, 4)).eval()
    assert m.feature_paths["injected"] == ["streams.depth.layer2.1", "streams.depth.layer4.1"]
    x = make_batch(["rgb", "depth"], size=16)
    plain = small(connections=False).eval()
    maps, ref = m.stream_maps(x), plain.stream_maps(x)
    torch.testing.assert_close(maps["rgb"], ref["rgb"])
    assert not torch.allclose(maps["depth"], ref["depth"])
    with pytest.raises(ValueError, match="gate_from='flow'"):
        small(gate_from="flow")
    with pytest.raises(ValueError, match="stages"):
        small(stages=(5,))


def test_contract_student_and_hallucination_streams(pure_inject):
    m = small(num_frames=2)
    check_contract(m, make_batch(["rgb", "depth"], frames=2))
    s = derive_student(m, ["rgb"])
    assert list(s.streams) == ["rgb"] and s.connections is False and s.config["connections"] is False
    # step 4 of the thesis: RGB + hallucination streams, both fed RGB, hallucination gates RGB
    h = build_model(
        "small_multiplier",
        modalities=["rgb"],
        num_classes=3,
        width=4,
        num_frames=2,
        streams={"rgb": "rgb", "hall": "rgb"},
        gate_from="hall",
    )
    assert h.connections and set(h.forward_streams(make_batch(["rgb"], frames=2))) == {"rgb", "hall"}
    # a hallucination stream can be initialised from a depth stream of the same shape
    same = build_model(
        "small_multiplier", modalities=["rgb", "depth"], num_classes=3, width=4, num_frames=2, in_channels={"depth": 3}
    )
    h.streams["hall"].load_state_dict(same.streams["depth"].state_dict())


def test_multiplier_resnet_temporal(pure_inject):
    m = build_model("multiplier_resnet", modalities=["rgb", "depth"], num_classes=3, arch="resnet18", seed=0)
    x = make_batch(["rgb", "depth"], batch=2, frames=2)
    logits, feats = check_contract(m, x)
    assert feats["fuse"].shape == (2, 1024, 1, 1)
    # thesis Fig. 3.2: a C_l x C_l temporal conv inside the 2nd residual unit of each stage, none after the stages
    rgb = m.streams["rgb"]
    assert rgb.temporal is None and rgb.temporal_placement == "unit"
    assert [rgb.get_submodule(f"layer{i}.1.temporal").conv.in_channels for i in range(1, 5)] == [64, 128, 256, 512]
    assert all("temporal" not in dict(rgb.get_submodule(f"layer{i}.0").named_children()) for i in range(1, 5))
    with pytest.raises(ValueError, match="different"):
        m({"rgb": x["rgb"], "depth": x["depth"][:, :1]})  # the streams' frames must align
    with pytest.raises(ValueError, match="does not match"):
        m.streams["rgb"].layer1[1](feats_like := torch.randn(2, 64, 4, 4), feats_like[:1])


def test_real_operator_matches_the_formula(monkeypatch):
    mmh_ext = pytest.importorskip("mmh_ext")
    x, g = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(mmh_ext.cross_stream_inject(x, g), formula(x, g))
    m = small().eval()
    data = make_batch(["rgb", "depth"], size=16)
    real = m(data)
    monkeypatch.setattr(resnet_mod, "cross_stream_inject", formula)
    torch.testing.assert_close(m(data), real)
