"""Anti-spoofing metrics: the paper's pooled APCER/BPCER/ACER and ISO/IEC 30107-3's per-species APCER, by hand."""

from __future__ import annotations

import pytest
import torch

from mmh.evaluation import pad_error_rates, pad_error_rates_by_species, pad_metrics, species_of

# 3 bona fide (1 rejected), 3 prints (1 accepted), 2 replays (both accepted)
SPECIES = ["live", "live", "live", "print", "print", "print", "replay", "replay"]
TRUTH = torch.tensor([1, 1, 1, 0, 0, 0, 0, 0]).bool()
PRED = torch.tensor([1, 1, 0, 1, 0, 0, 1, 1]).bool()  # accepted as bona fide


def test_pooled_and_iso_by_hand():
    pooled = pad_error_rates(PRED, TRUTH)
    # pooled: 3 of 5 attacks accepted -> 0.6; BPCER 1/3; ACER (0.6 + 1/3) / 2 = 0.466667
    assert pooled == pytest.approx({"apcer": 0.6, "bpcer": 1 / 3, "acer": 0.466667}, abs=1e-6)
    iso = pad_error_rates_by_species(PRED, TRUTH, SPECIES)
    # ISO: print 1/3, replay 2/2 -> APCER = the worst species = 1.0; ACER (1 + 1/3) / 2 = 0.666667
    assert iso == pytest.approx({"apcer_iso/print": 1 / 3, "apcer_iso/replay": 1.0, "apcer_iso": 1.0,
                                 "bpcer": 1 / 3, "acer_iso": 0.666667}, abs=1e-6)


def test_pad_metrics_from_logits_has_both():
    logits = torch.stack([(~PRED).float(), PRED.float()], 1)  # class 1 = bona fide
    m = pad_metrics(logits, TRUTH.long(), SPECIES)
    assert m["acer"] == pytest.approx(0.466667, abs=1e-6) and m["acer_iso"] == pytest.approx(0.666667, abs=1e-6)
    with pytest.raises(ValueError, match="one entry per sample"):
        pad_error_rates_by_species(PRED, TRUTH, SPECIES[:-1])


def test_species_of_reads_attack_type():
    class DS:
        def __len__(self):
            return 3

        def attack_type(self, i):
            return ["live", "print", "replay"][i]

    assert species_of(DS()) == ["live", "print", "replay"]
    with pytest.raises(TypeError, match="attack_type"):
        species_of([1, 2])
