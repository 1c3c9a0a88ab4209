"""The op benchmark's per-call overhead mode (``python -m benchmarks.ops --overhead``): every case module's tiny case,
eager and mmh_ext timed in alternating rounds, the medians compared with each operator's target."""

from __future__ import annotations

import pytest
import torch

from benchmarks.ops import cli, overhead, registry
from benchmarks.ops.common import Case


def test_every_case_module_has_a_tiny_case_and_a_target():
    for m in registry.OPS:
        case = m.tiny_case("cpu")
        assert case.op == m.OP and 0 < m.OVERHEAD_TARGET
        inputs, grads = case.make()
        assert grads and all(g.requires_grad for g in grads)


def test_rounds_alternate_and_the_medians_are_compared(monkeypatch):
    """Each round times both implementations, in alternating order; the row holds the medians over the rounds, and
    the verdict compares mmh_ext / eager with the target."""
    calls = []
    # eager costs 10 us except in one slow round (a co-tenant): the median ignores it
    times = {"eager": iter([10e-6, 10e-6, 90e-6, 10e-6, 10e-6]), "mmh_ext": iter([4e-6, 4e-6, 4e-6, 30e-6, 4e-6])}

    def fake_seconds(step, round_time):
        name = "eager" if step.__name__ == "eager_step" else "mmh_ext"
        calls.append(name)
        return next(times[name])

    def fwd_and_step(f, inputs, grads):
        def step():
            return None

        step.__name__ = f"{f.__name__}_step"
        return None, step, None

    monkeypatch.setattr(overhead, "_cpu_seconds", fake_seconds)
    monkeypatch.setattr(overhead, "fwd_and_step", fwd_and_step)

    def eager():
        return None

    def mmh_ext():
        return None

    case = Case("op", "tiny", lambda: ([], []), mmh_ext, eager)
    row = overhead.measure(case, 0.5, "cpu", 0.01, rounds=5)
    assert calls == ["eager", "mmh_ext", "mmh_ext", "eager", "eager", "mmh_ext", "mmh_ext", "eager", "eager", "mmh_ext"]
    assert (row.eager_us, row.mmh_ext_us) == pytest.approx((10.0, 4.0))
    assert row.ratio == pytest.approx(0.4) and row.met
    assert not overhead.OverheadRow("op", "tiny", 10.0, 6.0, 0.5).met
    text = overhead.render([row, overhead.OverheadRow("op2", "t", 10.0, 6.0, 0.5)], "# head")
    assert "| op | tiny | 10.0 | 4.0 | 0.40x | <= 0.50x | met |" in text
    assert "| op2 | t | 10.0 | 6.0 | 0.60x | <= 0.50x | MISSED |" in text


def test_overhead_command_line(tmp_path, capsys):
    """A real (short) run of one operator: the table printed and written, one thread by default."""
    out = tmp_path / "overhead.md"
    threads = torch.get_num_threads()
    try:
        assert cli.main(["--overhead", "--quick", "--ops", "cross_stream_inject", "--markdown", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    text = out.read_text()
    assert "| cross_stream_inject | 2x8x4x4 |" in text and "1 threads" in text
    with pytest.raises(SystemExit):
        cli.main(["--overhead", "--ops", "nope"])
