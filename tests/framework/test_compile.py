"""``train.compile``: the stage's forward + loss under torch.compile gives the eager run's losses, and a backend that
cannot be used falls back to eager with one warning."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import pytest
import torch
from _tiny import TinyNet, TinySet

from mmh.config import DEFAULTS, load_config, merge
from mmh.methods import Supervised
from mmh.train import Trainer
from mmh.utils import seed_everything


def _tcfg(**kw):
    return merge(DEFAULTS["train"], {"batch_size": 8, "steps": 6, "lr": 0.05, "progress": False, **kw})


_LAST: dict[str, Trainer] = {}


def _run(out: Path, **kw) -> tuple[list[dict[str, str]], dict[str, torch.Tensor]]:
    seed_everything(0)
    stage = Supervised(TinyNet(dropout=0.0))
    _LAST["trainer"] = tr = Trainer(stage, TinySet(24), _tcfg(**kw), out_dir=out, seed=1)
    tr.fit()
    with open(out / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    return rows, {k: v.detach().clone() for k, v in stage.state_dict().items()}


@pytest.mark.parametrize("backend", ["aot_eager", True])
def test_compiled_run_matches_eager(tmp_path: Path, backend, caplog):
    if backend is True and not torch._dynamo.is_inductor_supported():  # noqa: SLF001
        pytest.skip("inductor is not supported here")
    eager_rows, eager_w = _run(tmp_path / "eager")
    with caplog.at_level(logging.WARNING, logger="mmh.train.trainer"):
        rows, w = _run(tmp_path / "compiled", compile=backend)
    assert "train.compile" not in caplog.text  # it really ran compiled, no fallback
    assert isinstance(_LAST["trainer"]._forward, torch._dynamo.eval_frame.OptimizedModule)  # noqa: SLF001
    for a, b in zip(eager_rows, rows):
        assert float(b["loss"]) == pytest.approx(float(a["loss"]), rel=1e-5, abs=1e-6)
    for k in eager_w:
        torch.testing.assert_close(w[k], eager_w[k], rtol=1e-4, atol=1e-5)


def test_backend_failing_at_first_step_falls_back_once(tmp_path: Path, monkeypatch, caplog):
    eager_rows, eager_w = _run(tmp_path / "eager")
    calls = {"compiled": 0}

    def broken_compile(model, backend=None, **_):
        def forward(*_a, **_k):
            calls["compiled"] += 1
            raise RuntimeError("backend 'inductor' failed: no working C++ compiler found")

        return forward

    monkeypatch.setattr(torch, "compile", broken_compile)
    with caplog.at_level(logging.WARNING, logger="mmh.train.trainer"):
        rows, w = _run(tmp_path / "fallback", compile=True)
    msgs = [r.getMessage() for r in caplog.records if "train.compile" in r.getMessage()]
    assert len(msgs) == 1 and "no working C++ compiler" in msgs[0] and "eagerly" in msgs[0]
    assert calls["compiled"] == 1  # tried once, then eager for good
    assert [r["loss"] for r in rows] == [r["loss"] for r in eager_rows]
    assert all(torch.equal(w[k], eager_w[k]) for k in w)


def test_unknown_backend_falls_back_with_one_message(tmp_path: Path, caplog):
    with caplog.at_level(logging.WARNING, logger="mmh.train.trainer"):
        _run(tmp_path / "x", compile="no_such_backend")
    msgs = [r.getMessage() for r in caplog.records if "train.compile" in r.getMessage()]
    assert len(msgs) == 1 and "no_such_backend" in msgs[0]


def test_compile_setting_checked_and_overridable(tmp_path: Path):
    with pytest.raises(ValueError, match="train.compile"):
        Trainer(Supervised(TinyNet()), TinySet(24), _tcfg(compile=3), out_dir=tmp_path)
    cfg = load_config(None, ["train.compile=aot_eager", "train.teacher_cache=true"])
    assert cfg["train"]["compile"] == "aot_eager" and cfg["train"]["teacher_cache"] is True
    assert load_config(None, ["train.compile=true"])["train"]["compile"] is True


def test_distiller_stages_compiled_one_after_another_in_one_process(tmp_path: Path, caplog):
    """A method's stages train one after the other in one process: a DAD student (hooks on layer3 and layer4)
    compiled after a RAD student (a hook on layer4) must trace its own forward, hooks included — not reuse the RAD
    graph (whose layer3 hook was never registered) and fall back to eager. Each compiled first step's loss equals
    the eager one's."""
    from mmh.benchmarks import speed
    from mmh.config import stage_train_config
    from mmh.methods import method_stages

    def first_loss(method: str, compile_: str | bool) -> tuple[float, Trainer]:
        cfg = speed.speed_config(
            f"synthetic_antispoof/{method}", 2, ["model.kwargs.width=4", "model.kwargs.shared_width=8"]
        )
        facts = {**speed.data_facts(cfg), "size": 32}
        torch.manual_seed(0)
        stage = speed.build_timed_stage(cfg, facts)
        tcfg = stage_train_config(cfg, method_stages(cfg)[-1].section)
        batch = speed.speed_batch(facts, 2)
        data = speed._MemorySet(batch, 4, facts["modalities"], facts["num_classes"])  # noqa: SLF001
        tr = speed._trainer(stage, data, {**tcfg, "compile": compile_}, torch.device("cpu"), tmp_path / method)  # noqa: SLF001
        tr.stage.train()
        _, losses = tr._call_forward(dict(batch))  # noqa: SLF001
        return float(sum(losses.values())), tr

    eager = {m: first_loss(m, False)[0] for m in ("rad", "dad")}
    with caplog.at_level(logging.WARNING, logger="mmh.train.trainer"):
        for method in ("rad", "dad"):
            loss, tr = first_loss(method, "aot_eager")
            assert getattr(tr, "_compiled_ok", False), method
            assert loss == pytest.approx(eager[method], rel=1e-5), method
    assert "train.compile" not in caplog.text
