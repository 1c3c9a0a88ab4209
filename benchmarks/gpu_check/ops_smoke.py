"""A small run of every mmh_ext operator, forward and backward, checked against the float64 reference.

    python scripts/gpu_ops_smoke.py [--device cuda|cpu] [--dtypes float32,float16,bfloat16]
    python -m benchmarks.gpu_check.ops_smoke [...]     (the same)

Made to run under ``compute-sanitizer`` (memcheck, racecheck) by the GPU check (``scripts/gpu_check.sh``): few,
small calls whose sizes are not multiples of the 256-thread blocks, in the layouts the kernels index differently
(contiguous, channels_last, strided views, 5-D), with the teacher side requiring grad (RAD's and DAD's second
backward path), a zero sample and B = 1 for DAD, one call of each operator with mixed input dtypes (what autocast
hands over), and every benchmarked operator at its tiny shape (benchmarks.ops). Every result is compared with
:mod:`mmh_ext.reference` in float64 on the CPU, so the script also fails on wrong values. Prints one line per check;
exit status 1 if any check failed.
"""

from __future__ import annotations

import argparse
import sys
import traceback

import torch

from mmh_ext.testing import REL_TOL, rel_error


def _make(shape, dtype, device, layout="contiguous", scale=1.0, seed=0):
    """A float64 CPU master copy (requires grad) and the same values as ``dtype`` on ``device`` in ``layout``."""
    g = torch.Generator().manual_seed(seed)
    if layout == "strided":  # every other column of a twice-as-wide tensor
        master = (torch.randn(*shape[:-1], 2 * shape[-1], generator=g, dtype=torch.float64) * scale)[..., ::2]
    else:
        master = torch.randn(*shape, generator=g, dtype=torch.float64) * scale
    dev = master.to(device=device, dtype=dtype)
    if layout == "channels_last":
        dev = dev.contiguous(memory_format=torch.channels_last)
    elif layout == "strided":
        wide = torch.zeros(*shape[:-1], 2 * shape[-1], dtype=dtype, device=device)
        wide[..., ::2] = dev
        dev = wide[..., ::2]
    # round the master to what the device copy holds, so the reference sees the same inputs
    master = dev.detach().double().cpu().clone().requires_grad_(True)
    return master, dev.detach().requires_grad_(True)


class Checker:
    def __init__(self) -> None:
        self.failed: list[str] = []
        self.count = 0

    def compare(self, name: str, got, want, dtype, floor: float = 1e-3) -> None:
        self.count += 1
        tol = REL_TOL[dtype]
        got = got if isinstance(got, (list, tuple)) else [got]
        want = want if isinstance(want, (list, tuple)) else [want]
        errs = [rel_error(a, b, floor) for a, b in zip(got, want)]
        worst = max(errs)
        ok = worst <= tol and len(got) == len(want)
        print(f"{'ok  ' if ok else 'FAIL'} {name}: max relative error {worst:.2e} (tolerance {tol:.0e})", flush=True)
        if not ok:
            self.failed.append(name)

    def run(self, name: str, fn) -> None:
        try:
            fn()
        except Exception:  # noqa: BLE001  (report and go on to the next check)
            self.count += 1
            print(f"FAIL {name}: exception\n{traceback.format_exc()}", flush=True)
            self.failed.append(name)


def check_rad(c: Checker, device: str, dtype: torch.dtype) -> None:
    import mmh_ext
    from mmh_ext import reference as R

    for layout, (b, cs, hs, ws_, ct, ht, wt_, k) in (
        ("contiguous", (5, 7, 5, 6, 9, 3, 4, 3)),
        ("channels_last", (3, 33, 7, 7, 17, 4, 4, 5)),
        ("strided", (2, 6, 9, 5, 6, 9, 5, 2)),
    ):
        name = f"rad_loss {dtype} {layout} B={b}"

        def one():
            fs = _make((b, cs, hs, ws_), dtype, device, layout, seed=1)
            ft = _make((b, ct, ht, wt_), dtype, device, layout, seed=2)
            w_s, b_s = _make((k, cs), dtype, device, scale=0.3, seed=3), _make((k,), dtype, device, seed=4)
            w_t, b_t = _make((k, ct), dtype, device, scale=0.3, seed=5), _make((k,), dtype, device, seed=6)
            args = [fs, ft, w_s, b_s, w_t, b_t]
            got = mmh_ext.rad_loss(*(a[1] for a in args), reduction="none")
            want = R.rad_loss(*(a[0] for a in args), reduction="none")
            d = torch.rand(want.shape, dtype=torch.float64)
            g_got = torch.autograd.grad(got, [a[1] for a in args], d.to(device=device, dtype=got.dtype))
            g_want = torch.autograd.grad(want, [a[0] for a in args], d)
            c.compare(name, [got, *g_got], [want, *g_want], dtype)

        c.run(name, one)


def check_dad(c: Checker, device: str, dtype: torch.dtype) -> None:
    import mmh_ext
    from mmh_ext import reference as R

    for form in ("paper", "sp"):
        for b, s_shape, t_shape in ((7, (13, 3, 3), (5, 5)), (1, (4,), (6,))):
            name = f"dad_loss {dtype} {form} B={b}"

            def one():
                hs = _make((b, *s_shape), dtype, device, seed=7)
                ht = _make((b, *t_shape), dtype, device, seed=8)
                # an all-zero student sample: norms clamped, no NaN. Not in float16: that sample's true gradient is of
                # order 1/eps = 1e8, beyond float16's range (65504), so any float16 gradient of it is inf
                if b > 1 and dtype != torch.float16:
                    with torch.no_grad():
                        hs[0][2].zero_(), hs[1][2].zero_()
                got = mmh_ext.dad_loss([hs[1]], [ht[1]], form=form)
                g_got = torch.autograd.grad(got, [hs[1], ht[1]])
                if b == 1:  # documented: one sample gives a 1 x 1 matrix equal for both networks -> loss 0, grad 0
                    want, g_want = torch.zeros(()), [torch.zeros_like(hs[0]), torch.zeros_like(ht[0])]
                else:
                    want = R.dad_loss([hs[0]], [ht[0]], form=form)
                    g_want = torch.autograd.grad(want, [hs[0], ht[0]])
                c.compare(name, [got, *g_got], [want, *g_want], dtype, floor=1.0 if b == 1 else 1e-3)

            c.run(name, one)


def check_inject(c: Checker, device: str, dtype: torch.dtype) -> None:
    import mmh_ext
    from mmh_ext import reference as R

    for shape, layout in (((3, 5, 7, 11), "channels_last"), ((2, 3, 4, 5, 7), "contiguous"), ((1001,), "strided")):
        name = f"cross_stream_inject {dtype} {layout} {shape}"

        def one():
            x, g = _make(shape, dtype, device, layout, seed=9), _make(shape, dtype, device, layout, seed=10)
            got = mmh_ext.cross_stream_inject(x[1], g[1])
            want = R.cross_stream_inject(x[0], g[0])
            d = torch.randn(shape, dtype=torch.float64)
            g_got = torch.autograd.grad(got, [x[1], g[1]], d.to(device=device, dtype=got.dtype))
            g_want = torch.autograd.grad(want, [x[0], g[0]], d)
            c.compare(name, [got, *g_got], [want, *g_want], dtype)

        c.run(name, one)


def check_mixed(c: Checker, device: str, low: torch.dtype) -> None:
    """Features in ``low`` with float32 classifier / teacher / gate, as autocast hands them: values against the
    float64 reference on the same (rounded) inputs; each gradient in its input's dtype."""
    import mmh_ext
    from mmh_ext import reference as R

    f32 = torch.float32

    def rad():
        fs, ft = _make((4, 6, 5, 5), low, device, seed=11), _make((4, 6, 3, 3), low, device, seed=12)
        params = [_make(s, f32, device, scale=0.3, seed=13 + i) for i, s in enumerate(((3, 6), (3,), (3, 6), (3,)))]
        args = [fs, ft, *params]
        got = mmh_ext.rad_loss(*(a[1] for a in args))
        want = R.rad_loss(*(a[0] for a in args))
        g_got = torch.autograd.grad(got, [fs[1], params[0][1], params[1][1]])
        g_want = torch.autograd.grad(want, [fs[0], params[0][0], params[1][0]])
        _dtypes(c, "rad_loss mixed", g_got, [low, f32, f32])
        c.compare(f"rad_loss {low} features + float32 classifiers", [got, *g_got], [want, *g_want], low)

    def dad():
        hs, ht = _make((6, 4, 3, 3), low, device, seed=17), _make((6, 10), f32, device, seed=18)
        got = mmh_ext.dad_loss(hs[1], ht[1])
        want = R.dad_loss(hs[0], ht[0])
        g_got = torch.autograd.grad(got, [hs[1], ht[1]])
        g_want = torch.autograd.grad(want, [hs[0], ht[0]])
        _dtypes(c, "dad_loss mixed", g_got, [low, f32])
        c.compare(f"dad_loss {low} student + float32 teacher", [got, *g_got], [want, *g_want], low)

    def inject():
        x, g = _make((2, 3, 5, 7), low, device, seed=19), _make((2, 3, 5, 7), f32, device, seed=20)
        got = mmh_ext.cross_stream_inject(x[1], g[1])
        want = R.cross_stream_inject(x[0], g[0])
        d = torch.randn(want.shape, dtype=torch.float64)
        g_got = torch.autograd.grad(got, [x[1], g[1]], d.to(device=device, dtype=got.dtype))
        g_want = torch.autograd.grad(want, [x[0], g[0]], d)
        _dtypes(c, "cross_stream_inject mixed", g_got, [low, f32])
        c.compare(f"cross_stream_inject {low} x + float32 gate", [got, *g_got], [want, *g_want], low)

    for name, fn in (("rad mixed", rad), ("dad mixed", dad), ("inject mixed", inject)):
        c.run(f"{name} {low}", fn)


def _dtypes(c: Checker, name: str, grads, want) -> None:
    got = [g.dtype for g in grads]
    if got != list(want):
        raise AssertionError(f"{name}: gradient dtypes {got}, expected each input's dtype {list(want)}")


def check_tiny_cases(c: Checker, device: str, dtype: torch.dtype) -> None:
    """Every benchmarked operator (:mod:`benchmarks.ops.registry`, so a new one without an edit here) at its tiny
    shape, forward and backward, against its reference in float64 on the CPU."""
    from benchmarks.ops import registry

    for m in registry.OPS:
        case = m.tiny_case(device)
        name = f"{case.op} tiny {dtype}"

        def one():
            inputs, grads = case.make()
            need = [any(t is g for g in grads) for t in inputs]
            dev = [t.detach().to(dtype).requires_grad_(n) for t, n in zip(inputs, need)]
            ref = [t.detach().cpu().double().requires_grad_(n) for t, n in zip(dev, need)]
            out, want = case.fused(*dev), case.ref(*ref)
            w = torch.randn(want.shape, dtype=torch.float64)
            got_g = torch.autograd.grad((out.double() * w.to(out.device)).sum(), [t for t in dev if t.requires_grad])
            want_g = torch.autograd.grad((want * w).sum(), [t for t in ref if t.requires_grad])
            c.compare(name, [out, *got_g], [want, *want_g], dtype)

        c.run(name, one)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument(
        "--dtypes", default=None, help="comma-separated (default: cuda float32,float16,bfloat16; cpu float32,float64)"
    )
    p.add_argument("--no-mixed", action="store_true", help="skip the mixed-dtype calls")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_ops_smoke: --device cuda but torch sees no CUDA device", file=sys.stderr)
        return 2
    import mmh_ext

    if args.device == "cuda" and mmh_ext.BUILD_INFO.get("cuda_kernels") != "1":
        print("gpu_ops_smoke: this mmh_ext build has no CUDA kernels", file=sys.stderr)
        return 2
    names = args.dtypes or ("float32,float16,bfloat16" if args.device == "cuda" else "float32,float64")
    dtypes = []
    for n in names.split(","):
        dt = getattr(torch, n.strip(), None)
        if not isinstance(dt, torch.dtype) or dt not in REL_TOL:
            p.error(f"--dtypes: unknown dtype {n!r} (choose from float64, float32, float16, bfloat16)")
        dtypes.append(dt)
    c = Checker()
    for dt in dtypes:
        check_rad(c, args.device, dt)
        check_dad(c, args.device, dt)
        check_inject(c, args.device, dt)
        check_tiny_cases(c, args.device, dt)
    if not args.no_mixed:
        for low in [d for d in dtypes if d in (torch.float16, torch.bfloat16)]:
            check_mixed(c, args.device, low)
    if args.device == "cuda":
        torch.cuda.synchronize()
    print(f"gpu_ops_smoke: {c.count - len(c.failed)} passed, {len(c.failed)} failed ({args.device})")
    return 1 if c.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
