"""Attention written out, and torch's fused kernel, behind the minillm.kernels signature.

    Attention(Q, K, V) = softmax(scale · Q Kᵀ + M) V      (Vaswani et al. 2017, arXiv:1706.03762)

M is 0 where a query may look and -inf where it may not. Causal masks are bottom-right aligned
(query i sees key j ≤ i + T_k - T_q, as after a KV cache); grouped-query kv heads are repeated.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["naive_attention", "naive_attention_with_weights", "sdpa_attention"]


def _causal(t_q: int, t_k: int, device) -> torch.Tensor:
    return torch.ones(t_q, t_k, dtype=torch.bool, device=device).tril(t_k - t_q)


def naive_attention_with_weights(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *,
                                 mask: torch.Tensor | None = None, causal: bool,
                                 scale: float | None = None, dropout_p: float = 0.0,
                                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """The formula written out. q: (B, H, Tq, D); k, v: (B, Hkv, Tk, D).

    Returns:
        out (B, H, Tq, D) and the attention weights (B, H, Tq, Tk).
    """
    group = q.size(1) // k.size(1)
    if group > 1:
        k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    scale = 1.0 / math.sqrt(q.size(-1)) if scale is None else scale
    scores = (q @ k.transpose(-2, -1)) * scale                 # (B, H, Tq, Tk)
    if causal:
        scores = scores.masked_fill(~_causal(q.size(2), k.size(2), q.device), float("-inf"))
    if mask is not None and mask.dtype == torch.bool:
        scores = scores.masked_fill(~mask, float("-inf"))
    elif mask is not None:
        scores = scores + mask.to(scores.dtype)
    weights = scores.softmax(-1)
    return F.dropout(weights, p=dropout_p, training=dropout_p > 0) @ v, weights


def naive_attention(q, k, v, *, mask=None, causal: bool, scale=None, dropout_p: float = 0.0):
    """The "naive" backend: `naive_attention_with_weights` without the weights."""
    return naive_attention_with_weights(q, k, v, mask=mask, causal=causal, scale=scale,
                                        dropout_p=dropout_p)[0]


def sdpa_attention(q, k, v, *, mask=None, causal: bool, scale=None, dropout_p: float = 0.0):
    """The "sdpa" backend: torch.nn.functional.scaled_dot_product_attention."""
    t_q, t_k = q.size(2), k.size(2)
    if causal and t_q != t_k:  # is_causal is top-left aligned; the cache needs bottom-right
        mask, causal = _causal(t_q, t_k, q.device), False
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p,
                                          is_causal=causal and t_q > 1, scale=scale,
                                          enable_gqa=q.size(1) != k.size(1))
