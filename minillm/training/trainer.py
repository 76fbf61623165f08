"""The training loop: AdamW, warm-up + cosine, clipping, accumulation, autocast, DDP, resume.

One optimizer step:
    for each of grad_accum_steps micro-batches:   loss / grad_accum_steps -> backward
    clip the global gradient norm to grad_clip
    set lr from `lr_at(step)`; AdamW step; zero grads

Determinism: batches come from one `torch.Generator` seeded with `seed`; dropout uses torch's
global generator, seeded once. Both states go into every checkpoint with the optimizer, so a
run killed at any point and resumed from its last checkpoint ends with the same weights, bit
for bit on the CPU, as a run never interrupted.

Data parallelism: under torchrun each rank draws the same global batch and trains on its own
slice; DistributedDataParallel averages gradients, so N ranks with batch_size B follow one
process with batch_size N*B. Only rank 0 writes checkpoints and prints. Under the "parallel"
strategy the slices are the data-parallel group's (dp_replicate x dp_shard ranks; tp and pp
ranks of one replica read the same batch), the model may be built on the meta device (each rank
then materialises only its shards), and every rank writes its shards of each checkpoint (DCP),
which resumes under another world size too.

Extension points (what SFT, DPO and the distributed strategies plug into):
- `batches=`: a `minillm.data.BatchSource` (default `TokenStreamBatches` over `train_tokens`,
  the same windows as before); its state is saved with the checkpoint.
- `loss_fn=`: `loss_fn(runner, batch) -> (loss, metrics)` (default `lm_loss_fn`: the LM loss
  plus the model's auxiliary losses); metrics are averaged over each log interval into
  `history`.
- `TrainConfig.strategy`: how the model is wrapped, its optimizer built, its gradients clipped
  and its weights gathered (`minillm.distributed.strategy`).
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from minillm.data.batching import BatchSource, TokenStreamBatches, check_tokens
from minillm.distributed import DistInfo, all_reduce_mean, get_strategy, init_from_env
from minillm.distributed.dcp import is_sharded_checkpoint, load_sharded, save_sharded
from minillm.distributed.strategy import resolve_strategy, strategy_names
from minillm.io import CheckpointError, load_tensors
from minillm.optim import lr_at
from minillm.training.checkpoint import (
    intact_checkpoint_before,
    latest_checkpoint,
    load_trainer_state,
    prepare_out_dir,
    save_sharded_training_checkpoint,
    save_training_checkpoint,
)
from minillm.training.interrupt import TrainingInterrupted, stop_requests
from minillm.utils import (
    check_finite_fields,
    choose_device,
    config_from_dict,
    default_dtype_for,
    seed_everything,
)

__all__ = ["LossFn", "TrainConfig", "Trainer", "TrainingDiverged", "lm_loss_fn"]

LossFn = Callable[[nn.Module, dict[str, torch.Tensor]], tuple[torch.Tensor, dict[str, float]]]


def lm_loss_fn(runner: nn.Module, batch: dict[str, torch.Tensor]
               ) -> tuple[torch.Tensor, dict[str, float]]:
    """The default loss: next-token cross-entropy plus the model's auxiliary losses.

    Args:
        runner: the (wrapped) model; called as `runner(input_ids, labels)`, returning an
            `LMOutput`.
        batch: {"input_ids": (B, T), "labels": (B, T)} (labels -100 are ignored).

    Returns:
        (loss to backpropagate, {"lm_loss": ..., one entry per auxiliary loss}).
    """
    out = runner(batch["input_ids"], batch["labels"])
    metrics = {"lm_loss": out.loss.item()}
    metrics.update({name: value.item() for name, value in out.aux_losses.items()})
    return out.total_loss(), metrics


class TrainingDiverged(RuntimeError):
    """The loss or the weights became NaN or infinite; the run stops without saving them."""


def _diverged(step: int, what: str, out_dir: str | None) -> TrainingDiverged:
    kept = (f"the last good checkpoint in {out_dir} is kept" if out_dir is not None
            else "nothing was saved")
    return TrainingDiverged(f"step {step}: {what}, the run diverged; {kept}. Lower lr, set "
                            "grad_clip or warmup_steps, and resume or restart")


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class TrainConfig:
    max_steps: int = 1000          # optimizer steps in the whole run
    batch_size: int = 16           # sequences per micro-batch, per process
    seq_len: int | None = None     # training window in tokens (None = the model's context_length)
    grad_accum_steps: int = 1      # micro-batches per optimizer step
    lr: float = 1e-3               # peak learning rate
    min_lr: float = 1e-4           # floor of the cosine decay
    warmup_steps: int = 100        # linear warm-up steps
    weight_decay: float = 0.1      # AdamW decay on >= 2-D weights
    beta1: float = 0.9             # AdamW's decay rate of the gradient mean
    beta2: float = 0.95            # AdamW's decay rate of the squared-gradient mean
    grad_clip: float = 1.0         # max global gradient norm (0 = no clipping)
    eval_interval: int = 100       # steps between validation estimates (0 = never)
    eval_batches: int = 10         # batches per validation estimate
    log_interval: int = 10         # steps between entries in the history
    checkpoint_interval: int = 500 # steps between checkpoints (0 = only at the end): bounds
                                   # what a killed run loses (SIGINT/SIGTERM save at once)
    keep_checkpoints: int = 2      # checkpoint folders kept in out_dir/checkpoints
    out_dir: str | None = None     # where checkpoints go (None = no checkpoints)
    seed: int = 1337               # seeds the data stream and dropout
    device: str = "auto"           # "auto" = cuda > mps > cpu
    dtype: str = "auto"            # autocast dtype: "auto" = bfloat16 on CUDA, else float32;
                                   # "float16" adds dynamic loss scaling (GradScaler)
    compile: bool = False          # torch.compile the model (the saved weights stay uncompiled)
    progress: bool | None = None   # tqdm bar; None = only when stderr is a terminal
    strategy: str = "auto"         # how the model is wrapped: "auto" (parallel if a dim below is
                                   # set, else ddp under torchrun, else single), "single", "ddp",
                                   # "own_ddp", "zero1", "zero2", "zero3", "fsdp", "parallel"
                                   # (minillm.distributed.strategy)
    dp_replicate: int = 1          # parallel: replicas that all-reduce gradients (HSDP across
                                   # nodes when dp_shard > 1 too)
    dp_shard: int = -1             # parallel: ranks each replica's weights are sharded over
                                   # (FSDP2); -1 = the processes the other dims leave
    tp: int = 1                    # parallel: tensor-parallel ranks per block (divide n_head)
    pp: int = 1                    # parallel: pipeline stages, 1F1B (divide n_layer; untied
                                   # embeddings, no dropout)

    def __post_init__(self) -> None:
        check_finite_fields(self)
        for name in ("max_steps", "batch_size", "grad_accum_steps", "eval_batches", "log_interval"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}={getattr(self, name)} must be positive")
        if self.seq_len is not None and self.seq_len <= 0:
            raise ValueError(f"seq_len={self.seq_len} must be positive (or None)")
        for name in ("warmup_steps", "eval_interval", "checkpoint_interval", "grad_clip",
                     "keep_checkpoints", "min_lr", "weight_decay"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0")
        if self.lr <= 0:
            raise ValueError(f"lr={self.lr} must be positive")
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr={self.min_lr} is above lr={self.lr}; the floor must be lower")
        if self.dtype != "auto" and self.dtype not in DTYPES:
            raise ValueError(f"dtype={self.dtype!r}; choose 'auto' or one of {sorted(DTYPES)}")
        if self.strategy != "auto" and self.strategy not in strategy_names():
            raise ValueError(f"strategy={self.strategy!r} is not registered; choose 'auto' or "
                             f"one of {strategy_names()}")
        for name in ("dp_replicate", "tp", "pp"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if self.dp_shard < 1 and self.dp_shard != -1:
            raise ValueError(f"dp_shard={self.dp_shard} must be >= 1, or -1 (what is left)")
        dims_set = (self.dp_replicate, self.tp, self.pp) != (1, 1, 1) or self.dp_shard != -1
        if dims_set and self.strategy not in ("auto", "parallel"):
            raise ValueError(f"dp_replicate/dp_shard/tp/pp are the 'parallel' strategy's dims, "
                             f"but strategy={self.strategy!r}; use strategy='parallel' (or 'auto')")
        if self.dtype == "float16" and self.strategy == "parallel":
            raise ValueError("dtype='float16' needs a sharded loss scaler the 'parallel' strategy "
                             "does not have; use 'bfloat16' (its default on CUDA) or 'float32'")

    def to_dict(self) -> dict:
        """The fields as a JSON-able dict (saved in trainer.json)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """Read a config back (e.g. trainer.json's "train_config"); unknown fields are an
        error naming them."""
        return config_from_dict(cls, d, "train config")


class Trainer:
    """Train a language model on a token stream, or on any batch source.

    Args:
        model: the (uncompiled, unwrapped) model; it is moved to the chosen device.
        train_tokens / val_tokens: 1-D int64 tensors for the default batch source (not needed
            when `batches` is given).
        config: a `TrainConfig`.
        tokenizer: optional dict saved as tokenizer.json in each checkpoint.
        dist: a `DistInfo`; default reads torchrun's environment.
        batches: a `BatchSource`; default `TokenStreamBatches(train_tokens, val_tokens, ...)`.
        loss_fn: `loss_fn(runner, batch) -> (loss, metrics)`; default `lm_loss_fn`.
        on_log: called on rank 0 with each new `history` entry and each `eval_history` entry
            (the command line prints them to stderr when it shows no progress bar).

    SIGINT or SIGTERM during `fit` stops the run after the step in flight: that step's
    checkpoint is saved (with an `out_dir`) and `TrainingInterrupted` is raised
    (`minillm.training.interrupt`); `resume()` continues from it.
    """

    def __init__(self, model: nn.Module, train_tokens: torch.Tensor | None = None,
                 val_tokens: torch.Tensor | None = None, config: TrainConfig | None = None,
                 tokenizer: dict | None = None, dist: DistInfo | None = None, *,
                 batches: BatchSource | None = None, loss_fn: LossFn | None = None,
                 on_log: Callable[[dict], None] | None = None):
        self.config = config or TrainConfig()
        c = self.config
        ctx = model.config.context_length
        if c.seq_len is not None and c.seq_len > ctx:
            raise ValueError(f"seq_len={c.seq_len} is longer than the model's context_length={ctx}")
        self.seq_len = c.seq_len or ctx
        vocab = model.config.vocab_size
        if batches is None:
            if train_tokens is None:
                raise ValueError("Trainer needs train_tokens (a 1-D tensor of token ids) or a "
                                 "batch source (batches=...)")
            check_tokens(train_tokens, self.seq_len, "training tokens", vocab)
        if val_tokens is not None:
            check_tokens(val_tokens, self.seq_len, "validation tokens", vocab)
        self.device = choose_device(c.device)
        self.dist = dist or init_from_env(self.device.type)
        if c.out_dir is not None and self.dist.is_main:
            prepare_out_dir(c.out_dir)  # a bad out_dir fails now, not after the run
        if c.out_dir is not None and self.dist.enabled:
            torch.distributed.barrier()  # no rank looks for checkpoints while rank 0 cleans up
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
        self.amp_dtype = default_dtype_for(self.device) if c.dtype == "auto" else DTYPES[c.dtype]
        self.strategy = get_strategy(c.strategy, self.dist, c)
        on_meta = any(p.is_meta for p in model.parameters())
        if on_meta and not self.strategy.meta_init:
            raise ValueError(f"the model is on the meta device (no weights) but strategy="
                             f"{self.strategy.name!r} needs real ones; build it normally, or use "
                             "strategy='parallel', which initialises each rank's shards")
        self.model = model if on_meta else model.to(self.device)  # the raw module: what we save
        self.train_tokens, self.val_tokens = train_tokens, val_tokens
        self.tokenizer = tokenizer
        # the runner is what the loop calls: the model itself, or a DDP / ZeRO / FSDP wrapper
        # (a meta-device model is given its shards' storage and initial values here)
        self.runner = self.strategy.wrap(self.model, self.device, c.compile)
        self.model = self.strategy.local_model(self.model)  # (a pipeline stage: its part)
        data_rank, self.data_ranks = self.strategy.data_slice()
        given = (getattr(batches, "rank", self.dist.rank),  # (a source that says its slice)
                 getattr(batches, "world_size", self.dist.world_size))
        if batches is not None and given != (data_rank, self.data_ranks):
            raise ValueError(f"this layout reads data as rank {data_rank} of {self.data_ranks} "
                             f"(tp and pp ranks share a batch), but the batch source slices as "
                             f"{given[0]} of {given[1]}; build it with the strategy's "
                             "data_slice() (minillm train --data does), or use tp=pp=1")
        self.optimizer = self.strategy.build_optimizer(self.model, c, self.device.type)
        # float16's 5-bit exponent flushes small gradients to zero: scale the loss up before
        # backward, unscale before clipping, skip steps whose gradients overflowed and adapt the
        # scale (Micikevicius et al. 2018). bfloat16 has float32's range and needs none of it.
        self.scaler = (torch.amp.GradScaler(self.device.type)
                       if self.amp_dtype == torch.float16 else None)
        self.batches = batches if batches is not None else TokenStreamBatches(
            train_tokens, val_tokens, c.batch_size, self.seq_len, c.seed, data_rank,
            self.data_ranks)
        if self.strategy.pipeline is not None and loss_fn is not None:
            raise ValueError("pp > 1 trains with the language-model loss of the last stage; "
                             "a custom loss_fn is not supported there (use pp=1)")
        self.loss_fn = loss_fn or lm_loss_fn
        self.on_log = on_log
        seed_everything(c.seed, libraries=("torch",))  # dropout
        self.step = 0
        self.tokens = 0  # training tokens consumed so far (all ranks)
        self.history: list[dict] = []
        self.eval_history: list[dict] = []

    @property
    def generator(self) -> torch.Generator | None:
        """The default batch source's generator (None for another source)."""
        return getattr(self.batches, "generator", None)

    # ---- checkpoints ---------------------------------------------------------------------
    def state(self) -> dict:
        """What trainer_state.pt holds: optimizer, batch source, RNG and loss-scale states."""
        state = {
            "optimizer": self.strategy.optimizer_state_dict(self.optimizer),
            "batches": self.batches.state_dict(),
            "torch_rng": torch.get_rng_state(),
        }
        if torch.cuda.is_available():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        if self.scaler is not None:
            state["grad_scaler"] = self.scaler.state_dict()
        return state

    def _rng_per_rank(self) -> dict[str, torch.Tensor]:
        """Every rank's torch (and CUDA) generator state, stacked (world_size, n): a sharded
        checkpoint restores each rank's own (row rank % the rows, under another world size)."""
        states = {"torch_rng_per_rank": torch.get_rng_state()}
        if torch.cuda.is_available():
            states["cuda_rng_per_rank"] = torch.cuda.get_rng_state()
        if not self.dist.enabled:
            return {k: v[None] for k, v in states.items()}
        device = self.device if self.dist.backend == "nccl" else torch.device("cpu")
        out = {}
        for k, v in states.items():
            rows = [torch.empty_like(v, device=device) for _ in range(self.dist.world_size)]
            torch.distributed.all_gather(rows, v.to(device))
            out[k] = torch.stack(rows).cpu()
        return out

    def _save_sharded(self) -> Path:
        """Every rank writes its shards (DCP); rank 0 the rest (`save_sharded_checkpoint`)."""
        bad = next((n for n, p in self.model.named_parameters()
                    if not torch.isfinite(p.to_local() if hasattr(p, "to_local") else p).all()),
                   None)
        flag = torch.tensor([0.0 if bad is None else 1.0], device=self.device)
        if self.dist.enabled:  # every rank stops, or none
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        if flag.item():
            raise _diverged(self.step, f"weight {bad or 'on another rank'} holds NaN or infinity",
                            self.config.out_dir)
        state = {"batches": self.batches.state_dict(), **self._rng_per_rank()}
        meta = {"step": self.step, "tokens": self.tokens, "train_config": self.config.to_dict(),
                "world_size": self.dist.world_size, "strategy": self.strategy.name,
                "history": self.history, "eval_history": self.eval_history}
        barrier = torch.distributed.barrier if torch.distributed.is_initialized() else (
            lambda: None)
        return save_sharded_training_checkpoint(
            self.config.out_dir, self.step, self.model.config.to_dict(),
            lambda folder: save_sharded(folder, self.model, self.optimizer), state, meta,
            tokenizer=self.tokenizer, keep=self.config.keep_checkpoints,
            is_main=self.dist.is_main, barrier=barrier)

    def save_checkpoint(self) -> Path | None:
        """Write a checkpoint of the current step (rank 0 only; every rank writes its shards
        under a sharded strategy); returns its folder."""
        if self.config.out_dir is None:
            return None
        if self.strategy.sharded_checkpoints:
            return self._save_sharded()
        folder = None
        # sharded strategies gather full weights and optimizer state: every rank takes part
        weights = self.strategy.model_state_dict(self.model)
        state = self.state()
        bad = next((k for k, t in weights.items()
                    if t.is_floating_point() and not torch.isfinite(t).all()), None)
        if self.dist.enabled:  # every rank stops, or none (a lone raise would hang the others)
            flag = torch.tensor([0.0 if bad is None else 1.0], device=self.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            if flag.item() and bad is None:
                bad = "on another rank"
        if bad is not None:
            raise _diverged(self.step, f"weight {bad} holds NaN or infinity",
                            self.config.out_dir)
        if self.dist.is_main:
            meta = {"step": self.step, "tokens": self.tokens, "train_config": self.config.to_dict(),
                    "world_size": self.dist.world_size,
                    "history": self.history, "eval_history": self.eval_history}
            folder = save_training_checkpoint(
                self.config.out_dir, self.step, self.model, state, meta,
                tokenizer=self.tokenizer, keep=self.config.keep_checkpoints, weights=weights)
        if self.dist.enabled:
            torch.distributed.barrier()
        return folder

    def resume(self, path: str | Path | None = None) -> bool:
        """Restore weights, optimizer, data stream and RNG from a checkpoint folder, or from
        the latest checkpoint of `out_dir` when `path` is None. Returns False if there is none."""
        folder = Path(path) if path is not None else (
            latest_checkpoint(self.config.out_dir) if self.config.out_dir else None)
        if folder is None:
            return False
        if is_sharded_checkpoint(folder):
            return self._resume_sharded(folder)
        if self.strategy.sharded_checkpoints:
            raise ValueError(f"checkpoint {folder} holds full weights (strategy "
                             f"{self._saved_strategy(folder)!r}) but strategy='parallel' resumes "
                             "sharded (DCP) checkpoints; resume with the strategy that wrote it")
        try:
            state, meta = load_trainer_state(folder)  # everything is checked before it loads
            weights = load_tensors(folder / "model.safetensors")
        except CheckpointError as e:
            earlier = intact_checkpoint_before(folder) if path is None else None
            if earlier is None:
                raise
            raise CheckpointError(f"{e}; the earlier checkpoint {earlier} is intact: resume "
                                  f"from it with --resume-from {earlier} "
                                  "(Trainer.resume(path))") from e
        if meta.get("world_size", 1) != self.dist.world_size:
            raise ValueError(
                f"checkpoint {folder} was written by {meta['world_size']} processes but this run "
                f"has {self.dist.world_size}; resume with the same world size")
        if meta.get("train_config", {}).get("strategy", "auto") != self.config.strategy:
            raise ValueError(
                f"checkpoint {folder} was written with strategy="
                f"{meta['train_config'].get('strategy', 'auto')!r} but this run uses "
                f"{self.config.strategy!r}; optimizer states are stored per strategy: resume "
                "with the same --strategy")
        self.strategy.load_model_state_dict(
            self.model, weights,
            source=folder / "model.safetensors",
            fix="resume with the model options of the run that wrote it")
        # the checkpoint brings the Adam moments; decay, betas, eps and the kernel choice are
        # this run's config (a changed weight_decay on resume is applied, not silently dropped)
        settings = [{k: v for k, v in g.items() if k != "params"}
                    for g in self.optimizer.param_groups]
        self.strategy.load_optimizer_state_dict(self.optimizer, state["optimizer"])
        for group, own in zip(self.optimizer.param_groups, settings, strict=True):
            group.update(own)
        if self.scaler is not None and "grad_scaler" in state:
            self.scaler.load_state_dict(state["grad_scaler"])
        if "batches" in state:
            self.batches.load_state_dict(state["batches"])
        else:  # checkpoints written before batch sources: the default stream's generator
            self.batches.load_state_dict({"generator": state["data_generator"]})
        torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.step = meta["step"]
        # (older checkpoints lack "tokens": their runs never changed the tokens per step)
        self.tokens = meta.get("tokens", self.step * self._tokens_per_step())
        self.history, self.eval_history = meta["history"], meta["eval_history"]
        return True

    @staticmethod
    def _saved_strategy(folder: Path) -> str:
        meta = load_trainer_state(folder)[1]
        c = meta.get("train_config", {})
        return meta.get("strategy") or resolve_strategy(c.get("strategy", "auto"),
                                                        meta.get("world_size", 1), None)

    def _resume_sharded(self, folder: Path) -> bool:
        """Resume from a DCP checkpoint, resharded onto this run's mesh (any world size: the
        data stream continues where it was if the global batch, batch_size x data-parallel
        ranks, is the same; each rank takes generator state row rank % the rows saved)."""
        state, meta = load_trainer_state(folder)
        if not self.strategy.sharded_checkpoints:
            raise ValueError(f"checkpoint {folder} holds sharded weights (DCP) written by "
                             f"strategy={meta.get('strategy', 'parallel')!r}; resume with "
                             "--strategy parallel, or make a model folder of it with `minillm "
                             "checkpoint consolidate`")
        load_sharded(folder, self.model, self.optimizer)
        self.batches.load_state_dict(state["batches"])
        rows = state["torch_rng_per_rank"]
        # (a copy: set_rng_state reads a row with a storage offset from its storage's start)
        torch.set_rng_state(rows[self.dist.rank % rows.shape[0]].clone())
        if "cuda_rng_per_rank" in state and torch.cuda.is_available():
            cuda = state["cuda_rng_per_rank"]
            torch.cuda.set_rng_state(cuda[self.dist.rank % cuda.shape[0]].clone())
        self.step, self.tokens = meta["step"], meta["tokens"]
        self.history, self.eval_history = meta["history"], meta["eval_history"]
        return True

    # ---- the loop ------------------------------------------------------------------------
    def _autocast(self):
        if self.amp_dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def evaluate(self) -> float | None:
        """Mean validation loss over `eval_batches` batches of the source's "val" split (the
        same batches every time), averaged over ranks; None without validation data.
        The loss is the loss function's "lm_loss" metric when it reports one."""
        has_split = getattr(self.batches, "has_split", None)
        if has_split is not None and not has_split("val"):
            return None
        if hasattr(self.batches, "start_eval"):
            self.batches.start_eval()
        was_training = self.model.training
        self.model.eval()
        losses = []
        with torch.no_grad(), self._autocast():
            for _ in range(self.config.eval_batches):
                batch = self._to_device(self.batches.next_batch("val"))
                if self.strategy.pipeline is not None:  # through every stage
                    losses.append(self.strategy.pipeline.step(
                        batch["input_ids"], batch["labels"], train=False).item())
                    continue
                loss, metrics = self.loss_fn(self.model, batch)
                losses.append(metrics.get("lm_loss", loss.item()))
        self.model.train(was_training)
        return all_reduce_mean(torch.tensor(sum(losses) / len(losses)), self.dist).item()

    def _to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.to(self.device) if isinstance(v, torch.Tensor) else v
                for k, v in batch.items()}

    def train_step(self) -> tuple[float, float]:
        """One optimizer step; returns (mean micro-batch loss, gradient norm before clipping).
        The loss function's metrics of the step, averaged over micro-batches, are left in
        `self.last_metrics`."""
        c = self.config
        lr = lr_at(self.step, c.lr, c.warmup_steps, c.max_steps, c.min_lr)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        total, tokens = 0.0, 0
        metrics: dict[str, float] = {}
        for micro in range(c.grad_accum_steps):
            batch = self.batches.next_batch("train")
            tokens += self.batches.tokens_in(batch)
            batch = self._to_device(batch)
            last = micro == c.grad_accum_steps - 1
            sync = contextlib.nullcontext() if last else self.strategy.no_sync(self.runner)
            with sync:
                if self.strategy.pipeline is not None:  # the schedule runs both directions
                    with self._autocast():
                        loss = self.strategy.pipeline.step(
                            batch["input_ids"], batch["labels"], 1 / c.grad_accum_steps)
                    step_metrics = {"lm_loss": loss.item()}
                else:
                    with self._autocast():
                        loss, step_metrics = self.loss_fn(self.runner, batch)
                    scaled = loss / c.grad_accum_steps
                    (self.scaler.scale(scaled) if self.scaler else scaled).backward()
            total += loss.item()
            for name, value in step_metrics.items():
                metrics[name] = metrics.get(name, 0.0) + value / c.grad_accum_steps
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)  # clip and report the true gradient norm
        grad_norm = self.strategy.clip_grad_norm(self.model, c.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)  # skipped when a gradient is inf/nan
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.tokens += tokens * self.data_ranks
        self.last_metrics = metrics
        return total / c.grad_accum_steps, grad_norm

    def _tokens_per_step(self) -> int:
        """Tokens per step of the default stream (for checkpoints that predate the count)."""
        c = self.config
        return c.batch_size * c.grad_accum_steps * self.seq_len * self.data_ranks

    def _log(self, entries: list[dict], entry: dict) -> None:
        entries.append(entry)
        if self.on_log is not None and self.dist.is_main:
            self.on_log(entry)

    def _stop_requested(self, stop) -> bool:
        """Whether a stop signal came, to this process or (under torchrun) to any rank: every
        rank then stops after the same step, so that the checkpoint's gathers line up."""
        if not self.dist.enabled:
            return bool(stop)
        flag = torch.tensor([1.0 if stop else 0.0], device=self.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return bool(flag.item())

    def fit(self) -> list[dict]:
        """Train until `max_steps` (from wherever `resume` left off); return the history.

        Each history entry: step, loss (of the logged step), grad_norm, lr, tokens,
        tokens_per_s, and the loss function's metrics averaged over the log interval."""
        c = self.config
        show = sys.stderr.isatty() if c.progress is None else c.progress
        bar = tqdm(total=c.max_steps, initial=self.step, disable=not (show and self.dist.is_main),
                   desc="train", dynamic_ncols=True)
        self.model.train()
        first_step = self.step
        window_start, window_steps, window_tokens = time.perf_counter(), 0, self.tokens
        window_metrics: dict[str, float] = {}
        saved = False
        with stop_requests() as stop:
            while self.step < c.max_steps:
                loss, grad_norm = self.train_step()
                if not math.isfinite(loss):
                    raise _diverged(self.step, f"the training loss is {loss}", c.out_dir)
                window_steps += 1
                for name, value in self.last_metrics.items():
                    window_metrics[name] = window_metrics.get(name, 0.0) + value
                bar.update(1)
                if self.step % c.log_interval == 0 or self.step == c.max_steps:
                    if self.device.type == "cuda":
                        torch.cuda.synchronize()
                    seconds = time.perf_counter() - window_start
                    loss = all_reduce_mean(torch.tensor(loss), self.dist).item()
                    self._log(self.history, {
                        "step": self.step, "loss": loss, "grad_norm": grad_norm,
                        "lr": self.optimizer.param_groups[0]["lr"],
                        "tokens": self.tokens,
                        "tokens_per_s": (self.tokens - window_tokens) / seconds,
                        **{name: value / window_steps for name, value in window_metrics.items()},
                    })
                    bar.set_postfix(loss=f"{loss:.3f}")
                    window_start, window_steps, window_tokens = time.perf_counter(), 0, self.tokens
                    window_metrics = {}
                if c.eval_interval and (self.step % c.eval_interval == 0
                                        or self.step == c.max_steps):
                    val = self.evaluate()
                    if val is not None:
                        self._log(self.eval_history, {"step": self.step, "val_loss": val})
                        bar.set_postfix(loss=f"{loss:.3f}", val=f"{val:.3f}")
                saved = bool(c.checkpoint_interval) and self.step % c.checkpoint_interval == 0
                if saved:
                    self.save_checkpoint()
                if self._stop_requested(stop):
                    bar.close()
                    if not saved:
                        self.save_checkpoint()
                    folder = latest_checkpoint(c.out_dir) if c.out_dir is not None else None
                    raise TrainingInterrupted(stop.name or "a signal to another rank",
                                              self.step, folder)
        bar.close()
        if c.out_dir is not None and self.step > first_step and not saved:
            self.save_checkpoint()  # (nothing new to save when resumed at max_steps)
        return self.history
