"""DDP on 2 CPU processes (gloo, 127.0.0.1): DAD over the global batch equals one process on the whole batch.

One spawn runs two checks in each rank:
1. a DAD stage wrapped in DistributedDataParallel, fed half of a batch per rank: the DAD loss equals the
   single-process loss on the whole batch, and the (DDP-averaged) gradients equal the single-process gradients —
   with ``gather=True``; with ``gather=False`` (per-rank matrices) they do not (control);
2. the Trainer under DDP (batch 4 per rank) ends with the weights of one process with batch 8.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

ROOT = Path(__file__).resolve().parents[2]
pytest.importorskip("mmh_ext")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _setup_path() -> None:
    for p in (str(Path(__file__).resolve().parent), str(ROOT / "python"), str(ROOT)):
        if p not in sys.path:
            sys.path.insert(0, p)


def _dad_stage(gather: bool):
    from _tiny import TinyNet
    from mmh.methods import DADDistiller

    torch.manual_seed(0)
    teacher, student = TinyNet(dropout=0.0), TinyNet(dropout=0.0)
    return DADDistiller(student, teacher, beta=1.0, form="paper", layers=["body"], gather=gather)


def _batch():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(8, 6, generator=g)
    return {"x": x, "label": x[:, :3].argmax(1)}


def _tcfg():
    from mmh.config import DEFAULTS, merge

    return merge(DEFAULTS["train"], {"batch_size": 8, "steps": 6, "lr": 0.1, "optimizer": "sgd",
                                     "schedule": "cosine", "progress": False})


def _worker(rank: int, world: int, port: int, out: str) -> None:
    _setup_path()
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        from _tiny import TinyNet, TinySet
        from mmh.methods import Supervised
        from mmh.train import Trainer
        from torch.nn.parallel import DistributedDataParallel as DDP

        result = {}
        full = _batch()
        local = {k: v[rank * 4:(rank + 1) * 4] for k, v in full.items()}
        for gather in (True, False):
            stage = _dad_stage(gather)
            ddp = DDP(stage)
            _, losses = ddp(local)
            sum(losses.values()).backward()
            result[gather] = {"dad": losses["loss_dad"].detach(),
                              "grads": {n: p.grad.clone() for n, p in stage.named_parameters() if p.grad is not None}}
        torch.manual_seed(0)
        stage = Supervised(TinyNet(dropout=0.0))
        tcfg = _tcfg()
        tcfg["batch_size"] = 4
        Trainer(stage, TinySet(40), tcfg, out_dir=Path(out) / "trainer", seed=1).fit()
        result["trainer"] = {k: v.clone() for k, v in stage.state_dict().items()}
        torch.save(result, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ddp_two_processes_match_one(tmp_path: Path):
    _setup_path()
    from _tiny import TinyNet, TinySet
    from mmh.methods import Supervised
    from mmh.train import Trainer

    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]

    # single process, whole batch
    stage = _dad_stage(gather=True)
    _, losses = stage(_batch())
    sum(losses.values()).backward()
    ref_dad = losses["loss_dad"].detach()
    ref_grads = {n: p.grad for n, p in stage.named_parameters() if p.grad is not None}
    assert ref_grads and all(not n.startswith("teacher") for n in ref_grads)

    for r in ranks:
        assert torch.allclose(r[True]["dad"], ref_dad, atol=1e-6)  # same global loss on every rank
        for n, g in ref_grads.items():
            assert torch.allclose(r[True]["grads"][n], g, atol=1e-6), n
    # control: without the gather the matrices are per rank, and the loss/gradients are not those of the batch
    assert not torch.allclose(ranks[0][False]["dad"], ref_dad, atol=1e-4)
    assert any(not torch.allclose(ranks[0][False]["grads"][n], g, atol=1e-4) for n, g in ref_grads.items())

    # the trainer: 2 ranks x batch 4 == 1 process x batch 8
    torch.manual_seed(0)
    single = Supervised(TinyNet(dropout=0.0))
    Trainer(single, TinySet(40), _tcfg(), out_dir=tmp_path / "single", seed=1).fit()
    for k, v in single.state_dict().items():
        assert torch.allclose(ranks[0]["trainer"][k], v, atol=1e-6), k
        assert torch.equal(ranks[0]["trainer"][k], ranks[1]["trainer"][k]), k
    assert (tmp_path / "trainer" / "metrics.csv").is_file()  # written by rank 0
