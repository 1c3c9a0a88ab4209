"""Cost accounting of every run: ``samples_per_s`` and the per-phase times in ``metrics.csv``
(:mod:`mmh.train.timing`), measured at the trainer's log points."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import pytest
from _tiny import TinyNet, TinySet

from mmh.config import DEFAULTS, merge
from mmh.methods import Supervised
from mmh.methods.base import Distiller
from mmh.train import Trainer
from mmh.train.timing import PHASES, phase_durations
from mmh.utils import seed_everything


def _tcfg(**kw):
    return merge(DEFAULTS["train"], {"batch_size": 8, "steps": 10, "lr": 0.05, "progress": False, **kw})


class _SlowNet(TinyNet):
    """A TinyNet whose forward sleeps ``delay`` seconds: a known time inside one network."""

    def __init__(self, delay: float, **kw) -> None:
        super().__init__(**kw)
        self.delay = delay

    def forward(self, batch):
        time.sleep(self.delay)
        return super().forward(batch)


class _KD(Distiller):
    """Logit matching with a frozen teacher (enough to have a teacher phase)."""

    def distill_losses(self, s_logits, t_logits, s_feats, t_feats, batch):
        return {"loss_kd": ((s_logits - t_logits) ** 2).mean()}


def _rows(path: Path) -> list[dict[str, float]]:
    with open(path) as fh:
        return [{k: float(v) for k, v in r.items() if v != ""} for r in csv.DictReader(fh)]


def test_metrics_csv_has_samples_per_s_and_phases(tmp_path: Path):
    seed_everything(0)
    ds = TinySet(40)  # 5 steps of 8 per epoch, 2 epochs
    stage = _KD(_SlowNet(0.004), _SlowNet(0.012), ce_weight=1.0)
    t0 = time.perf_counter()
    Trainer(stage, ds, _tcfg(log_every=2), out_dir=tmp_path).fit()
    wall = time.perf_counter() - t0
    rows = _rows(tmp_path / "metrics.csv")
    assert len(rows) == 2
    for row in rows:
        for key in (*PHASES, "samples_per_s"):
            assert key in row, key
        # the sleeps are known lower bounds of the teacher and student phases, and each is attributed to its own
        assert 12.0 <= row["teacher_ms"] < 12.0 + 40.0
        assert 4.0 <= row["forward_ms"] < row["teacher_ms"]
        parts = sum(row[k] for k in PHASES if k != "step_ms")
        assert parts == pytest.approx(row["step_ms"], rel=1e-6)
        # 40 samples in at least 5 steps of step_ms each
        assert 40 / row["samples_per_s"] >= 5 * row["step_ms"] / 1000.0
    # the two epochs' sample times fit inside the run's wall time and its logged time
    train_s = sum(40 / r["samples_per_s"] for r in rows)
    assert train_s <= rows[-1]["time_s"] + 1e-6 and train_s <= wall


def test_teacher_phase_is_zero_without_frozen_network_and_hooks_removed(tmp_path: Path):
    seed_everything(0)
    net = _SlowNet(0.005)
    Trainer(Supervised(net), TinySet(40), _tcfg(steps=5), out_dir=tmp_path).fit()
    row = _rows(tmp_path / "metrics.csv")[0]
    assert row["teacher_ms"] == 0.0 and row["forward_ms"] >= 5.0
    assert not net._forward_hooks and not net._forward_pre_hooks  # fit removed its timing hooks


def test_phase_durations_nested_teacher_counts_once():
    """A frozen stream called inside the student (multistream injection): its time is teacher time only."""
    marks = [
        ("step", 0.0),
        ("student+", 0.001),
        ("teacher+", 0.002),
        ("teacher-", 0.005),
        ("student-", 0.007),
        ("forward", 0.010),
        ("backward", 0.020),
        ("end", 0.021),
    ]
    d = phase_durations(marks, lambda a, b: (b - a) * 1000.0)
    assert d["teacher_ms"] == pytest.approx(3.0)
    assert d["forward_ms"] == pytest.approx(3.0)  # 6 ms in the student less the 3 ms of the nested teacher
    assert d["loss_ms"] == pytest.approx(4.0)  # 10 ms forward - 3 - 3
    assert d["backward_ms"] == pytest.approx(10.0) and d["optimizer_ms"] == pytest.approx(1.0)
    assert d["step_ms"] == pytest.approx(21.0)


def _run_dir(root: Path, with_cost: bool) -> Path:
    """A finished run's layout whose student stage's metrics.csv the trainer wrote (or without the cost columns)."""
    import json

    d = root / ("cost" if with_cost else "old")
    seed_everything(0)
    stage = _KD(_SlowNet(0.002), _SlowNet(0.004), ce_weight=1.0)
    Trainer(stage, TinySet(40), _tcfg(), out_dir=d / "stages" / "student").fit()
    res = {
        "method": "kd",
        "seed": 0,
        "dataset": "tiny",
        "status": "done",
        "final": {"accuracy": 0.5},
        "stages": {"student": {"kind": "student/kd", "source": "trained", "metrics": {"accuracy": 0.5}}},
    }
    (d / "results.json").write_text(json.dumps(res))
    if not with_cost:
        path = d / "stages" / "student" / "metrics.csv"
        rows = list(csv.DictReader(open(path)))
        keep = [k for k in rows[0] if k not in (*PHASES, "samples_per_s")]
        with open(path, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=keep, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
    return d


def test_report_plots_and_tabulates_the_cost(tmp_path: Path):
    pytest.importorskip("matplotlib")
    from mmh.evaluation.report import make_report

    run = _run_dir(tmp_path, True)
    paths = make_report([run], tmp_path / "rep")
    assert paths["cost"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = _rows(run / "stages" / "student" / "metrics.csv")
    text = paths["report"].read_text()
    want = [sum(r[k] for r in rows) / len(rows) for k in ("samples_per_s", *PHASES[:-1])]
    assert "| kd/student s0 | " + " | ".join(f"{v:.1f}" for v in want) + " |" in text
    assert "![training cost](cost.png)" in text
    # runs written before the cost columns existed: no cost section, no plot
    old = make_report([_run_dir(tmp_path, False)], tmp_path / "rep_old")
    assert "cost" not in old and "Training cost" not in old["report"].read_text()
