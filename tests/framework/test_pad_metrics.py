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
    assert iso == pytest.approx(
        {"apcer_iso/print": 1 / 3, "apcer_iso/replay": 1.0, "apcer_iso": 1.0, "bpcer": 1 / 3, "acer_iso": 0.666667},
        abs=1e-6,
    )


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


def test_main_job_iso_metrics_of_a_tiny_antispoof_run(tmp_path):
    from mmh.benchmarks.main_job import antispoof_iso_metrics, format_table
    from mmh.config import find_config, load_config
    from mmh.runner import run_experiment

    over = [
        "seed=0",
        "train.steps=3",
        "train.batch_size=8",
        "train.progress=false",
        "threads=1",
        "dataset.split_kwargs={train: {size: 16}, test: {size: 24}}",
        f"output.cache={tmp_path / 'cache'}",
    ]
    cfg = load_config(find_config("synthetic_antispoof/baseline"), over)
    res = run_experiment(cfg, run_dir=tmp_path / "run", log=lambda _m: None)
    iso = antispoof_iso_metrics(res)  # reads the run's saved config.yaml
    # the pooled numbers are the run's own evaluation; ISO: the worst species, and the pooled APCER is the
    # species' APCERs weighted by their attack counts
    assert iso["acer"] == pytest.approx(res["final"]["acer"], abs=1e-9)
    species = {k: v for k, v in iso.items() if k.startswith("apcer_iso/")}
    assert set(species) == {"apcer_iso/print", "apcer_iso/replay"}
    assert iso["apcer_iso"] == max(species.values())
    assert iso["acer_iso"] == pytest.approx((iso["apcer_iso"] + iso["bpcer"]) / 2)
    assert iso["apcer"] <= iso["apcer_iso"] + 1e-12
    from mmh.data import build_dataset

    kinds = species_of(
        build_dataset(
            "synthetic_antispoof",
            split="test",
            **cfg["dataset"]["split_kwargs"]["test"],
            **(cfg["dataset"].get("kwargs") or {}),
        )
    )
    n = {k: kinds.count(k) for k in ("print", "replay")}
    pooled = (n["print"] * species["apcer_iso/print"] + n["replay"] * species["apcer_iso/replay"]) / sum(n.values())
    assert iso["apcer"] == pytest.approx(pooled, abs=1e-9)
    table = format_table(
        {"rad": {"accuracy": [0.5], "mean": 0.5, "std": 0.0}},
        {"rad": {"mean": 0.2, "std": 0.0, "acer_iso_mean": 0.3, "acer_iso_std": 0.0}},
    )
    assert "RAD, mean weighting: the paper's −IW ablation" in table and "| 0.2000 ± 0.0000 | 0.3000 ± 0.0000 |" in table
