"""The runner's records: stage sources (structured, old strings still read), artifact paths, results checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mmh.runner import Source, load_results, stage_artifact_path, stage_model_path
from mmh.train.checkpoint import load_tensors, save_tensors


def test_source_records_and_the_old_strings():
    assert Source.parse({"kind": "cache", "path": "/c/teacher-1"}) == Source("cache", "/c/teacher-1")
    assert Source.parse("cache:/c/teacher-1") == Source("cache", "/c/teacher-1")  # results.json of older runs
    assert Source.parse("checkpoint:C:/x/model.pt") == Source("checkpoint", "C:/x/model.pt")  # split at the first :
    assert Source.parse("trained") == Source("trained") and Source.parse("run").as_dict() == {"kind": "run"}
    assert Source("cache", "/c").as_dict() == {"kind": "cache", "path": "/c"}
    for bad in ("downloaded:/x", {"kind": "cache", "path": 3}, 7, {"path": "/x"}):
        with pytest.raises(ValueError, match="source"):
            Source.parse(bad)


def _run(tmp_path: Path, source) -> tuple[Path, dict]:
    run = tmp_path / "run"
    run.mkdir()
    res = {"status": "done", "stages": {"hallucination": {"kind": "k", "source": source, "metrics": {}}}}
    (run / "results.json").write_text(json.dumps(res))
    return run, load_results(run)


@pytest.mark.parametrize("form", ["record", "string"])
def test_artifact_paths_follow_the_source(tmp_path: Path, form: str):
    cache = tmp_path / "cache" / "admd_hallucination-abc"
    cache.mkdir(parents=True)
    save_tensors({"net.0.weight": torch.arange(6.0).reshape(2, 3)}, cache / "discriminator.pt")
    (cache / "model.pt").write_bytes(b"")
    src = {"kind": "cache", "path": str(cache)} if form == "record" else f"cache:{cache}"
    run, res = _run(tmp_path, src)
    path = stage_artifact_path(run, res, "hallucination", "discriminator")
    assert path == cache / "discriminator.pt"
    assert torch.equal(load_tensors(path)["net.0.weight"], torch.arange(6.0).reshape(2, 3))
    assert stage_model_path(run, res, "hallucination") == cache / "model.pt"
    own = run / "stages" / "hallucination"
    own.mkdir(parents=True)
    save_tensors({"w": torch.ones(1)}, own / "discriminator.pt")  # the run's own copy comes first
    assert stage_artifact_path(run, res, "hallucination", "discriminator") == own / "discriminator.pt"
    with pytest.raises(FileNotFoundError, match="artifact 'other'"):
        stage_artifact_path(run, res, "hallucination", "other")
    with pytest.raises(ValueError, match="artifact name"):
        stage_artifact_path(run, res, "hallucination", "../x")
    with pytest.raises(KeyError, match="no stage 'nope'"):
        stage_artifact_path(run, res, "nope", "model")


def test_results_with_a_malformed_source_are_refused(tmp_path: Path):
    with pytest.raises(ValueError, match="stage 'hallucination'.*source"):
        _run(tmp_path, {"kind": "elsewhere"})


def test_tensor_artifacts_hold_only_tensors(tmp_path: Path):
    with pytest.raises(ValueError, match="tensor artifact"):
        save_tensors({"w": 1.0}, tmp_path / "x.pt")
    torch.save({"w": [1, 2]}, tmp_path / "y.pt")
    with pytest.raises(ValueError, match="tensor artifact"):
        load_tensors(tmp_path / "y.pt")


def test_a_stage_network_is_checked_against_its_record(tmp_path: Path):
    """eval/export compare a model.pt with the stage's ``network`` record and the run's dataset.json: modalities,
    class count, architecture (here a rad_dad-style ensemble, whose members must agree on the class count)."""
    from mmh.models import build_model
    from mmh.models.ensemble import LogitEnsemble
    from mmh.runner import check_stage_network, network_record

    def net(width: int = 4, classes: int = 3, mods: tuple[str, ...] = ("rgb",)) -> torch.nn.Module:
        return build_model("small_joint", modalities=list(mods), num_classes=classes, width=width, shared_width=4)

    ensemble = LogitEnsemble({"rad": net(), "dad": net()})
    record = network_record(ensemble)
    assert record["modalities"] == ["rgb"] and record["num_classes"] == 3
    assert record["config"]["ensemble"]["rad"]["width"] == 4
    run = tmp_path / "run"
    run.mkdir()
    (run / "dataset.json").write_text(json.dumps({"num_classes": 3}))
    res = {"stages": {"ensemble": {"network": record}}}
    check_stage_network(LogitEnsemble({"rad": net(), "dad": net()}), "m.pt", run, res, "ensemble")  # the same: fine
    for other, match in [
        (LogitEnsemble({"rad": net(width=6), "dad": net()}), "architecture"),
        (LogitEnsemble({"rad": net(classes=5), "dad": net(classes=5)}), "5 classes, the stage 3"),
        (LogitEnsemble({"rad": net(mods=("rgb", "depth")), "dad": net()}), r"\['rgb', 'depth'\]"),
        (net(), "architecture"),
    ]:
        with pytest.raises(ValueError, match=rf"m\.pt is not the network of stage 'ensemble' of run .*{match}"):
            check_stage_network(other, "m.pt", run, res, "ensemble")
    (run / "dataset.json").write_text(json.dumps({"num_classes": 4}))  # the run's data has 4 classes
    with pytest.raises(ValueError, match=r"it has 3 classes, the run's dataset \(.*dataset.json\) 4"):
        check_stage_network(net(), "m.pt", run, {"stages": {"ensemble": {}}}, "ensemble")  # an older record
    (run / "results.json").write_text(json.dumps({"stages": {"ensemble": {"network": ["x"]}}}))
    with pytest.raises(ValueError, match="'network' must be a mapping"):
        load_results(run)
