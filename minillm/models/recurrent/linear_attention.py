"""Causal linear attention: a Transformer that is an RNN (Katharopoulos, Vyas, Pappas & Fleuret
2020, "Transformers are RNNs", arXiv:2006.16236).

Softmax attention weighs value j by exp(q_i . k_j). Replace the exponential by a kernel
phi(q_i) . phi(k_j) with the feature map phi(x) = elu(x) + 1 (positive), and the sums factor
(their eq. 4-5, causal form eq. 8-9):

    y_i = phi(q_i)^T S_i / (phi(q_i)^T z_i),   S_i = sum_{j<=i} phi(k_j) v_j^T,
                                              z_i = sum_{j<=i} phi(k_j)

- *parallel* (training): A = tril(phi(Q) phi(K)^T), Y = A V / (A 1) -- masked like softmax
  attention, O(T^2) but one matmul;
- *recurrent* (decoding): S_i = S_{i-1} + phi(k_i) v_i^T, z_i = z_{i-1} + phi(k_i): a state of
  (D, D) + D numbers per head, whatever the context.

The block around it is the GPT's pre-norm block (LayerNorm, attention, GELU MLP, residuals).

Departures / notes:
- positions: a learned table as in GPT-2 (the paper's autoregressive models kept the
  Transformer's positional encoding), so a state carries a position counter and decoding with
  it stops at `context_length` (past it, `minillm.generation` recomputes a sliding window,
  as it does for the GPT); `positions="none"` drops the table and the limit;
- eps = 1e-6 in the denominator, as the paper's code;
- the parallel path with a state (prefill after a prefix) adds phi(q)^T S and phi(q)^T z of
  the state to the masked sums: the chunked form of the same equations.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from minillm.models.recurrent.base import RecurrentConfig, RecurrentLM
from minillm.models.recurrent.state import RecurrentState

__all__ = ["LinearAttentionConfig", "LinearAttentionLM", "elu_feature_map",
           "linear_attention_parallel", "linear_attention_recurrent"]

POSITIONS = ("learned", "none")


@dataclass
class LinearAttentionConfig(RecurrentConfig):
    ARCH = "linear_attention"
    arch: str = "linear_attention"  # tells load_model the class
    vocab_size: int = 257           # byte tokenizer: 256 bytes + <|endoftext|>
    context_length: int = 128       # training window (and the learned position table)
    d_model: int = 128              # residual width
    n_layer: int = 2                # blocks
    n_head: int = 4                 # heads; each keeps a (head_dim, head_dim) state
    d_ff: int = 0                   # MLP width (0 = 4 * d_model)
    positions: str = "learned"      # "learned" (a table of context_length rows) or "none"
    dropout: float = 0.0            # on the residual branches
    tie_embeddings: bool = True     # lm_head shares the token embedding
    eps: float = 1e-6               # added to the normaliser phi(q)^T z

    def __post_init__(self) -> None:
        self._check(("vocab_size", "context_length", "d_model", "n_layer", "n_head"))
        if self.d_model % self.n_head:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_head={self.n_head}")
        if self.positions not in POSITIONS:
            raise ValueError(f"positions={self.positions!r}; choose one of {POSITIONS}")
        if self.d_ff < 0:
            raise ValueError(f"d_ff={self.d_ff} must be >= 0 (0 = 4 * d_model)")
        if self.eps <= 0:
            raise ValueError(f"eps={self.eps} must be > 0 (it keeps the normaliser off zero)")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    @property
    def ff_width(self) -> int:
        return self.d_ff or 4 * self.d_model

    def state_numbers(self) -> int:
        """Numbers per sequence in the decoding state: S (H, D, D) and z (H, D) per layer."""
        return self.n_layer * self.n_head * (self.head_dim ** 2 + self.head_dim)


def elu_feature_map(x: torch.Tensor) -> torch.Tensor:
    """phi(x) = elu(x) + 1 > 0 (the paper's eq. 7)."""
    return F.elu(x) + 1


def linear_attention_parallel(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                              S: torch.Tensor | None = None, z: torch.Tensor | None = None,
                              eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Causal linear attention over a whole window, masked like softmax attention.

    Args:
        q, k: (B, H, T, D) features, already through phi.
        v: (B, H, T, Dv) values.
        S, z: the state before the window, (B, H, D, Dv) and (B, H, D) (None: zeros).
        eps: added to the normaliser.

    Returns:
        y (B, H, T, Dv), and the state after the window, S and z.
    """
    a = (q @ k.transpose(-1, -2)).tril()                      # (B, H, T, T), j <= i
    num, den = a @ v, a.sum(-1)                               # (B, H, T, Dv), (B, H, T)
    S_new, z_new = k.transpose(-1, -2) @ v, k.sum(2)          # this window's sums
    if S is not None:
        num = num + q @ S
        den = den + (q @ z[..., None])[..., 0]
        S_new, z_new = S + S_new, z + z_new
    return num / (den[..., None] + eps), S_new, z_new


def linear_attention_recurrent(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                               S: torch.Tensor | None = None, z: torch.Tensor | None = None,
                               eps: float = 1e-6
                               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The same function as `linear_attention_parallel`, one token at a time (the RNN):
    S_i = S_{i-1} + phi(k_i) v_i^T, z_i = z_{i-1} + phi(k_i), y_i = q_i^T S_i / (q_i^T z_i).

    Args and returns as `linear_attention_parallel`."""
    B, H, T, D = q.shape
    S = q.new_zeros(B, H, D, v.size(-1)) if S is None else S
    z = q.new_zeros(B, H, D) if z is None else z
    ys = []
    for t in range(T):
        qt, kt, vt = q[:, :, t], k[:, :, t], v[:, :, t]      # (B, H, D), ..., (B, H, Dv)
        S = S + kt[..., :, None] * vt[..., None, :]           # (B, H, D, Dv)
        z = z + kt
        num = (qt[..., None, :] @ S)[..., 0, :]               # (B, H, Dv)
        den = (qt * z).sum(-1, keepdim=True)                  # (B, H, 1)
        ys.append(num / (den + eps))
    return torch.stack(ys, dim=2), S, z


class LinearAttention(nn.Module):
    """Multi-head causal linear attention; parallel without a state, recurrent with one."""

    def __init__(self, c: LinearAttentionConfig):
        super().__init__()
        self.n_head, self.eps = c.n_head, c.eps
        self.qkv = nn.Linear(c.d_model, 3 * c.d_model)
        self.proj = nn.Linear(c.d_model, c.d_model)

    def forward(self, x: torch.Tensor, layer_state: dict[str, torch.Tensor] | None
                ) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_head, C // self.n_head).permute(2, 0, 3, 1, 4)
        q, k = elu_feature_map(q), elu_feature_map(k)         # (B, H, T, D)
        if layer_state is None:
            y, _, _ = linear_attention_parallel(q, k, v, eps=self.eps)
        else:
            step = linear_attention_recurrent if T == 1 else linear_attention_parallel
            y, layer_state["S"], layer_state["z"] = step(q, k, v, layer_state["S"],
                                                         layer_state["z"], eps=self.eps)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class LinearAttentionBlock(nn.Module):
    def __init__(self, c: LinearAttentionConfig):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(c.d_model), nn.LayerNorm(c.d_model)
        self.attn = LinearAttention(c)
        self.mlp = nn.Sequential(nn.Linear(c.d_model, c.ff_width), nn.GELU(),
                                 nn.Linear(c.ff_width, c.d_model))
        self.drop = nn.Dropout(c.dropout)

    def forward(self, x: torch.Tensor, layer_state: dict | None) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x), layer_state))
        return x + self.drop(self.mlp(self.norm2(x)))


class LinearAttentionLM(RecurrentLM):
    """Embedding (+ learned positions) -> linear-attention blocks -> LayerNorm -> head."""

    config_class = LinearAttentionConfig

    def __init__(self, config: LinearAttentionConfig):
        super().__init__()
        self.config = c = config
        self.embed = nn.Embedding(c.vocab_size, c.d_model)
        self.pos = nn.Embedding(c.context_length, c.d_model) if c.positions == "learned" else None
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(LinearAttentionBlock(c) for _ in range(c.n_layer))
        self.norm_f = nn.LayerNorm(c.d_model)
        self.lm_head = nn.Linear(c.d_model, c.vocab_size, bias=False)
        if c.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        self.state_limit = c.context_length if self.pos is not None else None

    def init_state(self, batch_size: int) -> RecurrentState:
        c, (device, dtype) = self.config, self._dtype()
        D = c.head_dim
        layers = [{"S": torch.zeros(batch_size, c.n_head, D, D, device=device, dtype=dtype),
                   "z": torch.zeros(batch_size, c.n_head, D, device=device, dtype=dtype)}
                  for _ in range(c.n_layer)]
        layers[0]["pos"] = torch.zeros(batch_size, dtype=torch.long, device=device)
        return RecurrentState(layers)

    def hidden(self, idx: torch.Tensor, state: RecurrentState | None) -> torch.Tensor:
        B, T = idx.shape
        x = self.embed(idx)                                   # (B, T, C)
        if self.pos is not None:
            t = torch.arange(T, device=idx.device)
            if state is None:
                x = x + self.pos(t)
            else:
                pos = state[0]["pos"][:, None] + t            # (B, T), per row (padding)
                if int(pos.max()) >= self.config.context_length:
                    raise ValueError(f"position {int(pos.max())} is past the learned table "
                                     f"(context_length={self.config.context_length}); "
                                     "decode a longer text with a sliding window")
                x = x + self.pos(pos)
                state[0]["pos"] = state[0]["pos"] + T
        x = self.drop(x)
        for i, block in enumerate(self.blocks):
            x = block(x, None if state is None else state[i])
        return self.norm_f(x)

    def matmul_weights(self) -> int:
        c = self.config
        return c.n_layer * (4 * c.d_model ** 2 + 2 * c.d_model * c.ff_width) \
            + c.d_model * c.vocab_size

    def mixing_flops(self) -> int:
        """S += phi(k) v^T and phi(q)^T S per head: 2 * 2 * D * D, times heads and layers."""
        c = self.config
        return c.n_layer * 4 * c.n_head * c.head_dim ** 2
