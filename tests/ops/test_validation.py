"""One validation layer: each operator's arguments are checked once, in C++ (TORCH_CHECK_VALUE / TORCH_CHECK_TYPE
naming the argument); the fake implementations (torch.compile, meta tensors) check the same with torch._check_value /
torch._check_type; the Python functions only default their arguments and call the op."""

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

import mmh_ext
from mmh_ext import dad as dad_module
from mmh_ext import inject as inject_module
from mmh_ext import rad as rad_module

ops = torch.ops.mmh_ext


def _rad(**over):
    args = dict(
        fs=torch.randn(4, 8, 7, 7),
        ft=torch.randn(4, 6, 4, 4),
        ws=torch.randn(5, 8),
        bs=torch.randn(5),
        wt=torch.randn(5, 6),
        bt=torch.randn(5),
        grid=4,
        levels=[4, 2, 1],
        temperature=2.0,
    )
    args.update(over)
    return ops.rad_forward.default, tuple(args.values())


def _dad(**over):
    args = dict(hs=torch.randn(4, 3, 2), ht=torch.randn(4, 5), form="paper", eps=1e-8)
    args.update(over)
    return ops.dad_forward.default, tuple(args.values())


def _cos(**over):
    args = dict(feat=torch.randn(4, 3), eps=1e-8)
    args.update(over)
    return ops.cosine_discrepancy_forward.default, tuple(args.values())


def _rad_loss(reduction="mean", **over):
    return ops.rad_loss.default, _rad(**over)[1] + (reduction,)


def _inject(**over):
    args = dict(x=torch.randn(2, 3, 4), gate=torch.randn(2, 3, 4))
    args.update(over)
    return ops.cross_stream_inject.default, tuple(args.values())


#: (op and arguments, exception, word the message must contain): every check of each forward op's host code
BAD = [
    (_rad(fs=torch.randn(4, 8, 7)), ValueError, "student_feat must be 4-D"),
    (_rad(ft=torch.randn(0, 6, 4, 4), fs=torch.randn(0, 8, 7, 7)), ValueError, "empty batch"),
    (_rad(ft=torch.randn(4, 6, 0, 4)), ValueError, "teacher_feat has an empty dimension"),
    (_rad(ft=torch.randn(3, 6, 4, 4)), ValueError, "batch size"),
    (_rad(ws=torch.randn(5, 8, 1)), ValueError, "student_fc_weight must be 2-D"),
    (_rad(ws=torch.randn(5, 9)), ValueError, "student_fc_weight has 9 input features"),
    (_rad(bt=torch.randn(4)), ValueError, "teacher_fc_bias must have shape (5,)"),
    (_rad(wt=torch.randn(3, 6), bt=torch.randn(3)), ValueError, "classes"),
    (
        _rad(ws=torch.randn(1, 8), bs=torch.randn(1), wt=torch.randn(1, 6), bt=torch.randn(1)),
        ValueError,
        "at least 2 classes",
    ),
    (_rad(temperature=0.0), ValueError, "temperature"),
    (_rad(temperature=float("inf")), ValueError, "temperature"),
    (_rad(temperature=float("nan")), ValueError, "temperature"),
    (_rad(grid=0, levels=[1]), ValueError, "grid must be >= 1"),
    (_rad(levels=[]), ValueError, "levels must not be empty"),
    (_rad(levels=[1] * 9), ValueError, "at most 8 levels"),
    (_rad(levels=[4, 5]), ValueError, "levels[1] = 5"),
    (_rad(levels=[0]), ValueError, "levels[0] = 0"),
    (_rad(fs=torch.randint(0, 3, (4, 8, 7, 7))), TypeError, "student_feat"),
    (_rad(bs=torch.randn(5).to(torch.float8_e4m3fn)), TypeError, "student_fc_bias"),
    (_rad(wt=torch.randn(5, 6, device="meta")), ValueError, "teacher_fc_weight is on meta"),
    (_rad_loss(reduction="sum"), ValueError, "reduction must be"),
    (_rad_loss(levels=[4, 5]), ValueError, "levels[1] = 5"),
    (_rad_loss(bs=torch.randn(5).to(torch.float8_e4m3fn)), TypeError, "student_fc_bias"),
    (_dad(hs=torch.randn(4)), ValueError, "student_feat must have a batch dimension"),
    (_dad(ht=torch.randn(0, 3), hs=torch.randn(0, 3)), ValueError, "empty batch"),
    (_dad(ht=torch.randn(4, 0)), ValueError, "teacher_feat has no features"),
    (_dad(ht=torch.randn(5, 3)), ValueError, "batch size"),
    (_dad(form="cos"), ValueError, "form"),
    (_dad(eps=0.0), ValueError, "eps"),
    (_dad(ht=torch.ones(4, 5, dtype=torch.int32)), TypeError, "teacher_feat"),
    (_dad(ht=torch.randn(4, 5, device="meta")), ValueError, "teacher_feat is on meta"),
    (_cos(feat=torch.randn(4, 0)), ValueError, "feat has no features"),
    (_cos(eps=-1.0), ValueError, "eps"),
    (_cos(feat=torch.randn(4, 3).cfloat()), TypeError, "feat"),
    (_inject(gate=torch.randn(2, 4, 3)), ValueError, "gate has shape"),
    (_inject(x=torch.ones(2, 3, 4, dtype=torch.int64)), TypeError, "x must be"),
    (_inject(gate=torch.randn(2, 3, 4).double().cdouble()), TypeError, "gate"),
    (_inject(gate=torch.randn(2, 3, 4, device="meta")), ValueError, "gate is on meta"),
]
IDS = [f"{call[0].__name__}-{word}" for call, _, word in BAD]


@pytest.mark.parametrize("call,exc,word", BAD, ids=IDS)
def test_the_op_checks_its_arguments(call, exc, word):
    """The C++ op (the only check on an eager call), its error naming the argument, as ValueError / TypeError."""
    op, args = call
    with pytest.raises(exc, match=__import__("re").escape(word)):
        op(*args)


@pytest.mark.parametrize("call,exc,word", BAD, ids=IDS)
def test_the_fake_checks_the_same(call, exc, word):
    """The fake implementation (what torch.compile traces; meta tensors) refuses the same arguments, with the same
    exception type and the argument named: the two stay in step."""
    op, args = call
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    with mode:
        fake = tuple(mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args)
        with pytest.raises(exc, match=__import__("re").escape(word)):
            op(*fake)


def test_the_fake_accepts_what_the_op_accepts():
    """The good arguments of each case pass the fake's checks, and the fake's output matches the op's."""
    for op, args in (_rad(), _rad_loss(), _rad_loss("none"), _rad_loss("region"), _dad(), _cos(), _inject()):
        want = op(*args)
        mode = FakeTensorMode()
        with mode:
            got = op(*(mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args))
        for g, w in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
            assert (g.shape, g.dtype) == (w.shape, w.dtype), op


@pytest.mark.parametrize(
    "module,name,call",
    [
        (rad_module, "_loss", lambda: mmh_ext.rad_loss(*[torch.randn(2, 2)] * 6, levels=[9] * 20, reduction="sum")),
        (dad_module, "_dad", lambda: mmh_ext.dad_loss(torch.randn(3), torch.randn(5), form="cos", eps=-1.0)),
        (inject_module, "_inject", lambda: mmh_ext.cross_stream_inject(torch.randn(2), torch.randn(3).int())),
    ],
)
def test_the_python_functions_leave_the_checks_to_the_op(monkeypatch, module, name, call):
    """Arguments the op refuses reach the op: the Python function checks none of them itself (a second list of checks
    would drift from the C++ one and cost host time on every call)."""
    seen = []

    def op(*args):
        seen.append(args)
        return (torch.zeros(()),) * 5 if name == "_dad" else torch.zeros(())

    monkeypatch.setattr(module, name, op)
    call()
    assert seen


@pytest.mark.parametrize(
    "call,word",
    [
        (
            lambda: mmh_ext.rad_loss(
                *[torch.randn(2, 3, 4, 4)] * 2, *[torch.randn(3, 3), torch.randn(3)] * 2, temperature="hot"
            ),
            "temperature",
        ),
        (
            lambda: mmh_ext.rad_loss(
                *[torch.randn(2, 3, 4, 4)] * 2, *[torch.randn(3, 3), torch.randn(3)] * 2, levels=[4, 2.5]
            ),
            "levels",
        ),
        (lambda: mmh_ext.cosine_discrepancy([[1.0, 2.0]]), "feat"),
        (
            lambda: mmh_ext.dad_loss([torch.randn(4, 3), torch.randn(4, 3)], [torch.randn(4, 3), "layer"]),
            "teacher_feats[1]",
        ),
        (lambda: mmh_ext.dad_loss(torch.randn(4, 3), torch.randn(4, 3), form=None), "form"),
    ],
)
def test_a_value_of_the_wrong_python_type_is_a_type_error(call, word):
    """The op binding refuses it with a RuntimeError; the Python API raises it as the TypeError it is, naming the
    argument."""
    with pytest.raises(TypeError, match=__import__("re").escape(word)):
        call()


def test_fake_max_levels_is_the_builds():
    """The fake's limit on the pyramid levels is the one the C++ code was compiled with (build information), not a
    second literal."""
    assert rad_module._MAX_LEVELS == int(mmh_ext.BUILD_INFO["rad_max_levels"])
    op, args = _rad(levels=[1] * rad_module._MAX_LEVELS, grid=1)
    op(*args)
