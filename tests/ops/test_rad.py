"""RAD operator: the op-tester sections (optester.OpTester: reference, gradients, gradcheck, opcheck, torch.compile,
bad input) in both CPU kernel modes, and what is particular to RAD."""

import pytest
import torch
import torch.nn.functional as F

import mmh_ext
from mmh_ext import reference as R
from mmh_ext.nn import RegionAwareDistillation

from .optester import KERNEL_MODES, TOL, OpTester, Sample

# (B, Cs, Hs, Ws, Ct, Ht, Wt, K, grid, levels)
SHAPES = [
    (4, 8, 7, 7, 6, 4, 4, 5, 4, (4, 2, 1)),
    (1, 3, 5, 9, 2, 8, 3, 2, 4, (4, 2, 1)),  # batch 1, odd sizes, 2 classes
    (64, 512, 4, 4, 512, 7, 7, 60, 4, (4, 2, 1)),  # the benchmark shape
    (3, 1024, 3, 3, 16, 2, 2, 120, 3, (3, 2, 1)),  # H < grid (upsampling bins), K = 120
    (5, 17, 11, 13, 9, 13, 11, 7, 5, (5, 3, 2, 1)),  # grid and levels that do not divide
    (2, 4, 6, 6, 4, 6, 6, 3, 1, (1,)),  # one global region = vanilla KD
    (6, 5, 9, 9, 7, 9, 9, 4, 6, (4,)),  # a single level smaller than the grid
]


def _inputs(shape, dtype, requires_grad=False):
    b, cs, hs, ws_, ct, ht, wt_, k, _, _ = shape
    mk = lambda *s: torch.randn(*s, dtype=dtype, requires_grad=requires_grad)  # noqa: E731
    return mk(b, cs, hs, ws_), mk(b, ct, ht, wt_), mk(k, cs), mk(k), mk(k, ct), mk(k)


GRADCHECK_SHAPES = [  # small, so finite differences stay cheap; cover odd sizes, upsampling bins, uneven levels
    (2, 3, 5, 7, 2, 4, 4, 3, 4, (4, 2, 1)),
    (1, 2, 3, 2, 3, 6, 5, 2, 4, (4, 2, 1)),
    (2, 2, 7, 6, 2, 5, 5, 3, 5, (5, 3, 2, 1)),
    (2, 2, 6, 6, 2, 6, 6, 3, 6, (4,)),
]


def _bad(**over):
    fs, ft, ws, bs, wt, bt = _inputs(SHAPES[0], torch.float32)
    args = dict(
        student_feat=fs,
        teacher_feat=ft,
        student_fc_weight=ws,
        student_fc_bias=bs,
        teacher_fc_weight=wt,
        teacher_fc_bias=bt,
    )
    kw = {k: over.pop(k) for k in list(over) if k in ("grid", "levels", "temperature", "reduction")}
    args.update(over)
    return lambda: mmh_ext.rad_loss(*args.values(), **kw)


class TestRadLoss(OpTester):
    op = "rad_loss"
    kernel_modes = tuple(KERNEL_MODES)  # the only operator whose CPU kernels have several modes

    def sample_inputs(self):
        return [
            Sample(
                _inputs(shape, torch.float64),
                dict(grid=shape[8], levels=shape[9], temperature=3.0, reduction=reduction),
            )
            for shape in SHAPES
            for reduction in ("none", "region", "mean")
        ]

    def grad_inputs(self):
        return [
            Sample(_inputs(shape, torch.float64), dict(grid=shape[8], levels=shape[9], reduction="none"))
            for shape in (SHAPES[0], SHAPES[2], SHAPES[3])
        ]

    def grad_tol(self, dtype, want):
        """Within float32 rounding of the gradient's scale."""
        scale = want.abs().max().item()
        return dict(rtol=1e-7, atol=1e-7 * scale) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-5 * scale)

    def gradcheck_inputs(self):
        # and the reductions rad_loss's op does itself (the backward spreads d loss over the region losses)
        return [
            Sample(_inputs(shape, torch.float64), dict(grid=shape[8], levels=shape[9], reduction="none"))
            for shape in GRADCHECK_SHAPES
        ] + [
            Sample(_inputs(GRADCHECK_SHAPES[2], torch.float64), dict(grid=5, levels=(5, 3, 2, 1), reduction=r))
            for r in ("mean", "region")
        ]

    def opcheck_calls(self, device):
        calls = []
        for shape in (SHAPES[0], SHAPES[4]):
            args = [t.to(device).requires_grad_(True) for t in _inputs(shape, torch.float64)]
            calls.append((torch.ops.mmh_ext.rad_forward.default, (*args, shape[8], list(shape[9]), 2.0)))
        # the feature maps and a bias train, both classifier weights are frozen: the forward keeps no pooled grid
        args = [t.to(device).requires_grad_(i in (0, 1, 3)) for i, t in enumerate(_inputs(SHAPES[4], torch.float64))]
        calls.append((torch.ops.mmh_ext.rad_forward.default, (*args, SHAPES[4][8], list(SHAPES[4][9]), 2.0)))
        # rad_loss, what mmh_ext.rad_loss calls: rad_forward and the reduction as one autograd node
        for i, reduction in enumerate(("none", "region", "mean")):
            args = [
                t.to(device).requires_grad_(j in (0, 2, 3) or i == 0)
                for j, t in enumerate(_inputs(SHAPES[4 if i == 1 else 0], torch.float64))
            ]
            grid, levels = (SHAPES[4][8], list(SHAPES[4][9])) if i == 1 else (4, [4, 2, 1])
            calls.append((torch.ops.mmh_ext.rad_loss.default, (*args, grid, levels, 2.0, reduction)))
        args = [t.to(device) for t in _inputs(SHAPES[0], torch.float32)]
        return calls + [
            (torch.ops.mmh_ext.rad_forward.default, (*args, 4, [4, 2, 1], 2.0)),
            (torch.ops.mmh_ext.rad_loss.default, (*args, 4, [4, 2, 1], 2.0, "mean")),
        ]

    def compile_inputs(self):
        return list(_inputs(SHAPES[0], torch.float32, requires_grad=True))

    def compile_loss(self, ops, *args):
        return ops.rad_loss(*args, reduction="mean")

    compile_tol = TOL[torch.float32]

    bad_inputs = [
        (dict(teacher_feat=torch.randn(3, 6, 4, 4)), ValueError, "batch size"),
        (dict(student_feat=torch.randn(4, 8, 7)), ValueError, "student_feat"),
        (dict(student_fc_weight=torch.randn(5, 9)), ValueError, "student_fc_weight"),
        (dict(teacher_fc_bias=torch.randn(4)), ValueError, "teacher_fc_bias"),
        (dict(teacher_fc_weight=torch.randn(3, 6), teacher_fc_bias=torch.randn(3)), ValueError, "classes"),
        (dict(student_feat=torch.randn(0, 8, 7, 7), teacher_feat=torch.randn(0, 6, 4, 4)), ValueError, "empty"),
        (dict(levels=(4, 5)), ValueError, "levels[1]"),
        (dict(levels=()), ValueError, "levels"),
        (dict(grid=0), ValueError, "grid"),
        (dict(temperature=0.0), ValueError, "temperature"),
        (dict(temperature=-1.0), ValueError, "temperature"),
        (dict(reduction="sum"), ValueError, "reduction"),
        (dict(student_feat=torch.randint(0, 3, (4, 8, 7, 7))), TypeError, "student_feat"),
        (dict(teacher_feat=torch.randn(4, 6, 4, 4, dtype=torch.complex64)), TypeError, "teacher_feat"),
        (dict(student_fc_bias=torch.randn(5).to(torch.float8_e4m3fn)), TypeError, "student_fc_bias"),
        (dict(teacher_feat=torch.randn(4, 6, 4, 4, device="meta")), ValueError, "teacher_feat"),
        (
            dict(
                student_fc_weight=torch.randn(1, 8),
                student_fc_bias=torch.randn(1),
                teacher_fc_weight=torch.randn(1, 6),
                teacher_fc_bias=torch.randn(1),
            ),
            ValueError,
            "2 classes",
        ),
    ]

    def call_bad(self, over):
        _bad(**over)()


def test_reference_is_the_definition():
    """The reference itself against a literal per-region loop (independent of adaptive pooling internals)."""
    b, c, k, grid = 2, 3, 4, 4
    fs, ft, ws, bs, wt, bt = _inputs((b, c, 8, 8, c, 4, 4, k, grid, (4, 2, 1)), torch.float64)
    loss = R.rad_region_losses(fs, ft, ws, bs, wt, bt, grid=4, levels=(4, 2, 1), temperature=2.0)
    gs, gt = F.avg_pool2d(fs, 2), ft  # 8x8 -> 4x4 exactly; the teacher is already 4x4
    n = 0
    for s in (4, 2, 1):
        step = grid // s
        for iy in range(s):
            for ix in range(s):
                cell = lambda g: g[:, :, iy * step : (iy + 1) * step, ix * step : (ix + 1) * step].mean((2, 3))  # noqa
                zs, zt = (cell(gs) @ ws.t() + bs) / 2, (cell(gt) @ wt.t() + bt) / 2
                kl = F.kl_div(F.log_softmax(zs, 1), F.log_softmax(zt, 1), log_target=True, reduction="none").sum(1)
                torch.testing.assert_close(loss[:, n], 4 * kl)
                n += 1
    assert n == loss.shape[1] == 21


GRADCHECK_SHAPES = [  # small, so finite differences stay cheap; cover odd sizes, upsampling bins, uneven levels
    (2, 3, 5, 7, 2, 4, 4, 3, 4, (4, 2, 1)),
    (1, 2, 3, 2, 3, 6, 5, 2, 4, (4, 2, 1)),
    (2, 2, 7, 6, 2, 5, 5, 3, 5, (5, 3, 2, 1)),
    (2, 2, 6, 6, 2, 6, 6, 3, 6, (4,)),
]


def test_teacher_gets_no_gradient_unless_asked():
    fs, ft, ws, bs, wt, bt = _inputs(SHAPES[0], torch.float64)
    for t in (fs, ws, bs):
        t.requires_grad_(True)
    mmh_ext.rad_loss(fs, ft, ws, bs, wt, bt).backward()
    assert fs.grad is not None and ws.grad is not None and bs.grad is not None
    assert ft.grad is None and wt.grad is None and bt.grad is None
    assert fs.grad.abs().sum() > 0


@pytest.mark.parametrize("kernel_mode", KERNEL_MODES, indirect=True)
def test_layouts_channels_last_and_noncontiguous(kernel_mode):
    fs, ft, ws, bs, wt, bt = _inputs(SHAPES[4], torch.float64)
    kw = dict(grid=5, levels=(5, 3, 2, 1), reduction="none")
    want = R.rad_loss(fs, ft, ws, bs, wt, bt, **kw)
    variants = [
        (fs.to(memory_format=torch.channels_last), ft.to(memory_format=torch.channels_last)),
        (fs.transpose(2, 3).contiguous().transpose(2, 3), ft),
        (torch.stack([fs, fs], 2)[:, :, 0], ft.permute(0, 1, 3, 2).contiguous().permute(0, 1, 3, 2)),
    ]
    for a, b in variants:
        assert not (a.is_contiguous() and b.is_contiguous())
        torch.testing.assert_close(mmh_ext.rad_loss(a, b, ws, bs, wt, bt, **kw), want, **TOL[torch.float64])
    a = fs.to(memory_format=torch.channels_last).requires_grad_(True)
    mmh_ext.rad_loss(a, ft, ws, bs, wt, bt, grid=5, levels=(5, 3, 2, 1)).backward()
    b = fs.clone().requires_grad_(True)
    R.rad_loss(b, ft, ws, bs, wt, bt, grid=5, levels=(5, 3, 2, 1)).backward()
    torch.testing.assert_close(a.grad, b.grad)


@pytest.mark.parametrize("weighting", ["attention", "self", "none"])
def test_region_aware_distillation_module(weighting):
    torch.manual_seed(1)
    fs, ft, ws, bs, wt, bt = _inputs(SHAPES[0], torch.float64)
    fs.requires_grad_(True)
    m = RegionAwareDistillation(weighting=weighting).double()
    student_fc = torch.nn.Linear(8, 5).double()
    teacher_fc = (wt, bt)
    loss = m(fs, ft, student_fc, teacher_fc)
    r = R.rad_loss(fs, ft, student_fc.weight, student_fc.bias, wt, bt, reduction="region")
    want = R.rad_weighting(r, weighting, q=getattr(m, "q", None) and m.q.weight, k=getattr(m, "k", None) and m.k.weight)
    torch.testing.assert_close(loss, want)
    loss.backward()
    assert fs.grad.abs().sum() > 0 and student_fc.weight.grad.abs().sum() > 0
    n_params = sum(p.numel() for p in m.parameters())
    assert n_params == (882 if weighting == "attention" else 0)
    if weighting == "attention":
        assert m.q.weight.grad is not None and m.q.weight.grad.abs().sum() > 0


def test_vanilla_kd_is_one_global_region():
    fs, ft, ws, bs, wt, bt = _inputs(SHAPES[0], torch.float64)
    got = mmh_ext.rad_loss(fs, ft, ws, bs, wt, bt, grid=1, levels=(1,), temperature=4.0)
    zs, zt = fs.mean((2, 3)) @ ws.t() + bs, ft.mean((2, 3)) @ wt.t() + bt
    kd = F.kl_div(F.log_softmax(zs / 4, 1), F.softmax(zt / 4, 1), reduction="batchmean") * 16
    torch.testing.assert_close(got, kd)


def test_raw_op_checks_too():
    """The C++ op validates on its own (users may call torch.ops.mmh_ext.* directly)."""
    fs, ft, ws, bs, wt, bt = _inputs(SHAPES[0], torch.float32)
    with pytest.raises(ValueError, match="levels"):
        torch.ops.mmh_ext.rad_forward(fs, ft, ws, bs, wt, bt, 4, [8], 2.0)
    with pytest.raises(ValueError, match="student_fc_weight"):
        torch.ops.mmh_ext.rad_forward(fs, ft, wt, bs, wt, bt, 4, [4], 2.0)
    with pytest.raises(TypeError, match="teacher_fc_bias"):
        torch.ops.mmh_ext.rad_forward(fs, ft, ws, bs, wt, bt.int(), 4, [4], 2.0)
    with pytest.raises(TypeError, match="student_feat"):
        torch.ops.mmh_ext.rad_forward(fs.to(torch.float8_e5m2), ft, ws, bs, wt, bt, 4, [4], 2.0)
    with pytest.raises(ValueError, match="teacher_fc_weight"):
        torch.ops.mmh_ext.rad_forward(fs, ft, ws, bs, wt.to(device="meta"), bt, 4, [4], 2.0)


def test_nan_propagates_not_hidden():
    fs, ft, ws, bs, wt, bt = _inputs(SHAPES[0], torch.float32)
    fs[0, 0, 0, 0] = float("nan")
    out = mmh_ext.rad_loss(fs, ft, ws, bs, wt, bt, reduction="none")
    assert torch.isnan(out[0]).any() and torch.isfinite(out[1:]).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
# fewer than 8 pixels, remainders, up/down bins; (7, 7), (6, 6), (8, 8), (5, 8): the float32 maps at most 8 wide
# pooled row-bin first (rad_pool_avx.h's pool_blocks_narrow), (4, 4)-like ones with the per-pixel buffer
@pytest.mark.parametrize("hw", [(7, 7), (3, 5), (2, 2), (9, 13), (6, 6), (8, 8), (5, 8)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_fast_cpu_pooling_equals_the_per_item_kernels(dtype, hw, channels_last):
    """The fast CPU pooling (AVX across 8-channel blocks where the CPU has it; 17 channels leave a remainder of 1)
    against the CUDA kernels' per-item functions ("device" mode) on the same inputs: the loss and every gradient
    agree to float32 rounding (one bfloat16 rounding for a bfloat16 feature gradient)."""
    g = torch.Generator().manual_seed(1)
    fs = torch.randn(3, 17, *hw, generator=g).to(dtype)
    ft = torch.randn(3, 17, *hw, generator=g).to(dtype)
    if channels_last:
        fs, ft = fs.to(memory_format=torch.channels_last), ft.to(memory_format=torch.channels_last)
    w = torch.randn(5, 17, generator=g)
    b = torch.randn(5, generator=g)
    res = {}
    for mode in ("fast", "device"):
        x, ws = fs.clone().requires_grad_(True), w.clone().requires_grad_(True)
        with mmh_ext.cpu_kernel_mode(mode):
            loss = mmh_ext.rad_loss(x, ft, ws, b, w, b, grid=4, levels=(4, 2, 1), reduction="none")
            loss.backward(torch.linspace(0.5, 1.5, loss.numel()).view_as(loss))
        res[mode] = (loss, x.grad, ws.grad)
    torch.testing.assert_close(res["fast"][0], res["device"][0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(res["fast"][2], res["device"][2], rtol=1e-5, atol=1e-6)
    # the feature gradient sums up to 4 cells per pixel in another order: errors relative to its largest entry
    scale = res["device"][1].float().abs().max().item()
    tol = dict(rtol=1e-5, atol=1e-5 * scale) if dtype == torch.float32 else dict(rtol=8e-3, atol=1e-3 * scale)
    torch.testing.assert_close(res["fast"][1].float(), res["device"][1].float(), **tol)


@pytest.mark.parametrize("kernel_mode", KERNEL_MODES, indirect=True)
@pytest.mark.parametrize(
    "trainable",
    [
        ("student_feat",),
        ("student_feat", "student_fc_bias"),
        ("teacher_feat", "teacher_fc_weight"),
        ("student_fc_weight", "teacher_feat"),
    ],
)
def test_gradients_of_a_subset_of_inputs(kernel_mode, trainable):
    """Only some inputs require grad (a frozen teacher; a frozen classifier, whose pooled cells the forward then does
    not keep): the gradients that are asked for equal the float64 reference's, with a mean-reduced (expanded) upstream
    gradient."""
    names = [
        "student_feat",
        "teacher_feat",
        "student_fc_weight",
        "student_fc_bias",
        "teacher_fc_weight",
        "teacher_fc_bias",
    ]
    shape = (3, 6, 5, 7, 4, 6, 6, 4, 5, (5, 3, 2, 1))
    ins = [t.requires_grad_(n in trainable) for t, n in zip(_inputs(shape, torch.float64), names)]
    kw = dict(grid=5, levels=(5, 3, 2, 1), temperature=1.5)
    want = torch.autograd.grad(R.rad_loss(*ins, **kw), [t for t in ins if t.requires_grad])
    got = torch.autograd.grad(mmh_ext.rad_loss(*ins, **kw), [t for t in ins if t.requires_grad])
    for name, a, b in zip([n for n in names if n in trainable], got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=lambda m, name=name: f"d {name}: {m}")


def test_compile_with_frozen_classifiers():
    """torch.compile(fullgraph=True) with the classifier weights frozen (the benchmark's and a frozen teacher's case:
    the forward keeps no pooled grid, the backward's fake returns an empty weight gradient): the same loss and
    feature gradients as eager."""
    fs, ft, ws, bs, wt, bt = _inputs(SHAPES[0], torch.float32)
    fn = lambda *a: mmh_ext.rad_loss(*a, reduction="mean")  # noqa: E731
    res = []
    for f in (fn, torch.compile(fn, fullgraph=True)):
        x, b = fs.clone().requires_grad_(True), bs.clone().requires_grad_(True)
        loss = f(x, ft, ws, b, wt, bt)
        res.append((loss, *torch.autograd.grad(loss, [x, b])))
    for a, b in zip(res[0], res[1]):
        torch.testing.assert_close(a, b, **TOL[torch.float32])


def test_frozen_inputs_are_not_kept_for_the_backward():
    """A network whose classifier weight needs no gradient: its pooled grid is not saved (an empty placeholder); the
    trainable side keeps its own."""
    saved = []

    def pack(t):
        saved.append(tuple(t.shape))
        return t

    fs, ft, ws, bs, wt, bt = _inputs(SHAPES[0], torch.float32)
    x, w = fs.clone().requires_grad_(True), ws.clone().requires_grad_(True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        mmh_ext.rad_loss(x, ft, w, bs, wt, bt)
    b, g2 = SHAPES[0][0], SHAPES[0][8] ** 2
    assert (b, g2, SHAPES[0][1]) in saved  # the student's pooled grid: its weight trains
    assert (b, g2, SHAPES[0][4]) not in saved and (0,) in saved  # the frozen teacher's: a placeholder


@pytest.mark.parametrize("k", [2, 9, 16, 17, 23, 24, 64])
@pytest.mark.parametrize("scale", [1.0, 60.0])
def test_fast_cpu_region_math_against_float64(k, scale):
    """The fused CPU region math (float32, from 16 classes on: region logits, both log-softmax rows, KL and the
    cell-logit gradients in one pass per sample, 8 classes per vector with a masked tail, a polynomial exp;
    csrc/cpu/rad_region_avx.h) and, below 16 classes, the ATen path, against the float64 reference, for class counts
    around multiples of 8 and for logits large enough (scale 60) that most exponentials underflow to 0."""
    g = torch.Generator().manual_seed(k)
    fs, ft = torch.randn(5, 16, 7, 7, generator=g), torch.randn(5, 16, 4, 4, generator=g)
    ws, bs = torch.randn(k, 16, generator=g) * scale / 4, torch.randn(k, generator=g)
    wt, bt = torch.randn(k, 16, generator=g) * scale / 4, torch.randn(k, generator=g)
    grad = torch.rand(5, 21, generator=g)

    def run(dtype, fn):
        leaves = [t.detach().to(dtype, copy=True).requires_grad_(True) for t in (fs, ft, ws, bs, wt, bt)]
        loss = fn(*leaves, reduction="none")
        loss.backward(grad.to(dtype))
        return [loss.detach().double()] + [t.grad.double() for t in leaves]

    got, want = run(torch.float32, mmh_ext.rad_loss), run(torch.float64, R.rad_loss)
    for name, a, b in zip(["loss", "d fs", "d ft", "d ws", "d bs", "d wt", "d bt"], got, want):
        s = b.abs().max().item()
        torch.testing.assert_close(a, b, rtol=2e-4, atol=2e-5 * max(s, 1.0), msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("grads", ["both sides", "student", "student, frozen weight"])
def test_cpu_gemms_split_over_threads_match_one_thread(grads):
    """On the CPU the separate kernels run a pass's GEMMs side by side over the threads from 16 classes on
    (csrc/cpu/rad_parallel.cpp, gemms_cpu),
    or cut into blocks of rows when there are fewer GEMMs than threads: the same loss and gradients as with one
    thread (K = 60 here). The backward has 4 GEMMs (both sides), 2 (the student: d pooled and d weight) or 1 (a frozen
    student weight); with 3 threads the last two are cut into row blocks, the d weight one through a transposed
    operand."""
    fs, ft, ws, bs, wt, bt = _inputs(SHAPES[2], torch.float32)
    trainable = {"both sides": (0, 1, 2, 3, 4, 5), "student": (0, 2, 3), "student, frozen weight": (0, 3)}[grads]
    results = {}
    threads = torch.get_num_threads()
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            leaves = [t.clone().requires_grad_(i in trainable) for i, t in enumerate((fs, ft, ws, bs, wt, bt))]
            with mmh_ext.cpu_kernel_mode("separate"):  # "fast" runs its chunked passes at this batch
                loss = mmh_ext.rad_loss(*leaves, reduction="none")
            loss.backward(torch.linspace(0, 1, loss.numel()).view_as(loss))
            results[n] = [loss.detach()] + [leaves[i].grad for i in trainable]
    finally:
        torch.set_num_threads(threads)
    for got in results.values():
        for a, b in zip(got, results[1]):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6 * b.abs().max().item())


@pytest.mark.parametrize("hw", [(7, 7), (8, 8), (32, 2), (24, 3), (40, 1)])
def test_narrow_pooling_whole_blocks_equals_the_per_item_kernels(hw):
    """The row-bin-first pooling of float32 maps at most 8 wide (rad_pool_avx.h, pool_blocks_narrow) with the channels
    a multiple of 8, so the map's last block ends the allocation: its row loads past the end must be masked (widths
    1-3 reach past the last plane from several rows). Against the per-item kernels ("device" mode)."""
    g = torch.Generator().manual_seed(2)
    fs, ft = torch.randn(3, 16, *hw, generator=g), torch.randn(3, 16, *hw, generator=g)
    w, b = torch.randn(5, 16, generator=g), torch.randn(5, generator=g)
    res = {}
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # 3 samples: "fast" runs its chunked passes (at least as many samples as threads)
    try:
        for mode in ("fast", "separate", "device"):  # the chunked passes and the whole-batch kernels pool alike
            x = fs.clone().requires_grad_(True)
            with mmh_ext.cpu_kernel_mode(mode):
                loss = mmh_ext.rad_loss(x, ft, w, b, w, b, grid=4, levels=(4, 2, 1), reduction="none")
                loss.backward(torch.linspace(0.5, 1.5, loss.numel()).view_as(loss))
            res[mode] = (loss.detach(), x.grad)
    finally:
        torch.set_num_threads(before)
    for mode in ("fast", "separate"):
        for a, b_ in zip(res[mode], res["device"]):
            torch.testing.assert_close(a, b_, rtol=1e-5, atol=1e-5)


# (B, Cs, Hs, Ws, Ct, Ht, Wt, K, grid, levels, student dtype, teacher dtype). All but the first touch more than 2^17
# values in each pass (kParallelWork, csrc/cpu/rad_parallel.h), so their chunks run over the threads; the first runs
# them on the calling thread.
CHUNKED = [
    # channels past a multiple of 8 on both sides, the narrow pooling (7x7) and the general one (5x6)
    (7, 20, 7, 7, 13, 5, 6, 9, 4, (4, 2, 1), torch.float32, torch.float32),
    # the same over the threads, several samples a chunk (6 / 3 / 2 on 1 / 2 / 3 threads: 5 / 9 / 13 chunks, the
    # last one short on 1 and 2 threads), a bfloat16 student
    (26, 100, 7, 7, 61, 5, 6, 9, 4, (4, 2, 1), torch.bfloat16, torch.float32),
    (24, 64, 4, 4, 64, 4, 4, 60, 4, (4, 2, 1), torch.float32, torch.float32),  # the pooling is the identity, K = 60
    (40, 16, 14, 14, 24, 3, 3, 3, 3, (3, 1), torch.bfloat16, torch.float32),  # autocast: a bfloat16 student map
    (48, 48, 8, 8, 24, 8, 8, 2, 2, (2, 1), torch.float16, torch.float16),
    (64, 64, 6, 6, 32, 6, 6, 5, 1, (1,), torch.float32, torch.float32),  # grid 1: one cell a sample, many a chunk
]


@pytest.mark.parametrize("case", CHUNKED, ids=lambda c: f"B{c[0]}-{c[2]}x{c[3]}-K{c[7]}-{str(c[10])[6:]}")
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("trainable", ["student", "student, frozen weight", "both sides"])
def test_chunked_cpu_passes(case, threads, trainable):
    """ "fast" mode runs each pass as one loop over chunks of samples where its AVX kernels apply (the fused passes,
    csrc/cpu/rad_fused.cpp): pooling, cell-logit GEMMs and region math of a chunk together; backward, the student's cell
    gradients, d pooled and its unpooling, with d weight and d bias summed per chunk (the threads take chunks as they
    come free). Against the same kernels as separate passes and against the float64 reference, on 1-3 threads; the
    pass counter shows the chunked code ran (the backward only for the student side: a teacher that needs gradients
    takes the separate kernels), and the same call gives the same bits twice, whichever thread ran which chunk."""
    B, Cs, Hs, Ws, Ct, Ht, Wt, K, grid, levels, sdt, tdt = case
    g = torch.Generator().manual_seed(B * K)
    base = [
        torch.randn(B, Cs, Hs, Ws, generator=g).to(sdt),
        torch.randn(B, Ct, Ht, Wt, generator=g).to(tdt),
        torch.randn(K, Cs, generator=g) * 0.3,
        torch.randn(K, generator=g),
        torch.randn(K, Ct, generator=g) * 0.3,
        torch.randn(K, generator=g),
    ]
    grad = torch.rand(B, mmh_ext.rad_num_regions(levels), generator=g)
    idx = {"student": (0, 2, 3), "student, frozen weight": (0, 3), "both sides": (0, 1, 2, 3, 4, 5)}[trainable]
    kw = dict(grid=grid, levels=levels, reduction="none")

    def run(fn, dtype=None):
        leaves = [(t.to(dtype) if dtype else t.clone()).requires_grad_(i in idx) for i, t in enumerate(base)]
        loss = fn(*leaves, **kw)
        loss.backward(grad.to(loss.dtype))
        return [loss.detach()] + [leaves[i].grad for i in idx]

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        count = torch.ops.mmh_ext_testing.rad_cpu_fused_passes()
        fast = run(mmh_ext.rad_loss)
        ran = torch.ops.mmh_ext_testing.rad_cpu_fused_passes() - count
        again = run(mmh_ext.rad_loss)
        with mmh_ext.cpu_kernel_mode("separate"):
            count = torch.ops.mmh_ext_testing.rad_cpu_fused_passes()
            separate = run(mmh_ext.rad_loss)
            assert torch.ops.mmh_ext_testing.rad_cpu_fused_passes() == count
    finally:
        torch.set_num_threads(before)
    assert ran == (1 if trainable == "both sides" else 2)
    want = run(R.rad_loss, torch.float64)
    names = ["loss"] + [["d fs", "d ft", "d ws", "d bs", "d wt", "d bt"][i] for i in idx]
    for name, a, a2, b, r in zip(names, fast, again, separate, want):
        assert a.dtype == b.dtype and torch.equal(a, a2), name
        # a half-precision d feat: rounded once from the float32 sum in both paths (the sums' order differs)
        tol = (
            dict(rtol=1e-5, atol=1e-6 * r.abs().max().item())
            if a.dtype == torch.float32
            else dict(rtol=1e-2, atol=1e-3)
        )
        torch.testing.assert_close(a, b, **tol, msg=lambda m: f"{name}, chunked vs separate: {m}")
        torch.testing.assert_close(
            a.double(),
            r,
            rtol=2e-4 if a.dtype == torch.float32 else 1e-2,
            atol=2e-5 * max(r.abs().max().item(), 1.0) if a.dtype == torch.float32 else 1e-2,
            msg=lambda m: f"{name}, chunked vs float64: {m}",
        )


def test_chunked_cpu_passes_need_as_many_samples_as_threads():
    """With fewer samples than threads the chunks could not keep every thread busy: the separate kernels run (their
    loops go over sample x channel blocks)."""
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        g = torch.Generator().manual_seed(0)
        args = [torch.randn(s, generator=g) for s in ((2, 16, 7, 7), (2, 16, 7, 7), (5, 16), (5,), (5, 16), (5,))]
        fs = args[0].clone().requires_grad_(True)
        count = torch.ops.mmh_ext_testing.rad_cpu_fused_passes()
        got = torch.autograd.grad(mmh_ext.rad_loss(fs, *args[1:]), fs)[0]
        assert torch.ops.mmh_ext_testing.rad_cpu_fused_passes() == count
    finally:
        torch.set_num_threads(before)
    fs64 = args[0].double().requires_grad_(True)
    want = torch.autograd.grad(R.rad_loss(fs64, *[a.double() for a in args[1:]]), fs64)[0]
    torch.testing.assert_close(got.double(), want, rtol=2e-4, atol=1e-7)


def test_chunked_backward_bounds_its_weight_partial_sums():
    """The chunked backward keeps a (K, C) partial d weight per chunk; past 64 MiB in all the separate kernels run the
    backward (the forward stays chunked). At K = 1100, C = 5120 on 2 threads: 2 samples make 2 chunks (45 MB,
    chunked), 3 samples 3 chunks (67.6 MB, separate); both give the separate kernels' result."""
    g = torch.Generator().manual_seed(3)
    k, c = 1100, 5120
    w = [
        torch.randn(k, c, generator=g) * 0.01,
        torch.randn(k, generator=g),
        torch.randn(k, 8, generator=g),
        torch.randn(k, generator=g),
    ]
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for b, chunked_passes in ((2, 2), (3, 1)):
            args = [torch.randn(b, c, 2, 2, generator=g), torch.randn(b, 8, 2, 2, generator=g)] + w
            res = {}
            for mode in ("fast", "separate"):
                leaves = [a.clone().requires_grad_(i in (0, 2)) for i, a in enumerate(args)]
                count = torch.ops.mmh_ext_testing.rad_cpu_fused_passes()
                with mmh_ext.cpu_kernel_mode(mode):
                    mmh_ext.rad_loss(*leaves, grid=2, levels=(2, 1)).backward()
                res[mode] = (torch.ops.mmh_ext_testing.rad_cpu_fused_passes() - count, leaves[0].grad, leaves[2].grad)
            assert res["fast"][0] == chunked_passes and res["separate"][0] == 0
            for x, y in zip(res["fast"][1:], res["separate"][1:]):
                torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-8)
    finally:
        torch.set_num_threads(before)


def _against_a_guard_page(shape):
    """A float32 tensor of `shape` whose last byte is the last byte before a page that may not be read (mprotect
    PROT_NONE): a read past its end kills the process (the test fails) instead of reading a neighbour's memory."""
    import ctypes
    import mmap

    n = 4 * int(torch.Size(shape).numel())
    page = mmap.PAGESIZE
    size = (n + page - 1) // page * page + page
    buf = mmap.mmap(-1, size)
    base = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    assert libc.mprotect(base + size - page, page, 0) == 0, ctypes.get_errno()  # PROT_NONE
    t = torch.frombuffer(buf, dtype=torch.float32, count=n // 4, offset=size - page - n).view(shape)
    return t, buf


@pytest.mark.skipif(not hasattr(__import__("os"), "sysconf"), reason="needs POSIX mmap/mprotect")
@pytest.mark.parametrize("hw", [(7, 7), (8, 8), (6, 6), (32, 2), (24, 3), (40, 1), (9, 5)])
@pytest.mark.parametrize("mode", ["fast", "separate"])
def test_pooling_reads_nothing_past_the_map(hw, mode):
    """The AVX pooling reads 8 floats at a time; the narrow form loads whole 8-wide rows (up to 8 - W floats past a
    row) and masks those of the map's last block that would pass its end. With the map's last byte against a page that
    may not be read, any read past the end crashes the test process — the chunked passes (a chunk's blocks count to
    the map's end) and the whole-batch kernels alike."""
    g = torch.Generator().manual_seed(4)
    shape = (5, 16, *hw)
    fs, keep = _against_a_guard_page(shape)
    fs.copy_(torch.randn(shape, generator=g))
    ft = torch.randn(shape, generator=g)
    w, b = torch.randn(5, 16, generator=g), torch.randn(5, generator=g)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with mmh_ext.cpu_kernel_mode(mode):
            got = mmh_ext.rad_loss(fs, ft, w, b, w, b, grid=4, levels=(4, 2, 1), reduction="none")
    finally:
        torch.set_num_threads(before)
    want = R.rad_loss(*(t.double() for t in (fs, ft, w, b, w, b)), grid=4, levels=(4, 2, 1), reduction="none")
    torch.testing.assert_close(got.double(), want, rtol=2e-4, atol=2e-5)
    del fs, keep


def test_mean_of_many_float32_region_losses_is_summed_in_double():
    """rad_loss's mean over B x N float32 region losses equals the float64 mean of the same losses to float32 rounding
    (a float32 running sum over these 16384 x 21 values is off by about 7e-6 relative)."""
    g = torch.Generator().manual_seed(0)
    fs, ft = torch.randn(16384, 8, 4, 4, generator=g), torch.randn(16384, 8, 4, 4, generator=g)
    ws, bs = torch.randn(3, 8, generator=g), torch.randn(3, generator=g)
    wt, bt = torch.randn(3, 8, generator=g), torch.randn(3, generator=g)
    per_region = mmh_ext.rad_loss(fs, ft, ws, bs, wt, bt, reduction="none")
    mean = mmh_ext.rad_loss(fs, ft, ws, bs, wt, bt, reduction="mean")
    want = per_region.double().mean()
    assert abs(mean.double().item() - want.item()) <= 2 * torch.finfo(torch.float32).eps * want.abs().item()
