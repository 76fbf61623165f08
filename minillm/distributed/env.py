"""Process-group setup from torchrun's environment.

`torchrun --nproc_per_node=N script.py` sets RANK, LOCAL_RANK and WORLD_SIZE; `init_from_env`
reads them, starts the process group (NCCL on CUDA, gloo on CPU) and returns a
`DistInfo`. Without those variables it returns a one-process `DistInfo` and starts nothing,
so the same entry point runs with or without torchrun.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "init_from_env", "shutdown", "all_reduce_mean"]


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: its rank, its rank on this node, how many there are."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes checkpoints and prints."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """More than one process."""
        return self.world_size > 1


def init_from_env(device_type: str = "cpu") -> DistInfo:
    """Start the process group if torchrun (or a spawn helper) set WORLD_SIZE > 1.

    Args:
        device_type: "cuda" uses NCCL (and picks this rank's GPU), anything else gloo.

    Returns:
        This process's `DistInfo` (a one-process one without WORLD_SIZE > 1).

    Raises:
        ValueError: WORLD_SIZE > 1 without RANK.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    if "RANK" not in os.environ:
        raise ValueError(f"WORLD_SIZE={world_size} but RANK is not set: launch with torchrun "
                         "(which sets RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) or set them")
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world_size, backend=backend)


def shutdown() -> None:
    """Destroy the process group, if one was started."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_mean(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean of a tensor over all ranks (a no-op in one process). NCCL reduces only CUDA
    tensors, so there the value travels through this rank's GPU and comes back.

    Args:
        value: the same-shaped tensor on every rank.
        info: this process's `DistInfo`.

    Returns:
        The mean, on `value`'s device.
    """
    if info.enabled:
        device = (torch.device("cuda", torch.cuda.current_device()) if info.backend == "nccl"
                  else value.device)
        out = value.to(device, copy=True)
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        value = (out / info.world_size).to(value.device)
    return value
