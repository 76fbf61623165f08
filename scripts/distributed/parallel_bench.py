"""Tensor and pipeline parallelism of a tiny GPT in one process group, beside one process.

    torchrun --standalone --nproc_per_node=2 scripts/distributed/parallel_bench.py \
        --out DIR --runs single,tp,pp --steps 3

(or `minillm.distributed.launch.launch([...], nproc)`, as the tests, the benchmark and chapter 10
do).

Every run builds the same GPT from `--seed` and trains it on the same global batches (AdamW):
- "single": rank 0 alone, one process accumulating each micro-batch count in `--micro`
  (`single_m{m}`; m=1 is the plain full batch), the reference of all the others;
- "tp": tensor parallelism over all N ranks (`tensor_parallel_gpt`);
- "pp": pipeline parallelism, N stages, for each schedule in `--schedules` and each m in
  `--micro` (`pp_{schedule}_m{m}`), with its timeline;
- "dp_tp": a `--dp` x (N / dp) mesh: data parallelism over tensor-parallel groups;
- "torch_tp": one block through our TP beside torch's `parallelize_module` (Colwise/Rowwise);
- "torch_pp": torch.distributed.pipelining's ScheduleGPipe / Schedule1F1B on our stages.

Rank 0 writes `<run>.safetensors` (logits and loss of the first step, `grad.*` its full
gradients, `weight.*` the full weights after the last step) and `results.json` (per run: median
step time, per-rank elements/bytes handed to communication in the last step, parameters per
rank, the last step's pipeline timeline). Used by the tests, the benchmark and chapter 10.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import time
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import save_file

from minillm.distributed.memory import CommCounter
from minillm.distributed.pipeline import (
    GPTStage,
    PipelineRunner,
    events_as_dicts,
    gather_pipeline_state_dict,
    sync_tied_grads,
)
from minillm.distributed.tensor_parallel import (
    column_shard_rows,
    gather_tensor_parallel_state_dict,
    tensor_parallel_gpt,
)
from minillm.models import GPT, GPTConfig
from minillm.models.base import lm_loss
from minillm.optim import param_groups


def _model(a) -> GPT:
    torch.manual_seed(a.seed)
    return GPT(GPTConfig(vocab_size=a.vocab, context_length=a.seq_len, d_model=a.d_model,
                         n_layer=a.n_layer, n_head=a.n_head, n_kv_head=a.n_kv_head, d_ff=a.d_ff,
                         mlp=a.mlp, positions=a.positions, tie_embeddings=not a.untied,
                         bias=a.mlp == "gelu"))


def _batches(a) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(a.seed + 1)
    return [torch.randint(0, a.vocab, (a.batch, a.seq_len + 1), generator=g)
            for _ in range(a.steps)]


def _adamw(module, a):
    return torch.optim.AdamW(param_groups(module, 0.1), lr=a.lr, betas=(0.9, 0.95), eps=1e-8)


def _train(module, a, step_fn, gather_fn, alone: bool = False, count: bool = True) -> dict:
    """AdamW steps of `step_fn(batch) -> (logits, loss)` (which runs backward); returns the first
    step's logits, loss and gathered gradients, the last weights, step times and comm.
    `alone`: rank 0 by itself (no barrier before each step); `count`: count the communication
    (torch's pipelining refuses a wrapped `dist.isend`)."""
    optimizer = _adamw(module, a)
    out, times, losses = {}, [], []
    for step, batch in enumerate(_batches(a)):
        counter = CommCounter()
        counting = counter if count else contextlib.nullcontext()
        if not alone:
            dist.barrier()
        t0 = time.perf_counter()
        with counting:
            logits, loss = step_fn(batch)
        if step == 0:  # (the gather's traffic is not counted)
            out.update(_first_step(logits, loss, gather_fn(True)))
        with counting:
            optimizer.step()
        times.append(time.perf_counter() - t0)
        losses.append(None if loss is None else float(loss.detach()))
        optimizer.zero_grad(set_to_none=True)
    out.update({f"weight.{k}": v for k, v in gather_fn(False).items()})
    counted = {"comm_elements": counter.total, "comm_bytes": sum(counter.bytes.values()),
               "comm_calls": dict(counter.calls)} if count else {}
    return {"tensors": out, "step_s": statistics.median(times[1:] or times), "losses": losses,
            **counted}


def _first_step(logits, loss, grads) -> dict:
    out = {f"grad.{k}": v for k, v in grads.items()}
    if logits is not None:
        out["logits"] = logits.detach().clone()
    if loss is not None:
        out["loss"] = loss.detach().reshape(1).clone()
    return out


def _single(a, micro: int) -> dict:
    model = _model(a)

    def step(batch):
        logits = total = None
        for chunk in batch.chunk(micro):
            out = model(chunk[:, :-1], chunk[:, 1:])
            logits, loss = out.logits, out.loss
            (loss / micro).backward()
            total = loss.detach() / micro + (0 if total is None else total)
        return (logits if micro == 1 else None), total

    return _train(model, a, step, lambda grads: _local_state(model, grads), alone=True)


def _local_state(model, grads: bool) -> dict:
    if grads:
        return {k: p.grad.detach().clone() for k, p in model.named_parameters()}
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _tensor_parallel(a, tp_group=None, dp_group=None, checkpoint: Path | None = None) -> dict:
    model = tensor_parallel_gpt(_model(a), tp_group)
    dp = dist.get_world_size(dp_group) if dp_group is not None else 1
    dp_rank = dist.get_rank(dp_group) if dp_group is not None else 0

    def step(batch):
        mine = batch.chunk(dp)[dp_rank]
        out = model(mine[:, :-1], mine[:, 1:])
        logits, loss = out.logits, out.loss
        loss.backward()
        if dp_group is not None:  # data parallelism over the tensor-parallel groups
            for p in model.parameters():
                dist.all_reduce(p.grad, group=dp_group)
                p.grad /= dp
        return logits, loss

    r = _train(model, a, step, lambda grads: gather_tensor_parallel_state_dict(
        model, tp_group, grads))
    r["params_per_rank"] = sum(p.numel() for p in model.parameters())
    if checkpoint is not None:  # the gathered weights as a one-process checkpoint, re-sharded
        weights = {k[len("weight."):]: v for k, v in r["tensors"].items()
                   if k.startswith("weight.")}
        if dist.get_rank() == 0:
            _model(a).save(checkpoint, weights=weights)
        dist.barrier()
        again = tensor_parallel_gpt(GPT.from_checkpoint(checkpoint), tp_group)
        x = _batches(a)[0][:, :-1]
        with torch.no_grad():
            r["reload_logits_diff"] = float((again(x).logits - model(x).logits).abs().max())
    return r


def _pipeline(a, kind: str, micro: int) -> dict:
    rank, world = dist.get_rank(), dist.get_world_size()
    stage = GPTStage(_model(a), rank, world)
    runner = PipelineRunner(stage, kind, micro)

    def step(batch):
        loss = runner.step(batch[:, :-1], batch[:, 1:])
        sync_tied_grads(stage)
        return None, loss

    r = _train(stage, a, step, lambda grads: gather_pipeline_state_dict(stage, grads))
    r["params_per_rank"] = sum(p.numel() for p in stage.parameters())
    r["events"] = events_as_dicts(runner.events)
    return r


def _torch_pipeline(a, kind: str, micro: int) -> dict:
    """torch.distributed.pipelining's schedule driving our stages (its loss: each micro-batch's
    mean, gradients scaled by 1/m)."""
    from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

    rank, world = dist.get_rank(), dist.get_world_size()
    stage = GPTStage(_model(a), rank, world)
    pipe = PipelineStage(stage, rank, world, torch.device("cpu"))
    cls = ScheduleGPipe if kind == "gpipe" else Schedule1F1B
    sched = cls(pipe, n_microbatches=micro, loss_fn=lm_loss)

    def step(batch):
        x, y = batch[:, :-1], batch[:, 1:]
        losses: list = []
        if stage.first and stage.last:
            sched.step(x, target=y, losses=losses)
        elif stage.first:
            sched.step(x)
        elif stage.last:
            sched.step(target=y, losses=losses)
        else:
            sched.step()
        sync_tied_grads(stage)
        return None, (torch.stack(losses).mean() if losses else None)

    return _train(stage, a, step, lambda grads: gather_pipeline_state_dict(stage, grads),
                  count=False)


def _torch_tensor_parallel_block(a) -> dict:
    """Block 0 through our TP and through torch's `parallelize_module`: the largest difference
    of outputs, input gradients and local parameter shards' gradients (this rank)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        RowwiseParallel,
        parallelize_module,
    )

    n, rank = dist.get_world_size(), dist.get_rank()
    ours = tensor_parallel_gpt(_model(a)).blocks[0]
    whole = _model(a)
    theirs = whole.blocks[0]
    # RoPE's tables come from the model, once per forward; a block alone is handed them
    rope = whole.rotary.tables(torch.arange(a.seq_len)) if whole.rotary is not None else None
    attn = theirs.attn  # reorder the fused rows so that torch's chunk r is our shard r
    q, kv = attn.n_head * attn.head_dim, attn.n_kv_head * attn.head_dim
    order = torch.cat([column_shard_rows([q, kv, kv], n, r) for r in range(n)])
    with torch.no_grad():
        attn.qkv.weight.copy_(attn.qkv.weight[order])
        if attn.qkv.bias is not None:
            attn.qkv.bias.copy_(attn.qkv.bias[order])
    attn.n_head, attn.n_kv_head = attn.n_head // n, attn.n_kv_head // n
    plan = {"attn.qkv": ColwiseParallel(), "attn.proj": RowwiseParallel()}
    if a.mlp == "gelu":
        plan.update({"mlp.fc": ColwiseParallel(), "mlp.proj": RowwiseParallel()})
    else:
        plan.update({"mlp.gate": ColwiseParallel(), "mlp.up": ColwiseParallel(),
                     "mlp.proj": RowwiseParallel()})
    parallelize_module(theirs, init_device_mesh("cpu", (n,)), plan)
    g = torch.Generator().manual_seed(a.seed + 2)
    x = torch.randn(a.batch, a.seq_len, a.d_model, generator=g)
    upstream = torch.randn(a.batch, a.seq_len, a.d_model, generator=g)
    diffs = {}
    outs = []
    for block in (ours, theirs):
        xi = x.clone().requires_grad_(True)
        y = block(xi, rope=rope).hidden + 0  # (+ 0: torch's output is an AsyncCollectiveTensor; wait for it)
        y.backward(upstream)
        outs.append((y.detach(), xi.grad, {k: p.grad for k, p in block.named_parameters()}))
    (y0, gx0, g0), (y1, gx1, g1) = outs
    diffs["output"] = float((y0 - y1).abs().max())
    diffs["input_grad"] = float((gx0 - gx1).abs().max())
    local = {k: (v.to_local() if hasattr(v, "to_local") else v) for k, v in g1.items()}
    diffs["param_grads"] = max(float((g0[k] - local[k]).abs().max()) for k in g0)
    diffs["shard_rows"] = [int(ours.attn.qkv.weight.shape[0]), int(local["attn.qkv.weight"].shape[0])]
    return {"rank": rank, **diffs}


def _save(out: Path, name: str, r: dict) -> dict:
    if dist.get_rank() == 0:
        save_file(r.pop("tensors"), str(out / f"{name}.safetensors"))
    else:
        r.pop("tensors")
    per_rank: list = [None] * dist.get_world_size()
    dist.all_gather_object(per_rank, r)
    return {"ranks": per_rank, "step_s": max(x["step_s"] for x in per_rank)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--runs", default="single,tp,pp,dp_tp,torch_tp,torch_pp")
    p.add_argument("--schedules", default="gpipe,1f1b")
    p.add_argument("--micro", default="1,2,4", help="micro-batch counts for the pipeline")
    p.add_argument("--dp", type=int, default=2, help="data-parallel size of dp_tp")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--batch", type=int, default=4, help="global batch (sequences per step)")
    p.add_argument("--seq-len", type=int, default=8)
    p.add_argument("--vocab", type=int, default=67)
    p.add_argument("--d-model", type=int, default=16)
    p.add_argument("--d-ff", type=int, default=None)
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--n-kv-head", type=int, default=None)
    p.add_argument("--mlp", default="gelu", choices=("gelu", "swiglu"))
    p.add_argument("--positions", default="learned")
    p.add_argument("--untied", action="store_true")
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    dist.init_process_group("gloo", timeout=timedelta(seconds=120))
    rank, world = dist.get_rank(), dist.get_world_size()
    runs = [r for r in a.runs.split(",") if r]
    micro = [int(m) for m in a.micro.split(",") if m]
    results: dict = {"world_size": world}
    if "single" in runs and rank == 0:
        for m in sorted({1, *micro}):
            r = _single(a, m)
            save_file(r.pop("tensors"), str(out / f"single_m{m}.safetensors"))
            results[f"single_m{m}"] = {"ranks": [r], "step_s": r["step_s"],
                                       "params_per_rank": sum(
                                           q.numel() for q in _model(a).parameters())}
    dist.barrier()
    if "tp" in runs:
        results["tp"] = _save(out, "tp", _tensor_parallel(a, checkpoint=out / "tp_checkpoint"))
    if "dp_tp" in runs:
        from torch.distributed.device_mesh import init_device_mesh

        mesh = init_device_mesh("cpu", (a.dp, world // a.dp), mesh_dim_names=("dp", "tp"))
        results["dp_tp"] = _save(out, "dp_tp", _tensor_parallel(
            a, mesh.get_group("tp"), mesh.get_group("dp")))
    for prefix, fn in (("pp", _pipeline), ("torch_pp", _torch_pipeline)):
        if prefix in runs:
            for kind in a.schedules.split(","):
                for m in micro:
                    if prefix == "torch_pp" and kind == "1f1b" and m < world:
                        continue  # torch's Schedule1F1B needs m >= p
                    name = f"{prefix}_{kind}_m{m}"
                    results[name] = _save(out, name, fn(a, kind, m))
    if "torch_tp" in runs:
        every: list = [None] * world
        dist.all_gather_object(every, _torch_tensor_parallel_block(a))
        results["torch_tp"] = every
    if rank == 0:
        (out / "results.json").write_text(json.dumps(results, indent=1))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    if int(os.environ.get("WORLD_SIZE", "1")) < 2:
        raise SystemExit("launch with 2 or more processes (torchrun, or "
                         "minillm.distributed.launch.launch)")
    from minillm.distributed.launch import run_rank

    run_rank(main)
