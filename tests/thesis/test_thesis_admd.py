"""ADMD: target layout and label flipping, 1:1 updates without gradient leaks, the switch signal."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mmh.methods.thesis import ADMDStage, admd_targets, discriminator_from_state, fake_probability
from mmh.methods.thesis.common import copy_stream
from mmh.models import FrameDiscriminator, build_model


def _nets(naive: bool = False, frames: int = 3):
    depth = build_model(
        "small_framewise",
        modalities=("rgb", "depth"),
        num_classes=3,
        width=4,
        shared_width=4,
        bottleneck=6,
        num_frames=frames,
        seed=0,
    )
    hall = build_model(
        "small_framewise",
        modalities=("rgb",),
        num_classes=3,
        width=4,
        shared_width=4,
        bottleneck=6,
        num_frames=frames,
        streams={"hall": "rgb"},
        seed=1,
    )
    copy_stream(hall, "hall", depth, "depth")
    torch.manual_seed(0)
    disc = FrameDiscriminator(6, 1 if naive else 3, frames, (8,))
    return depth, hall, disc


def _batch(b: int = 4, t: int = 3):
    g = torch.Generator().manual_seed(0)
    return {
        "rgb": torch.rand(b, t, 3, 32, 32, generator=g),
        "depth": torch.rand(b, t, 1, 32, 32, generator=g),
        "label": torch.tensor([0, 1, 2, 1])[:b],
        "frame_index": torch.arange(t).repeat(b, 1),
    }


def test_target_layout_and_label_flipping():
    y = torch.tensor([0, 2, 1])
    real, fake, h = admd_targets(y, 3, naive=False)
    assert real.tolist() == [0, 2, 1]  # real depth features -> their class
    assert fake.tolist() == [3, 3, 3]  # hallucinated -> the extra "fake" class C
    assert h.tolist() == [0, 2, 1]  # H wants its features assigned to the true class (flipped from "fake")
    real, fake, h = admd_targets(y, 3, naive=True)
    assert real.tolist() == [0, 0, 0] and fake.tolist() == [1, 1, 1] and h.tolist() == [0, 0, 0]
    assert FrameDiscriminator(4, 3, 2, (5,)).fake_index == 3


def test_losses_by_hand_and_no_gradient_leak():
    depth, hall, disc = _nets()
    stage = ADMDStage(hall, depth, disc)
    stage.train()
    batch = _batch()
    _, losses = stage(batch)
    # hand computation of both losses from the features
    with torch.no_grad():
        rpath, fpath = "streams.depth.bottleneck", "streams.hall.bottleneck"
        from mmh.models import FeatureExtractor

        with FeatureExtractor(depth, [rpath]) as rf:
            depth(batch)
        with FeatureExtractor(hall, [fpath]) as ff:
            hall(batch)
        fi = batch["frame_index"].reshape(-1)
        y = batch["label"].repeat_interleave(3)
        ce = torch.nn.functional.cross_entropy
        d_want = ce(disc(rf[rpath].flatten(1), fi), y) + ce(disc(ff[fpath].flatten(1), fi), torch.full_like(y, 3))
        h_want = ce(disc(ff[fpath].flatten(1), fi), y)
    assert losses["loss_d"].item() == pytest.approx(d_want.item(), rel=1e-5)
    assert losses["loss_h"].item() == pytest.approx(h_want.item(), rel=1e-5)
    h_params = list(hall.parameters())
    d_params = list(disc.parameters())
    g_d = torch.autograd.grad(losses["loss_d"], h_params + d_params, allow_unused=True, retain_graph=True)
    g_h = torch.autograd.grad(losses["loss_h"], h_params + d_params, allow_unused=True)
    n = len(h_params)
    assert all(g is None or g.abs().sum() == 0 for g in g_d[:n])  # D's loss does not move H
    assert any(g is not None and g.abs().sum() > 0 for g in g_d[n:])
    assert all(g is None or g.abs().sum() == 0 for g in g_h[n:])  # H's loss does not move D
    assert any(g is not None and g.abs().sum() > 0 for g in g_h[:n])
    assert all(not p.requires_grad for p in depth.parameters()) and not depth.training


def _constant_output(disc: FrameDiscriminator, bias: list[float]) -> None:
    """Make D's output the constant ``bias`` whatever its input (last layer weight 0)."""
    with torch.no_grad():
        disc.net[-1].weight.zero_()
        disc.net[-1].bias.copy_(torch.tensor(bias))


def test_naive_losses_by_hand_and_frame_index_errors():
    depth, hall, disc = _nets(naive=True)
    _constant_output(disc, [1.0, 0.0])  # D says (real, fake) logits (1, 0) for every frame
    _, losses = ADMDStage(hall, depth, disc, naive=True)(_batch())
    assert set(losses) == {"loss_d", "loss_h"}
    # D: CE((1, 0), real=0) + CE((1, 0), fake=1) = ln(1 + e⁻¹) + ln(1 + e) = 0.313262 + 1.313262
    assert losses["loss_d"].item() == pytest.approx(1.626523, abs=2e-6)
    # H (label flipping: wants "real" = 0): CE((1, 0), 0) = 0.313262
    assert losses["loss_h"].item() == pytest.approx(0.313262, abs=2e-6)
    # the class-aware D with the same kind of constant output (logits (1, 0, 0, 0); "fake" = 3): the real
    # frames' targets are their classes (labels 0, 1, 2, 1 -> class 0 for 1 clip in 4), fake frames -> 3
    depth, hall, disc = _nets()
    _constant_output(disc, [1.0, 0.0, 0.0, 0.0])
    _, losses = ADMDStage(hall, depth, disc)(_batch())
    # softmax(1, 0, 0, 0) = (0.475367, 0.174877 x 3): CE 0.743668 for class 0, 1.743668 for any other class.
    # real: 1 clip in 4 is class 0 -> (0.743668 + 3 x 1.743668) / 4 = 1.493668; fake: 1.743668 -> D 3.237336
    assert losses["loss_d"].item() == pytest.approx(3.237336, abs=2e-6)
    assert losses["loss_h"].item() == pytest.approx(1.493668, abs=2e-6)  # H wants the true classes
    depth, hall, disc = _nets()
    stage = ADMDStage(hall, depth, disc)
    bad = _batch()
    del bad["frame_index"]
    with pytest.raises(KeyError, match="frame_index"):
        stage(bad)
    with pytest.raises(ValueError, match="frame_conditioning"):
        ADMDStage(hall, depth, disc, frame_conditioning=False)


def test_switch_signal_values_and_discriminator_roundtrip():
    depth, hall, disc = _nets()
    stage = ADMDStage(hall, depth, disc)
    d2 = discriminator_from_state(stage.state_dict(), 6)
    assert (d2.num_classes, d2.num_frames) == (3, 3)
    assert all(torch.equal(a, b) for a, b in zip(disc.state_dict().values(), d2.state_dict().values(), strict=True))
    # p(fake) = the mean over all frames of softmax(D(features ‖ frame index))[C], computed here from the features
    batches = [_batch(), _batch(2)]
    from mmh.models import FeatureExtractor

    probs = []
    for b in batches:
        with torch.no_grad(), FeatureExtractor(depth.eval(), ["streams.depth.bottleneck"]) as f:
            depth(b)
        logits = d2(f["streams.depth.bottleneck"].flatten(1), b["frame_index"].reshape(-1))
        probs.append(torch.softmax(logits, 1)[:, 3])
    want = torch.cat(probs).mean().item()
    assert fake_probability(depth, d2, batches) == pytest.approx(want, rel=1e-6)
    # a D with constant logits (0, 0, 0, ln 3) gives p(fake) = 3 / (3 + 3) = 0.5 exactly; (0, 0, 0, 0) -> 0.25
    _constant_output(d2, [0.0, 0.0, 0.0, 1.0986123])
    assert fake_probability(depth, d2, batches) == pytest.approx(0.5, abs=1e-6)
    _constant_output(d2, [0.0, 0.0, 0.0, 0.0])
    assert fake_probability(depth, d2, batches) == pytest.approx(0.25, abs=1e-6)
    with pytest.raises(KeyError):
        discriminator_from_state({}, 6)


def test_framewise_concat_sees_frame_order_mean_does_not():
    batch = _batch()
    rev = {**batch, "rgb": batch["rgb"].flip(1), "depth": batch["depth"].flip(1)}
    cat = build_model(
        "small_framewise",
        modalities=("rgb", "depth"),
        num_classes=3,
        width=4,
        shared_width=4,
        bottleneck=6,
        num_frames=3,
        seed=0,
    ).eval()
    mean = build_model(
        "small_framewise",
        modalities=("rgb", "depth"),
        num_classes=3,
        width=4,
        shared_width=4,
        bottleneck=6,
        num_frames=3,
        temporal="mean",
        seed=0,
    ).eval()
    assert not torch.allclose(cat(batch), cat(rev), atol=1e-5)
    assert torch.allclose(mean(batch), mean(rev), atol=1e-5)
    with pytest.raises(ValueError, match="temporal"):
        build_model("small_framewise", modalities=("rgb",), num_classes=3, temporal="max")


def test_admd_run_publishes_its_discriminator(tmp_path):
    """The hallucination stage of an ADMD run publishes D as a named artifact: saved beside model.pt, carried
    through the stage cache, read with weights_only, equal to the trained D of the stage's checkpoint."""
    from mmh.config import find_config, load_config
    from mmh.runner import Source, run_experiment, stage_artifact_path, stage_model_path
    from mmh.train.checkpoint import load_checkpoint, load_model, load_tensors

    from .conftest import TINY

    cfg = load_config(
        find_config("thesis/admd"),
        [
            *TINY,
            "model.kwargs.width=4",
            "model.kwargs.shared_width=4",
            "model.kwargs.bottleneck=6",
            f"output.cache={tmp_path / 'c'}",
        ],
    )
    res = run_experiment(cfg, run_dir=tmp_path / "a", log=lambda s: None)
    path = stage_artifact_path(tmp_path / "a", res, "hallucination", "discriminator")
    assert path == tmp_path / "a" / "stages" / "hallucination" / "discriminator.pt"
    state = load_tensors(path)
    trained = load_checkpoint(tmp_path / "a" / "stages" / "hallucination" / "latest.pt")["stage"]
    assert state.keys() == {k[len("discriminator.") :] for k in trained if k.startswith("discriminator.")}
    assert all(torch.equal(v, trained[f"discriminator.{k}"]) for k, v in state.items())
    dim = load_model(stage_model_path(tmp_path / "a", res, "hallucination")).streams["hall"].bottleneck.out_channels
    disc = discriminator_from_state(state, dim, prefix="")
    assert disc.num_classes == _num_classes(cfg) and disc.num_frames > 0
    # a second run takes the stage from the cache, and the artifact with it
    again = run_experiment(cfg, run_dir=tmp_path / "b", log=lambda s: None)
    src = Source.parse(again["stages"]["hallucination"]["source"])
    assert src.kind == "cache" and again["final"] == res["final"]
    cached = stage_artifact_path(tmp_path / "b", again, "hallucination", "discriminator")
    assert cached == Path(src.path) / "discriminator.pt"
    assert all(torch.equal(v, state[k]) for k, v in load_tensors(cached).items())
    with pytest.raises(FileNotFoundError, match="artifact 'nothing'"):
        stage_artifact_path(tmp_path / "b", again, "hallucination", "nothing")
    # the benchmark's rebuild: the run's loss.admd.residual, checked against the stored layout
    from mmh.benchmarks.thesis import admd_discriminator

    hall = load_model(stage_model_path(tmp_path / "a", res, "hallucination"))
    bench = admd_discriminator({**res, "run_dir": str(tmp_path / "a")}, hall)
    assert all(torch.equal(v, state[k]) for k, v in bench.state_dict().items())


def test_a_residual_discriminator_rebuilds_with_its_residual_layers():
    """Fig. 4.3's object discriminator (skip connections in hidden layers 1 and 2) stores its layout with its weights:
    rebuilt from its state (an artifact or a stage checkpoint) it computes what it computed, not a plain MLP's
    output. A layout given that differs from the stored one, a stored layout that differs from the network loading
    it, and an old state without a layout but a residual network are ValueErrors."""
    torch.manual_seed(0)
    d = FrameDiscriminator(8, 3, 0, (16, 16, 16, 24), residual=(2, 1)).eval()
    f = torch.randn(5, 8)
    art = {k: v.clone() for k, v in d.state_dict().items()}
    assert art["residual_layout"].tolist() == [1, 2]
    for state, prefix in ((art, ""), ({f"discriminator.{k}": v for k, v in art.items()}, "discriminator.")):
        rebuilt = discriminator_from_state(state, 8, prefix=prefix)
        assert rebuilt.residual == (1, 2)
        torch.testing.assert_close(rebuilt(f), d(f), rtol=0, atol=0)
        assert discriminator_from_state(state, 8, prefix=prefix, residual=[1, 2]).residual == (1, 2)
        with pytest.raises(ValueError, match=r"residual layers \[1, 2\].*residual=\[\]"):
            discriminator_from_state(state, 8, prefix=prefix, residual=[])
    plain = FrameDiscriminator(8, 3, 0, (16, 16, 16, 24))
    with pytest.raises(ValueError, match=r"residual_layout.*\[1, 2\].*\[\]"):
        plain.load_state_dict(art)
    # a state written before the layout was stored: a plain MLP's loads as before; a residual one needs it given
    old = {k: v for k, v in art.items() if k != "residual_layout"}
    plain.load_state_dict(old)
    with pytest.raises(ValueError, match="residual_layout"):
        FrameDiscriminator(8, 3, 0, (16, 16, 16, 24), residual=(1, 2)).load_state_dict(old)
    with pytest.raises(ValueError, match="pass residual="):
        discriminator_from_state(old, 8, prefix="")
    torch.testing.assert_close(discriminator_from_state(old, 8, prefix="", residual=(1, 2))(f), d(f), rtol=0, atol=0)


def _num_classes(cfg) -> int:
    from mmh.runner import load_split

    return int(load_split(cfg, cfg["dataset"]["train_split"]).num_classes)


def test_frame_indices_are_positions_in_the_clip_not_source_frame_numbers():
    """A real dataset's frame_index holds source frame numbers (e.g. 5 of 40 frames: 3, 11, 19, 27, 35; a short video
    repeats frames); the discriminator's temporal label is the position 0..T-1 (their rank in the clip)."""
    from mmh.methods.thesis.admd import frame_indices

    fi = torch.tensor([[3, 11, 19, 27, 35], [0, 0, 1, 2, 2], [0, 1, 2, 3, 4], [9, 2, 5, 7, 1]])
    got = frame_indices({"frame_index": fi}, 4, 5, True).reshape(4, 5)
    assert got.tolist() == [[0, 1, 2, 3, 4]] * 3 + [[4, 1, 2, 3, 0]]
    assert frame_indices({"frame_index": fi}, 4, 5, False) is None
