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
(`_AllToAll`). Capacity is per sequence, so routing needs no communication and the outputs equal
the single-process layer's on the same tokens. Aux losses and stats are those of each rank's
tokens (like a per-group loss in Switch); the replicated parameters' gradients are per-rank
partial sums that data parallelism all-reduces (`replicated_parameters`).

Run as a module to check it against the single-process layer or to time the all-to-all:
    torchrun --standalone --nproc_per_node=2 -m minillm.distributed.expert_parallel --check out.json
(`--bench bench.json` times it; both flags together run both in one launch.)
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.distributed as dist
from torch import nn

from minillm.models.base import MLPOutput
from minillm.models.moe import Experts, MoE, routing_stats

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
    seconds = 0.0  # time spent inside the exchanges (for the benchmark)

    @staticmethod
    def forward(ctx, x, out_splits, in_splits, group):
        ctx.splits, ctx.group = (out_splits, in_splits), group
        return _exchange(x, out_splits, in_splits, group)

    @staticmethod
    def backward(ctx, grad):
        out_splits, in_splits = ctx.splits
        return _exchange(grad, in_splits, out_splits, ctx.group), None, None, None


def _exchange(x: torch.Tensor, out_splits: list[int], in_splits: list[int], group) -> torch.Tensor:
    t0 = time.perf_counter()
    out = x.new_empty(sum(out_splits), *x.shape[1:])
    dist.all_to_all_single(out, x.contiguous(), out_splits, in_splits, group=group)
    _AllToAll.seconds += time.perf_counter() - t0
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
        """(B, T, C) -> MLPOutput(hidden, aux_losses, routing), as `MoE.forward`."""
        moe, W, El = self.moe, self.world_size, self.n_local
        B, T, C = x.shape
        r = moe.route(x)
        xf = x.reshape(B * T, C)
        expert = r.expert_index.reshape(-1)
        token = torch.arange(B * T, device=x.device).repeat_interleave(moe.top_k)
        weight = r.weights.reshape(-1)
        kept = r.keep.reshape(-1).nonzero().squeeze(1)
        expert, token, weight = expert[kept], token[kept], weight[kept]
        order = torch.argsort(expert, stable=True)             # by expert = by destination rank
        token, weight = token[order], weight[order]
        # 1. counts: send_counts[e] rows for global expert e; recv_counts[s * El + j] rows from
        #    rank s for my local expert j
        send_counts = torch.bincount(expert, minlength=moe.n_expert)
        recv_counts = torch.empty_like(send_counts)
        dist.all_to_all_single(recv_counts, send_counts, group=self.group)
        send_splits = send_counts.view(W, El).sum(1).tolist()
        recv_splits = recv_counts.view(W, El).sum(1).tolist()
        self.last_splits = (send_splits, recv_splits)           # rows to / from each rank
        # 2. tokens out, ordered by source rank then local expert
        received = _AllToAll.apply(xf[token], recv_splits, send_splits, self.group)
        # 3. regroup by local expert, compute, restore the arrival order
        local_expert = torch.arange(El, device=x.device).repeat(W)
        local_expert = local_expert.repeat_interleave(recv_counts)
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
        return moe.output(out.reshape(B, T, C), r)


# ---- the check and the benchmark, run under torchrun -----------------------------------------
def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item() if a.numel() else 0.0


def run_check(args) -> dict:
    """Expert-parallel outputs, aux losses and gradients against the single-process MoE."""
    rank, W = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(args.seed)               # the same layer and the same data on every rank
    ref = MoE(args.d_model, args.n_expert, args.d_ff, top_k=args.top_k, mlp=args.mlp,
              capacity_factor=args.capacity_factor, n_shared_expert=args.n_shared_expert)
    with torch.no_grad():
        ref.router.normal_(std=0.5)            # confident, uneven routing: uneven splits
    x = torch.randn(W * args.batch, args.seq, args.d_model)
    g = torch.randn_like(x)
    shards = list(zip(x.split(args.batch), g.split(args.batch), strict=True))
    ref_outs, loss, ref_aux = [], 0.0, []
    for xs, gs in shards:                      # the reference: each rank's tokens in turn
        y, aux, _ = ref(xs)
        ref_outs.append(y.detach())
        ref_aux.append({k: v.item() for k, v in aux.items()})
        loss = loss + (y * gs).sum() + sum(aux.values())
    loss.backward()
    ref_grads = {n: p.grad.clone() for n, p in ref.named_parameters()}
    ep_moe = MoE(args.d_model, args.n_expert, args.d_ff, top_k=args.top_k, mlp=args.mlp,
                 capacity_factor=args.capacity_factor, n_shared_expert=args.n_shared_expert)
    ep_moe.load_state_dict(ref.state_dict())
    ep = ExpertParallelMoE(ep_moe)
    xs, gs = shards[rank]
    y, aux, routing = ep(xs)
    ((y * gs).sum() + sum(aux.values())).backward()
    for p in ep.replicated_parameters():
        dist.all_reduce(p.grad)
    lo, hi = ep.first_expert, ep.first_expert + ep.n_local
    grad_diff = 0.0
    for n, p in ep.moe.named_parameters():
        want = ref_grads[n][lo:hi] if n.startswith("experts.") else ref_grads[n]
        grad_diff = max(grad_diff, _max_diff(p.grad, want))
    result = {"rank": rank, "world_size": W, "out_diff": _max_diff(y.detach(), ref_outs[rank]),
              "aux_diff": max(abs(aux[k].item() - v) for k, v in ref_aux[rank].items()),
              "grad_diff": grad_diff,
              "dropped": routing_stats(routing, ep.moe.n_expert)["dropped"].item(),
              "sent_to": ep.last_splits[0], "received_from": ep.last_splits[1]}
    return result


def run_bench(args) -> dict:
    """Time forward + backward of the expert-parallel layer and the share spent in all-to-all."""
    torch.manual_seed(args.seed)
    moe = MoE(args.d_model, args.n_expert, args.d_ff, top_k=args.top_k, mlp=args.mlp,
              capacity_factor=args.capacity_factor)
    ep = ExpertParallelMoE(moe)
    x = torch.randn(args.batch, args.seq, args.d_model, requires_grad=True)
    for _ in range(3):
        ep(x).hidden.sum().backward()
    dist.barrier()
    _AllToAll.seconds = 0.0
    t0 = time.perf_counter()
    for _ in range(args.steps):
        ep(x).hidden.sum().backward()
    dist.barrier()
    step = (time.perf_counter() - t0) / args.steps
    return {"rank": dist.get_rank(), "world_size": dist.get_world_size(), "step_ms": 1e3 * step,
            "all_to_all_ms": 1e3 * _AllToAll.seconds / args.steps,
            "tokens_per_rank": args.batch * args.seq}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", metavar="JSON", help="compare with one process; write results")
    p.add_argument("--bench", metavar="JSON", help="time the all-to-all; write results")
    p.add_argument("--n-expert", type=int, default=8)
    p.add_argument("--top-k", type=int, default=2)
    p.add_argument("--d-model", type=int, default=32)
    p.add_argument("--d-ff", type=int, default=48)
    p.add_argument("--mlp", default="swiglu")
    p.add_argument("--capacity-factor", type=float, default=None)
    p.add_argument("--n-shared-expert", type=int, default=0)
    p.add_argument("--batch", type=int, default=3, help="sequences per rank")
    p.add_argument("--seq", type=int, default=16)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if not (args.check or args.bench):
        p.error("give --check JSON, --bench JSON or both (one launch runs both)")
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    try:
        for path, run in ((args.check, run_check), (args.bench, run_bench)):
            if not path:
                continue
            results = [None] * dist.get_world_size()
            dist.all_gather_object(results, run(args))
            if dist.get_rank() == 0:
                with open(path, "w") as f:
                    json.dump(results, f, indent=1)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
