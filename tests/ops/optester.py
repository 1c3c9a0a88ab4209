"""The tester base every operator's test class reuses (as torchvision's test/test_ops.py does).

A subclass names the operator's Python API (``op``: the same name in :mod:`mmh_ext` and in the independent pure-PyTorch
:mod:`mmh_ext.reference`) and gives its sample inputs, gradcheck inputs, opcheck calls, a torch.compile case and bad
inputs. The base runs, over device x dtype x layout (contiguous / a non-contiguous view of the same values):

* forward against the reference evaluated in float64 on the CPU on the same (rounded) values;
* gradients of a randomly weighted output against the reference's;
* ``torch.autograd.gradcheck`` in float64; ``torch.library.opcheck`` of the raw operators;
* ``torch.compile(fullgraph=True)`` values and gradients against the reference in the inputs' dtype;
* bad inputs: the error type and the argument named in the message, from the op and from its fake implementation.

CUDA parametrisations skip without a GPU and a build with CUDA kernels. ``kernel_modes`` lists the CPU kernel modes a
test runs in (:func:`mmh_ext.cpu_kernel_mode`; only RAD has several).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

import mmh_ext
from mmh_ext import reference as R

HAS_CUDA = torch.cuda.is_available() and mmh_ext.BUILD_INFO.get("cuda_kernels") == "1"
DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device and an mmh_ext build with CUDA kernels"),
    ),
]
DTYPES = [torch.float64, torch.float32]
LAYOUTS = ["contiguous", "noncontiguous"]
#: mmh_ext.cpu_kernel_mode: the fast CPU kernels (chunked passes where they apply), the same kernels as separate passes
#: over the batch, and the CPU emulation of the CUDA kernels (RAD only: the other operators' CPU kernels always run
#: their CUDA kernels' per-item math). The ``kernel_mode`` fixture (conftest.py) takes one of them by indirect
#: parametrisation.
KERNEL_MODES = ["fast", "separate", "device"]
#: forward against the float64 reference
TOL = {torch.float64: dict(rtol=1e-10, atol=1e-10), torch.float32: dict(rtol=2e-4, atol=2e-5)}


@dataclass
class Sample:
    """One call: positional arguments (tensors, lists of tensors or other values) and keyword arguments."""

    args: tuple
    kwargs: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        shapes = [tuple(a.shape) if isinstance(a, torch.Tensor) else a for a in self.args]
        return f"Sample({shapes}, {self.kwargs})"


def tensors(x) -> list[torch.Tensor]:
    """The tensors in x (a tensor or nested lists / tuples), in order."""
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, (list, tuple)):
        return [t for v in x for t in tensors(v)]
    return []


def _map(x, f):
    if isinstance(x, torch.Tensor):
        return f(x)
    if isinstance(x, (list, tuple)):
        return type(x)(_map(v, f) for v in x)
    return x


def to_layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    """t's values contiguous, or as a non-contiguous view (every other element of the last dimension of a tensor
    twice as wide)."""
    if layout == "contiguous" or t.dim() == 0:
        return t.contiguous()
    wide = t.new_zeros(*t.shape[:-1], 2 * t.shape[-1])
    wide[..., ::2] = t
    return wide[..., ::2]


def prepare(sample: Sample, device, dtype, layout: str, requires_grad: bool):
    """The sample's float tensors as ``dtype`` on ``device`` in ``layout`` (leaves), and float64 CPU copies of the same
    rounded values for the reference."""

    def convert(t):
        t = to_layout(t.to(device=device, dtype=dtype), layout)
        return t.requires_grad_(requires_grad)

    args = _map(sample.args, convert)
    ref = _map(args, lambda t: t.detach().to("cpu", torch.float64).requires_grad_(requires_grad))
    return args, ref


def device_dtype_layout(test):
    """Parametrise a test over DEVICES x DTYPES x LAYOUTS."""
    for name, values in (("layout", LAYOUTS), ("dtype", DTYPES), ("device", DEVICES)):
        test = pytest.mark.parametrize(name, values)(test)
    return test


class OpTester:
    op: str = ""  #: the function's name in mmh_ext and in mmh_ext.reference
    kernel_modes: tuple[str, ...] = ("fast",)  #: CPU kernel modes the value and gradient tests run in

    # ---- what a subclass gives
    def sample_inputs(self) -> list[Sample]:
        """float64 CPU inputs for the forward check."""
        raise NotImplementedError

    def grad_inputs(self) -> list[Sample]:
        """float64 CPU inputs for the gradient check (all float tensors get gradients)."""
        return self.sample_inputs()

    def gradcheck_inputs(self) -> list[Sample]:
        """Small float64 inputs for gradcheck: tensors only in ``args``."""
        raise NotImplementedError

    def opcheck_calls(self, device) -> list[tuple]:
        """(raw operator, args) pairs for torch.library.opcheck."""
        raise NotImplementedError

    def compile_inputs(self) -> list:
        """float32 CPU arguments of :meth:`compile_loss` (the tensors requiring grad get gradients)."""
        raise NotImplementedError

    def compile_loss(self, ops, *args) -> torch.Tensor:
        """A scalar made with ``ops`` (mmh_ext or its reference)."""
        raise NotImplementedError

    bad_inputs: list = []  #: (call, exception type, word the message must contain)

    def call_bad(self, call) -> None:
        call()

    def tol(self, dtype) -> dict:
        return TOL[dtype]

    def grad_tol(self, dtype, want: torch.Tensor) -> dict:
        return {} if dtype == torch.float64 else dict(rtol=1e-3, atol=1e-7)

    compile_tol: dict = {}  #: compiled loss against the reference in the same dtype
    compile_grad_tol: dict = dict(rtol=1e-3, atol=1e-5)

    # ---- the tests
    def fn(self, *args, **kwargs):
        return getattr(mmh_ext, self.op)(*args, **kwargs)

    def expected_fn(self, *args, **kwargs):
        return getattr(R, self.op)(*args, **kwargs)

    def _calls(self, samples, device, dtype, layout, requires_grad):
        """(sample, its args, the reference's args, output, reference output) of each sample."""
        for sample in samples:
            args, ref = prepare(sample, device, dtype, layout, requires_grad)
            yield sample, args, ref, self.fn(*args, **sample.kwargs), self.expected_fn(*ref, **sample.kwargs)

    @device_dtype_layout
    def test_forward(self, device, dtype, layout, kernel_mode):
        for sample, _, _, got, want in self._calls(self.sample_inputs(), device, dtype, layout, False):
            assert got.dtype == dtype and got.shape == want.shape, sample
            torch.testing.assert_close(got.cpu(), want.to(dtype), **self.tol(dtype), msg=lambda m: f"{sample}: {m}")

    @device_dtype_layout
    def test_backward(self, device, dtype, layout, kernel_mode):
        for sample, args, ref, out, want in self._calls(self.grad_inputs(), device, dtype, layout, True):
            w = torch.randn(out.shape, dtype=out.dtype)  # representable in out's dtype: the same weights both sides
            got = torch.autograd.grad((out * w.to(out.device)).sum(), tensors(args))
            expected = torch.autograd.grad((want * w.double()).sum(), tensors(ref))
            for x, a, b in zip(tensors(args), got, expected):
                assert a.dtype == x.dtype, sample
                torch.testing.assert_close(
                    a.cpu(), b.to(a.dtype), **self.grad_tol(dtype, b), msg=lambda m: f"{sample}: {m}"
                )

    @pytest.mark.parametrize("layout", LAYOUTS)
    @pytest.mark.parametrize("device", DEVICES)
    def test_gradcheck(self, device, layout, kernel_mode):
        for sample in self.gradcheck_inputs():
            args, _ = prepare(sample, device, torch.float64, layout, requires_grad=True)
            assert torch.autograd.gradcheck(lambda *a: self.fn(*a, **sample.kwargs), args), sample

    @pytest.mark.parametrize("device", DEVICES)
    def test_opcheck(self, device):
        for op, args in self.opcheck_calls(device):
            torch.library.opcheck(op, args)

    @pytest.mark.parametrize("device", DEVICES)
    def test_torch_compile_fullgraph(self, device):
        inputs = _map(self.compile_inputs(), lambda t: t.detach().to(device).requires_grad_(t.requires_grad))
        leaves = [t for t in tensors(inputs) if t.requires_grad]
        compiled = torch.compile(lambda *a: self.compile_loss(mmh_ext, *a), fullgraph=True, backend="aot_eager")
        got = compiled(*inputs)
        got_grads = torch.autograd.grad(got, leaves)
        want = self.compile_loss(R, *inputs)
        want_grads = torch.autograd.grad(want, leaves)
        torch.testing.assert_close(got, want, **self.compile_tol)
        for a, b in zip(got_grads, want_grads):
            torch.testing.assert_close(a, b, **self.compile_grad_tol)

    def test_double_backward_is_refused(self):
        """A gradient taken with create_graph=True through the op cannot be differentiated again (the backward ops have
        no autograd): a clear error, not a second-order gradient that is silently missing or wrong; a first-order one
        with create_graph=False, and one with create_graph=True through a graph without the op, are unaffected."""
        sample = self.gradcheck_inputs()[0]
        args, _ = prepare(sample, "cpu", torch.float64, "contiguous", requires_grad=True)
        out = self.fn(*args, **sample.kwargs)
        with pytest.raises(RuntimeError, match="no double backward"):
            torch.autograd.grad(out.sum(), tensors(args), create_graph=True)
        assert all(g is not None for g in torch.autograd.grad(self.fn(*args, **sample.kwargs).sum(), tensors(args)))
        with torch.no_grad():
            frozen = self.fn(*args, **sample.kwargs)
        x = tensors(args)[0]
        (g,) = torch.autograd.grad((x * x).sum() + frozen.sum(), [x], create_graph=True)
        assert g.requires_grad

    def test_bad_input_names_the_argument(self, bad_input):
        call, exc, word = bad_input
        with pytest.raises(exc, match=re.escape(word)):
            self.call_bad(call)

    def test_fake_refuses_bad_input_alike(self, bad_input):
        """The same call with fake tensors (what torch.compile traces) reaches the op's fake implementation instead of
        its C++ code: it must refuse the input with the same exception, naming the same argument."""
        call, exc, word = bad_input
        with FakeTensorMode(allow_non_fake_inputs=True), pytest.raises(exc, match=re.escape(word)):
            self.call_bad(call)
