"""Cross-stream injection x * relu(gate) through the op-tester sections (optester.OpTester: reference, gradients,
gradcheck, opcheck, torch.compile, bad input), and what is particular to it: special values, layouts kept."""

import torch

import mmh_ext
from mmh_ext import reference as R
from mmh_ext.nn import CrossStreamInjection

from .optester import OpTester, Sample

SHAPES = [(2, 3, 4, 5), (8, 5, 256, 14, 14), (1,), (3, 7), (0, 4, 2, 2), (2, 64, 7, 7)]
EXACT = dict(rtol=0, atol=0)


class TestCrossStreamInject(OpTester):
    """Exact: one product (and for the gradients one product) of the inputs, rounded once, as the reference's."""

    op = "cross_stream_inject"

    def sample_inputs(self):
        return [Sample((torch.randn(*s, dtype=torch.float64), torch.randn(*s, dtype=torch.float64))) for s in SHAPES]

    def tol(self, dtype):
        return EXACT

    def grad_tol(self, dtype, want):
        return EXACT

    def gradcheck_inputs(self):
        return [Sample((torch.randn(2, 3, 4, 5, dtype=torch.float64), torch.randn(2, 3, 4, 5, dtype=torch.float64)))]

    def opcheck_calls(self, device):
        calls = []
        for shape, fmt in (((2, 3, 4, 5), torch.contiguous_format), ((2, 3, 4, 5), torch.channels_last), ((7,), None)):
            x, g = torch.randn(*shape, device=device), torch.randn(*shape, device=device)
            if fmt is not None:
                x, g = x.to(memory_format=fmt), g.to(memory_format=fmt)
            x, g = x.requires_grad_(True), g.requires_grad_(True)
            calls.append((torch.ops.mmh_ext.cross_stream_inject.default, (x, g)))
        return calls

    def compile_inputs(self):
        return [torch.randn(2, 3, 4, 5, requires_grad=True), torch.randn(2, 3, 4, 5, requires_grad=True)]

    def compile_loss(self, ops, x, gate):
        return (ops.cross_stream_inject(x, gate) ** 2).sum()

    compile_grad_tol = {}

    bad_inputs = [
        (lambda: mmh_ext.cross_stream_inject(torch.randn(2, 3), torch.randn(3, 2)), ValueError, "gate"),
        (lambda: mmh_ext.cross_stream_inject(torch.randn(2, 3), torch.randn(1, 3)), ValueError, "gate"),
        (lambda: mmh_ext.cross_stream_inject(torch.ones(2, 3, dtype=torch.int64), torch.randn(2, 3)), TypeError, "x"),
        (lambda: mmh_ext.cross_stream_inject(torch.randn(2, 3), torch.randn(2, 3).cdouble()), TypeError, "gate"),
        (lambda: torch.ops.mmh_ext.cross_stream_inject(torch.randn(2, 3), torch.randn(2, 3).int()), TypeError, "gate"),
        (lambda: mmh_ext.cross_stream_inject(torch.randn(2, 3), torch.randn(2, 3, device="meta")), ValueError, "gate"),
        (lambda: mmh_ext.cross_stream_inject(torch.randn(2, 3), [[1.0]]), TypeError, "gate"),
    ]


def test_module_gradcheck_5d():
    x5 = torch.randn(2, 3, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    g5 = torch.randn(2, 3, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(CrossStreamInjection(), (x5, g5))


def test_special_values_match_torch_relu():
    x = torch.tensor([1.0, 2.0, float("nan"), 3.0, -1.0, float("inf")] * 5, requires_grad=True)
    g = torch.tensor([0.0, -0.0, 1.0, float("nan"), float("inf"), 2.0] * 5, requires_grad=True)
    out = mmh_ext.cross_stream_inject(x, g)
    want = R.cross_stream_inject(x, g)
    torch.testing.assert_close(out, want, equal_nan=True)
    d = torch.ones_like(out)
    for a, b in zip(torch.autograd.grad(out, (x, g), d), torch.autograd.grad(want, (x, g), d)):
        torch.testing.assert_close(a, b, equal_nan=True)


def test_layouts_are_kept():
    x = torch.randn(2, 8, 5, 5).to(memory_format=torch.channels_last).requires_grad_(True)
    g = torch.randn(2, 8, 5, 5).to(memory_format=torch.channels_last).requires_grad_(True)
    out = mmh_ext.cross_stream_inject(x, g)
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, R.cross_stream_inject(x, g))
    out.backward(torch.ones_like(out))
    torch.testing.assert_close(x.grad, torch.relu(g.detach()))
    # mixed layouts and non-contiguous views
    x2 = torch.randn(2, 8, 5, 10)[..., ::2]
    g2 = torch.randn(2, 8, 5, 5).to(memory_format=torch.channels_last)
    torch.testing.assert_close(mmh_ext.cross_stream_inject(x2, g2), R.cross_stream_inject(x2, g2))
    x3 = torch.randn(2, 3, 4, 5, 6).to(memory_format=torch.channels_last_3d)
    g3 = torch.randn(2, 3, 4, 5, 6).to(memory_format=torch.channels_last_3d)
    assert mmh_ext.cross_stream_inject(x3, g3).is_contiguous(memory_format=torch.channels_last_3d)


def test_gradient_of_one_input():
    # The autograd (C++) returns a gradient only for the inputs that require one.
    for x_grad in (True, False):
        x = torch.randn(3, 4, 5, dtype=torch.float64, requires_grad=x_grad)
        g = torch.randn(3, 4, 5, dtype=torch.float64, requires_grad=not x_grad)
        d = torch.randn(3, 4, 5, dtype=torch.float64)
        mmh_ext.cross_stream_inject(x, g).backward(d)
        want = d * torch.relu(g.detach()) if x_grad else torch.where(g.detach() > 0, d * x.detach(), 0.0)
        torch.testing.assert_close(x.grad if x_grad else g.grad, want, **EXACT)
        assert (g.grad if x_grad else x.grad) is None


def test_frozen_gate_gradient_in_mixed_dtypes():
    # A frozen gate (x alone requires grad) takes the one-pass path dx = grad * relu(gate) through the forward kernel:
    # computed in the promoted dtype (the output's), then rounded to x's dtype, as the full backward does.
    torch.manual_seed(0)
    for x_dtype, g_dtype in ((torch.bfloat16, torch.float32), (torch.float32, torch.float64), (torch.float16,) * 2):
        x = torch.randn(4, 6, 5, dtype=x_dtype, requires_grad=True)
        g = torch.randn(4, 6, 5, dtype=g_dtype)
        out = mmh_ext.cross_stream_inject(x, g)
        d = torch.randn_like(out)
        out.backward(d)
        want = (d * torch.relu(g.to(out.dtype))).to(x_dtype)
        assert x.grad.dtype == x_dtype
        torch.testing.assert_close(x.grad, want, **EXACT)
        # the same values as the full backward, run when the gate requires a gradient too
        x2, g2 = x.detach().clone().requires_grad_(True), g.clone().requires_grad_(True)
        mmh_ext.cross_stream_inject(x2, g2).backward(d)
        torch.testing.assert_close(x.grad, x2.grad, **EXACT)
