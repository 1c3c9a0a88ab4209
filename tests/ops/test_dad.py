"""DAD operators: cosine_discrepancy and dad_loss through the op-tester sections (optester.OpTester: reference,
gradients, gradcheck, opcheck, torch.compile, bad input), and what is particular to DAD."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import mmh_ext
from mmh_ext import reference as R

from .optester import OpTester, Sample

SHAPES = [(4, (8,)), (1, (3, 5)), (64, (128, 28, 28)), (64, (512, 4, 4)), (7, (1,)), (33, (2, 3, 5, 7))]
PAIR_SHAPES = [(4, (8,), (6,)), (16, (32, 3, 3), (64, 2, 2)), (64, (256, 7, 7), (256, 7, 7)), (3, (1,), (1,))]
FORMS = ("paper", "sp")


def _gradcheck_feats():
    return torch.randn(6, 3, 2, dtype=torch.float64), torch.randn(6, 5, dtype=torch.float64)


class TestCosineDiscrepancy(OpTester):
    op = "cosine_discrepancy"

    def sample_inputs(self):
        return [Sample((torch.randn(b, *rest, dtype=torch.float64),)) for b, rest in SHAPES]

    def grad_inputs(self):  # a weighted sum of the matrix entries
        return [Sample((torch.randn(5, 7, dtype=torch.float64),))]

    def gradcheck_inputs(self):
        return [Sample(_gradcheck_feats()[:1])]

    def opcheck_calls(self, device):
        hs = _gradcheck_feats()[0].to(device).requires_grad_(True)
        op = torch.ops.mmh_ext.cosine_discrepancy_forward.default
        return [(op, (hs, 1e-8)), (op, (hs.float().detach(), 1e-8))]

    def compile_inputs(self):
        return [torch.randn(16, 8, 3, 3, requires_grad=True)]

    def compile_loss(self, ops, h):
        return ops.cosine_discrepancy(h).sum()

    compile_tol = dict(rtol=1e-4, atol=1e-5)

    bad_inputs = [
        (lambda: mmh_ext.cosine_discrepancy(torch.randn(4, 0)), ValueError, "feat"),
        (lambda: mmh_ext.cosine_discrepancy(torch.randn(4, 3).to(torch.float8_e4m3fn)), TypeError, "feat"),
    ]


class TestDadLoss(OpTester):
    op = "dad_loss"

    def sample_inputs(self):
        return [
            Sample(
                (torch.randn(b, *rs, dtype=torch.float64), torch.randn(b, *rt, dtype=torch.float64)), dict(form=form)
            )
            for form in FORMS
            for b, rs, rt in PAIR_SHAPES
        ]

    def grad_inputs(self):
        f64 = torch.float64
        return [
            Sample((torch.randn(64, 128, 4, 4, dtype=f64), torch.randn(64, 256, 2, 2, dtype=f64)), dict(form=form))
            for form in FORMS
        ]

    def gradcheck_inputs(self):
        return [Sample(_gradcheck_feats(), dict(form=form)) for form in FORMS]

    def opcheck_calls(self, device):
        hs, ht = (t.to(device).requires_grad_(True) for t in _gradcheck_feats())
        return [(torch.ops.mmh_ext.dad_forward.default, (hs, ht, form, 1e-8)) for form in FORMS]

    def compile_inputs(self):
        s = [torch.randn(16, 8, 3, 3, requires_grad=True), torch.randn(16, 12, requires_grad=True)]
        return [s, [torch.randn(16, 4, 3, 3), torch.randn(16, 10)]]

    def compile_loss(self, ops, s, t):  # with cosine_discrepancy in the same graph
        return ops.dad_loss(s, t) + ops.cosine_discrepancy(s[0]).sum()

    compile_tol = dict(rtol=1e-4, atol=1e-5)

    bad_inputs = [
        (lambda: mmh_ext.dad_loss(torch.randn(4, 3), torch.randn(5, 3)), ValueError, "batch size"),
        (lambda: mmh_ext.dad_loss(torch.randn(4), torch.randn(4)), ValueError, "student_feats[0]"),
        (lambda: mmh_ext.dad_loss(torch.randn(0, 3), torch.randn(0, 3)), ValueError, "empty"),
        (lambda: mmh_ext.dad_loss(torch.randn(4, 3), torch.randn(4, 3), form="cos"), ValueError, "form"),
        (lambda: mmh_ext.dad_loss([torch.randn(4, 3)], [torch.randn(4, 3)] * 2), ValueError, "pair up"),
        (lambda: mmh_ext.dad_loss([torch.randn(4, 3)], torch.randn(4, 3)), TypeError, "both"),
        (lambda: mmh_ext.dad_loss(torch.randn(4, 3), torch.randint(0, 2, (4, 3))), TypeError, "teacher_feats[0]"),
        (lambda: mmh_ext.dad_loss(torch.randn(4, 3), torch.randn(4, 3).cfloat()), TypeError, "teacher_feats[0]"),
        (
            lambda: mmh_ext.dad_loss([torch.randn(4, 3)] * 2, [torch.randn(4, 3), torch.randn(4, 3).bool()]),
            TypeError,
            "teacher_feats[1]",
        ),
        (lambda: mmh_ext.dad_loss(torch.randn(4, 3), torch.randn(4, 3, device="meta")), ValueError, "teacher_feats[0]"),
        (lambda: mmh_ext.dad_loss(torch.randn(4, 3), torch.randn(4, 3), eps=0.0), ValueError, "eps"),
        (
            lambda: torch.ops.mmh_ext.dad_forward(torch.randn(4, 3), torch.ones(4, 3, dtype=torch.int32), "sp", 1e-8),
            TypeError,
            "teacher_feat",
        ),
    ]


@pytest.mark.parametrize("form", FORMS)
def test_layer_pairs_are_summed(form):
    s = [torch.randn(8, 5, 3, 3, dtype=torch.float64), torch.randn(8, 7, dtype=torch.float64)]
    t = [torch.randn(8, 4, 2, 2, dtype=torch.float64), torch.randn(8, 9, dtype=torch.float64)]
    got = mmh_ext.dad_loss(s, t, form=form)
    want = sum(R.dad_loss(a, b, form=form) for a, b in zip(s, t))
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("form", FORMS)
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


class _RecordDadBackward(TorchDispatchMode):
    """Records the need_student/need_teacher flags of every dad_backward call (below autograd)."""

    def __init__(self):
        super().__init__()
        self.flags = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.mmh_ext.dad_backward.default:
            self.flags.append(tuple(args[-2:]))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("side", ["student", "teacher", "both"])
def test_gradient_of_the_sides_that_require_it(form, side):
    # The autograd (C++) asks the backward op for the requested sides only and returns no gradient for the others.
    hs = torch.randn(6, 4, 3, dtype=torch.float64, requires_grad=side in ("student", "both"))
    ht = torch.randn(6, 5, dtype=torch.float64, requires_grad=side in ("teacher", "both"))
    leaves = [t for t in (hs, ht) if t.requires_grad]
    with _RecordDadBackward() as rec:
        got = torch.autograd.grad(mmh_ext.dad_loss(hs, ht, form=form) * 3.0, leaves)
    assert rec.flags == [(hs.requires_grad, ht.requires_grad)]
    rs, rt = (t.detach().requires_grad_(t.requires_grad) for t in (hs, ht))
    want = torch.autograd.grad(R.dad_loss(rs, rt, form=form) * 3.0, [t for t in (rs, rt) if t.requires_grad])
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)
    # through .backward(): only the leaves that require grad get one
    mmh_ext.dad_loss(hs, ht, form=form).backward()
    assert (hs.grad is not None) == hs.requires_grad and (ht.grad is not None) == ht.requires_grad


def test_matrices_and_norms_are_not_differentiable():
    hs, ht = torch.randn(5, 7, requires_grad=True), torch.randn(5, 3, requires_grad=True)
    loss, ms, mt, ns, nt = torch.ops.mmh_ext.dad_forward(hs, ht, "paper", 1e-8)
    assert loss.requires_grad and not any(t.requires_grad for t in (ms, mt, ns, nt))
    d, norm = torch.ops.mmh_ext.cosine_discrepancy_forward(hs, 1e-8)
    assert d.requires_grad and not norm.requires_grad
    (g,) = torch.autograd.grad(d.sum(), (hs,))
    torch.testing.assert_close(g, torch.autograd.grad(R.cosine_discrepancy(hs).sum(), (hs,))[0])


def test_a_frozen_side_is_not_kept_for_the_backward():
    """A teacher feature map that needs no gradient is not saved for the backward (an empty placeholder); the student's
    is; the student's gradient is unchanged (against the float64 reference)."""
    saved = []

    def pack(t):
        saved.append(tuple(t.shape))
        return t

    h = torch.randn(6, 5, 3, 3, dtype=torch.float64, requires_grad=True)
    t = torch.randn(6, 7, 2, 2, dtype=torch.float64)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        loss = mmh_ext.dad_loss(h, t)
    assert (6, 5, 3, 3) in saved and (6, 7, 2, 2) not in saved and (0,) in saved
    (got,) = torch.autograd.grad(loss, [h])
    (want,) = torch.autograd.grad(R.dad_loss(h, t), [h])
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
