"""DAD operators: cosine_discrepancy and dad_loss against the reference; gradients, opcheck, compile, bad input."""
import pytest
import torch

import mmh_ext
from mmh_ext import reference as R

from .conftest import TOL

SHAPES = [(4, (8,)), (1, (3, 5)), (64, (128, 28, 28)), (64, (512, 4, 4)), (7, (1,)), (33, (2, 3, 5, 7))]


@pytest.mark.parametrize("b,rest", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cosine_discrepancy_matches_reference(b, rest, dtype):
    h = torch.randn(b, *rest, dtype=dtype)
    got = mmh_ext.cosine_discrepancy(h)
    assert got.shape == (b, b) and got.dtype == dtype
    torch.testing.assert_close(got, R.cosine_discrepancy(h), **TOL[dtype])


@pytest.mark.parametrize("form", ["paper", "sp"])
@pytest.mark.parametrize("b,rest_s,rest_t", [(4, (8,), (6,)), (16, (32, 3, 3), (64, 2, 2)), (64, (256, 7, 7), (256, 7, 7)),
                                              (3, (1,), (1,))])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_dad_loss_matches_reference(form, b, rest_s, rest_t, dtype, kernel_mode):
    hs, ht = torch.randn(b, *rest_s, dtype=dtype), torch.randn(b, *rest_t, dtype=dtype)
    got = mmh_ext.dad_loss(hs, ht, form=form)
    torch.testing.assert_close(got, R.dad_loss(hs, ht, form=form), **TOL[dtype])


@pytest.mark.parametrize("form", ["paper", "sp"])
def test_layer_pairs_are_summed(form):
    s = [torch.randn(8, 5, 3, 3, dtype=torch.float64), torch.randn(8, 7, dtype=torch.float64)]
    t = [torch.randn(8, 4, 2, 2, dtype=torch.float64), torch.randn(8, 9, dtype=torch.float64)]
    got = mmh_ext.dad_loss(s, t, form=form)
    want = sum(R.dad_loss(a, b, form=form) for a, b in zip(s, t))
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("form", ["paper", "sp"])
def test_gradcheck(form, kernel_mode):
    hs = torch.randn(6, 3, 2, dtype=torch.float64, requires_grad=True)
    ht = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: mmh_ext.dad_loss(a, b, form=form), (hs, ht))
    assert torch.autograd.gradcheck(mmh_ext.cosine_discrepancy, (hs,))


@pytest.mark.parametrize("form", ["paper", "sp"])
def test_gradients_match_reference_float32(form):
    hs = torch.randn(64, 128, 4, 4, requires_grad=True)
    ht = torch.randn(64, 256, 2, 2, requires_grad=True)
    g1 = torch.autograd.grad(mmh_ext.dad_loss(hs, ht, form=form), (hs, ht))
    g2 = torch.autograd.grad(R.dad_loss(hs, ht, form=form), (hs, ht))
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-7)


def test_cosine_discrepancy_gradient_is_weighted_correctly():
    h = torch.randn(5, 7, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 5, dtype=torch.float64)
    g1 = torch.autograd.grad((mmh_ext.cosine_discrepancy(h) * w).sum(), h)[0]
    g2 = torch.autograd.grad((R.cosine_discrepancy(h) * w).sum(), h)[0]
    torch.testing.assert_close(g1, g2)


@pytest.mark.parametrize("form", ["paper", "sp"])
def test_degenerate_batches_are_finite(form):
    # B = 1: the loss is 0 and so is the gradient (documented).
    hs = torch.randn(1, 10, requires_grad=True)
    loss = mmh_ext.dad_loss(hs, torch.randn(1, 4), form=form)
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(hs.grad, torch.zeros_like(hs))
    # all-zero rows: clamped norms, no NaN/Inf, cosine 0 with everything
    hs = torch.randn(5, 6, dtype=torch.float64)
    hs[2] = 0
    hs.requires_grad_(True)
    ht = torch.randn(5, 3, dtype=torch.float64)
    ht[0] = 0
    loss = mmh_ext.dad_loss(hs, ht, form=form)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(hs.grad).all()
    torch.testing.assert_close(loss, R.dad_loss(hs, ht, form=form))
    d = mmh_ext.cosine_discrepancy(hs.detach())
    assert torch.allclose(d[2], torch.full((5,), 0.5, dtype=torch.float64))
    # identical features: zero difference, zero gradient (not NaN)
    h = torch.randn(4, 3, requires_grad=True)
    loss = mmh_ext.dad_loss(h, h.detach().clone(), form=form)
    loss.backward()
    assert torch.equal(h.grad, torch.zeros_like(h))


def test_opcheck():
    hs = torch.randn(6, 3, 2, dtype=torch.float64, requires_grad=True)
    ht = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    for form in ("paper", "sp"):
        torch.library.opcheck(torch.ops.mmh_ext.dad_forward.default, (hs, ht, form, 1e-8))
    torch.library.opcheck(torch.ops.mmh_ext.cosine_discrepancy_forward.default, (hs, 1e-8))
    torch.library.opcheck(torch.ops.mmh_ext.cosine_discrepancy_forward.default, (hs.float().detach(), 1e-8))


def test_torch_compile_fullgraph():
    s = [torch.randn(16, 8, 3, 3, requires_grad=True), torch.randn(16, 12, requires_grad=True)]
    t = [torch.randn(16, 4, 3, 3), torch.randn(16, 10)]
    fn = torch.compile(lambda a, b: mmh_ext.dad_loss(a, b) + mmh_ext.cosine_discrepancy(a[0]).sum(), fullgraph=True,
                       backend="aot_eager")
    got = fn(s, t)
    got.backward()
    grads = [x.grad.clone() for x in s]
    for x in s:
        x.grad = None
    want = R.dad_loss(s, t) + R.cosine_discrepancy(s[0]).sum()
    want.backward()
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    for g, x in zip(grads, s):
        torch.testing.assert_close(g, x.grad, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("call,exc,word", [
    (lambda: mmh_ext.dad_loss(torch.randn(4, 3), torch.randn(5, 3)), ValueError, "batch size"),
    (lambda: mmh_ext.dad_loss(torch.randn(4), torch.randn(4)), ValueError, "student_feats[0]"),
    (lambda: mmh_ext.dad_loss(torch.randn(0, 3), torch.randn(0, 3)), ValueError, "empty"),
    (lambda: mmh_ext.dad_loss(torch.randn(4, 3), torch.randn(4, 3), form="cos"), ValueError, "form"),
    (lambda: mmh_ext.dad_loss([torch.randn(4, 3)], [torch.randn(4, 3)] * 2), ValueError, "pair up"),
    (lambda: mmh_ext.dad_loss([torch.randn(4, 3)], torch.randn(4, 3)), TypeError, "both"),
    (lambda: mmh_ext.dad_loss(torch.randn(4, 3), torch.randint(0, 2, (4, 3))), TypeError, "teacher_feats[0]"),
    (lambda: mmh_ext.dad_loss(torch.randn(4, 3), torch.randn(4, 3).cfloat()), TypeError, "teacher_feats[0]"),
    (lambda: mmh_ext.dad_loss([torch.randn(4, 3)] * 2, [torch.randn(4, 3), torch.randn(4, 3).bool()]), TypeError,
     "teacher_feats[1]"),
    (lambda: mmh_ext.dad_loss(torch.randn(4, 3), torch.randn(4, 3, device="meta")), ValueError, "teacher_feats[0]"),
    (lambda: mmh_ext.dad_loss(torch.randn(4, 3), torch.randn(4, 3), eps=0.0), ValueError, "eps"),
    (lambda: mmh_ext.cosine_discrepancy(torch.randn(4, 0)), ValueError, "feat"),
    (lambda: mmh_ext.cosine_discrepancy(torch.randn(4, 3).to(torch.float8_e4m3fn)), TypeError, "feat"),
    (lambda: torch.ops.mmh_ext.dad_forward(torch.randn(4, 3), torch.ones(4, 3, dtype=torch.int32), "sp", 1e-8),
     TypeError, "teacher_feat"),
])
def test_bad_input_names_the_argument(call, exc, word):
    with pytest.raises(exc, match=__import__("re").escape(word)):
        call()
