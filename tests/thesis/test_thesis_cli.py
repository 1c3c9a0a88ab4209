"""End to end: thesis methods from the command-line entry point of ``mmh train``, killed and resumed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mmh.cli import main
from mmh.train.checkpoint import safe_load

from .conftest import TINY

pytest.importorskip("mmh_ext")
ROOT = Path(__file__).resolve().parents[2]


def _state(run: Path, stage: str) -> dict[str, torch.Tensor]:
    return safe_load(run / "stages" / stage / "model.pt", "model artifact")["state_dict"]


def test_multistream_train_kill_resume(tmp_path: Path):
    cfg = str(ROOT / "configs/thesis/multistream.yaml")
    ref = tmp_path / "ref"
    assert main(["train", cfg, *TINY, "output.cache=''", "model.kwargs.width=4", "--run-dir", str(ref)]) == 0
    res = json.loads((ref / "results.json").read_text())
    assert res["status"] == "done" and list(res["stages"]) == ["step1", "step2", "step3", "step4"]
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                cfg,
                *TINY,
                "output.cache=''",
                "model.kwargs.width=4",
                "--run-dir",
                str(run),
                "--stop-after-steps",
                "5",
            ]
        )
        == 0
    )
    part = json.loads((run / "results.json").read_text())
    assert part["status"] == "stopped" and part["stages"]["step2"]["step"] == 2
    assert main(["train", "--resume", str(run)]) == 0
    res2 = json.loads((run / "results.json").read_text())
    assert res2["status"] == "done" and res2["final"] == res["final"]
    for stage in ("step1", "step2", "step3", "step4"):
        a, b = _state(ref, stage), _state(run, stage)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), stage


@pytest.mark.parametrize("method", ["dmcl", "admd", "hoffman", "moddrop"])
def test_other_methods_from_the_cli(tmp_path: Path, method: str):
    run = tmp_path / method
    assert (
        main(
            [
                "train",
                str(ROOT / f"configs/thesis/{method}.yaml"),
                *TINY,
                "output.cache=''",
                "model.kwargs.width=4",
                "--run-dir",
                str(run),
            ]
        )
        == 0
    )
    res = json.loads((run / "results.json").read_text())
    assert res["status"] == "done" and 0.0 <= res["final"]["accuracy"] <= 1.0
