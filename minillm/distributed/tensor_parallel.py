"""Tensor parallelism: each Transformer block's matrices split over ranks (Megatron-LM, 1909.08053).

An MLP Y = B(act(A X)) is split without communication between its two matrices: A by its
output features (column-parallel, rank r holds rows A_r), B by its input features (row-parallel,
columns B_r). Each rank computes act(A_r X) — act is element-wise, so it needs only its own
features — and a partial product B_r act(A_r X); the sum over ranks is Y:

    Y = sum_r B_r act(A_r X)             one all-reduce in forward (the operator g)

and in backward the gradient of the replicated input X is a sum of every rank's partial
gradient, one all-reduce at the block's input (the operator f). f and g are conjugate:

    f: forward identity,   backward all-reduce        (`copy_to_tensor_parallel`)
    g: forward all-reduce, backward identity          (`reduce_from_tensor_parallel`)

Attention splits the same way by heads: the fused QKV projection is column-parallel (rank r
holds the query heads [r H/N, (r+1) H/N) and the key/value heads [r H_kv/N, ...)), the heads
attend locally, and the output projection is row-parallel. So a block costs one all-reduce of
(B, T, C) per sub-layer in forward and one in backward; everything else — embeddings, norms,
the output head and the loss — is replicated, and its gradients come out equal on every rank
(their inputs and upstream gradients are the same everywhere after f and g).

Departures from Megatron-LM, for a course-sized model:
- embeddings and the output head are replicated (no vocabulary-parallel embedding or loss);
- dropout must be 0 (Megatron keeps per-rank RNG streams so replicated regions drop alike);
- ALiBi (its bias is built for all heads) and MoE layers are refused with a clear error;
- `tensor_parallel_gpt` shards an existing one-process model (same weights), and
  `gather_tensor_parallel_state_dict` rebuilds the one-process state dict, so checkpoints are
  ordinary `GPT.save` folders.
"""

from __future__ import annotations

import copy

import torch
import torch.distributed as dist
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from minillm.models.attention import CausalSelfAttention
from minillm.models.gpt import GPT
from minillm.models.mlp import GeluMLP, SwiGLU

__all__ = ["ColumnParallelLinear", "RowParallelLinear", "check_tensor_parallel", "column_shard_rows",
           "copy_to_tensor_parallel", "gather_tensor_parallel_state_dict",
           "reduce_from_tensor_parallel", "tensor_parallel_gpt"]


def _world(group) -> int:
    return dist.get_world_size(group)


class _CopyToTP(torch.autograd.Function):
    """f: identity in forward, all-reduce (sum) of the input gradient in backward."""

    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return x

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous()
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


class _ReduceFromTP(torch.autograd.Function):
    """g: all-reduce (sum) of the partial outputs in forward, identity in backward."""

    @staticmethod
    def forward(ctx, x, group):
        x = x.contiguous()
        dist.all_reduce(x, group=group)
        return x

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def copy_to_tensor_parallel(x: torch.Tensor, group=None) -> torch.Tensor:
    """Megatron's f: x unchanged; its gradient is summed over the ranks of `group`."""
    return _CopyToTP.apply(x, group)


def reduce_from_tensor_parallel(x: torch.Tensor, group=None) -> torch.Tensor:
    """Megatron's g: the sum of x over the ranks of `group`; the gradient passes unchanged."""
    return _ReduceFromTP.apply(x, group)


def column_shard_rows(pieces: list[int], n: int, rank: int) -> torch.Tensor:
    """The output rows rank `rank` of `n` holds: each piece (e.g. q, k, v of a fused projection,
    sizes in order) split evenly, this rank's slices joined: [q_r, k_r, v_r]."""
    rows = torch.arange(sum(pieces))                      # the whole matrix's output rows
    return torch.cat([rearrange(piece, "(n r) -> n r", n=n)[rank] for piece in rows.split(pieces)])


class ColumnParallelLinear(nn.Module):
    """A Linear whose output features are split over ranks: y_r = x A_r^T + b_r.

    The input is replicated; it passes through f, so its gradient is all-reduced in backward.
    No communication in forward: the output stays split (the next layer is row-parallel).

    Attributes:
        parts: the sizes of the pieces this shard is made of, in order (one piece for a plain
            matrix; q, k, v for the fused attention projection), so that the one-process matrix
            is rebuilt piece by piece (`gather_tensor_parallel_state_dict`).
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, group=None,
                 parts: list[int] | None = None):
        super().__init__()
        self.weight = nn.Parameter(weight.detach().clone())         # (out / N, in)
        self.bias = nn.Parameter(bias.detach().clone()) if bias is not None else None
        self.group = group
        self.parts = parts or [weight.shape[0]]

    @classmethod
    def from_linear(cls, linear: nn.Linear, pieces: list[int], group=None) -> ColumnParallelLinear:
        """This rank's shard of `linear`: its output rows cut into `pieces` (sizes summing to
        out_features), each piece split evenly over the ranks and this rank's slices joined."""
        index = column_shard_rows(pieces, _world(group), dist.get_rank(group))
        bias = linear.bias[index] if linear.bias is not None else None
        return cls(linear.weight[index], bias, group, [p // _world(group) for p in pieces])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(copy_to_tensor_parallel(x, self.group), self.weight, self.bias)


class RowParallelLinear(nn.Module):
    """A Linear whose input features are split over ranks: y = sum_r x_r B_r^T + b.

    The input is this rank's split (a column-parallel layer's output); the partial products
    are all-reduced (g), and the bias, replicated, is added once after the sum.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, group=None):
        super().__init__()
        self.weight = nn.Parameter(weight.detach().clone())         # (out, in / N)
        self.bias = nn.Parameter(bias.detach().clone()) if bias is not None else None
        self.group = group

    @classmethod
    def from_linear(cls, linear: nn.Linear, group=None) -> RowParallelLinear:
        """This rank's shard of `linear`: an even slice of its input columns."""
        rank, n = dist.get_rank(group), _world(group)
        return cls(rearrange(linear.weight, "o (n i) -> n o i", n=n)[rank], linear.bias, group)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = reduce_from_tensor_parallel(F.linear(x, self.weight), self.group)
        return y + self.bias if self.bias is not None else y


def check_tensor_parallel(config, tp_size: int) -> None:
    """ValueError unless `config` (a GPTConfig) can be split over `tp_size` ranks."""
    c = config
    for name in ("n_head", "n_kv_head", "d_ff"):
        value = getattr(c, name)
        if value % tp_size:
            raise ValueError(f"{name}={value} is not divisible by the tensor-parallel size "
                             f"{tp_size}: every rank needs {name} / {tp_size} of them; pick a "
                             f"{name} that is a multiple of {tp_size} or another number of ranks")
    if c.positions == "alibi":
        raise ValueError("positions='alibi' is not supported with tensor parallelism (its bias "
                         "is built for all heads at once); use 'rope' or 'learned'")
    if c.n_expert > 0:
        raise ValueError(f"n_expert={c.n_expert}: tensor parallelism splits dense MLPs only; "
                         "spread experts with minillm.distributed.expert_parallel instead")
    if c.dropout:
        raise ValueError(f"dropout={c.dropout}: tensor parallelism here needs dropout=0 (the "
                         "ranks would drop different units of the replicated activations)")


def tensor_parallel_gpt(model: GPT, group=None) -> GPT:
    """This rank's tensor-parallel shard of a one-process GPT (same weights on every rank).

    Args:
        model: the full model, identical on every rank of `group` (it is not changed).
        group: the tensor-parallel process group (default: the whole world).

    Returns:
        A GPT of the same config whose blocks hold this rank's shards (`ColumnParallelLinear` /
        `RowParallelLinear`, under the one-process parameter names) and whose embeddings, norms
        and head are replicated. Its forward returns the full logits and loss on every rank.

    Raises:
        ValueError: heads, key/value heads or d_ff not divisible by the group's size, or an
            unsupported option (`check_tensor_parallel`).
    """
    n = _world(group)
    check_tensor_parallel(model.config, n)
    tp = copy.deepcopy(model)
    for block in tp.blocks:
        attn: CausalSelfAttention = block.attn
        q, kv = attn.n_head * attn.head_dim, attn.n_kv_head * attn.head_dim
        attn.qkv = ColumnParallelLinear.from_linear(attn.qkv, [q, kv, kv], group)
        attn.proj = RowParallelLinear.from_linear(attn.proj, group)
        attn.n_head, attn.n_kv_head = attn.n_head // n, attn.n_kv_head // n
        mlp = block.mlp
        if isinstance(mlp, GeluMLP):
            mlp.fc = ColumnParallelLinear.from_linear(mlp.fc, [mlp.fc.out_features], group)
        elif isinstance(mlp, SwiGLU):
            mlp.gate = ColumnParallelLinear.from_linear(mlp.gate, [mlp.gate.out_features], group)
            mlp.up = ColumnParallelLinear.from_linear(mlp.up, [mlp.up.out_features], group)
        else:
            raise ValueError(f"{type(mlp).__name__} cannot be split; tensor parallelism supports "
                             "GeluMLP and SwiGLU")
        mlp.proj = RowParallelLinear.from_linear(mlp.proj, group)
    return tp


def _gather(t: torch.Tensor, group) -> list[torch.Tensor]:
    pieces = [torch.empty_like(t) for _ in range(_world(group))]
    dist.all_gather(pieces, t.detach().contiguous(), group=group)
    return pieces


def gather_tensor_parallel_state_dict(model: GPT, group=None, grads: bool = False
                                      ) -> dict[str, torch.Tensor]:
    """The one-process state dict (or gradients) of a `tensor_parallel_gpt` shard; every rank of
    `group` must call it and every rank gets the full dict.

    Args:
        model: this rank's shard.
        group: its tensor-parallel group.
        grads: gather the parameters' `.grad` instead of their values (parameters only; a
            tied head is left out).

    Returns:
        name -> full tensor, loadable by `GPT(config).load_weights` (and `GPT.save(weights=...)`).
    """
    column = {name for name, m in model.named_modules() if isinstance(m, ColumnParallelLinear)}
    row = {name for name, m in model.named_modules() if isinstance(m, RowParallelLinear)}
    modules = dict(model.named_modules())
    source = dict(model.named_parameters()) if grads else model.state_dict()
    out = {}
    for key, value in source.items():
        if grads:
            value = value.grad
        owner, _, kind = key.rpartition(".")
        if owner in column:  # per piece (q, k, v), every rank's rows in rank order
            per_rank = [s.split(modules[owner].parts) for s in _gather(value, group)]
            value = torch.cat([rearrange(list(piece), "n r ... -> (n r) ...")
                               for piece in zip(*per_rank, strict=True)])
        elif owner in row and kind == "weight":
            value = rearrange(_gather(value, group), "n o i -> o (n i)")
        out[key] = value.detach().clone()
    return out
