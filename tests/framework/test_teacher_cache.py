"""``train.teacher_cache`` (:mod:`mmh.train.teacher_cache`): the frozen teacher's outputs read back instead of
recomputed — the same losses and weights as the uncached run, no teacher call after the first epoch, refused when
the inputs are randomly augmented, keyed by the teacher's weights and the data, memory-mapped past the size limit."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from _tiny import TinyNet, TinySet

from mmh.config import DEFAULTS, merge
from mmh.methods import Supervised
from mmh.methods.base import Distiller
from mmh.methods.kd import KDDistiller
from mmh.train import Trainer
from mmh.train.teacher_cache import TeacherCache, teacher_cache_key
from mmh.utils import seed_everything


class _FeatKD(Distiller):
    """Logit and feature matching: the loss needs the teacher's logits and a hooked map."""

    def __init__(self, student, teacher):
        super().__init__(student, teacher)
        self.s_paths, self.t_paths = ["body"], ["body"]

    def distill_losses(self, s_logits, t_logits, s_feats, t_feats, batch):
        return {
            "loss_logit": ((s_logits - t_logits) ** 2).mean(),
            "loss_feat": ((s_feats["body"] - t_feats["body"]) ** 2).mean(),
        }


def _tcfg(**kw):
    return merge(DEFAULTS["train"], {"batch_size": 8, "steps": 15, "lr": 0.05, "progress": False, **kw})


def _teacher() -> TinyNet:
    torch.manual_seed(7)
    return TinyNet(dropout=0.5)  # dropout: the teacher must be in eval mode for its outputs to be cacheable


def _fit(out: Path, *, make=_FeatKD, config=None, **kw):
    """Train 3 epochs (5 steps each); (stage, per-step losses, teacher calls per epoch, trainer)."""
    seed_everything(0)
    teacher = _teacher()
    torch.manual_seed(1)
    stage = make(TinyNet(), teacher)
    calls: list[int] = []
    teacher.register_forward_hook(lambda *_: calls.append(1))
    losses: list[float] = []
    inner = stage.forward

    def forward(batch):
        logits, terms = inner(batch)
        losses.append(float(sum(terms.values()).detach()))
        return logits, terms

    stage.forward = forward
    tr = Trainer(stage, TinySet(40), _tcfg(**kw), out_dir=out, seed=3, config=config)
    per_epoch = []
    for _ in range(3):
        before = len(calls)
        tr.fit(stop_after_steps=5)
        per_epoch.append(len(calls) - before)
    return stage, losses, per_epoch, tr


def test_cached_run_equals_uncached_and_skips_the_teacher(tmp_path: Path):
    ref, ref_losses, ref_calls, _ = _fit(tmp_path / "ref")
    got, losses, calls, tr = _fit(tmp_path / "cached", teacher_cache=True)
    assert ref_calls == [5, 5, 5]
    assert calls == [5, 0, 0]  # every sample seen in epoch 1: the teacher never runs again
    assert losses[0] == pytest.approx(ref_losses[0], rel=1e-6, abs=1e-7)  # the first step
    assert losses == pytest.approx(ref_losses, rel=1e-5, abs=1e-6)  # and every later one, read from the cache
    for k, v in ref.student.state_dict().items():
        torch.testing.assert_close(got.student.state_dict()[k], v)
    assert tr.teacher_cache.hits == 10 and not tr.teacher_cache.on_disk
    with open(tmp_path / "cached" / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert float(rows[0]["teacher_ms"]) > 0 and float(rows[1]["teacher_ms"]) == 0.0


def test_memory_mapped_past_the_limit_and_reused_by_the_next_run(tmp_path: Path):
    _, ref_losses, _, _ = _fit(tmp_path / "ref")
    _, losses, calls, tr = _fit(tmp_path / "run", teacher_cache=True, teacher_cache_mb=0)
    assert tr.teacher_cache.on_disk and calls == [5, 0, 0]
    folder = tmp_path / "run" / "teacher_cache" / tr.teacher_cache.key
    assert (folder / "meta.json").is_file() and len(list(folder.glob("*.bin"))) == 2
    assert losses == pytest.approx(ref_losses, rel=1e-5, abs=1e-6)
    # a new run in the same folder, same teacher and data: the complete cache is read back, the teacher never runs
    _, again, calls2, tr2 = _fit(tmp_path / "run", teacher_cache=True, teacher_cache_mb=0)
    assert calls2 == [0, 0, 0] and again == pytest.approx(ref_losses, rel=1e-5, abs=1e-6)


def test_key_follows_teacher_weights_and_data():
    t, ds = _teacher(), TinySet(40)
    key = teacher_cache_key(t, ["body"], ds, {"name": "tiny"})
    assert teacher_cache_key(_teacher(), ["body"], TinySet(40), {"name": "tiny"}) == key  # same content, same key
    with torch.no_grad():
        t.classifier.bias[0] += 1e-3
    assert teacher_cache_key(t, ["body"], ds, {"name": "tiny"}) != key
    t2 = _teacher()
    assert teacher_cache_key(t2, ["body"], TinySet(40, seed=1), {"name": "tiny"}) != key
    assert teacher_cache_key(t2, ["body"], ds, {"name": "other"}) != key
    assert teacher_cache_key(t2, ["classifier"], ds, {"name": "tiny"}) != key


@pytest.mark.parametrize(
    ("dataset", "match"),
    [
        ({"transforms": {"train": [{"name": "hflip", "p": 0.5}], "eval": []}}, "randomly augmented"),
        ({"transforms": {"train": [{"name": "speckle_noise", "modality": "x", "sigma2": 0.1}]}}, "speckle_noise"),
        ({"kwargs": {"sampling": "random"}}, "dataset.kwargs.sampling"),
        ({"split_kwargs": {"train": {"clip_sampling": "random"}}}, "split_kwargs.train.clip_sampling"),
    ],
)
def test_refused_when_inputs_are_random(tmp_path: Path, dataset, match):
    stage = KDDistiller(TinyNet(), _teacher())
    with pytest.raises(ValueError, match=match):
        Trainer(stage, TinySet(40), _tcfg(teacher_cache=True), out_dir=tmp_path, config={"dataset": dataset})


def test_refused_without_a_frozen_teacher(tmp_path: Path):
    # a stage without a teacher (the recipe's teacher stage) trains as usual under the same setting
    stage = Supervised(TinyNet())
    assert Trainer(stage, TinySet(40), _tcfg(teacher_cache=True), out_dir=tmp_path).teacher_cache is None
    assert stage.teacher_cache is None
    stage = _FeatKD(TinyNet(), _teacher())
    stage.teacher.body[0].weight.requires_grad_(True)
    with pytest.raises(ValueError, match="frozen teacher"):
        Trainer(stage, TinySet(40), _tcfg(teacher_cache=True), out_dir=tmp_path)


def test_cache_lookup_needs_every_sample():
    cache = TeacherCache(6, "k")
    cache.select([0, 1])
    assert cache.lookup("cpu") is None
    cache.store({"logits": torch.tensor([[1.0], [2.0]])})
    cache.select([1, 0])
    assert cache.lookup("cpu")["logits"].tolist() == [[2.0], [1.0]]
    cache.select([1, 2])
    assert cache.lookup("cpu") is None  # sample 2 was never stored
    with pytest.raises(KeyError, match="differ"):
        cache.store({"other": torch.zeros(2, 1)})


def _convs(net):
    return [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_teacher_forward_inference_mode_channels_last_same_loss():
    """On CUDA the teacher runs under inference_mode with channels_last weights: same loss and student gradients as
    the plain no_grad forward of the same networks, and the backward works (the outputs are normal tensors)."""
    from mmh.methods.rad import RADDistiller
    from mmh.models import build_model

    def make():
        torch.manual_seed(0)
        t = build_model("small_joint", modalities=["rgb", "depth"], num_classes=3, seed=0)
        s = build_model("small_joint", modalities=["rgb"], num_classes=3, seed=1)
        return RADDistiller(s, t).cuda()

    g = torch.Generator().manual_seed(0)
    batch = {"rgb": torch.rand(4, 3, 32, 32, generator=g), "depth": torch.rand(4, 1, 32, 32, generator=g)}
    batch["label"] = torch.tensor([0, 1, 2, 0])
    fast, plain = make(), make()
    _, lf = fast({k: v.cuda() for k, v in batch.items()})
    plain.cpu()
    _, lp = plain(batch)  # the CPU path: torch.no_grad, default layout
    cpu_loss = sum(lp.values())
    loss = sum(lf.values())
    loss.backward()
    assert any(m.weight.is_contiguous(memory_format=torch.channels_last) for m in _convs(fast.teacher))
    torch.testing.assert_close(loss.detach().cpu(), cpu_loss.detach(), rtol=1e-3, atol=1e-4)
    assert all(p.grad is not None for p in fast.student.parameters() if p.requires_grad)


def test_channels_last_keeps_values_for_2d_and_3d_convolutions():
    from mmh.methods.base import channels_last_

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    net3 = torch.nn.Conv3d(2, 3, 3)
    before = [t.clone() for t in (*net.parameters(), *net3.parameters())]
    channels_last_(net), channels_last_(net3)  # a 5-D weight: channels_last_3d (Module.to(channels_last) raises)
    assert net[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert net3.weight.is_contiguous(memory_format=torch.channels_last_3d)
    assert all(torch.equal(a, b) for a, b in zip(before, (*net.parameters(), *net3.parameters())))
