"""DDP on 2 CPU processes (gloo, 127.0.0.1): DAD over the global batch equals one process on the whole batch, and
an elastic restart after a killed rank resumes from latest.pt.

One spawn runs two checks in each rank:
1. a DAD stage wrapped in DistributedDataParallel, fed half of a batch per rank: the DAD loss equals the
   single-process loss on the whole batch, and the (DDP-averaged) gradients equal the single-process gradients —
   with ``gather=True``; with ``gather=False`` (per-rank matrices) they do not (control);
2. the Trainer under DDP (batch 4 per rank) ends with the weights of one process with batch 8.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
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

    return merge(
        DEFAULTS["train"],
        {"batch_size": 8, "steps": 6, "lr": 0.1, "optimizer": "sgd", "schedule": "cosine", "progress": False},
    )


def _worker(rank: int, world: int, port: int, out: str) -> None:
    _setup_path()
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        from _tiny import TinyNet, TinySet
        from torch.nn.parallel import DistributedDataParallel as DDP

        from mmh.methods import Supervised
        from mmh.train import Trainer

        result = {}
        full = _batch()
        local = {k: v[rank * 4 : (rank + 1) * 4] for k, v in full.items()}
        for gather in (True, False):
            stage = _dad_stage(gather)
            ddp = DDP(stage)
            _, losses = ddp(local)
            sum(losses.values()).backward()
            result[gather] = {
                "dad": losses["loss_dad"].detach(),
                "grads": {n: p.grad.clone() for n, p in stage.named_parameters() if p.grad is not None},
            }
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


# ------------------------------------------------------------------------------------------------ elastic restart
_ELASTIC_WORKER = """
import os, signal, sys
sys.path[:0] = {paths!r}
import torch
torch.set_num_threads(1)
from mmh.train import Trainer

rank, attempt = int(os.environ["RANK"]), int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
log = open(os.path.join({logs!r}, f"attempt{{attempt}}_rank{{rank}}.txt"), "a")
orig = Trainer._train_step


def step(self, batch):
    if {kill_at} >= 0 and attempt == 0 and rank == 1 and self.step == {kill_at}:
        os.kill(os.getpid(), signal.SIGKILL)  # a rank lost in the middle of an epoch
    log.write(f"{{self.step}}\\n")
    log.flush()
    orig(self, batch)


Trainer._train_step = step
from mmh.cli import main
sys.exit(main({argv!r}))
"""


def _torchrun(tmp_path: Path, name: str, kill_at: int) -> tuple[Path, Path, subprocess.CompletedProcess]:
    """``torchrun --nproc-per-node 2 --max-restarts 1`` of a tiny baseline run (8 steps, 3 per epoch, a checkpoint
    every step) on a fresh rendezvous port; rank 1 kills itself before step ``kill_at`` of the first attempt."""
    run, logs = tmp_path / name, tmp_path / f"{name}_steps"
    logs.mkdir()
    argv = [
        "train",
        "synthetic_motion/baseline",
        "dataset.split_kwargs={train: {size: 48}, test: {size: 30}}",
        "train.batch_size=8",
        "train.steps=8",
        "train.checkpoint_every=1",
        "model.kwargs={width: 8, shared_width: 8}",
        "train.progress=false",
        "threads=1",
        "output.cache=''",
        "--run-dir",
        str(run),
    ]
    script = tmp_path / f"{name}_worker.py"
    script.write_text(
        _ELASTIC_WORKER.format(paths=[str(ROOT / "python"), str(ROOT)], logs=str(logs), kill_at=kill_at, argv=argv)
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": os.environ.get("GLOO_SOCKET_IFNAME", "lo")}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "1",
        "--nproc-per-node",
        "2",
        "--max-restarts",
        "1",
        "--rdzv-backend",
        "c10d",
        "--rdzv-endpoint",
        f"127.0.0.1:{_free_port()}",
        "--monitor-interval",
        "0.2",
        str(script),
    ]
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=180)
    return run, logs, proc


def _steps(path: Path) -> list[int]:
    return [int(s) for s in path.read_text().split()] if path.is_file() else []


@pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()), reason="needs torch.distributed + gloo")
def test_elastic_restart_resumes_from_latest_checkpoint(tmp_path: Path):
    """A rank killed mid-epoch under ``torchrun --max-restarts 1``: the restarted workers see
    TORCHELASTIC_RESTART_COUNT=1 and resume the run folder from latest.pt (step 4, not step 0), and the final
    weights equal those of an uninterrupted 2-process run."""
    run, logs, proc = _torchrun(tmp_path, "killed", kill_at=4)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert _steps(logs / "attempt0_rank1.txt") == [0, 1, 2, 3]
    restarted = _steps(logs / "attempt1_rank0.txt")
    assert restarted == [4, 5, 6, 7], proc.stderr[-4000:]  # resumed at the step reached, not from step 0
    assert restarted == _steps(logs / "attempt1_rank1.txt")
    assert "elastic restart 1: resuming" in proc.stdout + proc.stderr
    res = json.loads((run / "results.json").read_text())
    assert res["status"] == "done"

    ref, ref_logs, proc = _torchrun(tmp_path, "ref", kill_at=-1)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert _steps(ref_logs / "attempt0_rank0.txt") == list(range(8))
    from mmh.train.checkpoint import safe_load

    a = safe_load(ref / "stages" / "student" / "model.pt")["state_dict"]
    b = safe_load(run / "stages" / "student" / "model.pt")["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert safe_load(run / "stages" / "student" / "latest.pt")["step"] == 8
