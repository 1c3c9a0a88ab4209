"""mmh.losses: every default equals its equation on a tiny case, the numbers worked out by hand and written here.

Notation: σ_T(z) = softmax(z / T). Logits (1, 0) and (0, 1) at T = 2 give σ_2 = (0.622459, 0.377541) and
(0.377541, 0.622459); at T = 10, (0.524979, 0.475021) and (0.475021, 0.524979); sigmoid(1) = 0.731059.
"""

from __future__ import annotations

import pytest
import torch

from mmh import losses as L
from mmh.methods.kd import kd_loss as kd_from_method
from mmh.methods.thesis import generalized_distillation, hallucination_loss, mcl_loss, soft_cross_entropy

S = torch.tensor([[1.0, 0.0]])  # student logits
T = torch.tensor([[0.0, 1.0]])  # teacher logits
Y = torch.tensor([0])


def test_one_implementation_of_each_loss():
    # the methods re-export the functions of mmh.losses (no loss written twice)
    assert kd_from_method is L.kd_loss
    assert generalized_distillation is L.generalized_distillation and hallucination_loss is L.hallucination_loss
    assert soft_cross_entropy is L.soft_cross_entropy and mcl_loss is L.mcl_loss


def test_kd_is_t_squared_kl():
    # T² KL(σ_2(t) ‖ σ_2(s)) = 4 · [0.377541 ln(0.377541/0.622459) + 0.622459 ln(0.622459/0.377541)]
    #                        = 4 · 0.122459 = 0.489837
    assert L.kd_loss(S, T, 2.0).item() == pytest.approx(0.489837, abs=2e-6)
    with pytest.raises(ValueError, match="temperature"):
        L.kd_loss(S, T, 0.0)


def test_kd_and_soft_ce_directions_on_asymmetric_logits():
    # S, T above are mirror images, so a swap of student and teacher would go unseen; here it would not.
    # s = (2, 0), t = (0, 1) at T = 2: σ_2(s) = (0.731059, 0.268941), σ_2(t) = (0.377541, 0.622459).
    s, t = torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    # KL(σ_2(t) ‖ σ_2(s)) = 0.377541 ln(0.377541/0.731059) + 0.622459 ln(0.622459/0.268941)
    #                      = −0.249485 + 0.522359 = 0.272874; × T² = 1.091495 (the swapped KL would give 1.029613)
    assert L.kd_loss(s, t, 2.0).item() == pytest.approx(1.091495, abs=2e-6)
    # −Σ σ_2(t) ln σ_2(s) = −(0.377541 ln 0.731059 + 0.622459 ln 0.268941) = 0.118271 + 0.817450 = 0.935721
    # (the swapped −Σ σ_2(s) ln σ_2(t) would give 0.839606)
    assert L.soft_cross_entropy(s, t, 2.0).item() == pytest.approx(0.935721, abs=2e-6)


def test_soft_cross_entropy_eq_3_5_soft_term():
    # −Σ σ_2(t) ln σ_2(s) = −(0.377541 ln 0.622459 + 0.622459 ln 0.377541) = 0.785307
    assert L.soft_cross_entropy(S, T, 2.0).item() == pytest.approx(0.785307, abs=2e-6)
    # the student at T = 1: −(0.377541 ln 0.731059 + 0.622459 ln 0.268941) = 0.118271 + 0.817450 = 0.935721
    assert L.soft_cross_entropy(S, T, 2.0, student_temperature=False).item() == pytest.approx(0.935721, abs=2e-6)


def test_generalized_distillation_defaults_eq_3_5():
    # λ = 0.5, T = 10, no T²: hard (1 − λ) CE(y=0, (1, 0)) = 0.5 · ln(1 + e⁻¹) = 0.156631;
    # soft λ · −(0.475021 ln 0.524979 + 0.524979 ln 0.475021) = 0.5 · 0.696895 = 0.348447
    gd = L.generalized_distillation(S, T, Y)
    assert gd["hard"].item() == pytest.approx(0.156631, abs=2e-6)
    assert gd["soft"].item() == pytest.approx(0.348447, abs=2e-6)
    assert L.generalized_distillation(S, T, Y, t_squared=True)["soft"].item() == pytest.approx(34.8447, abs=2e-4)


def test_hallucination_loss_default_eq_3_3():
    # ‖σ(A_d) − σ(A_h)‖² per sample, batch mean: sample maps (1, 1, 1, 2), teacher zeros -> σ = 0.5 everywhere.
    # sample 0: (0.731059 − 0.5)² + 0 = 0.053388; sample 1: 2 · 0.053388 -> mean 0.080082
    s = torch.tensor([[[[1.0, 0.0]]], [[[1.0, 1.0]]]])
    assert L.hallucination_loss(s, torch.zeros_like(s)).item() == pytest.approx(0.080082, abs=2e-6)
    # the reference forms stay options: mean over elements (÷ 2 more), sum over the batch (× 2)
    assert L.hallucination_loss(s, torch.zeros_like(s), "mean").item() == pytest.approx(0.040041, abs=2e-6)
    assert L.hallucination_loss(s, torch.zeros_like(s), "sum").item() == pytest.approx(0.160164, abs=2e-6)


def test_combined_loss_eq_3_7():
    # L = (1 − α) L_GD + α L_hall with α = 0.5: 0.5 · (0.156631 + 0.348447) + 0.5 · 0.053388 = 0.279233
    a = torch.tensor([[[[1.0]]]])
    out = L.modality_distillation_loss(S, T, Y, [a], [torch.zeros_like(a)])
    assert set(out) == {"loss_gd_hard", "loss_gd_soft", "loss_hall"}
    assert sum(out.values()).item() == pytest.approx(0.279233, abs=2e-6)
    assert out["loss_hall"].item() == pytest.approx(0.5 * 0.053388, abs=2e-6)
    assert set(L.modality_distillation_loss(S, T, Y, [], [], alpha=0.0)) == {"loss_gd_hard", "loss_gd_soft"}
    with pytest.raises(ValueError, match="alpha"):
        L.modality_distillation_loss(S, T, Y, [a], [a], alpha=1.5)
    with pytest.raises(ValueError, match="no maps"):
        L.modality_distillation_loss(S, T, Y, [], [], alpha=0.5)


def test_teacher_side_gets_no_gradient():
    s, t = S.clone().requires_grad_(True), T.clone().requires_grad_(True)
    sum(L.generalized_distillation(s, t, Y).values()).backward()
    assert t.grad is None and s.grad.abs().sum() > 0
    a, b = torch.ones(1, 2, requires_grad=True), torch.zeros(1, 2, requires_grad=True)
    L.hallucination_loss(a, b).backward()
    assert b.grad is None


def test_cmcl_uniform_and_dmcl_defaults():
    # KL(U ‖ σ(1, 0)) = ½ [ln(1+e⁻¹) + ln(1+e)] − ln 2 = ½ (0.313262 + 1.313262) − 0.693147 = 0.120115
    assert L.kl_to_uniform(S).item() == pytest.approx(0.120115, abs=2e-6)
    # DMCL, 2 nets on one sample (y = 0): net 0 (1, 0) wins (CE 0.313262), net 1 (0, 1) loses (CE 1.313262):
    # winner 0.313262; loser (1 − 0.5) · 1.313262 = 0.656631 and 0.5 · soft CE(σ_2(1, 0), σ_2(0, 1)) where
    # −(0.622459 ln 0.377541 + 0.377541 ln 0.622459) = 0.785307 -> 0.392653
    out, w = L.mcl_loss(torch.stack([S, T]), Y, "dmcl")
    assert w.tolist() == [0]
    assert out["loss_ce_winner"].item() == pytest.approx(0.313262, abs=2e-6)
    assert out["loss_gd_hard"].item() == pytest.approx(0.656631, abs=2e-6)
    assert out["loss_gd_soft"].item() == pytest.approx(0.392653, abs=2e-6)


def test_admd_losses_eq_4_1_and_4_2():
    y = torch.tensor([0])
    real_t, fake_t, h_t = L.admd_targets(y, 2, naive=False)
    assert (real_t.tolist(), fake_t.tolist(), h_t.tolist()) == ([0], [2], [0])  # [y || 0], [zeros(C) || 1]
    assert [t.tolist() for t in L.admd_targets(y, 2, naive=True)] == [[0], [1], [0]]
    d_real, d_fake = torch.tensor([[2.0, 0.0, 0.0]]), torch.tensor([[0.0, 0.0, 1.0]])
    # D: CE((2, 0, 0), 0) + CE((0, 0, 1), 2) = ln(1 + 2e⁻²) + ln(2e⁻¹ + 1) = 0.239545 + 0.551445 = 0.790990
    assert L.admd_discriminator_loss(d_real, d_fake, real_t, fake_t).item() == pytest.approx(0.790990, abs=2e-6)
    # H (label flipping): CE((0, 0, 1), y = 0) = ln(2 + e) = 1.551445
    assert L.admd_hallucination_loss(d_fake, h_t).item() == pytest.approx(1.551445, abs=2e-6)


def test_feature_matching_mars():
    # Σ_layers MSE: ((1 − 0)² + (2 − 0)²) / 2 + (3 − 1)² = 2.5 + 4 = 6.5
    s = [torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0]])]
    t = [torch.zeros(1, 2), torch.tensor([[1.0]])]
    assert L.feature_matching_loss(s, t).item() == pytest.approx(6.5)
    with pytest.raises(ValueError, match="equal shapes"):
        L.feature_matching_loss([torch.zeros(1, 2)], [torch.zeros(1, 3)])
