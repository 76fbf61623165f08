"""A pre-allocated key/value cache for incremental (autoregressive) decoding.

A decoder's keys and values at position j depend only on tokens <= j, so once computed they
never change. Generating token t+1 then needs only the new token's query, key and value:

    prefill:  K[:, :, 0:T]   = W_k h_{0:T}        one forward over the whole prompt
    step:     K[:, :, T]     = W_k h_T            one token, attends over K[:, :, 0:T+1]

which turns each decoding step from O(T) token-forwards into O(1) (plus the O(T) attention
read). Memory is 2 (K and V) * n_layer * B * n_kv_head * T_max * head_dim numbers; grouped-query
attention (Ainslie et al. 2023, arXiv:2305.13245) shrinks it by n_head / n_kv_head, which is why
the cache stores the n_kv_head heads *before* they are repeated for the query groups.

Notes:
- Buffers are allocated once for `max_length` positions (no `torch.cat` per step, as in
  Hugging Face's `StaticCache`); `update` writes in place and returns views of the filled part.
- The cache stores no positions. Whoever calls the model passes the new tokens' positions
  (`GPT.forward(..., position_ids=...)`); schemes that rotate keys (RoPE) cache rotated keys,
  schemes that bias scores by distance (ALiBi) read key positions as slot index minus the
  row's left padding.
- `reorder` (beam search) and `crop` (speculative decoding rolls back rejected tokens) are the
  only other operations decoding needs.
"""

from __future__ import annotations

import torch

__all__ = ["KVCache", "kv_cache_nbytes"]


def kv_cache_nbytes(n_layer: int, n_kv_head: int, head_dim: int, seq_len: int,
                    batch_size: int = 1, bytes_per_number: int = 2) -> int:
    """Bytes a cache of `seq_len` tokens needs: 2 (K, V) * layers * batch * kv heads * T * d.

    >>> kv_cache_nbytes(n_layer=32, n_kv_head=32, head_dim=128, seq_len=4096) / 2**30  # 7B, fp16
    2.0
    """
    return 2 * n_layer * batch_size * n_kv_head * seq_len * head_dim * bytes_per_number


class KVCache:
    """Keys and values of every layer for a batch of B sequences, up to `max_length` tokens.

    Shapes: keys/values (n_layer, B, n_kv_head, max_length, head_dim); `length` tokens are filled.
    """

    def __init__(self, n_layer: int, batch_size: int, n_kv_head: int, head_dim: int,
                 max_length: int, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32):
        if max_length <= 0 or batch_size <= 0:
            raise ValueError(f"max_length={max_length} and batch_size={batch_size} must be positive")
        shape = (n_layer, batch_size, n_kv_head, max_length, head_dim)
        self.keys = torch.zeros(shape, device=device, dtype=dtype)
        self.values = torch.zeros(shape, device=device, dtype=dtype)
        self.max_length = max_length
        self.length = 0  # tokens stored (the same for every layer once a forward finishes)

    @classmethod
    def for_model(cls, model: torch.nn.Module, batch_size: int, max_length: int | None = None
                  ) -> KVCache:
        """An empty cache sized for `model` (a GPT); `max_length` defaults to its context."""
        c = model.config
        p = next(model.parameters())
        return cls(c.n_layer, batch_size, c.n_kv_head, c.head_dim,
                   max_length or c.context_length, device=p.device, dtype=p.dtype)

    @property
    def batch_size(self) -> int:
        return self.keys.size(1)

    @property
    def nbytes(self) -> int:
        """Memory held by the buffers, in bytes (allocated, whether filled or not)."""
        n_layer, b, h, t, d = self.keys.shape
        return kv_cache_nbytes(n_layer, h, d, t, b, self.keys.element_size())

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the new (B, n_kv_head, T, D) keys/values of `layer` after the `length` cached
        ones; return all of them, (B, n_kv_head, length + T, D). Call `advance(T)` once every
        layer has been updated."""
        end = self.length + k.size(2)
        if end > self.max_length:
            raise ValueError(f"KV cache overflow: {end} tokens but max_length={self.max_length}; "
                             "allocate a larger cache or crop the sequence")
        self.keys[layer, :, :, self.length:end] = k
        self.values[layer, :, :, self.length:end] = v
        return self.keys[layer, :, :, :end], self.values[layer, :, :, :end]

    def advance(self, n: int) -> None:
        """Mark `n` more positions as filled (called by the model after its last layer)."""
        self.length += n

    def crop(self, length: int) -> None:
        """Forget everything after the first `length` tokens (speculative decoding rollback)."""
        if not 0 <= length <= self.length:
            raise ValueError(f"crop length={length} must be in [0, {self.length}]")
        self.length = length

    def reorder(self, index: torch.Tensor) -> None:
        """Keep batch rows `index` (B',) in that order, e.g. the parents of beam-search beams.
        Only the filled part is copied (in place when B' == B)."""
        index = index.to(self.keys.device)
        n = self.length
        if index.numel() == self.batch_size:
            self.keys[:, :, :, :n] = self.keys[:, index, :, :n]
            self.values[:, :, :, :n] = self.values[:, index, :, :n]
            return
        shape = (self.keys.size(0), index.numel(), *self.keys.shape[2:])
        keys, values = self.keys.new_zeros(shape), self.values.new_zeros(shape)
        keys[:, :, :, :n] = self.keys[:, index, :, :n]
        values[:, :, :, :n] = self.values[:, index, :, :n]
        self.keys, self.values = keys, values
