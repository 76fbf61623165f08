"""How the Trainer wraps a model for one process or many: the `Strategy` interface (CONTRACTS §3).

A strategy turns the raw model into the *runner* the training loop calls, builds the optimizer,
and knows how to skip gradient synchronisation, clip the global gradient norm and produce full
weights and optimizer state for a checkpoint. Built in: "single" (one process) and "ddp"
(torch's DistributedDataParallel); `minillm.distributed.strategies` registers "own_ddp",
"zero1", "zero2", "zero3" and "fsdp".

AdamW's groups follow `minillm.training.optim.param_groups` (decay on >= 2-D tensors, in
`parameters()` order, decayed group first); it is rebuilt here because this layer sits below
training.
"""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager as ContextManager
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from minillm.distributed import DistInfo

__all__ = ["Strategy", "DDPStrategy", "register_strategy", "get_strategy", "strategy_names",
           "adamw_groups"]

_REGISTRY: dict[str, type[Strategy]] = {}


def adamw_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: trainable >= 2-D tensors with `weight_decay`, the rest with none."""
    ps = [p for p in model.parameters() if p.requires_grad]
    return [{"params": [p for p in ps if p.ndim >= 2], "weight_decay": weight_decay},
            {"params": [p for p in ps if p.ndim < 2], "weight_decay": 0.0}]


class Strategy:
    """One process: the runner is the model (optionally compiled)."""

    name = "single"

    def __init__(self, dist: DistInfo):
        self.dist = dist
        self.runner: nn.Module | None = None

    def wrap(self, model: nn.Module, device, compile: bool) -> nn.Module:
        self.runner = torch.compile(model) if compile else model
        return self.runner

    def build_optimizer(self, model: nn.Module, train_config, device_type: str
                        ) -> torch.optim.Optimizer:
        c = train_config
        extra = {"fused": True} if device_type == "cuda" else {}
        return torch.optim.AdamW(adamw_groups(model, c.weight_decay), lr=c.lr,
                                 betas=(c.beta1, c.beta2), eps=1e-8, **extra)

    def no_sync(self, runner: nn.Module) -> ContextManager:
        return contextlib.nullcontext()

    def clip_grad_norm(self, model: nn.Module, max_norm: float) -> float:
        params = [p for p in model.parameters() if p.grad is not None]
        if max_norm > 0:
            return float(torch.nn.utils.clip_grad_norm_(params, max_norm))
        return float(torch.sqrt(sum((p.grad.double().pow(2).sum() for p in params),
                                    torch.zeros((), dtype=torch.float64))))

    def model_state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        return model.state_dict()

    def load_model_state_dict(self, model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
        """Load full weights (a checkpoint's) into the wrapped model (beyond CONTRACTS §3:
        sharded strategies cannot load through the raw module)."""
        model.load_weights(tensors)

    def optimizer_state_dict(self, optimizer: torch.optim.Optimizer) -> dict:
        return optimizer.state_dict()

    def load_optimizer_state_dict(self, optimizer: torch.optim.Optimizer, state: dict) -> None:
        optimizer.load_state_dict(state)


class DDPStrategy(Strategy):
    """torch's DistributedDataParallel (gradients all-reduced in buckets during backward)."""

    name = "ddp"

    def wrap(self, model, device, compile):
        from torch.nn.parallel import DistributedDataParallel

        inner = torch.compile(model) if compile else model
        ids = [device.index] if torch.device(device).type == "cuda" else None
        self.runner = DistributedDataParallel(inner, device_ids=ids)
        return self.runner

    def no_sync(self, runner):
        return runner.no_sync()


def register_strategy(name: str, cls: type[Strategy]) -> None:
    """Make `cls` available to `get_strategy(name)` and `TrainConfig.strategy`."""
    _REGISTRY[name] = cls


def strategy_names() -> list[str]:
    """Registered names, sorted (plus "auto")."""
    from minillm.distributed import strategies  # noqa: F401  (registers the sharded ones)

    return sorted(_REGISTRY)


def get_strategy(name: str, dist: DistInfo) -> Strategy:
    """The strategy called `name` ("auto" = "ddp" under several processes, else "single")."""
    names = strategy_names()
    if name == "auto":
        name = "ddp" if dist.enabled else "single"
    if name not in _REGISTRY:
        raise ValueError(f"strategy={name!r} is not registered; choose 'auto' or one of {names}")
    if name != "single" and not dist.enabled:
        raise ValueError(f"strategy={name!r} needs several processes: launch with torchrun "
                         "--nproc_per_node=N (or use strategy='single')")
    return _REGISTRY[name](dist)


register_strategy("single", Strategy)
register_strategy("ddp", DDPStrategy)
