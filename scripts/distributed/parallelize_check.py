"""A meta-device GPT through `parallelize_gpt` beside a one-process GPT: initial values, memory
per rank, and a few training steps on the same global batches.

    torchrun --standalone --nproc_per_node=4 scripts/distributed/parallelize_check.py \
        --out DIR --dp-shard 2 --tp 2

(or `minillm.distributed.launch.launch([...], nproc)`, as tests/test_parallelize.py does).

Every rank builds the model under `torch.device("meta")`, lays the ranks out as `ParallelDims`,
parallelizes it and materialises its shards (`materialize_gpt`); beside it, the same GPT built
normally from the same seed in one process trains on the whole global batch. Rank 0 writes
`results.json`: the largest difference of the initial weights (gathered) from the normal
build's, each rank's parameter bytes and the largest full tensor it held while initialising,
the full model's bytes, each step's (parallel, one-process) loss and gradient norm, and the
largest weight difference after the last step.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

from minillm.distributed.launch import run_rank
from minillm.distributed.mesh import ParallelDims
from minillm.distributed.parallelize import clip_grad_norm, materialize_gpt, parallelize_gpt
from minillm.models import GPT, GPTConfig


def _full(model) -> dict[str, torch.Tensor]:
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))


def _max_diff(ref: GPT, full: dict[str, torch.Tensor]) -> float:
    return max(float((v - full[k]).abs().max()) for k, v in ref.state_dict().items())


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--dp-replicate", type=int, default=1)
    p.add_argument("--dp-shard", type=int, default=-1)
    p.add_argument("--tp", type=int, default=1)
    p.add_argument("--mlp", default="gelu")
    p.add_argument("--bias", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--tie", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--positions", default="learned")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--batch", type=int, default=2, help="sequences per data-parallel rank")
    p.add_argument("--seed", type=int, default=7)
    a = p.parse_args()
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    config = GPTConfig(vocab_size=96, context_length=16, d_model=32, n_layer=2, n_head=4,
                       mlp=a.mlp, bias=a.bias, tie_embeddings=a.tie, positions=a.positions,
                       norm="rmsnorm" if a.mlp == "swiglu" else "layernorm")
    torch.manual_seed(a.seed)
    ref = GPT(config)  # the one-process build, every rank alike
    dims = ParallelDims(a.dp_replicate, a.dp_shard, a.tp, 1, world)
    dims.build_mesh("cpu")
    if dims.dp_rank() != dims.data_slice(rank)[0]:  # the mesh and the formula a loader uses
        raise RuntimeError(f"rank {rank}: mesh dp rank {dims.dp_rank()} != data_slice "
                           f"{dims.data_slice(rank)}")
    with torch.device("meta"):
        model = GPT(config)
    parallelize_gpt(model, dims)
    stats = materialize_gpt(model, "cpu", a.seed)
    init_diff = _max_diff(ref, _full(model))
    memory = [None] * world
    dist.all_gather_object(memory, stats)

    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ref_opt = torch.optim.AdamW(ref.parameters(), lr=1e-2)
    data = torch.Generator().manual_seed(a.seed + 1)
    lo = dims.dp_rank() * a.batch
    steps = []
    for _ in range(a.steps):
        x = torch.randint(0, config.vocab_size, (a.batch * dims.dp, 16), generator=data)
        y = torch.roll(x, -1, dims=1)
        loss = model(x[lo:lo + a.batch], y[lo:lo + a.batch]).loss
        loss.backward()
        norm = clip_grad_norm(list(model.parameters()), 1.0)
        opt.step()
        opt.zero_grad()
        mean = loss.detach().clone()
        dist.all_reduce(mean)
        ref_loss = ref(x, y).loss
        ref_loss.backward()
        ref_norm = torch.nn.utils.clip_grad_norm_(ref.parameters(), 1.0)
        ref_opt.step()
        ref_opt.zero_grad()
        steps.append({"loss": float(mean) / world, "ref_loss": float(ref_loss),
                      "grad_norm": norm, "ref_grad_norm": float(ref_norm)})
    final_diff = _max_diff(ref, _full(model))
    if rank == 0:
        full_bytes = sum(t.numel() * t.element_size() for t in ref.parameters())
        Path(a.out, "results.json").write_text(json.dumps({
            "dims": dims.sizes, "init_max_diff": init_diff, "memory": memory,
            "full_bytes": full_bytes, "steps": steps, "final_max_diff": final_diff}, indent=1))
    dist.destroy_process_group()


if __name__ == "__main__":
    run_rank(main)
