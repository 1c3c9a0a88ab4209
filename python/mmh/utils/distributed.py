"""Distributed helpers: rank information, process-group setup under ``torchrun``, gather with gradient."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = [
    "DistInfo",
    "dist_info",
    "is_main_process",
    "init_distributed_from_env",
    "all_gather_with_grad",
    "elastic_restart_count",
    "elastic_job_id",
]


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: ``rank`` of ``world_size`` (``local_rank`` on its node)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        """True when more than one process takes part."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0 (the process that logs and writes checkpoints)."""
        return self.rank == 0


def dist_info() -> DistInfo:
    """The current process group's rank and size (rank 0 of 1 when not initialised)."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return DistInfo()


def is_main_process() -> bool:
    """True unless this is a non-zero rank of an initialised process group."""
    return dist_info().is_main


def elastic_restart_count() -> int:
    """How many times ``torchrun --max-restarts`` has restarted this job's workers (``TORCHELASTIC_RESTART_COUNT``;
    0 on the first attempt and outside torchrun). A restarted run resumes its run folder
    (:func:`mmh.runner.run_experiment`)."""
    value = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    try:
        return max(int(value), 0)
    except ValueError:
        raise ValueError(f"TORCHELASTIC_RESTART_COUNT must be an integer, got {value!r}") from None


def elastic_job_id() -> str | None:
    """An id of this ``torchrun`` job, the same in each of its restart attempts and another for another job (None
    outside torchrun): ``TORCHELASTIC_RUN_ID`` (``--rdzv-id``, "none" unless given, so not enough alone), the host
    and process id of the elastic agent that started this worker (its parent, which outlives the attempts) and that
    agent's start time (so that a reused process id is another job). A restart resumes only a run folder that its
    own job created (:func:`mmh.runner.run_experiment`)."""
    run_id = os.environ.get("TORCHELASTIC_RUN_ID")
    if run_id is None:
        return None
    agent = os.getppid()
    started = ""
    try:  # Linux: field 22 of /proc/<pid>/stat, the start time in clock ticks after boot (after the ")" of comm)
        with open(f"/proc/{agent}/stat", encoding="ascii", errors="replace") as fh:
            started = fh.read().rpartition(")")[2].split()[19]
    except (OSError, IndexError):
        pass
    return f"{run_id}@{socket.gethostname()}:{agent}:{started}"


def init_distributed_from_env(backend: str | None = None) -> DistInfo:
    """Initialise the default process group when launched by ``torchrun`` (``WORLD_SIZE`` > 1 in the environment).

    ``backend`` defaults to nccl when CUDA is available and gloo otherwise. Without torchrun variables this is a
    no-op returning rank 0 of 1.

    Under ``torchrun --max-restarts`` the workers of every attempt meet in the same store (the elastic agent shares
    one TCP store across rendezvous rounds), where the process group's keys of the killed attempt are still set:
    a restarted rank then reads a dead peer's address, and gloo hangs or fails with "connectFullMesh failed". The
    store is therefore taken from the ``env://`` rendezvous and prefixed with the attempt
    (``TORCHELASTIC_RESTART_COUNT``), so that each attempt has its own keys.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or (dist.is_available() and dist.is_initialized()):
        return dist_info()
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but torch.distributed is not available in this build")
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if "TORCHELASTIC_RESTART_COUNT" in os.environ and "MASTER_ADDR" in os.environ:
        store, rank, size = next(dist.rendezvous("env://"))
        store = dist.PrefixStore(f"mmh/attempt_{elastic_restart_count()}/", store)
        dist.init_process_group(backend=backend, store=store, rank=rank, world_size=size)
    else:
        dist.init_process_group(backend=backend)
    info = dist_info()
    if torch.cuda.is_available():
        torch.cuda.set_device(info.local_rank)
    return info


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums the incoming gradients over ranks and returns this rank's slice.

    Every rank computes the same global loss from the gathered tensor, so the gradient of that loss with respect to
    this rank's local tensor is the sum over ranks of the gradients arriving at this rank's slot. After DDP averages
    parameter gradients over the ``W`` ranks, the result equals the single-process gradient on the whole batch.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        world, rank = dist.get_world_size(), dist.get_rank()
        sizes = [torch.zeros(1, dtype=torch.long, device=x.device) for _ in range(world)]
        dist.all_gather(sizes, torch.tensor([x.shape[0]], dtype=torch.long, device=x.device))
        sizes_int = [int(s.item()) for s in sizes]
        if len(set(sizes_int)) != 1:
            raise ValueError(f"all_gather_with_grad needs the same batch size on every rank, got {sizes_int}")
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous())
        ctx.rank, ctx.n = rank, x.shape[0]
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n]


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (B, ...) from every rank along dim 0, in rank order, keeping the graph to the local part.

    Identity when not distributed. Every rank must pass the same batch size (ValueError otherwise).
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"all_gather_with_grad expects a tensor, got {type(x).__name__}")
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    return _GatherWithGrad.apply(x)
