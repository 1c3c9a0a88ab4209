"""Cross-stream injection: x * relu(gate) — reference, gradients, layouts, opcheck, compile, bad input."""
import pytest
import torch

import mmh_ext
from mmh_ext import reference as R
from mmh_ext.nn import CrossStreamInjection

SHAPES = [(2, 3, 4, 5), (8, 5, 256, 14, 14), (1,), (3, 7), (0, 4, 2, 2), (2, 64, 7, 7)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_matches_reference_forward_and_backward(shape, dtype, kernel_mode):
    x = torch.randn(*shape, dtype=dtype, requires_grad=True)
    g = torch.randn(*shape, dtype=dtype, requires_grad=True)
    out = mmh_ext.cross_stream_inject(x, g)
    want = R.cross_stream_inject(x, g)
    torch.testing.assert_close(out, want, rtol=0, atol=0)
    d = torch.randn(*shape, dtype=dtype)
    torch.testing.assert_close(torch.autograd.grad(out, (x, g), d), torch.autograd.grad(want, (x, g), d), rtol=0,
                               atol=0)


def test_special_values_match_torch_relu(kernel_mode):
    x = torch.tensor([1.0, 2.0, float("nan"), 3.0, -1.0, float("inf")] * 5, requires_grad=True)
    g = torch.tensor([0.0, -0.0, 1.0, float("nan"), float("inf"), 2.0] * 5, requires_grad=True)
    out = mmh_ext.cross_stream_inject(x, g)
    want = R.cross_stream_inject(x, g)
    torch.testing.assert_close(out, want, equal_nan=True)
    d = torch.ones_like(out)
    for a, b in zip(torch.autograd.grad(out, (x, g), d), torch.autograd.grad(want, (x, g), d)):
        torch.testing.assert_close(a, b, equal_nan=True)


def test_gradcheck(kernel_mode):
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    g = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(mmh_ext.cross_stream_inject, (x, g))
    x5 = torch.randn(2, 3, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    g5 = torch.randn(2, 3, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(CrossStreamInjection(), (x5, g5))


def test_layouts_are_kept(kernel_mode):
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


def test_opcheck():
    for shape, fmt in (((2, 3, 4, 5), torch.contiguous_format), ((2, 3, 4, 5), torch.channels_last), ((7,), None)):
        x, g = torch.randn(*shape, requires_grad=True), torch.randn(*shape, requires_grad=True)
        if fmt is not None:
            x = x.detach().to(memory_format=fmt).requires_grad_(True)
            g = g.detach().to(memory_format=fmt).requires_grad_(True)
        torch.library.opcheck(torch.ops.mmh_ext.cross_stream_inject.default, (x, g))


def test_torch_compile_fullgraph():
    x = torch.randn(2, 3, 4, 5, requires_grad=True)
    g = torch.randn(2, 3, 4, 5, requires_grad=True)
    fn = torch.compile(lambda a, b: (mmh_ext.cross_stream_inject(a, b) ** 2).sum(), fullgraph=True,
                       backend="aot_eager")
    got = fn(x, g)
    gx, gg = torch.autograd.grad(got, (x, g))
    want = (R.cross_stream_inject(x, g) ** 2).sum()
    wx, wg = torch.autograd.grad(want, (x, g))
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(gx, wx)
    torch.testing.assert_close(gg, wg)


@pytest.mark.parametrize("call,exc,word", [
    (lambda: mmh_ext.cross_stream_inject(torch.randn(2, 3), torch.randn(3, 2)), ValueError, "gate"),
    (lambda: mmh_ext.cross_stream_inject(torch.randn(2, 3), torch.randn(1, 3)), ValueError, "gate"),
    (lambda: mmh_ext.cross_stream_inject(torch.ones(2, 3, dtype=torch.int64), torch.randn(2, 3)), TypeError, "x"),
    (lambda: mmh_ext.cross_stream_inject(torch.randn(2, 3), torch.randn(2, 3).cdouble()), TypeError, "gate"),
    (lambda: torch.ops.mmh_ext.cross_stream_inject(torch.randn(2, 3), torch.randn(2, 3).int()), TypeError, "gate"),
    (lambda: mmh_ext.cross_stream_inject(torch.randn(2, 3), torch.randn(2, 3, device="meta")), ValueError, "gate"),
    (lambda: mmh_ext.cross_stream_inject(torch.randn(2, 3), [[1.0]]), TypeError, "gate"),
])
def test_bad_input_names_the_argument(call, exc, word):
    with pytest.raises(exc, match=word):
        call()
