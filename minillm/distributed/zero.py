"""ZeRO stages 1-3 written out over flat per-rank shards (Rajbhandari et al., arXiv:1910.02054).

Data parallelism keeps N copies of the model state: parameters, gradients and optimizer states.
ZeRO removes the redundancy one copy at a time. With Ψ parameters, N ranks and K bytes of
optimizer state per parameter (mixed-precision Adam: 2-byte parameters and gradients, K = 12),
per-rank memory is

    data parallel            (2 + 2 + K) Ψ
    stage 1  (P_os)          2Ψ + 2Ψ + KΨ/N         optimizer states sharded
    stage 2  (P_os+g)        2Ψ + (2 + K)Ψ/N        + gradients reduce-scattered, only a shard kept
    stage 3  (P_os+g+p)      (2 + 2 + K)Ψ/N         + parameters sharded, gathered when used

and per-step communication is 2Ψ for stages 1-2 (reduce-scatter Ψ + all-gather Ψ, what an
all-reduce costs) and 3Ψ for stage 3 (parameters gathered for forward and again for backward).

How it is laid out here. The model is cut into *units*: each Transformer block, plus a root unit
with everything else (embeddings, final norm, head; a tied weight once). A unit's trainable
parameters are concatenated into one flat vector (decayed tensors first), padded with zeros to a
multiple of N and cut into N equal shards; rank r owns shard r of every unit:

    flat = [w_1 | w_2 | ... | w_k | 0 ... 0]      length padded = N * S,  rank r owns [rS, (r+1)S)

- stage 1: every rank keeps the full flat parameters and gradients (the model's tensors are views
  into them); after backward each unit's gradient is reduce-scattered, AdamW updates only the
  owned shard, and the shards are all-gathered back into the full parameters;
- stage 2: a unit's gradients are reduce-scattered as soon as backward has produced them all
  (from gradient hooks) and the full gradients are freed; only the shard's gradient is kept;
- stage 3: only the shard of the parameters is kept. A forward pre-hook all-gathers a unit's
  parameters, its forward hook frees them and hooks the unit's output so that backward gathers
  them again, uses them, reduce-scatters the gradients and frees them once more.

AdamW is elementwise, so updating shards gives the same numbers as updating whole tensors; the
optimizer is torch's AdamW over the shard pieces. Departures from DeepSpeed: fp32 throughout
(K = 8: Adam's m and v; the fp32 parameters are their own master copy), no prefetching of the
next unit, no CPU offload; frozen parameters are not sharded (every rank keeps them).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch import nn

from minillm.distributed.ddp import NoSyncSwitch

__all__ = ["ZeroModel", "ZeroAdamW", "FlatUnit"]

class FlatUnit:
    """The trainable parameters of one module as a flat vector cut into N shards.

    Args:
        name: the module's name (for messages).
        params: (parameter, decayed) pairs, decayed ones first, each parameter once.
        stage: 1, 2 or 3.
        rank / world_size: this rank and N.
    """

    def __init__(self, name: str, params: list[tuple[nn.Parameter, bool]], stage: int,
                 rank: int, world_size: int):
        self.name, self.stage = name, stage
        self.params = [p for p, _ in params]
        self.shapes = [p.shape for p in self.params]
        self.numels = [p.numel() for p in self.params]
        self.offsets = [sum(self.numels[:i]) for i in range(len(self.params))]
        self.numel = sum(self.numels)
        self.n_decay = sum(n for (_, d), n in zip(params, self.numels, strict=True) if d)
        self.world_size, self.rank = world_size, rank
        self.shard_size = math.ceil(self.numel / world_size)
        self.padded = self.shard_size * world_size
        self.lo, self.hi = rank * self.shard_size, (rank + 1) * self.shard_size
        dtype, device = self.params[0].dtype, self.params[0].device
        self.like = {"dtype": dtype, "device": device}
        full = torch.zeros(self.padded, **self.like)
        for p, off, n in zip(self.params, self.offsets, self.numels, strict=True):
            full[off:off + n] = p.detach().reshape(-1)
        dist.broadcast(full, src=0)  # every replica starts from rank 0's weights
        self.ready = 0               # parameters whose gradient arrived in this backward
        self.state = "full"          # stage 3: "sharded", "forward" or "backward"
        self.acc: torch.Tensor | None = None  # stages 2-3: local gradient sum during no_sync
        if stage < 3:
            self.flat = full                      # the model's parameters are views into it
            self._point_params_at(full)
            self.shard = full[self.lo:self.hi]    # what AdamW updates in place
        else:
            self.shard = full[self.lo:self.hi].clone()
            self.free()
        if stage == 1:
            self.flat_grad = torch.zeros(self.padded, **self.like)
            for p, off, n in zip(self.params, self.offsets, self.numels, strict=True):
                p.grad = self.flat_grad[off:off + n].view(p.shape)
            self.shard_grad = self.flat_grad[self.lo:self.hi]
        else:
            self.shard_grad = torch.zeros(self.shard_size, **self.like)

    # ---- parameters ----------------------------------------------------------------------
    def _point_params_at(self, full: torch.Tensor) -> None:
        for p, shape, off, n in zip(self.params, self.shapes, self.offsets, self.numels,
                                    strict=True):
            p.data = full[off:off + n].view(shape)

    def gather(self) -> None:
        """Stage 3: all-gather the full parameters and point the model's tensors at them."""
        full = torch.empty(self.padded, **self.like)
        dist.all_gather_single(full, self.shard)
        self._point_params_at(full)

    def free(self) -> None:
        """Stage 3: drop the full parameters (the model's tensors become empty)."""
        for p in self.params:
            p.data = torch.empty(0, **self.like)
        self.state = "sharded"

    def all_gather_updated(self) -> None:
        """Stages 1-2: after the shard's optimizer step, give every rank every shard."""
        dist.all_gather_single(self.flat, self.shard.clone())

    # ---- gradients -----------------------------------------------------------------------
    def reduce_gradients(self, sync: bool) -> None:
        """Average this unit's gradients over ranks into `shard_grad` (or, when not `sync`,
        keep accumulating locally)."""
        n = self.world_size
        if self.stage == 1:
            if sync:
                self.flat_grad.mul_(1.0 / n)
                out = torch.empty(self.shard_size, **self.like)
                dist.reduce_scatter_single(out, self.flat_grad)
                self.shard_grad.copy_(out)
            return
        flat = torch.zeros(self.padded, **self.like) if self.acc is None else self.acc
        for p, off, n_el in zip(self.params, self.offsets, self.numels, strict=True):
            if p.grad is not None:
                flat[off:off + n_el] += p.grad.reshape(-1)
                p.grad = None                     # the full gradient is freed
        if not sync:
            self.acc = flat
            return
        self.acc = None
        out = torch.empty(self.shard_size, **self.like)
        dist.reduce_scatter_single(out, flat.mul_(1.0 / n))
        self.shard_grad += out

    def optimizer_pieces(self) -> list[tuple[torch.Tensor, torch.Tensor, bool]]:
        """(shard parameter view, its gradient view, decayed) for the owned slice, split where
        the decayed tensors end; the padding is left out. Pieces may be empty."""
        pieces = []
        for start, stop, decay in ((0, self.n_decay, True), (self.n_decay, self.numel, False)):
            a, b = max(self.lo, start), max(min(self.hi, stop), max(self.lo, start))
            pieces.append((self.shard[a - self.lo:b - self.lo],
                           self.shard_grad[a - self.lo:b - self.lo], decay))
        return pieces

    def gather_shard_vector(self, local: torch.Tensor) -> list[torch.Tensor]:
        """All-gather a per-rank vector of `shard_size` and split it into the unit's tensors."""
        full = torch.empty(self.padded, dtype=local.dtype, device=local.device)
        dist.all_gather_single(full, local.contiguous())
        return [full[off:off + n].view(shape).clone()
                for off, n, shape in zip(self.offsets, self.numels, self.shapes, strict=True)]


def _is_decayed(p: nn.Parameter) -> bool:
    return p.ndim >= 2  # the rule of minillm.training.optim.param_groups: matrices only


class ZeroModel(NoSyncSwitch, nn.Module):
    """Wrap a model for ZeRO stage 1, 2 or 3 over the default process group.

    Args:
        module: the model; rank 0's weights are broadcast to all ranks.
        stage: 1 (optimizer states sharded), 2 (+ gradients) or 3 (+ parameters).
        unit_modules: the submodules that become units of their own (default: `module.blocks`);
            everything else is the root unit.

    Build the optimizer with `ZeroAdamW(zero_model, lr=...)`.
    """

    def __init__(self, module: nn.Module, stage: int, unit_modules: list[nn.Module] | None = None):
        super().__init__()
        if stage not in (1, 2, 3):
            raise ValueError(f"stage={stage!r}; ZeRO has stages 1, 2 and 3")
        if not dist.is_initialized():
            raise RuntimeError("ZeroModel needs a process group: call "
                               "torch.distributed.init_process_group (or launch with torchrun)")
        self.module, self.stage = module, stage
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.require_sync, self._callback_queued = True, False
        if unit_modules is None:
            unit_modules = list(getattr(module, "blocks", []))
        names = {id(m): n for n, m in module.named_modules()}
        claimed: set[int] = set()
        owners: list[tuple[str, nn.Module, list[nn.Parameter]]] = []
        for m in unit_modules:
            ps = [p for p in m.parameters() if p.requires_grad and id(p) not in claimed]
            claimed.update(id(p) for p in ps)
            owners.append((names.get(id(m), "?"), m, ps))
        rest = [p for p in module.parameters() if p.requires_grad and id(p) not in claimed]
        owners.insert(0, ("<root>", module, rest))
        self.units: list[FlatUnit] = []
        self._unit_modules: list[nn.Module] = []
        with torch.no_grad():
            for name, m, ps in owners:
                if not ps:
                    continue
                ordered = [(p, True) for p in ps if _is_decayed(p)] + \
                          [(p, False) for p in ps if not _is_decayed(p)]
                self.units.append(FlatUnit(name, ordered, stage, self.rank, self.world_size))
                self._unit_modules.append(m)
            for p in module.parameters():   # frozen tensors: replicated, rank 0's values
                if not p.requires_grad:
                    dist.broadcast(p.data, src=0)
        self._unit_of = {id(p): u for u in self.units for p in u.params}
        for u in self.units:
            for p in u.params:
                p.register_post_accumulate_grad_hook(self._on_grad)
        if stage == 3:
            for u, m in zip(self.units, self._unit_modules, strict=True):
                m.register_forward_pre_hook(self._make_pre_forward(u))
                m.register_forward_hook(self._make_post_forward(u))

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    # ---- stage 3: gather for forward, free, gather for backward ---------------------------
    # (a unit's output may be a tensor, a block's named tuple or the model's `LMOutput`)
    def _make_pre_forward(self, unit: FlatUnit):
        def hook(module, args):
            if unit.state == "sharded":
                unit.gather()
                unit.state = "forward"
        return hook

    def _make_post_forward(self, unit: FlatUnit):
        def regather(grad):
            if unit.state == "sharded":  # backward reached this unit: gather it again
                unit.gather()
                unit.state = "backward"

        def hook(module, args, output):
            if unit.state != "forward":  # a recomputation inside backward: keep the weights
                return None
            for t in _tensors_in(output):
                if t.requires_grad:
                    t.register_hook(regather)
            unit.free()
            return None
        return hook

    # ---- gradients -----------------------------------------------------------------------
    def _on_grad(self, param: nn.Parameter) -> None:
        if not self._callback_queued:
            torch.autograd.Variable._execution_engine.queue_callback(self._finish_backward)
            self._callback_queued = True
        unit = self._unit_of[id(param)]
        unit.ready += 1
        if unit.ready == len(unit.params):
            self._unit_done(unit)

    def _unit_done(self, unit: FlatUnit) -> None:
        unit.ready = -1  # done for this backward
        if self.stage > 1 or self.require_sync:
            unit.reduce_gradients(self.require_sync)
        if self.stage == 3:
            unit.free()

    def _finish_backward(self) -> None:
        self._callback_queued = False
        for unit in self.units:  # units with a parameter that got no gradient this backward
            if unit.ready != -1:
                self._unit_done(unit)
            unit.ready = 0

    def clip_grad_norm(self, max_norm: float) -> float:
        """Clip the global gradient norm (over all shards) to `max_norm`; return it unclipped.

        Same rule as `torch.nn.utils.clip_grad_norm_`: scale by max_norm / (norm + 1e-6) when
        that is below 1. The sum of squares runs over the shards, so it can differ from torch's
        per-tensor norms in the last bits."""
        sq = torch.zeros((), dtype=torch.float64, device=self.units[0].like["device"])
        for u in self.units:
            sq += u.shard_grad.double().pow(2).sum()
        dist.all_reduce(sq)
        norm = float(sq.sqrt())
        if max_norm > 0:
            coef = max_norm / (norm + 1e-6)
            if coef < 1.0:
                for u in self.units:
                    u.shard_grad.mul_(coef)
        return norm

    # ---- full weights --------------------------------------------------------------------
    @contextlib.contextmanager
    def summon_full_params(self, writeback: bool = False) -> Iterator[nn.Module]:
        """Inside this block the wrapped model holds its full weights (stage 3 gathers them),
        e.g. to save a checkpoint or to evaluate; afterwards they are freed again. With
        `writeback`, changes made inside (loading a checkpoint) are copied into the shards."""
        gathered = [u for u in self.units if self.stage == 3 and u.state == "sharded"]
        for u in gathered:
            u.gather()
            u.state = "summoned"
        try:
            yield self.module
        finally:
            for u in gathered:
                if writeback:
                    with torch.no_grad():
                        for p, off, n in zip(u.params, u.offsets, u.numels, strict=True):
                            lo, hi = max(off, u.lo), min(off + n, u.hi)
                            if lo < hi:
                                u.shard[lo - u.lo:hi - u.lo] = p.reshape(-1)[lo - off:hi - off]
                u.free()

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """The model's state dict with full tensors, on every rank (clones)."""
        with self.summon_full_params():
            return {k: v.detach().clone() for k, v in self.module.state_dict().items()}


class ZeroAdamW(torch.optim.AdamW):
    """AdamW over this rank's shards of a `ZeroModel`; the same numbers as unsharded AdamW.

    Args:
        model: the `ZeroModel`.
        lr, betas, eps, weight_decay: as `torch.optim.AdamW` (decay on matrices only, as
            `minillm.training.optim.configure_optimizer`).
    """

    def __init__(self, model: ZeroModel, lr: float = 1e-3, betas=(0.9, 0.95), eps: float = 1e-8,
                 weight_decay: float = 0.1):
        self.model = model
        decay, no_decay, self._pieces = [], [], []
        for u in model.units:
            for shard, grad, is_decayed in u.optimizer_pieces():
                piece = nn.Parameter(shard)  # shares storage with the unit's shard
                piece.grad = grad
                (decay if is_decayed else no_decay).append(piece)
                self._pieces.append(piece)
        super().__init__([{"params": decay, "weight_decay": weight_decay},
                          {"params": no_decay, "weight_decay": 0.0}],
                         lr=lr, betas=betas, eps=eps, foreach=False)

    @torch.no_grad()
    def step(self, closure=None):
        loss = super().step(closure)
        if self.model.stage < 3:
            for u in self.model.units:
                u.all_gather_updated()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Zero the gradient buffers in place (the pieces' gradients are views into them)."""
        for u in self.model.units:
            (u.flat_grad if u.stage == 1 else u.shard_grad).zero_()
            u.acc = None


def _tensors_in(output) -> list[torch.Tensor]:
    """The tensors in a module's output: a tensor, or tensors nested in tuples, lists, dicts
    and dataclasses (a block's `BlockOutput`, the model's `LMOutput`)."""
    if isinstance(output, torch.Tensor):
        return [output]
    if dataclasses.is_dataclass(output):
        output = [getattr(output, f.name) for f in dataclasses.fields(output)]
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, (tuple, list)):
        return [t for item in output for t in _tensors_in(item)]
    return []
