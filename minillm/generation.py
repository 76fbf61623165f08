"""Autoregressive decoding: repeatedly run the model and append one chosen token.

    p(x_{t+1} | x_{<=t}) = softmax(logits_t / temperature)    (restricted to the top_k tokens)

This first version re-runs the model over the (cropped) context at every step; the decoding
chapter adds a KV cache and more strategies behind the same call.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["generate", "sample_next"]


def sample_next(
    logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Choose next tokens from (B, V) logits: greedy when temperature == 0, else sample from
    the temperature-scaled softmax over the top_k tokens. Returns (B, 1) ids."""
    if temperature < 0:
        raise ValueError(f"temperature={temperature} must be >= 0 (0 means greedy)")
    if top_k is not None and top_k <= 0:
        raise ValueError(f"top_k={top_k} must be a positive integer or None")
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs.cpu(), 1, generator=generator).to(logits.device)


@torch.no_grad()
def generate(
    model: nn.Module, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
    top_k: int | None = None, generator: torch.Generator | None = None,
    eos_token_id: int | None = None,
) -> torch.Tensor:
    """Extend `idx` (B, T) by up to `max_new_tokens` tokens; returns (B, T + new).

    The context fed to the model is cropped to its last `context_length` tokens. With
    `eos_token_id`, generation stops once every row has produced it (rows that finished
    early are padded with it).
    """
    if idx.ndim != 2 or idx.size(1) == 0:
        raise ValueError(f"idx must be (batch, length>=1) token ids, got shape {tuple(idx.shape)}; "
                         "an empty prompt has nothing to condition on: start from a BOS/EOT token")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens={max_new_tokens} must be >= 0")
    was_training = model.training
    model.eval()
    ctx = model.config.context_length
    device = next(model.parameters()).device
    idx = idx.to(device)
    done = torch.zeros(idx.size(0), dtype=torch.bool, device=device)
    for _ in range(max_new_tokens):
        logits, _ = model(idx[:, -ctx:])
        nxt = sample_next(logits[:, -1, :], temperature, top_k, generator)
        if eos_token_id is not None:
            nxt = nxt.masked_fill(done[:, None], eos_token_id)
            done |= nxt[:, 0] == eos_token_id
        idx = torch.cat([idx, nxt], dim=1)
        if eos_token_id is not None and bool(done.all()):
            break
    model.train(was_training)
    return idx
