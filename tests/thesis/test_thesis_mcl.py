"""DMCL and the MCL baselines: winner selection, masking and every loss term against hand computations."""

from __future__ import annotations

import math

import pytest
import torch

from mmh.methods.thesis import MCLStage, mcl_loss
from mmh.models import build_model

# 2 networks, 2 samples, 2 classes. Labels (0, 1).
LOGITS = torch.tensor(
    [
        [[2.0, 0.0], [0.0, 0.5]],  # net 0: sample 0 confident right, sample 1 weakly right
        [[0.5, 0.0], [0.0, 3.0]],
    ]
)  # net 1: sample 0 weakly right, sample 1 confident right
LABELS = torch.tensor([0, 1])


def _ce(z: list[float], y: int) -> float:
    return -(z[y] - math.log(sum(math.exp(v) for v in z)))


def _kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q, strict=True))


def _softmax(z: list[float], t: float = 1.0) -> list[float]:
    e = [math.exp(v / t) for v in z]
    return [v / sum(e) for v in e]


def test_dmcl_default_is_eq_5_3_by_hand():
    # Eq. 5.3 with the defaults λ = 0.5, T = 2, no T²: winner CE(y, z_w); loser (1-λ) CE(y, z_m) +
    # λ CE(softmax(z_w/T), softmax(z_m/T)). By hand (numbers computed on paper from LOGITS):
    # CE: net0 s0 0.126928, net1 s0 0.474077, net0 s1 0.474077, net1 s1 0.048587 -> winners (0, 1).
    # loser s0: net1 [0.5, 0] at T 2 = [0.562177, 0.437823] vs teacher net0 [2, 0] at T 2 = [0.731059, 0.268941]
    #   soft CE 0.643175; loser s1: net0 vs net1 -> soft CE 0.621546.
    losses, winners = mcl_loss(LOGITS, LABELS, "dmcl")
    assert winners.tolist() == [0, 1]
    assert set(losses) == {"loss_ce_winner", "loss_gd_hard", "loss_gd_soft"}
    assert losses["loss_ce_winner"].item() == pytest.approx((0.126928 + 0.048587) / 2, abs=2e-6)
    assert losses["loss_gd_hard"].item() == pytest.approx(0.5 * (0.474077 + 0.474077) / 2, abs=2e-6)
    assert losses["loss_gd_soft"].item() == pytest.approx(0.5 * (0.643175 + 0.621546) / 2, abs=2e-6)
    # the same from the formulas (independent reference in plain Python)
    z = LOGITS.tolist()
    soft = (
        -sum(p * math.log(q) for p, q in zip(_softmax(z[0][0], 2), _softmax(z[1][0], 2), strict=True))
        - sum(p * math.log(q) for p, q in zip(_softmax(z[1][1], 2), _softmax(z[0][1], 2), strict=True))
    ) / 2
    assert losses["loss_gd_soft"].item() == pytest.approx(0.5 * soft, rel=1e-6)


def test_dmcl_options_lambda_temperature_t_squared():
    # λ = 1 (the thesis's other value): losers get the soft term only; T² multiplies it when asked
    losses, _ = mcl_loss(LOGITS, LABELS, "dmcl", lam=1.0, temperature=2.0, t_squared=True)
    assert set(losses) == {"loss_ce_winner", "loss_gd_soft"}
    assert losses["loss_gd_soft"].item() == pytest.approx(4.0 * (0.643175 + 0.621546) / 2, abs=1e-5)
    # T = 5: the soft targets get softer (teacher s0 [2, 0]/5 -> [0.598688, 0.401312])
    z = LOGITS.tolist()
    l5, _ = mcl_loss(LOGITS, LABELS, "dmcl", lam=0.5, temperature=5.0)
    want = (
        sum(
            -sum(p * math.log(q) for p, q in zip(_softmax(z[w][i], 5), _softmax(z[1 - w][i], 5), strict=True))
            for i, w in ((0, 0), (1, 1))
        )
        / 2
    )
    assert l5["loss_gd_soft"].item() == pytest.approx(0.5 * want, rel=1e-6)
    assert _softmax(z[0][0], 5)[0] == pytest.approx(0.598688, abs=1e-6)
    with pytest.raises(ValueError, match="lam"):
        mcl_loss(LOGITS, LABELS, "dmcl", lam=1.5)


def test_dmcl_teacher_is_detached_and_losers_get_gradient():
    z = LOGITS.clone().requires_grad_(True)
    losses, _ = mcl_loss(z, LABELS, "dmcl", lam=1.0, winner_ce=0.0)
    (g,) = torch.autograd.grad(losses["loss_gd_soft"], z)
    assert torch.all(g[0, 0] == 0) and torch.all(g[1, 1] == 0)  # winners get nothing from the soft term
    # loser s0 (net 1): d/dz of (1/B) CE(p_t, softmax(z/T)) = (softmax(z/T) - p_t) / (T B)
    want = (torch.tensor([0.562177, 0.437823]) - torch.tensor([0.731059, 0.268941])) / (2 * 2)
    assert torch.allclose(g[1, 0], want, atol=1e-6)


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


def test_random_teacher_losses_by_hand():
    # The teacher of each sample is the draw of the generator, not the lowest CE; the terms are Eq. 5.3's with that
    # teacher. Seed 1 draws teachers (1, 1) for 2 samples of 2 nets: sample 1's teacher is net 1 (its real winner),
    # sample 0's teacher is net 1 too (the CE loser) -> losers: net 0 on both samples.
    losses, w = mcl_loss(LOGITS, LABELS, "random", generator=torch.Generator().manual_seed(1))
    assert w.tolist() == [1, 1]
    z = LOGITS.tolist()
    ce = [[_ce(z[m][i], int(LABELS[i])) for i in range(2)] for m in range(2)]
    win = [(int(w[i]), i) for i in range(2)]
    lose = [(1 - int(w[i]), i) for i in range(2)]
    assert losses["loss_ce_winner"].item() == pytest.approx(sum(ce[m][i] for m, i in win) / 2, rel=1e-6)
    assert losses["loss_gd_hard"].item() == pytest.approx(0.5 * sum(ce[m][i] for m, i in lose) / 2, rel=1e-6)
    soft = (
        sum(
            -sum(p * math.log(q) for p, q in zip(_softmax(z[1 - m][i], 2), _softmax(z[m][i], 2), strict=True))
            for m, i in lose
        )
        / 2
    )
    assert losses["loss_gd_soft"].item() == pytest.approx(0.5 * soft, rel=1e-6)
    # sample 0 is taught by its CE loser: numbers written by hand (CE net1 s0 0.474077, net1 s1 0.048587;
    # loser net 0 on s0 [2, 0] taught by net 1 [0.5, 0]; on s1 [0, 0.5] by net 1 [0, 3])
    assert losses["loss_ce_winner"].item() == pytest.approx((0.474077 + 0.048587) / 2, abs=2e-6)
    assert losses["loss_gd_hard"].item() == pytest.approx(0.5 * (0.126928 + 0.474077) / 2, abs=2e-6)


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
    net = build_model("small_late_fusion", modalities=("rgb", "depth"), num_classes=3, width=4, shared_width=4, seed=0)
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
