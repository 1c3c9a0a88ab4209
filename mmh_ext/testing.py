"""What the tests and tools share: the operators as the dispatcher has them registered (the tests' op lists), and the
tolerances for comparing an operator's result with another computation of it (the CPU kernels, the float64
reference), shared by ``tests/ops/test_cuda.py`` and ``scripts/gpu_ops_smoke.py``. The test-only hooks of the compiled
library are the operators of ``torch.ops.mmh_ext_testing`` (csrc/testing.cpp)."""

from __future__ import annotations

import math

import torch

__all__ = ["REL_TOL", "assert_rel", "operators", "rel_error"]


def operators(namespace: str = "mmh_ext") -> list[str]:
    """The tensor operators registered in ``torch.ops.<namespace>`` (those with a Tensor argument or result: not
    ``build_info``), sorted, as the dispatcher has them: each operator's file defines its own (csrc/<op>.cpp), and
    nothing else lists them."""
    prefix = namespace + "::"
    names = sorted(n[len(prefix) :] for n in torch._C._dispatch_get_all_op_names() if n.startswith(prefix))

    def has_tensor(name: str) -> bool:
        # plain attribute access: it keeps the cached OpOverload objects (calling __getattr__ would replace them, and
        # ``func is torch.ops.mmh_ext.<op>.default`` in a dispatch mode would then be False)
        schema = getattr(getattr(torch.ops, namespace), name).default._schema
        return any("Tensor" in str(a.type) for a in (*schema.arguments, *schema.returns))

    return [n for n in names if has_tensor(n)]


#: ||got - want|| / ||want|| allowed between two computations on the same inputs with float32 math inside (float64 for
#: float64): summation order (which the KL's cancellation amplifies) and, for half outputs, one rounding more or less.
REL_TOL = {torch.float64: 1e-10, torch.float32: 1e-4, torch.float16: 5e-3, torch.bfloat16: 2e-2}


def rel_error(got: torch.Tensor, want: torch.Tensor, floor: float = 1e-6) -> float:
    """||got - want|| / max(||want||, floor) over the finite entries, in float64 on the CPU (an absolute error where
    ||want|| is below ``floor``); inf when the shapes differ or the non-finite entries (NaN, +-Inf) are not the same
    values at the same places."""
    got, want = got.detach().double().cpu(), want.detach().double().cpu()
    if got.shape != want.shape:
        return math.inf
    bad_g, bad_w = ~torch.isfinite(got), ~torch.isfinite(want)
    if not torch.equal(bad_g, bad_w) or not torch.equal(got[bad_g].nan_to_num(), want[bad_w].nan_to_num()):
        return math.inf
    got, want = got[~bad_g], want[~bad_w]
    return float((got - want).norm() / want.norm().clamp_min(floor))


def assert_rel(got: torch.Tensor, want: torch.Tensor, dtype: torch.dtype, what: str = "", floor: float = 1e-6) -> None:
    """:func:`rel_error` within ``REL_TOL[dtype]``."""
    err = rel_error(got, want, floor)
    assert err <= REL_TOL[dtype], (
        f"{what}: relative error {err:.2e} > {REL_TOL[dtype]:.0e} ({dtype}; inf: the shapes "
        f"{tuple(got.shape)}, {tuple(want.shape)} or the non-finite entries differ)"
    )
