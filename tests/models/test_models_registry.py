"""Registry, build_model, derive_student and FeatureExtractor."""

from __future__ import annotations

import pytest
import torch
from models_testutil import make_batch
from torch import nn

from mmh.models import FeatureExtractor, build_model, derive_student, list_models, register_model


def test_registry_lists_builtin_models():
    names = list_models()
    for n in ("small_joint", "small_late_fusion", "mlp_joint"):
        assert n in names
    assert names == sorted(names)


def test_unknown_model_names_itself():
    with pytest.raises(ValueError, match="no_such_net"):
        build_model("no_such_net", modalities=["rgb"], num_classes=2)


@pytest.mark.parametrize(
    "bad, exc, word",
    [
        (dict(modalities="rgb", num_classes=2), TypeError, "modalities"),
        (dict(modalities=[], num_classes=2), ValueError, "modalities"),
        (dict(modalities=["rgb", "rgb"], num_classes=2), ValueError, "duplicates"),
        (dict(modalities=["rgb"], num_classes=0), ValueError, "num_classes"),
        (dict(modalities=["thermal"], num_classes=2), ValueError, "thermal"),
        (dict(modalities=["rgb"], num_classes=2, in_channels={"rgb": 0}), ValueError, "in_channels"),
        (dict(modalities=["rgb"], num_classes=2, seed="x"), TypeError, "seed"),
    ],
)
def test_build_model_rejects_bad_arguments(bad, exc, word):
    with pytest.raises(exc, match=word):
        build_model("small_joint", **bad)


def test_register_duplicate_name_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        register_model("small_joint")(lambda **kw: None)


def test_builder_must_honour_the_contract():
    @register_model("_test_bare_linear")
    def bare(*, modalities, num_classes, in_channels=None):
        return nn.Linear(2, num_classes)

    with pytest.raises(TypeError, match="modalities"):
        build_model("_test_bare_linear", modalities=["rgb"], num_classes=2)


def test_seed_gives_same_weights_and_keeps_global_rng():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = build_model("small_joint", modalities=["rgb", "depth"], num_classes=3, seed=7)
    after = torch.rand(1)
    b = build_model("small_joint", modalities=["rgb", "depth"], num_classes=3, seed=7)
    c = build_model("small_joint", modalities=["rgb", "depth"], num_classes=3, seed=8)
    assert torch.equal(before, after)  # building with a seed does not consume the global RNG
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["classifier.weight"], sc["classifier.weight"])


def test_config_rebuilds_the_model():
    m = build_model("small_joint", modalities=["rgb", "depth"], num_classes=4, num_frames=2, width=8, seed=1)
    cfg = dict(m.config)
    assert cfg["name"] == "small_joint" and cfg["width"] == 8 and cfg["num_frames"] == 2
    again = build_model(cfg.pop("name"), **cfg)
    x = make_batch(["rgb", "depth"], frames=2)
    m.eval(), again.eval()
    assert torch.equal(m(x), again(x))


def test_derive_student_drops_the_missing_branch():
    t = build_model("small_joint", modalities=["rgb", "depth", "ir"], num_classes=2, width=8, seed=0)
    s = derive_student(t, ["rgb", "ir"])
    assert s.modalities == ("rgb", "ir")
    assert set(s.stems) == {"rgb", "ir"}
    assert s.layer3[0].in_channels == 16 and t.layer3[0].in_channels == 24
    assert s.config["modalities"] == ["rgb", "ir"]
    x = make_batch(["rgb", "ir"])  # no depth key: the student must not need it
    assert s(x).shape == (2, 2)
    with pytest.raises(KeyError, match="depth"):
        t(x)
    with pytest.raises(ValueError, match="flow"):
        derive_student(t, ["flow"])
    with pytest.raises(ValueError, match="config"):
        derive_student(nn.Linear(2, 2), ["rgb"])


def test_derive_student_filters_in_channels_and_streams():
    t = build_model(
        "small_late_fusion",
        modalities=["rgb", "depth"],
        num_classes=2,
        width=8,
        shared_width=8,
        in_channels={"rgb": 3, "depth": 3},
        streams={"appearance": "rgb", "hall": "rgb", "d": "depth"},
    )
    s = derive_student(t, ["rgb"])
    assert s.config["in_channels"] == {"rgb": 3}
    assert set(s.streams) == {"appearance", "hall"}


def test_feature_extractor_records_and_removes_hooks():
    m = build_model("small_joint", modalities=["rgb", "depth"], num_classes=3, seed=0)
    x = make_batch(["rgb", "depth"])
    fx = FeatureExtractor(m, ["layer3", "layer4", "stems.depth"])
    with fx as feats:
        logits = m(x)
    assert feats["layer3"].shape == (2, 48, 8, 8)
    assert feats["stems.depth"].shape == (2, 24, 8, 8)
    assert set(feats) == {"layer3", "layer4", "stems.depth"}
    # gradients flow through recorded features
    feats["layer4"].sum().backward()
    assert m.stems["rgb"][0][0].weight.grad is not None
    # hooks removed: another forward does not overwrite
    old = feats["layer4"]
    m(make_batch(["rgb", "depth"], seed=1))
    assert feats["layer4"] is old
    assert all(len(mod._forward_hooks) == 0 for mod in m.modules())
    assert logits.shape == (2, 3)


def test_feature_extractor_errors_name_the_path():
    m = build_model("small_joint", modalities=["rgb"], num_classes=3)
    with pytest.raises(ValueError, match="layer9"):
        FeatureExtractor(m, ["layer9"])
    with FeatureExtractor(m, ["layer3"]) as feats:
        pass
    with pytest.raises(KeyError, match="produced no output"):
        feats["layer3"]
    with pytest.raises(KeyError, match="not one of the hooked"):
        feats["layer4"]


def test_feature_extractor_detach():
    m = build_model("small_joint", modalities=["rgb"], num_classes=3)
    with FeatureExtractor(m, ["layer4"], detach=True) as feats:
        m(make_batch(["rgb"]))
    assert not feats["layer4"].requires_grad
