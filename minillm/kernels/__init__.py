"""Attention kernels behind one registry (see `minillm.kernels.registry` for the signature).

    >>> from minillm.kernels import attention_backends, get_attention
    >>> attention_backends()
    ['naive', 'sdpa']
    >>> out = get_attention("sdpa")(q, k, v, causal=True)          # (B, H, T, D)

Built in: "naive" (the formula written out; `naive_attention_with_weights` also returns the
weights) and "sdpa" (torch's fused kernel). Importing this package imports every backend
module, and each registers itself.
"""

from __future__ import annotations

import torch

from minillm.kernels import naive, sdpa  # noqa: F401  (each registers its backend)
from minillm.kernels.naive import naive_attention_with_weights
from minillm.kernels.registry import (
    AttentionFn,
    attention_backends,
    causal_mask,
    expand_kv,
    get_attention,
    register_attention,
)

__all__ = ["AttentionFn", "attention", "attention_backends", "causal_mask", "expand_kv",
           "get_attention", "naive_attention_with_weights", "register_attention"]


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *,
              mask: torch.Tensor | None = None, causal: bool, scale: float | None = None,
              dropout_p: float = 0.0, backend: str = "sdpa") -> torch.Tensor:
    """Attention with the backend named `backend` (arguments as in `minillm.kernels.registry`).

    Returns:
        (B, H, Tq, D).
    """
    return get_attention(backend)(q, k, v, mask=mask, causal=causal, scale=scale,
                                  dropout_p=dropout_p)
