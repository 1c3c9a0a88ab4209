"""Each method's loss on a tiny case equals an independent computation; teacher frozen; gradients reach the student."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from mmh.config import load_config
from mmh.methods import StageContext, get_method, kd_loss, list_methods, method_stages
from mmh.models import FeatureExtractor

mmh_ext = pytest.importorskip("mmh_ext")

K = 3


def _ctx(method: str, *overrides: str, inputs=None) -> tuple[dict, StageContext]:
    cfg = load_config(None, [f"method={method}", "model.kwargs={width: 8, shared_width: 12}", *overrides])
    return cfg, StageContext(cfg, K, {"rgb": 3, "depth": 1}, {}, dict(inputs or {}))


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(0)
    return {
        "rgb": torch.randn(6, 3, 16, 16, generator=g),
        "depth": torch.randn(6, 1, 16, 16, generator=g),
        "label": torch.tensor([0, 1, 2, 0, 1, 2]),
    }


@pytest.fixture(scope="module")
def teacher(batch):
    cfg, ctx = _ctx("teacher")
    stage = method_stages(cfg)[0].build(ctx)
    opt = torch.optim.SGD(stage.parameters(), lr=0.1)
    for _ in range(3):  # a teacher that is not at its initialisation
        loss = sum(stage(batch)[1].values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return stage.deployable().eval()


def _student_stage(method: str, teacher, *overrides: str):
    cfg, ctx = _ctx(method, *overrides, inputs={"teacher": copy.deepcopy(teacher)})
    return method_stages(cfg)[-1].build(ctx), cfg


def _features(net, batch, paths):
    with FeatureExtractor(net, paths) as f:
        logits = net(batch)
    return logits, {p: f[p] for p in paths}


def test_registry_has_the_methods():
    for name in (
        "teacher",
        "baseline",
        "kd",
        "rad",
        "rad_attention",
        "rad_self",
        "rad_noweight",
        "rad_global",
        "dad",
        "rad_dad",
        "mars",
        "mers",
    ):
        assert name in list_methods()
    with pytest.raises(KeyError, match="nope"):
        get_method("nope")


def test_supervised_ce(batch):
    cfg, ctx = _ctx("baseline")
    stage = method_stages(cfg)[0].build(ctx)
    logits, losses = stage(batch)
    assert stage.deployable().modalities == ("rgb",)
    assert torch.allclose(losses["loss_ce"], F.cross_entropy(logits, batch["label"]))


def test_kd_matches_hand_formula(batch, teacher):
    stage, cfg = _student_stage("kd", teacher, "loss.kd.temperature=3", "loss.kd.weight=0.5")
    s_logits, losses = stage(batch)
    t_logits = teacher(batch)
    T = 3.0
    ps, pt = torch.softmax(s_logits / T, 1), torch.softmax(t_logits / T, 1)
    hand = 0.5 * T * T * (pt * (pt.log() - ps.log())).sum(1).mean()
    assert torch.allclose(losses["loss_kd"], hand, atol=1e-6)
    assert torch.allclose(losses["loss_ce"], F.cross_entropy(s_logits, batch["label"]))


def test_rad_global_equals_kd(batch, teacher):
    """One global region, no weighting: RAD is logit KD at T (the classifier is linear, GAP then FC = logits)."""
    stage, _ = _student_stage("rad_global", teacher, "loss.rad.alpha=0.7", "loss.rad.temperature=2")
    s_logits, losses = stage(batch)
    hand = 0.7 * kd_loss(s_logits, teacher(batch), 2.0)
    assert torch.allclose(losses["loss_rad"], hand, atol=1e-5)


@pytest.mark.parametrize("method, overrides", [("rad_attention", ()), ("rad", ("loss.rad.weighting=attention",))])
def test_rad_matches_reference_and_trains_student(batch, teacher, method, overrides):
    stage, _ = _student_stage(method, teacher, "loss.rad.alpha=0.4", *overrides)
    assert sum(p.numel() for p in stage.rad.parameters()) == 2 * 21 * 21  # q, k: the paper's 882
    student = stage.student
    _, losses = stage(batch)
    p_s, p_t = student.feature_paths["penultimate"], teacher.feature_paths["penultimate"]
    _, fs = _features(student, batch, [p_s])
    with torch.no_grad():
        _, ft = _features(teacher, batch, [p_t])
    r = mmh_ext.reference.rad_loss(
        fs[p_s],
        ft[p_t],
        student.classifier.weight,
        student.classifier.bias,
        teacher.classifier.weight,
        teacher.classifier.bias,
        reduction="region",
    )
    hand = 0.4 * mmh_ext.reference.rad_weighting(r, "attention", stage.rad.q.weight, stage.rad.k.weight)
    assert torch.allclose(losses["loss_rad"], hand, atol=1e-5)
    # the trap of the reference code: RAD must send gradients to the student (and to q, k); never to the teacher
    stage.zero_grad()
    losses["loss_rad"].backward()
    assert student.classifier.weight.grad.abs().sum() > 0
    first = next(p for n, p in student.named_parameters() if n.startswith("stems"))
    assert first.grad is not None and first.grad.abs().sum() > 0
    assert stage.rad.q.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in stage.teacher.parameters())
    # the region weights of the step are reported (not as a loss term)
    diag = stage.diagnostics()
    w = stage.rad.region_weights(r.float()).detach()
    assert diag["rad_w_max"] == pytest.approx(float(w.max()), abs=1e-5)
    assert diag["rad_w_last"] == pytest.approx(float(w[-1]), abs=1e-5)
    want_eff = float(torch.exp(-(w.double() * w.double().log()).sum()))  # exp(entropy) of the weights
    assert diag["rad_w_eff"] == pytest.approx(min(want_eff, 21.0), rel=1e-5)


@pytest.mark.parametrize(
    "method, overrides, weighting",
    [
        ("rad", (), "none"),  # the library default (see the README)
        ("rad", ("loss.rad.weighting=self",), "self"),  # rad follows the config
        ("rad_self", (), "self"),
        ("rad_noweight", ("loss.rad.weighting=attention",), "none"),  # an ablation variant overrides the config
    ],
)
def test_rad_weighting_follows_config_or_variant(teacher, method, overrides, weighting):
    stage, _ = _student_stage(method, teacher, *overrides)
    assert stage.rad.weighting == weighting
    assert sum(p.numel() for p in stage.rad.parameters()) == 0


def test_rad_noweight_is_region_mean(batch, teacher):
    stage, _ = _student_stage("rad_noweight", teacher, "loss.rad.alpha=1")
    _, losses = stage(batch)
    student = stage.student
    p = student.feature_paths["penultimate"]
    _, fs = _features(student, batch, [p])
    with torch.no_grad():
        _, ft = _features(teacher, batch, [teacher.feature_paths["penultimate"]])
    r = mmh_ext.reference.rad_loss(
        fs[p],
        ft[teacher.feature_paths["penultimate"]],
        student.classifier.weight,
        student.classifier.bias,
        teacher.classifier.weight,
        teacher.classifier.bias,
    )
    assert torch.allclose(losses["loss_rad"], r, atol=1e-5)


@pytest.mark.parametrize("form", ["paper", "sp"])
def test_dad_matches_hand_computation(batch, teacher, form):
    stage, _ = _student_stage("dad", teacher, "loss.dad.beta=2", f"loss.dad.form={form}")
    _, losses = stage(batch)
    layers = stage.student.feature_paths["dad"]
    assert len(layers) == 2
    _, fs = _features(stage.student, batch, layers)
    with torch.no_grad():
        _, ft = _features(teacher, batch, layers)
    hand = 0.0
    for p in layers:
        hs, ht = fs[p].flatten(1), ft[p].flatten(1)
        if form == "paper":
            d = lambda h: 0.5 - 0.5 * F.normalize(h, dim=1) @ F.normalize(h, dim=1).t()  # noqa: E731
            hand = hand + torch.sqrt(((d(hs) - d(ht)) ** 2).sum())
        else:
            g = lambda h: F.normalize(h @ h.t(), dim=1)  # noqa: E731
            hand = hand + ((g(hs) - g(ht)) ** 2).mean()
    assert torch.allclose(losses["loss_dad"], 2 * hand, rtol=1e-4, atol=1e-6)


def test_mars_is_feature_mse(batch, teacher):
    stage, _ = _student_stage("mars", teacher, "loss.mars.weight=3")
    _, losses = stage(batch)
    p = stage.student.feature_paths["penultimate"]
    _, fs = _features(stage.student, batch, [p])
    with torch.no_grad():
        _, ft = _features(teacher, batch, [p])
    assert torch.allclose(losses["loss_mse"], 3 * F.mse_loss(fs[p], ft[p]), atol=1e-6)


def test_mers_stages(batch, teacher):
    cfg, ctx = _ctx("mers", inputs={"teacher": copy.deepcopy(teacher)})
    stages = method_stages(cfg)
    assert [s.name for s in stages] == ["teacher", "emulate", "finetune"]
    emulate = stages[1].build(ctx)
    _, losses = emulate(batch)
    assert set(losses) == {"loss_mse"}  # MSE alone in the first student stage
    ctx.inputs = {"emulate": emulate.deployable()}
    finetune = stages[2].build(ctx)
    trainable = {n for n, p in finetune.named_parameters() if p.requires_grad}
    assert trainable and all(".classifier." in f".{n}" for n in trainable)
    before = copy.deepcopy(finetune.model.state_dict())
    finetune.train()
    opt = torch.optim.SGD(finetune.trainable_parameters(), lr=0.5)
    loss = sum(finetune(batch)[1].values())
    loss.backward()
    opt.step()
    after = finetune.model.state_dict()
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert changed and all(k.startswith("classifier") for k in changed)  # BN statistics untouched too


def test_teacher_frozen_in_eval_mode(batch, teacher):
    stage, _ = _student_stage("dad", teacher)
    stage.train()
    assert stage.student.training and not stage.teacher.training
    assert not any(p.requires_grad for p in stage.teacher.parameters())
    assert not any(k.startswith("teacher.") for k in stage.trainable_state_dict())
    before = copy.deepcopy(stage.teacher.state_dict())
    stage(batch)
    assert all(torch.equal(v, before[k]) for k, v in stage.teacher.state_dict().items())  # BN stats too


def test_rad_dad_ensemble_averages(batch, teacher):
    cfg, ctx = _ctx("rad_dad", inputs={"teacher": copy.deepcopy(teacher)})
    stages = method_stages(cfg)
    assert [s.name for s in stages] == ["teacher", "rad", "dad", "ensemble"] and not stages[-1].trains
    rad = stages[1].build(ctx).deployable().eval()
    dad = stages[2].build(ctx).deployable().eval()
    ctx.inputs = {"rad": rad, "dad": dad}
    ens = stages[3].build(ctx).deployable()
    with torch.no_grad():
        assert torch.allclose(ens(batch), (rad(batch) + dad(batch)) / 2, atol=1e-6)


def test_missing_label_and_modality(batch, teacher):
    stage, _ = _student_stage("rad", teacher)
    with pytest.raises(KeyError, match="label"):
        stage({k: v for k, v in batch.items() if k != "label"})
    with pytest.raises(KeyError, match="depth"):
        stage({k: v for k, v in batch.items() if k != "depth"})  # the teacher needs depth
