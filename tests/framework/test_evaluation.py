"""Metrics: accuracy, ISO/IEC 30107-3 APCER/BPCER/ACER on hand-made cases, ensemble/oracle, input errors."""

from __future__ import annotations

import pytest
import torch

from mmh.evaluation import accuracy, compute_metrics, ensemble_metrics, pad_error_rates


def _logits(pred: list[int], k: int = 2) -> torch.Tensor:
    out = torch.zeros(len(pred), k)
    out[torch.arange(len(pred)), torch.tensor(pred)] = 1.0
    return out


def test_accuracy_hand_case():
    assert accuracy(_logits([0, 1, 2, 2], 3), torch.tensor([0, 1, 1, 2])) == pytest.approx(0.75)


def test_acer_hand_case():
    # 4 attacks (label 0): one accepted as bona fide -> APCER 1/4.
    # 5 bona fide (label 1): two rejected as attacks -> BPCER 2/5.  ACER = (0.25 + 0.4) / 2.
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 1])
    pred = [0, 0, 0, 1, 1, 1, 1, 0, 0]
    m = compute_metrics(_logits(pred), labels, ["accuracy", "acer"])
    assert m["apcer"] == pytest.approx(0.25)
    assert m["bpcer"] == pytest.approx(0.4)
    assert m["acer"] == pytest.approx(0.325)
    assert m["accuracy"] == pytest.approx(6 / 9)


def test_acer_is_not_swapped():
    # every sample predicted bona fide: all attacks accepted (APCER 1), no bona fide rejected (BPCER 0)
    r = pad_error_rates(torch.ones(4, dtype=torch.bool), torch.tensor([False, False, True, True]))
    assert (r["apcer"], r["bpcer"]) == (1.0, 0.0)


def test_acer_errors():
    with pytest.raises(ValueError, match="no attack"):
        pad_error_rates(torch.ones(3, dtype=torch.bool), torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="no bona fide"):
        pad_error_rates(torch.ones(3, dtype=torch.bool), torch.zeros(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="binary"):
        compute_metrics(_logits([0, 1, 2], 3), torch.tensor([0, 1, 2]), ["acer"])


@pytest.mark.parametrize(
    "logits, labels, err, match",
    [
        (torch.zeros(0, 2), torch.zeros(0, dtype=torch.long), ValueError, "empty"),
        (torch.zeros(3), torch.zeros(3, dtype=torch.long), ValueError, r"\(N, K\)"),
        (torch.zeros(3, 2), torch.zeros(2, dtype=torch.long), ValueError, "labels"),
        (torch.zeros(3, 2), torch.zeros(3), TypeError, "integer"),
        (torch.full((3, 2), float("nan")), torch.zeros(3, dtype=torch.long), ValueError, "NaN"),
        (torch.zeros(3, 2), torch.tensor([0, 1, 5]), ValueError, "labels must lie"),
    ],
)
def test_metric_input_errors(logits, labels, err, match):
    with pytest.raises(err, match=match):
        accuracy(logits, labels)


def test_unknown_metric():
    with pytest.raises(ValueError, match="f1"):
        compute_metrics(_logits([0]), torch.tensor([0]), ["f1"])


def test_ensemble_and_oracle():
    labels = torch.tensor([0, 1, 1, 0])
    a = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])  # correct: 1, 1, 0, 1
    b = torch.tensor([[0.0, 1.0], [0.0, 1.0], [0.0, 3.0], [0.0, 2.0]])  # correct: 0, 1, 1, 0
    m = ensemble_metrics({"a": a, "b": b}, labels)
    assert m["accuracy/a"] == 0.75 and m["accuracy/b"] == 0.5
    assert m["accuracy/oracle"] == 1.0
    # mean logits: [1, .5] ok, [0, 1] ok, [.5, 1.5] ok, [.5, 1] wrong -> 0.75
    assert m["accuracy/ensemble"] == 0.75


@pytest.mark.parametrize(
    "module",
    [
        "mmh.evaluation",
        "mmh.evaluation.metrics",
        "mmh.evaluation.prediction",
        "mmh.evaluation.thesis",
        "mmh.evaluation.report",
        "mmh.evaluation.plots",
    ],
)
def test_evaluation_imports_no_training_module(module):
    # evaluation sits below the trainer, the runner and the methods: importing it (in a fresh interpreter) loads none
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    code = (
        f"import sys; sys.path[:0] = [{str(root / 'python')!r}, {str(root)!r}]; import {module}; "
        "print(sorted(m for m in sys.modules if m.split('.')[:2] in (['mmh', 'train'], ['mmh', 'runner'], "
        "['mmh', 'methods'])))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"import {module} loaded {out.strip()}"


def _cached(n: int, k: int = 3):
    from mmh.data import CachedDataset

    g = torch.Generator().manual_seed(0)
    return CachedDataset(
        {"x": torch.randn(n, 4, generator=g), "label": torch.arange(n) % k},
        modalities=("x",),
        num_classes=k,
        class_names=[str(i) for i in range(k)],
    )


def test_eval_batches_are_sequential_and_complete():
    from mmh.evaluation import eval_batches

    ds = _cached(11)
    mine = list(eval_batches(ds, 4))
    assert [b["label"].tolist() for b in mine] == [[0, 1, 2, 0], [1, 2, 0, 1], [2, 0, 1]]
    assert torch.equal(torch.cat([b["x"] for b in mine]), ds.tensors["x"])
    # a dataset read item by item is stacked by the default collate, to the same batches
    items = [ds[i] for i in range(len(ds))]
    assert torch.equal(next(iter(eval_batches(items, 4)))["x"], ds.tensors["x"][:4])
    with pytest.raises(ValueError, match="batch_size"):
        eval_batches(ds, 0)


class _Member(torch.nn.Module):
    """Logits = x[:, :2] * scale: predictions chosen by the data."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, batch):
        return batch["x"][:, :2] * self.scale


def test_evaluate_model_of_a_net_and_of_an_ensemble():
    from mmh.evaluation import evaluate_model, predict
    from mmh.models import LogitEnsemble

    ds = _cached(10, k=2)
    net = _Member(1.0).train()
    m = evaluate_model(net, ds, ["accuracy"], 3)
    logits, labels = predict(net, [ds[list(range(10))]])  # one batch of everything
    assert m == {"accuracy": accuracy(logits, labels)} and net.training  # train mode restored
    ens = LogitEnsemble({"a": _Member(1.0), "b": _Member(-3.0)})
    m = evaluate_model(ens, ds, ["accuracy"], 4)
    # the mean of the members' logits is -x: its accuracy is the complement of member a's; the oracle counts a
    # sample when either member is right, and every sample is (their predictions are opposite)
    acc_a = accuracy(ds.tensors["x"][:, :2], ds.tensors["label"])
    assert m["accuracy/a"] == pytest.approx(acc_a) and m["accuracy/b"] == pytest.approx(1 - acc_a)
    assert m["accuracy"] == m["accuracy/ensemble"] == pytest.approx(1 - acc_a) and m["accuracy/oracle"] == 1.0
