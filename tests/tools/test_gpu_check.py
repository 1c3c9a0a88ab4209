"""The GPU-check tooling on a machine without a GPU: scripts/gpu_check.sh's no-GPU exit, the benchmark's target
verdicts, the summary's exit status, and the sanitizer's op script on the CPU kernels."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.gpu_check import ops_smoke, summary
from benchmarks.ops import cli, registry, report

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_gpu_check_exits_2_at_once_without_cuda(tmp_path):
    out = tmp_path / "out"
    res = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_check.sh"), str(out)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHON": sys.executable},
        timeout=120,
    )
    assert res.returncode == 2, res.stdout + res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "sees no CUDA device" in lines[0], res.stderr
    assert res.stdout == ""
    assert not out.exists()  # nothing built, nothing written


def _row(op, shape, pas, **kw):
    return {"op": op, "shape": shape, "pass_": pas, **kw}


def test_benchmark_targets_met_missed_and_unmeasured():
    rows = [
        _row("rad_loss", "A", "forward", x_eager="1.0", x_compile="0.5"),  # forward rows are not judged
        _row(
            "rad_loss",
            "A",
            "forward+backward",
            x_eager="3.2",
            x_compile="1.4",
            mmh_ext_peak_mib="10",
            eager_peak_mib="12",
        ),
        _row(
            "rad_loss", "B", "forward+backward", x_eager="2.9", x_compile="", mmh_ext_peak_mib="13", eager_peak_mib="12"
        ),
        _row("dad_loss", "C", "forward+backward", x_eager="2.0"),
        _row("cross_stream_inject", "D", "forward+backward", memcpy_fraction="0.79", x_cupy=""),
    ]
    got = {(c["op"], c["shape"], c["what"]): c["met"] for c in report.evaluate_targets(rows, "cuda")}
    assert got == {
        ("rad_loss", "A", "x_eager"): True,
        ("rad_loss", "B", "x_eager"): False,
        ("rad_loss", "A", "x_compile"): False,
        ("rad_loss", "B", "x_compile"): None,
        ("rad_loss", "A", "peak_vs_eager"): True,
        ("rad_loss", "B", "peak_vs_eager"): False,
        ("dad_loss", "C", "x_eager"): True,
        ("cross_stream_inject", "D", "memcpy_fraction"): False,
        ("cross_stream_inject", "D", "x_cupy"): None,
    }
    text = report.render_markdown(rows, "cuda")
    assert text.rstrip().endswith("targets: 3 met, 4 missed, 2 not measured (of 9)")
    assert "- rad_loss B: peak memory / eager's 1.08 (target ≤ 1): **MISSED**" in text
    assert "- cross_stream_inject D: fraction of the copy bandwidth 79% (target ≥ 80%): **MISSED**" in text
    assert "- rad_loss B: speed-up over torch.compile not measured (target ≥ 1.5x): not measured" in text


def _fake_out(tmp_path, statuses, bench_tail):
    out = tmp_path / "out"
    (out / ".status").mkdir(parents=True)
    (out / "logs").mkdir()
    (out / "machine.txt").write_text("date: today\ngpu: a test GPU\n")
    for name, status in statuses.items():
        (out / ".status" / name).write_text(f"{status}\t12\t{'exit status 1' if status == 'FAIL' else ''}\n")
        (out / "logs" / f"{name}.log").write_text(f"line 1 of {name}\nlast line of {name}\n")
    (out / "bench_ops.md").write_text(f"| op |\n|---|\n\n{bench_tail}\n")
    return out


@pytest.mark.parametrize(
    "case, want",
    [("all passed, targets met", 0), ("all passed, a target missed", 3), ("tests failed", 1), ("racecheck missing", 1)],
)
def test_summary_exit_status_and_failed_log_tails(tmp_path, case, want):
    names = ["build", "tests", "memcheck", "racecheck", "train", "bench"]
    statuses = {n: "PASS" for n in names}
    if case == "tests failed":
        statuses["tests"] = "FAIL"
    if case == "racecheck missing":
        del statuses["racecheck"]
    tail = (
        "targets: 5 met, 1 missed, 0 not measured (of 6)"
        if case.endswith("missed")
        else "targets: 6 met, 0 missed, 0 not measured (of 6)"
    )
    out = _fake_out(tmp_path, statuses, tail)
    assert summary.main([str(out)]) == want
    text = (out / "summary.md").read_text()
    assert "- gpu: a test GPU" in text
    if case == "tests failed":
        assert "| tests | tests/ops/test_cuda.py | **FAIL** | 12 s | exit status 1 |" in text
        assert "last line of tests" in text and "last line of train" not in text
    if case == "racecheck missing":
        assert "no result (the section did not finish)" in text


def test_sanitizer_op_script_on_the_cpu_kernels():
    assert ops_smoke.main(["--device", "cpu", "--dtypes", "float32,float64"]) == 0


def test_benchmark_ops_filter():
    p = cli._parser()
    all_cases = registry.cases(False, "cpu")
    assert {"rad_loss", "dad_loss", "cross_stream_inject"} <= {c.op for c in all_cases} == set(registry.op_names())
    rad = cli._selected(all_cases, "rad_loss", p)
    assert [c.label for c in rad] == [
        "B=64 C=512 4x4 K=2",
        "B=64 C=512 4x4 K=60",
        "B=64 C=512 7x7 K=2",
        "B=64 C=512 7x7 K=60",
    ]
    two = cli._selected(all_cases, "dad_loss,cross_stream_inject", p)
    assert len(two) == len(all_cases) - 4 and "rad_loss" not in {c.op for c in two}
    assert cli._selected(all_cases, None, p) is all_cases
    with pytest.raises(SystemExit):
        cli._selected(all_cases, "rad_loss,nope", p)
