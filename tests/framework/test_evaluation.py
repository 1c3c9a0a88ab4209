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


@pytest.mark.parametrize("logits, labels, err, match", [
    (torch.zeros(0, 2), torch.zeros(0, dtype=torch.long), ValueError, "empty"),
    (torch.zeros(3), torch.zeros(3, dtype=torch.long), ValueError, r"\(N, K\)"),
    (torch.zeros(3, 2), torch.zeros(2, dtype=torch.long), ValueError, "labels"),
    (torch.zeros(3, 2), torch.zeros(3), TypeError, "integer"),
    (torch.full((3, 2), float("nan")), torch.zeros(3, dtype=torch.long), ValueError, "NaN"),
    (torch.zeros(3, 2), torch.tensor([0, 1, 5]), ValueError, "labels must lie"),
])
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
