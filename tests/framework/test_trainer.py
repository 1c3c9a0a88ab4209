"""The trainer: resume equivalence after a kill, schedules, checkpoints, metrics.csv, errors."""

from __future__ import annotations

import csv
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

from mmh.config import DEFAULTS, merge
from mmh.data import EpochBatchSampler
from mmh.methods import Supervised
from mmh.train import Trainer, build_optimizer, build_scheduler, load_checkpoint
from mmh.train.timing import COST_COLUMNS
from mmh.utils import seed_everything


def _tcfg(**kw):
    return merge(
        DEFAULTS["train"],
        {"batch_size": 8, "steps": 12, "lr": 0.05, "schedule": "cosine", "warmup_steps": 2, "progress": False, **kw},
    )


def _stage(seed: int) -> Supervised:
    torch.manual_seed(seed)
    return Supervised(TinyNet())


def _read(path: Path) -> list[dict[str, str]]:
    with open(path) as fh:
        return [{k: v for k, v in row.items() if k not in COST_COLUMNS} for row in csv.DictReader(fh)]


def _run(out: Path, tcfg, ds, **fit_kw):
    seed_everything(0)
    stage = _stage(0)
    Trainer(stage, ds, tcfg, out_dir=out, seed=3).fit(**fit_kw)
    return stage


@pytest.mark.parametrize("stop_at", [3, 5, 7])  # mid-epoch, at an epoch end (5 batches/epoch), in epoch 2
def test_resume_after_kill_gives_identical_weights(tmp_path: Path, stop_at: int):
    ds = TinySet(40)
    tcfg = _tcfg(checkpoint_every=1, grad_clip=1.0, optimizer="sgd")
    ref = _run(tmp_path / "ref", tcfg, ds)

    seed_everything(0)
    first = _stage(0)
    res = Trainer(first, ds, tcfg, out_dir=tmp_path / "run", seed=3).fit(stop_after_steps=stop_at)
    assert res.stopped and res.step == stop_at
    torch.rand(100)  # the "new process" has another RNG state, and another initialisation:
    resumed = _stage(123)
    res2 = Trainer(resumed, ds, tcfg, out_dir=tmp_path / "run", seed=3).fit(resume=True)
    assert res2.finished and not res2.stopped and res2.step == 12
    for k, v in ref.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    assert _read(tmp_path / "ref" / "metrics.csv") == _read(tmp_path / "run" / "metrics.csv")


_SIGTERM_CHILD = textwrap.dedent("""
    import json, sys, time
    sys.path[:0] = {paths!r}
    import torch
    torch.set_num_threads(1)
    from _tiny import TinyNet, TinySet
    from mmh.config import DEFAULTS, merge
    from mmh.methods import Supervised
    from mmh.train import Trainer, TrainingInterrupted
    from mmh.utils import seed_everything

    class Waits(Supervised):  # the step in flight when the parent's SIGTERM comes
        def forward(self, batch):
            if trainer.step == {at}:
                open({marker!r}, "w").write("in step")
                for _ in range(1200):
                    if trainer._signal is not None:
                        break
                    time.sleep(0.05)
            return super().forward(batch)

    seed_everything(0)
    torch.manual_seed(0)
    tcfg = merge(DEFAULTS["train"], {tcfg!r})
    trainer = Trainer(Waits(TinyNet()), TinySet(40), tcfg, out_dir={out!r}, seed=3)
    try:
        trainer.fit()
    except TrainingInterrupted as exc:
        print(json.dumps({{"signum": exc.signum, "step": exc.step, "checkpoint": exc.checkpoint}}))
        sys.exit(128 + exc.signum)
""")


def test_resume_after_sigterm_in_a_subprocess_gives_identical_weights(tmp_path: Path):
    """SIGTERM in the middle of epoch 2 (5 steps per epoch, no step checkpoints): the step in flight finishes,
    latest.pt holds that step (not the epoch end), the process exits 143, and resuming gives the weights of an
    uninterrupted run."""
    ds = TinySet(40)
    tcfg = _tcfg(grad_clip=1.0, optimizer="sgd")
    ref = _run(tmp_path / "ref", tcfg, ds)
    out, marker = tmp_path / "run", tmp_path / "marker"
    child = _SIGTERM_CHILD.format(
        paths=[str(Path(__file__).parent), str(Path(__file__).parents[2] / "python")],
        at=6,
        marker=str(marker),
        tcfg=dict(tcfg),
        out=str(out),
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", child],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not marker.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert marker.is_file(), proc.communicate()[1][-2000:]
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    assert json.loads(stdout) == {"signum": signal.SIGTERM, "step": 7, "checkpoint": str(out / "latest.pt")}
    assert load_checkpoint(out / "latest.pt")["step"] == 7  # the step reached; the last epoch end was step 5
    assert not list(out.glob("*.tmp"))
    torch.rand(100)
    resumed = _stage(123)
    res = Trainer(resumed, ds, tcfg, out_dir=out, seed=3).fit(resume=True)
    assert res.finished and res.step == 12
    for k, v in ref.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    assert _read(tmp_path / "ref" / "metrics.csv") == _read(out / "metrics.csv")


def test_without_resume_a_fresh_run_differs(tmp_path: Path):
    """Control for the test above: the dropout RNG and the data order matter, so equality is not trivial."""
    ds = TinySet(40)
    tcfg = _tcfg()
    a = _run(tmp_path / "a", tcfg, ds)
    seed_everything(0)
    b = _stage(0)
    torch.rand(1)  # same weights, same data order, another dropout stream
    Trainer(b, ds, tcfg, out_dir=tmp_path / "b", seed=3).fit()
    assert not torch.equal(a.model.classifier.weight, b.model.classifier.weight)
    c = _run(tmp_path / "c", tcfg, ds)  # same seeds -> same result
    assert torch.equal(a.model.classifier.weight, c.model.classifier.weight)


def test_checkpoint_contents_and_metrics(tmp_path: Path):
    ds = TinySet(40)
    val_calls = []

    def val_fn(net):
        val_calls.append(1)
        return {"accuracy": float(len(val_calls) % 2)}  # improves on odd calls

    seed_everything(0)
    t = Trainer(_stage(0), ds, _tcfg(steps=15, eval_every=1), out_dir=tmp_path, seed=0, val_fn=val_fn)
    res = t.fit()
    assert len(res.history) == 3 and len(val_calls) == 3
    ck = load_checkpoint(tmp_path / "latest.pt")
    for key in ("stage", "optimizer", "scheduler", "step", "epoch", "rng", "config", "train_config", "history"):
        assert key in ck
    assert ck["step"] == 15 and ck["epoch"] == 3
    best = load_checkpoint(tmp_path / "best.pt")
    assert best["step"] == 5 and res.best["value"] == 1.0  # first epoch was best; the third tied, not better
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert [int(r["step"]) for r in rows] == [5, 10, 15]
    assert {"loss", "loss_ce", "lr", "train_accuracy", "val_accuracy"} <= set(rows[0])
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])  # it learns


def test_deploy_best_restores_the_validated_state(tmp_path: Path):
    """train.deploy=best: after fit, the stage holds the weights of the epoch with the best val metric."""
    ds = TinySet(40)
    scores = iter([0.2, 0.9, 0.4, 0.1])  # epoch 2 is best
    snapshots = []

    def val_fn(net):
        snapshots.append({k: v.clone() for k, v in net.state_dict().items()})
        return {"accuracy": next(scores)}

    seed_everything(0)
    stage = _stage(0)
    t = Trainer(stage, ds, _tcfg(steps=20, eval_every=1, deploy="best"), out_dir=tmp_path, seed=0, val_fn=val_fn)
    with pytest.raises(RuntimeError, match="not finished"):
        t.restore_best()
    t.fit()
    assert len(snapshots) == 4
    last = {k: v.clone() for k, v in stage.deployable().state_dict().items()}
    best = t.restore_best()
    assert best["step"] == 10 and best["epoch"] == 2 and best["value"] == pytest.approx(0.9)
    now = stage.deployable().state_dict()
    assert all(torch.equal(now[k], snapshots[1][k]) for k in now)  # the state validated at epoch 2
    assert any(not torch.equal(now[k], last[k]) for k in now)  # ... which is not the last one


def test_deploy_errors(tmp_path: Path):
    ds = TinySet(40)
    with pytest.raises(ValueError, match="train.deploy must be"):
        Trainer(_stage(0), ds, _tcfg(deploy="final"), out_dir=tmp_path)
    with pytest.raises(ValueError, match="val_split"):
        Trainer(_stage(0), ds, _tcfg(deploy="best"), out_dir=tmp_path)


def test_schedules():
    p = [torch.nn.Parameter(torch.zeros(1))]
    lrs = {}
    for kind in ("constant", "step", "cosine", "onecycle"):
        cfg = _tcfg(
            schedule=kind, lr=1.0, warmup_steps=2, warmup_start_factor=0.5, milestones=[5], gamma=0.1, optimizer="sgd"
        )
        opt = build_optimizer(p, cfg)
        sch = build_scheduler(opt, cfg, 10)
        seq = []
        for _ in range(10):
            seq.append(opt.param_groups[0]["lr"])
            opt.step()
            sch.step()
        lrs[kind] = seq
    assert lrs["constant"][:3] == [0.5, 0.75, 1.0] and lrs["constant"][-1] == 1.0
    assert lrs["step"][4] == 1.0 and lrs["step"][5] == pytest.approx(0.1)
    assert lrs["cosine"][2] == 1.0 and lrs["cosine"][-1] < 0.05
    assert max(lrs["onecycle"]) == pytest.approx(1.0, rel=0.05) and lrs["onecycle"][0] < 0.1
    with pytest.raises(ValueError, match="schedule"):
        build_scheduler(build_optimizer(p, _tcfg()), _tcfg(schedule="linear"), 10)
    with pytest.raises(ValueError, match="optimizer"):
        build_optimizer(p, _tcfg(optimizer="lbfgs"))


def test_sampler_shards_the_global_batch():
    one = list(EpochBatchSampler(20, 4, seed=1, epoch=2))
    r0 = list(EpochBatchSampler(20, 2, seed=1, epoch=2, rank=0, world_size=2))
    r1 = list(EpochBatchSampler(20, 2, seed=1, epoch=2, rank=1, world_size=2))
    assert [a + b for a, b in zip(r0, r1)] == one
    assert list(EpochBatchSampler(20, 4, seed=1, epoch=2, start_batch=3)) == one[3:]
    assert one != list(EpochBatchSampler(20, 4, seed=1, epoch=3))
    assert len(list(EpochBatchSampler(10, 4, seed=0, epoch=0, drop_last=False))) == 3


def test_trainer_errors(tmp_path: Path):
    ds = TinySet(10)
    with pytest.raises(ValueError, match="batch_size"):
        Trainer(_stage(0), ds, _tcfg(batch_size=16), out_dir=tmp_path)
    with pytest.raises(TypeError, match="StageModule"):
        Trainer(torch.nn.Linear(2, 2), ds, _tcfg(), out_dir=tmp_path)  # type: ignore[arg-type]

    class NaNStage(Supervised):
        def forward(self, batch):
            logits, losses = super().forward(batch)
            return logits, {"loss_ce": losses["loss_ce"] * float("nan")}

    with pytest.raises(FloatingPointError, match="step 0"):
        Trainer(NaNStage(TinyNet()), ds, _tcfg(batch_size=4), out_dir=tmp_path).fit()


def test_checkpoint_every_minus_one_writes_no_resume_checkpoints(tmp_path: Path):
    """train.checkpoint_every=-1: neither latest.pt nor best.pt (short runs that are not resumed), the same trained
    weights and metrics.csv as the default; best.pt still written when train.deploy=best needs it."""
    ds = TinySet(40)
    ref = _run(tmp_path / "ref", _tcfg(), ds)
    assert {p.name for p in (tmp_path / "ref").glob("*.pt")} == {"latest.pt", "best.pt"}
    got = _run(tmp_path / "none", _tcfg(checkpoint_every=-1), ds)
    assert not list((tmp_path / "none").glob("*.pt"))
    assert all(torch.equal(v, got.state_dict()[k]) for k, v in ref.state_dict().items())
    assert _read(tmp_path / "ref" / "metrics.csv") == _read(tmp_path / "none" / "metrics.csv")

    scores = iter([0.2, 0.9, 0.4, 0.1])
    seed_everything(0)
    stage = _stage(0)
    tcfg = _tcfg(steps=20, eval_every=1, deploy="best", checkpoint_every=-1)
    t = Trainer(stage, ds, tcfg, out_dir=tmp_path / "best", seed=0, val_fn=lambda net: {"accuracy": next(scores)})
    t.fit()
    assert {p.name for p in (tmp_path / "best").glob("*.pt")} == {"best.pt"}
    assert t.restore_best()["epoch"] == 2
