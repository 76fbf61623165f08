"""A training run that keeps curves: held-out bits per byte against steps and training seconds,
and, for a mixture of experts, the router's load per expert and dropped share over training.

`tracked_fit` drives a `Trainer` one `train_step` at a time. Only the steps are timed (the
validation estimates are not), so `seconds` is training wall time, comparable between a dense
and a sparse model. Router statistics are read from each `MoE` module's `stats` after every
step (the last forward's `LMOutput.routing`, read by a forward hook: the model stores
nothing) and averaged over `eval_interval` steps (`moe_stats`).

Chapter 08 runs it live for a few hundred steps; `data/moe/run_moe.py` runs it longer and ships
the curves.
"""

from __future__ import annotations

import math
import time

import torch

from minillm.models.moe import Routing, routing_stats
from minillm.training.trainer import Trainer

__all__ = ["moe_stats", "tracked_fit"]


def moe_stats(routing: tuple[Routing, ...]) -> dict[str, list]:
    """The router statistics of one forward (its `LMOutput.routing`), one entry per MoE layer
    (in model order): {"load": [[share of assignments per expert], ...], "dropped": [...],
    "entropy": [...]}. Empty lists for a dense model."""
    out: dict[str, list] = {"load": [], "dropped": [], "entropy": []}
    for r in routing:
        stats = routing_stats(r, r.probs.shape[-1])
        out["load"].append(stats["load"].tolist())
        out["dropped"].append(stats["dropped"].item())
        out["entropy"].append(stats["entropy"].item())
    return out


def _mean(rows: list) -> list:
    """Elementwise mean of equally nested lists of floats."""
    if isinstance(rows[0], list):
        return [_mean(list(col)) for col in zip(*rows, strict=True)]
    return sum(rows) / len(rows)


def tracked_fit(trainer: Trainer, eval_interval: int) -> dict:
    """Train `trainer` to its `max_steps`; every `eval_interval` steps (and at the end) record
    the held-out estimate and the router statistics averaged since the last record.

    Args:
        trainer: a `Trainer` with validation tokens (its `evaluate` is the held-out estimate:
            the same `eval_batches` windows every time, nats per token).
        eval_interval: steps between records (> 0).

    Returns:
        {"step": [...], "seconds": [...] (training time so far, evaluation excluded),
         "val_bpb": [...] (held-out nats per token / ln 2: bits per byte for byte tokens),
         "train_loss": [...] (mean LM loss since the last record, nats),
         "load": [[[per expert] per MoE layer] per record], "dropped": [[per layer] ...]}
    """
    if eval_interval <= 0:
        raise ValueError(f"eval_interval={eval_interval} must be positive")
    curves: dict[str, list] = {k: [] for k in
                               ("step", "seconds", "val_bpb", "train_loss", "load", "dropped")}
    seen: list[tuple[Routing, ...]] = []  # the routing of each training forward
    hook = trainer.model.register_forward_hook(lambda _m, _args, out: seen.append(out.routing))
    try:
        _fit(trainer, eval_interval, curves, seen)
    finally:
        hook.remove()
    return curves


def _fit(trainer: Trainer, eval_interval: int, curves: dict, seen: list) -> None:
    seconds, window_loss, window_stats = 0.0, [], []
    trainer.model.train()
    while trainer.step < trainer.config.max_steps:
        seen.clear()
        start = time.perf_counter()
        trainer.train_step()
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
        seconds += time.perf_counter() - start
        window_loss.append(trainer.last_metrics.get("lm_loss", float("nan")))
        window_stats.append(moe_stats(seen[-1]))
        if trainer.step % eval_interval == 0 or trainer.step == trainer.config.max_steps:
            val = trainer.evaluate()
            trainer.model.train()
            curves["step"].append(trainer.step)
            curves["seconds"].append(seconds)
            curves["val_bpb"].append(val / math.log(2) if val is not None else None)
            curves["train_loss"].append(sum(window_loss) / len(window_loss))
            has_moe = bool(window_stats[0]["load"])
            curves["load"].append(_mean([s["load"] for s in window_stats]) if has_moe else [])
            curves["dropped"].append(_mean([s["dropped"] for s in window_stats]) if has_moe else [])
            window_loss, window_stats = [], []
