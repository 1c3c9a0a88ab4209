"""`mmh benchmark thesis` end to end at toy size: every method trained through the shared runner, tables and plots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("mmh_ext")
from mmh.benchmarks.thesis import MCL_METHODS, THESIS_PHASES, run_thesis_benchmark  # noqa: E402


def test_thesis_benchmark_smoke(tmp_path: Path):
    out = tmp_path / "bench"
    res = run_thesis_benchmark(quick=True, seeds=1, workers=1, steps=2, out=out, log=lambda _m: None)
    saved = json.loads((out / "results.json").read_text())
    assert saved["methods"].keys() == res["methods"].keys()
    for method in {m for phase in THESIS_PHASES for m in phase}:
        entry = saved["methods"][method]
        assert len(entry["accuracy"]) == 1 and 0.0 <= entry["accuracy"][0] <= 1.0, method
        if method in MCL_METHODS:
            assert 0.0 <= entry["sum"][0] <= 1.0 and 0.0 <= entry["oracle"][0] <= 1.0, method
    for name in ("results.md", "noise_sweep.png", "switch_signal.png"):
        assert (out / name).stat().st_size > 0, name
    assert saved["settings"]["overrides"][-1] == "train.steps=2"
    # the four steps of the multiple-stream recipe are reported for every ablation
    assert {"multistream", "multistream_noconn", "multistream_inverted"} <= saved["steps"].keys()
    assert any(k.startswith("step4") for k in saved["steps"]["multistream"])
    # paired statistics against the step-1 RGB stream (one seed: no interval, no p) and the reproduction record
    assert saved["comparisons"]["hoffman"]["vs"] == "rgb_stream" and saved["comparisons"]["hoffman"]["n"] == 1
    assert saved["comparisons"]["hoffman"]["ci95"] is None and "multistream vs hoffman" in saved["controls"]
    assert saved["record"]["seeds"] == [0] and saved["record"]["worker_processes"] == 1
