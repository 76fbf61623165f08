"""Causal self-attention: scaled dot-product attention over several heads.

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_head) + M) V      (Vaswani et al. 2017, 1706.03762)

M is 0 where a query may look and -inf where it may not; for a decoder (GPT) a query at
position i sees keys 0..i. Two implementations give the same numbers: `naive_attention`
writes the formula out (and can return the weights, for heatmaps); "sdpa" calls
`torch.nn.functional.scaled_dot_product_attention`, which picks a fused kernel.

Grouped-query attention (Ainslie et al. 2023, 2305.13245) is supported through `n_kv_head`:
each of the n_kv_head key/value heads serves n_head / n_kv_head query heads.

Decoding passes a `KVCache` (minillm.models.kv_cache): the new keys/values are appended to the
cached ones and the T new queries attend over all T_past + T keys. The queries are then the
*last* T positions, so the causal mask is aligned at the bottom-right (`causal_mask(T, T_k)`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from minillm.kernels import get_attention
from minillm.models.config import GPTConfig
from minillm.models.kv_cache import KVCache
from minillm.models.positions import RotaryEmbedding, alibi_bias

__all__ = ["CausalSelfAttention", "build_attention_mask", "causal_mask", "naive_attention",
           "padding_causal_mask"]


def causal_mask(t_q: int, t_k: int, device: torch.device | None = None) -> torch.Tensor:
    """Boolean (t_q, t_k) mask, True where query i may attend to key j (j <= i + t_k - t_q)."""
    offset = t_k - t_q
    q = torch.arange(t_q, device=device)[:, None]
    k = torch.arange(t_k, device=device)[None, :]
    return k <= q + offset


def padding_causal_mask(t_q: int, key_mask: torch.Tensor) -> torch.Tensor:
    """(B, 1, t_q, T_k) boolean mask: causal, and blind to keys where `key_mask` (B, T_k) is 0
    (left padding). A query always sees its own key, so a padding query's softmax is never
    over nothing (that would give NaN, which a zero weight cannot cancel in `weights @ v`)."""
    t_k = key_mask.size(1)
    q = torch.arange(t_q, device=key_mask.device)[:, None] + (t_k - t_q)  # query positions
    k = torch.arange(t_k, device=key_mask.device)[None, :]
    mask = (k <= q)[None] & key_mask.bool()[:, None, :]  # (B, t_q, T_k)
    return (mask | (k == q)[None])[:, None]


def build_attention_mask(
    config: GPTConfig, t_q: int, t_k: int, device: torch.device,
    key_mask: torch.Tensor | None = None, prefix_length: int | torch.Tensor | None = None,
    q_positions: torch.Tensor | None = None, k_positions: torch.Tensor | None = None,
) -> torch.Tensor | None:
    """The mask all layers share for one forward, built once.

    Returns None for the plain case (causal: the fused kernel's `is_causal`; bidirectional:
    nothing hidden), a boolean mask broadcastable to (B, H, t_q, t_k) — True where a query
    may look — or, with ALiBi, a float bias with -inf where a query may not look.

    Args:
        key_mask: (B, t_k) 1 for real tokens, 0 for (left) padding.
        prefix_length: for attn_mask="prefix", how many leading tokens every query sees (an int
            or one per row); after the prefix, attention is causal.
        q_positions, k_positions: token positions, for ALiBi's distances.
    """
    kind = config.attn_mask
    mask = None
    if kind == "causal":
        if key_mask is not None:
            mask = padding_causal_mask(t_q, key_mask)                      # (B, 1, Tq, Tk)
        elif config.positions == "alibi":
            mask = causal_mask(t_q, t_k, device)                           # (Tq, Tk)
    elif kind == "bidirectional":
        if key_mask is not None:
            mask = key_mask.bool()[:, None, None, :]                       # (B, 1, 1, Tk)
    else:  # prefix-LM: bidirectional over the prefix, causal after it
        if prefix_length is None:
            raise ValueError("attn_mask='prefix' needs forward(..., prefix_length=N): the number "
                             "of leading tokens (the prompt) that every position may see")
        prefix = torch.as_tensor(prefix_length, device=device).reshape(-1, 1, 1, 1)
        mask = causal_mask(t_q, t_k, device) | (torch.arange(t_k, device=device) < prefix)
        if key_mask is not None:
            mask = mask & key_mask.bool()[:, None, None, :]
    if config.positions != "alibi":
        return mask
    bias = alibi_bias(config.n_head, q_positions, k_positions, symmetric=kind != "causal")
    return bias if mask is None else bias.masked_fill(~mask, float("-inf"))


def naive_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
    dropout_p: float = 0.0, training: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q k^T / sqrt(d) masked) v, written out. q, k, v: (B, H, T, D). `mask` is
    boolean (True = may attend) or a float bias added to the scores (-inf = may not attend).

    Returns:
        out (B, H, T_q, D) and the attention weights (B, H, T_q, T_k).
    """
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # (B, H, Tq, Tk)
    if mask is not None and mask.dtype == torch.bool:
        scores = scores.masked_fill(~mask, float("-inf"))
    elif mask is not None:
        scores = scores + mask.to(scores.dtype)  # ALiBi's float32 bias in a bf16/fp16 model
    weights = scores.softmax(dim=-1)
    out = F.dropout(weights, p=dropout_p, training=training) @ v
    return out, weights


class CausalSelfAttention(nn.Module):
    """Multi-head (or grouped-query) causal self-attention with one fused QKV projection."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.n_head, self.n_kv_head, self.head_dim = config.n_head, config.n_kv_head, config.head_dim
        qkv_out = (config.n_head + 2 * config.n_kv_head) * config.head_dim
        self.qkv = nn.Linear(config.d_model, qkv_out, bias=config.bias)
        self.proj = nn.Linear(config.d_model, config.d_model, bias=config.bias)
        self.proj.residual_scale = True  # GPT-2: init std / sqrt(2 * n_layer)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.last_weights: torch.Tensor | None = None  # filled when record_weights is set
        self.record_weights = False
        self.causal = config.attn_mask == "causal"
        self.rope = RotaryEmbedding(config.head_dim, config.rope_base, config.rope_fraction,
                                    config.rope_scaling, config.rope_scale) \
            if config.positions == "rope" else None

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                cache: KVCache | None = None, layer: int = 0,
                positions: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, T, C). mask: from `build_attention_mask` (None: causal, or nothing hidden for
        a bidirectional config). cache: keys/values of earlier tokens, updated in place
        (`layer` says which of its layers is ours). positions: (T,) or (B, T) positions of
        x's tokens, for RoPE (default 0..T-1 after the cache)."""
        B, T, _ = x.shape
        q, k, v = self.qkv(x).split(
            [self.n_head * self.head_dim, self.n_kv_head * self.head_dim,
             self.n_kv_head * self.head_dim], dim=-1)
        q = q.view(B, T, self.n_head, self.head_dim).transpose(1, 2)     # (B, H, T, D)
        k = k.view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)  # (B, Hkv, T, D)
        v = v.view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        if self.rope is not None:  # rotate before caching: the cache holds rotated keys
            if positions is None:
                past = cache.length if cache is not None else 0
                positions = torch.arange(past, past + T, device=x.device)
            q, k = self.rope(q, k, positions)
        if cache is not None:
            k, v = cache.update(layer, k, v)  # (B, Hkv, T_past + T, D)
        T_k = k.size(2)
        dropout_p = self.config.dropout if self.training else 0.0
        if self.config.attn_impl not in ("naive", "sdpa") and not self.record_weights:
            # a registered backend (minillm.kernels): it groups the kv heads itself and aligns
            # the causal mask bottom-right, so the KV cache needs nothing special
            out = get_attention(self.config.attn_impl)(
                q, k, v, mask=mask, causal=mask is None and self.causal, dropout_p=dropout_p)
            out = out.transpose(1, 2).reshape(B, T, self.n_head * self.head_dim)
            return self.resid_dropout(self.proj(out))
        if self.n_kv_head != self.n_head:
            group = self.n_head // self.n_kv_head
            k = k.repeat_interleave(group, dim=1)  # (B, H, T_k, D)
            v = v.repeat_interleave(group, dim=1)
        if self.config.attn_impl == "naive" or self.record_weights:
            if mask is None and self.causal:
                mask = causal_mask(T, T_k, x.device)
            out, weights = naive_attention(q, k, v, mask, dropout_p, self.training)
            if self.record_weights:
                self.last_weights = weights.detach()
        elif mask is None and self.causal and T > 1 and T != T_k:  # new queries after a cache
            out = F.scaled_dot_product_attention(q, k, v, causal_mask(T, T_k, x.device),
                                                 dropout_p=dropout_p)
        else:  # one query sees every key; T == T_k is the ordinary causal case
            out = F.scaled_dot_product_attention(q, k, v, mask, dropout_p=dropout_p,
                                                 is_causal=mask is None and self.causal and T > 1)
        out = out.transpose(1, 2).reshape(B, T, self.n_head * self.head_dim)  # (B, T, C)
        return self.resid_dropout(self.proj(out))
