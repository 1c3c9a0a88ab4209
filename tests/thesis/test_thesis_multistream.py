"""Modality distillation with multiplier networks: losses by hand, where the injection goes, step 3 set-up."""

from __future__ import annotations

import math

import pytest
import torch

from mmh.config import load_config, merge
from mmh.methods import StageContext, method_defaults
from mmh.methods.thesis import HallucinationStage, copy_stream, generalized_distillation, hallucination_loss
from mmh.methods.thesis.multistream import _build_step3
from mmh.models import FeatureExtractor, GatedBasicBlock, build_model

pytest.importorskip("mmh_ext")


def _net(**kw):
    return build_model(
        "small_multiplier", modalities=("rgb", "depth"), num_classes=3, num_frames=2, width=4, seed=0, **kw
    )


def _clip_batch(b: int = 4) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "rgb": torch.rand(b, 2, 3, 32, 32, generator=g),
        "depth": torch.rand(b, 2, 1, 32, 32, generator=g),
        "label": torch.arange(b) % 3,
    }


def test_hallucination_loss_by_hand_and_reductions():
    s = torch.tensor([[[[0.0, 1.0]]], [[[2.0, -1.0]]]])  # (2, 1, 1, 2)
    t = torch.zeros_like(s)
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    sq = [(sig(v) - 0.5) ** 2 for v in (0.0, 1.0, 2.0, -1.0)]
    assert hallucination_loss(s, t, "mean").item() == pytest.approx(sum(sq) / 4, rel=1e-6)
    assert hallucination_loss(s, t, "sum").item() == pytest.approx(sum(sq), rel=1e-6)
    assert hallucination_loss(s, t, "sample_sum").item() == pytest.approx(sum(sq) / 2, rel=1e-6)
    # the default is Eq. 3.3: squared L2 norm per sample, batch mean. By hand: sample 0 (σ(0)-.5)² + (σ(1)-.5)²
    # = 0 + 0.053388; sample 1 (σ(2)-.5)² + (σ(-1)-.5)² = 0.145006 + 0.053388 -> (0.053388 + 0.198394) / 2
    assert hallucination_loss(s, t).item() == pytest.approx(0.125891, abs=2e-6)
    with pytest.raises(ValueError, match="hall_reduction"):
        hallucination_loss(s, t, "max")
    with pytest.raises(ValueError, match="shape"):
        hallucination_loss(s, t[:1], "mean")


def test_generalized_distillation_by_hand():
    zs, zt, y = torch.tensor([[1.0, 0.0, -1.0]]), torch.tensor([[0.0, 2.0, 0.0]]), torch.tensor([2])
    lam, t = 0.25, 4.0

    def sm(z, temp):
        e = [math.exp(v / temp) for v in z]
        return [v / sum(e) for v in e]

    hard = -math.log(sm([1.0, 0.0, -1.0], 1.0)[2])
    pt, ps = sm([0.0, 2.0, 0.0], t), sm([1.0, 0.0, -1.0], t)
    soft = -sum(a * math.log(b) for a, b in zip(pt, ps, strict=True))
    gd = generalized_distillation(zs, zt, y, lam=lam, temperature=t)
    assert gd["hard"].item() == pytest.approx((1 - lam) * hard, rel=1e-6)
    assert gd["soft"].item() == pytest.approx(lam * soft, rel=1e-6)
    gd2 = generalized_distillation(zs, zt, y, lam=lam, temperature=t, t_squared=True)
    assert gd2["soft"].item() == pytest.approx(lam * soft * t * t, rel=1e-6)
    ps1 = sm([1.0, 0.0, -1.0], 1.0)  # student at T = 1 (student_temperature=False)
    gd3 = generalized_distillation(zs, zt, y, lam=lam, temperature=t, student_temperature=False)
    assert gd3["soft"].item() == pytest.approx(lam * -sum(a * math.log(b) for a, b in zip(pt, ps1, strict=True)))
    with pytest.raises(ValueError, match="lam"):
        generalized_distillation(zs, zt, y, lam=1.5, temperature=t)


def test_injection_goes_into_the_residual_branch_only():
    torch.manual_seed(0)
    unit = GatedBasicBlock(4, 4).eval()
    x = torch.rand(2, 4, 6, 6)
    # a gate of zeros (relu -> 0) removes the branch's input: the output is relu(F(0) + x), the skip keeps x
    out = unit(x, torch.full_like(x, -1.0))
    branch0 = unit.bn2(unit.conv2(unit.relu(unit.bn1(unit.conv1(torch.zeros_like(x))))))
    assert torch.allclose(out, torch.relu(branch0 + x), atol=1e-6)
    # a gate of ones is the plain unit
    assert torch.allclose(unit(x, torch.ones_like(x)), unit(x), atol=1e-6)


def test_gradients_reach_both_streams_through_the_connections():
    net = _net(connections=True)
    batch = _clip_batch()
    _, per = net.forward_all(batch)
    per["rgb"].sum().backward()  # the RGB head's output alone: depth is reached only through the connections
    assert net.streams["depth"].layer1[0].conv1.weight.grad.abs().sum() > 0
    assert net.streams["rgb"].layer1[0].conv1.weight.grad.abs().sum() > 0
    plain = _net(connections=False)
    _, per = plain.forward_all(batch)
    per["rgb"].sum().backward()
    assert plain.streams["depth"].layer1[0].conv1.weight.grad is None


def test_copy_stream_inflates_the_first_conv():
    teacher = _net()
    student = build_model(
        "small_multiplier",
        modalities=("rgb",),
        num_classes=3,
        num_frames=2,
        width=4,
        seed=1,
        streams={"rgb": "rgb", "hall": "rgb"},
        gate_from="hall",
        gate_into="rgb",
    )
    copy_stream(student, "hall", teacher, "depth")
    w_t = teacher.streams["depth"].stem.conv[0].weight  # (4, 2 frames x 1, 3, 3)
    w_s = student.streams["hall"].stem.conv[0].weight  # (4, 2 frames x 3, 3, 3)
    assert w_s.shape[1] == 3 * w_t.shape[1]
    assert torch.allclose(w_s.reshape(4, 2, 3, 3, 3).sum(2), w_t, atol=1e-6)  # grey RGB frame == depth frame
    assert torch.equal(student.streams["hall"].layer4[1].conv2.weight, teacher.streams["depth"].layer4[1].conv2.weight)
    assert torch.equal(student.heads["hall"].weight, teacher.heads["depth"].weight)
    with pytest.raises(ValueError):
        copy_stream(
            student,
            "hall",
            build_model("small_multiplier", modalities=("rgb", "depth"), num_classes=3, num_frames=2, width=8, seed=0),
            "depth",
        )


def _loss(**sections):
    """The registered ``loss`` defaults with ``sections`` merged in (what load_config gives)."""
    return merge(method_defaults(), sections)


def _ctx(step2, **loss):
    cfg = {
        "seed": 0,
        "model": {"name": "small_multiplier", "kwargs": {"width": 4}},
        "modalities": {"teacher": ["rgb", "depth"], "student": ["rgb"]},
        "loss": _loss(multistream=loss),
    }
    return StageContext(cfg, 3, {"rgb": 3, "depth": 1}, {"num_frames": 2}, {"step2": step2})


def _trained(net):
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.01 * torch.randn_like(p))  # "trained": differs from a fresh build
    return net


def _sm(z, temp):
    return torch.softmax(z / temp, dim=1)


def test_step3_default_teacher_is_the_frozen_depth_stream_with_values():
    torch.manual_seed(0)
    step2 = _trained(_net(connections=True)).eval()
    stage = _build_step3(_ctx(step2, alpha=0.5))
    assert isinstance(stage, HallucinationStage) and stage.teacher_mode == "depth_stream"
    net = stage.student
    assert set(net.streams) == {"depth", "hall"}
    assert (net.gate_from, net.gate_into, net.connections) == ("depth", "hall", True)  # FROM the depth network
    assert torch.equal(net.streams["hall"].layer2[1].conv1.weight, step2.streams["depth"].layer2[1].conv1.weight)
    assert torch.equal(net.streams["depth"].layer2[1].conv1.weight, step2.streams["depth"].layer2[1].conv1.weight)
    stage.train()
    assert not net.streams["depth"].training and net.streams["hall"].training and not stage.deploy.training
    batch = _clip_batch()
    before = {k: v.clone() for k, v in net.streams["depth"].state_dict().items()}
    logits, losses = stage(batch)
    # the teacher's logits are step 2's depth stream on depth (an independent forward of the step-2 net)
    z_d = step2.forward_all(batch)[1]["depth"]
    with FeatureExtractor(net, ["streams.hall.layer4.1"]) as f:
        z_h = net.forward_all(batch)[1]["hall"]
    torch.testing.assert_close(logits, z_h)
    y, lam, t, alpha = batch["label"], 0.5, 10.0, 0.5
    hard = torch.nn.functional.cross_entropy(z_h, y)
    soft = -(_sm(z_d, t) * torch.log(_sm(z_h, t))).sum(1).mean()
    torch.testing.assert_close(losses["loss_gd_hard"], (1 - alpha) * (1 - lam) * hard)
    torch.testing.assert_close(losses["loss_gd_soft"], (1 - alpha) * lam * soft)
    with FeatureExtractor(step2, ["streams.depth.layer4.1"]) as fd:
        step2(batch)
    a_d, a_h = fd["streams.depth.layer4.1"], f["streams.hall.layer4.1"]
    l_hall = ((torch.sigmoid(a_d) - torch.sigmoid(a_h)) ** 2).flatten(1).sum(1).mean()  # Eq. 3.3 per sample
    torch.testing.assert_close(losses["loss_hall"], alpha * l_hall)
    sum(losses.values()).backward()
    assert all(p.grad is None for p in net.streams["depth"].parameters())
    assert net.streams["hall"].layer1[0].conv1.weight.grad.abs().sum() > 0
    assert all(torch.equal(before[k], v) for k, v in net.streams["depth"].state_dict().items())  # eval BN
    # the stage hands on an RGB-input net: step 2's RGB stream + the trained hall stream, hall -> RGB
    dep = stage.deployable()
    assert set(dep.streams) == {"rgb", "hall"} and (dep.gate_from, dep.gate_into) == ("hall", "rgb")
    assert torch.equal(dep.streams["rgb"].layer3[0].conv1.weight, step2.streams["rgb"].layer3[0].conv1.weight)
    assert torch.equal(dep.streams["hall"].layer3[0].conv1.weight, net.streams["hall"].layer3[0].conv1.weight)
    assert "depth" not in dep.modalities
    stage.eval()
    rgb_only = {"rgb": batch["rgb"], "label": y}
    torch.testing.assert_close(stage.predict(rgb_only), dep.eval()(rgb_only))
    assert "deploy.streams.rgb.stem.conv.0.weight" not in stage.trainable_state_dict()


def test_step3_without_connections_a_grey_rgb_clip_is_hallucinated_exactly():
    # no connections: the hall stream is the depth stream with its first conv inflated, so an RGB clip whose three
    # planes equal the depth frame gives the depth stream's maps: L_hall = 0, and the soft GD term is the entropy
    # of the teacher's soft targets at T
    step2 = _trained(_net(connections=False)).eval()
    stage = _build_step3(_ctx(step2, connections=False, alpha=0.5, lam=0.5, temperature=2.0))
    stage.eval()
    batch = _clip_batch()
    batch["rgb"] = batch["depth"].expand(-1, -1, 3, -1, -1).contiguous()
    _, losses = stage(batch)
    assert losses["loss_hall"].item() == pytest.approx(0.0, abs=1e-9)
    p = _sm(step2.forward_all(batch)[1]["depth"], 2.0)
    entropy = -(p * p.log()).sum(1).mean()
    torch.testing.assert_close(losses["loss_gd_soft"], 0.25 * entropy, rtol=1e-5, atol=1e-6)


def test_step3_fused_teacher_reading_is_an_option():
    step2 = _trained(_net(connections=True))
    stage = _build_step3(_ctx(step2, alpha=0.5, teacher="fused"))
    s, t = stage.student, stage.teacher
    assert torch.equal(s.streams["hall"].layer2[1].conv1.weight, t.streams["depth"].layer2[1].conv1.weight)
    assert torch.equal(s.streams["rgb"].layer2[1].conv1.weight, t.streams["rgb"].layer2[1].conv1.weight)
    assert (s.gate_from, s.gate_into) == ("hall", "rgb")
    stage.train()
    assert not t.training and not s.streams["rgb"].training and s.streams["hall"].training
    batch = _clip_batch()
    before = {k: v.clone() for k, v in t.state_dict().items()}
    logits, losses = stage(batch)
    # GD on the averaged logits (gd_on: fused) against the whole step-2 net's (eval mode, real depth)
    z_t = t(batch)
    y = batch["label"]
    torch.testing.assert_close(losses["loss_gd_hard"], 0.25 * torch.nn.functional.cross_entropy(logits, y))
    torch.testing.assert_close(losses["loss_gd_soft"], 0.25 * -(_sm(z_t, 10.0) * _sm(logits, 10.0).log()).sum(1).mean())
    sum(losses.values()).backward()
    assert all(p.grad is None for p in t.parameters())
    assert all(p.grad is None for p in s.streams["rgb"].parameters())
    assert s.streams["hall"].layer1[0].conv1.weight.grad.abs().sum() > 0
    assert all(torch.equal(before[k], v) for k, v in t.state_dict().items())  # BN statistics untouched (eval)
    # alpha = 1: only the hallucination loss; alpha = 0: only generalized distillation
    assert set(_build_step3(_ctx(step2, alpha=1.0))(batch)[1]) == {"loss_hall"}
    assert set(_build_step3(_ctx(step2, alpha=0.0))(batch)[1]) == {"loss_gd_hard", "loss_gd_soft"}
    with pytest.raises(KeyError, match="loss.multistream.alhpa"):  # a typo is refused where configs are resolved
        load_config(None, ["method=multistream", "loss.multistream.alhpa=0.3"])
    with pytest.raises(ValueError, match="teacher"):
        _build_step3(_ctx(step2, teacher="rgb"))


def test_hoffman_stage_uses_only_the_depth_stream_and_its_losses_by_hand():
    import torch.nn.functional as F

    from mmh.methods.thesis.multistream import _build_hoffman

    step1 = _net()
    with torch.no_grad():
        for p in step1.parameters():
            p.add_(0.01 * torch.randn_like(p))
    ctx = _ctx(None)
    ctx = StageContext(
        {**ctx.cfg, "loss": _loss(hoffman={"gamma": 0.5})},
        3,
        {"rgb": 3, "depth": 1},
        {"num_frames": 2},
        {"step1": step1},
    )
    stage = _build_hoffman(ctx)
    d = stage.depth_net
    assert set(d.streams) == {"depth"}  # no RGB stream computed and thrown away
    assert all(
        torch.equal(v, step1.streams["depth"].state_dict()[k]) for k, v in d.streams["depth"].state_dict().items()
    )
    stage.eval()  # BN on running statistics: the hand computation below sees the same numbers
    batch = _clip_batch()
    _, losses = stage(batch)
    y = batch["label"]
    want_depth = F.cross_entropy(step1.eval().forward_all(batch)[1]["depth"], y)
    torch.testing.assert_close(losses["loss_ce/depth"], want_depth)
    s_fused, s_per = stage.student.forward_all(batch)
    torch.testing.assert_close(losses["loss_ce/fused"], F.cross_entropy(s_fused, y))
    torch.testing.assert_close(losses["loss_ce/rgb"], F.cross_entropy(s_per["rgb"], y))
    assert set(losses) == {"loss_ce/rgb", "loss_ce/hall", "loss_ce/fused", "loss_ce/depth", "loss_hall"}
    # γ · L_hall (Eq. 3.3, squared L2 norm per sample, batch mean) between the layer-4 maps, by hand
    with FeatureExtractor(stage.student, ["streams.hall.layer4.1"]) as fs:
        stage.student(batch)
    with FeatureExtractor(step1, ["streams.depth.layer4.1"]) as fd:
        step1(batch)
    diff = torch.sigmoid(fs["streams.hall.layer4.1"]) - torch.sigmoid(fd["streams.depth.layer4.1"])
    torch.testing.assert_close(losses["loss_hall"], 0.5 * (diff**2).flatten(1).sum(1).mean())
    assert losses["loss_hall"].item() > 0.1  # not vanishing: the RGB-fed copy differs from the depth stream


def test_step3_connections_false_drops_them_after_a_connected_step2():
    """Table 3.2 row #14: step 2 connected, step 3 "w/o connections" from the same point as row #13. On a grey RGB
    clip the unconnected hall stream reproduces the depth stream exactly (L_hall = 0); the connected one (the
    default, ``step3_connections: null`` following ``connections``) receives the depth gates and does not."""
    step2 = _trained(_net(connections=True)).eval()
    batch = _clip_batch()
    batch["rgb"] = batch["depth"].expand(-1, -1, 3, -1, -1).contiguous()
    off = _build_step3(_ctx(step2, step3_connections=False, alpha=0.5)).eval()
    on = _build_step3(_ctx(step2, alpha=0.5)).eval()
    assert not off.student.connections and not off.deployable().connections
    assert on.student.connections and on.deployable().connections
    assert off(batch)[1]["loss_hall"].item() == pytest.approx(0.0, abs=1e-9)
    assert on(batch)[1]["loss_hall"].item() > 1e-4
    # true turns them on after an unconnected step 2; a non-bool is refused, naming the key
    plain = _trained(_net(connections=False)).eval()
    assert _build_step3(_ctx(plain, connections=False, step3_connections=True)).student.connections
    with pytest.raises(TypeError, match="step3_connections"):
        _build_step3(_ctx(step2, step3_connections="no"))


def test_step3_connections_keys_steps_3_and_4_only():
    """The ablation reuses the connected step 2 of the ``multistream`` recipe: only steps 3 and 4 are keyed on it."""
    from mmh.methods import method_stages
    from mmh.runner import stage_key

    base = load_config(None, ["method=multistream", "dataset.name=synthetic_clips"])
    ablation = merge(base, {"loss": {"multistream": {"step3_connections": False}}})
    keys = {}
    for name, cfg in (("base", base), ("ablation", ablation)):
        inputs: dict[str, str] = {}
        for st in method_stages(cfg):
            inputs[st.name] = stage_key(st, cfg, inputs)
        keys[name] = inputs
    assert keys["base"]["step1"] == keys["ablation"]["step1"] and keys["base"]["step2"] == keys["ablation"]["step2"]
    assert keys["base"]["step3"] != keys["ablation"]["step3"] and keys["base"]["step4"] != keys["ablation"]["step4"]
