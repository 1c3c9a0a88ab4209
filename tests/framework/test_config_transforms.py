"""``dataset.transforms`` from the config: train augmentation on the train split only, over the in-memory cache,
reproducible with the seed, fingerprinted for the stage cache; errors that name the entry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import mmh.runner as runner
from mmh.cli import main
from mmh.config import load_config
from mmh.data import CachedDataset, build_dataset, register_dataset
from mmh.data.synthetic import SyntheticShapes
from mmh.data.transforms import PairedCenterCrop, TransformedDataset

SIZE = 16  # the synthetic images; train crops of 12 leave 5 x 5 windows, each maybe flipped
TRAIN = "dataset.transforms.train=[{name: random_crop, size: 12}, {name: hflip, p: 0.5}]"
EVAL = "dataset.transforms.eval=[{name: center_crop, size: 12}]"
TINY = [
    "dataset.name=synthetic_shapes",
    "dataset.split_kwargs={train: {size: 8}, val: {size: 4}, test: {size: 8}}",
    f"dataset.kwargs={{resolution: {SIZE}}}",
    "model.kwargs={width: 4, shared_width: 4}",
    "train.steps=4",
    "train.batch_size=4",
    "train.progress=false",
    "threads=1",
]


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> dict:
    """Fresh per-process dataset memo; counts the source's item reads per split and records every item the config's
    transforms return: ``{"source": {split: n}, "items": [(dataset, index, rgb)]}``."""
    monkeypatch.setattr(runner, "_DATASETS", {})
    out: dict = {"source": {}, "items": []}
    source_get, wrapped_get = SyntheticShapes.__getitem__, TransformedDataset.__getitem__

    def counted(self, i):
        out["source"][self.split] = out["source"].get(self.split, 0) + 1
        return source_get(self, i)

    def recorded(self, i):
        item = wrapped_get(self, i)
        out["items"].append((self, int(i), item["rgb"].clone()))
        return item

    monkeypatch.setattr(SyntheticShapes, "__getitem__", counted)
    monkeypatch.setattr(TransformedDataset, "__getitem__", recorded)
    return out


def _raw(split: str) -> list[torch.Tensor]:
    ds = build_dataset("synthetic_shapes", split=split, size=8, resolution=SIZE)
    return [ds[i]["rgb"] for i in range(len(ds))]


def _window(item: torch.Tensor, raw: torch.Tensor) -> tuple[int, int, bool] | None:
    """The (top, left, flipped) 12 x 12 window of ``raw`` that ``item`` is, or None."""
    for top in range(SIZE - 11):
        for left in range(SIZE - 11):
            crop = raw[:, top : top + 12, left : left + 12]
            for flipped in (False, True):
                if torch.equal(item, crop.flip(-1) if flipped else crop):
                    return top, left, flipped
    return None


def _train(tmp_path: Path, name: str, *extra: str, cache: str = "''") -> dict:
    run = tmp_path / name
    assert main(["train", "synthetic_shapes/baseline", *TINY, TRAIN, EVAL, f"output.cache={cache}", *extra]
                + ["--run-dir", str(run)]) == 0  # fmt: skip
    return json.loads((run / "results.json").read_text())


def test_train_items_are_augmented_and_eval_items_are_not(tmp_path: Path, reads: dict):
    res = _train(tmp_path, "run")
    assert res["status"] == "done"
    source_reads = dict(reads["source"])
    raw = {s: _raw(s) for s in ("train", "val", "test")}
    train = [(i, x) for ds, i, x in reads["items"] if ds.spec[0]["name"] == "random_crop"]
    evals = [(ds, i, x) for ds, i, x in reads["items"] if ds.spec[0]["name"] == "center_crop"]
    assert len(train) >= 16 and len(evals) >= 8  # 4 steps of 4, the test split, the val split
    windows = [_window(x, raw["train"][i]) for i, x in train]
    assert None not in windows  # every train item is a 12 x 12 window of its own source item, maybe flipped
    assert len(set(windows)) > 3 and {w[2] for w in windows} == {False, True}  # random windows and flips
    for ds, i, x in evals:  # val and test: the central window, never flipped
        split = "val" if len(ds) == 4 else "test"
        assert torch.equal(x, raw[split][i][:, 2:14, 2:14])
    # the dataset cache still holds: every source item read once (materialised), whatever the epochs read
    assert source_reads == {"train": 8, "val": 4, "test": 8}
    train_set = runner.load_split(load_config(None, ["method=baseline", *TINY, TRAIN, EVAL]), "train")
    assert isinstance(train_set, TransformedDataset) and isinstance(train_set.dataset, CachedDataset)


def test_the_seed_reproduces_the_augmented_batches(tmp_path: Path, reads: dict, monkeypatch: pytest.MonkeyPatch):
    def train_items(name: str, *extra: str) -> list[torch.Tensor]:
        reads["items"].clear()
        monkeypatch.setattr(runner, "_DATASETS", {})
        _train(tmp_path, name, *extra)
        return [x for ds, _i, x in reads["items"] if ds.spec[0]["name"] == "random_crop"]

    first, again = train_items("a"), train_items("b")
    assert len(first) == len(again) and all(torch.equal(x, y) for x, y in zip(first, again))
    other = train_items("c", "seed=1")
    assert not all(x.shape == y.shape and torch.equal(x, y) for x, y in zip(first, other))


def test_the_stage_cache_key_covers_the_transforms_not_their_draws(tmp_path: Path, reads: dict):
    cache = str(tmp_path / "cache")
    first = _train(tmp_path, "first", cache=cache)
    second = _train(tmp_path, "second", cache=cache)
    stage = next(iter(first["stages"]))
    assert first["stages"][stage]["source"]["kind"] == "trained"
    assert second["stages"][stage]["source"]["kind"] == "cache"  # random draws do not change the key
    assert second["stages"][stage]["key"] == first["stages"][stage]["key"]
    flip_off = "dataset.transforms.train=[{name: random_crop, size: 12}, {name: hflip, p: 0.0}]"
    third = _train(tmp_path, "third", flip_off, cache=cache)
    assert (
        third["stages"][stage]["source"]["kind"] == "trained"
        and third["stages"][stage]["key"] != first["stages"][stage]["key"]
    )

    # with augmentation the draws depend on the data workers (each has its own seed): another count is another key
    workers = _train(tmp_path, "workers", "train.num_workers=1", cache=cache)
    assert workers["stages"][stage]["source"]["kind"] == "trained"
    assert workers["stages"][stage]["key"] != first["stages"][stage]["key"]

    def fingerprint(*overrides: str) -> str:
        return runner.dataset_fingerprint(runner.load_split(load_config(None, [*TINY, *overrides]), "train"))

    plain = fingerprint()
    assert fingerprint(TRAIN) == fingerprint(TRAIN) != plain  # stable across reads, and not the plain data's
    assert fingerprint(EVAL) == plain  # eval transforms do not touch the train split


def test_transforms_apply_by_role_and_over_a_datasets_own_transform(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(runner, "_DATASETS", {})
    cfg = load_config(None, [*TINY, TRAIN, EVAL])
    assert runner.load_split(cfg, "train", role="eval")[0]["rgb"].shape[-2:] == (12, 12)
    raw = _raw("train")
    assert torch.equal(runner.load_split(cfg, "train", role="eval")[3]["rgb"], raw[3][:, 2:14, 2:14])
    plain = runner.load_split(load_config(None, TINY), "train")
    assert isinstance(plain, CachedDataset)  # no transforms: the cached split itself, as before

    @register_dataset("_test_shapes_own_transform")
    def own(split: str = "train", **kwargs):  # a dataset built with its own transform= (never cached)
        return SyntheticShapes(split, transform=PairedCenterCrop(14), **kwargs)

    cfg = load_config(None, [*TINY, EVAL, "dataset.name=_test_shapes_own_transform"])
    test = runner.load_split(cfg, "test")
    assert not isinstance(test.dataset, CachedDataset)
    assert torch.equal(test[5]["rgb"], _raw("test")[5][:, 2:14, 2:14])  # 16 -> its own 14 -> the config's 12


@pytest.mark.parametrize(
    ("overrides", "error", "match"),
    [
        (["dataset.transforms.train=[{name: random_crop, size: 12}, {name: flip}]"], ValueError,
         r"dataset\.transforms\.train\[1\]: unknown transform 'flip'; known: .*'hflip'"),
        (["dataset.transforms.eval=[{name: center_crop, size: [12]}]"], ValueError,
         r"dataset\.transforms\.eval\[0\] \(center_crop\).*size"),
        (["dataset.transforms.train=[{name: hflip, prob: 0.5}]"], TypeError,
         r"dataset\.transforms\.train\[0\] \(hflip\).*prob"),
        ([TRAIN, "dataset.eval_split=train"], ValueError, r"train_split 'train' is also dataset\.eval_split"),
    ],
)  # fmt: skip
def test_bad_transforms_fail_before_the_run_folder_exists(tmp_path: Path, overrides, error, match, monkeypatch):
    monkeypatch.setattr(runner, "_DATASETS", {})
    cfg = load_config(None, ["method=baseline", *TINY, *overrides])
    with pytest.raises(error, match=match):
        runner.run_experiment(cfg, run_dir=tmp_path / "run", log=lambda _s: None)
    assert not (tmp_path / "run").exists()


def test_transform_keys_are_checked_when_the_config_loads():
    with pytest.raises(KeyError, match=r"dataset\.transforms\.trian"):
        load_config(None, ["dataset.transforms.trian=[hflip]"])
    cfg = load_config(None, ["dataset.transforms={train: [hflip]}"])  # a list left out is empty
    assert cfg["dataset"]["transforms"] == {"train": ["hflip"]}
    assert load_config(None)["dataset"]["transforms"] == {"train": [], "eval": []}


@pytest.mark.parametrize(
    ("section", "match"),
    [
        ("{train: {name: hflip}}", r"'dataset\.transforms\.train' must be a list"),
        ("[hflip]", r"'dataset\.transforms' must be a mapping"),
    ],
)
def test_a_config_file_with_misshapen_transforms_is_refused(tmp_path: Path, section: str, match: str):
    path = tmp_path / "bad.yaml"
    path.write_text(f"_base_: synthetic_shapes/baseline\ndataset:\n  transforms: {section}\n")
    cfg = load_config(path, TINY)
    with pytest.raises(TypeError, match=match):
        runner.load_split(cfg, "train")
