"""Measuring a language model: mean cross-entropy over held-out tokens, and bits per byte.

One scorer: `lm_nll_bits` is the only code that walks a held-out sequence in windows. It scores
every token once; windows of the model's context advance by a stride, and each window scores
only the tokens the previous one did not, so after the first window every prediction sees at
least context - stride tokens.

- `text_bits_per_byte` is the course's number: bits per UTF-8 byte of a text under any model of
  the course, n-gram or neural (-log2 P(text) / bytes, tokenizer-independent), with the text
  prefixed by <|endoftext|> and a stride of half the context. The lineage table, `minillm
  train --final-eval` and every chapter's "whole validation split" number are this function.
- `evaluate_loss` is the same walk in nats per token with consecutive windows (stride = the
  context, half the forwards): a cheaper number for sweeps and live runs, labelled as such.
- `estimate_loss` averages the loss of a few random batches, cheap enough to call during
  training: an estimate, not a score.
- `bits_per_byte` converts a mean loss in nats per token to bits per byte.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from minillm.data.batching import check_tokens, sample_batch, scoring_windows
from minillm.tokenizers.byte import ByteTokenizer

__all__ = ["evaluate_loss", "estimate_loss", "bits_per_byte", "lm_nll_bits", "text_bits_per_byte"]


def evaluate_loss(
    model: nn.Module, tokens: torch.Tensor, context_length: int | None = None,
    batch_size: int = 16, max_tokens: int | None = None, stride: int | None = None,
) -> float:
    """Mean negative log-likelihood (nats per token) of `tokens[1:]` given what precedes it:
    `lm_nll_bits` with `tokens[0]` as the start, in windows of `context_length` (default: the
    model's) advancing by `stride` (default: the whole window, i.e. consecutive windows; the
    last window ends at the last token, so no prediction sees less context than that window
    allows except at the start of a window).

    Args:
        model: a language model, `model(x).logits`.
        tokens: 1-D token ids.
        context_length: window length (default: the model's).
        batch_size: windows per forward.
        max_tokens: score only the first `max_tokens` predictions.
        stride: how far each window advances (default: `context_length`).

    Returns:
        Nats per token.
    """
    context_length = context_length or model.config.context_length
    if max_tokens is not None:
        tokens = tokens[: max_tokens + 1]
    check_tokens(tokens, context_length, "evaluation tokens")
    bits = lm_nll_bits(model, tokens[1:], int(tokens[0]), context_length,
                       stride or context_length, batch_size)
    return bits * math.log(2) / (tokens.numel() - 1)


@torch.no_grad()
def estimate_loss(
    model: nn.Module, tokens: torch.Tensor, batches: int, batch_size: int, context_length: int,
    seed: int, rank: int = 0, world_size: int = 1,
) -> float:
    """Mean loss over `batches` random batches drawn with a fresh generator seeded `seed`, so
    the estimate does not disturb (or depend on) the training data stream.

    Args:
        model: a language model, `model(x, y) -> (logits, loss, ...)`.
        tokens: 1-D token ids to draw windows from.
        batches, batch_size, context_length: how many batches of how many windows how long.
        seed: seeds the fresh generator.
        rank, world_size: this process's slice of each global batch.

    Returns:
        Mean loss in nats per token.
    """
    generator = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    losses = []
    for _ in range(batches):
        x, y = sample_batch(tokens, batch_size, context_length, generator, rank, world_size)
        loss = model(x.to(device), y.to(device)).loss
        losses.append(loss.item())
    model.train(was_training)
    return sum(losses) / len(losses)


def bits_per_byte(nats_per_token: float, n_tokens: int, n_bytes: int) -> float:
    """Convert a mean loss in nats per token to bits per byte of the underlying text:
    total nats / ln 2 / bytes. Independent of the tokenizer, so models compare fairly.

    Args:
        nats_per_token: mean loss.
        n_tokens: tokens it was averaged over.
        n_bytes: UTF-8 bytes of the text those tokens encode.

    Returns:
        Bits per byte.
    """
    return nats_per_token * n_tokens / math.log(2) / n_bytes


@torch.no_grad()
def lm_nll_bits(model: nn.Module, token_ids: list[int] | torch.Tensor, bos_id: int,
                context_length: int | None = None, stride: int | None = None,
                batch_size: int = 32) -> float:
    """-log2 P(tokens) under a causal neural LM, every token scored once.

    The sequence is prefixed with `bos_id` so the first token is predicted too. Windows of
    `context_length` advance by `stride` (default: half the window); each scores only the tokens
    that the previous window did not, so every prediction after the first window sees at least
    context_length - stride tokens of context.

    Args:
        model: a causal LM with `config.context_length` and `model(x).logits`.
        token_ids: the tokens to score.
        bos_id: the id put in front, so the first token is predicted too.
        context_length: window length (default: the model's).
        stride: how far each window advances (default: half the window).
        batch_size: windows per forward.

    Returns:
        The total negative log-likelihood in bits.
    """
    T = context_length or model.config.context_length
    S = stride or max(1, T // 2)
    seq = torch.cat([torch.tensor([bos_id]), torch.as_tensor(token_ids, dtype=torch.long)])
    jobs = scoring_windows(seq.numel() - 1, T, S)        # (start, end, first scored offset)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total = 0.0
    groups: dict[int, list] = {}
    for job in jobs:
        groups.setdefault(job[1] - job[0], []).append(job)
    for length, group in groups.items():
        for b in range(0, len(group), batch_size):
            chunk = group[b:b + batch_size]
            x = torch.stack([seq[s:e] for s, e, _ in chunk]).to(device)
            y = torch.stack([seq[s + 1:e + 1] for s, e, _ in chunk]).to(device)
            logits = model(x).logits
            logp = torch.log_softmax(logits.float(), -1).gather(-1, y[..., None])[..., 0]
            keep = torch.arange(length, device=device)[None] >= torch.tensor(
                [k for _, _, k in chunk], device=device)[:, None]
            total -= logp[keep].sum().item()
    model.train(was_training)
    return total / math.log(2)


def text_bits_per_byte(model, text: str, tokenizer=None, **kwargs) -> float:
    """Bits per UTF-8 byte of `text` under any model of the course: -log2 P(text) / bytes.

    An `NGramLM` (anything with `nll_bits(text)`) scores the text with its own tokenizer;
    a neural LM gets `tokenizer.encode(text)` (default `ByteTokenizer()`), prefixed with the
    tokenizer's <|endoftext|> id, and is scored by `lm_nll_bits` (kwargs go there). Whatever the
    tokens, the numerator is the information of the same text and the denominator its bytes.

    Args:
        model: an `NGramLM` or a neural LM of the course.
        text: the text to score (not empty).
        tokenizer: for a neural LM, its tokenizer (default `ByteTokenizer()`).
        **kwargs: passed to `lm_nll_bits` (context_length, stride, batch_size).

    Returns:
        Bits per UTF-8 byte.
    """
    n_bytes = len(text.encode("utf-8"))
    if n_bytes == 0:
        raise ValueError("text is empty: there is nothing to score")
    if hasattr(model, "nll_bits"):
        return model.nll_bits(text) / n_bytes
    if tokenizer is None:
        tokenizer = ByteTokenizer()
    if tokenizer.eot_id is None or tokenizer.eot_id >= model.config.vocab_size:
        raise ValueError("scoring needs a start token: the tokenizer's <|endoftext|> id must be "
                         "inside the model's vocabulary")
    return lm_nll_bits(model, tokenizer.encode(text), tokenizer.eot_id, **kwargs) / n_bytes
