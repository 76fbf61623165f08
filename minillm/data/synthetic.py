"""Synthetic recall tasks that separate attention from fixed-state models (chapter 18).

**Multi-query associative recall** (MQAR; Arora et al. 2023, "Zoology: Measuring and Improving
Recall in Efficient Language Models", arXiv:2312.04927). A sequence lists `n_pairs` key-value
pairs, then asks for the keys again in a random order; at every query the model must name
the value that followed that key:

    k1 v1 k2 v2 ... kP vP | q1 q2 ... qP        target at q_i: the v paired with q_i

Keys come from ids [0, n_keys), values from [n_keys, n_keys + n_values), each key at most once
per sequence. Attention looks the key up; a model with a fixed-size state must have stored all
P pairs in it, so its accuracy falls once P outgrows the state.

**Selective copying** (Gu & Dao 2023, "Mamba", arXiv:2312.00752, Sec. 3.1 and Table 1). `n_data`
tokens from [2, 2 + n_symbols) sit at random positions of `length` noise tokens (id 0); then
`n_data` markers (id 1) ask for them, in order. Where the data sit changes from sequence to
sequence, so a time-invariant (convolutional) model cannot know which positions to keep: it
needs to select by content.

Both return `(inputs, targets)` of shape (B, T) with `targets = -100` where nothing is asked,
the convention of `minillm.models.base.lm_loss`; `recall_accuracy` scores a model's argmax on
the asked positions. Departures from Zoology: queries follow the pairs directly (no filler
between them) and each key is asked exactly once.
"""

from __future__ import annotations

import math

import torch

__all__ = ["fit_synthetic", "mqar_batch", "recall_accuracy", "selective_copying_batch"]

IGNORE = -100  # targets not asked (lm_loss ignores them)


def mqar_batch(batch_size: int, n_pairs: int, n_keys: int = 32, n_values: int = 32,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of multi-query associative recall sequences (module docstring).

    Args:
        batch_size: sequences.
        n_pairs: key-value pairs per sequence (and queries: every key is asked once).
        n_keys, n_values: sizes of the key and value vocabularies (ids [0, n_keys) and
            [n_keys, n_keys + n_values)); the model's vocab_size must be at least their sum.
        generator: a seeded generator (None: torch's global one).

    Returns:
        inputs (B, 3 * n_pairs) and targets (B, 3 * n_pairs): at query position 2P + i the
        value paired with key q_i, -100 at the 2P context positions.
    """
    if n_pairs <= 0 or n_pairs > n_keys:
        raise ValueError(f"n_pairs={n_pairs} must be in [1, n_keys={n_keys}]: every key appears "
                         "at most once per sequence")
    if batch_size <= 0 or n_values <= 0:
        raise ValueError(f"batch_size={batch_size} and n_values={n_values} must be positive")
    keys = torch.rand(batch_size, n_keys, generator=generator).argsort(1)[:, :n_pairs]   # (B, P)
    values = n_keys + torch.randint(0, n_values, (batch_size, n_pairs), generator=generator)
    order = torch.rand(batch_size, n_pairs, generator=generator).argsort(1)           # (B, P)
    queries, answers = keys.gather(1, order), values.gather(1, order)
    context = torch.stack([keys, values], dim=2).reshape(batch_size, 2 * n_pairs)    # k v k v
    inputs = torch.cat([context, queries], dim=1)                                     # (B, 3P)
    targets = torch.full_like(inputs, IGNORE)
    targets[:, 2 * n_pairs:] = answers          # at query q_i, predict its value
    return inputs, targets


def selective_copying_batch(batch_size: int, length: int = 64, n_data: int = 8,
                            n_symbols: int = 8, generator: torch.Generator | None = None
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of selective-copying sequences (module docstring): vocab_size >= 2 + n_symbols.

    Args:
        batch_size: sequences.
        length: noise positions holding the data (the paper: 4096).
        n_data: data tokens to remember, in order (the paper: 16).
        n_symbols: distinct data tokens (the paper: 16).
        generator: a seeded generator.

    Returns:
        inputs (B, length + n_data) and targets of the same shape: at the k-th marker, the
        k-th data token; -100 on the noise positions.
    """
    if not 0 < n_data <= length:
        raise ValueError(f"n_data={n_data} must be in [1, length={length}]")
    if batch_size <= 0 or n_symbols <= 0:
        raise ValueError(f"batch_size={batch_size} and n_symbols={n_symbols} must be positive")
    data = 2 + torch.randint(0, n_symbols, (batch_size, n_data), generator=generator)
    where = torch.rand(batch_size, length, generator=generator).argsort(1)[:, :n_data].sort(1)[0]
    noise = torch.zeros(batch_size, length, dtype=torch.long).scatter(1, where, data)
    inputs = torch.cat([noise, torch.ones(batch_size, n_data, dtype=torch.long)], dim=1)
    targets = torch.full_like(inputs, IGNORE)
    targets[:, length:] = data                          # marker k asks for datum k
    return inputs, targets


def fit_synthetic(model, make_batch, steps: int, lr: float = 3e-3, weight_decay: float = 0.1,
                  warmup: int = 20) -> list[float]:
    """Train `model` on fresh synthetic batches: AdamW, linear warm-up then cosine to lr/10,
    gradients clipped at 1. Every step draws a new batch, so there is no overfitting to measure.

    Args:
        model: a course LM (`model(inputs, targets).loss`).
        make_batch: `step -> (inputs, targets)` (e.g. a seeded `mqar_batch`).
        steps: optimizer steps.
        lr, weight_decay, warmup: the schedule.

    Returns:
        The training loss of every step.
    """
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay,
                            betas=(0.9, 0.95))
    losses = []
    model.train()
    for step in range(steps):
        frac = (step + 1) / warmup if step < warmup else \
            0.1 + 0.45 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))
        for group in opt.param_groups:
            group["lr"] = lr * frac
        inputs, targets = make_batch(step)
        loss = model(inputs, targets).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
    return losses


@torch.no_grad()
def recall_accuracy(model, inputs: torch.Tensor, targets: torch.Tensor) -> float:
    """Share of the asked positions (targets != -100) where the model's argmax is the target."""
    was_training = model.training
    model.eval()
    try:
        logits = model(inputs).logits
    finally:
        model.train(was_training)
    asked = targets != IGNORE
    return (logits.argmax(-1)[asked] == targets[asked]).float().mean().item()
