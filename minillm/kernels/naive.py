"""Attention written out, the formula in plain view (the teaching backend, "naive").

    scores = q k^T * scale                 (B, H, Tq, Tk)
    scores = scores masked (-inf) or + bias
    weights = softmax(scores, dim=-1)
    out = dropout(weights) v               (B, H, Tq, D)

It materialises the full (Tq, Tk) score matrix, which is what FlashAttention (chapter 09)
avoids; in return it can hand the weights back (`naive_attention_with_weights`) for the
attention heatmaps of chapter 03.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from minillm.kernels.registry import (
    causal_mask,
    check_attention_inputs,
    expand_kv,
    register_attention,
)

__all__ = ["naive_attention", "naive_attention_with_weights"]


def naive_attention_with_weights(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None, *,
    causal: bool = False, scale: float | None = None, dropout_p: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q k^T * scale, masked) v, written out.

    Args:
        q: (B, H, Tq, D) queries; k, v: (B, Hkv, Tk, D) keys and values (H % Hkv == 0).
        mask: None, boolean (True = may attend) or a float bias added to the scores.
        causal: hide keys j > i + (Tk - Tq) (only when `mask` is None).
        scale: multiplies the scores; default 1 / sqrt(D).
        dropout_p: dropout on the weights (the caller passes 0 in eval mode).

    Returns:
        out (B, H, Tq, D) and the attention weights (B, H, Tq, Tk), before dropout.
    """
    check_attention_inputs(q, k, v)
    k, v = expand_kv(k, v, q.size(1))
    if causal and mask is None:
        mask = causal_mask(q.size(2), k.size(2), q.device)
    scores = q @ k.transpose(-2, -1)                                   # (B, H, Tq, Tk)
    scores = scores / math.sqrt(q.size(-1)) if scale is None else scores * scale
    if mask is not None and mask.dtype == torch.bool:
        scores = scores.masked_fill(~mask, float("-inf"))
    elif mask is not None:
        scores = scores + mask.to(scores.dtype)  # ALiBi's float32 bias in a bf16/fp16 model
    weights = scores.softmax(dim=-1)
    dropped = F.dropout(weights, p=dropout_p, training=True) if dropout_p > 0 else weights
    return dropped @ v, weights


def naive_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, mask: torch.Tensor | None = None,
    causal: bool, scale: float | None = None, dropout_p: float = 0.0,
) -> torch.Tensor:
    """The "naive" backend: `naive_attention_with_weights` without the weights.

    Returns:
        (B, H, Tq, D).
    """
    return naive_attention_with_weights(q, k, v, mask, causal=causal, scale=scale,
                                        dropout_p=dropout_p)[0]


register_attention("naive", naive_attention)
