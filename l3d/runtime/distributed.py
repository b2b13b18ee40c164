"""Data-parallel L3D with torch.distributed: one process per GPU (NCCL) or per CPU worker (gloo).

Every process takes a contiguous share of the items of each batch. The loss is a ratio of sums over
the global batch, so the processes sum the numerator's gradients and the denominator (all_reduce), and
BatchTopK is taken over the gathered coefficients of the whole batch: each step equals the step one
process would take on the whole batch.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from .device import resolve_device


@dataclass(frozen=True)
class Shard:
    """This process's place among `world_size` data-parallel processes."""

    rank: int = 0
    world_size: int = 1

    @property
    def distributed(self) -> bool:
        """Whether this is one of several processes (a torchrun run with world_size > 1)."""
        return self.world_size > 1

    @property
    def active(self) -> bool:
        """Deprecated: `distributed`."""
        warnings.warn("Shard.active is deprecated, renamed distributed", DeprecationWarning, stacklevel=2)
        return self.distributed

    @property
    def is_main(self) -> bool:
        """Only the main process writes checkpoints, figures and results."""
        return self.rank == 0

    def share(self, n: int) -> slice:
        """This process's contiguous part of n items (n must divide evenly)."""
        if n % self.world_size:
            raise ValueError(f"{n} items cannot be split evenly over {self.world_size} processes")
        size = n // self.world_size
        return slice(self.rank * size, (self.rank + 1) * size)


def current() -> Shard:
    """The shard of this process in the default process group (rank 0 of 1 when there is none)."""
    if dist.is_available() and dist.is_initialized():
        return Shard(dist.get_rank(), dist.get_world_size())
    return Shard()


def setup(device: str = "auto") -> tuple[Shard, torch.device]:
    """Join the process group that `torchrun` describes in the environment, and pick this process's device.

    NCCL with one GPU per process (cuda:LOCAL_RANK) when GPUs are present, gloo on CPU. Without torchrun
    (no WORLD_SIZE in the environment) this is a single process and nothing is initialized.
    """
    device = resolve_device(device)
    if "WORLD_SIZE" not in os.environ or dist.is_initialized():
        return current(), device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return current(), device


def teardown() -> None:
    """Leave the process group (when one was joined)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_sum_(t: Tensor) -> Tensor:
    """Sum `t` over all processes, in place; returns it."""
    if current().distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def gather_rows(x: Tensor) -> tuple[Tensor, slice]:
    """Concatenate every process's rows of x (equal row counts) in rank order, and where ours lie."""
    shard = current()
    if not shard.distributed:
        return x, slice(0, x.shape[0])
    parts = [torch.empty_like(x) for _ in range(shard.world_size)]
    dist.all_gather(parts, x.contiguous())
    n = x.shape[0]
    return torch.cat(parts), slice(shard.rank * n, (shard.rank + 1) * n)


def sum_gradients_(parameters) -> None:
    """Sum the .grad of `parameters` over all processes with one all_reduce."""
    if not current().distributed:
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    flat = torch.cat([g.flatten() for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    for g, part in zip(grads, flat.split([g.numel() for g in grads])):
        g.copy_(part.view_as(g))


def broadcast_parameters_(module: torch.nn.Module) -> None:
    """Make every process hold rank 0's parameters."""
    if not current().distributed:
        return
    with torch.no_grad():
        for p in module.parameters():
            dist.broadcast(p.data, src=0)


def barrier() -> None:
    if current().distributed:
        dist.barrier()
