"""How the processes are arranged: `ParallelDims` -> a named `DeviceMesh`.

N = dp_replicate * dp_shard * tp * pp processes are laid out as a grid, outermost first:

    mesh = init_device_mesh(device, (pp, dp_replicate, dp_shard, tp),
                            mesh_dim_names=("pp", "dp_replicate", "dp_shard", "tp"))

- tp (tensor parallel, Megatron-LM 1909.08053) is innermost: its ranks are neighbours (the
  GPUs of one node), because it communicates inside every block, forward and backward;
- dp_shard (FSDP2 / ZeRO-3, 2304.11277) next: each block's weights are all-gathered and its
  gradients reduce-scattered over these ranks;
- dp_replicate outside it: HSDP, whole replicas (one per node, say) that only all-reduce
  gradients, so the per-block gathers stay inside a node;
- pp (pipeline stages, GPipe 1811.06965 / 1F1B 2104.04473) outermost: it sends one
  activation per micro-batch, the least traffic, so it may cross the slowest links.

The data-parallel group is dp = dp_replicate x dp_shard: every rank with the same (pp, tp)
coordinates sees different data; ranks that differ only in tp or pp see the same batch. This is
torchtitan's `ParallelDims` (github.com/pytorch/torchtitan) at minillm's size: no context or
expert parallel dims, and every dim is kept in the mesh even at size 1, so `mesh["tp"]` always
exists. `dp_shard=-1` takes whatever the other dims leave of the world size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.distributed as dist

__all__ = ["MESH_DIMS", "ParallelDims"]

MESH_DIMS = ("pp", "dp_replicate", "dp_shard", "tp")  # outermost first


@dataclass
class ParallelDims:
    """The size of each parallel dimension, checked against the world size.

    Args:
        dp_replicate: replicas that all-reduce gradients (HSDP's outer dim; 1 = none).
        dp_shard: ranks a replica's weights are sharded over (FSDP2); -1 = the world size
            divided by the other dims.
        tp: tensor-parallel ranks per block (they must divide n_head).
        pp: pipeline stages (they must divide n_layer).
        world_size: the number of processes.

    Raises:
        ValueError: a dim is not positive, or their product is not the world size (one line
            naming both).
    """

    dp_replicate: int = 1
    dp_shard: int = -1
    tp: int = 1
    pp: int = 1
    world_size: int = 1

    def __post_init__(self) -> None:
        for name in ("dp_replicate", "tp", "pp", "world_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        others = self.dp_replicate * self.tp * self.pp
        if self.dp_shard == -1:
            if self.world_size % others:
                raise ValueError(
                    f"dp_replicate*tp*pp = {self.dp_replicate}*{self.tp}*{self.pp} = {others} "
                    f"does not divide the world size {self.world_size}; choose dims whose "
                    "product divides it")
            self.dp_shard = self.world_size // others
        if self.dp_shard < 1:
            raise ValueError(f"dp_shard={self.dp_shard} must be >= 1 (or -1: what is left)")
        product = others * self.dp_shard
        if product != self.world_size:
            raise ValueError(
                f"dp_replicate*dp_shard*tp*pp = {self.dp_replicate}*{self.dp_shard}*{self.tp}*"
                f"{self.pp} = {product} but the world size is {self.world_size}; launch "
                f"{product} processes or change the dims")
        self.mesh = None

    @property
    def dp(self) -> int:
        """Data-parallel ranks: dp_replicate * dp_shard (each sees its own slice of a batch)."""
        return self.dp_replicate * self.dp_shard

    @property
    def sizes(self) -> dict[str, int]:
        """{"pp": pp, "dp_replicate": ..., "dp_shard": ..., "tp": ...}, outermost first."""
        return {name: getattr(self, name) for name in MESH_DIMS}

    def build_mesh(self, device_type: str = "cpu"):
        """The 4-D `DeviceMesh` named by `MESH_DIMS` (kept as `self.mesh`); needs the process
        group started (`minillm.distributed.init_from_env`).

        Args:
            device_type: "cpu" (gloo) or "cuda" (NCCL).
        """
        from torch.distributed.device_mesh import init_device_mesh

        if not dist.is_initialized():
            if self.world_size > 1:
                raise RuntimeError(f"ParallelDims({self}) needs a process group: launch with "
                                   f"torchrun --nproc_per_node={self.world_size}")
            dist.init_process_group("gloo" if device_type == "cpu" else "nccl", rank=0,
                                    world_size=1, store=dist.HashStore())
        self.mesh = init_device_mesh(device_type, tuple(self.sizes.values()),
                                     mesh_dim_names=MESH_DIMS)
        return self.mesh

    def dp_mesh(self):
        """The data-parallel submesh FSDP shards over: 1-D ("dp_shard") or, when both dp dims
        are > 1, 2-D ("dp_replicate", "dp_shard"), which `fully_shard` runs as HSDP."""
        if self.mesh is None:
            raise RuntimeError("call build_mesh first")
        if self.dp_replicate > 1:
            return self.mesh["dp_replicate", "dp_shard"]
        return self.mesh["dp_shard"]

    def data_slice(self, rank: int) -> tuple[int, int]:
        """(dp index, dp) of global rank `rank`, from the mesh's row-major layout alone (no mesh
        needed: what a data loader built before the model asks): rank = ((p * R + r) * S + s)
        * T + t, so the dp index r * S + s is (rank // tp) % dp."""
        return (rank // self.tp) % self.dp, self.dp

    def dp_rank(self) -> int:
        """This rank's index among the dp ranks (replica-major): which slice of a batch it
        reads."""
        if self.mesh is None:
            raise RuntimeError("call build_mesh first")
        return (self.mesh["dp_replicate"].get_local_rank() * self.dp_shard
                + self.mesh["dp_shard"].get_local_rank())

    def __str__(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.sizes.items())
