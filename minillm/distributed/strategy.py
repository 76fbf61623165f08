"""How the Trainer runs a model on one process or many: the `Strategy`.

A strategy owns everything that changes when the model is split over processes:

    runner = strategy.wrap(model, device, compile)     what forward/backward go through
    opt    = strategy.build_optimizer(model, train_config, device_type)
    with strategy.no_sync(runner): ...                 accumulation steps skip the all-reduce
    norm   = strategy.clip_grad_norm(model, max_norm)  the *global* norm, before clipping
    strategy.model_state_dict(model)                   full weights, for a checkpoint
    strategy.optimizer_state_dict(opt) / load_optimizer_state_dict(opt, state)

Built in:
- "single": one process; `torch.compile` if asked, nothing else.
- "ddp": torch's DistributedDataParallel (Li et al. 2020, arXiv:2006.15704): every rank keeps
  a full replica and the gradients are averaged by an all-reduce during backward, so N ranks
  with batch B follow one process with batch N*B.

`minillm.distributed.strategies` registers the sharded ones (the package imports it): "own_ddp"
(the written-out bucketed DDP), "zero1", "zero2", "zero3" and "fsdp" (torch's FSDP2).

`TrainConfig.strategy="auto"` picks "ddp" when WORLD_SIZE > 1, else "single". New strategies
subclass `Strategy` and `register_strategy` themselves.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from contextlib import AbstractContextManager as ContextManager
from typing import Any

import torch
from torch import nn

from minillm.distributed.env import DistInfo
from minillm.optim import configure_optimizer

__all__ = ["DDPStrategy", "Strategy", "get_strategy", "register_strategy", "strategy_names"]


class Strategy:
    """One process (the base every strategy extends): see the module docstring.

    Args:
        dist: this process's `DistInfo`.
    """

    name = "single"
    needs_process_group = False  # True: refuses to run in one process (the sharded ones)

    def __init__(self, dist: DistInfo):
        self.dist = dist

    def wrap(self, model: nn.Module, device: torch.device, compile: bool) -> nn.Module:
        """The module forward and backward go through (the model itself, or compiled).

        Args:
            model: the unwrapped model, already on `device`.
            device: where this rank runs.
            compile: `torch.compile` it (the saved weights stay uncompiled).

        Returns:
            The runner.
        """
        return torch.compile(model) if compile else model

    def build_optimizer(self, model: nn.Module, train_config: Any,
                        device_type: str) -> torch.optim.Optimizer:
        """AdamW with decay on matrices only (`minillm.optim.configure_optimizer`).

        Args:
            model: the unwrapped model.
            train_config: a `TrainConfig` (lr, weight_decay, beta1, beta2).
            device_type: "cuda" picks the fused kernel.

        Returns:
            The optimizer.
        """
        c = train_config
        return configure_optimizer(model, c.lr, c.weight_decay, (c.beta1, c.beta2),
                                   device_type=device_type)

    def no_sync(self, runner: nn.Module) -> ContextManager:
        """A context in which backward does not synchronise gradients (accumulation steps)."""
        return contextlib.nullcontext()

    def clip_grad_norm(self, model: nn.Module, max_norm: float) -> float:
        """Clip the gradients to a global norm of `max_norm` (0: only measure it).

        Returns:
            The norm before clipping.
        """
        if max_norm > 0:
            return torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm).item()
        return math.sqrt(sum(float(p.grad.pow(2).sum()) for p in model.parameters()
                             if p.grad is not None))

    def model_state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The full weights to save (tied aliases left out, as `weights_state_dict` does)."""
        if hasattr(model, "weights_state_dict"):
            return model.weights_state_dict()
        return model.state_dict()

    def load_model_state_dict(self, model: nn.Module, tensors: dict[str, torch.Tensor],
                              source: Any = None, fix: str | None = None) -> None:
        """Load full weights (a checkpoint's) into the model; sharded strategies override it,
        because their parameters live in shards the raw module does not hold.

        Args:
            model: the unwrapped model.
            tensors: what `model_state_dict` saved.
            source, fix: named in the model's errors (`LanguageModel.load_weights`).
        """
        model.load_weights(tensors, source=source, fix=fix)

    def optimizer_state_dict(self, optimizer: torch.optim.Optimizer) -> dict:
        """The optimizer state to save."""
        return optimizer.state_dict()

    def load_optimizer_state_dict(self, optimizer: torch.optim.Optimizer, state: dict) -> None:
        """Restore what `optimizer_state_dict` saved."""
        optimizer.load_state_dict(state)


class DDPStrategy(Strategy):
    """torch's DistributedDataParallel over the process group `init_from_env` started."""

    name = "ddp"

    def wrap(self, model: nn.Module, device: torch.device, compile: bool) -> nn.Module:
        """The model (compiled if asked) inside `DistributedDataParallel`."""
        from torch.nn.parallel import DistributedDataParallel as DDP

        runner = super().wrap(model, device, compile)
        if not self.dist.enabled:
            return runner
        ids = [device.index] if device.type == "cuda" else None
        return DDP(runner, device_ids=ids)

    def no_sync(self, runner: nn.Module) -> ContextManager:
        """DDP's own `no_sync` (a plain context in one process)."""
        return runner.no_sync() if hasattr(runner, "no_sync") else contextlib.nullcontext()


_STRATEGIES: dict[str, Callable[[DistInfo], Strategy]] = {"single": Strategy, "ddp": DDPStrategy}


def register_strategy(name: str, cls: Callable[[DistInfo], Strategy], *,
                      overwrite: bool = False) -> None:
    """Make `cls` available as `TrainConfig(strategy=name)`.

    Args:
        name: the strategy's name.
        cls: a `Strategy` subclass (called with the `DistInfo`).
        overwrite: replace an existing strategy of that name.

    Raises:
        ValueError: the name is taken ("auto" is reserved).
    """
    if name == "auto" or (name in _STRATEGIES and not overwrite):
        raise ValueError(f"strategy {name!r} is already registered (or reserved); pass "
                         "overwrite=True to replace it")
    _STRATEGIES[name] = cls


def strategy_names() -> list[str]:
    """The registered strategies' names, sorted ("auto" is also accepted by `get_strategy`)."""
    return sorted(_STRATEGIES)


def get_strategy(name: str, dist: DistInfo) -> Strategy:
    """The strategy `name` for this process; "auto" is "ddp" with several processes, else
    "single".

    Raises:
        ValueError: no strategy has that name (the registered ones are listed).
    """
    names = strategy_names()
    if name == "auto":
        name = "ddp" if dist.enabled else "single"
    if name not in _STRATEGIES:
        raise ValueError(f"strategy={name!r} is not registered; choose 'auto' or one of "
                         f"{names}")
    cls = _STRATEGIES[name]
    if getattr(cls, "needs_process_group", False) and not dist.enabled:
        raise ValueError(f"strategy={name!r} shards the model over processes: launch with "
                         "torchrun --nproc_per_node=N (or use strategy='single')")
    return cls(dist)
