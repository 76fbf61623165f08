"""Position-wise feed-forward networks.

- GELU MLP (GPT-2): W2 GELU(W1 x), hidden 4d, GELU in its tanh approximation.
- SwiGLU (Shazeer 2020, 2002.05202; LLaMA): W_down (SiLU(W_gate x) * W_up x). With three
  matrices instead of two, the hidden size is shrunk to about 2/3 of 4d to keep the parameter
  count: LLaMA's rule is hidden = multiple_of * ceil((8d/3) / multiple_of).

`build_mlp(config, layer_idx)` is the one place a block gets its MLP: a mixture of experts
plugs in here. Any module mapping (B, T, C) -> (B, T, C) will do; a module with auxiliary
losses (a router's balance loss) returns an `MLPOutput(hidden, aux_losses, routing)` (minillm.models.base) instead
of a bare tensor, its losses already multiplied by their coefficients, and the model adds them
up into `LMOutput.aux_losses`. Nothing is stored on the module during forward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from minillm.models.config import GPTConfig
from minillm.models.moe import MoE

__all__ = ["GeluMLP", "SwiGLU", "build_mlp"]


class GeluMLP(nn.Module):
    """GPT-2's MLP: proj(GELU_tanh(fc(x))), then dropout."""

    def __init__(self, d_model: int, d_ff: int, bias: bool = True, dropout: float = 0.0):
        super().__init__()
        self.fc = nn.Linear(d_model, d_ff, bias=bias)
        self.act = nn.GELU(approximate="tanh")
        self.proj = nn.Linear(d_ff, d_model, bias=bias)
        self.proj.residual_scale = True
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(self.act(self.fc(x))))


class SwiGLU(nn.Module):
    """LLaMA's MLP: proj(SiLU(gate(x)) * up(x)), then dropout."""

    def __init__(self, d_model: int, d_ff: int, bias: bool = False, dropout: float = 0.0):
        super().__init__()
        self.gate = nn.Linear(d_model, d_ff, bias=bias)
        self.up = nn.Linear(d_model, d_ff, bias=bias)
        self.proj = nn.Linear(d_ff, d_model, bias=bias)
        self.proj.residual_scale = True
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(F.silu(self.gate(x)) * self.up(x)))


def build_mlp(config: GPTConfig, layer_idx: int) -> nn.Module:
    """The MLP of block `layer_idx` (0-based) for `config`.

    Args:
        config: the model's `GPTConfig` ("gelu": GPT-2's MLP; "swiglu": LLaMA's).
        layer_idx: which block asks: with `n_expert > 0`, every `moe_every`-th block gets an
            `MoE` layer (minillm.models.moe) instead of the dense MLP.

    Returns:
        A module mapping (B, T, d_model) -> (B, T, d_model).
    """
    if config.is_moe_layer(layer_idx):  # n_expert > 0, every moe_every-th layer
        return MoE.from_config(config)
    cls = SwiGLU if config.mlp == "swiglu" else GeluMLP
    return cls(config.d_model, config.d_ff, bias=config.bias, dropout=config.dropout)
