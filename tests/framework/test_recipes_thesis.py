"""The thesis's shipped recipes (``configs/papers/thesis/<dataset>/<method>.yaml``), chapters 3 and 5.

* ``mmh list configs`` lists exactly these recipes (no ``_base`` / ``_ch*`` file);
* every recipe's key values equal the thesis's (a table written from the text, not from the configs);
* every recipe (and every recipe of a paper other than MMH's, found by :mod:`_recipes`) runs 2 training steps on the
  CPU at full model size (ResNet-50 streams, R(2+1)D-18 per modality), each in a fresh process (a child of the fork
  server of :mod:`_recipes`), on a fixture tree in its dataset's published layout (with flow frames for chapter 5),
  inputs shrunk to 32x32. The recipes of one dataset share one ``output.cache``, so ablations reuse the steps they
  share. The chapter-3 recipes start from a torchvision-format ImageNet ResNet-50 file planted in a temporary torch
  hub cache (nothing is downloaded), and both streams are checked to hold its tensors; chapter 4's NW-UCLA recipes
  fine-tune from the NTU RGB+D ``admd`` run's streams (``stages.streams.init_from``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _recipes  # noqa: E402
from _recipes import listed_configs, transform_names  # noqa: E402

from mmh.config import config_dir, load_config  # noqa: E402

#: Chapter 3 (multiple-stream distillation): recipe -> the Table 3.2 / 3.4 setting (loss.multistream overrides).
CH3 = {
    "ntu60": {
        "multistream": {},
        "multistream_noconn": {"connections": False, "alpha": 1.0},
        "multistream_noconn_step3": {"step3_connections": False},
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


def test_list_configs_shows_the_thesis_recipes():
    listed = [line for line in listed_configs() if line.startswith("papers/thesis/")]
    chapter4 = {r.name for r in _recipes.discover() if r.model == "resnet50_framewise"}  # test_recipes_thesis_ch4
    assert sorted(set(listed) - chapter4) == RECIPES
    assert (config_dir() / "papers/thesis/_base/ch3.yaml").is_file()  # shared, and not listed
    assert not any("_base" in line or "/_ch" in line for line in listed_configs())


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
            names = transform_names(cfg["dataset"]["transforms"][where])
            assert "depth_to_jet" in names
            # 3.2: both streams start from torchvision's ImageNet file: its input statistics, on rgb and the
            # 3-channel jet depth, last (after depth_to_jet made the 3 channels)
            assert cfg["dataset"]["transforms"][where][-1] == t["normalize"], where
            assert names.count("normalize") == 1
        assert "hflip" in transform_names(cfg["dataset"]["transforms"]["train"])
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
        assert (
            transform_names(train_tf) == ["random_crop", "hflip", "color_jitter"] and train_tf[0]["size"] == t["crop"]
        )
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
DISCOVERED = [r for r in _recipes.discover() if r.paper != "mmh"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> _recipes.Session:
    return _recipes.session(tmp_path_factory)


def _run(runs: _recipes.Session, dataset: str, file: str) -> _recipes.Run:
    run = runs.runs[f"papers/thesis/{dataset}/{file}"]
    run.ok()
    return run


@pytest.mark.parametrize("recipe", [r.name for r in DISCOVERED])
def test_recipe_trains_two_steps_in_a_fresh_process(recipe, runs):
    """The recipe in its own process, 2 steps on the CPU at full model size, small inputs: finished, with accuracy."""
    run = runs.runs[recipe]
    run.ok()
    assert "accuracy" in run.results["final"], (recipe, run.results["final"])


@pytest.mark.parametrize("dataset", sorted(CH3))
def test_chapter3_recipes_train_two_steps_from_the_imagenet_file(dataset, runs):
    """Each chapter-3 recipe of the dataset (two ResNet-50 streams, 5 frames of 32x32); step 1 of the first recipe
    holds the planted ImageNet tensors in both streams; the ablations reuse the cached step 1."""
    step1_keys = set()
    for method in CH3[dataset]:
        run = _run(runs, dataset, method)
        step1 = run.results["stages"]["step1"]
        step1_keys.add(step1["key"])
        if method == next(iter(CH3[dataset])):  # the first recipe trains step 1 from the file
            assert step1["source"]["kind"] == "trained"
            msd = run.tensors["step1"]
            for stream in ("rgb", "depth"):  # 2 SGD steps at lr 1e-3 since: the file's values, nearly unchanged
                for key in ("layer3.2.conv2.weight", "layer4.0.conv1.weight", "stem.conv1.weight"):
                    got = msd[f"streams.{stream}.{key}"].flatten()
                    want = runs.resnet50[key.removeprefix("stem.")].flatten()
                    assert torch.corrcoef(torch.stack([got, want]))[0, 1] > 0.99, (stream, key)
            assert run.dataset["input_shapes"]["depth"] == [5, 3, 32, 32]  # jet-coloured, 5 frames
        else:
            assert step1["source"]["kind"] == "cache", (method, step1["source"])
        if method == "multistream":
            row = run.last_row("step3")
            assert float(row["lr"]) == pytest.approx(1e-3) and float(row["loss_hall"]) > 0
    assert len(step1_keys) == 1


@pytest.mark.parametrize("dataset", sorted(CH5))
def test_chapter5_recipes_train_two_steps_on_rgb_depth_flow(dataset, runs):
    """Each chapter-5 recipe of the dataset: three R(2+1)D-18 networks on RGB, depth and flow clips of 8 frames
    (32x32 crops) with the MCL metrics; the dmcl recipe evaluated with its ten clips per video (one for the others,
    to save time)."""
    for method in CH5[dataset]:
        run = _run(runs, dataset, method)
        assert {"accuracy", "accuracy/rgb", "accuracy/depth", "accuracy/flow", "sum", "oracle"} <= set(
            run.results["final"]
        )
        assert run.dataset["input_shapes"] == {"rgb": [8, 3, 32, 32], "depth": [8, 1, 32, 32], "flow": [8, 2, 32, 32]}
        config = run.results["stages"]["mcl"]["network"]["config"]
        assert config["name"] == "r2plus1d_18_streams" and config["modalities"] == ["rgb", "depth", "flow"]
        assert run.config["eval"]["clips"] == (10 if method == "dmcl" else 1), method


def _chapter4(dataset: str) -> list[_recipes.Recipe]:
    return [r for r in DISCOVERED if r.dataset == dataset and _recipes.is_chapter4(r)]


@pytest.mark.parametrize(
    "recipe",
    [r.name for r in _chapter4("nwucla")]
    or [pytest.param("none", marks=pytest.mark.skip(reason="no chapter-4 NW-UCLA recipe shipped"))],
)
def test_chapter4_nwucla_recipes_fine_tune_from_the_ntu60_streams(recipe, runs):
    """NW-UCLA's chapter-4 recipes start from the NTU RGB+D ``admd`` run's streams (``stages.streams.init_from``,
    the harness's contract): the stage record names that file's content and keeps exactly the 10-class heads fresh,
    and after 2 small steps the streams still hold the file's values — the backbone (NW-UCLA loads no ImageNet file)
    and the MSRA-initialised bottleneck, which the NW-UCLA run (another seed than the NTU run's) would draw anew.
    The streams also record each stream's accuracy beside the two-stream one (eval.metrics mcl)."""
    run = runs.runs[recipe]
    run.ok()
    src = runs.runs["papers/thesis/ntu60/admd"]
    src.ok()
    file = src.job.run_dir / "stages" / "streams" / "model.pt"
    init = [o for o in run.job.overrides if o.startswith("stages.streams.init_from=")]
    assert init == [f"stages.streams.init_from={file}"]
    assert run.config["seed"] != src.config["seed"] and run.config["model"]["pretrained"] is None
    rec = run.results["stages"]["streams"]["init_from"]
    assert rec["sha256"] == run.init_sha256[str(file)]  # the file's digest as the run started (deleted since)
    assert sorted(rec["fresh"]) == sorted(f"heads.{s}.{p}" for s in ("rgb", "depth") for p in ("weight", "bias"))
    want, got = src.tensors["streams"], run.tensors["streams"]
    common = sorted(set(want) & set(got))
    assert any(k.endswith("bottleneck.conv.weight") for k in common), (recipe, sorted(got))
    assert any(k.endswith("layer4.0.conv1.weight") for k in common), (recipe, sorted(got))
    for key in common:
        pair = torch.stack([got[key].flatten(), want[key].flatten()])
        assert torch.corrcoef(pair)[0, 1] > 0.99, (recipe, key)
    for r in (src, run):
        metrics = r.results["stages"]["streams"]["metrics"]
        assert {"accuracy", "accuracy/rgb", "accuracy/depth"} <= set(metrics), (r.job.id, sorted(metrics))
        assert "accuracy/hall" in r.results["stages"]["hallucination"]["metrics"], r.job.id
