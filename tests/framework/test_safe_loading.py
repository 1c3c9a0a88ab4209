"""Run folders, checkpoints and the stage cache from elsewhere cannot run code, and damaged ones are named.

Every file the CLI reads back (a stage's ``model.pt``, ``latest.pt``, ``best.pt``, a stage-cache ``model.pt``, an
explicit ``stages.<section>.checkpoint``, ``config.yaml``, ``results.json``) gets a planted payload — a pickle whose
loading would write a marker file — and the command must refuse it, name the file, and leave no marker. A control
shows the payload does write the marker when unpickled the unsafe way. Malformed artifacts get errors naming the file
and the problem. A training process killed with SIGKILL resumes to the weights of an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from mmh.cli import main
from mmh.train.checkpoint import (
    UnsafeFileError,
    decode_rng_state,
    encode_rng_state,
    load_checkpoint,
    load_model,
    safe_load,
)
from mmh.utils.seed import get_rng_state, set_rng_state

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


class Payload:
    """Unpickling this runs ``exec``: it writes ``marker`` (what an attacker's file would do, harmlessly)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('payload ran')",)


def _plant(path: Path, marker: Path, how: str = "nested") -> None:
    """Replace ``path`` by a payload: ``nested`` inside a realistic torch.save archive of the same kind (the payload
    sits where a config / RNG state would be), or ``raw``: a bare pickle."""
    if how == "raw":
        path.write_bytes(pickle.dumps(Payload(marker)))
        return
    state = torch.load(path, weights_only=True)
    if "rng" in state:
        state["rng"] = Payload(marker)  # numpy RNG states used to be pickled objects here
    else:
        state["config"] = Payload(marker)
    torch.save(state, path)


def _err(capsys) -> str:
    return capsys.readouterr().err


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A finished kd run that filled a stage cache, a dad run whose teacher came from that cache, a kd run stopped
    in its student stage, one stopped in its teacher stage, and a finished run that deployed best.pt."""
    base = tmp_path_factory.mktemp("runs")
    cache = f"output.cache={base / 'cache'}"
    out = {"base": base, "cache": base / "cache"}
    out["ref"] = base / "ref"
    assert main(["train", "synthetic_motion/kd", *TINY, cache, "--run-dir", str(out["ref"])]) == 0
    out["dad"] = base / "dad"
    assert main(["train", "synthetic_motion/dad", *TINY, cache, "--run-dir", str(out["dad"])]) == 0
    for name, stop in (("in_student", 7), ("in_teacher", 3)):
        out[name] = base / name
        assert (
            main(
                [
                    "train",
                    "synthetic_motion/kd",
                    *TINY,
                    "output.cache=''",
                    "--run-dir",
                    str(out[name]),
                    "--stop-after-steps",
                    str(stop),
                ]
            )
            == 0
        )
    out["best"] = base / "best"
    assert (
        main(
            [
                "train",
                "synthetic_motion/baseline",
                *TINY,
                "output.cache=''",
                "train.deploy=best",
                "dataset.val_split=test",
                "--run-dir",
                str(out["best"]),
            ]
        )
        == 0
    )
    return out


def _copy(runs: dict[str, Path], name: str, tmp_path: Path) -> Path:
    dst = tmp_path / name
    shutil.copytree(runs[name], dst)
    return dst


def _cache_dir(runs: dict[str, Path], run: Path, stage: str) -> Path:
    src = json.loads((run / "results.json").read_text())["stages"][stage]["source"]
    assert src["kind"] == "cache" and set(src) == {"kind", "path"}
    return Path(src["path"])


# ------------------------------------------------------------------------------------------------ the payload
def test_the_payload_runs_when_unpickled_unsafely(tmp_path: Path, runs):
    """Control: the planted files really execute code under the old ``weights_only=False`` loading (and
    ``load_model`` refuses the same file first)."""
    for how in ("nested", "raw"):
        marker = tmp_path / f"marker_{how}"
        f = tmp_path / f"model_{how}.pt"
        shutil.copyfile(runs["ref"] / "stages" / "student" / "model.pt", f)
        _plant(f, marker, how)
        with pytest.raises(UnsafeFileError if how == "nested" else ValueError, match=re.escape(str(f))):
            load_model(f)  # the library entry point refuses the file ...
        assert not marker.exists()
        if how == "raw":  # ... which the unsafe ways run
            pickle.loads(f.read_bytes())
        else:
            torch.load(f, weights_only=False)
        assert marker.read_text() == "payload ran"


# ------------------------------------------------------------------------------------------------ mmh eval
@pytest.mark.parametrize("how", ["nested", "raw"])
def test_eval_refuses_a_planted_model_pt(tmp_path: Path, runs, capsys, how: str):
    run, marker = _copy(runs, "ref", tmp_path), tmp_path / "marker"
    target = run / "stages" / "student" / "model.pt"
    _plant(target, marker, how)
    capsys.readouterr()
    assert main(["eval", str(run)]) == 2
    err = _err(capsys)
    assert str(target) in err and ("refused" in err if how == "nested" else "not a torch.save archive" in err)
    if how == "nested":
        assert "asks to import exec" in err  # what the file asked for
    assert not marker.exists()
    assert not (run / "eval_student_test.json").exists()


def test_eval_refuses_a_planted_stage_cache_file(tmp_path: Path, runs, capsys):
    """``mmh eval --stage teacher`` of the dad run follows its cache source into the stage cache (written here in
    the ``"cache:<path>"`` string form of older results files, which is still read)."""
    cache = tmp_path / "cache"
    shutil.copytree(runs["cache"], cache)
    run, marker = _copy(runs, "dad", tmp_path), tmp_path / "marker"
    res = json.loads((run / "results.json").read_text())
    old = _cache_dir(runs, run, "teacher")
    new = cache / old.name
    res["stages"]["teacher"]["source"] = f"cache:{new}"
    (run / "results.json").write_text(json.dumps(res))
    assert not (run / "stages" / "teacher" / "model.pt").exists()
    capsys.readouterr()
    assert main(["eval", str(run), "--stage", "teacher"]) == 0  # the untouched cache file is read (and works)
    _plant(new / "model.pt", marker)
    capsys.readouterr()
    assert main(["eval", str(run), "--stage", "teacher"]) == 2
    err = _err(capsys)
    assert f"refused to load model artifact {new / 'model.pt'}" in err
    assert not marker.exists()


# ------------------------------------------------------------------------------------------------ mmh train
def test_train_refuses_a_planted_stage_cache_file(tmp_path: Path, runs, capsys):
    """A fresh ``mmh train`` whose teacher is a cache hit reads the cached ``model.pt``: refused."""
    cache = tmp_path / "cache"
    shutil.copytree(runs["cache"], cache)
    target = cache / _cache_dir(runs, runs["dad"], "teacher").name / "model.pt"
    marker = tmp_path / "marker"
    _plant(target, marker)
    capsys.readouterr()
    assert (
        main(["train", "synthetic_motion/dad", *TINY, f"output.cache={cache}", "--run-dir", str(tmp_path / "run")]) == 2
    )
    err = _err(capsys)
    assert f"refused to load model artifact {target}" in err
    assert not marker.exists()


def test_resume_refuses_a_planted_latest_pt(tmp_path: Path, runs, capsys):
    run, marker = _copy(runs, "in_teacher", tmp_path), tmp_path / "marker"
    target = run / "stages" / "teacher" / "latest.pt"
    _plant(target, marker)
    capsys.readouterr()
    assert main(["train", "--resume", str(run)]) == 2
    err = _err(capsys)
    assert f"refused to load checkpoint {target}" in err and "asks to import exec" in err
    assert not marker.exists()


def test_resume_refuses_a_planted_model_pt_of_a_finished_stage(tmp_path: Path, runs, capsys):
    run, marker = _copy(runs, "in_student", tmp_path), tmp_path / "marker"
    target = run / "stages" / "teacher" / "model.pt"
    assert (run / "stages" / "student" / "latest.pt").is_file()  # stopped inside the student stage
    _plant(target, marker)
    capsys.readouterr()
    assert main(["train", "--resume", str(run)]) == 2
    assert f"refused to load model artifact {target}" in _err(capsys)
    assert not marker.exists()


def test_resume_refuses_a_planted_best_pt(tmp_path: Path, runs, capsys):
    """train.deploy=best: a resumed run whose stage has finished training reads best.pt to deploy it."""
    run, marker = _copy(runs, "best", tmp_path), tmp_path / "marker"
    stage = run / "stages" / "student"
    (stage / "model.pt").unlink()  # as if killed between the last step and writing model.pt
    _plant(stage / "best.pt", marker)
    capsys.readouterr()
    assert main(["train", "--resume", str(run)]) == 2
    assert f"refused to load checkpoint {stage / 'best.pt'}" in _err(capsys)
    assert not marker.exists()


def test_train_refuses_a_planted_explicit_checkpoint(tmp_path: Path, runs, capsys):
    target, marker = tmp_path / "teacher.pt", tmp_path / "marker"
    shutil.copyfile(runs["ref"] / "stages" / "teacher" / "model.pt", target)
    args = ["train", "synthetic_motion/kd", *TINY, "output.cache=''", "--run-dir", str(tmp_path / "run")]
    assert main([*args, f"stages.teacher.checkpoint={target}"]) == 0  # the untouched artifact is used
    _plant(target, marker)
    capsys.readouterr()
    assert main([*args, f"stages.teacher.checkpoint={target}", "--overwrite"]) == 2  # the folder holds the first run
    assert f"refused to load model artifact {target}" in _err(capsys)
    assert not marker.exists()


def test_a_config_yaml_with_python_tags_is_refused(tmp_path: Path, runs, capsys):
    run, marker = _copy(runs, "in_teacher", tmp_path), tmp_path / "marker"
    cfg = run / "config.yaml"
    cfg.write_text(f"!!python/object/apply:builtins.exec [\"open('{marker}', 'w').write('x')\"]\n" + cfg.read_text())
    for argv in (["train", "--resume", str(run)], ["eval", str(run)]):
        capsys.readouterr()
        assert main(argv) == 2
        assert str(cfg) in _err(capsys)
        assert not marker.exists()


def test_results_json_with_a_path_as_stage_name_is_refused(tmp_path: Path, runs, capsys):
    """Stage names become paths (``eval_<stage>_<split>.json`` is written): a results.json cannot aim outside."""
    run = _copy(runs, "ref", tmp_path)
    res = json.loads((run / "results.json").read_text())
    res["stages"] = {"../../escape": res["stages"]["student"]}
    (run / "results.json").write_text(json.dumps(res))
    capsys.readouterr()
    assert main(["eval", str(run)]) == 2
    err = _err(capsys)
    assert str(run / "results.json") in err and "../../escape" in err
    (run / "results.json").write_text("[1, 2]")
    assert main(["eval", str(run)]) == 2
    assert "'stages'" in _err(capsys)


# ------------------------------------------------------------------------------------------------ malformed files
def _malformed_artifacts(good: dict, other: dict) -> dict[str, tuple[object, str]]:
    """name -> (what to torch.save as model.pt, a phrase the error must contain)."""
    sd = good["state_dict"]
    k = next(k for k, v in sd.items() if v.dim() >= 2)
    wrong_shape = {**sd, k: torch.zeros(*sd[k].shape[:-1], sd[k].shape[-1] + 1)}
    missing = dict(sd)
    dropped = sorted(missing)[0]
    del missing[dropped]
    return {
        "not a dict": (5, "holds a int, not a dict"),
        "no state_dict": ({"config": good["config"]}, "lacks ['state_dict']"),
        "config without name": ({"config": {"width": 8}, "state_dict": sd}, "'config' must be a dict with a model"),
        "unknown model": (
            {"config": {**good["config"], "name": "no_such_net"}, "state_dict": sd},
            "cannot build model 'no_such_net'",
        ),
        "weights not tensors": ({"config": good["config"], "state_dict": {k: 1.0}}, "must map names to tensors"),
        "missing weight": ({"config": good["config"], "state_dict": missing}, f"missing weights ['{dropped}']"),
        "wrong shape": ({"config": good["config"], "state_dict": wrong_shape}, f"wrong shapes (file vs model) ['{k}"),
        # the student's config with the teacher's weights (the RGB-D teacher has depth weights the student lacks)
        "another model's weights": (
            {"config": good["config"], "state_dict": other["state_dict"]},
            "unexpected weights",
        ),
    }


def test_eval_names_the_file_and_the_problem_of_malformed_artifacts(tmp_path: Path, runs, capsys):
    run = _copy(runs, "ref", tmp_path)
    target = run / "stages" / "student" / "model.pt"
    good = safe_load(target, "model artifact")
    other = safe_load(run / "stages" / "teacher" / "model.pt", "model artifact")
    cases = _malformed_artifacts(good, other)
    data = target.read_bytes()
    cases_bytes = {
        "truncated": (data[: len(data) // 2], "not a torch.save archive"),
        "empty": (b"", "not a torch.save archive"),
    }
    for name, (obj, phrase) in [*cases.items(), *cases_bytes.items()]:
        if isinstance(obj, bytes):
            target.write_bytes(obj)
        else:
            torch.save(obj, target)
        capsys.readouterr()
        assert main(["eval", str(run)]) == 2, name
        err = _err(capsys)
        assert str(target) in err and phrase in err, (name, err)
        assert "not iterable" not in err


def test_resume_names_the_file_and_the_problem_of_malformed_checkpoints(tmp_path: Path, runs, capsys):
    run = _copy(runs, "in_teacher", tmp_path)
    target = run / "stages" / "teacher" / "latest.pt"
    good = torch.load(target, weights_only=True)
    other_stage = safe_load(runs["ref"] / "stages" / "student" / "latest.pt", "checkpoint")["stage"]
    cases = {
        "not a dict": ([1, 2], "holds a list, not a dict"),
        "missing keys": (
            {k: v for k, v in good.items() if k not in ("optimizer", "rng")},
            "lacks ['optimizer', 'rng']",
        ),
        "bad step": ({**good, "step": "3"}, "'step' must be a non-negative int"),
        "bad rng": (
            {**good, "rng": {**good["rng"], "numpy": {**good["rng"]["numpy"], "key": torch.zeros(3)}}},
            "malformed RNG state",
        ),
        # the student stage's trainable weights in the teacher stage's checkpoint
        "another stage's weights": ({**good, "stage": other_stage}, "does not fit this run's stage"),
    }
    data = target.read_bytes()
    for name, (obj, phrase) in [*cases.items(), ("truncated", (data[:1000], "not a torch.save archive"))]:
        if isinstance(obj, bytes):
            target.write_bytes(obj)
        else:
            torch.save(obj, target)
        capsys.readouterr()
        assert main(["train", "--resume", str(run)]) == 2, name
        err = _err(capsys)
        assert str(target) in err and phrase in err, (name, err)
        assert "not iterable" not in err


# ------------------------------------------------------------------------------------------------ formats
def test_rng_states_survive_a_weights_only_round_trip(tmp_path: Path):
    """Python, numpy and torch generators restored from the tensor encoding continue exactly (vs. the originals)."""
    random.seed(5)
    np.random.seed(6)
    torch.manual_seed(7)
    random.random(), np.random.randn(), torch.randn(1)  # noqa: B018 - move off the seeded positions (and gauss)
    np.random.standard_normal()
    snap = get_rng_state()
    expect = (
        random.random(),
        random.gauss(0, 1),
        np.random.rand(3).tolist(),
        np.random.standard_normal(),
        torch.rand(3).tolist(),
    )
    torch.save({"rng": encode_rng_state(snap)}, tmp_path / "r.pt")
    random.seed(0), np.random.seed(0), torch.manual_seed(0)  # noqa: B018 - somewhere else entirely
    set_rng_state(decode_rng_state(safe_load(tmp_path / "r.pt")["rng"]))
    got = (
        random.random(),
        random.gauss(0, 1),
        np.random.rand(3).tolist(),
        np.random.standard_normal(),
        torch.rand(3).tolist(),
    )
    assert got == expect


def test_checkpoints_hold_only_tensors_and_plain_values(runs):
    """Walk every .pt file the runs wrote: no object outside tensors and builtin containers/scalars."""
    plain = (dict, list, tuple, str, int, float, bool, type(None), torch.Tensor)

    def walk(obj, where):
        assert isinstance(obj, plain), (where, type(obj))
        if isinstance(obj, dict):
            for k, v in obj.items():
                walk(k, where)
                walk(v, f"{where}.{k}")
        elif isinstance(obj, (list, tuple)):
            for i, v in enumerate(obj):
                walk(v, f"{where}[{i}]")

    files = sorted(runs["base"].rglob("*.pt"))
    assert {f.name for f in files} == {"latest.pt", "best.pt", "model.pt"}
    for f in files:
        walk(safe_load(f), str(f))
    assert load_checkpoint(runs["ref"] / "stages" / "student" / "latest.pt")["step"] == 5
    assert isinstance(load_model(runs["ref"] / "stages" / "student" / "model.pt"), torch.nn.Module)


# ------------------------------------------------------------------------------------------------ kill -9
def test_resume_after_sigkill_matches_an_uninterrupted_run(tmp_path: Path, runs):
    """A ``mmh train`` process killed with SIGKILL mid-stage (checkpoint every step, atomic writes) resumes through
    the safe loader to the same weights as the uninterrupted reference run."""
    run = tmp_path / "run"
    steps = ["train.steps=40", "train.checkpoint_every=1"]
    args = ["train", "synthetic_motion/kd", *TINY, *steps, "output.cache=''", "--run-dir", str(run)]
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'python'}:{ROOT}", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mmh.cli", *args],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    latest = run / "stages" / "teacher" / "latest.pt"
    deadline = time.monotonic() + 120
    while not latest.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    alive = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert alive, f"the run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    assert not (run / "results.json").is_file() or json.loads((run / "results.json").read_text())["status"] != "done"
    assert main(["train", "--resume", str(run)]) == 0
    ref = tmp_path / "ref"
    assert main([*args[:-1], str(ref)]) == 0
    for stage in ("teacher", "student"):
        a = safe_load(ref / "stages" / stage / "model.pt")["state_dict"]
        b = safe_load(run / "stages" / stage / "model.pt")["state_dict"]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), stage
