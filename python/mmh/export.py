"""``mmh export``: a run's trained network as a file that runs without mmh (TorchScript or ONNX) + a JSON sidecar.

The exported network takes the stage's modalities as positional tensors — in the order of ``modalities.student``
(for a stage reading other modalities: the first role of ``modalities`` whose set matches, else the network's own
order) — each shaped like a batch of dataset items ((B, C, H, W) images, (B, T, C, H, W) clips, (B, D) vectors),
*already normalised* as the dataset normalised them, and returns the logits (B, K). The sidecar ``<out>.json``
records what a deployment needs: the input names in order and their shapes, the normalisation per input
(``(x - mean[c]) / std[c]`` per channel, from the run's ``dataset.json``; null when the dataset applies none), the
class names, and the largest difference between the file's logits and the run's network measured right after the
export. The stage's ``model.pt`` is first checked against the run (:func:`mmh.runner.check_stage_network`): a
network of other modalities, class count or architecture than the stage saved is refused, naming both.

The file and the sidecar are written as temporary files beside ``--out`` (``.<name>.<random>.tmp``) and renamed
over ``--out`` and ``<out>.json`` only once every check passed: a failed export (a difference over the tolerance,
the ONNX checker or onnxruntime failing, any exception, Ctrl-C) removes them and leaves an existing ``--out`` and
its sidecar as they were.

Networks that call ``mmh_ext.cross_stream_inject`` (the multiplier nets) are traced with the operator's
decomposition ``x * relu(gate)`` (:func:`mmh.models.multiplier.decomposed_injection`), so the file does not need
mmh_ext. ONNX needs the ``export`` extra (onnx, onnxruntime); the check then runs the file in onnxruntime.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .utils.io import fsync_file, read_json, sync_dir, temp_file_beside, write_json

__all__ = ["FORMATS", "export_run", "input_names", "PositionalInputs", "load_run_network"]

#: Formats ``mmh export`` writes.
FORMATS: tuple[str, ...] = ("torchscript", "onnx")
#: Largest |exported - run| logit difference accepted by the check right after exporting.
TOLERANCE = 1e-4


class PositionalInputs(nn.Module):
    """``forward(*tensors)`` = ``model({names[i]: tensors[i]})``: a dict-input mmh network with positional inputs."""

    def __init__(self, model: nn.Module, names: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.names = list(names)

    def forward(self, *inputs: Tensor) -> Tensor:
        if len(inputs) != len(self.names):
            raise ValueError(f"expected {len(self.names)} inputs ({', '.join(self.names)}), got {len(inputs)}")
        return self.model(dict(zip(self.names, inputs, strict=True)))


def load_run_network(run_dir: str | os.PathLike, stage: str | None = None) -> tuple[nn.Module, str, dict[str, Any]]:
    """(the network of ``stage`` (default: the run's last stage) in eval mode, the stage name, the run's config).
    The network is checked against the run (:func:`mmh.runner.load_stage_network`)."""
    from .config import load_run_config
    from .runner import load_results, load_stage_network

    run = Path(run_dir)
    if not run.is_dir():
        raise FileNotFoundError(f"no such run directory: {run}")
    cfg = load_run_config(run)
    res = load_results(run)
    stages = list(res.get("stages") or {})
    stage = stage or (stages[-1] if stages else None)
    if stage not in stages:
        raise ValueError(f"run {run} has no stage {stage!r} (stages: {stages})")
    model, _path = load_stage_network(run, res, stage)
    return model.eval(), stage, cfg


def input_names(model: nn.Module, cfg: Mapping[str, Any]) -> list[str]:
    """The order of the exported inputs: ``modalities.student`` when the network reads exactly those, else the first
    role of ``modalities`` with the network's set, else the network's own ``modalities``."""
    mods = list(getattr(model, "modalities", ()) or ())
    if not mods:
        raise ValueError(f"the network ({type(model).__name__}) has no 'modalities' attribute")
    roles = dict(cfg.get("modalities") or {})
    for role in ["student", *[r for r in roles if r != "student"]]:
        names = roles.get(role)
        if isinstance(names, list) and sorted(names) == sorted(mods):
            return list(names)
    return mods


def _facts(run: Path, cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The run's ``dataset.json``; for a run made before it existed, rebuilt from the train split."""
    p = run / "dataset.json"
    if p.is_file():
        facts = read_json(p)
        if not isinstance(facts, dict):
            raise ValueError(f"{p} is not a run's dataset record (a JSON mapping)")
        return facts
    from .config import load_run_config
    from .data import dataset_facts
    from .runner import dataset_record, load_split

    full = load_run_config(run)
    ds = load_split(full, full["dataset"]["train_split"])
    return dataset_record(full, ds, dataset_facts(ds))


def _example_inputs(names: Sequence[str], facts: Mapping[str, Any], batch: int) -> tuple[Tensor, ...]:
    shapes = facts.get("input_shapes") or {}
    missing = [m for m in names if m not in shapes]
    if missing:
        raise ValueError(f"the run's dataset.json has no input shape for {missing[0]!r}")
    g = torch.Generator().manual_seed(0)
    return tuple(torch.randn(batch, *shapes[m], generator=g) for m in names)


def _onnx_modules() -> tuple[Any, Any]:
    from ._optional import MissingExtraError

    try:
        import onnx
    except ImportError as exc:
        raise MissingExtraError("onnx", "export", "mmh export --format onnx") from exc
    try:
        import onnxruntime
    except ImportError as exc:
        raise MissingExtraError("onnxruntime", "export", "mmh export --format onnx") from exc
    return onnx, onnxruntime


def _write_and_run(
    wrapper: nn.Module,
    names: Sequence[str],
    example: tuple[Tensor, ...],
    check: tuple[Tensor, ...],
    out: Path,
    fmt: str,
    opset: int,
) -> tuple[Tensor, Tensor]:
    """Trace ``wrapper`` on ``example`` into ``out`` (format ``fmt``); return (the run's logits on ``check``, the
    file's logits on ``check``)."""
    from .models.multiplier import decomposed_injection

    with torch.no_grad(), decomposed_injection(), warnings.catch_warnings():
        # shape checks in the models read sizes as Python ints: constants of the trace, as intended
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        expected = wrapper(*check)
        if fmt == "torchscript":
            traced = torch.jit.trace(wrapper, example, check_trace=False)
            traced.save(str(out))
            return expected, torch.jit.load(str(out))(*check)
        onnx, ort = _onnx_modules()
        torch.onnx.export(
            wrapper,
            example,
            str(out),
            input_names=names,
            output_names=["logits"],
            dynamic_axes={**{n: {0: "batch"} for n in names}, "logits": {0: "batch"}},
            opset_version=opset,
            dynamo=False,
        )
        onnx.checker.check_model(str(out))
        sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        return expected, torch.from_numpy(sess.run(["logits"], {n: x.numpy() for n, x in zip(names, check)})[0])


def _sidecar(
    fmt: str,
    out: Path,
    run: Path,
    stage: str,
    facts: Mapping[str, Any],
    names: Sequence[str],
    num_classes: int,
    diff: float,
    batch: int,
    opset: int,
) -> dict[str, Any]:
    """The JSON sidecar: inputs in order with shapes and normalisation, classes, output, and the check."""
    norm = facts.get("normalization") or {}
    shapes = facts.get("input_shapes") or {}
    sidecar = {
        "format": fmt,
        "file": out.name,
        "run_dir": str(run.resolve()),
        "stage": stage,
        "dataset": facts.get("name"),
        "class_names": list(facts.get("class_names") or []),
        "num_classes": num_classes,
        "inputs": [
            {"name": n, "shape": ["batch", *shapes[n]], "dtype": "float32", "normalization": norm.get(n)} for n in names
        ],
        "output": {"name": "logits", "shape": ["batch", num_classes]},
        "preprocess": "each input x (values as the dataset reads them: 8-bit / 255, 16-bit / depth_scale) is fed "
        "as (x - mean[c]) / std[c] per channel c (std < 1e-6 taken as 1); normalization null: as is",
        "check": {"max_abs_diff": diff, "batch": batch},
    }
    if fmt == "onnx":
        sidecar["opset"] = opset
    return sidecar


def export_run(
    run_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    stage: str | None = None,
    fmt: str = "torchscript",
    opset: int = 17,
    batch: int = 2,
) -> dict[str, Any]:
    """Export ``stage`` of ``run_dir`` to ``out`` in format ``fmt`` and write ``<out>.json``; return the sidecar.

    The network is traced on random inputs of the dataset's item shapes with batch ``batch`` (the batch size stays
    free in the file); the file's logits are then compared with the run's network on other random inputs of batch
    ``batch + 1`` and the largest difference recorded (a RuntimeError above ``TOLERANCE``). ``out`` and
    ``<out>.json`` are replaced only when every check passed; on any failure they stay as they were.
    """
    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt!r}: unknown format; formats: {list(FORMATS)}")
    if fmt == "onnx":
        _onnx_modules()  # a missing extra is reported before any work
    if Path(out).is_dir():
        raise IsADirectoryError(f"--out {out} is a folder; give the file to write")
    model, stage, cfg = load_run_network(run_dir, stage)
    run, out = Path(run_dir), Path(out)
    facts = _facts(run, cfg)
    names = input_names(model, cfg)
    wrapper = PositionalInputs(model, names).eval()
    example = _example_inputs(names, facts, batch)
    check = tuple(torch.randn(batch + 1, *x.shape[1:], generator=torch.Generator().manual_seed(1)) for x in example)
    out.parent.mkdir(parents=True, exist_ok=True)
    side = Path(f"{out}.json")
    tmp, side_tmp = temp_file_beside(out), None
    try:
        expected, got = _write_and_run(wrapper, names, example, check, tmp, fmt, opset)
        diff = float((got - expected).abs().max())
        if not diff <= TOLERANCE:
            raise RuntimeError(
                f"the exported {fmt} network differs from the run's by {diff:.3g} (> {TOLERANCE}); not usable, "
                f"{out} not written"
            )
        width, classes = int(expected.shape[1]), facts.get("num_classes")
        if classes is not None and width != classes:  # check_stage_network compares the configs; this, the output
            raise ValueError(
                f"stage {stage!r} of {run}: the network gives {width} logits but the run's dataset.json "
                f"has {classes} classes"
            )
        sidecar = _sidecar(fmt, out, run, stage, facts, names, width, diff, batch + 1, opset)
        side_tmp = temp_file_beside(side)
        write_json(sidecar, side_tmp)
        fsync_file(tmp)
        os.replace(tmp, out)
        os.replace(side_tmp, side)
    except BaseException:
        for p in (tmp, side_tmp):
            if p is not None:
                p.unlink(missing_ok=True)
        raise
    sync_dir(out.parent)
    return sidecar
