"""The thesis's shipped recipes (``configs/papers/thesis/<dataset>/<method>.yaml``), chapters 3 and 5.

* ``mmh list configs`` lists exactly these recipes (no ``_base`` / ``_ch*`` file);
* every recipe's key values equal the thesis's (a table written from the text, not from the configs);
* every recipe runs 2 training steps on the CPU at full model size (ResNet-50 streams, R(2+1)D-18 per modality), each
  in a fresh process, on a fixture tree in its dataset's published layout (with flow frames for chapter 5), inputs
  shrunk to 32x32. The recipes of one dataset share one ``output.cache``, so ablations reuse the steps they share.
  The chapter-3 recipes start from a torchvision-format ImageNet ResNet-50 file planted in a temporary torch hub
  cache (nothing is downloaded), and both streams are checked to hold its tensors.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest
import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _trees  # noqa: E402

from mmh.config import config_dir, load_config
from mmh.utils.safe_io import safe_load  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]

#: Chapter 3 (multiple-stream distillation): recipe -> the Table 3.2 / 3.4 setting (loss.multistream overrides).
CH3 = {
    "ntu60": {
        "multistream": {},
        "multistream_noconn": {"connections": False},
        "multistream_hall_only": {"alpha": 1.0},
        "multistream_gd_only": {"alpha": 0.0},
        "multistream_inverted": {"direction": "rgb_to_depth"},
        "hoffman": {},
    },
    "nwucla": {"multistream": {}, "hoffman": {}},
    "uwa3d2": {"multistream": {}, "hoffman": {}},
}
#: Chapter 5 (DMCL): the methods each dataset's tables report (5.1: smcl/cmcl on NW-UCLA, UWA3D II, NTU120;
#: 5.2: random teacher on NW-UCLA, UWA3D II; 5.5: independent and DMCL on NTU60).
CH5 = {
    "nwucla": ("dmcl", "mcl_independent", "smcl", "cmcl", "mcl_random"),
    "uwa3d2": ("dmcl", "mcl_independent", "smcl", "cmcl", "mcl_random"),
    "ntu120": ("dmcl", "mcl_independent", "smcl", "cmcl"),
    "ntu60": ("dmcl", "mcl_independent"),
}
RECIPES = sorted(
    [f"papers/thesis/{d}/{m}" for d, ms in CH3.items() for m in ms]
    + [f"papers/thesis/{d}/{m}" for d, ms in CH5.items() for m in ms]
)

#: The thesis's settings, written from the text. Chapter 3 (3.2, 3.3.1, 3.3.6, Fig. 3.4): ResNet-50 streams from
#: ImageNet with temporal convolutions, alpha = lambda = 0.5, T = 10, 5 evenly spaced frames at 224x224, flip 0.5,
#: depth jet-coloured, lr 1e-3 then 1e-4 in step 3.
THESIS_CH3 = {
    "model": "multiplier_resnet",
    "arch": "resnet50",
    "temporal": True,
    "pretrained": "imagenet",
    "alpha": 0.5,
    "lam": 0.5,
    "T": 10.0,
    "frames": 5,
    "resolution": 224,
    "lr": 1e-3,
    "step3_gamma": 0.1,
    "normalize": {"name": "normalize", "keys": ["rgb", "depth"], "stats": "imagenet"},
}
#: Chapter 5 (5.3.2): one R(2+1)D-18 per modality from scratch on RGB / depth / flow, 8-frame clips by segment
#: sampling, 224 crops, flip, colour distortion, SGD momentum 0.9, lr 1e-3, lambda 0.5, T 2, ten test clips.
THESIS_CH5 = {
    "model": "r2plus1d_18_streams",
    "pretrained": None,
    "modalities": ["rgb", "depth", "flow"],
    "optimizer": "sgd",
    "momentum": 0.9,
    "lr": 1e-3,
    "lam": 0.5,
    "T": 2.0,
    "frames": 8,
    "crop": 224,
    "clips": 10,
}
PROTOCOL = {"ntu60": ("protocol", "xsub"), "ntu120": ("protocol", "xsub"), "nwucla": ("train_views", [1, 2])}
PROTOCOL["uwa3d2"] = ("test_views", [3, 4])


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'python'}:{ROOT}", "OMP_NUM_THREADS": "1", **extra}
    env.pop("MMH_DEBUG", None)
    return env


def test_list_configs_shows_the_thesis_recipes():
    out = subprocess.run(
        [sys.executable, "-m", "mmh.cli", "list", "configs"], capture_output=True, text=True, env=_env(), timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert sorted(line for line in out.stdout.split() if line.startswith("papers/thesis/")) == RECIPES
    assert (config_dir() / "papers/thesis/_base/ch3.yaml").is_file()  # shared, and not listed
    assert not any("_base" in line or "/_ch" in line for line in out.stdout.split())


def _names(specs) -> list[str]:
    return [t["name"] if isinstance(t, dict) else t for t in specs]


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_values_are_the_thesis(recipe):
    dataset, method = recipe.split("/")[2:]
    cfg = load_config(config_dir() / f"{recipe}.yaml")
    tr, kw = cfg["train"], cfg["dataset"]["kwargs"]
    assert cfg["dataset"]["name"] == dataset
    key, value = PROTOCOL[dataset]
    assert kw[key] == value
    if dataset in CH3 and method in CH3[dataset]:
        t = THESIS_CH3
        want_method = "hoffman" if method == "hoffman" else "multistream"
        assert cfg["method"] == want_method
        assert (cfg["model"]["name"], cfg["model"]["pretrained"]) == (t["model"], t["pretrained"])
        assert (cfg["model"]["kwargs"]["arch"], cfg["model"]["kwargs"]["temporal"]) == (t["arch"], t["temporal"])
        ms = cfg["loss"]["multistream"]
        expected = {"alpha": t["alpha"], "lam": t["lam"], "temperature": t["T"], "connections": True}
        expected |= {"direction": "depth_to_rgb", "teacher": "depth_stream"}
        expected |= {{"alpha": "alpha"}.get(k, k): v for k, v in CH3[dataset][method].items()}
        assert {k: ms[k] for k in expected} == expected
        assert (kw["num_frames"], kw["resolution"], tr["lr"]) == (t["frames"], t["resolution"], t["lr"])
        assert kw.get("sampling", "uniform") == "uniform" and "train" not in cfg["dataset"]["split_kwargs"]
        assert cfg["modalities"]["teacher"] == ["rgb", "depth"] and cfg["modalities"]["student"] == ["rgb"]
        step3 = cfg["stages"]["step3"]
        assert step3["schedule"] == "step" and step3["gamma"] == t["step3_gamma"]
        assert 0 < step3["milestones"][0] < tr["steps"]  # 1e-3, then 1e-4 within step 3
        for where in ("train", "eval"):
            names = _names(cfg["dataset"]["transforms"][where])
            assert "depth_to_jet" in names
            # 3.2: both streams start from torchvision's ImageNet file: its input statistics, on rgb and the
            # 3-channel jet depth, last (after depth_to_jet made the 3 channels)
            assert cfg["dataset"]["transforms"][where][-1] == t["normalize"], where
            assert names.count("normalize") == 1
        assert "hflip" in _names(cfg["dataset"]["transforms"]["train"])
    else:
        t = THESIS_CH5
        assert method in CH5[dataset] and cfg["method"] == method
        assert (cfg["model"]["name"], cfg["model"]["pretrained"]) == (t["model"], t["pretrained"])
        assert cfg["modalities"]["mcl"] == kw["modalities"] == t["modalities"]
        assert (tr["optimizer"], tr["momentum"], tr["lr"]) == (t["optimizer"], t["momentum"], t["lr"])
        mcl = cfg["loss"]["mcl"]
        assert (mcl["lam"], mcl["temperature"], mcl["t_squared"]) == (t["lam"], t["T"], False)
        assert kw["num_frames"] == t["frames"] and cfg["dataset"]["split_kwargs"]["train"]["sampling"] == "segment"
        train_tf = cfg["dataset"]["transforms"]["train"]
        assert _names(train_tf) == ["random_crop", "hflip", "color_jitter"] and train_tf[0]["size"] == t["crop"]
        assert cfg["dataset"]["transforms"]["eval"] == [{"name": "center_crop", "size": t["crop"]}]
        assert cfg["eval"]["clips"] == t["clips"] and set(cfg["eval"]["metrics"]) == {"accuracy", "mcl"}


def test_chapter3_recipes_feed_imagenet_statistics_to_both_streams():
    """The chapter-3 eval transforms: rgb as torchvision's ImageNet preset normalises it, depth jet-coloured
    (each clip's valid range stretched) and then normalised the same way, 3 channels."""
    from torchvision.models import ResNet50_Weights
    from torchvision.transforms.functional import normalize

    from mmh.data.transforms import build_transforms, jet

    cfg = load_config(config_dir() / "papers/thesis/nwucla/multistream.yaml")
    preset = ResNet50_Weights.IMAGENET1K_V1.transforms()
    g = torch.Generator().manual_seed(0)
    depth = torch.rand(5, 1, 8, 8, generator=g) * 0.5 + 0.25
    depth[:, :, :2] = 0.0  # missing depth
    sample = {"rgb": torch.rand(5, 3, 8, 8, generator=g), "depth": depth}
    out = build_transforms(cfg["dataset"]["transforms"]["eval"])(dict(sample))
    assert torch.allclose(out["rgb"], normalize(sample["rgb"], preset.mean, preset.std), atol=1e-6)
    valid = depth > 0
    lo, hi = depth[valid].min(), depth[valid].max()
    coloured = jet(torch.where(valid, (depth - lo) / (hi - lo), torch.zeros_like(depth)))
    assert out["depth"].shape == (5, 3, 8, 8)
    assert torch.allclose(out["depth"], normalize(coloured, preset.mean, preset.std), atol=1e-5)


# ---------------------------------------------------------------------------------------------------- the runs
def _plant_imagenet_resnet50(torch_home: Path) -> dict[str, torch.Tensor]:
    """A torchvision-format ResNet-50 file (torchvision's constructor, random values) under torchvision's
    IMAGENET1K_V1 file name in the hub cache."""
    from mmh.models.pretrained import published_weights

    torch.manual_seed(11)
    sd = torchvision.models.resnet50(weights=None).state_dict()
    sd = {k: (torch.randn_like(v) * 0.05 if v.is_floating_point() else v) for k, v in sd.items()}
    sd = {k: (v.abs() + 0.5 if "running_var" in k else v) for k, v in sd.items()}
    (name,) = [w.file for w in published_weights() if (w.name, w.arch) == ("imagenet", "resnet50")]
    folder = torch_home / "hub" / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(sd, folder / name)
    return sd


def _train(recipe: str, data: Path, out: Path, cache: Path, env: dict[str, str], extra: list[str]) -> dict:
    run_dir = out / recipe.replace("/", "_")
    argv = [sys.executable, "-m", "mmh.cli", "train", recipe, f"dataset.kwargs.root={data}"]
    argv += ["train.steps=2", "train.batch_size=2", "eval.batch_size=4", "train.progress=false", "threads=1"]
    argv += ["device=cpu", f"output.root={out}", f"output.cache={cache}", "--run-dir", str(run_dir), *extra]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, f"{recipe}: exit {proc.returncode}\n{proc.stderr[-3000:]}"
    return json.loads((run_dir / "results.json").read_text())


TREES = {"ntu60": _trees.ntu, "ntu120": _trees.ntu, "nwucla": _trees.nwucla, "uwa3d2": _trees.uwa3d2}


def _tree(dataset: str, root: Path) -> Path:
    if dataset.startswith("ntu"):  # subject 1: the thesis's xsub validation subject; 2 trains; 3 tests
        _trees.ntu(root, subjects=(1, 2, 3), frames=9, flow=True)
    else:
        TREES[dataset](root, frames=9, flow=True)
    return root


#: The 2-step runs at full model size cost minutes per dataset on 2 cores: the test suite runs NW-UCLA's (every method
#: of both chapters, every code path the other datasets' recipes take: the same bases, models, transforms and
#: evaluation), and ``MMH_ALL_RECIPES=1`` runs every dataset's.
ALL_RECIPES = os.environ.get("MMH_ALL_RECIPES") == "1"


def _datasets(names: Iterable[str]) -> list:
    skip = pytest.mark.skipif(not ALL_RECIPES, reason="set MMH_ALL_RECIPES=1 to run every dataset's recipes")
    return [pytest.param(d, marks=() if d == "nwucla" else skip) for d in sorted(names)]


@pytest.mark.parametrize("dataset", _datasets(CH3))
def test_chapter3_recipes_train_two_steps_from_the_imagenet_file(dataset, tmp_path):
    """Each chapter-3 recipe of the dataset in its own process (two ResNet-50 streams, 5 frames of 32x32); step 1
    of every recipe holds the planted ImageNet tensors in both streams; the ablations reuse the cached step 1."""
    data = _tree(dataset, tmp_path / "data")
    sd = _plant_imagenet_resnet50(tmp_path / "torch_home")
    env = _env(TORCH_HOME=str(tmp_path / "torch_home"))
    small = ["dataset.kwargs.resolution=32"]
    step1_keys = set()
    for method in CH3[dataset]:
        recipe = f"papers/thesis/{dataset}/{method}"
        res = _train(recipe, data, tmp_path / "runs", tmp_path / "cache", env, small)
        assert res["status"] == "done" and "accuracy" in res["final"], (method, res["final"])
        step1 = res["stages"]["step1"]
        step1_keys.add(step1["key"])
        run = tmp_path / "runs" / recipe.replace("/", "_")
        if method == CH3[dataset].__iter__().__next__():  # the first recipe trains step 1 from the file
            assert step1["source"]["kind"] == "trained"
            msd = safe_load(run / "stages" / "step1" / "model.pt", "model artifact")["state_dict"]
            for stream in ("rgb", "depth"):  # 2 SGD steps at lr 1e-3 since: the file's values, nearly unchanged
                for key in ("layer3.2.conv2.weight", "layer4.0.conv1.weight", "stem.conv1.weight"):
                    got = msd[f"streams.{stream}.{key}"].flatten()
                    want = sd[key.removeprefix("stem.")].flatten()
                    assert torch.corrcoef(torch.stack([got, want]))[0, 1] > 0.99, (stream, key)
            facts = json.loads((run / "dataset.json").read_text())
            assert facts["input_shapes"]["depth"] == [5, 3, 32, 32]  # jet-coloured, 5 frames
        else:
            assert step1["source"]["kind"] == "cache", (method, step1["source"])
        if method == "multistream":
            rows = (run / "stages" / "step3" / "metrics.csv").read_text().splitlines()
            row = dict(zip(rows[0].split(","), rows[-1].split(","), strict=True))
            assert float(row["lr"]) == pytest.approx(1e-3) and float(row["loss_hall"]) > 0
        shutil.rmtree(run)  # ResNet-50 checkpoints are large; the stage cache keeps what the next recipe reuses
    assert len(step1_keys) == 1


@pytest.mark.parametrize("dataset", _datasets(CH5))
def test_chapter5_recipes_train_two_steps_on_rgb_depth_flow(dataset, tmp_path):
    """Each chapter-5 recipe of the dataset in its own process: three R(2+1)D-18 networks on RGB, depth and flow
    clips of 8 frames (32x32 crops), evaluated with ten clips per video and the MCL metrics."""
    data = _tree(dataset, tmp_path / "data")
    small = [
        "dataset.kwargs.resolution=36",
        "dataset.transforms={train: [{name: random_crop, size: 32}, {name: hflip, p: 0.5}, "
        "{name: color_jitter, brightness: 0.4, contrast: 0.4, saturation: 0.4, hue: 0.1}], "
        "eval: [{name: center_crop, size: 32}]}",
    ]
    for method in CH5[dataset]:
        recipe = f"papers/thesis/{dataset}/{method}"
        res = _train(recipe, data, tmp_path / "runs", tmp_path / "cache", _env(), small)
        assert res["status"] == "done", (method, res)
        assert {"accuracy", "accuracy/rgb", "accuracy/depth", "accuracy/flow", "sum", "oracle"} <= set(res["final"])
        run = tmp_path / "runs" / recipe.replace("/", "_")
        facts = json.loads((run / "dataset.json").read_text())
        assert facts["input_shapes"] == {"rgb": [8, 3, 32, 32], "depth": [8, 1, 32, 32], "flow": [8, 2, 32, 32]}
        config = json.loads(json.dumps(res["stages"]["mcl"]["network"]["config"]))
        assert config["name"] == "r2plus1d_18_streams" and config["modalities"] == ["rgb", "depth", "flow"]
        shutil.rmtree(run)
