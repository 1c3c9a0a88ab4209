"""The thesis's chapter-4 (ADMD) recipes, the ``resnet50_framewise`` model they train, ``stages.<section>.init_from``.

* the recipes (``configs/papers/thesis/<dataset>/{admd,admd_naive}.yaml``) hold the thesis's values (a table written
  from the text of chapter 4, not from the configs);
* ``resnet50_framewise`` against torchvision: a torchvision-format ImageNet file planted in a temporary hub cache
  loads into every stream; with identity temporal convolutions the per-frame features are torchvision's ResNet-50
  trunk's, the per-frame outputs equal running each stream frame by frame, the logits the mean of the per-frame
  logits over frames and streams;
* ``init_from``: matched tensors copied, class-count heads kept fresh, bad files and keys refused, the file's content
  in the stage key, and the stage trained afterwards.

The 2-step runs of every recipe live in the shared recipe harness (tests/framework/test_recipes_thesis.py).
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest
import torch
import torchvision
from _recipes import listed_configs, transform_names
from torch import nn

from mmh.config import config_dir, load_config
from mmh.models import FeatureExtractor, FrameDiscriminator, build_model
from mmh.models.pretrained import init_from_model_file
from mmh.train.checkpoint import save_model

#: dataset -> the chapter-4 methods its tables report (Table 4.4: ADMD on NTU RGB+D and NW-UCLA; Table 4.3: the
#: binary "0/1" discriminator; Table 4.5: ADMD and "Ours (naive adversarial)" on NYUD).
CH4 = {"ntu60": ("admd", "admd_naive"), "nwucla": ("admd",), "nyud_objects": ("admd", "admd_naive")}
RECIPES = sorted(f"papers/thesis/{d}/{m}" for d, ms in CH4.items() for m in ms)

#: Chapter 4, written from the text: ResNet-50 streams with temporal convolutions (4.2.2, Fig. 4.2) and a 128-d
#: pool + conv bottleneck (4.2.2, Table 4.2), ImageNet start (4.2.1), five uniformly sampled frames (4.2.2 Input),
#: depth jet-coloured for actions and HHA for NYUD (4.2.2, 4.3.1), D1 = [fc(2048), fc(1024), fc(C+1)] for actions and
#: D2 = [fc(1024) x 3, fc(2048), fc(3072), fc(C+1)] with skip connections for objects (4.2.2, Fig. 4.3), the
#: discriminator fed [F ‖ y_t] (Table 4.3), NW-UCLA fine-tuned from NTU's streams (4.3.1), NTU cross-subject with a
#: ~5 % validation set (4.3.1), NW-UCLA cross-view (Table 4.4).
THESIS_CH4 = {
    "model": "resnet50_framewise",
    "arch": "resnet50",
    "bottleneck": 128,
    "bottleneck_kind": "pool_conv",
    "pretrained": "imagenet",
    "frames": 5,
    "resolution": 224,
    "d_actions": [2048, 1024],
    "d_objects": [1024, 1024, 1024, 2048, 3072],
    "d_objects_residual": [1, 2],
    "protocol": {"ntu60": ("protocol", "xsub"), "nwucla": ("train_views", [1, 2])},
}


def test_list_configs_shows_the_chapter4_recipes():
    listed = set(listed_configs())
    assert set(RECIPES) <= listed
    assert not any("_ch4" in line for line in listed)


@pytest.mark.parametrize("recipe", RECIPES)
def test_chapter4_recipe_values_are_the_thesis(recipe):
    dataset, method = recipe.split("/")[2:]
    cfg = load_config(config_dir() / f"{recipe}.yaml")
    t, kw, mk, d = THESIS_CH4, cfg["dataset"]["kwargs"], cfg["model"]["kwargs"], cfg["loss"]["admd"]
    assert (cfg["method"], cfg["dataset"]["name"]) == (method, dataset)
    # NW-UCLA's streams come whole from the NTU run's (init_from), so it loads no ImageNet file of its own
    pretrained = None if dataset == "nwucla" else t["pretrained"]
    assert (cfg["model"]["name"], cfg["model"]["pretrained"]) == (t["model"], pretrained)
    # 4.3.3's accuracy, and each stream's (Table 4.4 rows 8 / 10, Table 4.5 "Depth alone" / "RGB alone")
    assert cfg["eval"]["metrics"] == ["accuracy", "mcl"]
    assert (mk["arch"], mk["bottleneck"], mk["bottleneck_kind"]) == (t["arch"], t["bottleneck"], t["bottleneck_kind"])
    assert kw["resolution"] == t["resolution"]
    assert cfg["modalities"]["teacher"] == ["rgb", "depth"] and cfg["modalities"]["student"] == ["rgb"]
    assert d["h_ce"] == 0.0  # Eq. 4.2: H learns from the adversarial game alone
    train_tf = transform_names(cfg["dataset"]["transforms"]["train"])
    if dataset == "nyud_objects":
        assert mk["temporal"] is False and d["frame_conditioning"] is False  # single images
        assert kw["depth_encoding"] == "hha" and "depth_to_jet" not in train_tf
        assert (d["hidden"], d["residual"]) == (t["d_objects"], t["d_objects_residual"])
        assert cfg["dataset"]["eval_split"] == "test"
        return
    assert mk["temporal"] is True and kw["num_frames"] == t["frames"] and kw.get("sampling", "uniform") == "uniform"
    assert train_tf[0] == "depth_to_jet" and transform_names(cfg["dataset"]["transforms"]["eval"])[0] == "depth_to_jet"
    assert (d["hidden"], d["residual"]) == (t["d_actions"], [])
    key, value = t["protocol"][dataset]
    assert kw[key] == value
    # Table 4.3: ADMD feeds D [F ‖ y_t]; the 0/1 baseline row feeds F(x) alone
    assert d["frame_conditioning"] is (method == "admd")
    if dataset == "ntu60":
        assert kw["val_fraction"] is None and cfg["dataset"]["val_split"] == "val"  # the ~5 % validation rule
    if dataset == "nwucla":  # 4.3.1: fine-tuned from the NTU recipe's streams, whose run folder is fixed
        ntu = load_config(config_dir() / "papers/thesis/ntu60/admd.yaml")
        want = Path(ntu["output"]["root"]) / ntu["output"]["name"] / "stages" / "streams" / "model.pt"
        assert Path(cfg["stages"]["streams"]["init_from"]) == want


# ------------------------------------------------------------------------------------------- resnet50_framewise
@pytest.fixture
def imagenet_file(tmp_path, monkeypatch):
    """A torchvision-format ResNet-50 state dict (random values) planted as the ImageNet file of a temporary hub
    cache; returns its tensors."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.manual_seed(5)
    net = torchvision.models.resnet50()
    with torch.no_grad():  # BN statistics that are not the identity, so a missed buffer shows
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
    sd = net.state_dict()
    torch.save(sd, folder / "resnet50-0676ba61.pth")
    return sd


def _framewise(**kw) -> nn.Module:
    args = {"modalities": ("rgb", "depth"), "num_classes": 4, "in_channels": {"depth": 3}, "num_frames": 3}
    return build_model("resnet50_framewise", **{**args, **kw})


def test_resnet50_framewise_loads_the_imagenet_file_into_every_stream(imagenet_file):
    model = _framewise(pretrained="imagenet", seed=0)
    fresh = _framewise(seed=0)
    own, new = model.state_dict(), fresh.state_dict()
    for s in ("rgb", "depth"):
        for k, v in imagenet_file.items():
            if k.startswith("fc."):
                continue
            mk = f"streams.{s}.stem.{k}" if k.startswith(("conv1.", "bn1.")) else f"streams.{s}.{k}"
            assert torch.equal(own[mk], v), mk
        # the temporal convolutions, the bottleneck and the heads keep their fresh initialisation
        for k in own:
            if ".temporal." in k or k.startswith((f"streams.{s}.bottleneck.", f"heads.{s}.")):
                assert torch.equal(own[k], new[k]), k
    report = model.pretrained_report
    assert any(".bottleneck." in k for k in report.fresh) and any(".temporal." in k for k in report.fresh)
    assert report.skipped == ["fc.bias", "fc.weight"]
    # strict about every backbone key: a file without one of them is refused, naming it
    bad = {k: v for k, v in imagenet_file.items() if k != "layer3.2.bn2.running_var"}
    path = Path(os.environ["TORCH_HOME"]) / "bad.pth"
    torch.save(bad, path)
    with pytest.raises(ValueError, match="layer3.2.bn2.running_var"):
        _framewise(pretrained=str(path))


def _tv_trunk(sd) -> nn.Module:
    tv = torchvision.models.resnet50()
    tv.load_state_dict(sd)
    tv.fc = nn.Identity()
    tv.avgpool = nn.Identity()
    return tv.eval()


def _tv_layer4(tv: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
    return tv.layer4(tv.layer3(tv.layer2(tv.layer1(x))))


@torch.no_grad()
def test_resnet50_framewise_per_frame_features_are_torchvisions(imagenet_file):
    """Identity temporal convolutions: the per-frame bottleneck equals the bottleneck applied to torchvision's
    ResNet-50 layer4 map of that frame (rows b*T + t); logits = mean over frames and streams of the per-frame head
    outputs. A non-identity temporal convolution breaks the equality (the comparison can fail)."""
    model = _framewise(pretrained="imagenet", seed=1).eval()
    tv = _tv_trunk(imagenet_file)
    torch.manual_seed(0)
    x = {"rgb": torch.randn(2, 3, 3, 64, 64), "depth": torch.randn(2, 3, 3, 64, 64)}
    paths = [model.feature_paths[f"bottleneck.{s}"] for s in ("rgb", "depth")]
    with FeatureExtractor(model, paths) as feats:
        logits = model(x)
    per_frame_logits = []
    for s, path in zip(("rgb", "depth"), paths, strict=True):
        frames = x[s].reshape(6, 3, 64, 64)  # sample-major: row b*T + t
        want = model.streams[s].bottleneck(_tv_layer4(tv, frames))
        assert feats[path].shape == (6, 128, 1, 1)
        torch.testing.assert_close(feats[path], want, rtol=1e-4, atol=1e-5)
        per_frame_logits.append(model.heads[s](want.flatten(1)).reshape(2, 3, 4).mean(1))
    torch.testing.assert_close(logits, torch.stack(per_frame_logits).mean(0), rtol=1e-4, atol=1e-5)
    # a temporal convolution that mixes frames: the features are no longer torchvision's per-frame ones
    model.streams["rgb"].layer2[1].temporal.conv.weight[:, :, 0] += 0.05
    with FeatureExtractor(model, paths[:1]) as feats:
        model(x)
    want = model.streams["rgb"].bottleneck(_tv_layer4(tv, x["rgb"].reshape(6, 3, 64, 64)))
    assert not torch.allclose(feats[paths[0]], want, rtol=1e-4, atol=1e-5)


@torch.no_grad()
def test_resnet50_framewise_frames_are_independent_without_temporal_convolutions():
    """``temporal: false`` (NYUD's single images): a clip's per-frame outputs equal running the stream on each
    frame alone; the temporal model mixes frames once its temporal convolutions are trained (not identity)."""
    model = _framewise(temporal=False, seed=2).eval()
    assert not any(".temporal." in k for k in model.state_dict())
    torch.manual_seed(1)
    x = {"rgb": torch.randn(2, 3, 3, 32, 32), "depth": torch.randn(2, 3, 3, 32, 32)}
    path = model.feature_paths["bottleneck.rgb"]
    with FeatureExtractor(model, [path]) as feats:
        model(x)
    alone = torch.cat([model.streams["rgb"](x["rgb"][b, t : t + 1]) for b in range(2) for t in range(3)])
    torch.testing.assert_close(feats[path], alone, rtol=1e-4, atol=1e-4)  # float sums of other batch sizes
    # single images (B, C, H, W) are one-frame clips
    img = {"rgb": x["rgb"][:, 0], "depth": x["depth"][:, 0]}
    one = {"rgb": x["rgb"][:, :1], "depth": x["depth"][:, :1]}
    torch.testing.assert_close(model(img), model(one))


def test_resnet50_framewise_bottleneck_kinds_and_errors():
    conv7 = _framewise(modalities=("rgb",), in_channels=None, temporal=False, bottleneck_kind="conv7", seed=0)
    head = conv7.streams["rgb"].bottleneck
    assert head.conv.kernel_size == (7, 7) and head.conv.padding == (0, 0) and head.conv.out_channels == 128
    with pytest.raises(ValueError, match="7x7 map"):
        conv7({"rgb": torch.randn(1, 3, 64, 64)})
    fc = _framewise(modalities=("rgb",), in_channels=None, temporal=False, bottleneck_kind="fc", seed=0).eval()
    with torch.no_grad():
        y = torch.randn(2, 2048, 2, 2)
        want = fc.streams["rgb"].bottleneck.fc(y.mean((2, 3)))
        torch.testing.assert_close(fc.streams["rgb"].bottleneck(y).flatten(1), want)
    for bad, match in (
        ({"bottleneck_kind": "max"}, "bottleneck_kind"),
        ({"temporal": "after_stage"}, "temporal"),
        ({"bottleneck": 0}, "bottleneck"),
        ({"num_frames": 0}, "num_frames"),
    ):
        with pytest.raises(ValueError, match=match):
            _framewise(**bad)


def test_resnet50_framewise_bottleneck_is_msra_initialised():
    """4.3.2: the bottleneck "randomly initialized with the MSRA initialization": weights ~ N(0, 2 / fan_in), fan_in =
    input channels x kernel area (2048 for pool + 1x1 conv and fc, 2048 x 49 for the 7x7 conv), zero biases. PyTorch's
    default (kaiming_uniform with a = sqrt(5)) has std 1 / sqrt(3 fan_in), 41 % of that."""
    for kind, fan_in in (("pool_conv", 2048), ("fc", 2048), ("conv7", 2048 * 49)):
        net = _framewise(modalities=("rgb",), in_channels=None, temporal=False, bottleneck_kind=kind, seed=3)
        head = net.streams["rgb"].bottleneck
        layer = head.fc if kind == "fc" else head.conv
        w = layer.weight.detach().double()
        assert w.mean().abs() < 0.05 * (2 / fan_in) ** 0.5, kind
        assert w.std().item() == pytest.approx((2 / fan_in) ** 0.5, rel=0.02), kind
        # normal, not uniform: the excess kurtosis of a normal is 0 (a uniform's is -1.2)
        kurt = (((w - w.mean()) / w.std()) ** 4).mean().item() - 3
        assert abs(kurt) < 0.1, kind
        assert torch.count_nonzero(layer.bias) == 0, kind


# ------------------------------------------------------------------------------------------- discriminator D2
def test_frame_discriminator_residual_layers_add_their_input():
    """Fig. 4.3's object discriminator: hidden layers 1 and 2 compute act(fc(x) + x); computed by hand here."""
    torch.manual_seed(0)
    d = FrameDiscriminator(8, 3, 0, (16, 16, 16, 24), residual=(1, 2))
    plain = FrameDiscriminator(8, 3, 0, (16, 16, 16, 24))
    plain.net.load_state_dict(d.net.state_dict())  # the same layers: residual does not change their keys
    f = torch.randn(5, 8)
    act = nn.LeakyReLU(0.2)
    lin = [m for m in d.net if isinstance(m, nn.Linear)]
    h0 = act(lin[0](f))
    h1 = act(lin[1](h0) + h0)
    h2 = act(lin[2](h1) + h1)
    want = lin[4](act(lin[3](h2)))
    torch.testing.assert_close(d(f), want)
    assert not torch.allclose(plain(f), want)
    with pytest.raises(ValueError, match="residual"):
        FrameDiscriminator(8, 3, 0, (16, 24), residual=(1,))  # 16 -> 24 cannot add its input
    with pytest.raises(ValueError, match="residual"):
        FrameDiscriminator(8, 3, 0, (16, 16), residual=(0,))  # the first takes the 8-d input
    with pytest.raises(ValueError, match="residual"):
        FrameDiscriminator(8, 3, 0, (16, 16), residual=("1",))


# ----------------------------------------------------------------------------------------------------- init_from
def _small(num_classes: int, seed: int, width: int = 4) -> nn.Module:
    return build_model(
        "small_framewise",
        modalities=("rgb", "depth"),
        num_classes=num_classes,
        num_frames=2,
        width=width,
        shared_width=4,
        bottleneck=6,
        temporal="mean",
        seed=seed,
    )


def test_init_from_copies_matching_tensors_and_keeps_class_count_heads_fresh(tmp_path):
    src = _small(5, seed=1)
    save_model(src, tmp_path / "model.pt")
    dst, fresh = _small(3, seed=2), _small(3, seed=2)
    out = init_from_model_file(dst, tmp_path / "model.pt", what="stages.streams.init_from")
    heads = {"heads.rgb.weight", "heads.rgb.bias", "heads.depth.weight", "heads.depth.bias"}
    assert set(out["fresh"]) == heads and out["copied"] == len(dst.state_dict()) - 4
    for k, v in dst.state_dict().items():
        want = fresh.state_dict()[k] if k in heads else src.state_dict()[k]
        assert torch.equal(v, want), k
    import hashlib

    assert out["sha256"] == hashlib.sha256((tmp_path / "model.pt").read_bytes()).hexdigest()
    # the same class count: everything is copied, heads included
    same = _small(5, seed=3)
    assert init_from_model_file(same, tmp_path / "model.pt")["fresh"] == []
    assert all(torch.equal(v, src.state_dict()[k]) for k, v in same.state_dict().items())


def test_init_from_refuses_bad_files_and_keys(tmp_path):
    src = _small(5, seed=1)
    save_model(src, tmp_path / "model.pt")
    with pytest.raises(FileNotFoundError, match="stages.streams.init_from"):
        init_from_model_file(_small(3, 0), tmp_path / "nope.pt", what="stages.streams.init_from")
    wide = _small(3, 0, width=8)  # another stem width: shapes differ beyond the class count
    before = copy.deepcopy(wide.state_dict())
    with pytest.raises(ValueError, match=r"model\.pt.*streams\.rgb\.stem"):
        init_from_model_file(wide, tmp_path / "model.pt")
    assert all(torch.equal(v, before[k]) for k, v in wide.state_dict().items())  # nothing was loaded
    one = build_model(
        "small_framewise", modalities=("rgb",), num_classes=5, num_frames=2, width=4, shared_width=4, bottleneck=6
    )
    with pytest.raises(ValueError, match="keys the file lacks|keys the network does not have"):
        init_from_model_file(one, tmp_path / "model.pt")
    torch.save({"a": torch.zeros(1)}, tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="not an mmh model.pt"):
        init_from_model_file(_small(3, 0), tmp_path / "plain.pt")
    # mmh never writes the legacy (pre-zip) torch.save format: such a file is refused, never unpickled
    payload = torch.load(tmp_path / "model.pt", weights_only=True)
    torch.save(payload, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    with pytest.raises(ValueError, match=r"stages\.streams\.init_from.*not a torch\.save archive"):
        init_from_model_file(_small(3, 0), tmp_path / "legacy.pt", what="stages.streams.init_from")
    other = build_model("small_late_fusion", modalities=("rgb", "depth"), num_classes=3)
    with pytest.raises(ValueError, match="small_framewise"):
        init_from_model_file(other, tmp_path / "model.pt")


def _admd_cfg(tmp_path, *over: str) -> dict:
    return load_config(
        config_dir() / "thesis/admd.yaml",
        [
            "dataset.split_kwargs={train: {size: 32}, test: {size: 24}}",
            "train.batch_size=16",
            "train.progress=false",
            "threads=1",
            "train.steps=2",
            "model.kwargs.width=4",
            "model.kwargs.shared_width=4",
            "model.kwargs.bottleneck=6",
            f"output.cache={tmp_path / 'cache'}",
            *over,
        ],
    )


def test_init_from_in_a_run_trains_from_the_file_and_keys_the_stage_by_its_content(tmp_path):
    from mmh.methods.registry import method_stages
    from mmh.runner import run_experiment, stage_key, stage_model_path
    from mmh.train.checkpoint import load_model

    base = run_experiment(_admd_cfg(tmp_path), run_dir=tmp_path / "a", log=lambda s: None)
    src_path = stage_model_path(tmp_path / "a", base, "streams")
    init = tmp_path / "init.pt"
    init.write_bytes(src_path.read_bytes())
    cfg = _admd_cfg(tmp_path, f"stages.streams.init_from={init}", "seed=1")
    logs: list[str] = []
    res = run_experiment(cfg, run_dir=tmp_path / "b", log=logs.append)
    rec = res["stages"]["streams"]
    assert rec["source"]["kind"] == "trained" and rec["init_from"]["path"] == str(init)
    assert rec["init_from"]["fresh"] == [] and any("init_from" in line for line in logs)
    import hashlib

    assert rec["init_from"]["sha256"] == hashlib.sha256(init.read_bytes()).hexdigest()
    # started from the file, then trained: every weight matrix lies nearer the file's than the fresh seed-1 network
    # the stage would start from without the copy (that network, rebuilt here), and is not the file's any more
    trained = load_model(stage_model_path(tmp_path / "b", res, "streams")).state_dict()
    start_net = load_model(init)
    start = start_net.state_dict()
    fresh = build_model(**{**start_net.config, "seed": 1}).state_dict()
    mats = [k for k, v in start.items() if v.dim() >= 2]
    assert mats and all(not torch.equal(start[k], fresh[k]) for k in mats)
    for k in mats:
        assert (trained[k] - start[k]).norm() < 0.2 * (trained[k] - fresh[k]).norm(), k
    assert any(not torch.equal(trained[k], start[k]) for k in mats)
    assert json.loads((tmp_path / "b" / "results.json").read_text())["stages"]["streams"]["init_from"]["copied"] > 0
    # the stage key follows the file's content: same bytes, same key; other bytes, another key; none: another key
    stage = next(s for s in method_stages(cfg) if s.name == "streams")
    k1 = stage_key(stage, cfg, {})
    assert stage_key(stage, cfg, {}) == k1
    other = _small(3, 0)
    save_model(other, tmp_path / "other.pt")
    init.write_bytes((tmp_path / "other.pt").read_bytes())
    k2 = stage_key(stage, cfg, {})
    assert k2 != k1
    unset = load_config(config_dir() / "thesis/admd.yaml", ["seed=1"])
    assert stage_key(stage, {**cfg, "stages": unset["stages"]}, {}) not in (k1, k2)
    # a run stopped after its streams stage resumes after the file is gone: the stage is not trained again, so the
    # file is not needed (the key takes the missing path, as for a missing model.pretrained file)
    init.write_bytes(src_path.read_bytes())
    cfg2 = _admd_cfg(tmp_path, f"stages.streams.init_from={init}", "seed=2")
    part = run_experiment(cfg2, run_dir=tmp_path / "c", stop_after_steps=3, log=lambda s: None)
    assert part["status"] == "stopped" and part["stages"]["streams"]["source"]["kind"] == "trained"
    init.unlink()
    k3 = stage_key(stage, cfg, {})
    assert k3 not in (k1, k2) and k3 == stage_key(stage, cfg, {})
    done = run_experiment(cfg2, run_dir=tmp_path / "c", resume=True, log=lambda s: None)
    assert done["status"] == "done" and done["stages"]["streams"]["source"]["kind"] == "run"
    # a stage that has to train needs the file: FileNotFoundError naming the key
    with pytest.raises(FileNotFoundError, match=r"stages\.streams\.init_from"):
        run_experiment(cfg, run_dir=tmp_path / "d", log=lambda s: None)


def test_init_from_applies_to_the_stages_of_its_section_that_train():
    """``rad_dad``'s ensemble shares the section ``student`` with the RAD and DAD students and is not trained:
    ``stages.student.init_from`` starts the students and leaves the ensemble alone. A section none of whose stages
    trains (ADMD's assembled ``fusion``) is a ValueError naming the key; so is init_from beside a checkpoint."""
    from mmh.methods.registry import method_stages
    from mmh.runner import stage_init_from, stage_key

    cfg = load_config(config_dir() / "synthetic_shapes/rad_dad.yaml", ["stages.student.init_from=some/model.pt"])
    stages = method_stages(cfg)
    student = [s for s in stages if s.section == "student"]
    assert any(s.trains for s in student) and any(not s.trains for s in student)
    want = Path.cwd() / "some" / "model.pt"
    for s in student:
        assert stage_init_from(cfg, s, check=False) == (want if s.trains else None), s.name
    keys = {s.name: "0" * 12 for s in stages}
    assert all(stage_key(s, cfg, keys) for s in stages)  # no stage's key raises; the file is missing: not needed yet
    trainer = next(s for s in student if s.trains)
    with pytest.raises(FileNotFoundError, match=r"stages\.student\.init_from"):
        stage_init_from(cfg, trainer)
    admd = load_config(config_dir() / "thesis/admd.yaml", ["stages.student.init_from=some/model.pt"])
    fusion = next(s for s in method_stages(admd) if s.name == "fusion")
    assert fusion.section == "student" and not fusion.trains
    with pytest.raises(ValueError, match=r"stages\.student\.init_from.*no stage"):
        stage_init_from(admd, fusion, check=False)
    over = ["stages.student.init_from=some/model.pt", "stages.student.checkpoint=x.pt"]
    both = load_config(config_dir() / "synthetic_shapes/rad_dad.yaml", over)
    with pytest.raises(ValueError, match=r"stages\.student\.init_from.*checkpoint"):
        stage_init_from(both, trainer, check=False)


def test_a_second_run_into_a_fixed_output_name_is_refused_naming_output_name(tmp_path):
    """``output.name`` (``ntu60/admd``'s fixed run folder): a second run into it is refused, the error naming the
    key and how to keep both runs."""
    from mmh.runner import default_run_dir, run_experiment

    cfg = load_config(
        config_dir() / "papers/thesis/ntu60/admd.yaml", [f"output.root={tmp_path}", "dataset.kwargs.root=/nowhere"]
    )
    run_dir = default_run_dir(cfg)
    assert run_dir == tmp_path / "thesis-ch4-ntu60-admd"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("seed: 0\n")
    with pytest.raises(ValueError, match=r"already holds a run.*--overwrite.*output\.name 'thesis-ch4-ntu60-admd'.*"
                       r"--run-dir"):  # fmt: skip
        run_experiment(cfg, log=lambda s: None)
