"""Batches of random contiguous windows from a 1-D token tensor.

Every draw goes through an explicit `torch.Generator`, so the same seed gives the same
batches, and saving the generator's state is enough to resume the data stream exactly.
For data parallelism each rank draws the *global* batch and keeps its own slice, so N ranks
with batch B see exactly the windows one process with batch N*B sees.
"""

from __future__ import annotations

import torch

__all__ = ["sample_batch", "check_tokens"]


def check_tokens(data: torch.Tensor, context_length: int, what: str = "data",
                 vocab_size: int | None = None) -> None:
    """Raise a clear error if `data` cannot supply one window of `context_length` + 1 tokens
    (or, given `vocab_size`, holds ids the model has no embedding for)."""
    if data.ndim != 1:
        raise ValueError(f"{what} must be a 1-D tensor of token ids, got shape {tuple(data.shape)}")
    if data.numel() == 0:
        raise ValueError(f"{what} is empty: there is no text to train or evaluate on")
    if vocab_size is not None:  # the model will embed these ids
        if data.dtype != torch.int64:
            raise ValueError(f"{what} has dtype {data.dtype}; token ids must be int64: "
                             "use tokens.long()")
        low, high = int(data.min()), int(data.max())
        if low < 0 or high >= vocab_size:
            raise ValueError(f"{what} holds ids in [{low}, {high}] but the model's vocab_size is "
                             f"{vocab_size}: encode with the model's tokenizer or enlarge "
                             "vocab_size")
    if data.numel() < context_length + 1:
        raise ValueError(
            f"{what} has {data.numel()} tokens, fewer than context_length + 1 = "
            f"{context_length + 1}; use more text or a shorter context_length"
        )


def sample_batch(
    data: torch.Tensor,
    batch_size: int,
    context_length: int,
    generator: torch.Generator,
    rank: int = 0,
    world_size: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw `batch_size * world_size` windows; return this rank's (inputs, targets).

    Returns:
        x, y: (batch_size, context_length) int64; y is x shifted left by one token.
    """
    check_tokens(data, context_length)
    if not 0 <= rank < world_size:
        raise ValueError(f"rank={rank} must be in [0, world_size={world_size})")
    starts = torch.randint(
        0, data.numel() - context_length, (batch_size * world_size,), generator=generator
    )[rank * batch_size : (rank + 1) * batch_size]
    offsets = torch.arange(context_length + 1)
    windows = data[starts[:, None] + offsets]  # (B, T+1)
    return windows[:, :-1].contiguous(), windows[:, 1:].contiguous()
