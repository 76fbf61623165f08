"""torch's fused scaled dot-product attention as a backend ("sdpa").

`torch.nn.functional.scaled_dot_product_attention` picks a fused kernel (FlashAttention,
memory-efficient attention, or its C++ math path on the CPU) and never hands the weights
back. Its `is_causal` aligns the mask at the *top-left*, so for new queries after a KV cache
(Tq < Tk, Tq > 1) the bottom-right causal mask is passed explicitly instead; a single query
sees every key and needs no mask at all.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from minillm.kernels.registry import (
    causal_mask,
    check_attention_inputs,
    expand_kv,
    register_attention,
)

__all__ = ["sdpa_attention"]


def sdpa_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, mask: torch.Tensor | None = None,
    causal: bool, scale: float | None = None, dropout_p: float = 0.0,
) -> torch.Tensor:
    """Attention through torch's fused kernel (arguments as in `minillm.kernels`).

    Returns:
        (B, H, Tq, D).
    """
    check_attention_inputs(q, k, v)
    k, v = expand_kv(k, v, q.size(1))
    t_q, t_k = q.size(2), k.size(2)
    is_causal = False
    if causal and mask is None and t_q > 1:
        if t_q == t_k:
            is_causal = True
        else:  # new queries after a cache: bottom-right alignment
            mask = causal_mask(t_q, t_k, q.device)
    extra = {} if scale is None else {"scale": scale}
    return F.scaled_dot_product_attention(q, k, v, mask, dropout_p=dropout_p,
                                          is_causal=is_causal, **extra)


register_attention("sdpa", sdpa_attention)
