"""The production path: PyTorch's FSDP2 (`torch.distributed.fsdp.fully_shard`), ZeRO stage 3.

Fully Sharded Data Parallel (Zhao et al. 2023, arXiv:2304.11277) is ZeRO-3 built into PyTorch:
each parameter becomes a DTensor sharded on dim 0 over the mesh; `fully_shard(block)` makes one
communication group per Transformer block that is all-gathered before its forward (and again
before its backward) and whose gradients are reduce-scattered after its backward. Compared with
the teaching version in `minillm.distributed.zero`, FSDP2 prefetches the next block's gather
while the current one computes, keeps per-parameter sharding (no flat buffer to unflatten) and
casts with a mixed-precision policy: parameters gathered in `param_dtype` for compute, gradients
reduced in `reduce_dtype`, the sharded fp32 master weights updated by the optimizer.

minillm only wraps it: one `fully_shard` per block, then one for the root (embeddings, final
norm, head, a tied weight once). The mesh is CPU/gloo or CUDA/NCCL, as the process group.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["apply_fsdp", "fsdp_full_state_dict"]

_DTYPES = {None: None, "float32": torch.float32, "bfloat16": torch.bfloat16,
           "float16": torch.float16}


def apply_fsdp(model: nn.Module, device_type: str = "cpu", param_dtype: str | None = None,
               reduce_dtype: str | None = "float32", reshard_after_forward: bool = True
               ) -> nn.Module:
    """Shard `model` in place with FSDP2: each of `model.blocks`, then the root.

    Args:
        model: a GPT (anything with a `blocks` ModuleList works; without one, only the root).
        device_type: "cpu" (gloo) or "cuda" (NCCL): the device mesh's type.
        param_dtype: dtype the gathered parameters compute in (None = keep fp32).
        reduce_dtype: dtype gradients are reduce-scattered in.
        reshard_after_forward: free gathered blocks after forward (ZeRO-3); False keeps them
            until backward (ZeRO-2-like memory, less communication).

    Returns:
        The same module, now an `FSDPModule` whose parameters are sharded DTensors.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    if not dist.is_initialized():
        raise RuntimeError("apply_fsdp needs a process group: launch with torchrun")
    for name, value in (("param_dtype", param_dtype), ("reduce_dtype", reduce_dtype)):
        if value not in _DTYPES:
            raise ValueError(f"{name}={value!r}; choose one of {sorted(k for k in _DTYPES if k)} "
                             "or None")
    with torch.no_grad():  # every rank shards the same weights: rank 0's
        for t in [*model.parameters(), *model.buffers()]:
            dist.broadcast(t, src=0)
    mesh = init_device_mesh(device_type, (dist.get_world_size(),))
    policy = MixedPrecisionPolicy(param_dtype=_DTYPES[param_dtype],
                                  reduce_dtype=_DTYPES[reduce_dtype])
    for block in getattr(model, "blocks", []):
        fully_shard(block, mesh=mesh, mp_policy=policy, reshard_after_forward=reshard_after_forward)
    fully_shard(model, mesh=mesh, mp_policy=policy, reshard_after_forward=reshard_after_forward)
    return model


def fsdp_full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Full (unsharded) weights of an FSDP2 model on every rank, on the CPU."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True,
                                                                cpu_offload=False))
