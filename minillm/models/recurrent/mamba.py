"""Mamba: a selective state-space model (Gu & Dao 2023, "Mamba: Linear-Time Sequence Modeling
with Selective State Spaces", arXiv:2312.00752).

A state-space layer maps each channel d of u through a hidden state h in R^N:
h'(t) = A h(t) + B u(t), y = C h + D u. Discretised with step Delta (their eq. 4, zero-order
hold for A; for B the first-order Delta*B the reference kernels use):

    h_t = exp(Delta_t A) h_{t-1} + Delta_t B_t u_t          y_t = C_t . h_t + D u_t

S4 keeps Delta, B, C fixed (a linear time-invariant system, a convolution). The *selective*
S6 makes them functions of the input (Algorithm 2): Delta_t = softplus(W_dt (W_x u_t)[:R] + b),
B_t = (W_x u_t)[R:R+N], C_t = (W_x u_t)[R+N:], so the model can choose, token by token, what to
keep and what to forget -- no convolution any more, hence a scan.

The Mamba block (Fig. 3): x, z = in_proj(RMSNorm(h)); u = silu(causal depthwise conv1d(x));
y = S6(u) * silu(z); h + out_proj(y).

Scans here: `selective_scan_step` (one token: decoding), `selective_scan_recurrent` (a loop of
steps), `selective_scan_chunked` (training: h_t = a_t h_{t-1} + b_t with a_t = exp(Delta_t A),
b_t = Delta_t B_t u_t is a chain of affine maps, and composing them is associative, so a
parallel prefix scan (Hillis & Steele 1986; Blelloch 1990; the paper's Sec. 3.3.2) gives every
h_t of a chunk of L tokens in log2(L) batched steps; the last h carries to the next chunk).
Every factor a_t is in (0, 1], so no step can overflow.

Departures / notes:
- no fused CUDA kernel and no hardware-aware recomputation (the paper's point for speed):
  plain PyTorch, exact against Hugging Face's slow path;
- decoding state per layer: the conv's last d_conv - 1 inputs and h (d_inner x d_state);
- A = -exp(A_log), Delta's bias and the S4D-real init of A follow the reference;
- `selective=False` is the LTI ablation of the paper's Table 1 inside the same block:
  Delta = softplus(dt_bias) per channel, B and C learned vectors of N numbers shared by the
  channels, none of them a function of the input (x_proj and dt_proj are not built).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from minillm.models.norms import RMSNorm
from minillm.models.recurrent.base import RecurrentConfig, RecurrentLM, parallel_scan
from minillm.models.recurrent.state import RecurrentState

__all__ = ["MambaConfig", "Mamba", "selective_scan_chunked", "selective_scan_recurrent",
           "selective_scan_step"]


@dataclass
class MambaConfig(RecurrentConfig):
    ARCH = "mamba"
    arch: str = "mamba"             # tells load_model the class
    vocab_size: int = 257           # byte tokenizer: 256 bytes + <|endoftext|>
    context_length: int = 128       # training window (the state itself has no limit)
    d_model: int = 128              # residual width
    n_layer: int = 2                # blocks
    d_state: int = 16               # N: state size per channel
    expand: int = 2                 # d_inner = expand * d_model
    d_conv: int = 4                 # causal depthwise conv kernel
    dt_rank: int = 0                # R: rank of Delta's projection (0 = ceil(d_model / 16))
    conv_bias: bool = True          # bias in the conv
    bias: bool = False              # biases in in_proj / out_proj
    norm_eps: float = 1e-5          # RMSNorm epsilon
    tie_embeddings: bool = True     # lm_head shares the token embedding (as the reference)
    dropout: float = 0.0            # on the residual branches
    chunk: int = 16                 # tokens per parallel scan (log2(chunk) steps each)
    scan: str = "auto"              # "chunked", "recurrent" or "auto" (chunked while training)
    selective: bool = True          # False: Delta, B, C input-independent (an LTI SSM, S4-like)

    def __post_init__(self) -> None:
        self._check(("vocab_size", "context_length", "d_model", "n_layer", "d_state", "expand",
                     "d_conv", "chunk"))
        if self.dt_rank < 0:
            raise ValueError(f"dt_rank={self.dt_rank} must be >= 0 (0 = ceil(d_model / 16))")

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def rank(self) -> int:
        return self.dt_rank or math.ceil(self.d_model / 16)

    def state_numbers(self) -> int:
        """Numbers per sequence in the decoding state: the conv window (d_inner x (d_conv-1))
        and h (d_inner x d_state) per layer."""
        return self.n_layer * self.d_inner * (self.d_conv - 1 + self.d_state)


def selective_scan_step(u: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                        C: torch.Tensor, D: torch.Tensor, h: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """One token: h = exp(dt A) h + dt B u, y = C . h + D u.

    Args:
        u, dt: (B, Di) input and step size (after softplus).
        A: (Di, N), negative.
        B, C: (B, N) this token's input and output matrices.
        D: (Di,) skip.
        h: (B, Di, N) the state before the token.

    Returns:
        y (B, Di) and the new h.
    """
    h = torch.exp(dt[..., None] * A) * h + (dt * u)[..., None] * B[:, None, :]
    return (h @ C[..., None])[..., 0] + D * u, h


def selective_scan_recurrent(u, dt, A, B, C, D, h):
    """`selective_scan_step` over (B, T, ...) inputs; returns y (B, T, Di) and the last h."""
    ys = []
    for t in range(u.size(1)):
        y, h = selective_scan_step(u[:, t], dt[:, t], A, B[:, t], C[:, t], D, h)
        ys.append(y)
    return torch.stack(ys, dim=1), h


def selective_scan_chunked(u: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                           C: torch.Tensor, D: torch.Tensor, h: torch.Tensor, chunk: int = 16
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """The scan of `selective_scan_recurrent`, every h_t of a chunk at once (module docstring).

    h_t = a_t h_{t-1} + b_t is a composition of affine maps, and composing is associative:
    (a, b) then (a', b') is (a' a, a' b + b'). A Hillis-Steele scan doubles the span each
    map covers, so log2(L) batched steps give every h_t of a chunk of L tokens.

    Args:
        u, dt: (B, T, Di); A: (Di, N); B, C: (B, T, N); D: (Di,); h: (B, Di, N) initial state.
        chunk: tokens per parallel scan (memory ~ chunk * log2(chunk) per channel and state).

    Returns:
        y (B, T, Di) and the state after the last token.
    """
    ys = []
    for s in range(0, u.size(1), chunk):
        uc, dtc, Bc, Cc = u[:, s:s + chunk], dt[:, s:s + chunk], B[:, s:s + chunk], C[:, s:s + chunk]
        a = torch.exp(dtc[..., None] * A)                     # (B, L, Di, N): exp(Delta A)
        b = (dtc * uc)[..., None] * Bc[:, :, None, :]         # (B, L, Di, N): Delta B u
        b = torch.cat([b[:, :1] + a[:, :1] * h[:, None], b[:, 1:]], dim=1)  # fold h in
        span = 1
        while span < a.size(1):   # (a_t, b_t) covers (t - span, t]; extend it by span
            b = torch.cat([b[:, :span], a[:, span:] * b[:, :-span] + b[:, span:]], dim=1)
            a = torch.cat([a[:, :span], a[:, span:] * a[:, :-span]], dim=1)
            span *= 2
        ys.append(torch.einsum("btdn,btn->btd", b, Cc) + D * uc)   # b is now h_t
        h = b[:, -1]
    return torch.cat(ys, dim=1), h


class MambaMixer(nn.Module):
    """in_proj -> causal depthwise conv -> silu -> S6 -> gate silu(z) -> out_proj."""

    def __init__(self, c: MambaConfig):
        super().__init__()
        Di, N, R = c.d_inner, c.d_state, c.rank
        self.c = c
        self.in_proj = nn.Linear(c.d_model, 2 * Di, bias=c.bias)
        self.conv1d = nn.Conv1d(Di, Di, c.d_conv, groups=Di, bias=c.conv_bias)
        if c.selective:
            self.x_proj = nn.Linear(Di, R + 2 * N, bias=False)
            self.dt_proj = nn.Linear(R, Di, bias=True)
            dt_bias = self.dt_proj.bias
        else:  # LTI: the same parameters for every token (module docstring)
            self.dt_bias = dt_bias = nn.Parameter(torch.zeros(Di))
            self.B_lti = nn.Parameter(torch.ones(N))
            self.C_lti = nn.Parameter(torch.randn(N) / math.sqrt(N))
        self.A_log = nn.Parameter(torch.log(torch.arange(1, N + 1, dtype=torch.float32)
                                            ).repeat(Di, 1))  # S4D-real: A = -(1..N)
        self.D = nn.Parameter(torch.ones(Di))
        self.out_proj = nn.Linear(Di, c.d_model, bias=c.bias)
        with torch.no_grad():  # Delta starts log-uniform in [1e-3, 1e-1] (softplus^-1 in b)
            dt = torch.exp(torch.rand(Di) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
            dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))

    def forward(self, x: torch.Tensor, st: dict[str, torch.Tensor]) -> torch.Tensor:
        c = self.c
        B_, T, _ = x.shape
        xs, z = self.in_proj(x).chunk(2, dim=-1)              # (B, T, Di) each
        past = st.get("conv")
        if past is None:
            past = xs.new_zeros(B_, c.d_inner, c.d_conv - 1)
        window = torch.cat([past, xs.transpose(1, 2)], dim=2)  # (B, Di, d_conv - 1 + T)
        st["conv"] = window[:, :, window.size(2) - (c.d_conv - 1):]
        u = F.silu(self.conv1d(window)).transpose(1, 2)        # (B, T, Di)
        if c.selective:
            dt, Bm, Cm = self.x_proj(u).split([c.rank, c.d_state, c.d_state], dim=-1)
            dt = F.softplus(self.dt_proj(dt))                  # (B, T, Di)
        else:
            dt = F.softplus(self.dt_bias).expand(B_, T, c.d_inner)
            Bm, Cm = self.B_lti.expand(B_, T, c.d_state), self.C_lti.expand(B_, T, c.d_state)
        A = -torch.exp(self.A_log)
        h = st.get("h")
        if h is None:
            h = u.new_zeros(B_, c.d_inner, c.d_state)
        if T == 1:
            y, st["h"] = selective_scan_step(u[:, 0], dt[:, 0], A, Bm[:, 0], Cm[:, 0], self.D, h)
            y = y[:, None]
        elif parallel_scan(c.scan):
            y, st["h"] = selective_scan_chunked(u, dt, A, Bm, Cm, self.D, h, c.chunk)
        else:
            y, st["h"] = selective_scan_recurrent(u, dt, A, Bm, Cm, self.D, h)
        return self.out_proj(y * F.silu(z))


class MambaBlock(nn.Module):
    def __init__(self, c: MambaConfig):
        super().__init__()
        self.norm = RMSNorm(c.d_model, eps=c.norm_eps)
        self.mixer = MambaMixer(c)
        self.drop = nn.Dropout(c.dropout)

    def forward(self, x: torch.Tensor, st: dict[str, torch.Tensor]) -> torch.Tensor:
        return x + self.drop(self.mixer(self.norm(x), st))


class Mamba(RecurrentLM):
    """Embedding -> Mamba blocks -> RMSNorm -> head (tied to the embedding by default)."""

    config_class = MambaConfig

    def __init__(self, config: MambaConfig):
        super().__init__()
        self.config = c = config
        self.embed = nn.Embedding(c.vocab_size, c.d_model)
        nn.init.normal_(self.embed.weight, std=0.02)
        self.blocks = nn.ModuleList(MambaBlock(c) for _ in range(c.n_layer))
        self.norm_f = RMSNorm(c.d_model, eps=c.norm_eps)
        self.lm_head = nn.Linear(c.d_model, c.vocab_size, bias=False)
        if c.tie_embeddings:
            self.lm_head.weight = self.embed.weight

    def init_state(self, batch_size: int) -> RecurrentState:
        c, (device, dtype) = self.config, self._dtype()
        return RecurrentState([
            {"conv": torch.zeros(batch_size, c.d_inner, c.d_conv - 1, device=device, dtype=dtype),
             "h": torch.zeros(batch_size, c.d_inner, c.d_state, device=device, dtype=dtype)}
            for _ in range(c.n_layer)])

    def hidden(self, idx: torch.Tensor, state: RecurrentState | None) -> torch.Tensor:
        x = self.embed(idx)                                             # (B, T, C)
        for i, block in enumerate(self.blocks):
            x = block(x, {} if state is None else state[i])
        return self.norm_f(x)

    def matmul_weights(self) -> int:
        c = self.config
        Di = c.d_inner
        per_layer = (c.d_model * 2 * Di + Di * c.d_model + Di * c.d_conv
                     + (Di * (c.rank + 2 * c.d_state) + c.rank * Di if c.selective else 0))
        return c.n_layer * per_layer + c.d_model * c.vocab_size

    def mixing_flops(self) -> int:
        """The scan: about 6 FLOPs per (channel, state) pair and token (exp not counted)."""
        c = self.config
        return 6 * c.n_layer * c.d_inner * c.d_state
