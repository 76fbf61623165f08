"""The attention-backend registry: one signature, many kernels.

Every backend computes scaled dot-product attention (Vaswani et al. 2017, arXiv:1706.03762)

    out = softmax(q k^T * scale + M) v,        scale = 1 / sqrt(D) by default,

with one calling convention, so the model never branches on the kernel:

    fn(q, k, v, *, mask=None, causal: bool, scale: float | None = None, dropout_p: float = 0.0)
    q: (B, H, Tq, D); k, v: (B, Hkv, Tk, D), H % Hkv == 0 (grouped-query attention: the backend
    expands the kv heads itself); returns (B, H, Tq, D).

- `causal=True`: query i sees keys j <= i + (Tk - Tq), aligned at the bottom-right as after a
  KV cache (the Tq queries are the last Tq positions).
- `mask`: None, a boolean mask broadcastable to (B, H, Tq, Tk) (True = may attend), or a float
  bias added to the scores (-inf = may not attend; ALiBi). When a mask is given the model has
  already folded causality into it and passes `causal=False`.
- A backend that cannot do something asked of it (dropout, a float mask) raises ValueError
  naming it; one whose dependency is missing still registers and raises when called.

A new kernel registers itself, `register_attention("flash_torch", fn)`, from a module that
`minillm/kernels/__init__.py` imports; `GPTConfig.attn_impl` is checked against
`attention_backends()`, so the model needs no change.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from einops import repeat

__all__ = ["AttentionFn", "attention_backends", "causal_mask", "check_attention_inputs",
           "expand_kv", "get_attention", "register_attention"]

AttentionFn = Callable[..., torch.Tensor]
_BACKENDS: dict[str, AttentionFn] = {}


def register_attention(name: str, fn: AttentionFn, *, overwrite: bool = False) -> None:
    """Make `fn` available as `GPTConfig(attn_impl=name)`.

    Args:
        name: the backend's name (what configs write).
        fn: a callable with the signature in the module docstring.
        overwrite: replace an existing backend of that name (else that is an error).

    Raises:
        ValueError: `name` is taken and `overwrite` is False, or `fn` is not callable.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"attention backend name {name!r} must be a non-empty string")
    if not callable(fn):
        raise ValueError(f"attention backend {name!r}: {fn!r} is not callable")
    if name in _BACKENDS and not overwrite:
        raise ValueError(f"attention backend {name!r} is already registered; pass "
                         "overwrite=True to replace it")
    _BACKENDS[name] = fn


def get_attention(name: str) -> AttentionFn:
    """The backend registered as `name`.

    Raises:
        ValueError: no backend has that name (the message lists the registered ones).
    """
    try:
        return _BACKENDS[name]
    except KeyError:
        raise ValueError(f"attention backend {name!r} is not registered; choose one of "
                         f"{attention_backends()}") from None


def attention_backends() -> list[str]:
    """The registered backends' names, sorted."""
    return sorted(_BACKENDS)


def causal_mask(t_q: int, t_k: int, device: torch.device | None = None) -> torch.Tensor:
    """Boolean (t_q, t_k) mask, True where query i may attend to key j (j <= i + t_k - t_q)."""
    offset = t_k - t_q
    q = torch.arange(t_q, device=device)[:, None]
    k = torch.arange(t_k, device=device)[None, :]
    return k <= q + offset


def check_attention_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    """Raise ValueError unless q (B, H, Tq, D), k and v (B, Hkv, Tk, D) fit together."""
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        raise ValueError(f"attention takes (B, H, T, D) tensors; got q {tuple(q.shape)}, "
                         f"k {tuple(k.shape)}, v {tuple(v.shape)}")
    if k.shape != v.shape:
        raise ValueError(f"k {tuple(k.shape)} and v {tuple(v.shape)} must have the same shape")
    if q.size(1) % k.size(1):
        raise ValueError(f"{q.size(1)} query heads are not a multiple of {k.size(1)} kv heads")


def expand_kv(k: torch.Tensor, v: torch.Tensor, n_head: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Repeat each of the Hkv key/value heads for its n_head / Hkv query heads (GQA):
    (B, Hkv, T, D) -> (B, n_head, T, D); no copy when Hkv == n_head."""
    group = n_head // k.size(1)
    if group == 1:
        return k, v
    pattern = "b hkv t d -> b (hkv group) t d"   # kv head h serves query heads h*group..
    return repeat(k, pattern, group=group), repeat(v, pattern, group=group)
