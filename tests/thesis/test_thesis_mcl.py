"""DMCL and the MCL baselines: winner selection, masking and every loss term against hand computations."""

from __future__ import annotations

import math

import pytest
import torch

from mmh.methods.thesis import MCLStage, mcl_loss
from mmh.models import build_model

# 2 networks, 2 samples, 2 classes. Labels (0, 1).
LOGITS = torch.tensor([[[2.0, 0.0], [0.0, 0.5]],    # net 0: sample 0 confident right, sample 1 weakly right
                       [[0.5, 0.0], [0.0, 3.0]]])   # net 1: sample 0 weakly right, sample 1 confident right
LABELS = torch.tensor([0, 1])


def _ce(z: list[float], y: int) -> float:
    return -(z[y] - math.log(sum(math.exp(v) for v in z)))


def _kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q, strict=True))


def _softmax(z: list[float], t: float = 1.0) -> list[float]:
    e = [math.exp(v / t) for v in z]
    return [v / sum(e) for v in e]


def test_dmcl_winners_and_losses_by_hand():
    t = 2.0
    losses, winners = mcl_loss(LOGITS, LABELS, "dmcl", temperature=t, kd_weight=0.7, winner_ce=1.0, loser_ce=0.3)
    assert winners.tolist() == [0, 1]  # sample 0: net 0 wins, sample 1: net 1 wins
    z = LOGITS.tolist()
    ce = [[_ce(z[m][i], int(LABELS[i])) for i in range(2)] for m in range(2)]
    assert losses["loss_ce_winner"].item() == pytest.approx((ce[0][0] + ce[1][1]) / 2, rel=1e-6)
    assert losses["loss_ce_loser"].item() == pytest.approx(0.3 * (ce[1][0] + ce[0][1]) / 2, rel=1e-6)
    kd = (_kl(_softmax(z[0][0], t), _softmax(z[1][0], t)) + _kl(_softmax(z[1][1], t), _softmax(z[0][1], t))) / 2
    assert losses["loss_kd"].item() == pytest.approx(0.7 * t * t * kd, rel=1e-5)


def test_dmcl_teacher_is_detached_and_losers_get_gradient():
    z = LOGITS.clone().requires_grad_(True)
    losses, _ = mcl_loss(z, LABELS, "dmcl", loser_ce=0.0, winner_ce=0.0)
    (g,) = torch.autograd.grad(losses["loss_kd"], z)
    assert torch.all(g[0, 0] == 0) and torch.all(g[1, 1] == 0)  # winners get nothing from KD
    assert g[1, 0].abs().sum() > 0 and g[0, 1].abs().sum() > 0  # losers are pulled to the winner


def test_smcl_only_winner_ce_and_independent_all():
    z = LOGITS.tolist()
    s, w = mcl_loss(LOGITS, LABELS, "smcl")
    assert set(s) == {"loss_ce_winner"}
    assert s["loss_ce_winner"].item() == pytest.approx((_ce(z[0][0], 0) + _ce(z[1][1], 1)) / 2, rel=1e-6)
    ind, _ = mcl_loss(LOGITS, LABELS, "independent")
    full = sum(_ce(z[m][i], int(LABELS[i])) for m in range(2) for i in range(2)) / 2
    assert ind["loss_ce"].item() == pytest.approx(full, rel=1e-6)


def test_cmcl_criterion_and_uniform_term():
    beta = 0.5
    losses, winners = mcl_loss(LOGITS, LABELS, "cmcl", beta=beta)
    z = LOGITS.tolist()

    def kl_u(v):
        return _kl([0.5, 0.5], _softmax(v))

    crit = [[_ce(z[m][i], int(LABELS[i])) - beta * kl_u(z[m][i]) for i in range(2)] for m in range(2)]
    want = [min(range(2), key=lambda m: crit[m][i]) for i in range(2)]
    assert winners.tolist() == want
    losers = [(1 - want[i], i) for i in range(2)]
    assert losses["loss_uniform"].item() == pytest.approx(beta * sum(kl_u(z[m][i]) for m, i in losers) / 2, rel=1e-5)


def test_random_teacher_is_reproducible():
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    z = torch.randn(3, 50, 4)
    y = torch.randint(4, (50,))
    _, w1 = mcl_loss(z, y, "random", generator=g1)
    _, w2 = mcl_loss(z, y, "random", generator=g2)
    assert torch.equal(w1, w2) and len(set(w1.tolist())) == 3  # not always the argmin


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="mode"):
        mcl_loss(LOGITS, LABELS, "nope")
    with pytest.raises(ValueError, match="labels"):
        mcl_loss(LOGITS, torch.tensor([0, 1, 1]), "dmcl")
    with pytest.raises(ValueError, match=r"\(M, B, K\)"):
        mcl_loss(LOGITS[0], LABELS, "dmcl")
    with pytest.raises(ValueError, match="temperature"):
        mcl_loss(LOGITS, LABELS, "dmcl", temperature=0.0)


def test_mcl_stage_on_a_late_fusion_net_trains_every_stream():
    net = build_model("small_late_fusion", modalities=("rgb", "depth"), num_classes=3, width=4, shared_width=4,
                      seed=0)
    stage = MCLStage(net, "dmcl")
    batch = {"rgb": torch.randn(4, 3, 32, 32), "depth": torch.randn(4, 1, 32, 32), "label": torch.tensor([0, 1, 2, 0])}
    logits, losses = stage(batch)
    assert logits.shape == (4, 3) and stage.last_winners.shape == (4,)
    sum(losses.values()).backward()
    assert all(net.heads[s].weight.grad.abs().sum() > 0 for s in ("rgb", "depth"))
    # Σ is the deployable's forward: the mean of the streams' logits
    _, per = net.forward_all(batch)
    assert torch.allclose(net(batch), (per["rgb"] + per["depth"]) / 2, atol=1e-6)
    with pytest.raises(ValueError, match="mode"):
        MCLStage(net, "bogus")
