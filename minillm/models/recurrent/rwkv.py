"""RWKV-4: a linear-attention RNN that trains in parallel (Peng et al. 2023, "RWKV: Reinventing
RNNs for the Transformer Era", arXiv:2305.13048).

Each block is a *time-mix* (the attention's stand-in) and a *channel-mix* (the MLP's), both
fed a *token shift*: the input mixed per channel with the previous token's,
x'_t = mu * x_t + (1 - mu) * x_{t-1}. Time-mix (their eq. 14-16):

    r_t = W_r x'_t,  k_t = W_k x'_t,  v_t = W_v x'_t
    wkv_t = (sum_{i<t} e^{-(t-1-i) w + k_i} v_i + e^{u + k_t} v_t)
          / (sum_{i<t} e^{-(t-1-i) w + k_i}     + e^{u + k_t})
    o_t = W_o (sigmoid(r_t) * wkv_t)

per channel, with decay w = exp(time_decay) > 0 and a bonus u (time_first) for the current
token. Channel-mix: o_t = sigmoid(W_r x'_t) * W_v relu(W_k x'_t)^2.

wkv as an RNN keeps a = sum e^{..} v and b = sum e^{..}, which overflow: the stable form
(the reference implementation's) stores them scaled by e^{-p}, p the running max exponent:

    q = max(p, u + k_t);    wkv_t = (e^{p-q} a + e^{u+k_t-q} v_t) / (e^{p-q} b + e^{u+k_t-q})
    q' = max(p - w, k_t);   a = e^{p-w-q'} a + e^{k_t-q'} v_t;  b = e^{p-w-q'} b + e^{k_t-q'};
    p = q'

`wkv_step` is that recurrence; `wkv_chunked` computes the same in parallel over chunks of
tokens (inside a chunk wkv is a softmax over exponents, the state enters as one more term), so
training is a few batched ops per chunk rather than a loop over T.

Departures / notes:
- the first LayerNorm after the embedding (`ln0`) sits on the model, not inside block 0;
- Hugging Face's inference-time rescaling (`rescale_every`: halving the residual stream every
  few blocks, for fp16) is left out; `from_hf_rwkv` refuses a model where it would act;
- state = the two shifted inputs and (a, b, p) per layer: 5 * d numbers, whatever the context.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from minillm.models.recurrent.base import RecurrentConfig, RecurrentLM, parallel_scan
from minillm.models.recurrent.state import RecurrentState

__all__ = ["RWKVConfig", "RWKV", "token_shift", "wkv_chunked", "wkv_recurrent", "wkv_step"]

_NEG = -1e38  # "no exponent yet": the running max before the first token


@dataclass
class RWKVConfig(RecurrentConfig):
    ARCH = "rwkv"
    arch: str = "rwkv"              # tells load_model the class
    vocab_size: int = 257           # byte tokenizer: 256 bytes + <|endoftext|>
    context_length: int = 128       # training window (the state itself has no limit)
    d_model: int = 128              # residual width
    n_layer: int = 2                # blocks
    d_attn: int = 0                 # time-mix width (0 = d_model)
    d_ff: int = 0                   # channel-mix width (0 = 4 * d_model)
    norm_eps: float = 1e-5          # LayerNorm epsilon
    tie_embeddings: bool = False    # RWKV-4 has its own head
    dropout: float = 0.0            # on the residual branches
    chunk: int = 32                 # tokens per parallel chunk of the wkv (memory ~ chunk^2)
    scan: str = "auto"              # "chunked", "recurrent" or "auto" (chunked while training)

    def __post_init__(self) -> None:
        self._check(("vocab_size", "context_length", "d_model", "n_layer", "chunk"))
        for name in ("d_attn", "d_ff"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0 (0 = the default)")

    @property
    def attn_width(self) -> int:
        return self.d_attn or self.d_model

    @property
    def ff_width(self) -> int:
        return self.d_ff or 4 * self.d_model

    def state_numbers(self) -> int:
        """Numbers per sequence in the decoding state: two shifted inputs (d_model each) and
        a, b, p (d_attn each) per layer."""
        return self.n_layer * (2 * self.d_model + 3 * self.attn_width)


def token_shift(x: torch.Tensor, last: torch.Tensor | None) -> torch.Tensor:
    """x_{t-1} for every t: (B, T, C) -> (B, T, C), row 0 from `last` (B, C) (None: zeros)."""
    first = torch.zeros_like(x[:, :1]) if last is None else last[:, None]
    return torch.cat([first, x[:, :-1]], dim=1)


def wkv_step(w: torch.Tensor, u: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
             a: torch.Tensor, b: torch.Tensor, p: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One token of the stable wkv recurrence (module docstring).

    Args:
        w: (C,) decay per step, > 0 (exp(time_decay)).
        u: (C,) bonus of the current token.
        k, v: (B, C) this token's key and value.
        a, b, p: (B, C) the state: numerator and denominator scaled by e^{-p}.

    Returns:
        wkv (B, C) and the new a, b, p.
    """
    q = torch.maximum(p, u + k)
    e1, e2 = torch.exp(p - q), torch.exp(u + k - q)
    out = (e1 * a + e2 * v) / (e1 * b + e2)
    q = torch.maximum(p - w, k)
    e1, e2 = torch.exp(p - w - q), torch.exp(k - q)
    return out, e1 * a + e2 * v, e1 * b + e2, q


def wkv_recurrent(w, u, k, v, a, b, p):
    """`wkv_step` over (B, T, C) keys and values; returns wkv (B, T, C) and the final a, b, p."""
    outs = []
    for t in range(k.size(1)):
        out, a, b, p = wkv_step(w, u, k[:, t], v[:, t], a, b, p)
        outs.append(out)
    return torch.stack(outs, dim=1), a, b, p


def wkv_chunked(w: torch.Tensor, u: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                a: torch.Tensor, b: torch.Tensor, p: torch.Tensor, chunk: int = 32
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The wkv of `wkv_recurrent`, in parallel within chunks of `chunk` tokens.

    Inside a chunk starting after state (a, b, p), token j (0-based in the chunk) weighs token
    i < j by e^{-(j-1-i) w + k_i}, itself by e^{u + k_j}, and the state by e^{p - j w} (a and b
    already hold e^{-p}-scaled sums): a softmax over i per channel, made stable by subtracting
    the row's max exponent.

    Args and returns as `wkv_recurrent`, plus `chunk`: tokens per parallel step.
    """
    B, T, C = k.shape
    outs = []
    for s in range(0, T, chunk):
        kc, vc = k[:, s:s + chunk], v[:, s:s + chunk]         # (B, L, C)
        L = kc.size(1)
        j = torch.arange(L, device=k.device)
        lag = (j[:, None] - 1 - j[None, :]).to(k.dtype)      # (L, L): j - 1 - i
        e = -lag[..., None] * w + kc[:, None]                 # (B, L_j, L_i, C)
        e = torch.where((j[:, None] == j[None, :])[..., None], u + kc[:, None], e)
        e = e.masked_fill((j[None, :] > j[:, None])[..., None], float("-inf"))
        e_state = p[:, None] - j[:, None].to(k.dtype) * w   # (B, L, C)
        m = torch.maximum(e.amax(2), e_state)                 # (B, L, C)
        wt, ws = torch.exp(e - m[:, :, None]), torch.exp(e_state - m)
        num = torch.einsum("bjic,bic->bjc", wt, vc) + ws * a[:, None]
        den = wt.sum(2) + ws * b[:, None]
        outs.append(num / den)
        # the state after the chunk: token i decays (L-1-i) steps, the old state L steps
        e_k = kc - (L - 1 - j).to(k.dtype)[:, None] * w       # (B, L, C)
        e_old = p - L * w                                     # (B, C)
        q = torch.maximum(e_k.amax(1), e_old)
        wk, wo = torch.exp(e_k - q[:, None]), torch.exp(e_old - q)
        a = (wk * vc).sum(1) + wo * a
        b = wk.sum(1) + wo * b
        p = q
    return torch.cat(outs, dim=1), a, b, p


class TimeMix(nn.Module):
    def __init__(self, c: RWKVConfig):
        super().__init__()
        A = c.attn_width
        self.time_decay = nn.Parameter(torch.linspace(-5.0, 1.0, A))   # w = exp(time_decay)
        self.time_first = nn.Parameter(torch.zeros(A))                 # u
        ramp = torch.linspace(0.0, 1.0, c.d_model)
        self.mix_k, self.mix_v = nn.Parameter(ramp.clone()), nn.Parameter(ramp.clone())
        self.mix_r = nn.Parameter(ramp.sqrt())
        self.key = nn.Linear(c.d_model, A, bias=False)
        self.value = nn.Linear(c.d_model, A, bias=False)
        self.receptance = nn.Linear(c.d_model, A, bias=False)
        self.output = nn.Linear(A, c.d_model, bias=False)
        self.c = c  # read at every forward: chunk and scan follow the model's config

    def forward(self, x: torch.Tensor, st: dict[str, torch.Tensor]) -> torch.Tensor:
        prev = token_shift(x, st.get("att_x"))
        mix = lambda mu: x * mu + prev * (1 - mu)  # noqa: E731
        k, v = self.key(mix(self.mix_k)), self.value(mix(self.mix_v))   # (B, T, A)
        r = torch.sigmoid(self.receptance(mix(self.mix_r)))
        w = torch.exp(self.time_decay)
        if x.size(1) == 1 and "a" in st:                   # decoding: the recurrence
            out, st["a"], st["b"], st["p"] = wkv_step(w, self.time_first, k[:, 0], v[:, 0],
                                                      st["a"], st["b"], st["p"])
            out = out[:, None]
        else:
            a, b, p = st.get("a"), st.get("b"), st.get("p")
            if a is None:
                a, b = torch.zeros_like(k[:, 0]), torch.zeros_like(k[:, 0])
                p = torch.full_like(k[:, 0], _NEG)
            if parallel_scan(self.c.scan):
                out, st["a"], st["b"], st["p"] = wkv_chunked(w, self.time_first, k, v, a, b, p,
                                                             self.c.chunk)
            else:
                out, st["a"], st["b"], st["p"] = wkv_recurrent(w, self.time_first, k, v, a, b, p)
        st["att_x"] = x[:, -1]
        return self.output(r * out)


class ChannelMix(nn.Module):
    def __init__(self, c: RWKVConfig):
        super().__init__()
        ramp = torch.linspace(0.0, 1.0, c.d_model)
        self.mix_k, self.mix_r = nn.Parameter(ramp.clone()), nn.Parameter(ramp.clone())
        self.key = nn.Linear(c.d_model, c.ff_width, bias=False)
        self.receptance = nn.Linear(c.d_model, c.d_model, bias=False)
        self.value = nn.Linear(c.ff_width, c.d_model, bias=False)

    def forward(self, x: torch.Tensor, st: dict[str, torch.Tensor]) -> torch.Tensor:
        prev = token_shift(x, st.get("ffn_x"))
        k = torch.relu(self.key(x * self.mix_k + prev * (1 - self.mix_k))) ** 2
        r = torch.sigmoid(self.receptance(x * self.mix_r + prev * (1 - self.mix_r)))
        st["ffn_x"] = x[:, -1]
        return r * self.value(k)


class RWKVBlock(nn.Module):
    def __init__(self, c: RWKVConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(c.d_model, eps=c.norm_eps)
        self.ln2 = nn.LayerNorm(c.d_model, eps=c.norm_eps)
        self.time_mix, self.channel_mix = TimeMix(c), ChannelMix(c)
        self.drop = nn.Dropout(c.dropout)

    def forward(self, x: torch.Tensor, st: dict[str, torch.Tensor]) -> torch.Tensor:
        x = x + self.drop(self.time_mix(self.ln1(x), st))
        return x + self.drop(self.channel_mix(self.ln2(x), st))


class RWKV(RecurrentLM):
    """Embedding -> LayerNorm -> RWKV blocks -> LayerNorm -> head."""

    config_class = RWKVConfig

    def __init__(self, config: RWKVConfig):
        super().__init__()
        self.config = c = config
        self.embed = nn.Embedding(c.vocab_size, c.d_model)
        self.ln0 = nn.LayerNorm(c.d_model, eps=c.norm_eps)
        self.blocks = nn.ModuleList(RWKVBlock(c) for _ in range(c.n_layer))
        self.ln_out = nn.LayerNorm(c.d_model, eps=c.norm_eps)
        self.lm_head = nn.Linear(c.d_model, c.vocab_size, bias=False)
        nn.init.normal_(self.embed.weight, std=0.02)
        if c.tie_embeddings:
            self.lm_head.weight = self.embed.weight

    def init_state(self, batch_size: int) -> RecurrentState:
        c, (device, dtype) = self.config, self._dtype()
        zeros = lambda n: torch.zeros(batch_size, n, device=device, dtype=dtype)  # noqa: E731
        A = c.attn_width
        return RecurrentState([{"att_x": zeros(c.d_model), "ffn_x": zeros(c.d_model),
                                "a": zeros(A), "b": zeros(A), "p": zeros(A).fill_(_NEG)}
                               for _ in range(c.n_layer)])

    def hidden(self, idx: torch.Tensor, state: RecurrentState | None) -> torch.Tensor:
        x = self.ln0(self.embed(idx))                                   # (B, T, C)
        for i, block in enumerate(self.blocks):
            x = block(x, {} if state is None else state[i])
        return self.ln_out(x)

    def matmul_weights(self) -> int:
        c = self.config
        return c.n_layer * (4 * c.d_model * c.attn_width + 2 * c.d_model * c.ff_width
                            + c.d_model ** 2) + c.d_model * c.vocab_size

    def mixing_flops(self) -> int:
        """The wkv update and readout: about 10 FLOPs per channel (exps not counted)."""
        return 10 * self.config.n_layer * self.config.attn_width
