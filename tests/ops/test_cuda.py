"""CUDA kernels against the CPU kernels (float32/float16/bfloat16, float32 accumulation). Skipped without a GPU.

Without a GPU these tests cannot run; the CPU tests still cover the kernels' math, which lives in the shared
__host__ __device__ functions of csrc/*.h that the CPU kernels call (see the README).
"""
import pytest
import torch

import mmh_ext
from mmh_ext import reference as R

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available() or mmh_ext.BUILD_INFO.get("cuda_kernels") != "1",
    reason="needs a CUDA device and an mmh_ext build with CUDA kernels",
)

TOL = {torch.float32: dict(rtol=1e-4, atol=1e-5), torch.float16: dict(rtol=1e-2, atol=1e-2),
       torch.bfloat16: dict(rtol=5e-2, atol=5e-2)}
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def _grads(fn, inputs, weight=None):
    out = fn(*inputs)
    w = torch.ones_like(out) if weight is None else weight.to(out)
    return out, torch.autograd.grad((out * w).sum(), inputs)


def _pair(tensors, dtype):
    cpu = [t.float().requires_grad_(True) for t in tensors]
    gpu = [t.to("cuda", dtype).requires_grad_(True) for t in tensors]
    return cpu, gpu


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("channels_last", [False, True])
def test_rad_cuda_vs_cpu(dtype, channels_last):
    torch.manual_seed(0)
    base = [torch.randn(16, 64, 7, 7), torch.randn(16, 96, 4, 4), torch.randn(10, 64) * 0.1, torch.randn(10),
            torch.randn(10, 96) * 0.1, torch.randn(10)]
    if channels_last:
        base[0] = base[0].to(memory_format=torch.channels_last)
    cpu, gpu = _pair(base, dtype)
    fn = lambda *a: mmh_ext.rad_loss(*a, reduction="none")  # noqa: E731
    out_c, g_c = _grads(fn, cpu)
    out_g, g_g = _grads(fn, gpu)
    assert out_g.dtype == dtype
    torch.testing.assert_close(out_g.float().cpu(), out_c, **TOL[dtype])
    for a, b in zip(g_g, g_c):
        assert a.dtype == dtype
        torch.testing.assert_close(a.float().cpu(), b, **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("form", ["paper", "sp"])
def test_dad_cuda_vs_cpu(dtype, form):
    torch.manual_seed(0)
    base = [torch.randn(32, 128, 4, 4), torch.randn(32, 64, 7, 7)]
    base[0][3] = 0  # a zero row
    cpu, gpu = _pair(base, dtype)
    fn = lambda a, b: mmh_ext.dad_loss(a, b, form=form)  # noqa: E731
    out_c, g_c = _grads(fn, cpu)
    out_g, g_g = _grads(fn, gpu)
    torch.testing.assert_close(out_g.float().cpu(), out_c, **TOL[dtype])
    for a, b in zip(g_g, g_c):
        torch.testing.assert_close(a.float().cpu(), b, **TOL[dtype])
    torch.testing.assert_close(mmh_ext.cosine_discrepancy(gpu[1]).float().cpu(), R.cosine_discrepancy(cpu[1]),
                               **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_inject_cuda_vs_cpu(dtype):
    torch.manual_seed(0)
    base = [torch.randn(4, 32, 3, 14, 14), torch.randn(4, 32, 3, 14, 14)]
    cpu, gpu = _pair(base, dtype)
    out_c, g_c = _grads(mmh_ext.cross_stream_inject, cpu)
    out_g, g_g = _grads(mmh_ext.cross_stream_inject, gpu)
    torch.testing.assert_close(out_g.float().cpu(), out_c, **TOL[dtype])
    for a, b in zip(g_g, g_c):
        torch.testing.assert_close(a.float().cpu(), b, **TOL[dtype])


def test_cuda_gradcheck_float64():
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64, device="cuda", requires_grad=True)
    g = torch.randn(2, 3, 4, 5, dtype=torch.float64, device="cuda", requires_grad=True)
    assert torch.autograd.gradcheck(mmh_ext.cross_stream_inject, (x, g))
    args = [torch.randn(*s, dtype=torch.float64, device="cuda", requires_grad=True)
            for s in ((3, 4, 5, 5), (3, 6, 4, 4), (5, 4), (5,), (5, 6), (5,))]
    assert torch.autograd.gradcheck(lambda *a: mmh_ext.rad_loss(*a, reduction="none"), args)
    h = torch.randn(6, 7, dtype=torch.float64, device="cuda", requires_grad=True)
    assert torch.autograd.gradcheck(mmh_ext.cosine_discrepancy, (h,))


def test_cuda_opcheck_and_mixed_devices():
    x = torch.randn(2, 3, 4, 5, device="cuda", requires_grad=True)
    torch.library.opcheck(torch.ops.mmh_ext.cross_stream_inject.default, (x, torch.randn_like(x)))
    with pytest.raises(ValueError, match="gate"):
        mmh_ext.cross_stream_inject(x, torch.randn(2, 3, 4, 5))
