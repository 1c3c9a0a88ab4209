"""The stage builders of the thesis methods: step 2, step 4, ModDrop, the ADMD hallucination and fusion stages —
what each hands on, and their loss values against independent computations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmh.config import merge
from mmh.methods import StageContext, Supervised, method_defaults
from mmh.methods.thesis import ADMDStage, AssembleStage, ModDropStage, StreamsCE
from mmh.methods.thesis.admd import _build_fusion, _build_hall
from mmh.methods.thesis.multistream import _build_moddrop, _build_step2, _build_step3, _build_step4
from mmh.models import build_model

pytest.importorskip("mmh_ext")


def _net(**kw):
    return build_model(
        "small_multiplier", modalities=("rgb", "depth"), num_classes=3, num_frames=2, width=4, seed=0, **kw
    )


def _trained(net):
    torch.manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return net


def _batch(b: int = 4):
    g = torch.Generator().manual_seed(0)
    return {
        "rgb": torch.rand(b, 2, 3, 32, 32, generator=g),
        "depth": torch.rand(b, 2, 1, 32, 32, generator=g),
        "label": torch.arange(b) % 3,
    }


def _ctx(inputs, model="small_multiplier", kwargs=None, **sections):
    cfg = {
        "seed": 0,
        "model": {"name": model, "kwargs": kwargs or {"width": 4}},
        "modalities": {"teacher": ["rgb", "depth"], "student": ["rgb"]},
        "loss": merge(method_defaults(), sections),
    }
    return StageContext(cfg, 3, {"rgb": 3, "depth": 1}, {"num_frames": 2}, inputs)


def test_step2_starts_from_step1_with_connections_and_fused_ce():
    step1 = _trained(_net(connections=False))
    stage = _build_step2(_ctx({"step1": step1}, multistream={}))
    assert isinstance(stage, Supervised)
    m = stage.model
    assert m.connections and (m.gate_from, m.gate_into) == ("depth", "rgb")
    assert all(torch.equal(v, step1.state_dict()[k]) for k, v in m.state_dict().items())
    batch = _batch()
    logits, losses = stage.eval()(batch)
    # CE of the averaged logits, the connections applied (differs from step 1's unconnected net)
    torch.testing.assert_close(losses["loss_ce"], F.cross_entropy(m(batch), batch["label"]))
    assert not torch.allclose(logits, step1.eval()(batch))
    per = _build_step2(_ctx({"step1": step1}, multistream={"step2_loss": "streams", "connections": False}))
    assert isinstance(per, StreamsCE) and not per.model.connections
    _, l2 = per.eval()(batch)
    _, z = step1.forward_all(batch)
    torch.testing.assert_close(l2["loss_ce/depth"], F.cross_entropy(z["depth"], batch["label"]))
    with pytest.raises(ValueError, match="step2_loss"):
        _build_step2(_ctx({"step1": step1}, multistream={"step2_loss": "both"}))


def test_step4_fine_tunes_the_whole_rgb_net_handed_on_by_step3():
    step2 = _trained(_net(connections=True)).eval()
    step3 = _build_step3(_ctx({"step2": step2}, multistream={}))
    handed = step3.deployable()
    stage = _build_step4(_ctx({"step3": handed}, multistream={}))
    assert isinstance(stage, Supervised) and stage.model is handed
    assert all(p.requires_grad for p in handed.parameters())  # RGB and hallucination streams both trained
    assert handed.modalities == ("rgb",)
    batch = {"rgb": _batch()["rgb"], "label": torch.arange(4) % 3}
    _, losses = stage.eval()(batch)
    torch.testing.assert_close(losses["loss_ce"], F.cross_entropy(handed(batch), batch["label"]))


def test_moddrop_drops_inputs_lightly_and_whole_modalities():
    model = _net(connections=False).eval()
    batch = _batch(6)
    # whole-modality dropout only: the per-sample keep mask is torch.rand(B) >= p_drop from the global RNG
    stage = ModDropStage(model, p_drop=0.5, p_input=0.0)
    torch.manual_seed(0)
    out = stage.drop(batch)
    torch.manual_seed(0)
    keep = torch.rand(6) >= 0.5
    assert 0 < keep.sum() < 6
    for i in range(6):
        assert torch.equal(out["depth"][i], batch["depth"][i] if keep[i] else torch.zeros_like(batch["depth"][i]))
    assert torch.equal(out["rgb"], batch["rgb"])  # RGB is never dropped whole
    # light input dropout on every modality: each element is 0 or x / (1 - p)
    torch.manual_seed(0)
    out = ModDropStage(model, p_drop=0.0, p_input=0.25).drop(batch)
    for m in ("rgb", "depth"):
        kept = out[m] != 0
        torch.testing.assert_close(out[m][kept], batch[m][kept] / 0.75)
        assert 0.15 < 1 - kept.float().mean().item() < 0.35
    # the loss is the CE on the dropped batch (same RNG state)
    stage = ModDropStage(model, p_drop=0.5, p_input=0.1)
    torch.manual_seed(3)
    _, losses = stage(batch)
    torch.manual_seed(3)
    torch.testing.assert_close(losses["loss_ce"], F.cross_entropy(model(stage.drop(batch)), batch["label"]))
    with pytest.raises(ValueError, match="p_input"):
        ModDropStage(model, p_input=1.5)
    with pytest.raises(ValueError, match="modality"):
        ModDropStage(model, modality="flow")


def test_moddrop_builder_starts_from_step1():
    step1 = _trained(_net(connections=False))
    stage = _build_moddrop(_ctx({"step1": step1}, multistream={}, moddrop={"p_drop": 0.3, "p_input": 0.05}))
    assert (stage.p_drop, stage.p_input, stage.dropped) == (0.3, 0.05, ["depth"])
    assert all(torch.equal(v, step1.state_dict()[k]) for k, v in stage.model.state_dict().items())
    assert stage.model.connections


def _framewise_ctx(inputs, **admd):
    return _ctx(inputs, model="small_framewise", kwargs={"width": 4, "shared_width": 4, "bottleneck": 6}, admd=admd)


def test_admd_builders_hallucination_from_depth_and_fusion_from_both():
    streams = _trained(
        build_model(
            "small_framewise",
            modalities=("rgb", "depth"),
            num_classes=3,
            width=4,
            shared_width=4,
            bottleneck=6,
            num_frames=2,
            seed=0,
        )
    )
    stage = _build_hall(_framewise_ctx({"streams": streams}), naive=False)
    assert isinstance(stage, ADMDStage)
    h = stage.hall.streams["hall"]
    assert torch.equal(h.layer4[0].weight, streams.streams["depth"].layer4[0].weight)
    assert torch.equal(stage.hall.heads["hall"].weight, streams.heads["depth"].weight)
    d = stage.discriminator
    assert (d.num_classes, d.num_frames, d.feature_dim) == (3, 2, 6)  # C + 1 outputs, frame-conditioned
    naive = _build_hall(_framewise_ctx({"streams": streams}), naive=True)
    assert naive.discriminator.num_classes == 1 and naive.naive
    flat = _build_hall(_framewise_ctx({"streams": streams}, frame_conditioning=False), naive=False)
    assert flat.discriminator.num_frames == 0
    # fusion: RGB stream of step 1 + the hallucination stream, RGB input; logits = mean of the two
    hall_net = _trained(stage.hall)
    fusion = _build_fusion(_framewise_ctx({"streams": streams, "hallucination": hall_net}))
    assert isinstance(fusion, AssembleStage)
    net = fusion.deployable().eval()
    batch = {"rgb": _batch()["rgb"], "label": torch.arange(4) % 3}
    want = (
        streams.eval().forward_all({**batch, "depth": _batch()["depth"]})[1]["rgb"]
        + hall_net.eval().forward_all(batch)[1]["hall"]
    ) / 2
    torch.testing.assert_close(net(batch), want)
