"""``mmh benchmark speed`` (:mod:`mmh.benchmarks.speed`): the fields of speed.json and their consistency on a tiny
run (not the timing values), the reference variant really running :mod:`mmh_ext.reference`, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import mmh_ext
from mmh.benchmarks import speed
from mmh.cli import main
from mmh_ext import reference

_FIELDS = {
    "samples_per_s",
    "phases_ms",
    "reference_samples_per_s",
    "minimal_loop_samples_per_s",
    "compile_samples_per_s",
    "peak_mem_mb",
}
_TINY = ["model.kwargs.width=4", "model.kwargs.shared_width=8"]


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory: pytest.TempPathFactory):
    """One tiny benchmark run (synthetic_antispoof recipes, small_joint at 112x112, batch 2), the reference
    operators counted."""
    calls: dict[str, int] = {}

    def counting(name, fn):
        def call(*a, **k):
            calls[name] = calls.get(name, 0) + 1
            return fn(*a, **k)

        return call

    mp = pytest.MonkeyPatch()
    mp.setattr(reference, "rad_loss", counting("rad_loss", reference.rad_loss))
    mp.setattr(reference, "dad_loss", counting("dad_loss", reference.dad_loss))
    out = tmp_path_factory.mktemp("speed")
    try:
        report = speed.run_speed(
            recipe="synthetic_antispoof",
            methods=["baseline", "rad", "dad"],
            batch=2,
            steps=2,
            quick=True,
            out=out,
            overrides=_TINY,
        )
    finally:
        mp.undo()
    return report, out, calls


def rec_cache(report, method):
    return report["record"]["methods"][method]["teacher_cache_samples_per_s"]


def test_speed_json_fields_and_consistency(tiny_report):
    report, out, _ = tiny_report
    assert json.loads((out / "speed.json").read_text()) == json.loads(json.dumps(report))
    assert set(report["methods"]) == {"baseline", "rad", "dad"}
    for m, r in report["methods"].items():
        assert set(r) == _FIELDS, m
        p = r["phases_ms"]
        assert set(p) == {"teacher_ms", "forward_ms", "loss_ms", "backward_ms", "optimizer_ms", "step_ms"}
        parts = sum(v for k, v in p.items() if k != "step_ms")
        assert 0 < parts <= p["step_ms"] * (1 + 1e-9), m  # the phases lie inside the step's wall time
        assert r["samples_per_s"] == pytest.approx(2 / (p["step_ms"] / 1000.0), rel=1e-9)
        assert r["minimal_loop_samples_per_s"] > 0
        assert r["compile_samples_per_s"] is None  # --quick does not compile
        assert r["peak_mem_mb"] is None  # CPU
    assert report["methods"]["baseline"]["phases_ms"]["teacher_ms"] == 0.0
    assert report["methods"]["rad"]["phases_ms"]["teacher_ms"] > 0.0
    assert report["methods"]["baseline"]["reference_samples_per_s"] is None  # no operator in a CE step
    assert rec_cache(report, "rad") > 0 and rec_cache(report, "dad") > 0 and rec_cache(report, "baseline") is None
    rec = report["record"]
    ref_split = rec["methods"]["rad"]["reference_phases_ms"]
    assert ref_split["teacher_ms"] > 0
    assert sum(v for k, v in ref_split.items() if k != "step_ms") <= ref_split["step_ms"]
    assert rec["methods"]["baseline"]["reference_phases_ms"] is None
    assert rec["methods"]["rad"]["batch"] == 2 and rec["methods"]["rad"]["model"] == "small_joint"
    assert len(rec["load_before"]) == 3 and "torch" in rec
    assert (out / "speed.md").read_text().count("\n| ") == 3 + 1  # header + one row per method


def test_reference_variant_runs_the_reference_operators(tiny_report):
    report, _, calls = tiny_report
    assert report["methods"]["rad"]["reference_samples_per_s"] > 0
    assert report["methods"]["dad"]["reference_samples_per_s"] > 0
    # warm-up + 2 timed steps of the reference variant, each one call; then the operator calls replayed alone
    # (ops_alone): one warm-up and rounds x reps repetitions of the step's calls
    for m, name in (("rad", "rad_loss"), ("dad", "dad_loss")):
        ops = report["record"]["methods"][m]["ops_alone"]
        assert ops["calls"] == {name: 1}
        assert calls.get(name) == 3 + (1 + ops["rounds"] * ops["reps"]) * ops["calls"][name]


def test_reference_ops_swaps_and_restores():
    fused = (mmh_ext.rad.rad_loss, mmh_ext.dad_loss, mmh_ext.cross_stream_inject)
    torch.manual_seed(0)
    s, t = torch.randn(4, 8, 4, 4), torch.randn(4, 8, 4, 4)
    fc = torch.nn.Linear(8, 3)
    rad = mmh_ext.nn.RegionAwareDistillation()
    x, g = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    want = (rad(s, t, fc, fc), mmh_ext.dad_loss(s, t, form="sp"), mmh_ext.cross_stream_inject(x, g))
    counter: dict[str, int] = {}
    with speed.reference_ops(counter):
        got = (rad(s, t, fc, fc), mmh_ext.dad_loss(s, t, form="sp"), mmh_ext.cross_stream_inject(x, g))
    assert counter == {"rad_loss": 1, "dad_loss": 1, "cross_stream_inject": 1}
    for a, b in zip(want, got):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert (mmh_ext.rad.rad_loss, mmh_ext.dad_loss, mmh_ext.cross_stream_inject) == fused


def test_speed_bad_arguments_are_named(tmp_path: Path):
    with pytest.raises(ValueError, match="unknown methods"):
        speed.run_speed(methods=["nope"], out=tmp_path)
    with pytest.raises(FileNotFoundError, match="--recipe"):
        speed.run_speed(recipe="no/such/folder", out=tmp_path)
    with pytest.raises(ValueError, match="--steps"):
        speed.run_speed(methods=["baseline"], steps=0, out=tmp_path)


def test_cli_speed_one_recipe(tmp_path: Path, capsys):
    rc = main(
        ["benchmark", "speed", "--recipe", "synthetic_antispoof/baseline", "--batch", "2", "--steps", "1", "--quick"]
        + ["--out", str(tmp_path), *_TINY]
    )
    assert rc == 0
    report = json.loads((tmp_path / "speed.json").read_text())
    assert list(report["methods"]) == ["baseline"]
    assert "| baseline | 2 |" in capsys.readouterr().out


def test_compile_variant_is_timed_and_a_fallback_is_null(tmp_path: Path, monkeypatch):
    kw = {"recipe": "synthetic_antispoof/rad", "batch": 2, "steps": 1, "quick": True, "overrides": _TINY}
    report = speed.run_speed(out=tmp_path / "a", compile_="aot_eager", **kw)
    assert report["methods"]["rad"]["compile_samples_per_s"] > 0
    assert report["record"]["compile_timed"] == "aot_eager"

    def broken(model, backend=None, **_):
        def forward(*_a, **_k):
            raise RuntimeError("no C++ compiler")

        return forward

    monkeypatch.setattr(torch, "compile", broken)
    report = speed.run_speed(out=tmp_path / "b", compile_=True, **kw)
    assert report["methods"]["rad"]["compile_samples_per_s"] is None  # eager after the fallback: not a compile rate


def test_record_ops_replays_the_step_calls_exactly():
    """record_ops keeps each fused call's arguments (copies; which of them the step differentiated), so that a
    replay gives the same values and the same gradients as the call in the step."""
    torch.manual_seed(0)
    s = torch.randn(4, 8, 4, 4, requires_grad=True)
    t = torch.randn(4, 8, 4, 4)
    fc = torch.nn.Linear(8, 3)
    rad = mmh_ext.nn.RegionAwareDistillation()
    calls: list = []
    with speed.record_ops(calls):
        r = rad(s, t, fc, fc)
        d = mmh_ext.dad_loss([s, s * 2], [t, t], form="sp")
    assert [c[0] for c in calls] == ["rad_loss", "dad_loss"]
    (r + d).backward()
    for name, args, kwargs in calls:
        fresh = speed._fresh(args)  # noqa: SLF001
        out = getattr(mmh_ext, name)(*fresh, **speed._fresh(kwargs))  # noqa: SLF001
        want = r if name == "rad_loss" else d
        if name == "rad_loss":
            out = rad.weigh(out) if out.ndim else out
        torch.testing.assert_close(out, want)
        assert fresh[0].requires_grad if name == "rad_loss" else fresh[0][0].requires_grad
        assert not (fresh[1].requires_grad if name == "rad_loss" else fresh[1][0].requires_grad)
    s.data.add_(1.0)  # the records are copies: later changes to the step's tensors do not reach them
    assert not torch.equal(speed._fresh(calls[0][1])[0], s)  # noqa: SLF001


def test_time_ops_ratio_is_reference_over_fused(monkeypatch):
    """time_ops's ratio is reference time / mmh_ext time: a reference made 5 ms slower per call gives a ratio > 1,
    a fused operator made slower gives one < 1."""
    import time as _time

    torch.manual_seed(0)
    calls: list = []
    with speed.record_ops(calls):
        mmh_ext.dad_loss(torch.randn(4, 8, requires_grad=True), torch.randn(4, 8), form="sp")

    def slow(fn):
        def call(*a, **k):
            _time.sleep(0.005)
            return fn(*a, **k)

        return call

    with monkeypatch.context() as mp:
        mp.setattr(reference, "dad_loss", slow(reference.dad_loss))
        got = speed.time_ops(calls, torch.device("cpu"), rounds=3, budget_s=0.02)
    assert got["ratio"] > 1.5 and got["reference_ms"] > got["mmh_ext_ms"] + 4.0
    with monkeypatch.context() as mp:
        mp.setattr(mmh_ext.dad, "dad_loss", slow(mmh_ext.dad.dad_loss))
        got = speed.time_ops(calls, torch.device("cpu"), rounds=3, budget_s=0.02)
    assert got["ratio"] < 0.67 and got["mmh_ext_ms"] > got["reference_ms"] + 4.0
