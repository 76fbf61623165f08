"""The Transformer block: attention and MLP sub-layers around the residual stream.

Pre-norm (GPT-2, LLaMA; Xiong et al. 2020, 2002.04745) normalises each sub-layer's input:
    x = x + Attn(N(x));  x = x + MLP(N(x))
post-norm (the original Transformer, BERT) normalises after the residual addition:
    x = N(x + Attn(x));  x = N(x + MLP(x))
Pre-norm trains stably without a careful warm-up; post-norm needs one (Xiong et al.).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import nn

from minillm.models.attention import CausalSelfAttention
from minillm.models.base import MLPOutput
from minillm.models.config import GPTConfig
from minillm.models.kv_cache import KVCache
from minillm.models.mlp import build_mlp
from minillm.models.norms import make_norm

__all__ = ["Block", "BlockOutput"]


class BlockOutput(NamedTuple):
    """A block's result: the residual stream after it, and its MLP's side outputs."""

    hidden: torch.Tensor                             # (B, T, C)
    aux_losses: dict[str, torch.Tensor] = {}         # a mixture of experts' losses; {} if dense
    routing: Any = None                              # a mixture of experts' `Routing`


class Block(nn.Module):
    """One Transformer block; its MLP comes from `build_mlp(config, layer_idx)`."""

    def __init__(self, config: GPTConfig, layer_idx: int = 0):
        super().__init__()
        self.post_norm = config.norm_placement == "post"
        self.norm1 = make_norm(config.norm, config.d_model, config.norm_eps, config.bias)
        self.attn = CausalSelfAttention(config, layer_idx)
        self.norm2 = make_norm(config.norm, config.d_model, config.norm_eps, config.bias)
        self.mlp = build_mlp(config, layer_idx)

    def _mlp(self, x: torch.Tensor) -> MLPOutput:
        out = self.mlp(x)
        return out if isinstance(out, MLPOutput) else MLPOutput(out, {})

    def forward(self, x: torch.Tensor, *, mask: torch.Tensor | None = None,
                cache: KVCache | None = None,
                rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> BlockOutput:
        """x: (B, T, C) -> BlockOutput(hidden (B, T, C), aux_losses, routing); mask, cache and
        rope go to the attention (see `CausalSelfAttention.forward`)."""
        if self.post_norm:
            x = self.norm1(x + self.attn(x, mask=mask, cache=cache, rope=rope))
            m = self._mlp(x)
            return BlockOutput(self.norm2(x + m.hidden), m.aux_losses, m.routing)
        x = x + self.attn(self.norm1(x), mask=mask, cache=cache, rope=rope)
        m = self._mlp(self.norm2(x))
        return BlockOutput(x + m.hidden, m.aux_losses, m.routing)
