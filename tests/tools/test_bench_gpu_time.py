"""The op benchmark's (benchmarks.ops) GPU kernel time columns on a machine without a GPU: the summing of profiler
events, the per-case measurement loop and the separate process's results (with a stand-in for the profiler), the
CSV round trip, and the "-" cells with a note when the profiling process fails."""

from __future__ import annotations

import csv
import json
import sys
import textwrap
import time
from types import SimpleNamespace

import pytest
import torch
from torch.autograd import DeviceType

from benchmarks.gpu_check import summary
from benchmarks.ops import cli, gpu_time, registry, report
from benchmarks.ops.common import FWD, STEP, Case


def _ev(us, device=DeviceType.CUDA, **kw):
    return SimpleNamespace(device_type=device, self_device_time_total=us, **kw)


def test_bench_device_time_sums_device_events_only():
    events = [
        _ev(100.0),
        _ev(60.0),
        _ev(40.0, activity_type="gpu_memset"),
        _ev(0.0, time_range=SimpleNamespace(elapsed_us=lambda: 20.0)),  # a torch without the device property
        _ev(500.0, device=DeviceType.CPU),  # a host op: its kernels are counted as device events already
        _ev(220.0, is_user_annotation=True),  # an annotation spanning kernels on the GPU timeline
        _ev(220.0, activity_type="gpu_user_annotation"),
        _ev(7.0, activity_type="cuda_sync"),
    ]
    ms, launches = gpu_time.device_time_per_call(events, 2)
    assert ms == pytest.approx((100 + 60 + 40 + 20) / 2 / 1e3)
    assert launches == 2.0
    with pytest.raises(RuntimeError, match="no GPU kernels"):
        gpu_time.device_time_per_call([_ev(500.0, device=DeviceType.CPU)], 20)
    # this torch's own events (host ops only here) have what the filter reads, and count as no kernel
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        torch.randn(64, 64).relu().sum()
    assert len(prof.events()) > 0
    with pytest.raises(RuntimeError, match="no GPU kernels"):
        gpu_time.device_time_per_call(prof.events(), 1)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_bench_gpu_kernel_time_raises_without_a_gpu():
    for _ in range(2):  # a failed profile leaves no profiler running that would break the next one differently
        with pytest.raises(RuntimeError):
            gpu_time.gpu_kernel_time(lambda: torch.ones(3).sum(), calls=2, warmup=1)


def test_bench_fill_gpu_columns_ratios_and_suspect_numbers():
    row = {
        "op": "rad_loss",
        "shape": "S",
        "pass_": "forward+backward",
        "eager_ms": 1.3,
        "mmh_ext_ms": 0.6,
        "compile_ms": 1.0,
    }
    notes = []
    gpu_time.fill_gpu_columns(
        row,
        {
            "eager": {"forward+backward": [0.5, 52.0]},
            "mmh_ext": {"forward+backward": [0.1, 16.95]},
            "compile": {"forward": [0.2, 9.0]},
        },
        notes,
    )
    assert (row["eager_gpu_ms"], row["eager_launches"], row["mmh_ext_gpu_ms"]) == (0.5, 52.0, 0.1)
    assert row["compile_gpu_ms"] is None and row["cupy_gpu_ms"] is None and row["cupy_launches"] is None
    assert row["x_eager_gpu"] == pytest.approx(5.0) and row["x_compile_gpu"] is None and row["x_cupy_gpu"] is None
    assert notes == ["rad_loss S mmh_ext forward+backward: 16.95 launches per call (the profiler lost or added events)"]
    notes = []
    gpu_time.fill_gpu_columns(row, {"eager": {"forward+backward": [1.7, 52.0]}}, notes)
    assert notes == ["rad_loss S eager forward+backward: GPU time 1.700 ms above the wall time 1.300 ms per call"]
    assert row["x_eager_gpu"] is None  # no mmh_ext GPU time: no ratio


def test_bench_gpu_measure_case_and_worker_with_a_stand_in_profiler(monkeypatch, tmp_path):
    seen = []

    def fake(fn, calls=20, warmup=3):
        fn()  # the callable runs (forward or forward+backward of a real implementation, on the CPU here)
        seen.append(fn)
        return 0.25, 7.0

    monkeypatch.setattr(gpu_time, "gpu_kernel_time", fake)
    cpu_cases = registry.cases(False, "cpu")
    monkeypatch.setattr(registry, "cases", lambda quick, device: cpu_cases)
    spec, out = tmp_path / "spec.json", tmp_path / "out.json"
    spec.write_text(
        json.dumps(
            {"cases": [["dad_loss", "B=64 512x4x4", False], ["nope", "X", False]], "calls": 20, "deadline": None}
        )
    )
    assert gpu_time.gpu_worker(str(spec), str(out)) == 0
    res = json.loads(out.read_text())
    assert res["dad_loss|B=64 512x4x4"] == {
        "gpu": {i: {"forward": [0.25, 7.0], "forward+backward": [0.25, 7.0]} for i in ("eager", "mmh_ext")},
        "notes": [],
    }
    assert res["nope|X"] == {"gpu": {}, "notes": ["GPU time: no case nope|X"]}
    # eager and mmh_ext x two passes, after the throwaway first session (which fails where there is no GPU)
    assert len(seen) == (5 if torch.cuda.is_available() else 4)

    spec.write_text(json.dumps({"cases": [["dad_loss", "B=64 512x4x4", True]], "deadline": time.time() + 1}))
    assert gpu_time.gpu_worker(str(spec), str(out)) == 0
    assert json.loads(out.read_text()) == {
        "dad_loss|B=64 512x4x4": {"gpu": {}, "notes": ["GPU kernel time not measured (time budget)"]}
    }

    def broken(fn, calls=20, warmup=3):
        raise RuntimeError("CUPTI_ERROR_NOT_INITIALIZED\nmore")

    monkeypatch.setattr(gpu_time, "gpu_kernel_time", broken)
    notes = []
    case = next(c for c in cpu_cases if c.label == "B=64 512x4x4")
    assert gpu_time.measure_case(case, False, 20, notes) == {}
    assert notes == [
        f"GPU time of {i} {p}: RuntimeError: CUPTI_ERROR_NOT_INITIALIZED"
        for i in ("eager", "mmh_ext")
        for p in ("forward", "forward+backward")
    ]


def _cuda_rows(path, keys=(("rad_loss", "A"), ("cross_stream_inject", "B"))):
    """Cases as the CUDA wall-time loop leaves them: rows streamed to the CSV, GPU columns empty."""
    rows = report.Rows(str(path))
    measured = []
    for op, label in keys:
        case = SimpleNamespace(op=op, label=label)
        case_rows = []
        for pas, e, m in (("forward", 0.37, 0.11), ("forward+backward", 1.31, 0.61)):
            row = {k: None for k in report.CSV_FIELDS} | dict(
                op=op, shape=label, pass_=pas, device="cuda", eager_ms=e, mmh_ext_ms=m, x_eager=e / m, note=""
            )
            rows.add(row)
            case_rows.append(row)
        measured.append((case, False, case_rows))
    return rows, measured


def _worker_script(tmp_path, body):
    script = tmp_path / "fake_worker.py"
    script.write_text("import json, os, signal, sys\nspec, out = sys.argv[1], sys.argv[2]\n" + textwrap.dedent(body))
    return lambda spec, out: [sys.executable, str(script), spec, out]


def test_bench_gpu_phase_fills_rows_rewrites_csv_and_marks_a_crash(monkeypatch, tmp_path):
    # the worker measures the first case, then dies as a CUPTI crash would: the second case reads "-" with why
    monkeypatch.setattr(
        gpu_time,
        "worker_cmd",
        _worker_script(
            tmp_path,
            """
        cases = json.load(open(spec))["cases"]
        assert [c[0] for c in cases] == ["rad_loss", "cross_stream_inject"]
        gpu = {"eager": {"forward": [0.2, 20], "forward+backward": [0.5, 52]},
               "mmh_ext": {"forward": [0.05, 4], "forward+backward": [0.1, 17]}}
        json.dump({"rad_loss|A": {"gpu": gpu, "notes": ["GPU time of compile left out (time budget)"]}}, open(out, "w"))
        os.kill(os.getpid(), signal.SIGSEGV)
    """,
        ),
    )
    path = tmp_path / "bench.csv"
    rows, measured = _cuda_rows(path)
    gpu_time.gpu_phase(measured, None, rows)
    rows.close()
    back = list(csv.DictReader(open(path)))
    assert [r["op"] for r in back] == ["rad_loss"] * 2 + ["cross_stream_inject"] * 2
    assert list(back[0]) == report.CSV_FIELDS
    assert (back[1]["eager_gpu_ms"], back[1]["mmh_ext_gpu_ms"], back[1]["mmh_ext_launches"]) == ("0.5", "0.1", "17")
    assert float(back[1]["x_eager_gpu"]) == pytest.approx(5.0)
    assert back[1]["eager_ms"] == "1.31" and float(back[1]["x_eager"]) == pytest.approx(1.31 / 0.61)  # unchanged
    assert back[1]["note"] == "GPU time of compile left out (time budget)"
    assert back[3]["eager_gpu_ms"] == "" and back[3]["note"] == "the GPU-time process exited with status -11"

    text = report.render_markdown(report.read_csv(str(path)), "cuda")
    assert "| rad_loss | A | forward+backward | 0.500 / - / 0.100 | 52 / - / 17 | 5.00x | - | - | - |" in text
    assert "| cross_stream_inject | B | forward+backward | - / - / - | - / - / - | - | - | - | - |" in text
    assert "- note: the GPU-time process exited with status -11" in text
    assert text.rstrip().endswith("(of 5)")  # the targets: on the wall times, as before
    assert "speed-up over eager 2.15x (target ≥ 3x): **MISSED**" in text


def test_bench_gpu_phase_without_time_or_results(monkeypatch, tmp_path):
    rows, measured = _cuda_rows(tmp_path / "a.csv")
    gpu_time.gpu_phase(measured, 12.0, rows)  # too little of the budget left: no process is started
    assert all(
        r["note"] == "GPU kernel time not measured (time budget)" and r["eager_gpu_ms"] is None
        for _, _, rs in measured
        for r in rs
    )
    monkeypatch.setattr(gpu_time, "worker_cmd", _worker_script(tmp_path, "open(out, 'w').write('{half')\n"))
    rows, measured = _cuda_rows(tmp_path / "b.csv")
    gpu_time.gpu_phase(measured, None, rows)
    rows.close()
    notes = {r["note"] for r in report.read_csv(str(tmp_path / "b.csv"))}
    assert len(notes) == 1 and notes.pop().startswith("unreadable GPU-time results")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_bench_gpu_phase_runs_the_real_worker_process(tmp_path, capsys):
    # the worker as the benchmark starts it (command line, PYTHONPATH, spec and results files); without a GPU each
    # case fails where it makes its CUDA inputs, and says so in its rows
    rows, measured = _cuda_rows(tmp_path / "w.csv", keys=(("dad_loss", "B=64 512x4x4"),))
    gpu_time.gpu_phase(measured, 300.0, rows)
    rows.close()
    back = report.read_csv(str(tmp_path / "w.csv"))
    assert len(back) == 2 and all(r["note"].startswith("GPU time: ") and r["eager_gpu_ms"] == "" for r in back)
    out = capsys.readouterr().out
    assert "# GPU kernel time: 0 implementation-passes measured in" in out and "; " not in out.splitlines()[-1]


def test_bench_markdown_of_a_csv_from_before_the_gpu_columns():
    rows = [
        {
            "op": "rad_loss",
            "shape": "A",
            "pass_": "forward+backward",
            "eager_ms": "1.3",
            "mmh_ext_ms": "0.4",
            "x_eager": "3.25",
        }
    ]
    text = report.render_markdown(rows, "cuda")
    assert "GPU kernel time" not in text and "speed-up over eager 3.25x (target ≥ 3x): met" in text
    assert "GPU kernel time" not in report.render_markdown([dict(rows[0], eager_gpu_ms="")], "cpu")


def test_bench_summary_explains_the_two_tables(tmp_path):
    out = tmp_path / "out"
    (out / ".status").mkdir(parents=True)
    for name, _ in summary.SECTIONS:
        (out / ".status" / name).write_text("PASS\t1\t\n")
    (out / "bench_ops.md").write_text(
        "| op |\n|---|\n\nGPU kernel time per call (`torch.profiler`, 20 calls: ...):\n\n"
        "| op | GPU ms eager / compile / mmh_ext |\n|---|---|\n| rad_loss | 0.5 / - / 0.1 |\n"
        "\ntargets: 1 met, 0 missed, 0 not measured (of 1)\n"
    )
    assert summary.main([str(out)]) == 0
    text = (out / "summary.md").read_text()
    assert "then the GPU kernel time per call" in text and "| rad_loss | 0.5 / - / 0.1 |" in text


def test_bench_main_hands_each_case_its_rows_and_compile_flag(monkeypatch, tmp_path):
    """main's loop on a (pretend) CUDA device gives the GPU phase (case, compile was timed, the case's rows) — the
    order it unpacks (the first GPU run failed with "'bool' object is not iterable" when it got (case, rows, flag))."""
    case = Case("cross_stream_inject", "S", lambda: ([], []), None, None)
    got, real_gpu_phase = {}, gpu_time.gpu_phase

    def fake_run_case(c, args, elapsed, rows):
        out = []
        for pas in (FWD, STEP):
            row = {k: None for k in report.CSV_FIELDS} | dict(
                op=c.op, shape=c.label, pass_=pas, device="cuda", mmh_ext_ms=1.0, eager_ms=2.0
            )
            rows.add(row)
            out.append(row)
        return out, True

    def fake_gpu_phase(measured, remaining, rows):
        got["measured"] = measured
        real_gpu_phase(measured, 0.0, rows)  # under 20 s left: no process, every row gets its note

    monkeypatch.setattr(cli, "_setup", lambda p, args: "# header")
    monkeypatch.setattr(cli, "cases", lambda quick, device: [case])
    monkeypatch.setattr(cli, "_run_case", fake_run_case)
    monkeypatch.setattr(gpu_time, "gpu_phase", fake_gpu_phase)
    assert cli.main(["--device", "cuda", "--csv", str(tmp_path / "b.csv")]) in (0, 3)
    ((c, compiled, case_rows),) = got["measured"]
    assert c is case and compiled is True and [r["pass_"] for r in case_rows] == [FWD, STEP]
    assert all("GPU kernel time not measured (time budget)" in r["note"] for r in case_rows)
