"""Expert parallelism: the experts of an MoE layer spread over processes (GShard, 2006.16668).

With W processes and E experts, rank r holds experts [r E/W, (r+1) E/W); the router (and any
shared experts) is replicated. Each rank routes its own tokens, then

    1. sorts its kept (token, expert) assignments by expert, hence by destination rank;
    2. exchanges the per-expert counts (all_to_all_single of E integers) so every rank knows
       how many rows it will receive from each source, for each of its experts;
    3. all_to_all_single with uneven splits sends the token vectors to their experts' ranks;
    4. runs its local experts (one matmul batch per expert);
    5. all_to_all_single with the splits reversed brings the outputs home, where they are
       weighted by the gates and added up, exactly as in the single-process layer.

The backward of an all-to-all is the all-to-all with input and output splits swapped
(`_AllToAll`). The rows exchanged with each rank come back in the output's routing
(`Routing.splits`; `routing_stats` reports them as "sent_to" and "received_from"): the layer
stores nothing during forward. Capacity is per sequence, so routing needs no communication and
the outputs equal the single-process layer's on the same tokens. Aux losses and stats are those
of each rank's tokens (like a per-group loss in Switch); the replicated parameters' gradients
are per-rank partial sums that data parallelism all-reduces (`replicated_parameters`).

`scripts/distributed/expert_parallel_check.py` checks it against the single-process layer and
times the all-to-all under torchrun.
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.distributed as dist
from einops import rearrange, reduce, repeat
from torch import nn

from minillm.models.base import MLPOutput
from minillm.models.moe import Experts, MoE, dispatch_order

__all__ = ["ExpertParallelMoE", "check_expert_parallel"]


def check_expert_parallel(n_expert: int, world_size: int) -> int:
    """Experts per rank; ValueError unless n_expert is a multiple of world_size."""
    if n_expert % world_size:
        raise ValueError(f"n_expert={n_expert} is not divisible by world_size={world_size}: "
                         f"expert parallelism gives every rank n_expert / world_size experts; "
                         f"use a multiple of {world_size} experts or another number of processes")
    return n_expert // world_size


class _AllToAll(torch.autograd.Function):
    """all_to_all_single with uneven splits; its gradient flows back by the reverse exchange."""

    @staticmethod
    def forward(ctx, x, out_splits, in_splits, group):
        ctx.splits, ctx.group = (out_splits, in_splits), group
        return _exchange(x, out_splits, in_splits, group)

    @staticmethod
    def backward(ctx, grad):
        out_splits, in_splits = ctx.splits
        return _exchange(grad, in_splits, out_splits, ctx.group), None, None, None


def _exchange(x: torch.Tensor, out_splits: list[int], in_splits: list[int], group) -> torch.Tensor:
    out = x.new_empty(sum(out_splits), *x.shape[1:])
    dist.all_to_all_single(out, x.contiguous(), out_splits, in_splits, group=group)
    return out


class ExpertParallelMoE(nn.Module):
    """An `MoE` layer whose experts are split over the ranks of `group`.

    Built from a full single-process `MoE` (identical on every rank): it keeps that layer's
    router and shared experts and only this rank's slice of its experts (the layer passed in
    is taken over). forward: (B, T, C) local tokens -> (B, T, C).
    """

    def __init__(self, moe: MoE, group: dist.ProcessGroup | None = None):
        super().__init__()
        self.group = group
        self.world_size = dist.get_world_size(group)
        self.rank = dist.get_rank(group)
        self.n_local = check_expert_parallel(moe.n_expert, self.world_size)
        full = moe.experts
        lo, hi = self.rank * self.n_local, (self.rank + 1) * self.n_local
        d_ff, d_model = full.w_in.shape[1:]
        local = Experts(self.n_local, d_model, d_ff, full.mlp, bias=full.b_in is not None)
        with torch.no_grad():
            for name, p in local.named_parameters():
                p.copy_(getattr(full, name)[lo:hi])
        moe.experts = local.to(full.w_in.device, full.w_in.dtype)
        self.moe = moe
        self.first_expert = lo

    def replicated_parameters(self) -> list[nn.Parameter]:
        """Parameters every rank holds (router, shared experts): all-reduce their gradients."""
        return [p for n, p in self.moe.named_parameters() if not n.startswith("experts.")]

    def forward(self, x: torch.Tensor) -> MLPOutput:
        """(B, T, C) -> MLPOutput(hidden, aux_losses, routing), as `MoE.forward`; the routing's
        `splits` are the rows sent to and received from each rank."""
        moe, W, El = self.moe, self.world_size, self.n_local
        r = moe.route(x)
        xf = rearrange(x, "b t c -> (b t) c")
        expert, token, weight = dispatch_order(r)              # by expert = by destination rank
        # 1. counts: send_counts[e] rows for global expert e = w El + j (rank w's local expert
        #    j); recv_counts[s El + j] rows from rank s for my local expert j
        send_counts = torch.bincount(expert, minlength=moe.n_expert)
        recv_counts = torch.empty_like(send_counts)
        dist.all_to_all_single(recv_counts, send_counts, group=self.group)
        send_splits = reduce(send_counts, "(w j) -> w", "sum", w=W).tolist()
        recv_splits = reduce(recv_counts, "(w j) -> w", "sum", w=W).tolist()
        # 2. tokens out, ordered by source rank then local expert
        received = _AllToAll.apply(xf[token], recv_splits, send_splits, self.group)
        # 3. regroup by local expert, compute, restore the arrival order
        local_expert = repeat(torch.arange(El, device=x.device), "j -> (w j)", w=W)
        local_expert = local_expert.repeat_interleave(recv_counts)  # one per received row
        perm = torch.argsort(local_expert, stable=True)
        inverse = torch.empty_like(perm)
        inverse[perm] = torch.arange(perm.numel(), device=x.device)
        counts = torch.bincount(local_expert, minlength=El).tolist()
        y = moe.experts(received[perm], counts)[inverse]
        # 4. outputs home, in the order they left; weight by the gates and add up
        back = _AllToAll.apply(y, send_splits, recv_splits, self.group)
        out = torch.zeros_like(xf).index_add_(0, token, back * weight[:, None].to(x.dtype))
        if moe.shared is not None:
            out = out + moe.shared.expert(xf, 0)
        out = rearrange(out, "(b t) c -> b t c", b=x.shape[0])
        return moe.output(out, replace(r, splits=(send_splits, recv_splits)))
