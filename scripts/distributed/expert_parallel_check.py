"""Expert parallelism against the single-process MoE layer, and the time of its all-to-all.

    torchrun --standalone --nproc_per_node=2 scripts/distributed/expert_parallel_check.py \
        --check check.json --bench bench.json

`--check`: every rank builds the same `MoE` layer (seeded) and the same batch; the reference
runs each rank's share in one process, and `ExpertParallelMoE` runs it spread over the ranks.
Each rank writes the largest difference of outputs, auxiliary losses and gradients, the share
of assignments dropped by capacity, and the rows it sent to and received from every rank.
It also lists any module attribute the forward set (there should be none: the rows exchanged
come back in the output's `Routing.splits`). `--bench`: forward + backward steps of the
expert-parallel layer, and the part of them spent in the token exchanges (timed by wrapping
`torch.distributed.all_to_all_single` while the steps run). Both flags together run both in one
launch. Used by tests/test_expert_parallel.py, benchmarks/moe.py and chapter 08.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import time
from collections.abc import Iterator

import torch
import torch.distributed as dist

from minillm.distributed.expert_parallel import ExpertParallelMoE
from minillm.models.moe import MoE, routing_stats


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item() if a.numel() else 0.0


def _state(module: torch.nn.Module) -> dict[str, object]:
    """Every plain attribute of every submodule, by "module.attribute" (parameters excluded)."""
    return {f"{name}.{key}": value for name, m in module.named_modules()
            for key, value in vars(m).items()
            if key not in ("_parameters", "_buffers", "_modules")}


@contextlib.contextmanager
def _timed_exchanges(seconds: list[float]) -> Iterator[None]:
    """Add to seconds[0] the time of every all_to_all_single given split sizes: the token
    exchanges out and back, forward and backward (the count exchange passes no splits)."""
    original = dist.all_to_all_single

    @functools.wraps(original)
    def timed(*args, **kwargs):
        splits = args[2] if len(args) > 2 else kwargs.get("output_split_sizes")
        t0 = time.perf_counter()
        result = original(*args, **kwargs)
        if splits is not None:
            seconds[0] += time.perf_counter() - t0
        return result

    dist.all_to_all_single = timed
    try:
        yield
    finally:
        dist.all_to_all_single = original


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
    before = _state(ep)
    y, aux, routing = ep(xs)
    after = _state(ep)
    stored = sorted(k for k in before.keys() | after.keys()
                    if before.get(k, "missing") is not after.get(k, "missing"))
    ((y * gs).sum() + sum(aux.values())).backward()
    for p in ep.replicated_parameters():
        dist.all_reduce(p.grad)
    lo, hi = ep.first_expert, ep.first_expert + ep.n_local
    grad_diff = 0.0
    for n, p in ep.moe.named_parameters():
        want = ref_grads[n][lo:hi] if n.startswith("experts.") else ref_grads[n]
        grad_diff = max(grad_diff, _max_diff(p.grad, want))
    stats = routing_stats(routing, ep.moe.n_expert)
    return {"rank": rank, "world_size": W, "out_diff": _max_diff(y.detach(), ref_outs[rank]),
            "aux_diff": max(abs(aux[k].item() - v) for k, v in ref_aux[rank].items()),
            "grad_diff": grad_diff, "dropped": stats["dropped"].item(),
            "sent_to": stats["sent_to"].tolist(), "received_from": stats["received_from"].tolist(),
            "forward_stored": stored}


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
    exchanges = [0.0]
    t0 = time.perf_counter()
    with _timed_exchanges(exchanges):
        for _ in range(args.steps):
            ep(x).hidden.sum().backward()
    dist.barrier()
    step = (time.perf_counter() - t0) / args.steps
    return {"rank": dist.get_rank(), "world_size": dist.get_world_size(), "step_ms": 1e3 * step,
            "all_to_all_ms": 1e3 * exchanges[0] / args.steps,
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
