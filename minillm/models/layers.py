"""The pieces of a Transformer block besides attention: the norm, the MLP, the block itself.

GPT-2's block is pre-norm (Xiong et al. 2020, 2002.04745):
    x = x + Attn(LN(x));  x = x + MLP(LN(x))
and its MLP is Linear(C, 4C) -> GELU (tanh approximation) -> Linear(4C, C).
"""

from __future__ import annotations

import torch
from torch import nn

from minillm.models.attention import CausalSelfAttention
from minillm.models.config import GPTConfig
from minillm.models.kv_cache import KVCache

__all__ = ["MLP", "Block", "make_norm"]


def make_norm(config: GPTConfig) -> nn.Module:
    """The normalisation layer the config names."""
    return nn.LayerNorm(config.d_model, eps=config.norm_eps, bias=config.bias)


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.fc = nn.Linear(config.d_model, config.d_ff, bias=config.bias)
        self.act = nn.GELU(approximate="tanh")
        self.proj = nn.Linear(config.d_ff, config.d_model, bias=config.bias)
        self.proj.residual_scale = True
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(self.act(self.fc(x))))


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.norm1 = make_norm(config)
        self.attn = CausalSelfAttention(config)
        self.norm2 = make_norm(config)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        """x: (B, T, C); mask, cache and layer go to the attention (see CausalSelfAttention)."""
        x = x + self.attn(self.norm1(x), mask, cache, layer)
        return x + self.mlp(self.norm2(x))
