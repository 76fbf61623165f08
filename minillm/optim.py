"""AdamW with decoupled weight decay on matrices only, and the warm-up + cosine schedule.

AdamW (Loshchilov & Hutter 2019, 1711.05101) decays weights directly, outside the adaptive
step. As in GPT-2/3 practice, only tensors with >= 2 dimensions (matmul weights and
embeddings) are decayed; biases and norm gains are not.

Learning rate at step s (0-based), warm-up W, total S, peak lr, floor lr_min:
    s < W:        lr * (s + 1) / W
    W <= s <= S:  lr_min + (lr - lr_min) * (1 + cos(pi * (s - W) / (S - W))) / 2
    s > S:        lr_min

This module is pure torch and sits at the bottom of the package (beside `utils`), because
the distributed strategies build (sharded) optimizers from the same parameter groups and sit
below `training`; `minillm.training` re-exports it.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["configure_optimizer", "lr_at", "param_groups"]


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: >= 2-D tensors with `weight_decay`, the rest with none.

    Args:
        model: the (unwrapped) model; frozen parameters are left out.
        weight_decay: the decay of the first group.

    Returns:
        Two param-group dicts for a torch optimizer.
    """
    decay, no_decay = [], []
    for p in model.parameters():  # parameters() yields a tied weight once
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def configure_optimizer(
    model: nn.Module, lr: float, weight_decay: float = 0.1, betas: tuple[float, float] = (0.9, 0.95),
    eps: float = 1e-8, device_type: str = "cpu",
) -> torch.optim.AdamW:
    """AdamW over `param_groups`; the fused CUDA kernel when on a GPU.

    Args:
        model: the (unwrapped) model.
        lr: the learning rate (the trainer sets it every step from `lr_at`).
        weight_decay, betas, eps: AdamW's.
        device_type: "cuda" picks the fused kernel.

    Returns:
        The optimizer.
    """
    if lr <= 0:
        raise ValueError(f"lr={lr} must be positive")
    if weight_decay < 0:
        raise ValueError(f"weight_decay={weight_decay} must be >= 0")
    extra = {"fused": True} if device_type == "cuda" else {}
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=betas, eps=eps, **extra)


def lr_at(step: int, lr: float, warmup_steps: int, max_steps: int, min_lr: float = 0.0) -> float:
    """Linear warm-up then cosine decay to `min_lr` (see module docstring).

    Args:
        step: 0-based optimizer step.
        lr: the peak rate; warmup_steps, max_steps: the schedule's lengths; min_lr: the floor.

    Returns:
        The learning rate at `step`.
    """
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if step >= max_steps or max_steps <= warmup_steps:
        return min_lr
    progress = (step - warmup_steps) / (max_steps - warmup_steps)
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
