"""The sharded strategies for the Trainer: "own_ddp", "zero1", "zero2", "zero3", "fsdp".

Each adapts one engine to `minillm.distributed.strategy.Strategy`:
- own_ddp: `BucketedDDP` (minillm.distributed.ddp) with torch's AdamW;
- zero1/2/3: `ZeroModel` + `ZeroAdamW` (minillm.distributed.zero);
- fsdp: torch's FSDP2 `fully_shard` per block (minillm.distributed.fsdp).

Checkpoints. Weights are gathered to full tensors (every rank takes part, rank 0 writes one
`model.safetensors`), so a sharded run's checkpoint loads into a one-process model for generation
unchanged. Optimizer states are gathered too, into the one-process layout (the
`torch.optim.AdamW.state_dict()` of the same model), which every rank then slices its shard from
on resume. Why gather rather than `torch.distributed.checkpoint` (each rank writing its shard in
parallel): at course scale the full state is kilobytes to megabytes, one file format serves every
strategy and one process, and the step's peak memory is not the gather's; at billions of
parameters the gather would not fit on rank 0 and DCP is the right tool. The Trainer refuses to
resume under another world size (the data stream's slicing depends on it).
"""

from __future__ import annotations

import torch
from torch import nn

from minillm.distributed.ddp import BucketedDDP
from minillm.distributed.strategy import Strategy, register_strategy
from minillm.distributed.zero import ZeroAdamW, ZeroModel
from minillm.optim import param_groups

__all__ = ["OwnDDPStrategy", "ZeroStrategy", "FSDPStrategy"]


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

        self.runner = apply_fsdp(model, torch.device(device).type)
        return torch.compile(self.runner) if compile else self.runner

    def no_sync(self, runner):
        import contextlib

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


def _zero(stage: int) -> type[ZeroStrategy]:
    return type(f"Zero{stage}Strategy", (ZeroStrategy,), {"name": f"zero{stage}", "stage": stage})


register_strategy("own_ddp", OwnDDPStrategy)
for _stage in (1, 2, 3):
    register_strategy(f"zero{_stage}", _zero(_stage))
register_strategy("fsdp", FSDPStrategy)
