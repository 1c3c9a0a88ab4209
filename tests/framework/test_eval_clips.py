"""``eval.clips: N`` (thesis ch. 5's ten-clip test): a video's prediction is the mean of its N clips' logits, in the
one prediction loop; the evaluation splits give N clips per video; datasets that cannot are a clear error."""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from mmh.cli import main
from mmh.config import load_config
from mmh.data import build_dataset, eval_batches
from mmh.evaluation import evaluate_model, predict
from mmh.evaluation.metrics import accuracy
from mmh.models import LogitEnsemble
from mmh.runner import load_results, load_split, load_stage_network, run_experiment

TEST_VIDEOS = ["S001C001P003R001A001", "S001C001P003R001A002", "S001C001P006R001A003", "S001C002P007R002A001"]
TRAIN_VIDEOS = ["S001C001P002R001A001", "S001C001P002R001A002", "S001C001P004R001A003", "S001C002P001R001A002"]


def _ntu_tree(root, frames=20, size=8):
    """NTU-layout RGB frames of random noise (every frame different, so the clips differ)."""
    rng = np.random.default_rng(0)
    for n in TEST_VIDEOS + TRAIN_VIDEOS:
        for k in range(frames):
            path = os.path.join(root, "rgb", n, f"{k + 1:05d}.png")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
    return str(root)


class ClipNet(nn.Module):
    """Logits from a clip (B, T, C, H, W) that depend non-linearly on its frames and on frame_index."""

    def __init__(self, k: int = 3) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.w = nn.Parameter(torch.randn(2 * 3 * 2, k, generator=g))  # 2 frames of 3 channels, mean and max
        self.modalities = ("rgb",)

    def forward(self, batch):
        x = batch["rgb"]
        assert x.ndim == 5, "the model sees one clip (B, T, C, H, W) at a time"
        feats = torch.cat([x.mean(dim=(3, 4)).flatten(1), x.amax(dim=(3, 4)).flatten(1)], 1)
        return torch.tanh(feats @ self.w) * 3 + batch["frame_index"].float().mean(1, keepdim=True) / 10


def _clip_dataset(root, clips):
    return build_dataset(
        "ntu60",
        split="test",
        root=root,
        modalities=("rgb",),
        num_frames=2,
        resolution=None,
        sampling="multi_clip",
        num_clips=clips,
    )


def _by_hand(model, ds, clips):
    """Each video's N clips through the model one at a time, averaged."""
    rows = []
    with torch.no_grad():
        for i in range(len(ds)):
            item = ds[i]
            outs = [
                model({"rgb": item["rgb"][j][None], "frame_index": item["frame_index"][j][None]}) for j in range(clips)
            ]
            rows.append(torch.stack(outs).mean(0)[0])
    return torch.stack(rows), torch.stack([ds[i]["label"] for i in range(len(ds))])


def test_ten_clips_equal_the_hand_average(tmp_path):
    ds = _clip_dataset(_ntu_tree(tmp_path), 10)
    item = ds[0]
    assert item["rgb"].shape == (10, 2, 3, 8, 8) and len({tuple(r) for r in item["frame_index"].tolist()}) == 10
    model = ClipNet()
    want, labels = _by_hand(model, ds, 10)
    got, got_labels = predict(model, eval_batches(ds, 3), clips=10)  # batches of 3 videos: 2 batches
    assert torch.equal(got_labels, labels)
    assert torch.allclose(got, want, atol=1e-6)
    first, _ = _by_hand(model, _clip_dataset(str(tmp_path), 1), 1)  # one clip gives something else
    assert not torch.allclose(got, first, atol=1e-3)
    assert evaluate_model(model, ds, ["accuracy"], 3, clips=10) == {"accuracy": accuracy(want, labels)}


def test_ensemble_members_average_their_clips(tmp_path):
    ds = _clip_dataset(_ntu_tree(tmp_path), 4)
    a, b = ClipNet(), ClipNet()
    with torch.no_grad():
        b.w.mul_(-0.5)
    ens = LogitEnsemble({"a": a, "b": b})
    (wa, labels), (wb, _) = _by_hand(a, ds, 4), _by_hand(b, ds, 4)
    out = evaluate_model(ens, ds, ["accuracy"], 2, clips=4)
    assert out["accuracy/a"] == accuracy(wa, labels) and out["accuracy/b"] == accuracy(wb, labels)
    assert out["accuracy"] == accuracy((wa + wb) / 2, labels)
    assert out["accuracy/oracle"] == float(((wa.argmax(1) == labels) | (wb.argmax(1) == labels)).float().mean())


def test_single_clip_batches_are_refused(tmp_path):
    ds = _clip_dataset(_ntu_tree(tmp_path), 1)
    with pytest.raises(ValueError, match=r"eval.clips=3.*\(batch, 3, T\)"):
        predict(ClipNet(), eval_batches(ds, 2), clips=3)
    with pytest.raises(ValueError, match="eval.clips"):
        predict(ClipNet(), eval_batches(ds, 2), clips=0)


def _cfg(root, *over):
    kwargs = json.dumps({"root": root, "modalities": ["rgb"], "num_frames": 4, "resolution": 16})
    return load_config(
        None,
        [
            "method=baseline",
            "dataset.name=ntu60",
            f"dataset.kwargs={kwargs}",
            "dataset.split_kwargs={train: {sampling: segment}}",
            "dataset.val_split=val",
            "model.kwargs={width: 4, shared_width: 8}",
            "train.steps=2",
            "train.batch_size=2",
            "train.progress=false",
            "eval.batch_size=3",
            "output.cache=",
            *over,
        ],
    )


def test_the_runner_evaluates_ten_clips(tmp_path):
    root = _ntu_tree(tmp_path / "data")
    cfg = _cfg(root, "eval.clips=10")
    assert load_split(cfg, "test")[0]["rgb"].shape == (10, 4, 3, 16, 16)  # eval splits: 10 clips per video
    assert load_split(cfg, "val")[0]["rgb"].shape == (10, 4, 3, 16, 16)
    assert load_split(cfg, "train")[0]["rgb"].shape == (4, 3, 16, 16)  # training: one clip, segment sampling
    res = run_experiment(cfg, run_dir=tmp_path / "run", log=lambda _m: None)
    results = load_results(tmp_path / "run")
    model, _ = load_stage_network(tmp_path / "run", results, "student")
    test = load_split(cfg, "test")
    want, labels = _by_hand(model.eval(), test, 10)
    assert res["final"]["accuracy"] == accuracy(want, labels)
    assert main(["eval", str(tmp_path / "run"), "--out", str(tmp_path / "e.json")]) == 0
    assert json.loads((tmp_path / "e.json").read_text())["metrics"]["accuracy"] == accuracy(want, labels)


def test_eval_clips_config_errors(tmp_path):
    with pytest.raises(ValueError, match="eval.clips"):
        load_config(None, ["eval.clips=0"])
    cfg = load_config(None, ["eval.clips=2", "dataset.split_kwargs={test: {size: 4}}"])
    with pytest.raises(ValueError, match="eval.clips=2: dataset 'synthetic_motion' cannot give 2 clips"):
        load_split(cfg, "test")
    images = _cfg(_ntu_tree(tmp_path), "eval.clips=2", "dataset.kwargs.num_frames=null")
    with pytest.raises(ValueError, match="eval.clips=2: dataset 'ntu60' cannot give 2 clips"):
        load_split(images, "test")


def test_mcl_metrics_sigma_and_oracle_over_clips(tmp_path):
    """eval.metrics [accuracy, mcl]: per-stream accuracy, Σ and Φ, as mcl_metrics gives them, over averaged clips."""
    from mmh.evaluation.thesis import mcl_metrics
    from mmh.models import build_model

    root = _ntu_tree(tmp_path)
    for n in TEST_VIDEOS + TRAIN_VIDEOS:  # a second modality: depth
        for k in range(20):
            path = os.path.join(root, "depth", n, f"{k + 1:05d}.png")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            Image.fromarray(np.full((8, 8), 30 * k % 256, np.uint8)).save(path)
    net = build_model(
        "small_late_fusion", modalities=("rgb", "depth"), num_classes=60, num_frames=2, width=4, shared_width=8, seed=0
    ).eval()
    with torch.no_grad():  # predictions among the test labels' classes 0-2 only, so that the accuracies vary
        for head in net.heads.values():
            head.bias[3:] -= 100.0
    kw = dict(split="test", root=root, num_frames=2, resolution=None)
    one = build_dataset("ntu60", **kw)
    assert evaluate_model(net, one, ["mcl"], 3) == mcl_metrics(net, one)
    four = build_dataset("ntu60", sampling="multi_clip", num_clips=4, **kw)
    per = {s: [] for s in net.streams}
    with torch.no_grad():
        for i in range(len(four)):
            item = four[i]
            clips = [net.forward_streams({m: item[m][j][None] for m in ("rgb", "depth")}) for j in range(4)]
            for s in per:
                per[s].append(torch.stack([c[s][0] for c in clips]).mean(0))
    per = {s: torch.stack(v) for s, v in per.items()}
    labels = torch.tensor(four.labels)
    out = evaluate_model(net, four, ["accuracy", "mcl"], 3, clips=4)
    sigma = torch.stack(list(per.values())).mean(0)
    assert out["accuracy"] == out["sum"] == accuracy(sigma, labels)
    right = {s: per[s].argmax(1) == labels for s in per}
    assert out["oracle"] == float((right["rgb"] | right["depth"]).float().mean())
    assert {k: out[f"accuracy/{k}"] for k in per} == {k: accuracy(v, labels) for k, v in per.items()}
    with pytest.raises(ValueError, match="'mcl' needs a multi-stream network"):
        evaluate_model(ClipNet(), four, ["mcl"], 3, clips=4)
