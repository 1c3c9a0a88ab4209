"""`mmh report` on run folders it cannot trust: a malformed results.json or metrics.csv, or a stage name that would
read outside the run, is one `mmh report: error:` line naming the file and the problem, exit status 2, no report."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from mmh.cli import main


def _run(root: Path, name: str = "run") -> Path:
    """A finished run folder as the runner writes it (results.json + the stage's metrics.csv)."""
    d = root / name
    (d / "stages" / "student").mkdir(parents=True)
    res = {
        "method": "baseline",
        "seed": 0,
        "dataset": "synthetic_motion",
        "status": "done",
        "final": {"accuracy": 0.5},
        "stages": {"student": {"kind": "baseline", "source": "trained", "metrics": {"accuracy": 0.5}}},
    }
    (d / "results.json").write_text(json.dumps(res))
    with open(d / "stages" / "student" / "metrics.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["epoch", "step", "loss", "train_accuracy"])
        w.writeheader()
        for e in range(2):
            w.writerow({"epoch": e + 1, "step": 5 * (e + 1), "loss": 1.0 / (e + 1), "train_accuracy": 0.5})
    return d


def _edit_results(d: Path, edit) -> Path:
    p = d / "results.json"
    res = json.loads(p.read_text())
    p.write_text(json.dumps(edit(res)))
    return p


def _report_error(d: Path, out: Path, capsys) -> str:
    capsys.readouterr()
    assert main(["report", str(d), "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("mmh report: error: ") and captured.err.count("\n") == 1, captured.err
    assert not (out / "report.md").exists()
    return captured.err


def test_report_of_a_good_run_still_works(tmp_path: Path, capsys):
    d = _run(tmp_path)
    assert main(["report", str(d), "--out", str(tmp_path / "out")]) == 0
    assert "| synthetic_motion | baseline | 1 | 0.5000 ± 0.0000 |" in (tmp_path / "out" / "report.md").read_text()


@pytest.mark.parametrize(
    "edit, problem",
    [
        (lambda res: [res], "holds a JSON list, not a mapping"),
        (lambda res: {k: v for k, v in res.items() if k != "stages"}, "needs a non-empty 'stages' mapping"),
        (lambda res: {**res, "stages": {}}, "needs a non-empty 'stages' mapping"),
        (lambda res: {**res, "stages": {"student": ["x"]}}, "malformed stage entry 'student'"),
        (lambda res: {k: v for k, v in res.items() if k != "final"}, "'final' must be a mapping"),
        (lambda res: {**res, "final": {"accuracy": "high"}}, "final metric 'accuracy' is not a number"),
        (lambda res: {**res, "seed": "0"}, "'seed' must be an integer"),
        (lambda res: {k: v for k, v in res.items() if k != "method"}, "'method' must be a non-empty string"),
        (lambda res: {**res, "dataset": ["synthetic_motion"]}, "'dataset' must be a non-empty string"),
    ],
    ids=["list", "no-stages", "empty-stages", "stage-list", "no-final", "final-text", "seed", "method", "dataset"],
)
def test_a_malformed_results_json_is_one_line_naming_it(tmp_path: Path, capsys, edit, problem: str):
    d = _run(tmp_path)
    p = _edit_results(d, edit)
    err = _report_error(d, tmp_path / "out", capsys)
    assert str(p) in err and problem in err, err


def test_an_unfinished_or_corrupt_results_json_is_named(tmp_path: Path, capsys):
    d = _run(tmp_path)
    _edit_results(d, lambda res: {**res, "status": "running"})
    err = _report_error(d, tmp_path / "out", capsys)
    assert f"run {d} did not finish" in err and "'running'" in err, err
    (d / "results.json").write_bytes(b'{"status": "do')
    err = _report_error(d, tmp_path / "out", capsys)
    assert f"corrupt JSON file {d / 'results.json'}" in err, err
    (d / "results.json").write_bytes(b'{"status": "done\xff"}')
    err = _report_error(d, tmp_path / "out", capsys)
    assert f"corrupt JSON file {d / 'results.json'}: not UTF-8 text" in err, err


@pytest.mark.parametrize("name", ["../../elsewhere", "../student", "/abs", ".hidden", "a/b", ""])
def test_a_stage_name_that_is_not_a_plain_name_is_refused(tmp_path: Path, capsys, name: str):
    """Stage names become read paths (stages/<name>/metrics.csv): a name leaving the run folder is refused before
    anything is read, whatever lies where it points."""
    d = _run(tmp_path / "runs")
    outside = tmp_path / "elsewhere"  # where stages/../../elsewhere/metrics.csv leads
    outside.mkdir()
    (outside / "metrics.csv").write_text("epoch,step,secret\n1,1,42\n")
    p = _edit_results(d, lambda res: {**res, "stages": {name: {"kind": "x", "source": "trained"}}})
    err = _report_error(d, tmp_path / "out", capsys)
    assert str(p) in err and f"malformed stage entry {name!r}" in err, err


@pytest.mark.parametrize(
    "text, problem",
    [
        ("epoch,step,loss\n1,5,abc\n", "line 2, column 'loss': 'abc' is not a number"),
        ("epoch,step,loss\n1,5,0.5\n2,,0.4\n", "line 3 has no 'step' value"),
        ("epoch,loss\n1,0.5\n", "line 2 has no 'step' value"),
        ("epoch,step,loss\n1,5,0.5,9\n", "line 2 has more cells than the header"),
        ("epoch,step,loss\n1,5,\xff\n", "not UTF-8 text"),
        ("epoch,step,loss\n1,5," + "9" * 200_000 + "\n", "not a CSV file (field larger than field limit"),
    ],
    ids=["text-cell", "empty-step", "no-step-column", "extra-cell", "not-utf8", "huge-field"],
)
def test_a_malformed_metrics_csv_is_one_line_naming_it(tmp_path: Path, capsys, text: str, problem: str):
    d = _run(tmp_path)
    csv_path = d / "stages" / "student" / "metrics.csv"
    csv_path.write_bytes(text.encode("latin-1"))
    err = _report_error(d, tmp_path / "out", capsys)
    assert f"{csv_path}: " in err and problem in err, err
