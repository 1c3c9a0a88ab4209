"""``mmh export``: TorchScript (and ONNX where onnxruntime is installed) files equal to the run's networks."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from mmh.cli import main
from mmh.train.checkpoint import load_model

pytest.importorskip("mmh_ext")
ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "dataset.split_kwargs={train: {size: 32}, test: {size: 24}}",
    "train.batch_size=16",
    "train.steps=3",
    "train.progress=false",
    "threads=1",
    "output.cache=''",
]


@pytest.fixture(scope="module")
def mmh_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("export") / "kd"
    assert (
        main(["train", "synthetic_motion/kd", *TINY, "model.kwargs={width: 8, shared_width: 8}", "--run-dir", str(run)])
        == 0
    )
    return run


@pytest.fixture(scope="module")
def multiplier_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("export") / "multistream"
    assert (
        main(
            [
                "train",
                str(ROOT / "configs/thesis/multistream.yaml"),
                *TINY,
                "model.kwargs.width=4",
                "--run-dir",
                str(run),
            ]
        )
        == 0
    )
    return run


def _test_batch(run: Path, names: list[str]) -> tuple[tuple[torch.Tensor, ...], dict[str, torch.Tensor]]:
    """The run's own test items (real data, batch 24), as positional tensors and as the network's dict."""
    from mmh.config import load_config
    from mmh.runner import load_split

    cfg = load_config(run / "config.yaml")
    ds = load_split(cfg, "test")
    batch = ds.__getitems__(list(range(len(ds)))) if hasattr(ds, "__getitems__") else None
    assert batch is not None
    return tuple(batch[n] for n in names), batch


def test_torchscript_student_equals_the_run(mmh_run: Path, tmp_path: Path):
    out = tmp_path / "student.pt"
    assert main(["export", str(mmh_run), "--stage", "student", "--format", "torchscript", "--out", str(out)]) == 0
    side = json.loads(Path(f"{out}.json").read_text())
    assert [i["name"] for i in side["inputs"]] == ["rgb"] and side["stage"] == "student"
    assert side["class_names"] == ["approach", "recede", "lateral"]
    args, batch = _test_batch(mmh_run, ["rgb"])
    assert side["inputs"][0]["shape"] == ["batch", *batch["rgb"].shape[1:]]
    assert side["inputs"][0]["normalization"] is None  # the synthetic data is not normalised
    net = torch.jit.load(str(out))
    ref = load_model(mmh_run / "stages" / "student" / "model.pt").eval()
    with torch.no_grad():
        want = ref(batch)
        got = net(*args)
    assert got.shape == want.shape == (24, 3)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_teacher_inputs_in_the_roles_order(mmh_run: Path, tmp_path: Path):
    out = tmp_path / "teacher.pt"
    assert main(["export", str(mmh_run), "--stage", "teacher", "--out", str(out)]) == 0
    side = json.loads(Path(f"{out}.json").read_text())
    assert [i["name"] for i in side["inputs"]] == ["rgb", "depth"]  # modalities.teacher
    args, batch = _test_batch(mmh_run, ["rgb", "depth"])
    ref = load_model(mmh_run / "stages" / "teacher" / "model.pt").eval()
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(str(out))(*args), ref(batch), atol=1e-5, rtol=0)


def test_multiplier_net_exports_without_mmh_ext(multiplier_run: Path, tmp_path: Path):
    out = tmp_path / "step4.pt"
    assert main(["export", str(multiplier_run), "--out", str(out)]) == 0  # default: the last stage
    side = json.loads(Path(f"{out}.json").read_text())
    assert side["stage"] == "step4" and [i["name"] for i in side["inputs"]] == ["rgb"]
    ref = load_model(multiplier_run / "stages" / "step4" / "model.pt").eval()
    assert ref.connections and ref.connected_stages  # the network does inject at inference
    net = torch.jit.load(str(out))
    assert "mmh_ext" not in str(net.inlined_graph)
    args, batch = _test_batch(multiplier_run, ["rgb"])
    with torch.no_grad():
        want = ref(batch)  # through mmh_ext.cross_stream_inject
    torch.testing.assert_close(net(*args), want, atol=1e-5, rtol=0)
    # a fresh interpreter that cannot import mmh_ext (nor mmh) runs the file and gets the same logits
    torch.save({"x": args[0], "want": want}, tmp_path / "io.pt")
    code = textwrap.dedent(f"""
        import sys
        sys.modules["mmh_ext"] = None
        sys.modules["mmh"] = None
        import torch
        io = torch.load({str(tmp_path / "io.pt")!r})
        got = torch.jit.load({str(out)!r})(io["x"])
        print(float((got - io["want"]).abs().max()))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert float(proc.stdout.strip().splitlines()[-1]) <= 1e-5


def test_export_bad_input(mmh_run: Path, tmp_path: Path, capsys):
    out = str(tmp_path / "x.pt")
    assert main(["export", str(tmp_path / "nope"), "--out", out]) == 2
    assert "nope" in capsys.readouterr().err
    assert main(["export", str(mmh_run), "--stage", "step9", "--out", out]) == 2
    err = capsys.readouterr().err
    assert "'step9'" in err and "student" in err
    assert main(["export", str(mmh_run), "--format", "tflite", "--out", out]) == 2
    assert "'tflite'" in capsys.readouterr().err
    assert not Path(out).exists()


def test_onnx_without_the_extra_names_it(mmh_run: Path, tmp_path: Path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # as if not installed
    assert main(["export", str(mmh_run), "--format", "onnx", "--out", str(tmp_path / "s.onnx")]) == 2
    assert "mmh[export]" in capsys.readouterr().err


def test_onnx_student_equals_the_run(mmh_run: Path, multiplier_run: Path, tmp_path: Path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    for run, stage in ((mmh_run, "student"), (multiplier_run, "step4")):
        out = tmp_path / f"{stage}.onnx"
        assert main(["export", str(run), "--format", "onnx", "--out", str(out)]) == 0
        side = json.loads(Path(f"{out}.json").read_text())
        names = [i["name"] for i in side["inputs"]]
        args, batch = _test_batch(run, names)
        sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        got = sess.run(["logits"], {n: a.numpy() for n, a in zip(names, args)})[0]
        with torch.no_grad():
            want = load_model(run / "stages" / stage / "model.pt").eval()(batch)
        torch.testing.assert_close(torch.from_numpy(got), want, atol=1e-5, rtol=0)


def test_prepare_reads_and_resizes_as_the_dataset(tmp_path: Path):
    """examples/cpp/prepare.py (numpy + Pillow, no torch) gives the dataset's values for images of another size than
    the network's: bilinear with antialiasing for rgb (down and up), nearest for depth, as ``resolution=`` does."""
    import numpy as np
    from PIL import Image

    from mmh.data import build_dataset

    sys.path.insert(0, str(ROOT / "examples" / "cpp"))
    try:
        import prepare
    finally:
        sys.path.remove(str(ROOT / "examples" / "cpp"))
    rng = np.random.default_rng(3)
    for cls in ("a", "b"):
        d = tmp_path / "train" / cls / "s0"
        d.mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (24, 30, 3), dtype=np.uint8)).save(d / "rgb.png")
        Image.fromarray(rng.integers(0, 65536, (24, 30), dtype=np.uint16)).save(d / "depth.png")
    for hw in ((16, 16), (40, 37)):
        ds = build_dataset("paired_folder", root=str(tmp_path), resolution=hw, normalize=False)
        for i, s in enumerate(ds.samples):
            item = ds[i]
            for m, channels in (("rgb", 3), ("depth", 1)):
                got = prepare.read_image(Path(s.files[m][0]), channels, hw, 65535.0, m)
                assert got.shape == tuple(item[m].shape)
                np.testing.assert_allclose(got, item[m].numpy(), atol=1e-5, rtol=0, err_msg=f"{m} {hw}")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(SystemExit, match="bad.png"):
        prepare.read_image(tmp_path / "bad.png", 3, (16, 16), 65535.0, "rgb")


def _temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp"))


def _fail_after_writing(monkeypatch, exc: BaseException) -> None:
    """The export writes its file, then ``exc`` is raised (a fault or Ctrl-C in the middle of the checks)."""
    import mmh.export as export

    real = export._write_and_run

    def write_then_fail(*args, **kwargs):
        real(*args, **kwargs)
        raise exc

    monkeypatch.setattr(export, "_write_and_run", write_then_fail)


@pytest.mark.parametrize("failure", ["difference", "classes", "exception", "ctrl-c"])
def test_a_failed_export_leaves_the_previous_file_and_no_temp(mmh_run: Path, tmp_path: Path, monkeypatch, failure):
    """Each failure after the file was written: --out and its sidecar stay as they were (or absent), no temp file."""
    import mmh.export as export

    good, fresh = tmp_path / "good" / "student.pt", tmp_path / "fresh" / "student.pt"
    assert main(["export", str(mmh_run), "--stage", "student", "--out", str(good)]) == 0
    side = Path(f"{good}.json")
    before = good.read_bytes(), side.read_bytes()
    if failure == "difference":
        monkeypatch.setattr(export, "TOLERANCE", -1.0)  # no difference passes
    elif failure == "classes":
        real = export._facts
        monkeypatch.setattr(export, "_facts", lambda run, cfg: {**real(run, cfg), "num_classes": 5})
    elif failure == "exception":
        _fail_after_writing(monkeypatch, RuntimeError("onnxruntime failed"))
    else:
        _fail_after_writing(monkeypatch, KeyboardInterrupt())
    status = {"difference": 1, "classes": 2, "exception": 1, "ctrl-c": 130}[failure]
    for out in (good, fresh):
        # the teacher (other inputs, other weights) over the student's good file
        assert main(["export", str(mmh_run), "--stage", "teacher", "--out", str(out)]) == status
        assert _temps(out.parent) == []
    assert (good.read_bytes(), side.read_bytes()) == before
    assert json.loads(side.read_text())["stage"] == "student"
    assert not fresh.exists() and not Path(f"{fresh}.json").exists()


def test_a_successful_export_replaces_the_previous_file(mmh_run: Path, tmp_path: Path):
    out = tmp_path / "model.pt"
    assert main(["export", str(mmh_run), "--stage", "student", "--out", str(out)]) == 0
    assert main(["export", str(mmh_run), "--stage", "teacher", "--out", str(out)]) == 0
    assert json.loads(Path(f"{out}.json").read_text())["stage"] == "teacher"
    assert len(list(torch.jit.load(str(out)).graph.inputs())) == 3  # self, rgb, depth
    assert _temps(tmp_path) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["model.pt", "model.pt.json"]


def test_a_failed_onnx_check_leaves_the_previous_file(mmh_run: Path, tmp_path: Path, monkeypatch):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    out = tmp_path / "student.onnx"
    assert main(["export", str(mmh_run), "--format", "onnx", "--out", str(out)]) == 0
    before = out.read_bytes(), Path(f"{out}.json").read_bytes()

    def reject(path, *args, **kwargs):
        assert Path(path).is_file() and Path(path) != out  # the check reads the temporary file
        raise onnx.checker.ValidationError("rejected")

    monkeypatch.setattr(onnx.checker, "check_model", reject)
    assert main(["export", str(mmh_run), "--stage", "teacher", "--format", "onnx", "--out", str(out)]) == 1
    assert (out.read_bytes(), Path(f"{out}.json").read_bytes()) == before
    assert _temps(tmp_path) == []
