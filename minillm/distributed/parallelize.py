"""One parallelize step for a GPT on a `DeviceMesh`: TP -> activation checkpointing -> compile -> FSDP2.

torchtitan's `parallelize_llama(model, parallel_dims, job_config)` at minillm's size, in the
order the wrappers must nest (github.com/pytorch/torchtitan):

1. Tensor parallel (Megatron-LM, 1909.08053) over mesh["tp"], through torch's DTensor styles
   (`torch.distributed.tensor.parallel`): per block, the MLP's input matrices are
   `ColwiseParallel` (fc; gate and up for SwiGLU), its output matrix `RowwiseParallel` (proj),
   and attention's output projection `RowwiseParallel`. The fused QKV projection cannot be
   `ColwiseParallel`: that cuts the rows [q; k; v] into contiguous blocks (rank 0 would get all
   of q). It is sharded as `_StridedShard(0, split_factor=3)` instead, which cuts each of q, k
   and v into tp pieces and gives rank r [q_r; k_r; v_r] (`FusedQKVColwise`); the block then
   attends over its n_head / tp local heads. Embeddings, norms and the head stay replicated.
2. Activation checkpointing: the model's own `activation_checkpointing` flag (each block's
   input kept, its inside recomputed in backward; Chen et al. 2016, 1604.06174).
3. `torch.compile` per block (`Module.compile`, so parameter names keep no `_orig_mod.`).
4. FSDP2 (`fully_shard`, 2304.11277) per block, then the root, over the data-parallel mesh:
   1-D `dp_shard`, or 2-D (`dp_replicate`, `dp_shard`) = HSDP. On CUDA the policy gathers
   parameters in bfloat16 and reduces gradients in float32 (`MixedPrecisionPolicy`); on the CPU
   both stay float32 (gloo's bfloat16 reductions and CPU bfloat16 matmuls are slow, and the
   tests compare against float32 one-process runs). FSDP is applied even at dp = 1, so every
   parameter is a DTensor and checkpoints (DCP) and clipping have one path.

Meta-device init (`materialize_gpt`): the model is built under `torch.device("meta")` (no
memory), parallelized, `to_empty` gives each rank storage for its shards only, and the
initialisation is replayed one tensor at a time: each parameter's full tensor is drawn on the
CPU from the global generator, in the order `GPT(config)` draws them (constructor defaults in
module order, then `GPT._init_weights` in `Module.apply` order), and only this rank's shard is
kept. So `torch.manual_seed(s); GPT(config)` and the sharded model hold the same numbers, bit for
bit, while no rank ever holds more than its shards plus one full tensor (the largest: the
embedding). Every rank draws every tensor (CPU time ~ the whole model's, once).

Pipeline parallelism (pp > 1; GPipe 1811.06965, 1F1B 2104.04473): each rank of mesh["pp"] keeps
one `GPTStage` (minillm.distributed.pipeline: its blocks under their one-process names, the
embeddings on the first stage, the norm and head on the last), parallelizes it as above, and
`PipelineSchedule` drives torch.distributed.pipelining's `Schedule1F1B` over the stages.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from minillm.distributed.mesh import ParallelDims
from minillm.distributed.tensor_parallel import check_tensor_parallel, copy_to_tensor_parallel

__all__ = ["FusedQKVColwise", "ParallelizeConfig", "PipelineSchedule", "check_parallelizable",
           "clip_grad_norm", "local_bytes", "materialize_gpt", "parallelize_gpt",
           "pipeline_micro_batches", "qkv_pieces"]


@dataclass
class ParallelizeConfig:
    """What `parallelize_gpt` applies besides the mesh's dims."""

    activation_checkpointing: bool = False  # recompute each block in backward (less memory)
    compile: bool = False                   # torch.compile each block
    mixed_precision: bool = True            # CUDA: gather in bfloat16, reduce in float32
    reshard_after_forward: bool = True      # free gathered blocks after forward (ZeRO-3)


def check_parallelizable(config, dims: ParallelDims) -> None:
    """ValueError unless the GPTConfig `config` can be split as `dims` says."""
    if config.n_kv_head == config.n_head and config.d_model % dims.dp_shard:
        raise ValueError(f"d_model={config.d_model} is not divisible by dp_shard={dims.dp_shard}: "
                         "FSDP shards the fused qkv weight's columns; pick a d_model that is a "
                         "multiple of dp_shard")
    if dims.tp > 1:
        check_tensor_parallel(config, dims.tp)
        if config.n_kv_head != config.n_head:
            raise ValueError(
                f"n_kv_head={config.n_kv_head} != n_head={config.n_head}: with tp > 1 the fused "
                "qkv projection is split as three equal pieces; use n_kv_head=n_head (or tp=1)")
    if dims.pp > 1:
        from minillm.distributed.pipeline import check_pipeline

        check_pipeline(config, dims.pp)
        if config.tie_embeddings:
            raise ValueError("tie_embeddings=True with pp > 1: the first and last stages would "
                             "each hold a copy of the shared matrix, whose gradients are not "
                             "summed here; use --no-tie-embeddings (tie_embeddings=False)")


class FusedQKVColwise(nn.Linear):
    """The fused QKV `nn.Linear` under tensor parallelism. Its weight is a DTensor on the tp mesh
    placed `_StridedShard(0, split_factor=3)`: rank r holds rows [q_r; k_r; v_r]. Its bias is
    replicated over tp (FSDP could not shard a strided dim 0 again without breaking its global
    layout); each rank adds its pieces of it.

    forward: y_r = f(x) W_r^T + f(b)[q_r, k_r, v_r], on local tensors; f is Megatron's identity
    whose backward all-reduces the gradient over the tp group (`copy_to_tensor_parallel`): for x
    because every rank's heads depend on it, for b because each rank fills only its pieces'
    gradient. (`_shard_fused_qkv` swaps a module's class to this one, as FSDP2 swaps classes.)"""

    tp_group, tp_rank, tp_size = None, 0, 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(copy_to_tensor_parallel(x, self.tp_group), self.weight.to_local())
        if self.bias is None:
            return y
        b = copy_to_tensor_parallel(self.bias.to_local(), self.tp_group)      # (3 C,)
        return y + rearrange(b, "(p n r) -> n (p r)", p=3, n=self.tp_size)[self.tp_rank]


def _shard_fused_qkv(linear: nn.Linear, tp_mesh) -> None:
    from torch.distributed.tensor import Replicate, distribute_tensor
    from torch.distributed.tensor.placement_types import _StridedShard

    placements = {"weight": [_StridedShard(0, split_factor=3)], "bias": [Replicate()]}
    for name, p in list(linear.named_parameters(recurse=False)):
        linear.register_parameter(name, nn.Parameter(
            distribute_tensor(p.data, tp_mesh, placements[name], src_data_rank=None)))
    linear.__class__ = FusedQKVColwise
    linear.tp_group, linear.tp_rank, linear.tp_size = (tp_mesh.get_group(),
                                                       tp_mesh.get_local_rank(), tp_mesh.size())


def _apply_tp(blocks, tp_mesh, mlp: str) -> None:
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        RowwiseParallel,
        parallelize_module,
    )

    tp = tp_mesh.size()
    inputs = ("gate", "up") if mlp == "swiglu" else ("fc",)
    plan = {"attn.proj": RowwiseParallel(),
            **{f"mlp.{name}": ColwiseParallel() for name in inputs},
            "mlp.proj": RowwiseParallel()}
    for block in blocks:
        parallelize_module(block, tp_mesh, plan, src_data_rank=None)
        _shard_fused_qkv(block.attn.qkv, tp_mesh)
        block.attn.n_head //= tp       # the heads this rank attends over
        block.attn.n_kv_head //= tp


def qkv_pieces(t: torch.Tensor) -> torch.Tensor:
    """A fused qkv weight (3 C, d_model), as a view of shape (3, C, d_model): q, k, v stacked.

    For a DTensor (sharded by `parallelize_gpt`: tp `_StridedShard(0, 3)`, dp `Shard(1)`) the
    view is a DTensor placed `Shard(1)` / `Shard(2)` over the same local storage: every rank's
    shard is then one box of the global tensor, which DCP's planner requires (it cannot
    describe a strided shard), and writing into the view writes the parameter."""
    from torch.distributed.tensor import DTensor, Replicate, Shard
    from torch.distributed.tensor.placement_types import _StridedShard

    if not isinstance(t, DTensor):
        return t.view(3, t.shape[0] // 3, t.shape[1])
    new = []
    for p in t.placements:
        if isinstance(p, _StridedShard) and p.dim == 0 and p.split_factor == 3:
            new.append(Shard(1))
        elif isinstance(p, Shard) and not isinstance(p, _StridedShard) and p.dim == 1:
            new.append(Shard(2))
        elif isinstance(p, Replicate):
            new.append(p)
        else:
            raise ValueError(f"a fused qkv weight placed {t.placements} has no box layout")
    local = t.to_local()
    shape = (3, t.shape[0] // 3, t.shape[1])
    return DTensor.from_local(local.view(3, local.shape[0] // 3, local.shape[1]), t.device_mesh,
                              new, run_check=False, shape=shape,
                              stride=(shape[1] * shape[2], shape[2], 1))


def parallelize_gpt(model: nn.Module, dims: ParallelDims,
                    cfg: ParallelizeConfig | None = None) -> nn.Module:
    """Apply TP -> activation checkpointing -> compile -> FSDP2 to `model` in place.

    Args:
        model: a GPT (or a pipeline stage of one: anything with `blocks` and `config`), on
            the meta device (then `materialize_gpt` it) or holding the same weights on every
            rank.
        dims: the `ParallelDims`, its mesh built (`dims.build_mesh`).
        cfg: the optional steps.

    Returns:
        The same module, an `FSDPModule` whose parameters are DTensors.

    Raises:
        ValueError: the model cannot be split so (`check_parallelizable`).
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    from torch.distributed.tensor import Shard

    cfg = cfg or ParallelizeConfig()
    check_parallelizable(model.config, dims)
    mesh = dims.mesh if dims.mesh is not None else dims.build_mesh()
    blocks = list(model.blocks.values() if isinstance(model.blocks, nn.ModuleDict)
                  else model.blocks)
    if dims.tp > 1:
        _apply_tp(blocks, mesh["tp"], model.config.mlp)
    if cfg.activation_checkpointing:
        model.config.activation_checkpointing = True
    if cfg.compile:
        for block in blocks:
            block.compile()
    cuda = mesh.device_type == "cuda"
    policy = MixedPrecisionPolicy(
        param_dtype=torch.bfloat16 if cuda and cfg.mixed_precision else None,
        reduce_dtype=torch.float32)
    dp_mesh = dims.dp_mesh()
    # FSDP cuts the fused qkv weight's dim 1 (tp cuts dim 0 per piece), so that every rank's
    # shard is one box of its (3, n_head * head_dim, d_model) view (`qkv_pieces`), what DCP needs
    fused = {id(b.attn.qkv.weight) for b in blocks
             if b.attn.n_kv_head * dims.tp == model.config.n_head}

    def placement(p):
        return Shard(1) if id(p) in fused else None

    for block in blocks:
        fully_shard(block, mesh=dp_mesh, mp_policy=policy, shard_placement_fn=placement,
                    reshard_after_forward=cfg.reshard_after_forward)
    fully_shard(model, mesh=dp_mesh, mp_policy=policy,
                reshard_after_forward=cfg.reshard_after_forward)
    return model


def _full_twin(module: nn.Module) -> nn.Module:
    """A shallow copy of `module` whose own parameters are fresh full-size CPU tensors (the
    sharded module is untouched; its submodules are shared, not copied)."""
    twin = copy.copy(module)
    twin.__dict__["_parameters"] = {  # (None stays None: a Linear without bias)
        name: None if p is None else nn.Parameter(torch.empty(p.shape, dtype=p.dtype))
        for name, p in module._parameters.items()}
    return twin


def _keep_shard(module: nn.Module, twin: nn.Module, targets: dict[int, list]) -> int:
    """Copy this rank's part of each of twin's full tensors into the parameters that stand for
    module's (`targets`: the parameter itself, or a pipeline stage's copy of it); returns the
    bytes of the largest full tensor."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    largest = 0
    for name, source in module._parameters.items():
        if source is None:
            continue
        full = twin._parameters[name].data
        largest = max(largest, full.numel() * full.element_size())
        for p in targets.get(id(source), []):
            if isinstance(p, DTensor):
                local = distribute_tensor(full.to(p.device), p.device_mesh, p.placements,
                                          src_data_rank=None).to_local()
                p.to_local().copy_(local)
            else:
                p.data.copy_(full)
    return largest


def _post_order(module: nn.Module):
    """Modules in `Module.apply`'s order (children first, then the parent)."""
    for child in module.children():
        yield from _post_order(child)
    yield module


@torch.no_grad()
def materialize_gpt(model: nn.Module, device: torch.device | str, seed: int,
                    source: nn.Module | None = None) -> dict[str, int]:
    """Give a parallelized meta-device GPT storage and the values `GPT(config)` would draw.

    Equal, bit for bit, to `torch.manual_seed(seed); GPT(config)` (then sharded), for dense
    models whose modules draw their random numbers in `reset_parameters` and
    `GPT._init_weights` (Linear, Embedding; norms are constants). The global generator is
    reseeded with `seed` and left where a normal build leaves it.

    Args:
        model: the output of `parallelize_gpt` for a model built on the meta device.
        device: where this rank's shards live.
        seed: the seed a one-process build would have used.
        source: the whole meta-device GPT when `model` is a pipeline stage of it (holding some
            of its modules under the same names): the draws are replayed over all of `source`,
            and the stage keeps what it holds.

    Returns:
        {"local_bytes": bytes of this rank's shards, "largest_full_tensor_bytes": the most
        memory one full tensor took while initialising}.
    """
    model.to_empty(device=device)
    source = model if source is None else source
    mine = dict(model.named_parameters(remove_duplicate=False))
    targets: dict[int, list] = {}
    for name, p in source.named_parameters(remove_duplicate=False):
        if name in mine:  # (a tied weight has two names: both lead to the one parameter)
            targets.setdefault(id(p), []).append(mine[name])
    torch.manual_seed(seed)
    largest = 0
    seen: set[int] = set()
    for module in source.modules():  # 1. the constructors' draws, in construction order
        if id(module) in seen or not any(True for _ in module.parameters(recurse=False)):
            continue
        seen.add(id(module))
        twin = _full_twin(module)
        if hasattr(twin, "reset_parameters"):
            twin.reset_parameters()
        elif hasattr(twin, "weight"):  # a norm without reset_parameters (RMSNorm): ones
            twin.weight.fill_(1.0)
        largest = max(largest, _keep_shard(module, twin, targets))
    init = getattr(source, "_init_weights", None)
    if init is not None:  # 2. GPT._init_weights over Module.apply's order
        for module in _post_order(source):
            if isinstance(module, nn.Linear | nn.Embedding):
                twin = _full_twin(module)  # _init_weights sets all of a Linear's / Embedding's
                init(twin)
                largest = max(largest, _keep_shard(module, twin, targets))
    return {"local_bytes": local_bytes(model), "largest_full_tensor_bytes": largest}


def pipeline_micro_batches(batch_size: int, pp: int) -> int:
    """Micro-batches per step: the largest divisor of batch_size up to 2 * pp (1F1B's bubble is
    (pp - 1) / (m + pp - 1): more is better, each as large as the batch allows)."""
    return max(d for d in range(1, min(batch_size, 2 * pp) + 1) if batch_size % d == 0)


class PipelineSchedule:
    """This rank's pipeline stage under torch.distributed.pipelining's `Schedule1F1B`.

    Every rank of a pp group calls `step` with the same batch: the first stage feeds the tokens,
    the last computes each micro-batch's mean loss (times `scale`) and starts its backward; the
    schedule divides the gradients by the number of micro-batches, so they are those of the
    whole batch's mean loss. The loss is then sent from the last stage to the others.

    Args:
        stage_module: this rank's `GPTStage`, parallelized.
        dims: the `ParallelDims` (its mesh built).
        device: this rank's device.
        batch_size: sequences per step and data-parallel rank (cut into micro-batches).
    """

    def __init__(self, stage_module: nn.Module, dims: ParallelDims, device, batch_size: int):
        from torch.distributed.pipelining import PipelineStage, Schedule1F1B

        pp_mesh = dims.mesh["pp"]
        self.index, self.n = pp_mesh.get_local_rank(), dims.pp
        self.first, self.last = self.index == 0, self.index == self.n - 1
        self.group = pp_mesh.get_group()
        self.last_rank = dist.get_global_rank(self.group, self.n - 1)
        self.device = torch.device(device)
        self.micro_batches = pipeline_micro_batches(batch_size, self.n)
        self.scale = 1.0
        stage = PipelineStage(stage_module, self.index, self.n, self.device, group=self.group)
        self.schedule = Schedule1F1B(stage, n_microbatches=self.micro_batches, loss_fn=self._loss)

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        from minillm.models.base import lm_loss

        return lm_loss(logits, labels) * self.scale

    def step(self, input_ids: torch.Tensor, labels: torch.Tensor, scale: float = 1.0,
             train: bool = True) -> torch.Tensor:
        """Forward and (if `train`) backward of one batch through every stage; returns the
        batch's mean loss on every rank of the pp group (unscaled)."""
        self.scale = scale
        losses: list[torch.Tensor] = []
        args = (input_ids,) if self.first else ()
        kwargs = {"target": labels, "losses": losses} if self.last else {}
        (self.schedule.step if train else self.schedule.eval)(*args, **kwargs)
        loss = (torch.stack([x.detach() for x in losses]).mean() / scale if self.last
                else torch.zeros((), device=self.device))
        dist.broadcast(loss, src=self.last_rank, group=self.group)
        return loss


def local_bytes(model: nn.Module) -> int:
    """Bytes of parameter storage this rank holds (DTensors: the local shard; shared once)."""
    from torch.distributed.tensor import DTensor

    seen, total = set(), 0
    for p in model.parameters():
        t = p.to_local() if isinstance(p, DTensor) else p
        if id(p) not in seen:
            seen.add(id(p))
            total += t.numel() * t.element_size()
    return total


def clip_grad_norm(params, max_norm: float, pp_group=None) -> float:
    """The global gradient norm of `params` (DTensors on any of the mesh's submeshes, or plain
    tensors), clipped to `max_norm` when it is > 0; returns the norm before clipping.

    torch's `clip_grad_norm_` stacks the per-tensor norms, which fails when the DTensors live on
    different meshes (FSDP's 1-D dp mesh for norms and embeddings, the 2-D (dp, tp) mesh for
    tensor-parallel matrices): here each norm is reduced to a plain number first. Pipeline
    stages hold disjoint parameters: their squared norms are summed over `pp_group`.
    """
    from torch.distributed.tensor import DTensor

    grads = [p.grad for p in params if p.grad is not None]
    sq = torch.zeros((), dtype=torch.float32)
    for g in grads:
        n = torch.linalg.vector_norm(g, dtype=torch.float32)
        n = n.full_tensor() if isinstance(n, DTensor) else n
        sq = sq + n.cpu() ** 2
    if pp_group is not None and dist.get_world_size(pp_group) > 1:
        dist.all_reduce(sq, group=pp_group)
    norm = float(sq.sqrt())
    if max_norm > 0 and norm > max_norm:
        scale = max_norm / (norm + 1e-6)
        for g in grads:
            g.mul_(scale)
    return norm
