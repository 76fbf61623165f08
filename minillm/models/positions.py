"""Position information for attention, which is otherwise blind to order.

Self-attention is permutation-equivariant: shuffle the tokens and the outputs shuffle with them.
Each scheme below breaks that symmetry in a different place.

- none (NoPE): nothing; a causal mask alone leaks some order (Haviv et al. 2022, 2203.16634).
- learned absolute (GPT-2): a trained table P[pos] added to the token embeddings; cannot go
  beyond its size.
- sinusoidal absolute (Vaswani et al. 2017, 1706.03762):
      PE[pos, 2i] = sin(pos / base^(2i/d)),   PE[pos, 2i+1] = cos(pos / base^(2i/d)).
- RoPE (Su et al. 2021, 2104.09864): rotate each (x_i, x_{i+d/2}) pair of q and k by the angle
  pos * theta_i, theta_i = base^(-2i/d). Then q_m . k_n depends only on m - n. We use the
  "rotate-half" pairing of GPT-NeoX and LLaMA (not the interleaved pairing of the paper), so
  weights converted from LLaMA work unchanged. `fraction` < 1 rotates only the first dims of
  each head (GPT-NeoX's rotary_pct). For longer contexts: position interpolation (Chen et al.
  2023, 2306.15595) divides positions by `scale`; NTK-aware scaling (bloc97, 2023) raises the
  base to base * scale^(d/(d-2)) instead; YaRN (Peng et al. 2023, 2309.00071) interpolates only
  the slow pairs: a pair that turns more than beta_fast = 32 times over the original context
  keeps theta_i, one that turns less than beta_slow = 1 time gets theta_i / scale, and the pairs
  between are blended on a linear ramp over their index (the authors' code, and transformers');
  it also multiplies cos and sin by 0.1 ln(scale) + 1 (the attention "temperature", sqrt(1/t)).
- ALiBi (Press et al. 2021, 2108.12409): no embedding at all; head h adds -m_h * (i - j) to the
  score of query i and key j, with slopes m_h the geometric sequence 2^(-8h/n), h = 1..n (for
  n not a power of two: the slopes of the nearest lower power of two, then every other slope of
  the next power of two, as in the authors' code and BLOOM).

Every function takes explicit positions, so that a KV cache can continue at any offset and
left-padded rows can count from their first real token.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = [
    "positions_from_mask", "sinusoidal_table", "sinusoidal_at", "rope_inv_freq", "yarn_inv_freq", "yarn_attention_factor", "rope_cos_sin", "apply_rope", "alibi_slopes",
    "alibi_bias", "RotaryEmbedding",
]


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that count real tokens only: (B, T) `cumsum(mask) - 1`, left padding at 0 (as
    in Hugging Face), so a left-padded row gets the positions of the same prompt alone."""
    return (attention_mask.long().cumsum(-1) - 1).clamp_(min=0)


def sinusoidal_table(n_positions: int, d_model: int, base: float = 10000.0,
                     offset: int = 0) -> torch.Tensor:
    """(n_positions, d_model) sinusoidal encodings for positions offset .. offset+n-1."""
    return sinusoidal_at(torch.arange(offset, offset + n_positions), d_model, base)


def _exact_dtype(device: torch.device) -> torch.dtype:
    """float64 where the device has it (MPS does not), for tables cast to float32 after."""
    return torch.float32 if device.type == "mps" else torch.float64


def sinusoidal_at(positions: torch.Tensor, d_model: int, base: float = 10000.0) -> torch.Tensor:
    """Sinusoidal encodings of any tensor of positions: shape positions.shape + (d_model,),
    float32, computed in float64 on the positions' device."""
    dtype = _exact_dtype(positions.device)
    pos = positions.to(dtype)[..., None]
    i = torch.arange(0, d_model, 2, dtype=dtype, device=positions.device)
    angles = pos / base ** (i / d_model)                      # (..., d/2)
    table = torch.zeros(*positions.shape, d_model, dtype=dtype, device=positions.device)
    table[..., 0::2] = torch.sin(angles)
    table[..., 1::2] = torch.cos(angles[..., : d_model // 2])
    return table.float()


def rope_inv_freq(rot_dim: int, base: float = 10000.0, ntk_scale: float = 1.0) -> torch.Tensor:
    """theta_i = base^(-2i/rot_dim), i < rot_dim/2; NTK-aware scaling uses
    base * ntk_scale^(rot_dim / (rot_dim - 2))."""
    if rot_dim % 2:
        raise ValueError(f"rotary dimension {rot_dim} must be even")
    if ntk_scale != 1.0:
        base = base * ntk_scale ** (rot_dim / (rot_dim - 2))
    # a constant on the CPU, even under torch.device("meta") (a model built there for sharded
    # init keeps it: it is no parameter or buffer to materialise); rope_cos_sin moves it
    return 1.0 / base ** (torch.arange(0, rot_dim, 2, dtype=torch.float64, device="cpu") / rot_dim)


def yarn_inv_freq(rot_dim: int, base: float, scale: float, original_context: int,
                  beta_fast: float = 32.0, beta_slow: float = 1.0) -> torch.Tensor:
    """YaRN's frequencies: theta_i where pair i turns more than `beta_fast` times over
    `original_context` positions, theta_i / scale where it turns fewer than `beta_slow` times,
    blended linearly over the pair index between (the index bounds floored / ceiled)."""
    theta = rope_inv_freq(rot_dim, base)

    def index_at(rotations: float) -> float:  # the pair index that turns `rotations` times
        return rot_dim * math.log(original_context / (rotations * 2 * math.pi)) / (2 * math.log(base))

    lo = max(math.floor(index_at(beta_fast)), 0)
    hi = min(math.ceil(index_at(beta_slow)), rot_dim - 1)
    if hi == lo:
        hi += 0.001
    ramp = ((torch.arange(rot_dim // 2, dtype=torch.float64) - lo) / (hi - lo)).clamp(0, 1)
    return theta / scale * ramp + theta * (1 - ramp)   # ramp 0: extrapolate, 1: interpolate


def yarn_attention_factor(scale: float) -> float:
    """YaRN's factor on cos and sin, 0.1 ln(scale) + 1 (1 for scale <= 1): the logits grow by
    its square, sharpening attention that longer contexts would otherwise flatten."""
    return 1.0 if scale <= 1 else 0.1 * math.log(scale) + 1.0


def rope_cos_sin(positions: torch.Tensor, inv_freq: torch.Tensor, interpolation: float = 1.0
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the angles (pos / interpolation) * theta_i, each positions.shape +
    (rot_dim,), the half-dims repeated (rotate-half layout). Computed in float64 on the
    positions' device, returned as float32."""
    dtype = _exact_dtype(positions.device)
    pos = positions.to(dtype) / interpolation
    angles = pos[..., None] * inv_freq.to(positions.device, dtype)   # (..., rot/2)
    angles = torch.cat([angles, angles], dim=-1)                     # (..., rot)
    return angles.cos().float(), angles.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first cos.size(-1) dims of x (..., T, D) by the given angles; the rest pass."""
    rot = cos.size(-1)
    x_rot, x_pass = x[..., :rot], x[..., rot:]
    half = rot // 2
    rotated = torch.cat([-x_rot[..., half:], x_rot[..., :half]], dim=-1)   # "rotate half"
    out = x_rot * cos.to(x.dtype) + rotated * sin.to(x.dtype)
    return torch.cat([out, x_pass], dim=-1) if x_pass.numel() else out


def alibi_slopes(n_head: int) -> torch.Tensor:
    """The ALiBi head slopes m_1..m_n (see module docstring)."""
    if n_head <= 0:
        raise ValueError(f"n_head={n_head} must be positive")
    closest = 2 ** math.floor(math.log2(n_head))
    base = 2.0 ** (-8.0 / closest)
    slopes = [base ** (h + 1) for h in range(closest)]
    if closest < n_head:
        extra = 2.0 ** (-4.0 / closest)  # the slopes of 2 * closest heads, odd ones
        slopes += [extra ** (2 * h + 1) for h in range(n_head - closest)]
    return torch.tensor(slopes, dtype=torch.float32)


def alibi_bias(n_head: int, q_positions: torch.Tensor, k_positions: torch.Tensor,
               symmetric: bool = False) -> torch.Tensor:
    """Additive bias -m_h * (i - j) for query positions i (..., T_q) and key positions j
    (..., T_k): shape (..., H, T_q, T_k). Future keys (j > i) get a positive value here; the
    causal mask removes them. `symmetric` uses -m_h * |i - j|, for masks that show the future."""
    dist = (q_positions[..., :, None] - k_positions[..., None, :]).float()   # (..., Tq, Tk)
    if symmetric:
        dist = dist.abs()
    slopes = alibi_slopes(n_head).to(dist.device)
    return -slopes[:, None, None] * dist[..., None, :, :]


class RotaryEmbedding(nn.Module):
    """Applies RoPE to queries and keys (B, H, T, D) of the tokens at `positions` ((T,) or (B, T))."""

    def __init__(self, head_dim: int, base: float = 10000.0, fraction: float = 1.0,
                 scaling: str = "none", scale: float = 1.0, original_context: int = 0):
        super().__init__()
        rot_dim = int(head_dim * fraction) // 2 * 2
        if rot_dim == 0:
            raise ValueError(f"rope fraction={fraction} leaves no dimension of head_dim={head_dim} to rotate")
        if scaling not in ("none", "linear", "ntk", "yarn"):
            raise ValueError(f"rope scaling={scaling!r}; choose 'none', 'linear' (position "
                             "interpolation), 'ntk' or 'yarn'")
        if scaling == "yarn" and original_context <= 0:
            raise ValueError("YaRN needs the context the model was trained at "
                             f"(original_context={original_context}): pass it")
        self.interpolation = scale if scaling == "linear" else 1.0
        self.attention_factor = yarn_attention_factor(scale) if scaling == "yarn" else 1.0
        self.inv_freq = (yarn_inv_freq(rot_dim, base, scale, original_context)
                         if scaling == "yarn" else
                         rope_inv_freq(rot_dim, base, scale if scaling == "ntk" else 1.0))

    def tables(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin for `positions` ((T,) or (B, T)), shaped to broadcast over (B, H, T, rot):
        computed once per forward by the model and shared by every layer."""
        cos, sin = rope_cos_sin(positions, self.inv_freq, self.interpolation)
        if self.attention_factor != 1.0:
            cos, sin = cos * self.attention_factor, sin * self.attention_factor
        if cos.ndim == 3:  # (B, T, rot) -> (B, 1, T, rot): the same angles for every head
            cos, sin = cos[:, None], sin[:, None]
        return cos, sin

    def forward(self, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor | None = None,
                *, tables: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotate q, k: (B, H, T, D) for the same T new tokens (a KV cache stores keys already
        rotated), by the angles of `positions` or by precomputed `tables` (from `tables()`)."""
        if tables is None:
            if positions is None:
                raise ValueError("RotaryEmbedding needs positions or precomputed tables")
            tables = self.tables(positions)
        cos, sin = tables
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin)
