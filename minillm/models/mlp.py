"""Position-wise feed-forward networks.

- GELU MLP (GPT-2): W2 GELU(W1 x), hidden 4d, GELU in its tanh approximation.
- SwiGLU (Shazeer 2020, 2002.05202; LLaMA): W_down (SiLU(W_gate x) * W_up x). With three
  matrices instead of two, the hidden size is shrunk to about 2/3 of 4d to keep the parameter
  count: LLaMA's rule is hidden = multiple_of * ceil((8d/3) / multiple_of).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["GeluMLP", "SwiGLU", "swiglu_hidden_size"]


def swiglu_hidden_size(d_model: int, multiple_of: int = 32) -> int:
    """LLaMA's SwiGLU hidden-size rule: 2/3 of 4d, rounded up to a multiple of `multiple_of`."""
    return multiple_of * math.ceil(8 * d_model / 3 / multiple_of)


class GeluMLP(nn.Module):
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
    def __init__(self, d_model: int, d_ff: int, bias: bool = False, dropout: float = 0.0):
        super().__init__()
        self.gate = nn.Linear(d_model, d_ff, bias=bias)
        self.up = nn.Linear(d_model, d_ff, bias=bias)
        self.proj = nn.Linear(d_ff, d_model, bias=bias)
        self.proj.residual_scale = True
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(F.silu(self.gate(x)) * self.up(x)))
