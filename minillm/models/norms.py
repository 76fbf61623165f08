"""Normalisation layers.

- LayerNorm (Ba et al. 2016, 1607.06450): y = (x - mean(x)) / sqrt(var(x) + eps) * g + b.
- RMSNorm (Zhang & Sennrich 2019, 1910.07467): y = x / sqrt(mean(x^2) + eps) * g — no centring,
  no bias; used by LLaMA, T5, Gopher. Computed in float32 whatever the input dtype, as LLaMA does.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["RMSNorm", "make_norm"]


class RMSNorm(nn.Module):
    def __init__(self, d_model: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


def make_norm(kind: str, d_model: int, eps: float, bias: bool) -> nn.Module:
    """"layernorm" or "rmsnorm" (RMSNorm has no bias whatever `bias` says)."""
    if kind == "layernorm":
        return nn.LayerNorm(d_model, eps=eps, bias=bias)
    if kind == "rmsnorm":
        return RMSNorm(d_model, eps=eps)
    raise ValueError(f"norm={kind!r}; choose 'layernorm' or 'rmsnorm'")
