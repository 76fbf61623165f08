"""Mixture of Experts: a router sends each token to k of E expert MLPs.

Switch Transformer (Fedus et al., 2101.03961), GShard (Lepikhin et al., 2006.16668), ST-MoE
(Zoph et al., 2202.08906), Mixtral (Jiang et al., 2401.04088), DeepSeekMoE (Dai et al., 2401.06066).

    p(x)   = softmax(W_r x)                      router, float32 ("selective precision", Switch)
    S(x)   = top-k indices of p(x)
    y(x)   = sum_{i in S(x), kept} g_i(x) E_i(x) (+ shared experts, always on)
    g_i    = p_i (k = 1, Switch)   or   p_i / sum_{j in S} p_j (k > 1, GShard/Mixtral renormalised)

`renormalize` chooses the gate: None (the course's default) renormalises for k > 1 only, as
above; True renormalises for every k (Mixtral: its top-1 weight is 1, so a converted Mixtral
with num_experts_per_tok=1 must set it); False never renormalises.

Capacity (Switch §2.2): each group of tokens (here: one sequence, the batch row) gives every
expert `capacity = ceil(capacity_factor * k * tokens_per_group / E)` slots. Priority: all first
choices before any second choice (GShard), and within a choice earlier tokens first (Switch's
cumulative-sum priority; labml shuffles tokens first instead). Assignments past capacity are
dropped: they contribute nothing, so a token with every choice dropped leaves the layer as zero
and travels on through the residual connection. `capacity_factor=None` drops nothing.

Auxiliary losses (returned beside the output in an `MLPOutput`, already times their
coefficients; nothing is stored on the module during forward):
    balance = alpha * E * sum_i f_i P_i     f_i: share of the N*k top-k assignments that chose
                                            expert i (before capacity), P_i: mean router prob
    z       = beta * mean_tokens (logsumexp_i logits_i)^2          (ST-MoE, Eq. 5)

Departures and conventions:
- f counts all k choices and is divided by k, so the balance loss is 1 (times alpha) under uniform
  routing for every k and is exactly Switch's N*sum f_i P_i at k = 1. Hugging Face's Mixtral
  loss does not divide by k (it is ~k at random init); ours = theirs / k, so Switch's alpha=1e-2
  means the same thing at any k. Mixtral also pools all layers before the product; we add the
  per-layer losses (Switch, ST-MoE). Both conventions are tested in tests/test_moe.py.
- Capacity is per sequence, as in Hugging Face's Switch router; this keeps routing local to a
  rank under expert parallelism (minillm.distributed.expert_parallel).
- Router jitter (Switch) multiplies only the router's input by U(1-eps, 1+eps) while training.
- Shared experts (DeepSeekMoE) are one dense MLP of width n_shared * d_ff that every token uses.

Auxiliary-loss-free balancing (DeepSeek-V3, Liu et al. 2412.19437, §2.1.2), `bias_rate` > 0:
each expert has a bias b_i (a buffer, not a weight) that only *selects*: S(x) = top-k of
p_i(x) + b_i, while the combine weights g come from p_i alone. After every training forward,
b_i -= bias_rate * sign(load_i - mean load) (load before capacity): an overloaded expert becomes
less attractive, an idle one more, with no gradient through the balance and so no loss term
pulling against the language-modelling loss (set `balance_coef=0` for the paper's setting).
V3 applies the update once per step with sigmoid router scores; here it runs in each training
forward (one per step without gradient accumulation) on softmax probabilities, and each
process updates its own copy from its own tokens (DDP's buffer broadcast keeps rank 0's).

Two dispatch paths give the same result (tests/test_moe.py checks both on CPU):
- "loop": the kept assignments sorted by expert, one matmul per expert on its slice. The slice
  sizes are read on the host (`.tolist()`, a device sync) and the Python loop over experts
  breaks a `torch.compile` graph. The default on CPU and for float32/float16 on GPU.
- "grouped": every one of the N*k assignments (dropped ones included, with combine weight 0)
  is sorted by expert, and each expert MLP matmul is one grouped GEMM
  (`torch.nn.functional.grouped_mm`, megablocks' "dropless" idea) over offsets that stay on
  the device. No host sync, fixed shapes, one graph; with a capacity limit the dropped rows
  are computed and thrown away. The default for
  bfloat16 on CUDA when grouped_mm exists (PyTorch >= 2.8; width multiples of 8).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

from minillm.models.base import MLPOutput
from minillm.models.config import check_moe_args

__all__ = ["MoE", "Experts", "Routing", "route", "dispatch_order", "expert_capacity",
           "balance_loss", "router_z_loss", "moe_reference", "routing_stats", "gate_weights",
           "grouped_mm_available"]


def expert_capacity(tokens_per_group: int, n_expert: int, top_k: int,
                    capacity_factor: float | None) -> int | None:
    """Slots per expert and group: ceil(capacity_factor * top_k * tokens / n_expert), at least
    1; None (no limit) when capacity_factor is None."""
    if capacity_factor is None:
        return None
    return max(1, math.ceil(capacity_factor * top_k * tokens_per_group / n_expert))


@dataclass
class Routing:
    """Where each token goes. G groups (sequences) of S tokens, E experts, k choices."""
    logits: torch.Tensor        # (G, S, E) float32 router logits
    probs: torch.Tensor         # (G, S, E) float32 softmax
    expert_index: torch.Tensor  # (G, S, k) chosen experts, best first
    weights: torch.Tensor       # (G, S, k) combine weights g
    keep: torch.Tensor          # (G, S, k) False where capacity dropped the assignment
    capacity: int | None
    # under expert parallelism: (rows sent to, rows received from) each rank; None in one process
    splits: tuple[list[int], list[int]] | None = None


def gate_weights(top_p: torch.Tensor, renormalize: bool | None = None) -> torch.Tensor:
    """Combine weights from the top-k probabilities (..., k): renormalised to sum to 1 when
    `renormalize` is True, or None and k > 1 (the course's convention: Switch's raw p_i at
    k = 1); the raw probabilities when False."""
    if renormalize is None:
        renormalize = top_p.shape[-1] > 1
    return top_p / top_p.sum(-1, keepdim=True) if renormalize else top_p


def route(logits: torch.Tensor, top_k: int, capacity: int | None,
          renormalize: bool | None = None, bias: torch.Tensor | None = None) -> Routing:
    """Top-k routing with capacity. Args: logits (G, S, E) router logits; top_k; capacity per
    expert and group (None: keep all); renormalize (see `gate_weights`); bias (E,) added to the
    probabilities for choosing only (auxiliary-loss-free balancing), never to the weights.
    Returns: a `Routing`."""
    probs = torch.softmax(logits.float(), dim=-1)
    if bias is None:
        top_p, idx = torch.topk(probs, top_k, dim=-1)                      # (G, S, k)
    else:
        idx = torch.topk(probs + bias.float(), top_k, dim=-1).indices
        top_p = probs.gather(-1, idx)
    weights = gate_weights(top_p, renormalize)
    if capacity is None:
        keep = torch.ones_like(idx, dtype=torch.bool)
    else:
        onehot = F.one_hot(idx, logits.shape[-1])
        # priority order: choice 0 of every token, then choice 1, ...; tokens in order
        ranked = rearrange(onehot, "g s k e -> g (k s) e")
        slot = (torch.cumsum(ranked, dim=1) - 1) * ranked                  # 0-based slot
        slot = rearrange(slot.sum(-1), "g (k s) -> g s k", k=top_k)
        keep = slot < capacity
    return Routing(logits.float(), probs, idx, weights, keep, capacity)


def dispatch_order(r: Routing) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The assignments `r` kept, sorted by expert (stably: in token order within an expert).

    Returns: (expert, token, weight), each (M,) for the M kept assignments: the expert, the
    token's row in the flattened (G S) tokens, and its combine weight g.
    """
    G, S, k = r.expert_index.shape
    expert = rearrange(r.expert_index, "g s k -> (g s k)")
    token = repeat(torch.arange(G * S, device=expert.device), "n -> (n k)", k=k)
    weight = rearrange(r.weights, "g s k -> (g s k)")
    kept = rearrange(r.keep, "g s k -> (g s k)").nonzero().squeeze(1)
    expert, token, weight = expert[kept], token[kept], weight[kept]
    order = torch.argsort(expert, stable=True)
    return expert[order], token[order], weight[order]


def balance_loss(probs: torch.Tensor, expert_index: torch.Tensor,
                 token_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Switch's load-balancing loss E * sum_i f_i P_i (without alpha).

    Args:
        probs: (..., E) router probabilities.
        expert_index: (..., k) the top-k choices (before capacity).
        token_mask: optional (...) 1 for real tokens, 0 for padding (left out of f and P).
    Returns: a scalar; 1.0 when routing is uniform, E when every token picks one expert.
    """
    E, k = probs.shape[-1], expert_index.shape[-1]
    probs, expert_index = probs.reshape(-1, E).float(), expert_index.reshape(-1, k)
    m = torch.ones(probs.shape[0], device=probs.device) if token_mask is None \
        else token_mask.reshape(-1).to(probs.device, torch.float32)
    counts = torch.zeros(E, device=probs.device).index_add_(
        0, expert_index.reshape(-1), m.repeat_interleave(k))
    f = counts / (k * m.sum())                      # share of assignments, sums to 1
    P = (probs * m[:, None]).sum(0) / m.sum()       # mean probability
    return E * (f * P).sum()


def router_z_loss(logits: torch.Tensor, token_mask: torch.Tensor | None = None) -> torch.Tensor:
    """ST-MoE's router z-loss: mean over tokens of logsumexp(logits)^2 (without beta)."""
    z = torch.logsumexp(logits.float(), dim=-1) ** 2
    if token_mask is None:
        return z.mean()
    m = token_mask.to(z.device, torch.float32).reshape(z.shape)
    return (z * m).sum() / m.sum()


class Experts(nn.Module):
    """E expert MLPs with stacked weights (Linear layout: (E, out, in)).

    `forward(x, counts)` takes tokens already sorted by expert, `counts[e]` rows for expert e,
    and runs one matmul batch per expert on its contiguous slice.
    """

    def __init__(self, n_expert: int, d_model: int, d_ff: int, mlp: str = "swiglu",
                 bias: bool = False):
        super().__init__()
        if mlp not in ("swiglu", "gelu"):
            raise ValueError(f"mlp={mlp!r}: experts are 'swiglu' or 'gelu' MLPs")
        self.n_expert, self.mlp = n_expert, mlp
        self.w_in = nn.Parameter(torch.empty(n_expert, d_ff, d_model))       # gate (swiglu) / fc
        self.w_up = nn.Parameter(torch.empty(n_expert, d_ff, d_model)) if mlp == "swiglu" else None
        self.w_out = nn.Parameter(torch.empty(n_expert, d_model, d_ff))
        self.b_in = nn.Parameter(torch.zeros(n_expert, d_ff)) if bias else None
        self.b_up = nn.Parameter(torch.zeros(n_expert, d_ff)) if bias and mlp == "swiglu" else None
        self.b_out = nn.Parameter(torch.zeros(n_expert, d_model)) if bias else None

    def reset_parameters(self, std: float, out_std: float) -> None:
        for w in (self.w_in, self.w_up):
            if w is not None:
                nn.init.normal_(w, std=std)
        nn.init.normal_(self.w_out, std=out_std)
        for b in (self.b_in, self.b_up, self.b_out):
            if b is not None:
                nn.init.zeros_(b)

    def _weights(self) -> list[tuple]:
        """Per-expert views (w_in, w_up, w_out, b_in, b_up, b_out). `unbind` once: indexing a
        parameter per expert would materialise a full-size gradient for every expert."""
        parts = [t.unbind(0) if t is not None else (None,) * self.n_expert
                 for t in (self.w_in, self.w_up, self.w_out, self.b_in, self.b_up, self.b_out)]
        return list(zip(*parts, strict=True))

    def _run(self, x: torch.Tensor, w: tuple) -> torch.Tensor:
        w_in, w_up, w_out, b_in, b_up, b_out = w
        h = F.linear(x, w_in, b_in)
        if self.mlp == "swiglu":
            h = F.silu(h) * F.linear(x, w_up, b_up)
        else:
            h = F.gelu(h, approximate="tanh")
        return F.linear(h, w_out, b_out)

    def expert(self, x: torch.Tensor, e: int) -> torch.Tensor:
        """Expert e on x (n, C) -> (n, C)."""
        return self._run(x, self._weights()[e])

    def grouped(self, x: torch.Tensor, offsets: torch.Tensor, expert: torch.Tensor) -> torch.Tensor:
        """x: (M, C) sorted by expert, rows offsets[e-1]:offsets[e] for expert e (int32 (E,) on
        x's device, offsets[-1] = M); expert (M,) each row's expert (picks the biases).
        -> (M, C). Grouped GEMMs: no host sync, no loop over experts."""
        def linear(a, w, b):                         # w (E, out, in): a @ w[e].T per group
            y = _grouped_mm(a, w.transpose(1, 2), offs=offsets)
            return y if b is None else y + b[expert]
        h = linear(x, self.w_in, self.b_in)
        if self.mlp == "swiglu":
            h = F.silu(h) * linear(x, self.w_up, self.b_up)
        else:
            h = F.gelu(h, approximate="tanh")
        return linear(h, self.w_out, self.b_out)

    def forward(self, x: torch.Tensor, counts: list[int]) -> torch.Tensor:
        """x: (sum(counts), C) sorted by expert -> (sum(counts), C)."""
        out, start, weights = [], 0, self._weights()
        for e, n in enumerate(counts):
            if n:
                out.append(self._run(x[start:start + n], weights[e]))
            start += n
        return torch.cat(out) if out else x.new_zeros(0, x.shape[-1])


class MoE(nn.Module):
    """A sparse MoE feed-forward layer: (B, T, C) -> (B, T, C).

    `forward` returns an `MLPOutput`: the output, the auxiliary losses {"moe_balance",
    "moe_z"} (times their coefficients) and the `Routing` (detached; `routing_stats` turns it
    into load per expert, dropped share and router entropy). With `bias_rate` > 0 the
    routing selects with a balancing bias (module docstring).
    """

    def __init__(self, d_model: int, n_expert: int, d_ff: int, *, top_k: int = 2,
                 mlp: str = "swiglu", bias: bool = False, capacity_factor: float | None = None,
                 balance_coef: float = 1e-2, z_coef: float = 1e-3, router_jitter: float = 0.0,
                 n_shared_expert: int = 0, dropout: float = 0.0, init_std: float = 0.02,
                 n_layer: int = 1, renormalize: bool | None = None, impl: str | None = None,
                 bias_rate: float = 0.0):
        super().__init__()
        check_moe_args(n_expert, top_k, capacity_factor, router_jitter, n_shared_expert)
        if bias_rate < 0:
            raise ValueError(f"bias_rate={bias_rate} must be >= 0 (0 turns the balancing bias off)")
        if impl not in (None, "loop", "grouped"):
            raise ValueError(f"impl={impl!r} must be None (automatic), 'loop' or 'grouped'")
        self.n_expert, self.top_k, self.capacity_factor = n_expert, top_k, capacity_factor
        self.renormalize, self.impl = renormalize, impl
        self.balance_coef, self.z_coef, self.router_jitter = balance_coef, z_coef, router_jitter
        self.router = nn.Parameter(torch.empty(n_expert, d_model, dtype=torch.float32))
        # the selection bias of auxiliary-loss-free balancing: saved with the weights only
        # when it is on, so checkpoints without it keep loading
        self.bias_rate = bias_rate
        self.register_buffer("expert_bias", torch.zeros(n_expert, dtype=torch.float32),
                             persistent=bias_rate > 0)
        self.experts = Experts(n_expert, d_model, d_ff, mlp, bias)
        # shared experts (DeepSeekMoE): one always-on expert of width n_shared * d_ff
        self.shared = Experts(1, d_model, n_shared_expert * d_ff, mlp, bias) \
            if n_shared_expert else None
        self.dropout = nn.Dropout(dropout)
        nn.init.normal_(self.router, std=init_std)
        for experts in (self.experts, self.shared):
            if experts is not None:
                experts.reset_parameters(init_std, init_std / math.sqrt(2 * n_layer))

    @classmethod
    def from_config(cls, config) -> MoE:
        """The MoE layer a `GPTConfig` with n_expert > 0 describes."""
        return cls(config.d_model, config.n_expert, config.expert_d_ff, top_k=config.top_k,
                   mlp=config.mlp, bias=config.bias, capacity_factor=config.capacity_factor,
                   balance_coef=config.moe_balance_coef, z_coef=config.moe_z_coef,
                   router_jitter=config.router_jitter, n_shared_expert=config.n_shared_expert,
                   dropout=config.dropout, init_std=config.init_std, n_layer=config.n_layer,
                   renormalize=config.moe_renormalize, bias_rate=config.moe_bias_rate)

    def router_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C) -> (B, T, E) float32 logits, with jitter while training."""
        x = x.float()
        if self.training and self.router_jitter > 0:
            x = x * torch.empty_like(x).uniform_(1 - self.router_jitter, 1 + self.router_jitter)
        with torch.autocast(x.device.type, enabled=False):
            return F.linear(x, self.router.float())

    def route(self, x: torch.Tensor) -> Routing:
        capacity = expert_capacity(x.shape[1], self.n_expert, self.top_k, self.capacity_factor)
        return route(self.router_logits(x), self.top_k, capacity, self.renormalize,
                     self.expert_bias if self.bias_rate > 0 else None)

    def dispatch_impl(self, x: torch.Tensor) -> str:
        """The dispatch path for input x: `impl` when set, else "grouped" for bfloat16 on CUDA
        (where grouped GEMMs exist and the widths are multiples of 8), else "loop"."""
        if self.impl is not None:
            return self.impl
        w = self.experts.w_in
        aligned = x.shape[-1] % 8 == 0 and w.shape[1] % 8 == 0
        return "grouped" if (x.is_cuda and x.dtype == torch.bfloat16 and w.dtype == x.dtype
                             and aligned and grouped_mm_available()) else "loop"

    def forward(self, x: torch.Tensor) -> MLPOutput:
        """(B, T, C) -> MLPOutput(hidden (B, T, C), aux_losses, routing)."""
        r = self.route(x)
        xf = rearrange(x, "b t c -> (b t) c")
        if self.dispatch_impl(x) == "grouped":
            out = self._grouped_forward(xf, r)
            if self.shared is not None:
                out = out + self.shared.expert(xf, 0)
            return self.output(rearrange(out, "(b t) c -> b t c", b=x.shape[0]), r)
        expert, token, weight = dispatch_order(r)                          # (M,) each
        counts = torch.bincount(expert, minlength=self.n_expert).tolist()
        y = self.experts(xf[token], counts) * weight[:, None].to(x.dtype)  # (M, C)
        out = torch.zeros_like(xf).index_add_(0, token, y)
        if self.shared is not None:
            out = out + self.shared.expert(xf, 0)
        return self.output(rearrange(out, "(b t) c -> b t c", b=x.shape[0]), r)

    def _grouped_forward(self, xf: torch.Tensor, r: Routing) -> torch.Tensor:
        """The combined expert outputs (N, C) for tokens xf (N, C), with fixed shapes: all N*k
        assignments sorted by expert (stably, so in token order within an expert), each run
        by its expert; a dropped one gets combine weight 0 (and so adds exactly 0 and passes
        no gradient), which costs its rows' compute but needs no count on the host."""
        E, k = self.n_expert, self.top_k
        expert = rearrange(r.expert_index, "g s k -> (g s k)")
        order = torch.argsort(expert, stable=True)
        expert, token = expert[order], order // k
        weight = rearrange(torch.where(r.keep, r.weights, 0.0), "g s k -> (g s k)")[order]
        counts = torch.zeros(E, dtype=torch.int64, device=xf.device).index_add_(
            0, expert, torch.ones_like(expert))
        offsets = torch.cumsum(counts, 0).to(torch.int32)
        y = self.experts.grouped(xf[token], offsets, expert) * weight[:, None].to(xf.dtype)
        return torch.zeros_like(xf).index_add_(0, token, y)

    def output(self, out: torch.Tensor, r: Routing) -> MLPOutput:
        """The layer's result from its combined expert outputs (B, T, C) and the routing that
        made them: dropout, the auxiliary losses, the balancing bias's update while training,
        and the routing detached (shared with the expert-parallel layer,
        minillm.distributed.expert_parallel)."""
        if self.training and self.bias_rate > 0:
            self.update_expert_bias(r.expert_index)
        aux = {"moe_balance": self.balance_coef * balance_loss(r.probs, r.expert_index),
               "moe_z": self.z_coef * router_z_loss(r.logits)}
        routing = replace(r, **{k: v.detach() for k, v in vars(r).items() if torch.is_tensor(v)})
        return MLPOutput(self.dropout(out), aux, routing)

    @torch.no_grad()
    def update_expert_bias(self, expert_index: torch.Tensor) -> None:
        """DeepSeek-V3's update: b_i -= bias_rate * sign(load_i - mean load), the load counted
        over the top-k choices of `expert_index` (..., k), before capacity."""
        load = torch.bincount(expert_index.reshape(-1), minlength=self.n_expert).float()
        self.expert_bias -= self.bias_rate * torch.sign(load - load.mean())


def _grouped_mm(a: torch.Tensor, b: torch.Tensor, offs: torch.Tensor) -> torch.Tensor:
    """torch.nn.functional.grouped_mm (public in recent PyTorch), else torch._grouped_mm (2.8+)."""
    fn = getattr(F, "grouped_mm", None) or torch._grouped_mm
    return fn(a, b, offs=offs)


def grouped_mm_available() -> bool:
    """Whether this PyTorch has grouped GEMMs (torch._grouped_mm since 2.8)."""
    return hasattr(F, "grouped_mm") or hasattr(torch, "_grouped_mm")


def routing_stats(routing: Routing, n_expert: int) -> dict[str, torch.Tensor]:
    """Diagnostics of one MoE layer's routing: {"load" (E,) share of the top-k assignments per
    expert (before capacity), "dropped" share of assignments over capacity, "entropy" mean
    router entropy in nats}; under expert parallelism also "sent_to" and "received_from" (W,):
    the token rows this rank exchanged with each rank."""
    with torch.no_grad():
        load = torch.bincount(routing.expert_index.reshape(-1), minlength=n_expert)
        entropy = -(routing.probs * torch.log(routing.probs.clamp_min(1e-20))).sum(-1).mean()
        stats = {"load": load.float() / routing.expert_index.numel(),
                 "dropped": 1.0 - routing.keep.float().mean(),
                 "entropy": entropy}
        if routing.splits is not None:
            stats["sent_to"], stats["received_from"] = map(torch.tensor, routing.splits)
        return stats


def moe_reference(moe: MoE, x: torch.Tensor) -> torch.Tensor:
    """The MoE layer written as a loop over tokens (teaching reference; slow).

    Capacity is filled in priority order: choice j of every token before choice j + 1, and
    earlier tokens first; a full expert turns the assignment away.
    """
    B, T, C = x.shape
    probs = torch.softmax(moe.router_logits(x), dim=-1)                    # (B, T, E)
    cap = expert_capacity(T, moe.n_expert, moe.top_k, moe.capacity_factor)
    out = torch.zeros_like(x)
    for b in range(B):
        used = [0] * moe.n_expert
        if moe.bias_rate > 0:                                              # choose with bias
            top_i = torch.topk(probs[b] + moe.expert_bias, moe.top_k, dim=-1).indices
            top_p = probs[b].gather(-1, top_i)                             # weigh without
        else:
            top_p, top_i = torch.topk(probs[b], moe.top_k, dim=-1)          # (T, k)
        gates = gate_weights(top_p, moe.renormalize)
        for j in range(moe.top_k):
            for t in range(T):
                e = int(top_i[t, j])
                if cap is not None and used[e] >= cap:
                    continue                                               # dropped
                used[e] += 1
                y = moe.experts.expert(x[b, t][None], e)[0]
                out[b, t] = out[b, t] + gates[t, j].to(x.dtype) * y
        if moe.shared is not None:
            out[b] = out[b] + moe.shared.expert(x[b], 0)
    return out
