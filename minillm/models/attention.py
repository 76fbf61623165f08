"""Causal self-attention: scaled dot-product attention over several heads.

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_head) + M) V      (Vaswani et al. 2017, 1706.03762)

M is 0 where a query may look and -inf where it may not; for a decoder (GPT) a query at
position i sees keys 0..i. The kernel is looked up by name in `minillm.kernels`
(`GPTConfig.attn_impl`): "naive" writes the formula out, "sdpa" calls torch's fused kernel,
and later backends register themselves there. `weights(x, ...)` recomputes a layer's attention
weights with the written-out softmax, for heatmaps (`GPT.attention_weights` calls it for every
layer); nothing is kept on the module.

Grouped-query attention (Ainslie et al. 2023, 2305.13245) is supported through `n_kv_head`:
each of the n_kv_head key/value heads serves n_head / n_kv_head query heads.

RoPE's (cos, sin) tables are computed once per forward by the model and passed to every layer
(`rope=`); the layer rotates its queries and keys with them (`apply_rope`).

Decoding passes a `KVCache` (minillm.models.kv_cache): the new keys/values are appended to the
cached ones (in the cache's layer `layer_idx`, which this module owns) and the T new queries
attend over all T_past + T keys. The queries are then the
*last* T positions, so the causal mask is aligned at the bottom-right (`causal_mask(T, T_k)`).
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from minillm.kernels import causal_mask, get_attention, naive_attention_with_weights
from minillm.models.config import GPTConfig
from minillm.models.kv_cache import KVCache
from minillm.models.positions import alibi_bias, apply_rope

# the teaching name used since chapter 03: (out, weights) = naive_attention(q, k, v, mask)
naive_attention = naive_attention_with_weights

__all__ = ["CausalSelfAttention", "build_attention_mask", "causal_mask", "naive_attention",
           "padding_causal_mask"]


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
        key_mask: (B, t_k) 1 for real tokens, 0 for (left) padding; or a boolean
            (B, 1, t_q, t_k) mask used as given (True = may attend; it must already hold
            causality), e.g. the block-diagonal mask of packed documents.
        prefix_length: for attn_mask="prefix", how many leading tokens every query sees (an int
            or one per row); after the prefix, attention is causal.
        q_positions, k_positions: token positions, for ALiBi's distances.
    """
    kind = config.attn_mask
    mask = None
    if key_mask is not None and key_mask.ndim == 4:  # a full mask, used as given
        if key_mask.dtype != torch.bool or key_mask.shape[-2:] != (t_q, t_k):
            raise ValueError(f"a 4-D attention_mask must be boolean (True = may attend) of shape "
                             f"(B, 1, {t_q}, {t_k}); got {key_mask.dtype} "
                             f"{tuple(key_mask.shape)}")
        mask = key_mask
    elif kind == "causal":
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


class CausalSelfAttention(nn.Module):
    """Multi-head (or grouped-query) causal self-attention with one fused QKV projection."""

    def __init__(self, config: GPTConfig, layer_idx: int = 0):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx  # which layer of a KV cache holds this module's keys/values
        self.n_head, self.n_kv_head, self.head_dim = config.n_head, config.n_kv_head, config.head_dim
        qkv_out = (config.n_head + 2 * config.n_kv_head) * config.head_dim
        self.qkv = nn.Linear(config.d_model, qkv_out, bias=config.bias)
        self.proj = nn.Linear(config.d_model, config.d_model, bias=config.bias)
        self.proj.residual_scale = True  # GPT-2: init std / sqrt(2 * n_layer)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.causal = config.attn_mask == "causal"
        self.attend = get_attention(config.attn_impl)  # (q, k, v, *, mask, causal, ...) -> out

    def forward(self, x: torch.Tensor, *, mask: torch.Tensor | None = None,
                cache: KVCache | None = None,
                rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Args:
            x: (B, T, C) the block's (normalised) input.
            mask: from `build_attention_mask` (None: causal, or nothing hidden for a
                bidirectional config).
            cache: keys/values of earlier tokens, updated in place in its layer `layer_idx`.
            rope: RoPE's (cos, sin) tables for x's positions, computed once per forward by the
                model (`RotaryEmbedding.tables`); required when positions="rope".

        Returns:
            (B, T, C).
        """
        q, k, v = self._heads(x, rope)
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v)  # (B, Hkv, T_past + T, D)
        dropout_p = self.config.dropout if self.training else 0.0
        causal = mask is None and self.causal
        out = self.attend(q, k, v, mask=mask, causal=causal, dropout_p=dropout_p)
        out = rearrange(out, "b h t d -> b t (h d)")                          # (B, T, C)
        return self.resid_dropout(self.proj(out))

    def weights(self, x: torch.Tensor, *, mask: torch.Tensor | None = None,
                rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """The attention weights (B, H, T, T) this layer gives x's tokens, by the written-out
        softmax (`naive_attention_with_weights`), for heatmaps; arguments as `forward` (no
        cache). Nothing is stored."""
        q, k, v = self._heads(x, rope)
        return naive_attention_with_weights(q, k, v, mask, causal=mask is None and self.causal)[1]

    def _heads(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries (B, H, T, D), keys and values (B, Hkv, T, D) of x, RoPE applied."""
        q, k, v = self.qkv(x).split(
            [self.n_head * self.head_dim, self.n_kv_head * self.head_dim,
             self.n_kv_head * self.head_dim], dim=-1)
        q = rearrange(q, "b t (h d) -> b h t d", h=self.n_head)
        k = rearrange(k, "b t (h d) -> b h t d", h=self.n_kv_head)
        v = rearrange(v, "b t (h d) -> b h t d", h=self.n_kv_head)
        if self.config.positions == "rope":  # rotate before caching: the cache holds rotated keys
            if rope is None:
                raise ValueError("positions='rope' needs the rotary tables: call the layer with "
                                 "rope=RotaryEmbedding(...).tables(positions) (GPT.forward does)")
            cos, sin = rope
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        return q, k, v
