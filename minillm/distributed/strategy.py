"""How the Trainer runs a model on one process or many: the `Strategy`, and the built-in ones.

A strategy owns everything that changes when the model is split over processes:

    runner = strategy.wrap(model, device, compile)     what forward/backward go through
    opt    = strategy.build_optimizer(model, train_config, device_type)
    with strategy.no_sync(runner): ...                 accumulation steps skip the all-reduce
    norm   = strategy.clip_grad_norm(model, max_norm)  the *global* norm, before clipping
    strategy.model_state_dict(model)                   full weights, for a checkpoint
    strategy.optimizer_state_dict(opt) / load_optimizer_state_dict(opt, state)
    strategy.data_slice()                              (rank, ranks) of the data-parallel group

Built in (registered by name in `_STRATEGIES` below; `register_strategy` adds others):
- "single": one process; `torch.compile` if asked, nothing else.
- "ddp": torch's DistributedDataParallel (Li et al. 2020, arXiv:2006.15704): every rank keeps
  a full replica and the gradients are averaged by an all-reduce during backward, so N ranks
  with batch B follow one process with batch N*B.
- "own_ddp": the same through the written-out bucketed `BucketedDDP` (`minillm.distributed.ddp`).
- "zero1", "zero2", "zero3": ZeRO's stages (Rajbhandari et al. 2020, arXiv:1910.02054) over flat
  shards, `ZeroModel` + `ZeroAdamW` (`minillm.distributed.zero`).
- "fsdp": torch's FSDP2 `fully_shard` per block (`minillm.distributed.fsdp`); on CUDA the
  parameters are gathered in bfloat16 and the gradients reduced in float32.
- "parallel": the composed path (`minillm.distributed.parallelize`): a `DeviceMesh` of
  TrainConfig's dp_replicate x dp_shard x tp x pp, tensor parallel, FSDP2 or HSDP, pipeline
  stages, a model built on the meta device, and sharded DCP checkpoints that reshard on resume.

Checkpoints. The teaching strategies gather full weights (every rank takes part, rank 0 writes
one `model.safetensors`, which loads into a one-process model for generation unchanged) and the
optimizer states, into the one-process layout (`torch.optim.AdamW.state_dict()` of the same
model), which every rank then slices its shard from on resume; the Trainer refuses to resume
them under another world size. At course scale the full state is kilobytes to megabytes; at
billions of parameters the gather would not fit on rank 0: "parallel" writes each rank's shards
with torch.distributed.checkpoint instead (`sharded_checkpoints = True`, `minillm.distributed.dcp`).

`TrainConfig.strategy="auto"` picks "parallel" when any of dp_replicate, dp_shard, tp or pp is
set, else "ddp" when WORLD_SIZE > 1, else "single". New strategies subclass `Strategy` and
`register_strategy` themselves.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from contextlib import AbstractContextManager as ContextManager
from typing import Any

import torch
from torch import nn

from minillm.distributed.ddp import BucketedDDP
from minillm.distributed.env import DistInfo
from minillm.distributed.zero import ZeroAdamW, ZeroModel
from minillm.optim import configure_optimizer, param_groups

__all__ = ["DDPStrategy", "FSDPStrategy", "OwnDDPStrategy", "ParallelStrategy", "Strategy",
           "ZeroStrategy", "get_strategy", "register_strategy", "resolve_strategy",
           "strategy_class", "strategy_names"]


class Strategy:
    """One process (the base every strategy extends): see the module docstring.

    Args:
        dist: this process's `DistInfo`.
    """

    name = "single"
    needs_process_group = False  # True: refuses to run in one process (the sharded ones)
    sharded_checkpoints = False  # True: each rank saves its shards (DCP), not full weights
    meta_init = False            # True: accepts a model on the meta device and initialises it
    pipeline = None              # a PipelineSchedule: it runs forward and backward (pp > 1)

    def __init__(self, dist: DistInfo, config: Any = None):
        self.dist = dist
        self.config = config  # the TrainConfig (strategies that need more than dist read it)

    def local_model(self, model: nn.Module) -> nn.Module:
        """The module this rank trains and saves after `wrap`: the model, or its pipeline
        stage."""
        return model

    def data_slice(self) -> tuple[int, int]:
        """(this rank's index, the number of ranks) among those that read different data."""
        return self.dist.rank, self.dist.world_size

    def wrap(self, model: nn.Module, device: torch.device, compile: bool) -> nn.Module:
        """The module forward and backward go through (the model itself, or compiled).

        Args:
            model: the unwrapped model, already on `device`.
            device: where this rank runs.
            compile: `torch.compile` it (the saved weights stay uncompiled).

        Returns:
            The runner.
        """
        return torch.compile(model) if compile else model

    def build_optimizer(self, model: nn.Module, train_config: Any,
                        device_type: str) -> torch.optim.Optimizer:
        """AdamW with decay on matrices only (`minillm.optim.configure_optimizer`).

        Args:
            model: the unwrapped model.
            train_config: a `TrainConfig` (lr, weight_decay, beta1, beta2).
            device_type: "cuda" picks the fused kernel.

        Returns:
            The optimizer.
        """
        c = train_config
        return configure_optimizer(model, c.lr, c.weight_decay, (c.beta1, c.beta2),
                                   device_type=device_type)

    def no_sync(self, runner: nn.Module) -> ContextManager:
        """A context in which backward does not synchronise gradients (accumulation steps)."""
        return contextlib.nullcontext()

    def clip_grad_norm(self, model: nn.Module, max_norm: float) -> float:
        """Clip the gradients to a global norm of `max_norm` (0: only measure it).

        Returns:
            The norm before clipping.
        """
        if max_norm > 0:
            return torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm).item()
        return math.sqrt(sum(float(p.grad.pow(2).sum()) for p in model.parameters()
                             if p.grad is not None))

    def model_state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The full weights to save (tied aliases left out, as `weights_state_dict` does)."""
        if hasattr(model, "weights_state_dict"):
            return model.weights_state_dict()
        return model.state_dict()

    def load_model_state_dict(self, model: nn.Module, tensors: dict[str, torch.Tensor],
                              source: Any = None, fix: str | None = None) -> None:
        """Load full weights (a checkpoint's) into the model; sharded strategies override it,
        because their parameters live in shards the raw module does not hold.

        Args:
            model: the unwrapped model.
            tensors: what `model_state_dict` saved.
            source, fix: named in the model's errors (`LanguageModel.load_weights`).
        """
        model.load_weights(tensors, source=source, fix=fix)

    def optimizer_state_dict(self, optimizer: torch.optim.Optimizer) -> dict:
        """The optimizer state to save."""
        return optimizer.state_dict()

    def load_optimizer_state_dict(self, optimizer: torch.optim.Optimizer, state: dict) -> None:
        """Restore what `optimizer_state_dict` saved."""
        optimizer.load_state_dict(state)


class DDPStrategy(Strategy):
    """torch's DistributedDataParallel over the process group `init_from_env` started."""

    name = "ddp"

    def wrap(self, model: nn.Module, device: torch.device, compile: bool) -> nn.Module:
        """The model (compiled if asked) inside `DistributedDataParallel`."""
        from torch.nn.parallel import DistributedDataParallel as DDP

        runner = super().wrap(model, device, compile)
        if not self.dist.enabled:
            return runner
        ids = [device.index] if device.type == "cuda" else None
        return DDP(runner, device_ids=ids)

    def no_sync(self, runner: nn.Module) -> ContextManager:
        """DDP's own `no_sync` (a plain context in one process)."""
        return runner.no_sync() if hasattr(runner, "no_sync") else contextlib.nullcontext()


def _without_aliases(model: nn.Module, tensors: dict[str, torch.Tensor]
                     ) -> dict[str, torch.Tensor]:
    """Gathered full weights as the base strategy gives them (a tied head left out)."""
    if hasattr(model, "weights_state_dict"):
        return model.weights_state_dict(tensors)
    return tensors


class OwnDDPStrategy(Strategy):
    """Data parallelism through the written-out `BucketedDDP`."""

    needs_process_group = True

    name = "own_ddp"

    def wrap(self, model, device, compile):
        self.runner = BucketedDDP(torch.compile(model) if compile else model)
        return self.runner

    def no_sync(self, runner):
        return runner.no_sync()


class ZeroStrategy(Strategy):
    """ZeRO stage `stage` through `ZeroModel` / `ZeroAdamW`."""

    needs_process_group = True

    stage = 1

    def wrap(self, model, device, compile):
        if compile:
            raise ValueError(f"compile=True is not supported with strategy={self.name!r} (its "
                             "hooks swap parameter storage); use compile=False")
        self.runner = ZeroModel(model, self.stage)
        return self.runner

    def build_optimizer(self, model, train_config, device_type):
        c = train_config
        return ZeroAdamW(self.runner, lr=c.lr, betas=(c.beta1, c.beta2),
                         weight_decay=c.weight_decay)

    def no_sync(self, runner):
        return runner.no_sync()

    def clip_grad_norm(self, model, max_norm):
        return self.runner.clip_grad_norm(max_norm)

    def model_state_dict(self, model):
        return _without_aliases(model, self.runner.full_state_dict())

    def load_model_state_dict(self, model, tensors, source=None, fix=None):
        with self.runner.summon_full_params(writeback=True):
            model.load_weights(tensors, source=source, fix=fix)

    # optimizer state in the one-process layout: index i = i-th tensor of param_groups(model)
    def _layout(self) -> list[tuple[object, int, nn.Parameter]]:
        where = {id(p): (u, i) for u in self.runner.units for i, p in enumerate(u.params)}
        groups = param_groups(self.runner.module, 0.0)
        return [(*where[id(p)], p) for g in groups for p in g["params"]]

    def optimizer_state_dict(self, optimizer: ZeroAdamW) -> dict:
        full: dict[int, dict] = {}
        per_unit: dict[int, dict[str, list[torch.Tensor]]] = {}
        pieces = iter(optimizer._pieces)
        for u in self.runner.units:
            local = {}
            owned = [next(pieces), next(pieces)]
            for key in ("exp_avg", "exp_avg_sq"):
                vec = torch.zeros(u.shard_size, **u.like)
                offset = 0
                for piece in owned:
                    n = piece.numel()
                    if piece in optimizer.state and n:
                        vec[offset:offset + n] = optimizer.state[piece][key]
                    offset += n
                local[key] = u.gather_shard_vector(vec)
            steps = [float(optimizer.state[p]["step"]) for p in owned if p in optimizer.state]
            local["step"] = steps[0] if steps else 0.0
            per_unit[id(u)] = local
        for i, (u, j, _) in enumerate(self._layout()):
            st = per_unit[id(u)]
            if st["step"]:
                full[i] = {"step": torch.tensor(st["step"]), "exp_avg": st["exp_avg"][j],
                           "exp_avg_sq": st["exp_avg_sq"][j]}
        return {"state": full, "param_groups": [
            {k: v for k, v in g.items() if k != "params"} | {"params": []}
            for g in optimizer.param_groups], "world_size": self.dist.world_size}

    def load_optimizer_state_dict(self, optimizer: ZeroAdamW, state: dict) -> None:
        flat: dict[int, dict[str, torch.Tensor]] = {}
        steps: dict[int, float] = {}
        for i, (u, j, _) in enumerate(self._layout()):
            if i not in state["state"]:
                continue
            st = state["state"][i]
            bufs = flat.setdefault(id(u), {k: torch.zeros(u.padded, **u.like)
                                           for k in ("exp_avg", "exp_avg_sq")})
            for k in bufs:
                bufs[k][u.offsets[j]:u.offsets[j] + u.numels[j]] = st[k].reshape(-1)
            steps[id(u)] = float(st["step"])
        pieces = iter(optimizer._pieces)
        for u in self.runner.units:
            owned = [next(pieces), next(pieces)]
            if id(u) not in flat:
                continue
            for piece, start in zip(owned, (u.lo, max(u.lo, u.n_decay)), strict=True):
                n = piece.numel()
                optimizer.state[piece] = {
                    "step": torch.tensor(steps[id(u)]),
                    "exp_avg": flat[id(u)]["exp_avg"][start:start + n].clone(),
                    "exp_avg_sq": flat[id(u)]["exp_avg_sq"][start:start + n].clone()}


class FSDPStrategy(Strategy):
    """PyTorch's FSDP2: `fully_shard` per block, then the root."""

    needs_process_group = True

    name = "fsdp"

    def wrap(self, model, device, compile):
        from minillm.distributed.fsdp import apply_fsdp

        device_type = torch.device(device).type  # CUDA: gather in bfloat16, reduce in float32
        self.runner = apply_fsdp(model, device_type,
                                 param_dtype="bfloat16" if device_type == "cuda" else None)
        return torch.compile(self.runner) if compile else self.runner

    def no_sync(self, runner):
        @contextlib.contextmanager
        def unsynced():
            self.runner.set_requires_gradient_sync(False)
            try:
                yield
            finally:
                self.runner.set_requires_gradient_sync(True)
        return unsynced()

    def clip_grad_norm(self, model, max_norm):
        params = [p for p in model.parameters() if p.grad is not None]
        if max_norm > 0:
            norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        else:
            norm = torch.nn.utils.get_total_norm([p.grad for p in params])
        return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)

    def model_state_dict(self, model):
        from minillm.distributed.fsdp import fsdp_full_state_dict

        return _without_aliases(model, fsdp_full_state_dict(self.runner))

    def load_model_state_dict(self, model, tensors, source=None, fix=None):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        where = f"{source}: " if source is not None else ""
        bad = next((k for k, t in tensors.items()
                    if t.is_floating_point() and not torch.isfinite(t).all()), None)
        if bad is not None:
            raise ValueError(f"{where}tensor {bad} holds NaN or infinity (the run that saved it "
                             "diverged); load an earlier checkpoint")

        tensors = dict(tensors)
        if getattr(model.config, "tie_embeddings", False):
            tensors.setdefault("lm_head.weight", tensors["tok_emb.weight"])
        set_model_state_dict(self.runner, tensors, options=StateDictOptions(full_state_dict=True))

    def optimizer_state_dict(self, optimizer):
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_optimizer_state_dict,
        )

        return get_optimizer_state_dict(self.runner, optimizer,
                                        options=StateDictOptions(full_state_dict=True))

    def load_optimizer_state_dict(self, optimizer, state):
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_optimizer_state_dict,
        )

        set_optimizer_state_dict(self.runner, optimizer, state,
                                 options=StateDictOptions(full_state_dict=True))


class ParallelStrategy(FSDPStrategy):
    """The composed path: `ParallelDims` (TrainConfig's dp_replicate, dp_shard, tp, pp) -> a
    named `DeviceMesh` -> `parallelize_gpt` (tensor parallel, FSDP2 or HSDP). A model on the meta
    device is given storage for this rank's shards only and initialised as
    `torch.manual_seed(seed); GPT(config)` would (`materialize_gpt`); a real model has rank 0's
    weights broadcast and then sharded. Checkpoints are sharded (DCP, `minillm.distributed.dcp`).
    """

    name = "parallel"
    needs_process_group = False  # one process builds a mesh of one (e.g. to resume a run there)
    sharded_checkpoints = True
    meta_init = True

    def wrap(self, model, device, compile):
        from minillm.distributed.mesh import ParallelDims
        from minillm.distributed.parallelize import (
            ParallelizeConfig,
            PipelineSchedule,
            check_parallelizable,
            materialize_gpt,
            parallelize_gpt,
        )
        from minillm.distributed.pipeline import GPTStage

        c = self.config
        self.dims = ParallelDims(c.dp_replicate, c.dp_shard, c.tp, c.pp, self.dist.world_size)
        check_parallelizable(model.config, self.dims)
        self.dims.build_mesh(torch.device(device).type)
        meta = any(p.is_meta for p in model.parameters())
        if not meta and self.dist.enabled:
            with torch.no_grad():  # every rank shards the same weights: rank 0's
                for t in [*model.parameters(), *model.buffers()]:
                    torch.distributed.broadcast(t, src=0)
        whole, self.module = model, model
        if self.dims.pp > 1:  # this rank's stage (copies of its modules, one-process names)
            self.module = GPTStage(model, self.dims.mesh["pp"].get_local_rank(), self.dims.pp)
        self.runner = parallelize_gpt(self.module, self.dims, ParallelizeConfig(compile=compile))
        self.init_stats = (materialize_gpt(self.module, device, c.seed, source=whole) if meta
                           else None)
        if self.dims.pp > 1:
            self.pipeline = PipelineSchedule(self.runner, self.dims, device, c.batch_size)
        return self.runner

    def local_model(self, model):
        return self.module

    def data_slice(self):
        return self.dims.dp_rank(), self.dims.dp

    def clip_grad_norm(self, model, max_norm):
        from minillm.distributed.parallelize import clip_grad_norm

        pp_group = self.dims.mesh["pp"].get_group() if self.dims.pp > 1 else None
        return clip_grad_norm(list(model.parameters()), max_norm, pp_group)

    def model_state_dict(self, model):
        """Full weights on rank 0 only (the other ranks get {}), on the CPU; with pp > 1 the
        stages' parts are gathered there too."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        if self.dims.pp == 1:
            return _without_aliases(model, get_model_state_dict(
                model, options=StateDictOptions(full_state_dict=True, cpu_offload=True)))
        part = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
        part = {k: v.cpu() for k, v in part.items()}
        parts = [None] * self.dims.pp
        torch.distributed.all_gather_object(parts, part, group=self.dims.mesh["pp"].get_group())
        full = {k: v for p in parts for k, v in p.items()}
        return _without_aliases(model, full) if self.dist.is_main else {}


def _zero(stage: int) -> type[ZeroStrategy]:
    return type(f"Zero{stage}Strategy", (ZeroStrategy,), {"name": f"zero{stage}", "stage": stage})



_STRATEGIES: dict[str, Callable[[DistInfo], Strategy]] = {
    "single": Strategy, "ddp": DDPStrategy, "own_ddp": OwnDDPStrategy,
    **{f"zero{stage}": _zero(stage) for stage in (1, 2, 3)},
    "fsdp": FSDPStrategy, "parallel": ParallelStrategy}


def register_strategy(name: str, cls: Callable[[DistInfo], Strategy], *,
                      overwrite: bool = False) -> None:
    """Make `cls` available as `TrainConfig(strategy=name)`.

    Args:
        name: the strategy's name.
        cls: a `Strategy` subclass (called with the `DistInfo`).
        overwrite: replace an existing strategy of that name.

    Raises:
        ValueError: the name is taken ("auto" is reserved).
    """
    if name == "auto" or (name in _STRATEGIES and not overwrite):
        raise ValueError(f"strategy {name!r} is already registered (or reserved); pass "
                         "overwrite=True to replace it")
    _STRATEGIES[name] = cls


def strategy_names() -> list[str]:
    """The registered strategies' names, sorted ("auto" is also accepted by `get_strategy`)."""
    return sorted(_STRATEGIES)


def resolve_strategy(name: str, world_size: int, config: Any = None) -> str:
    """The strategy "auto" stands for: "parallel" when the config sets any parallel dim
    (dp_replicate, tp, pp > 1 or dp_shard != -1), else "ddp" with several processes, else
    "single"; any other name is itself."""
    if name != "auto":
        return name
    dims = [getattr(config, k, d) for k, d in (("dp_replicate", 1), ("tp", 1), ("pp", 1))]
    if any(d > 1 for d in dims) or getattr(config, "dp_shard", -1) != -1:
        return "parallel"
    return "ddp" if world_size > 1 else "single"


def strategy_class(name: str) -> Callable[..., Strategy]:
    """The registered strategy `name` (its class).

    Raises:
        ValueError: no strategy has that name (the registered ones are listed).
    """
    if name not in _STRATEGIES:
        raise ValueError(f"strategy={name!r} is not registered; choose 'auto' or one of "
                         f"{strategy_names()}")
    return _STRATEGIES[name]


def get_strategy(name: str, dist: DistInfo, config: Any = None) -> Strategy:
    """The strategy `name` for this process ("auto": `resolve_strategy`).

    Args:
        name: a registered name or "auto".
        dist: this process's `DistInfo`.
        config: the TrainConfig (the "parallel" strategy reads its dims and seed).

    Raises:
        ValueError: no strategy has that name, or a sharded one in one process.
    """
    name = resolve_strategy(name, dist.world_size, config)
    cls = strategy_class(name)
    if getattr(cls, "needs_process_group", False) and not dist.enabled:
        raise ValueError(f"strategy={name!r} shards the model over processes: launch with "
                         "torchrun --nproc_per_node=N (or use strategy='single')")
    strategy = cls(dist)
    strategy.config = config
    return strategy
