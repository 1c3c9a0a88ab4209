"""The CUDA kernels on a GPU: against the CPU kernels (float32/float16/bfloat16), gradients, mixed dtypes and
autocast (fp16/bf16, with a GradScaler step), opcheck, torch.compile, CUDA-graph capture (every launch on the current
stream, no host synchronisation), a grid-stride launch larger than the grid, and mixed devices. Skipped without a
CUDA device and a build with CUDA kernels; ``scripts/gpu_check.sh`` runs it and fails if anything here is skipped.

Without a GPU these tests cannot run; the CPU tests still cover the kernels' math, which lives in the shared
__host__ __device__ functions of csrc/*_math.h that the CPU kernels call (see docs/operators.md). Nothing here uses an
API newer than torch 2.11 (the GPU machine's torch).
"""

import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import mmh_ext
from mmh_ext import reference as R
from mmh_ext.testing import assert_rel, operators

# MMH_CUDA_TESTS_ON_CPU=1 runs this file's tests with "cpu" in place of "cuda" (the CUDA-only ones skip): a check of
# the tests' own code on a machine without a GPU, before the one run on a GPU. It says nothing about the CUDA kernels.
ON_CPU = os.environ.get("MMH_CUDA_TESTS_ON_CPU") == "1"
DEV = "cpu" if ON_CPU else "cuda"
HAS_CUDA = torch.cuda.is_available() and mmh_ext.BUILD_INFO.get("cuda_kernels") == "1"
pytestmark = pytest.mark.skipif(
    not (HAS_CUDA or ON_CPU), reason="needs a CUDA device and an mmh_ext build with CUDA kernels"
)
cuda_only = pytest.mark.skipif(ON_CPU, reason="CUDA streams, graphs or memory: not on the CPU")

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
LOW = [torch.float16, torch.bfloat16]


def _run(fn, tensors, device, dtype, weight=None, memory_format=None):
    """fn on copies of ``tensors`` (as ``dtype`` on ``device``, requiring grad): output and all input gradients."""
    inputs = []
    for i, t in enumerate(tensors):
        t = t.to(device=device, dtype=dtype)
        if memory_format is not None and t.dim() == 4 and i in (0, 1):
            t = t.contiguous(memory_format=memory_format)
        inputs.append(t.requires_grad_(True))
    out = fn(*inputs)
    w = torch.ones_like(out) if weight is None else weight.to(device=device, dtype=out.dtype)
    return out, torch.autograd.grad((out * w).sum(), inputs), inputs


def _rad_base(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randn(16, 64, 7, 7, generator=g),
        torch.randn(16, 96, 4, 4, generator=g),
        torch.randn(10, 64, generator=g) * 0.1,
        torch.randn(10, generator=g),
        torch.randn(10, 96, generator=g) * 0.1,
        torch.randn(10, generator=g),
    ]


# ------------------------------------------------------------------------------------- CUDA kernels vs CPU kernels
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("channels_last", [False, True])
def test_rad_cuda_vs_cpu(dtype, channels_last):
    base = _rad_base()
    fn = lambda *a: mmh_ext.rad_loss(*a, reduction="none")  # noqa: E731
    weight = torch.rand(16, 21)
    fmt = torch.channels_last if channels_last else None
    out_c, g_c, _ = _run(fn, base, "cpu", dtype, weight)
    out_g, g_g, ins = _run(fn, base, DEV, dtype, weight, fmt)
    assert_rel(out_g, out_c, dtype, "loss")
    assert out_g.dtype == out_c.dtype
    names = [
        "student_feat",
        "teacher_feat",
        "student_fc_weight",
        "student_fc_bias",
        "teacher_fc_weight",
        "teacher_fc_bias",
    ]
    for name, a, b, x in zip(names, g_g, g_c, ins):
        assert a.dtype == x.dtype, f"grad of {name}: {a.dtype}, input {x.dtype}"
        assert_rel(a, b, dtype, f"grad of {name}")
    # the teacher side alone (student side frozen): the other backward path
    ft = base[1].to(DEV, dtype).contiguous(memory_format=fmt or torch.contiguous_format).requires_grad_(True)
    out_t = fn(base[0].to(DEV, dtype), ft, *[t.to(DEV, dtype) for t in base[2:]])
    (g_ft,) = torch.autograd.grad((out_t * weight.to(DEV, out_t.dtype)).sum(), [ft])
    assert_rel(g_ft, g_c[1], dtype, "teacher-only grad")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("form", ["paper", "sp"])
def test_dad_cuda_vs_cpu(dtype, form):
    g = torch.Generator().manual_seed(1)
    base = [torch.randn(32, 128, 4, 4, generator=g), torch.randn(32, 64, 7, 7, generator=g)]
    base[0][3] = 0  # an all-zero sample: norms clamped, no NaN
    fn = lambda a, b: mmh_ext.dad_loss(a, b, form=form)  # noqa: E731
    out_c, g_c, _ = _run(fn, base, "cpu", dtype)
    out_g, g_g, ins = _run(fn, base, DEV, dtype)
    assert_rel(out_g, out_c, dtype, "loss")
    for a, b, x in zip(g_g, g_c, ins):
        assert a.dtype == x.dtype
        assert_rel(a, b, dtype, "grad")
    assert_rel(
        mmh_ext.cosine_discrepancy(base[1].to(DEV, dtype)),
        R.cosine_discrepancy(base[1].to(dtype).double()),
        dtype,
        "cosine_discrepancy",
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided", "5d"])
def test_inject_cuda_vs_cpu(dtype, layout):
    g = torch.Generator().manual_seed(2)
    shape = (4, 32, 3, 14, 14) if layout == "5d" else (4, 32, 14, 13)
    base = [torch.randn(*shape, generator=g), torch.randn(*shape, generator=g)]

    def fn(x, gate):
        if layout == "strided":
            x, gate = x[..., ::2], gate[..., ::2]
        out = mmh_ext.cross_stream_inject(x, gate)
        if layout == "channels_last" and not x.is_contiguous():  # the CUDA side's inputs: the layout is kept
            assert out.is_contiguous(memory_format=torch.channels_last)
        return out

    fmt = torch.channels_last if layout == "channels_last" else None
    weight = torch.randn(*(shape[:-1] + ((shape[-1] + 1) // 2,) if layout == "strided" else shape))
    out_c, g_c, _ = _run(fn, base, "cpu", dtype, weight)
    out_g, g_g, ins = _run(fn, base, DEV, dtype, weight, fmt)
    assert_rel(out_g, out_c, dtype, "out")
    for a, b, x in zip(g_g, g_c, ins):
        assert a.dtype == x.dtype
        assert_rel(a, b, dtype, "grad")


@cuda_only
@pytest.mark.parametrize("offset", [0, 1])
def test_inject_grid_stride_beyond_one_grid(offset):
    """More elements than one launch has threads (65535*32 blocks x 256): offset 1 (pointers not 16-byte aligned) takes
    the scalar kernel, whose grid-stride loop must cover the elements past the first grid; offset 0 the 16-byte-vector
    kernel, with a tail of n % 8 elements."""
    n = 65535 * 32 * 256 + 12345
    free, _total = torch.cuda.mem_get_info()
    if free < 16 * 2**30:
        pytest.skip(f"needs 16 GiB of free GPU memory, {free / 2**30:.1f} GiB free")
    gen = torch.Generator(device=DEV).manual_seed(3)
    x = torch.randn(n + offset, device=DEV, dtype=torch.bfloat16, generator=gen)[offset:].requires_grad_(True)
    gate = torch.randn(n + offset, device=DEV, dtype=torch.bfloat16, generator=gen)[offset:].requires_grad_(True)
    out = mmh_ext.cross_stream_inject(x, gate)
    with torch.no_grad():
        want = x * gate.relu()
        assert torch.equal(out, want), (
            f"forward differs from x * relu(gate) (first mismatch at index {int((out != want).nonzero()[0])} of {n})"
        )
        del want
    grad = torch.randn(n + offset, device=DEV, dtype=torch.bfloat16, generator=gen)[offset:]
    dx, dg = torch.autograd.grad(out, (x, gate), grad)
    with torch.no_grad():
        assert torch.equal(dx, grad * gate.relu())
        assert torch.equal(dg, (grad * x) * (gate > 0))


def test_cuda_gradcheck_float64():
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64, device=DEV, requires_grad=True)
    g = torch.randn(2, 3, 4, 5, dtype=torch.float64, device=DEV, requires_grad=True)
    assert torch.autograd.gradcheck(mmh_ext.cross_stream_inject, (x, g))
    args = [
        torch.randn(*s, dtype=torch.float64, device=DEV, requires_grad=True)
        for s in ((3, 4, 5, 5), (3, 6, 4, 4), (5, 4), (5,), (5, 6), (5,))
    ]
    assert torch.autograd.gradcheck(lambda *a: mmh_ext.rad_loss(*a, reduction="none"), args)
    h = torch.randn(6, 7, dtype=torch.float64, device=DEV, requires_grad=True)
    assert torch.autograd.gradcheck(mmh_ext.cosine_discrepancy, (h,))
    t = torch.randn(6, 5, dtype=torch.float64, device=DEV, requires_grad=True)
    for form in ("paper", "sp"):
        assert torch.autograd.gradcheck(lambda a, b: mmh_ext.dad_loss(a, b, form=form), (h, t))


# ------------------------------------------------------------------------------------ mixed dtypes and autocast
def _mixed_cases(low):
    """(name, fn, tensors, dtypes): each operator with the dtypes autocast hands over (features ``low``, classifier
    weights / teacher / gate float32) and the other way round."""
    g = torch.Generator().manual_seed(4)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    f32 = torch.float32
    return [
        (
            "rad",
            lambda *a: mmh_ext.rad_loss(*a, reduction="none"),
            [r(8, 32, 7, 7), r(8, 48, 7, 7), r(6, 32) * 0.2, r(6), r(6, 48) * 0.2, r(6)],
            [low, low, f32, f32, f32, f32],
        ),
        (
            "rad_fp32_teacher",
            lambda *a: mmh_ext.rad_loss(*a, reduction="none"),
            [r(8, 32, 7, 7), r(8, 48, 4, 4), r(6, 32) * 0.2, r(6), r(6, 48) * 0.2, r(6)],
            [low, f32, f32, f32, f32, f32],
        ),
        ("dad_low_student", lambda a, b: mmh_ext.dad_loss(a, b), [r(12, 16, 4, 4), r(12, 40)], [low, f32]),
        ("dad_low_teacher", lambda a, b: mmh_ext.dad_loss(a, b, form="sp"), [r(12, 16, 4, 4), r(12, 40)], [f32, low]),
        ("inject_low_x", mmh_ext.cross_stream_inject, [r(4, 8, 5, 5), r(4, 8, 5, 5)], [low, f32]),
        ("inject_low_gate", mmh_ext.cross_stream_inject, [r(4, 8, 5, 5), r(4, 8, 5, 5)], [f32, low]),
    ]


def _check_mixed(name, fn, tensors, dtypes, autocast_dtype=None):
    ins = [t.to(dt).to(DEV).requires_grad_(True) for t, dt in zip(tensors, dtypes)]
    ref_ins = [t.detach().double().requires_grad_(True) for t in ins]  # the same rounded values, float64
    if autocast_dtype is None:
        out = fn(*ins)
    else:
        with torch.autocast(DEV, dtype=autocast_dtype):
            out = fn(*ins)
    want = getattr(R, {"rad": "rad_loss", "dad": "dad_loss", "inj": "cross_stream_inject"}[name[:3]])
    kw = {"reduction": "none"} if name.startswith("rad") else ({"form": "sp"} if name == "dad_low_teacher" else {})
    ref = want(*ref_ins, **kw)
    tol_dtype = torch.float32 if out.dtype == torch.float32 else out.dtype  # math in float32; output rounding aside
    assert_rel(out, ref, tol_dtype, f"{name}: output ({out.dtype})")
    w = torch.rand(ref.shape, dtype=torch.float64, device=ref.device)  # on DEV, as ref (the float64 inputs are)
    grads = torch.autograd.grad((out * w.to(DEV, out.dtype)).sum(), ins)
    ref_grads = torch.autograd.grad((ref * w).sum(), ref_ins)
    for i, (a, b, x) in enumerate(zip(grads, ref_grads, ins)):
        assert a.dtype == x.dtype, f"{name}: gradient {i} is {a.dtype}, its input {x.dtype}"
        assert_rel(a, b, torch.float32 if a.dtype == torch.float32 else a.dtype, f"{name}: gradient {i}")


@pytest.mark.parametrize("low", LOW)
@pytest.mark.parametrize("case", range(6))
def test_mixed_dtypes(low, case):
    name, fn, tensors, dtypes = _mixed_cases(low)[case]
    _check_mixed(name, fn, tensors, dtypes)


@pytest.mark.parametrize("low", LOW)
@pytest.mark.parametrize("case", range(6))
def test_autocast_op(low, case):
    name, fn, tensors, dtypes = _mixed_cases(low)[case]
    _check_mixed(name, fn, tensors, dtypes, autocast_dtype=low)


@pytest.mark.parametrize("low", LOW)
def test_autocast_training_steps(low):
    """Three AMP steps of a small two-network setup (fp16 with a GradScaler, bf16 without), RAD + DAD + injection on
    autocast outputs against float32 classifiers: the losses match float32 math on the same features, every
    parameter gradient is float32 and finite, and the parameters move."""
    torch.manual_seed(5)
    student = nn.ModuleDict(
        {"conv": nn.Conv2d(3, 16, 3, padding=1), "gate": nn.Conv2d(3, 16, 1), "fc": nn.Linear(16, 5)}
    ).to(DEV)
    teacher = nn.ModuleDict({"conv": nn.Conv2d(3, 24, 3, padding=1), "fc": nn.Linear(24, 5)}).to(DEV)
    teacher.requires_grad_(False)
    opt = torch.optim.SGD(student.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler(DEV, init_scale=2.0**10, enabled=low == torch.float16)
    before = [p.detach().clone() for p in student.parameters()]
    x, y = torch.randn(8, 3, 12, 12, device=DEV), torch.randint(0, 5, (8,), device=DEV)
    for _ in range(3):
        with torch.autocast(DEV, dtype=low):
            fs = student["conv"](x)
            assert fs.dtype == low
            fs = mmh_ext.cross_stream_inject(fs, student["gate"](x).float())
            ft = teacher["conv"](x).float()  # the teacher's features in float32
            logits = student["fc"](fs.mean((2, 3)))
            rad = mmh_ext.rad_loss(
                fs, ft, student["fc"].weight, student["fc"].bias, teacher["fc"].weight, teacher["fc"].bias
            )
            dad = mmh_ext.dad_loss(fs, ft)
            loss = F.cross_entropy(logits, y) + rad + dad
        fs64, ft64 = fs.detach().double(), ft.detach().double()
        w = [
            p.detach().double()
            for p in (student["fc"].weight, student["fc"].bias, teacher["fc"].weight, teacher["fc"].bias)
        ]
        assert_rel(rad, R.rad_loss(fs64, ft64, *w), torch.float32 if rad.dtype == torch.float32 else low, "rad")
        assert_rel(dad, R.dad_loss(fs64, ft64), torch.float32 if dad.dtype == torch.float32 else low, "dad")
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        for n, p in student.named_parameters():
            assert p.grad is not None and p.grad.dtype == torch.float32, (
                f"{n}: grad {None if p.grad is None else p.grad.dtype}"
            )
            assert torch.isfinite(p.grad).all() or scaler.is_enabled(), f"{n}: non-finite gradient"
        scaler.step(opt)
        scaler.update()
    assert any(not torch.equal(a, b) for a, b in zip(before, student.parameters()))


# ------------------------------------------------------------------------------- opcheck, compile, graph capture
class _RecordOps(TorchDispatchMode):
    """Records every mmh_ext operator call (forward and backward ops) below autograd."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func.namespace == "mmh_ext":
            self.calls.append((func, args, kwargs))
        return func(*args, **kwargs)


@pytest.mark.parametrize("dtypes", ["float32", "bfloat16", "float16", "mixed_bf16", "mixed_fp16"])
def test_opcheck_every_op(dtypes):
    """torch.library.opcheck (schema, fake tensor, autograd registration, AOT dispatch) on every raw operator call the
    public functions make on CUDA, forward and backward, for uniform and mixed dtypes."""
    low = {
        "float32": torch.float32,
        "bfloat16": torch.bfloat16,
        "float16": torch.float16,
        "mixed_bf16": torch.bfloat16,
        "mixed_fp16": torch.float16,
    }[dtypes]
    hi = torch.float32 if dtypes.startswith("mixed") else low
    g = torch.Generator().manual_seed(6)
    c = lambda *s, dt=low, scale=1.0: (torch.randn(*s, generator=g) * scale).to(DEV, dt).requires_grad_(True)  # noqa
    rad_args = [
        c(4, 8, 5, 5),
        c(4, 12, 3, 3),
        c(3, 8, dt=hi, scale=0.3),
        c(3, dt=hi),
        c(3, 12, dt=hi, scale=0.3),
        c(3, dt=hi),
    ]
    with _RecordOps() as rec:
        loss = (
            mmh_ext.rad_loss(*rad_args)
            + mmh_ext.dad_loss(c(5, 6, 2, 2), c(5, 7, dt=hi))
            + mmh_ext.dad_loss(c(5, 6), c(5, 3, dt=hi), form="sp")
            + mmh_ext.cross_stream_inject(c(2, 3, 4, 4), c(2, 3, 4, 4, dt=hi)).square().mean()
            + mmh_ext.cosine_discrepancy(c(4, 9)).sum()
        )
        loss.float().backward()
    names = {f.__name__ for f, _, _ in rec.calls}
    for op in operators():  # every operator the library registers
        if torch._C._dispatch_has_kernel_for_dispatch_key(f"mmh_ext::{op}", "CompositeExplicitAutograd"):
            continue  # rad_loss: its autograd kernel calls rad_forward below autograd, which is recorded
        assert any(n.startswith(op + ".") or n == op for n in names), f"{op} was not called (called: {names})"
    for func, args, kwargs in rec.calls:
        if "backward" in func.__name__:  # called by autograd with grad mode off: its inputs carry no graph
            args = [a.detach() if isinstance(a, torch.Tensor) else a for a in args]
        torch.library.opcheck(func, tuple(args), kwargs)
    torch.library.opcheck(torch.ops.mmh_ext.rad_loss.default, (*rad_args, 4, [4, 2, 1], 2.0, "mean"))


def _all_ops(fs, ft, ws, bs, wt, bt, x, gate):
    return (
        mmh_ext.rad_loss(fs, ft, ws, bs, wt, bt)
        + mmh_ext.dad_loss([fs, x], [ft, gate])
        + mmh_ext.cross_stream_inject(x, gate).square().mean()
    )


def _all_inputs(low, seed=7):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s, dt=low, scale=1.0: (torch.randn(*s, generator=g) * scale).to(DEV, dt).requires_grad_(True)  # noqa
    f32 = torch.float32
    return [
        r(8, 32, 7, 7),
        r(8, 16, 7, 7),
        r(5, 32, dt=f32, scale=0.2),
        r(5, dt=f32),
        r(5, 16, dt=f32, scale=0.2),
        r(5, dt=f32),
        r(8, 4, 6, 6),
        r(8, 4, 6, 6, dt=f32),
    ]


@pytest.mark.parametrize("low", [torch.float32, torch.bfloat16])
def test_torch_compile_fullgraph_cuda(low):
    inputs = _all_inputs(low)
    eager = _all_ops(*inputs)
    g_eager = torch.autograd.grad(eager, inputs)
    compiled = torch.compile(_all_ops, fullgraph=True, dynamic=False)
    out = compiled(*inputs)
    g_out = torch.autograd.grad(out, inputs)
    assert_rel(out, eager, out.dtype, "compiled loss")  # inductor may round the sum of the terms once
    for a, b, x in zip(g_out, g_eager, inputs):
        assert a.dtype == x.dtype
        assert_rel(a, b, a.dtype, "compiled grad")


@cuda_only
def test_cuda_graph_capture_forward_and_backward():
    """Forward + backward of every operator captured in a CUDA graph: capture fails if a kernel is launched on
    another stream than the current one or if anything synchronises with the host; replays on new data equal eager."""
    static = _all_inputs(torch.float32, seed=8)

    def step():
        loss = _all_ops(*static)
        return (loss, *torch.autograd.grad(loss, static))

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = step()
    for seed in (9, 10):
        with torch.no_grad():
            for s, new in zip(static, _all_inputs(torch.float32, seed=seed)):
                s.copy_(new)
        graph.replay()
        torch.cuda.synchronize()
        want = step()
        for a, b in zip(captured, want):
            assert_rel(a, b, torch.float32, "graph replay")


@cuda_only
def test_side_stream_results_equal_default_stream():
    inputs = _all_inputs(torch.float16, seed=11)
    want = _all_ops(*inputs).detach()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            got = _all_ops(*inputs)
    torch.cuda.current_stream().wait_stream(side)
    assert_rel(got, want, torch.float32, "side stream")


# ---------------------------------------------------------------------------------------------- mixed devices
@cuda_only
def test_mixed_devices_raise_naming_the_argument():
    x = torch.randn(2, 3, 4, 5, device=DEV, requires_grad=True)
    with pytest.raises(ValueError, match="gate"):
        mmh_ext.cross_stream_inject(x, torch.randn(2, 3, 4, 5))
    args = [t.to(DEV) for t in _rad_base()]
    for i, name in ((1, "teacher_feat"), (2, "student_fc_weight"), (5, "teacher_fc_bias")):
        bad = list(args)
        bad[i] = bad[i].cpu()
        with pytest.raises(ValueError, match=name):
            mmh_ext.rad_loss(*bad)
    with pytest.raises(ValueError, match=r"teacher_feats\[0\]|student_feats\[0\]"):
        mmh_ext.dad_loss(torch.randn(4, 5, device=DEV), torch.randn(4, 5))
