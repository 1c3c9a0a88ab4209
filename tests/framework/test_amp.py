"""Mixed precision in the trainer (``train.amp``) and its loop without a host synchronisation per step.

* ``train.amp`` values: what they mean on the CPU (and on CUDA, where there is one), errors naming the key;
* every registered method trains a few steps under CPU bfloat16 autocast: the convolutions/linears and the feature
  maps handed to the mmh_ext operators really are bfloat16, the first step's losses match float32 from the same
  initialisation (within bfloat16 tolerance), the losses stay finite, the parameters move and stay float32;
* resume stays bit-exact under bf16;
* the loss sums are accumulated on the device and read only at ``train.log_every`` (no ``item``/``float`` per step),
  with the same values as summing Python floats; a non-finite loss still stops the run, naming its step.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import json
import logging
import math
from pathlib import Path

import pytest
import torch
from _tiny import TinyNet, TinySet
from torch import nn

from mmh import runner
from mmh.config import DEFAULTS, find_config, load_config, merge
from mmh.methods import Supervised, list_methods
from mmh.train import Trainer, load_checkpoint
from mmh.train.timing import COST_COLUMNS
from mmh.utils import seed_everything

mmh_ext = pytest.importorskip("mmh_ext")


def _tcfg(**kw):
    return merge(
        DEFAULTS["train"],
        {
            "batch_size": 8,
            "steps": 12,
            "lr": 0.05,
            "schedule": "cosine",
            "warmup_steps": 2,
            "progress": False,
            "optimizer": "sgd",
            **kw,
        },
    )


def _stage(seed: int) -> Supervised:
    torch.manual_seed(seed)
    return Supervised(TinyNet())


# ------------------------------------------------------------------------------------------------ train.amp values
@pytest.mark.parametrize(
    "value, want",
    [("auto", "auto"), (False, "false"), ("false", "false"), (True, "true"), ("FP16", "fp16"), ("bf16", "bf16")],
)
def test_amp_setting_values(value, want):
    from mmh.config import amp_setting

    assert amp_setting(value) == want


def test_amp_overrides_and_bad_values(tmp_path: Path):
    for text, want in (("false", False), ("true", True), ("bf16", "bf16"), ("fp16", "fp16")):
        assert load_config(None, [f"train.amp={text}"])["train"]["amp"] == want  # a bool or a string is accepted
    cfg = load_config(None, ["train.amp=bf16", "stages.teacher.amp=false"])
    from mmh.config import stage_train_config

    assert stage_train_config(cfg, "teacher")["amp"] is False and stage_train_config(cfg, "student")["amp"] == "bf16"
    for bad in ("half", "1", "[bf16]"):
        with pytest.raises(ValueError, match="train.amp"):
            load_config(None, [f"train.amp={bad}"])
    with pytest.raises(ValueError, match="train.amp"):
        Trainer(_stage(0), TinySet(40), _tcfg(amp="float16"), out_dir=tmp_path)
    with pytest.raises(ValueError, match="train.log_every"):
        load_config(None, ["train.log_every=-1"])


def test_amp_on_the_cpu(tmp_path: Path, caplog):
    ds = TinySet(40)
    for value in ("auto", False, "false"):
        t = Trainer(_stage(0), ds, _tcfg(amp=value), out_dir=tmp_path)
        assert not t.amp and t.amp_dtype is None and not t.scaler.is_enabled()
    t = Trainer(_stage(0), ds, _tcfg(amp="bf16"), out_dir=tmp_path)
    assert t.amp and t.amp_dtype is torch.bfloat16 and not t.scaler.is_enabled()  # bf16: no scaler
    with caplog.at_level(logging.WARNING, logger="mmh.train.trainer"):
        t = Trainer(_stage(0), ds, _tcfg(amp=True), out_dir=tmp_path)
    assert not t.amp and "train.amp=true" in caplog.text and "off" in caplog.text
    with pytest.raises(ValueError, match="train.amp=fp16 needs a CUDA device"):
        Trainer(_stage(0), ds, _tcfg(amp="fp16"), out_dir=tmp_path)


@pytest.mark.parametrize("value", ["auto", True, "fp16"])
def test_amp_means_float16_on_cuda(tmp_path: Path, value):
    """The dtype choice for a CUDA device (the scaler follows float16); the run itself is tested below on a GPU."""
    t = Trainer(_stage(0), TinySet(40), _tcfg(amp="false"), out_dir=tmp_path)
    t.device = torch.device("cuda")  # only the mapping is asked: nothing runs on the device
    from mmh.config import amp_setting

    assert t._amp_dtype(amp_setting(value)) is torch.float16
    assert t._amp_dtype("false") is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("value, dtype, scaler", [("auto", torch.float16, True), ("bf16", torch.bfloat16, False)])
def test_amp_trains_on_cuda(tmp_path: Path, value, dtype, scaler):
    seen = []
    stage = _stage(0)
    stage.model.body.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    t = Trainer(stage, TinySet(40), _tcfg(amp=value, steps=6), out_dir=tmp_path, device="cuda")
    assert t.scaler.is_enabled() == scaler
    res = t.fit()
    assert set(seen) == {dtype} and math.isfinite(res.history[-1]["loss"])
    assert all(p.dtype == torch.float32 for p in stage.parameters())


def test_bf16_autocast_is_active_in_training_not_in_validation(tmp_path: Path):
    """The training forward runs under bf16 autocast; validation runs in float32 (documented choice)."""
    train_dtypes, val_dtypes = [], []
    stage = _stage(0)

    def hook(module, inputs, output):
        (train_dtypes if module.training else val_dtypes).append(output.dtype)

    stage.model.body[0].register_forward_hook(hook)

    def val_fn(net):
        with torch.no_grad():
            net.eval()
            out = net({"x": TinySet(16, seed=1).x})
        return {"accuracy": float(out.float().mean())}

    seed_everything(0)
    Trainer(stage, TinySet(40), _tcfg(amp="bf16", steps=10), out_dir=tmp_path, val_fn=val_fn).fit()
    assert train_dtypes and set(train_dtypes) == {torch.bfloat16}
    assert val_dtypes and set(val_dtypes) == {torch.float32}
    assert all(p.dtype == torch.float32 for p in stage.parameters())


@pytest.mark.parametrize("stop_at", [3, 7])  # mid-epoch and in epoch 2 (5 batches per epoch)
def test_resume_under_bf16_is_bit_exact(tmp_path: Path, stop_at: int):
    ds = TinySet(40)
    tcfg = _tcfg(amp="bf16", checkpoint_every=2, grad_clip=1.0, log_every=3)
    seed_everything(0)
    ref = _stage(0)
    Trainer(ref, ds, tcfg, out_dir=tmp_path / "ref", seed=3).fit()
    seed_everything(0)
    Trainer(_stage(0), ds, tcfg, out_dir=tmp_path / "run", seed=3).fit(stop_after_steps=stop_at)
    torch.rand(10)
    resumed = _stage(99)
    assert Trainer(resumed, ds, tcfg, out_dir=tmp_path / "run", seed=3).fit(resume=True).finished
    for k, v in ref.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    rows = [
        [{k: v for k, v in r.items() if k not in COST_COLUMNS} for r in csv.DictReader(open(p / "metrics.csv"))]
        for p in (tmp_path / "ref", tmp_path / "run")
    ]
    assert rows[0] == rows[1]
    # a float32 run from the same start differs: the autocast mattered
    seed_everything(0)
    f32 = _stage(0)
    Trainer(f32, ds, _tcfg(checkpoint_every=2, grad_clip=1.0), out_dir=tmp_path / "f32", seed=3).fit()
    assert not torch.equal(f32.model.classifier.weight, ref.model.classifier.weight)


# ------------------------------------------------------------------------------------------------ no host sync
_READS = ("item", "tolist", "__float__", "__int__", "__bool__", "__index__")


def test_no_host_read_per_step_and_sums_equal_python_floats(tmp_path: Path, monkeypatch):
    """Between log points a step reads nothing from the device; the epoch means equal Python-float sums."""
    counts = {"step": 0, "log": 0}
    where = ["outside"]
    for name in _READS:
        orig = getattr(torch.Tensor, name)

        def counted(self, *a, _orig=orig, **kw):
            if where[0] in counts:
                counts[where[0]] += 1
            return _orig(self, *a, **kw)

        monkeypatch.setattr(torch.Tensor, name, counted)

    @contextlib.contextmanager
    def inside(label):
        where[0] = label
        try:
            yield
        finally:
            where[0] = "outside"

    class Probe(Trainer):
        def _train_step(self, batch):
            with inside("step"):
                super()._train_step(batch)
            assert all(isinstance(v, torch.Tensor) for v in self._acc.values()) and "loss" in self._acc

        def _log_point(self, bar):
            with inside("log"):
                super()._log_point(bar)

    per_step: list[dict[str, float]] = []
    stage = _stage(0)

    def record(module, inputs, output):  # runs inside the step: its reads are not counted (where is switched off)
        prev, where[0] = where[0], "outside"
        logits, losses = output
        losses = {k: v.detach() for k, v in losses.items()}
        per_step.append(
            {
                "loss": float(sum(losses.values())),
                **{k: float(v) for k, v in losses.items()},
                "correct": float((logits.argmax(1) == inputs[0]["label"]).sum()),
            }
        )
        where[0] = prev

    stage.register_forward_hook(record)
    seed_everything(0)
    t = Probe(stage, TinySet(40), _tcfg(steps=10, log_every=4, grad_clip=1.0), out_dir=tmp_path, seed=1)
    res = t.fit()
    assert counts["step"] == 0, counts
    assert counts["log"] >= 2  # the patch does see the reads of the log points (steps 4 and 8)
    assert len(per_step) == 10 and len(res.history) == 2
    for e, row in enumerate(res.history):
        steps = per_step[5 * e : 5 * e + 5]
        for key in ("loss", "loss_ce"):
            total = 0.0
            for s in steps:
                total += s[key]
            assert row[key] == total / 5  # exactly: float64 sums on the device == Python float sums
        assert row["train_accuracy"] == sum(s["correct"] for s in steps) / 40
    ck = load_checkpoint(tmp_path / "latest.pt")
    assert all(type(v) is float for v in ck["sums"].values())  # plain floats in checkpoints


def test_rad_diagnostics_stay_on_the_device():
    """RAD's region-weight statistics are tensors (summed on the device), equal to mmh_ext's weight_stats."""
    from mmh.methods.rad import RADDistiller

    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Conv2d(2, 6, 3, padding=1)
            self.classifier = nn.Linear(6, 3)
            self.feature_paths = {"penultimate": "body"}
            self.modalities = ("x",)

        def forward(self, batch):
            return self.classifier(self.body(batch["x"]).mean((2, 3)))

    stage = RADDistiller(Net(), Net().eval(), weighting="attention")
    batch = {"x": torch.randn(4, 2, 8, 8), "label": torch.tensor([0, 1, 2, 0])}
    assert stage.diagnostics() == {}
    stage(batch)
    diag = stage.diagnostics()
    want = stage.rad.weight_stats()
    assert all(isinstance(v, torch.Tensor) and v.dtype == torch.float64 for v in diag.values())
    assert float(diag["rad_w_max"]) == want["max"] and float(diag["rad_w_last"]) == want["last"]
    assert float(diag["rad_w_eff"]) == pytest.approx(want["effective_regions"], rel=1e-12)


def test_non_finite_loss_is_reported_with_its_step(tmp_path: Path):
    class NaNAt6(Supervised):
        calls = 0

        def forward(self, batch):
            logits, losses = super().forward(batch)
            NaNAt6.calls += 1
            if NaNAt6.calls == 7:  # step index 6
                losses = {"loss_ce": losses["loss_ce"] * float("nan")}
            return logits, losses

    torch.manual_seed(0)
    t = Trainer(NaNAt6(TinyNet()), TinySet(40), _tcfg(log_every=4), out_dir=tmp_path)
    with pytest.raises(FloatingPointError, match=r"non-finite loss at step 6 \(detected at step 8") as err:
        t.fit()
    assert "loss_ce" in str(err.value) and "nan" in str(err.value)
    ck = load_checkpoint(tmp_path / "latest.pt")  # written at the end of epoch 1 (step 5), never after the NaN
    assert ck["step"] == 5 and all(torch.isfinite(v).all() for v in ck["stage"].values())
    # with checkpoints every step the check runs before each save: nothing after the NaN step is saved either
    NaNAt6.calls = 0
    torch.manual_seed(0)
    t = Trainer(NaNAt6(TinyNet()), TinySet(40), _tcfg(log_every=0, checkpoint_every=1), out_dir=tmp_path / "b")
    with pytest.raises(FloatingPointError, match=r"at step 6 \(detected at step 7"):
        t.fit()
    assert load_checkpoint(tmp_path / "b" / "latest.pt")["step"] == 6


# ------------------------------------------------------------------------------------------------ every method
#: Tiny settings of the existing end-to-end tests (tests/framework/test_cli.py, tests/thesis/conftest.py).
_TINY_MMH = ["dataset.split_kwargs={train: {size: 32}, test: {size: 16}}", "model.kwargs={width: 4, shared_width: 8}"]
_TINY_THESIS = ["dataset.split_kwargs={train: {size: 32}, test: {size: 16}}", "model.kwargs.width=4"]
_COMMON = ["train.batch_size=16", "train.steps=2", "train.progress=false", "threads=1", "train.amp=bf16"]
#: The mmh_ext entry points whose inputs are recorded (the feature maps autocast hands to the operators).
_OPS = {"rad_loss": mmh_ext.rad, "dad_loss": mmh_ext.dad, "cross_stream_inject": mmh_ext.inject}  # name: its module


def _method_config(method: str, cache: str) -> dict:
    """The shipped config of ``method`` (synthetic_motion/<m> or thesis/<m>; else the defaults), made tiny;
    ``cache`` "": no stage cache."""
    for name, tiny in ((f"synthetic_motion/{method}", _TINY_MMH), (f"thesis/{method}", _TINY_THESIS)):
        try:
            path = find_config(name)
        except FileNotFoundError:
            continue
        return load_config(path, [*tiny, *_COMMON, f"output.cache='{cache}'"])
    return load_config(None, [f"method={method}", *_TINY_MMH, *_COMMON, f"output.cache='{cache}'"])


class _Recorder(Trainer):
    """Checks each trained stage: the first step against float32 from the same init and RNG state, the dtypes under
    autocast, the operators used (and the dtypes of the maps handed to them), parameters moved and float32."""

    stages: list[dict] = []
    op_calls: dict[str, list[tuple[torch.dtype, ...]]] = {}

    def fit(self, **kw):
        from mmh.methods.dad import DADDistiller

        mods = list(self.stage.modules())
        rec = {
            "out": self.out_dir.name,
            "dtypes": set(),
            "uses": {
                "rad_loss": any(isinstance(m, mmh_ext.nn.RegionAwareDistillation) for m in mods),
                "dad_loss": isinstance(self.stage, DADDistiller),
                "cross_stream_inject": any(getattr(m, "connected_stages", None) for m in mods),
            },
        }
        _Recorder.stages.append(rec)
        _Recorder.op_calls = rec["calls"] = {op: [] for op in _OPS}
        before = {n: p.detach().clone() for n, p in self.stage.named_parameters() if p.requires_grad}

        def hook(module, inputs, output):
            if not rec.get("in_reference"):  # (the float32 reference copy carries this hook too)
                rec["dtypes"].add(output.dtype)

        # the networks' layers (not those inside mmh_ext's loss modules: RAD's weighting runs in float32 by design)
        in_ops = {id(sub) for m in mods if type(m).__module__.startswith("mmh_ext") for sub in m.modules()}
        hooks = [
            m.register_forward_hook(hook)
            for m in mods
            if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)) and id(m) not in in_ops
        ]
        try:
            res = super().fit(**kw)
        finally:
            for h in hooks:
                h.remove()
        rec["history"] = res.history
        rec["changed"] = sum(not torch.equal(p, before[n]) for n, p in self.stage.named_parameters() if n in before)
        rec["trainable"] = len(before)
        rec["float32"] = all(p.dtype == torch.float32 for p in self.stage.parameters())
        return res

    def _train_step(self, batch):
        rec = _Recorder.stages[-1]
        if "bf16" not in rec:
            ref = copy.deepcopy(self.stage, memo={id(mmh_ext): mmh_ext})  # (a stage may hold the mmh_ext module)
            rec["in_reference"] = True
            with torch.random.fork_rng(devices=[]):  # the same dropout / masks as the bf16 step below
                _, losses = ref(batch)
            rec["in_reference"] = False
            rec["f32"] = {k: float(v.detach()) for k, v in losses.items()}
            out = []
            h = self.stage.register_forward_hook(lambda m, i, o: out.append(o[1]))
            super()._train_step(batch)
            h.remove()
            rec["bf16"] = {k: float(v.detach()) for k, v in out[0].items()}
        else:
            super()._train_step(batch)


@pytest.fixture(scope="module")
def amp_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("amp_cache")  # a teacher trained once serves every student method


@pytest.mark.parametrize("method", list_methods())
def test_every_method_trains_under_cpu_bf16_autocast(method: str, tmp_path: Path, amp_cache: Path, monkeypatch):
    for op, op_module in _OPS.items():  # record the dtypes of the maps handed to the operators' Python entry points
        for mod in (mmh_ext, op_module):

            def wrapped(a, b, *rest, _orig=getattr(mod, op), _op=op, **kw):  # noqa: B008 (binds this loop's op)
                if torch.is_autocast_enabled("cpu"):  # (not the float32 reference pass)
                    first = [x[0] if isinstance(x, (list, tuple)) else x for x in (a, b)]  # dad_loss: lists of maps
                    _Recorder.op_calls[_op].append(tuple(x.dtype for x in first))
                return _orig(a, b, *rest, **kw)

            monkeypatch.setattr(mod, op, wrapped)
    monkeypatch.setattr(runner, "Trainer", _Recorder)
    _Recorder.stages = []
    res = runner.run_experiment(_method_config(method, str(amp_cache)), run_dir=tmp_path / "run", log=lambda s: None)
    if not _Recorder.stages:  # every stage came from the cache (trained by an earlier test): train them here
        res = runner.run_experiment(_method_config(method, ""), run_dir=tmp_path / "run2", log=lambda s: None)
    assert res["status"] == "done"
    assert _Recorder.stages, f"{method}: no stage was trained"
    for rec in _Recorder.stages:
        where = f"{method}/{rec['out']}"
        # autocast was active: every convolution / linear of the training forward ran in bfloat16
        assert rec["dtypes"] == {torch.bfloat16}, (where, rec["dtypes"])
        # ... and so were the feature maps handed to the operators the stage uses
        for op, used in rec["uses"].items():
            assert bool(rec["calls"][op]) == used, (where, op, used)
            assert all(d == torch.bfloat16 for pair in rec["calls"][op] for d in pair), (where, op, rec["calls"][op])
        # the first step's losses match float32 from the same initialisation and RNG state
        assert rec["bf16"].keys() == rec["f32"].keys(), where
        for k, v in rec["bf16"].items():
            assert math.isfinite(v) and abs(v - rec["f32"][k]) <= 0.01 + 0.01 * abs(rec["f32"][k]), (
                where,
                k,
                v,
                rec["f32"][k],
            )
        assert all(math.isfinite(v) for row in rec["history"] for k, v in row.items() if k.startswith("loss")), where
        assert rec["float32"], where
        assert rec["changed"] >= max(1, rec["trainable"] // 2), (where, rec["changed"], rec["trainable"])
    json.dumps(res)  # results stay JSON-able
