"""Faults during training: nothing non-finite is written or reused, signals save and stop, writes are durable.

* A state that turns non-finite (a learning rate that jumps to inf: the loss of that step is still finite) is
  refused before any checkpoint, ``model.pt`` or cache publish, naming the stage and the step; the last finite
  ``latest.pt`` stays the latest and a resume starts from it.
* A non-finite network in the stage cache or in a file is an error naming the file, never reused.
* SIGINT / SIGTERM during ``fit`` finish the step in flight, save ``latest.pt`` there and raise TrainingInterrupted;
  through ``mmh train`` the process exits 128 + signum, results.json says ``interrupted``, and ``--resume`` ends with
  the weights of an uninterrupted run. The previous handlers are restored afterwards.
* Atomic writes follow the umask, leave no temporary file on any failure, and a full disk (ENOSPC) leaves the
  previous file intact with an OSError naming the file.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from _tiny import TinyNet, TinySet

from mmh.config import DEFAULTS, load_config, merge
from mmh.methods import Supervised
from mmh.train import NonFiniteError, Trainer, TrainingInterrupted, load_checkpoint, save_model
from mmh.train.checkpoint import load_tensors, safe_load, save_tensors
from mmh.utils import io as mio
from mmh.utils import seed_everything

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "dataset.split_kwargs={train: {size: 48}, test: {size: 30}}",
    "train.batch_size=16",
    "train.steps=5",
    "model.kwargs={width: 8, shared_width: 8}",
    "train.progress=false",
    "threads=1",
]


def _tcfg(**kw):
    return merge(
        DEFAULTS["train"],
        {
            "batch_size": 8,
            "steps": 12,
            "lr": 0.05,
            "optimizer": "sgd",
            "schedule": "constant",
            "warmup_steps": 0,
            "progress": False,
            **kw,
        },
    )


def _stage(seed: int = 0) -> Supervised:
    torch.manual_seed(seed)
    return Supervised(TinyNet())


def _temps(folder: Path) -> list[Path]:
    return sorted(folder.rglob(f"*{mio.TEMP_SUFFIX}"))


def _all_finite(state) -> bool:
    return all(bool(torch.isfinite(v).all()) for v in state.values() if v.is_floating_point())


# ------------------------------------------------------------------------------------------------ non-finite state
@pytest.mark.parametrize("milestone,every", [(6, 1), (4, 0)])  # mid-epoch with step checkpoints; at an epoch end
def test_a_state_that_turns_nonfinite_is_never_checkpointed(tmp_path: Path, milestone: int, every: int):
    """The learning rate jumps to inf at ``milestone``: the loss of that step is finite, the weights after it are
    not. No checkpoint holds them; the error names the stage and the step; the last finite latest.pt stays."""
    tcfg = _tcfg(schedule="step", milestones=[milestone], gamma=float("inf"), checkpoint_every=every)
    seed_everything(0)
    trainer = Trainer(_stage(), TinySet(40), tcfg, out_dir=tmp_path / "run", seed=3, name="teacher")
    with pytest.raises(
        NonFiniteError,
        match=rf"stage 'teacher' at step {milestone + 1}: non-finite state.*"
        rf"latest.pt was not written",
    ):
        trainer.fit()
    files = {p.name for p in (tmp_path / "run").iterdir()}
    assert "best.pt" not in files  # (written at the last step only, without validation)
    if every:
        latest = load_checkpoint(tmp_path / "run" / "latest.pt")
        assert latest["step"] == milestone and _all_finite(latest["stage"])  # the last finite state
        # resuming starts from it (and, with the same schedule, fails at the same step again)
        seed_everything(0)
        again = Trainer(_stage(7), TinySet(40), tcfg, out_dir=tmp_path / "run", seed=3, name="teacher")
        with pytest.raises(NonFiniteError, match=f"at step {milestone + 1}"):
            again.fit(resume=True)
        assert again.step == milestone + 1 and load_checkpoint(tmp_path / "run" / "latest.pt")["step"] == milestone
    else:
        assert "latest.pt" not in files  # the first checkpoint would have been the NaN one
    assert not _temps(tmp_path)


def test_a_nonfinite_loss_is_a_floating_point_error_naming_the_stage(tmp_path: Path):
    class NaNAt3(Supervised):
        def forward(self, batch):
            logits, losses = super().forward(batch)
            self.calls = getattr(self, "calls", 0) + 1
            return logits, {"loss_ce": losses["loss_ce"] * (float("nan") if self.calls == 4 else 1.0)}

    torch.manual_seed(0)
    trainer = Trainer(
        NaNAt3(TinyNet()), TinySet(40), _tcfg(checkpoint_every=1, log_every=0), out_dir=tmp_path, name="student"
    )
    with pytest.raises(FloatingPointError, match="stage 'student': non-finite loss at step 3") as err:
        trainer.fit()
    assert isinstance(err.value, NonFiniteError)
    assert load_checkpoint(tmp_path / "latest.pt")["step"] == 3  # saved before the NaN step, nothing after it


def test_runner_never_writes_or_publishes_a_nonfinite_network(tmp_path: Path):
    """``stages.teacher.lr=.inf stages.teacher.steps=1``: no model.pt / latest.pt / best.pt, no cache entry, the
    results say ``failed`` with the error."""
    from mmh.runner import run_experiment

    cfg = load_config(
        ROOT / "configs" / "synthetic_motion" / "kd.yaml",
        [*TINY, "stages.teacher.lr=.inf", "stages.teacher.steps=1", f"output.cache={tmp_path / 'c'}"],
    )
    with pytest.raises(NonFiniteError, match="stage 'teacher' at step 1"):
        run_experiment(cfg, run_dir=tmp_path / "run", log=lambda _m: None)
    stage_dir = tmp_path / "run" / "stages" / "teacher"
    assert not {"model.pt", "latest.pt", "best.pt"} & {p.name for p in stage_dir.iterdir()}
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").rglob("*.pt"))
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res["status"] == "failed" and "non-finite" in res["stages"]["teacher"]["error"]
    assert not _temps(tmp_path)


def test_a_nonfinite_cached_teacher_is_refused_naming_the_file(tmp_path: Path):
    from mmh.runner import run_experiment

    cache = tmp_path / "cache"
    args = [*TINY, f"output.cache={cache}"]
    kd = ROOT / "configs" / "synthetic_motion" / "kd.yaml"
    first = run_experiment(load_config(kd, args), run_dir=tmp_path / "a", log=lambda _m: None)
    entry = cache / f"teacher-{first['stages']['teacher']['key']}"
    payload = safe_load(entry / "model.pt")
    name = next(k for k, v in payload["state_dict"].items() if v.is_floating_point())
    payload["state_dict"][name] = payload["state_dict"][name] * float("nan")  # poisoned by an older version
    torch.save(payload, entry / "model.pt")
    with pytest.raises(NonFiniteError, match=f"model artifact {entry / 'model.pt'}.*{name}.*never reused"):
        run_experiment(load_config(kd, args), run_dir=tmp_path / "b", log=lambda _m: None)


def test_artifacts_with_nan_are_neither_written_nor_read(tmp_path: Path):
    net = TinyNet()
    with torch.no_grad():
        net.body[0].bias[1] = float("inf")
    net.config = {"name": "tiny"}
    with pytest.raises(NonFiniteError, match=r"model artifact .*m.pt: 1 of \d+ tensors.*body.0.bias"):
        save_model(net, tmp_path / "m.pt")
    with pytest.raises(NonFiniteError, match="tensor artifact"):
        save_tensors({"w": torch.tensor([1.0, float("nan")])}, tmp_path / "t.pt")
    assert not list(tmp_path.iterdir())
    torch.save({"w": torch.tensor([float("nan")])}, tmp_path / "t.pt")
    with pytest.raises(NonFiniteError, match=f"tensor artifact {tmp_path / 't.pt'}"):
        load_tensors(tmp_path / "t.pt")


def test_a_nonfinite_latest_checkpoint_is_refused_on_resume(tmp_path: Path):
    seed_everything(0)
    Trainer(_stage(), TinySet(40), _tcfg(steps=5), out_dir=tmp_path, seed=3).fit()
    state = torch.load(tmp_path / "latest.pt", weights_only=True)
    key = next(iter(state["stage"]))
    state["stage"][key] = state["stage"][key] + float("inf")
    torch.save(state, tmp_path / "latest.pt")
    with pytest.raises(NonFiniteError, match=f"checkpoint {tmp_path / 'latest.pt'}.*{key}.*cannot be resumed"):
        Trainer(_stage(), TinySet(40), _tcfg(steps=10), out_dir=tmp_path, seed=3).fit(resume=True)


# ------------------------------------------------------------------------------------------------ signals
class _SignalAt(Supervised):
    """Sends ``signum`` to its own process during the forward of call ``at`` (a step in flight)."""

    def __init__(self, net, signum: int, at: int) -> None:
        super().__init__(net)
        self.signum, self.at, self.calls = signum, at, 0

    def forward(self, batch):
        self.calls += 1
        if self.calls == self.at:
            os.kill(os.getpid(), self.signum)
        return super().forward(batch)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_saves_the_step_in_flight_and_restores_the_handlers(tmp_path: Path, signum: int):
    ds, tcfg = TinySet(40), _tcfg(steps=15)  # 5 steps per epoch; no step checkpoints
    seed_everything(0)
    ref = _stage()
    Trainer(ref, ds, tcfg, out_dir=tmp_path / "ref", seed=3).fit()

    def mine(_s, _f):  # the caller's handler, which must be back after fit
        raise AssertionError("the caller's handler ran during fit")

    before = {s: signal.signal(s, mine) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        seed_everything(0)
        torch.manual_seed(0)
        stage = _SignalAt(TinyNet(), signum, at=8)  # the 8th step: index 7, mid-epoch 2
        with pytest.raises(TrainingInterrupted) as err:
            Trainer(stage, ds, tcfg, out_dir=tmp_path / "run", seed=3).fit()
        assert all(signal.getsignal(s) is mine for s in before)  # both handlers back, the signalled one and not
    finally:
        for s, h in before.items():
            signal.signal(s, h)
    exc = err.value
    assert (exc.signum, exc.step, exc.checkpoint) == (signum, 8, str(tmp_path / "run" / "latest.pt"))
    assert load_checkpoint(tmp_path / "run" / "latest.pt")["step"] == 8  # not the epoch end (5)
    assert not _temps(tmp_path)
    torch.rand(10)
    resumed = _stage(5)
    Trainer(resumed, ds, tcfg, out_dir=tmp_path / "run", seed=3).fit(resume=True)
    for k, v in ref.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k


_CHILD = textwrap.dedent("""
    import signal, sys, time
    sys.path[:0] = {paths!r}
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal (a background job ignores it)
    import torch
    torch.set_num_threads(1)
    from mmh.train import Trainer
    orig = Trainer._train_step
    def slow(self, batch):  # the step in flight when the parent's signal comes
        if self.step == {at}:
            open({marker!r}, "w").write("in step")
            for _ in range(1200):
                if self._signal is not None:
                    break
                time.sleep(0.05)
        orig(self, batch)
    Trainer._train_step = slow
    from mmh.cli import main
    sys.exit(main({argv!r}))
""")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_mmh_train_stopped_by_a_signal_exits_128_plus_signum_and_resumes_exactly(tmp_path: Path, signum: int):
    """``mmh train`` gets the signal in the middle of the teacher's 2nd epoch (3 steps per epoch): latest.pt holds
    that step (not the epoch end), status ``interrupted``, exit 128 + signum with one line; ``--resume`` gives the
    weights of the uninterrupted run."""
    from mmh.cli import main

    run, ref, marker = tmp_path / "run", tmp_path / "ref", tmp_path / "marker"
    args = ["train", "synthetic_motion/kd", *TINY, "train.steps=8", "output.cache=''"]
    child = _CHILD.format(
        paths=[str(ROOT / "python"), str(ROOT)], at=4, marker=str(marker), argv=[*args, "--run-dir", str(run)]
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", child],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not marker.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert marker.is_file(), f"the child never reached step 4: {proc.communicate()[1][-2000:]}"
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err
    lines = err.strip().splitlines()
    assert lines[-1].startswith(f"mmh train: interrupted by {signal.Signals(signum).name} at step 5"), err
    assert "Traceback" not in err
    res = json.loads((run / "results.json").read_text())
    assert res["status"] == "interrupted" and res["stages"]["teacher"]["step"] == 5
    assert load_checkpoint(run / "stages" / "teacher" / "latest.pt")["step"] == 5  # epochs end at 3 and 6
    assert not _temps(run)
    assert main(["train", "--resume", str(run)]) == 0
    assert main([*args, "--run-dir", str(ref)]) == 0
    for stage in ("teacher", "student"):
        a = safe_load(ref / "stages" / stage / "model.pt")["state_dict"]
        b = safe_load(run / "stages" / stage / "model.pt")["state_dict"]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), stage


# ------------------------------------------------------------------------------------------------ durable writes
@pytest.mark.parametrize("umask", [0o022, 0o007])
def test_written_files_follow_the_umask(tmp_path: Path, umask: int):
    old = os.umask(umask)
    try:
        mio.write_json({"a": 1}, tmp_path / "r.json")
        mio.write_text("x: 1\n", tmp_path / "config.yaml")
        mio.atomic_torch_save({"w": torch.ones(2)}, tmp_path / "latest.pt")
        mio.atomic_copy(tmp_path / "latest.pt", tmp_path / "cache" / "model.pt")
    finally:
        os.umask(old)
    for name in ("r.json", "config.yaml", "latest.pt", "cache/model.pt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask, name
    assert (tmp_path / "config.yaml").read_text() == "x: 1\n"
    assert torch.equal(torch.load(tmp_path / "cache" / "model.pt")["w"], torch.ones(2))


def test_a_full_disk_leaves_the_previous_file_and_names_the_file(tmp_path: Path, monkeypatch):
    path = tmp_path / "latest.pt"
    mio.atomic_torch_save({"step": 1}, path)
    before = path.read_bytes()

    def full(obj, fh):  # half the archive, then the disk is full
        fh.write(b"PK" * 1000)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(OSError, match=f"cannot write {path}: No space left on device") as err:
        mio.atomic_torch_save({"step": 2}, path)
    assert err.value.errno == errno.ENOSPC
    assert path.read_bytes() == before and not _temps(tmp_path)

    def no_sync(_fd):  # the data reached the page cache, the flush to the disk fails
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_sync)
    (tmp_path / "r.json").write_text('{"old": true}')
    with pytest.raises(OSError, match=f"cannot write {tmp_path / 'r.json'}"):
        mio.write_json({"new": True}, tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text()) == {"old": True} and not _temps(tmp_path)


def test_an_interrupted_write_leaves_no_temporary_file(tmp_path: Path, monkeypatch):
    def interrupted(obj, fh):
        fh.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        mio.atomic_torch_save({}, tmp_path / "latest.pt")
    assert not list(tmp_path.iterdir())


def test_fit_removes_stale_temporary_files_of_its_own_files(tmp_path: Path):
    """A SIGKILL during a write leaves ``.latest.pt.<random>.tmp``; the next fit in that folder removes it (and
    nothing else)."""
    tmp_path.mkdir(exist_ok=True)
    stale = tmp_path / ".latest.pt.1a2b3c4d.tmp"
    stale.write_bytes(b"half")
    other = tmp_path / ".notes.txt.1a2b3c4d.tmp"
    other.write_bytes(b"not ours")
    seed_everything(0)
    Trainer(_stage(), TinySet(40), _tcfg(steps=2), out_dir=tmp_path, seed=3).fit()
    assert not stale.exists() and other.exists()
