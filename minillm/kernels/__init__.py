"""Attention backends behind one registry (the signature in CONTRACTS.md).

    attention(q, k, v, *, mask=None, causal, scale=None, dropout_p=0.0) -> (B, H, Tq, D)

q: (B, H, Tq, D); k, v: (B, Hkv, Tk, D), H % Hkv == 0. causal=True: query i sees keys
j ≤ i + Tk - Tq (bottom-right aligned, as after a KV cache). mask: None, boolean broadcastable to
(B, H, Tq, Tk) (True = may attend) or a float bias (-inf = may not). Built in: "naive", "sdpa",
"flash_torch", "flash_triton" (registered even without Triton; it raises a clear error then).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from minillm.kernels.flash_torch import flash_torch_attention
from minillm.kernels.flash_triton import flash_triton_attention
from minillm.kernels.naive import naive_attention, naive_attention_with_weights, sdpa_attention

__all__ = ["AttentionFn", "attention_backends", "get_attention", "naive_attention_with_weights",
           "register_attention"]

AttentionFn = Callable[..., torch.Tensor]
_BACKENDS: dict[str, AttentionFn] = {}


def register_attention(name: str, fn: AttentionFn, *, overwrite: bool = False) -> None:
    """Register `fn` under `name` (ValueError if taken, unless overwrite=True)."""
    if name in _BACKENDS and not overwrite:
        raise ValueError(f"attention backend {name!r} is already registered; pass overwrite=True")
    _BACKENDS[name] = fn


def get_attention(name: str) -> AttentionFn:
    """The backend registered as `name`; ValueError listing the registered names."""
    if name not in _BACKENDS:
        raise ValueError(f"attention backend {name!r} is not registered; choose one of "
                         f"{attention_backends()}")
    return _BACKENDS[name]


def attention_backends() -> list[str]:
    """Sorted names of the registered backends."""
    return sorted(_BACKENDS)


register_attention("naive", naive_attention)
register_attention("sdpa", sdpa_attention)
register_attention("flash_torch", flash_torch_attention)
register_attention("flash_triton", flash_triton_attention)
