"""Mixed precision: every operator under torch.autocast("cpu", bfloat16) and with mixed-dtype inputs.

* Under CPU bf16 autocast, features come out of float32 conv layers in bfloat16 while the classifiers stay float32:
  each op must take them, give a float32 loss within bf16 tolerance of the float32 computation, and send float32
  gradients (close to the float32 ones) to the float32 parameters.
* Direct mixed-dtype calls (no autocast) against the float64 references of mmh_ext.reference on the same values: the
  kernels accumulate in float32, so a float32 output is float32-accurate even when the features are bfloat16.
* opcheck with bf16 / fp16 / mixed inputs; the Autocast kernels are registered for "cpu" and "cuda"; bad dtypes.
"""

import pytest
import torch
from torch import nn

import mmh_ext
from mmh_ext import reference as R
from mmh_ext.nn import RegionAwareDistillation
from mmh_ext.testing import operators

from .optester import KERNEL_MODES

BF16_TOL = dict(rtol=3e-2, atol=3e-3)  # a float32 computation vs the same network's activations in bfloat16
F32_TOL = dict(rtol=1e-4, atol=1e-5)  # float32 accumulation vs float64, on exactly the same input values
HALF = [torch.bfloat16, torch.float16]
OPS = operators()  # every operator the library registers (read from the dispatcher)


def _close_scaled(got, want, rtol):
    """Close within rtol of the tensor's scale (gradients have entries near 0 whose relative error means nothing)."""
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    torch.testing.assert_close(got, want, rtol=rtol, atol=rtol * want.abs().max().item())


class Nets(nn.Module):
    """A float32 student and teacher: conv features + linear classifiers (K = 6)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.s_conv, self.t_conv = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(4, 12, 3, padding=1)
        self.s_fc, self.t_fc = nn.Linear(16, 6), nn.Linear(12, 6)
        self.xs, self.xt = torch.randn(8, 3, 9, 9), torch.randn(8, 4, 6, 6)

    def feats(self):
        return self.s_conv(self.xs), self.t_conv(self.xt)


def _run_both(loss_fn):
    """loss_fn(nets) in float32 and under bf16 autocast: (loss, {param name: grad}) for both runs."""
    out = []
    for autocast in (False, True):
        nets = Nets()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = loss_fn(nets)
        loss.backward()
        grads = {n: p.grad for n, p in nets.named_parameters() if p.grad is not None}
        out.append((loss, grads))
    return out


def _check_autocast_run(loss_fn, expect_grads):
    (l32, g32), (lbf, gbf) = _run_both(loss_fn)
    assert l32.dtype == torch.float32 and lbf.dtype == torch.float32
    torch.testing.assert_close(lbf, l32, **BF16_TOL)
    assert set(gbf) == set(g32) == set(expect_grads)
    for name in g32:
        assert gbf[name].dtype == torch.float32, name  # float32 parameters get float32 gradients
        assert g32[name].abs().max() > 0, name
        _close_scaled(gbf[name], g32[name], 5e-2)


# ---------------------------------------------------------------------------------------- under CPU bf16 autocast
def test_rad_loss_under_autocast():
    def fn(n):
        fs, ft = n.feats()
        if torch.is_autocast_enabled("cpu"):
            assert fs.dtype == ft.dtype == torch.bfloat16  # what autocast hands the op
        return mmh_ext.rad_loss(fs, ft, n.s_fc.weight, n.s_fc.bias, n.t_fc.weight, n.t_fc.bias, temperature=2.0)

    _check_autocast_run(
        fn,
        [
            "s_conv.weight",
            "s_conv.bias",
            "s_fc.weight",
            "s_fc.bias",
            "t_conv.weight",
            "t_conv.bias",
            "t_fc.weight",
            "t_fc.bias",
        ],
    )


@pytest.mark.parametrize("weighting", ["none", "self", "attention"])
def test_region_aware_distillation_under_autocast(weighting):
    def fn(n):
        torch.manual_seed(3)
        rad = RegionAwareDistillation(weighting=weighting)
        n.t_fc.requires_grad_(False)
        fs, ft = n.feats()
        loss = rad(fs, ft.detach(), n.s_fc, n.t_fc)  # the usual frozen teacher
        assert rad.last_weights.dtype == torch.float32
        return loss

    _check_autocast_run(fn, ["s_conv.weight", "s_conv.bias", "s_fc.weight", "s_fc.bias"])


@pytest.mark.parametrize("form", ["paper", "sp"])
def test_dad_loss_under_autocast(form):
    def fn(n):
        fs, ft = n.feats()
        # a student under autocast (bf16) against a float32 teacher run outside it
        with torch.autocast("cpu", enabled=False):
            ft32 = n.t_conv(n.xt)
        return mmh_ext.dad_loss([fs, fs.mean((2, 3))], [ft, ft32], form=form)

    _check_autocast_run(fn, ["s_conv.weight", "s_conv.bias", "t_conv.weight", "t_conv.bias"])


def test_cosine_discrepancy_under_autocast():
    w = torch.randn(8, 8)

    def fn(n):
        d = mmh_ext.cosine_discrepancy(n.feats()[0])
        assert d.dtype == torch.float32
        return (d * w).sum()

    _check_autocast_run(fn, ["s_conv.weight", "s_conv.bias"])


def test_cross_stream_inject_under_autocast():
    def fn(n):
        x = n.s_conv(n.xs)[:, :12, 2:8, 2:8]
        gate = n.t_conv(n.xt)
        out = mmh_ext.cross_stream_inject(x, gate)
        if torch.is_autocast_enabled("cpu"):
            assert out.dtype == torch.bfloat16  # both bf16: the promoted dtype, nothing cast
        with torch.autocast("cpu", enabled=False):
            return (out.float() ** 2).mean()

    _check_autocast_run(fn, ["s_conv.weight", "s_conv.bias", "t_conv.weight", "t_conv.bias"])


def test_losses_are_float32_under_autocast_even_from_bf16_only_inputs():
    a = [
        torch.randn(4, 8, 5, 5).bfloat16(),
        torch.randn(4, 6, 4, 4).bfloat16(),
        torch.randn(3, 8).bfloat16(),
        torch.randn(3).bfloat16(),
        torch.randn(3, 6).bfloat16(),
        torch.randn(3).bfloat16(),
    ]
    assert mmh_ext.rad_loss(*a).dtype == torch.bfloat16  # without autocast: the inputs' dtype
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert mmh_ext.rad_loss(*a).dtype == torch.float32
        assert mmh_ext.rad_loss(*a, reduction="none").dtype == torch.float32
        assert mmh_ext.dad_loss(a[0], a[1]).dtype == torch.float32
        assert mmh_ext.cosine_discrepancy(a[0]).dtype == torch.float32
        assert mmh_ext.cross_stream_inject(a[0], a[0]).dtype == torch.bfloat16
        assert RegionAwareDistillation(weighting="attention")(a[0], a[1], a[2:4], a[4:6]).dtype == torch.float32
    # the float32 value under autocast is the float32 computation on the bf16 values (no bf16 rounding of the loss)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = mmh_ext.rad_loss(*a)
    torch.testing.assert_close(got, R.rad_loss(*[t.double() for t in a]).float(), **F32_TOL)


def test_autocast_kernels_are_registered_for_cpu_and_cuda():
    for op in OPS:
        for key in ("AutocastCPU", "AutocastCUDA"):
            assert torch._C._dispatch_has_kernel_for_dispatch_key(f"mmh_ext::{op}", key), (op, key)


def _mixed_rad_inputs():
    torch.manual_seed(1)
    return [
        torch.randn(6, 32, 7, 7).bfloat16(),
        torch.randn(6, 24, 5, 5).bfloat16(),
        torch.randn(10, 32) * 0.2,
        torch.randn(10),
        torch.randn(10, 24) * 0.2,
        torch.randn(10),
    ]


def test_autocast_is_off_inside_the_ops():
    """The ops' internal float32 GEMMs must not be recast to bf16 by autocast: same bits with and without autocast.

    With the default fall-through (swapped in below) autocast reaches the ATen matmuls inside the kernel and the result
    changes — this is what the registered Autocast kernels prevent. Checked for cosine_discrepancy (its Gram matrix is
    an at::mm) and for RAD with K = 10 classes in the "separate" CPU kernel mode (below 16 classes its region math is
    ATen baddbmm/bmm; the chunked "fast" passes and the AVX region math call their GEMMs through at::cpu::, which
    autocast cannot reach, while on CUDA the GEMMs still go through the dispatcher)."""
    a = _mixed_rad_inputs()
    h = [torch.randn(16, 64).bfloat16(), torch.randn(16, 40)]
    plain = mmh_ext.rad_loss(*a, reduction="none"), mmh_ext.dad_loss(*h), mmh_ext.cosine_discrepancy(h[1])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = mmh_ext.rad_loss(*a, reduction="none"), mmh_ext.dad_loss(*h), mmh_ext.cosine_discrepancy(h[1])
    for p, q in zip(plain, auto):
        assert p.dtype == q.dtype == torch.float32
        assert torch.equal(p, q)

    def rad_separate():
        with mmh_ext.cpu_kernel_mode("separate"):
            return mmh_ext.rad_loss(*a, reduction="none")

    # rad_loss calls rad_forward inside: both Autocast kernels go for autocast to reach its GEMMs
    for op, call, want in (
        ("cosine_discrepancy_forward", lambda: mmh_ext.cosine_discrepancy(h[1]), plain[2]),
        ("rad_loss,rad_forward", rad_separate, rad_separate()),
    ):
        lib = torch.library.Library("mmh_ext", "IMPL")
        try:
            for name in op.split(","):
                lib.impl(name, torch.library.fallthrough_kernel, "AutocastCPU")  # (warns: overriding a kernel)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                try:
                    leaked = call()
                except (NotImplementedError, RuntimeError) as e:  # a bf16 result reached a float32 kernel
                    assert "BFloat16" in str(e) or "dtype" in str(e), e
                    leaked = None
        finally:
            lib._destroy()
        assert leaked is None or not torch.equal(leaked, want), op
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert torch.equal(call(), want)  # our kernel is back


# ---------------------------------------------------------------------- mixed dtypes without autocast, vs float64
RAD_MIXES = {  # dtypes of (student_feat, teacher_feat, student_w, student_b, teacher_w, teacher_b)
    "bf16 feats, f32 fc": (torch.bfloat16, torch.bfloat16, torch.float32, torch.float32, torch.float32, torch.float32),
    "f16 feats, f32 fc": (torch.float16, torch.float16, torch.float32, torch.float32, torch.float32, torch.float32),
    "bf16 student, f32 teacher": (
        torch.bfloat16,
        torch.float32,
        torch.float32,
        torch.float32,
        torch.float32,
        torch.float32,
    ),
    "f16 student, bf16 teacher, bf16 bias": (
        torch.float16,
        torch.bfloat16,
        torch.float32,
        torch.bfloat16,
        torch.float32,
        torch.float32,
    ),
    "all bf16": (torch.bfloat16,) * 6,
    "all f16": (torch.float16,) * 6,
    "f32 feats, f64 fc": (torch.float32, torch.float32, torch.float64, torch.float64, torch.float64, torch.float64),
    "bf16 student, f64 rest": (
        torch.bfloat16,
        torch.float64,
        torch.float64,
        torch.float64,
        torch.float64,
        torch.float64,
    ),
}


def _promoted(dtypes):
    out = dtypes[0]
    for d in dtypes[1:]:
        out = torch.promote_types(out, d)
    return out


@pytest.mark.parametrize("mix", list(RAD_MIXES))
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("kernel_mode", KERNEL_MODES, indirect=True)
def test_rad_mixed_dtypes_against_float64_reference(mix, channels_last, kernel_mode):
    dtypes = RAD_MIXES[mix]
    torch.manual_seed(2)
    base = [
        torch.randn(5, 12, 7, 6),
        torch.randn(5, 9, 4, 5),
        torch.randn(7, 12) * 0.3,
        torch.randn(7),
        torch.randn(7, 9) * 0.3,
        torch.randn(7),
    ]
    args = [b.to(d) for b, d in zip(base, dtypes)]
    if channels_last:
        args[0] = args[0].to(memory_format=torch.channels_last)
    args = [a.requires_grad_(True) for a in args]
    ref = [a.detach().double().requires_grad_(True) for a in args]  # exactly the same values
    kw = dict(grid=4, levels=(4, 2, 1), temperature=2.0, reduction="none")
    got, want = mmh_ext.rad_loss(*args, **kw), R.rad_loss(*ref, **kw)
    out_dtype = _promoted(dtypes)
    assert got.dtype == out_dtype
    if out_dtype in HALF:  # computed in float32, rounded once to the output dtype
        torch.testing.assert_close(got, want.to(out_dtype), rtol=1e-2, atol=1e-3)
    else:
        torch.testing.assert_close(got.double(), want, **F32_TOL)
    w = torch.rand(got.shape, dtype=torch.float64)
    g_got = torch.autograd.grad((got * w.to(got.dtype)).sum(), args)
    g_want = torch.autograd.grad((want * w).sum(), ref)
    for a, g, gw in zip(args, g_got, g_want):
        assert g.dtype == a.dtype  # each gradient in its own input's dtype
        if a.dtype in HALF or out_dtype in HALF:
            _close_scaled(g.double(), gw, 2e-2)
        else:
            _close_scaled(g.double(), gw, 1e-4)


@pytest.mark.parametrize("form", ["paper", "sp"])
@pytest.mark.parametrize(
    "ds,dt",
    [
        (torch.bfloat16, torch.float32),
        (torch.float32, torch.float16),
        (torch.float16, torch.bfloat16),
        (torch.bfloat16, torch.bfloat16),
        (torch.float16, torch.float64),
    ],
)
def test_dad_mixed_dtypes_against_float64_reference(form, ds, dt):
    torch.manual_seed(4)
    hs = torch.randn(12, 6, 3, 3).to(ds).requires_grad_(True)
    ht = torch.randn(12, 20).to(dt).requires_grad_(True)
    rs, rt = hs.detach().double().requires_grad_(True), ht.detach().double().requires_grad_(True)
    got, want = mmh_ext.dad_loss(hs, ht, form=form), R.dad_loss(rs, rt, form=form)
    out_dtype = torch.promote_types(ds, dt)
    assert got.dtype == out_dtype
    torch.testing.assert_close(got.double(), want, **(dict(rtol=1e-2, atol=1e-4) if out_dtype in HALF else F32_TOL))
    g_got, g_want = torch.autograd.grad(got, (hs, ht)), torch.autograd.grad(want, (rs, rt))
    for a, g, gw in zip((hs, ht), g_got, g_want):
        assert g.dtype == a.dtype
        _close_scaled(g.double(), gw, 2e-2 if a.dtype in HALF or out_dtype in HALF else 1e-4)


@pytest.mark.parametrize("dtype", HALF)
def test_cosine_discrepancy_half_against_float64_reference(dtype):
    h = torch.randn(9, 5, 4).to(dtype).requires_grad_(True)
    r = h.detach().double().requires_grad_(True)
    got, want = mmh_ext.cosine_discrepancy(h), R.cosine_discrepancy(r)
    assert got.dtype == dtype
    torch.testing.assert_close(got, want.to(dtype), rtol=1e-2, atol=1e-3)
    w = torch.randn(9, 9, dtype=torch.float64)
    g, gw = torch.autograd.grad((got * w.to(dtype)).sum(), h)[0], torch.autograd.grad((want * w).sum(), r)[0]
    assert g.dtype == dtype
    _close_scaled(g.double(), gw, 3e-2)


@pytest.mark.parametrize(
    "dx,dg",
    [
        (torch.bfloat16, torch.float32),
        (torch.float32, torch.float16),
        (torch.float16, torch.bfloat16),
        (torch.bfloat16, torch.bfloat16),
        (torch.float16, torch.float16),
        (torch.float64, torch.bfloat16),
    ],
)
@pytest.mark.parametrize("channels_last", [False, True])
def test_inject_mixed_dtypes_exact(dx, dg, channels_last):
    """Computed in float32 (float64) from the exact input values and rounded once: equal to the float64 product
    rounded to the promoted dtype; gradients likewise, each in its input's dtype."""
    torch.manual_seed(5)
    x, g = torch.randn(3, 8, 5, 5).to(dx), torch.randn(3, 8, 5, 5).to(dg)
    g[0, 0, 0, :3] = torch.tensor([0.0, -0.0, float("nan")])
    if channels_last:
        x, g = x.to(memory_format=torch.channels_last), g.to(memory_format=torch.channels_last)
    x.requires_grad_(True)
    g.requires_grad_(True)
    out = mmh_ext.cross_stream_inject(x, g)
    promoted = torch.promote_types(dx, dg)
    assert out.dtype == promoted
    assert out.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    x64, g64 = x.detach().double(), g.detach().double()
    torch.testing.assert_close(out, (x64 * torch.relu(g64)).to(promoted), rtol=0, atol=0, equal_nan=True)
    d = torch.randn(out.shape).to(promoted)
    gx, gg = torch.autograd.grad(out, (x, g), d)
    assert gx.dtype == dx and gg.dtype == dg
    d64 = d.double()
    # rounded to the promoted dtype (the kernel's dtype), then to each input's own dtype
    torch.testing.assert_close(gx, (d64 * torch.relu(g64)).to(promoted).to(dx), rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(
        gg,
        torch.where(g64 > 0, d64 * x64, 0.0).where(~g64.isnan(), d64 * x64).to(promoted).to(dg),
        rtol=0,
        atol=0,
        equal_nan=True,
    )


@pytest.mark.parametrize("dtype", HALF)
def test_inject_half_equals_eager(dtype):
    x = torch.randn(4, 16, 9, 9).to(dtype).requires_grad_(True)
    g = torch.randn(4, 16, 9, 9).to(dtype).requires_grad_(True)
    out, want = mmh_ext.cross_stream_inject(x, g), R.cross_stream_inject(x, g)
    assert torch.equal(out, want)
    d = torch.randn_like(out)
    for a, b in zip(torch.autograd.grad(out, (x, g), d), torch.autograd.grad(want, (x, g), d)):
        assert a.dtype == dtype and torch.equal(a, b)


# ------------------------------------------------------------------------------------------------------- opcheck
@pytest.mark.parametrize("mix", ["bf16 feats, f32 fc", "all bf16", "all f16", "f16 student, bf16 teacher, bf16 bias"])
def test_opcheck_rad(mix):
    torch.manual_seed(6)
    shapes = [(3, 5, 6, 7), (3, 4, 4, 4), (4, 5), (4,), (4, 4), (4,)]
    args = [torch.randn(s).to(d).requires_grad_(True) for s, d in zip(shapes, RAD_MIXES[mix])]
    torch.library.opcheck(torch.ops.mmh_ext.rad_forward.default, (*args, 4, [4, 2, 1], 2.0))


@pytest.mark.parametrize(
    "ds,dt",
    [
        (torch.bfloat16, torch.bfloat16),
        (torch.float16, torch.float16),
        (torch.bfloat16, torch.float32),
        (torch.float16, torch.float64),
    ],
)
def test_opcheck_dad_and_cosine(ds, dt):
    hs = torch.randn(6, 3, 2).to(ds).requires_grad_(True)
    ht = torch.randn(6, 5).to(dt).requires_grad_(True)
    for form in ("paper", "sp"):
        torch.library.opcheck(torch.ops.mmh_ext.dad_forward.default, (hs, ht, form, 1e-8))
    torch.library.opcheck(torch.ops.mmh_ext.cosine_discrepancy_forward.default, (hs, 1e-8))


@pytest.mark.parametrize(
    "dx,dg",
    [
        (torch.bfloat16, torch.bfloat16),
        (torch.float16, torch.float16),
        (torch.bfloat16, torch.float32),
        (torch.float32, torch.float16),
    ],
)
def test_opcheck_inject(dx, dg):
    x = torch.randn(2, 3, 4, 5).to(dx).requires_grad_(True)
    g = torch.randn(2, 3, 4, 5).to(dg).requires_grad_(True)
    torch.library.opcheck(torch.ops.mmh_ext.cross_stream_inject.default, (x, g))
    xc = x.detach().to(memory_format=torch.channels_last).requires_grad_(True)
    gc = g.detach().to(memory_format=torch.channels_last).requires_grad_(True)
    torch.library.opcheck(torch.ops.mmh_ext.cross_stream_inject.default, (xc, gc))


def test_torch_compile_under_autocast():
    a = [t.requires_grad_(True) for t in _mixed_rad_inputs()]
    fn = torch.compile(
        lambda *t: mmh_ext.rad_loss(*t) + mmh_ext.dad_loss(t[0], t[1]), fullgraph=True, backend="aot_eager"
    )
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = fn(*a)
        want = mmh_ext.rad_loss(*a) + mmh_ext.dad_loss(a[0], a[1])
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want)
    for g, w in zip(torch.autograd.grad(got, a), torch.autograd.grad(want, a)):
        assert g.dtype == w.dtype
        torch.testing.assert_close(g, w)


# ----------------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "call,exc,word",
    [
        (
            lambda: mmh_ext.rad_loss(*_mixed_rad_inputs()[:5], torch.randn(10).to(torch.float8_e4m3fn)),
            TypeError,
            "teacher_fc_bias",
        ),
        (lambda: mmh_ext.rad_loss(_mixed_rad_inputs()[0].int(), *_mixed_rad_inputs()[1:]), TypeError, "student_feat"),
        (
            lambda: mmh_ext.rad_loss(
                *_mixed_rad_inputs()[:2], torch.randn(10, 32, device="meta"), *_mixed_rad_inputs()[3:]
            ),
            ValueError,
            "student_fc_weight",
        ),
        (
            lambda: mmh_ext.rad_loss(
                *_mixed_rad_inputs()[:2], torch.randn(10, 31).bfloat16(), *_mixed_rad_inputs()[3:]
            ),
            ValueError,
            "student_fc_weight",
        ),
        (lambda: mmh_ext.dad_loss(torch.randn(4, 3).bfloat16(), torch.randn(5, 3)), ValueError, "batch size"),
        (lambda: mmh_ext.dad_loss(torch.randn(4, 3).half(), torch.randn(4, 3).cfloat()), TypeError, "teacher_feats[0]"),
        (lambda: mmh_ext.cross_stream_inject(torch.randn(2, 3).bfloat16(), torch.randn(3, 2)), ValueError, "gate"),
        (
            lambda: mmh_ext.cross_stream_inject(torch.randn(2, 3).half(), torch.randn(2, 3, device="meta")),
            ValueError,
            "gate",
        ),
        (
            lambda: torch.ops.mmh_ext.cross_stream_inject(torch.randn(2, 3).to(torch.float8_e5m2), torch.randn(2, 3)),
            TypeError,
            "x",
        ),
    ],
)
def test_bad_input_still_names_the_argument(call, exc, word):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with pytest.raises(exc, match=__import__("re").escape(word)):
            call()
