"""The fixed-size decoding state of a recurrent LM, and what decoding state costs per model.

A Transformer decodes with a KV cache that grows by one key and one value per token and layer
(`minillm.models.kv_cache`). A recurrent model (linear attention, RWKV, Mamba) folds the whole
prefix into a state of fixed size instead:

    s_t = f(s_{t-1}, x_t)        y_t = g(s_t, x_t)

so memory per sequence is constant in the context length. `RecurrentState` holds that state:
one dict of named tensors per layer, every tensor batch-first, replaced (not mutated) by the
model's forward, so a `clone` is a cheap snapshot. Decoding (`minillm.generation.state`) needs
four operations besides the forward: `clone` (try candidates, roll back), `reorder` (beam
search), `blend` (left padding: rows whose token is padding keep their old state) and `nbytes`.

`decoding_state_nbytes` answers "how many bytes does decoding hold after T tokens" for the GPT
(its KV cache, `kv_cache_nbytes`) and for every recurrent model (constant), in one convention.
"""

from __future__ import annotations

from typing import Any

import torch

from minillm.models.kv_cache import kv_cache_nbytes

__all__ = ["RecurrentState", "decoding_state_nbytes"]


class RecurrentState:
    """Per-layer named tensors, batch first: `layers[l][name]` is (B, ...).

    Args:
        layers: one dict per layer (the model's `init_state` builds them).
    """

    def __init__(self, layers: list[dict[str, torch.Tensor]]):
        self.layers = layers

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, layer: int) -> dict[str, torch.Tensor]:
        return self.layers[layer]

    @property
    def batch_size(self) -> int:
        return next(iter(self.layers[0].values())).size(0)

    @property
    def nbytes(self) -> int:
        """Bytes the state's floating-point tensors hold (the same after 1 token as after
        10,000); an integer position counter is bookkeeping and not counted."""
        return sum(t.numel() * t.element_size() for layer in self.layers for t in layer.values()
                   if t.is_floating_point())

    def numbers(self) -> int:
        """How many floating-point numbers the state holds per sequence."""
        return sum(t[0].numel() for layer in self.layers for t in layer.values()
                   if t.is_floating_point())

    def clone(self) -> RecurrentState:
        """An independent copy (a snapshot to roll back to)."""
        return RecurrentState([{k: v.clone() for k, v in layer.items()} for layer in self.layers])

    def reorder(self, index: torch.Tensor) -> None:
        """Keep rows `index` (B',) in that order (beam search's parents)."""
        self.layers = [{k: v[index] for k, v in layer.items()} for layer in self.layers]

    def blend(self, keep_new: torch.Tensor, old: RecurrentState) -> None:
        """Rows where `keep_new` (B,) is False take their tensors back from `old`: a padding
        token must leave its row's state as it was."""
        for layer, before in zip(self.layers, old.layers, strict=True):
            for k, v in layer.items():
                m = keep_new.view(-1, *([1] * (v.dim() - 1))).to(v.device)
                layer[k] = torch.where(m, v, before[k])


def decoding_state_nbytes(config: Any, seq_len: int, batch_size: int = 1,
                          bytes_per_number: int = 2) -> int:
    """Bytes decoding holds after `seq_len` tokens: a GPT's KV cache, or a recurrent model's
    state (`config.state_numbers()` per sequence, whatever `seq_len`).

    Args:
        config: a `GPTConfig` (anything with `n_kv_head` and `head_dim`) or a recurrent config
            (`LinearAttentionConfig`, `RWKVConfig`, `MambaConfig`).
        seq_len: tokens decoded so far (prompt included).
        batch_size: sequences decoded together.
        bytes_per_number: 2 for fp16/bf16 (`kv_cache_nbytes`' default), 4 for fp32.

    Returns:
        The bytes, in the convention of `kv_cache_nbytes`.
    """
    if seq_len < 0 or batch_size <= 0:
        raise ValueError(f"seq_len={seq_len} must be >= 0 and batch_size={batch_size} > 0")
    if hasattr(config, "state_numbers"):
        return config.state_numbers() * batch_size * bytes_per_number
    if hasattr(config, "n_kv_head") and hasattr(config, "head_dim"):
        return kv_cache_nbytes(config.n_layer, config.n_kv_head, config.head_dim, seq_len,
                               batch_size, bytes_per_number)
    raise ValueError(f"{type(config).__name__} is neither a GPT config (n_kv_head, head_dim) nor "
                     "a recurrent one (state_numbers); pass model.config of a minillm model")
