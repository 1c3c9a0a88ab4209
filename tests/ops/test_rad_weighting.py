"""RAD's information weighting: the weights behind each mode, and why the paper's trained attention collapses.

``RegionAwareDistillation.weigh(r) == region_weights(r) @ r``. With ``weighting="attention"`` the weighting layer's
q, k are trained on the very loss they weigh, so gradient descent moves the weight onto the smallest region loss —
the easiest region, not the most informative one. These tests pin that property (the reason the library's RAD
default is not the paper's trained attention; see the README) and the behaviour of the other modes.
"""

from __future__ import annotations

import math

import pytest
import torch

mmh_ext = pytest.importorskip("mmh_ext")
from mmh_ext import reference as R  # noqa: E402
from mmh_ext.nn import RegionAwareDistillation  # noqa: E402


def _r(seed: int = 0, n: int = 21) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, generator=g, dtype=torch.float64) * 0.5 + 0.05


@pytest.mark.parametrize("weighting", ["attention", "self", "none"])
def test_weights_are_a_distribution_and_give_the_loss(weighting):
    torch.manual_seed(0)
    m = RegionAwareDistillation(weighting=weighting).double()
    r = _r()
    w = m.region_weights(r)
    assert w.shape == (21,) and bool((w >= 0).all())
    torch.testing.assert_close(w.sum(), torch.tensor(1.0, dtype=torch.float64))
    q = m.q.weight if weighting == "attention" else None
    k = m.k.weight if weighting == "attention" else None
    # independent: the reference weighting formula (sum_ij A[i, j] r_j / N)
    torch.testing.assert_close(m.weigh(r), R.rad_weighting(r, weighting, q=q, k=k))
    torch.testing.assert_close(m.last_weights, w.detach())


def test_weight_stats():
    m = RegionAwareDistillation(weighting="none").double()
    assert m.weight_stats() == {}
    m.weigh(_r())
    st = m.weight_stats()
    assert st["effective_regions"] == pytest.approx(21.0)
    assert st["max"] == pytest.approx(1 / 21) and st["last"] == pytest.approx(1 / 21)


def test_self_weighting_favours_the_larger_losses():
    m = RegionAwareDistillation(weighting="self").double()
    r = _r(3)
    w = m.region_weights(r)
    order_r, order_w = torch.argsort(r), torch.argsort(w)
    assert torch.equal(order_r, order_w)  # monotone: larger region loss -> larger weight
    assert float(m.weigh(r)) > float(r.mean())


def test_trained_attention_collapses_onto_the_smallest_region_loss():
    """q, k trained on the weighted loss itself (as the paper trains them, jointly with the student)."""
    torch.manual_seed(0)
    m = RegionAwareDistillation(weighting="attention").double()
    r = _r(1)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    start = float(m.weigh(r).detach())
    for _ in range(400):
        opt.zero_grad()
        m.weigh(r).backward()
        opt.step()
    w = m.region_weights(r).detach()
    assert int(w.argmax()) == int(r.argmin())
    assert float(w.max()) > 0.5  # from ~1/21 at initialisation
    final = float(m.weigh(r).detach())
    assert final < start and final < float(r.mean())
    ent = -(w * w.log()).sum()
    assert math.exp(float(ent)) < 5  # effective number of regions, 21 when uniform


def test_region_weights_rejects_wrong_length():
    m = RegionAwareDistillation(weighting="self")
    with pytest.raises(ValueError, match="region losses"):
        m.region_weights(torch.rand(5))
