"""Train a tiny GPT for a few steps under several strategies in one process group; write results.

    torchrun --standalone --nproc_per_node=2 scripts/distributed/workbench.py \
        --out DIR --strategies single,own_ddp,zero3 --steps 3

(or `minillm.distributed.launch.launch(["scripts/distributed/workbench.py", ...], nproc)`, which
ends every rank when one fails: what the tests, the benchmark and chapter 10 call).

Every strategy starts from the same weights (seed) and sees the same global batches (rank r
trains on slice r; "single" trains the whole global batch in rank 0 alone, the one-process
reference). Rank 0 writes, per strategy, `weights_<name>.safetensors` (the full weights after the
last step) and one `results.json` with per-rank parameter/gradient/optimizer bytes (after the
last optimizer step), the collective volume of the last step, the median step time and Ψ.
Used by the tests, the benchmark and chapter 10. Extra references: "torch_zero1" (torch DDP +
`ZeroRedundancyOptimizer`).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import time
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import save_file

from minillm.distributed import DistInfo
from minillm.distributed.memory import CommCounter, state_bytes
from minillm.distributed.strategy import get_strategy
from minillm.models import GPT, GPTConfig
from minillm.optim import param_groups


class _TC:  # the TrainConfig fields the strategies read
    def __init__(self, lr, weight_decay):
        self.lr, self.weight_decay, self.beta1, self.beta2 = lr, weight_decay, 0.9, 0.95


def _model(a) -> GPT:
    torch.manual_seed(a.seed)
    cfg = GPTConfig(vocab_size=a.vocab, context_length=a.seq_len, d_model=a.d_model,
                    n_layer=a.n_layer, n_head=2, d_ff=a.d_ff, tie_embeddings=not a.untied,
                    bias=True, activation_checkpointing=a.checkpointing)
    model = GPT(cfg)
    if a.frozen:  # a frozen embedding table and a frozen norm inside a block
        model.pos_emb.weight.requires_grad_(False)
        for p in model.blocks[0].norm1.parameters():
            p.requires_grad_(False)
    return model


def _batches(a, world: int):
    g = torch.Generator().manual_seed(a.seed + 1)
    for _ in range(a.steps * a.accum):
        yield torch.randint(0, a.vocab, (world * a.batch, a.seq_len + 1), generator=g)


def _run(name: str, a, info: DistInfo) -> dict:
    single = name == "single"
    if single and info.rank != 0:
        return {}
    model = _model(a)
    tc = _TC(a.lr, 0.1)
    if name == "torch_zero1":
        from torch.distributed.optim import ZeroRedundancyOptimizer
        from torch.nn.parallel import DistributedDataParallel

        runner = DistributedDataParallel(model)
        optimizer = ZeroRedundancyOptimizer(param_groups(model, 0.1), torch.optim.AdamW,
                                            lr=a.lr, betas=(0.9, 0.95), eps=1e-8)
        strategy = get_strategy("ddp", info)
        strategy.runner = runner
    else:
        strategy = get_strategy(name, DistInfo() if single else info)
        runner = strategy.wrap(model, torch.device("cpu"), False)
        optimizer = strategy.build_optimizer(model, tc, "cpu")
    world = 1 if single else info.world_size
    rank = 0 if single else info.rank
    batches = _batches(a, info.world_size)
    times, comm, memory = [], None, None
    for step in range(a.steps):
        if step == a.fail_step and info.rank == a.fail_rank and not single:
            if a.fail_mode == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError(f"injected failure on rank {info.rank} at step {step}")
        counter = CommCounter()  # counts the synchronised (last) micro-step and the update
        t0 = time.perf_counter()
        for micro in range(a.accum):
            batch = next(batches)
            per = batch.shape[0] // world
            mine = batch[rank * per:(rank + 1) * per]
            last = micro == a.accum - 1
            ctx = counter if last else strategy.no_sync(runner) if not single else _null()
            with ctx:
                loss = runner(mine[:, :-1], mine[:, 1:]).loss
                (loss / a.accum).backward()
        with counter:
            strategy.clip_grad_norm(model, a.clip)
            optimizer.step()
        times.append(time.perf_counter() - t0)
        comm = counter
        if step == a.steps - 1:
            memory = state_bytes(runner, optimizer)
        optimizer.zero_grad(set_to_none=True)
    weights = strategy.model_state_dict(model)
    weights = {k: (v.full_tensor() if hasattr(v, "full_tensor") else v).detach().clone()
               for k, v in weights.items()}
    if info.rank == 0:
        save_file(weights, str(Path(a.out) / f"weights_{name}.safetensors"))
    units = getattr(runner, "units", [])
    mem_all = [memory]
    if not single:
        mem_all = [None] * info.world_size
        dist.all_gather_object(mem_all, memory)
    fresh = _model(a)
    psi = sum(p.numel() for p in fresh.parameters() if p.requires_grad)
    frozen = sum(p.numel() * p.element_size() for p in fresh.parameters() if not p.requires_grad)
    padding = sum(u.padded - u.numel for u in units)
    if name == "fsdp":  # FSDP2 pads each tensor's dim 0 up to a multiple of N
        padding = sum((-p.shape[0]) % world * (p.numel() // p.shape[0])
                      for p in fresh.parameters())
    return {"memory": mem_all, "comm_elements": dict(comm.elements), "comm_calls":
            dict(comm.calls), "comm_total": comm.total, "ring_bytes_sent": comm.ring_bytes_sent(),
            "step_s": statistics.median(times[1:] or times), "psi": psi,
            "frozen_bytes": frozen, "padding": padding, "world_size": world}


def _collectives(info: DistInfo) -> dict:
    """All-reduce, and the same as reduce-scatter then all-gather, on small per-rank vectors."""
    n = info.world_size
    x = torch.arange(2 * n, dtype=torch.float32) + 10 * info.rank  # rank r: 10r, 10r + 1, ...
    reduced = x.clone()
    dist.all_reduce(reduced)
    shard = torch.empty(2)
    dist.reduce_scatter_single(shard, x.clone())
    gathered = torch.empty(2 * n)
    dist.all_gather_single(gathered, shard)
    mine = {"input": x.tolist(), "all_reduce": reduced.tolist(), "reduce_scatter": shard.tolist(),
            "all_gather": gathered.tolist()}
    every = [None] * n
    dist.all_gather_object(every, mine)
    return {"ranks": every}


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return None


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--strategies", default="single,own_ddp,ddp,zero1,zero2,zero3,fsdp")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--accum", type=int, default=1)
    p.add_argument("--batch", type=int, default=2, help="sequences per rank per micro-step")
    p.add_argument("--seq-len", type=int, default=16)
    p.add_argument("--vocab", type=int, default=67)
    p.add_argument("--d-model", type=int, default=16)
    p.add_argument("--d-ff", type=int, default=None)
    p.add_argument("--n-layer", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--clip", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--untied", action="store_true")
    p.add_argument("--frozen", action="store_true")
    p.add_argument("--checkpointing", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--collectives", action="store_true", help="also run the collectives demo")
    p.add_argument("--fail-rank", type=int, default=-1)
    p.add_argument("--fail-step", type=int, default=-1)
    p.add_argument("--fail-mode", choices=("raise", "kill"), default="raise")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    Path(a.out).mkdir(parents=True, exist_ok=True)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        dist.init_process_group("gloo", timeout=timedelta(seconds=60))
        info = DistInfo(rank=dist.get_rank(), local_rank=dist.get_rank(),
                        world_size=dist.get_world_size(), backend="gloo")
    else:
        info = DistInfo()
    results = {}
    if a.collectives:
        results["collectives"] = _collectives(info)
    for name in [n for n in a.strategies.split(",") if n]:
        results[name] = _run(name, a, info)
        if info.enabled:
            dist.barrier()
    if info.rank == 0:
        (Path(a.out) / "results.json").write_text(json.dumps(results, indent=1))
    if info.enabled:
        dist.destroy_process_group()


if __name__ == "__main__":
    from minillm.distributed.launch import run_rank

    run_rank(main)
