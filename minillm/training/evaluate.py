"""Measuring a language model: mean cross-entropy over held-out tokens.

`evaluate_loss` scores *every* token of a held-out sequence once, in consecutive windows of the
model's context (the first token of each window is predicted from less context than later
ones, which makes this a slightly pessimistic estimate). `estimate_loss` averages the loss of a
few random batches, cheap enough to call during training.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from minillm.data.batching import check_tokens, sample_batch

__all__ = ["evaluate_loss", "estimate_loss", "bits_per_byte"]


@torch.no_grad()
def evaluate_loss(
    model: nn.Module, tokens: torch.Tensor, context_length: int | None = None,
    batch_size: int = 16, max_tokens: int | None = None,
) -> float:
    """Mean negative log-likelihood (nats per token) of `tokens[1:]` given what precedes it,
    in non-overlapping windows of `context_length` (default: the model's).
    """
    context_length = context_length or model.config.context_length
    if max_tokens is not None:
        tokens = tokens[: max_tokens + 1]
    check_tokens(tokens, context_length, "evaluation tokens")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    T, n = context_length, tokens.numel() - 1
    full = list(range(0, n - T + 1, T))  # starts of complete windows
    batches = [(torch.stack([tokens[s : s + T] for s in full[b : b + batch_size]]),
                torch.stack([tokens[s + 1 : s + T + 1] for s in full[b : b + batch_size]]))
               for b in range(0, len(full), batch_size)]
    rest = len(full) * T
    if rest < n:  # the ragged tail goes alone
        batches.append((tokens[rest:n][None], tokens[rest + 1 : n + 1][None]))
    total, count = 0.0, 0
    for x, y in batches:
        _, loss = model(x.to(device), y.to(device))
        total += loss.item() * y.numel()
        count += y.numel()
    model.train(was_training)
    return total / count


@torch.no_grad()
def estimate_loss(
    model: nn.Module, tokens: torch.Tensor, batches: int, batch_size: int, context_length: int,
    seed: int, rank: int = 0, world_size: int = 1,
) -> float:
    """Mean loss over `batches` random batches drawn with a fresh generator seeded `seed`, so
    the estimate does not disturb (or depend on) the training data stream."""
    generator = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    losses = []
    for _ in range(batches):
        x, y = sample_batch(tokens, batch_size, context_length, generator, rank, world_size)
        _, loss = model(x.to(device), y.to(device))
        losses.append(loss.item())
    model.train(was_training)
    return sum(losses) / len(losses)


def bits_per_byte(nats_per_token: float, n_tokens: int, n_bytes: int) -> float:
    """Convert a mean loss in nats per token to bits per byte of the underlying text:
    total nats / ln 2 / bytes. Independent of the tokenizer, so models compare fairly."""
    return nats_per_token * n_tokens / math.log(2) / n_bytes
