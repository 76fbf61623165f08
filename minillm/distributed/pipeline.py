"""Pipeline parallelism: a GPT's blocks in p contiguous stages, fed by m micro-batches.

Stage s (one rank each) holds blocks [s L/p, (s+1) L/p); stage 0 also the embeddings, the last
stage the final norm, the head and the loss. A batch is cut into m micro-batches; a stage's
forward output (B/m, T, C) goes to the next stage (`dist.isend` / `dist.recv`) and, in backward,
the gradient of that activation comes back. Two schedules (Huang et al. 2019, GPipe,
1811.06965; Narayanan et al. 2021, 1F1B / PipeDream-Flush, 2104.04473):

- GPipe: every stage runs all m forwards, then all m backwards (it stores m activations);
- 1F1B: stage s runs p - s - 1 warm-up forwards, then alternates one forward and one
  backward, then drains the backwards (at most p - s micro-batches in flight).

Both leave every stage idle for p - 1 micro-batch slots of the m + p - 1 a stage's work spans
(filling and draining the pipe), the bubble:

    bubble_fraction(p, m) = (p - 1) / (m + p - 1)

The loss is the mean over micro-batches (each micro-batch's mean loss / m), so the gradients
are those of one process accumulating the same micro-batches. Every forward and backward is
timed (`Event`), so a timeline can be drawn (`minillm.course.plotting.plot_timeline`) and its idle share measured
(`timeline_bubble`); `simulate_timeline` gives the ideal timeline of a schedule.

Notes: tied embeddings with p > 1 keep one copy on the first and one on the last stage; after
backward the two exchange their gradients and add them (`sync_tied_grads`), so both copies take
the same optimizer step. Dropout, MoE layers, activation checkpointing and decoding caches are
not supported here (a clear error where it matters). Every rank passes the same batch to
`PipelineRunner.step` (stage 0 reads the tokens, the last stage the targets; the others only
its shape).
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass

import torch
import torch.distributed as dist
from torch import nn

from minillm.models.attention import build_attention_mask
from minillm.models.base import lm_loss
from minillm.models.gpt import GPT
from minillm.models.positions import sinusoidal_at

__all__ = ["Event", "GPTStage", "PipelineRunner", "bubble_fraction", "check_pipeline",
           "events_as_dicts", "gather_pipeline_state_dict", "interleaved_bubble_fraction",
           "interleaved_schedule", "schedule", "simulate_interleaved", "simulate_timeline",
           "stage_layers", "sync_tied_grads", "timeline_bubble"]

SCHEDULES = ("gpipe", "1f1b")


def bubble_fraction(p: int, m: int) -> float:
    """Idle share of a pipeline of p stages over m micro-batches: (p - 1) / (m + p - 1)."""
    return (p - 1) / (m + p - 1)


def check_pipeline(config, n_stage: int, batch: int | None = None,
                   micro_batches: int | None = None, world_size: int | None = None) -> None:
    """ValueError unless the GPT `config` can run as `n_stage` stages on these sizes."""
    if n_stage < 1 or config.n_layer < n_stage:
        raise ValueError(f"n_layer={config.n_layer} blocks cannot fill {n_stage} pipeline stages: "
                         "every stage needs at least one block; use fewer stages")
    if config.n_layer % n_stage:
        raise ValueError(f"n_layer={config.n_layer} is not divisible by {n_stage} pipeline "
                         f"stages; use a number of stages that divides {config.n_layer}")
    if world_size is not None and world_size != n_stage:
        raise ValueError(f"world_size={world_size} but the pipeline has {n_stage} stages: "
                         "launch one process per stage")
    if batch is not None and micro_batches is not None and (
            micro_batches < 1 or batch % micro_batches):
        raise ValueError(f"batch={batch} is not divisible by micro_batches={micro_batches}; "
                         f"pick micro_batches among the divisors of {batch}")
    if config.dropout or config.n_expert:
        raise ValueError(f"dropout={config.dropout}, n_expert={config.n_expert}: the pipeline "
                         "supports dense models without dropout")


def stage_layers(n_layer: int, n_stage: int) -> list[range]:
    """The contiguous blocks of each stage: [range(0, L/p), range(L/p, 2L/p), ...]."""
    per = n_layer // n_stage
    return [range(s * per, (s + 1) * per) for s in range(n_stage)]


def schedule(kind: str, n_stage: int, stage: int, micro_batches: int) -> list[tuple[str, int]]:
    """The actions of one stage, in order: ("F", micro-batch) or ("B", micro-batch).

    Args:
        kind: "gpipe" (all forwards, then all backwards) or "1f1b".
        n_stage, stage: p and this stage's index s.
        micro_batches: m.
    """
    m = micro_batches
    if kind == "gpipe":
        return [("F", i) for i in range(m)] + [("B", i) for i in range(m)]
    if kind != "1f1b":
        raise ValueError(f"schedule={kind!r}; choose one of {SCHEDULES}")
    warm = min(n_stage - stage - 1, m)
    actions = [("F", i) for i in range(warm)]
    for i in range(m - warm):  # steady state: one forward, one backward
        actions += [("F", warm + i), ("B", i)]
    return actions + [("B", i) for i in range(m - warm, m)]


@dataclass
class Event:
    """One forward ("F") or backward ("B") of one micro-batch on one stage: its compute from
    start to end in seconds (waiting for a neighbour's tensor is not included)."""

    stage: int
    kind: str
    micro: int
    start: float
    end: float


def _per_stage(t, n_stage: int) -> list[float]:
    return [float(t)] * n_stage if isinstance(t, (int, float)) else [float(x) for x in t]


def simulate_timeline(kind: str, n_stage: int, micro_batches: int, t_forward=1.0,
                      t_backward=2.0, t_send: float = 0.0) -> list[Event]:
    """The ideal timeline: each action starts when its stage is free and its input has arrived
    (F(s, i) after F(s-1, i); B(s, i) after B(s+1, i), and after F(s, i) on the last stage).

    Args:
        t_forward, t_backward: one micro-batch's compute per stage: a number (equal stages) or
            one per stage (e.g. the medians measured on a real run: a simulated clock).
        t_send: the time a tensor takes to reach the neighbouring stage (0: the formula's
            assumption).
    """
    t_f, t_b = _per_stage(t_forward, n_stage), _per_stage(t_backward, n_stage)
    todo = {s: schedule(kind, n_stage, s, micro_batches) for s in range(n_stage)}
    done: dict[tuple[str, int, int], float] = {}
    free = [0.0] * n_stage
    events: list[Event] = []
    while any(todo.values()):
        progressed = False
        for s in range(n_stage):
            while todo[s]:
                k, i = todo[s][0]
                need = ("F", s - 1, i) if k == "F" else ("B", s + 1, i)
                if k == "F" and s == 0 or k == "B" and s == n_stage - 1:
                    need = None
                if need is not None and need not in done:
                    break
                start = max(free[s], done[need] + t_send if need else 0.0)
                free[s] = start + (t_f[s] if k == "F" else t_b[s])
                done[(k, s, i)] = free[s]
                events.append(Event(s, k, i, start, free[s]))
                todo[s].pop(0)
                progressed = True
        if not progressed:
            raise RuntimeError(f"schedule {kind!r} deadlocks")  # cannot happen for ours
    return events


def interleaved_bubble_fraction(p: int, m: int, v: int) -> float:
    """Idle share of interleaved 1F1B with v model chunks per device (Narayanan et al. 2021,
    §2.2): the fill and drain shrink to (p - 1)/v micro-batch slots, (p - 1) / (v m + p - 1)."""
    return (p - 1) / (v * m + p - 1)


def interleaved_schedule(n_stage: int, stage: int, micro_batches: int,
                         chunks: int) -> list[tuple[str, int, int]]:
    """Interleaved 1F1B (Megatron-LM's order): device `stage` holds `chunks` model chunks,
    chunk c being virtual stage c p + stage of the p v. Its forwards take micro-batches in groups
    of p, chunk 0 then chunk 1 ... for each group; backwards take the chunks in reverse. After
    (p - stage - 1) 2 + (v - 1) p warm-up forwards (p - stage - 1 for v = 1: plain 1F1B) it
    alternates one forward and one backward.
    Returns ("F" or "B", micro-batch, chunk) in order. Needs m divisible by p."""
    p, m, v = n_stage, micro_batches, chunks
    if m % p:
        raise ValueError(f"interleaved 1F1B needs micro_batches={m} divisible by p={p}")
    total = m * v

    def step(k: int, forward: bool) -> tuple[int, int]:
        chunk = (k // p) % v
        return (k // (p * v)) * p + k % p, chunk if forward else v - 1 - chunk

    # (one chunk: plain 1F1B's p - stage - 1 warm-up forwards)
    warm = min(total, p - stage - 1 if v == 1 else (p - stage - 1) * 2 + (v - 1) * p)
    actions = [("F", *step(k, True)) for k in range(warm)]
    for k in range(total - warm):
        actions += [("F", *step(warm + k, True)), ("B", *step(k, False))]
    return actions + [("B", *step(k, False)) for k in range(total - warm, total)]


def simulate_interleaved(n_stage: int, micro_batches: int, chunks: int, t_forward: float = 1.0,
                         t_backward: float = 2.0) -> list[Event]:
    """The ideal timeline of interleaved 1F1B: each device's chunk takes t_forward / chunks and
    t_backward / chunks; F of virtual stage u waits for F of u - 1, B of u for B of u + 1 (the
    last virtual stage's B for its own F). Events carry the device as `stage`."""
    p, v = n_stage, chunks
    last = p * v - 1
    todo = {d: interleaved_schedule(p, d, micro_batches, v) for d in range(p)}
    done: dict[tuple[str, int, int], float] = {}
    free = [0.0] * p
    events: list[Event] = []
    while any(todo.values()):
        progressed = False
        for d in range(p):
            while todo[d]:
                k, i, c = todo[d][0]
                u = c * p + d                                  # virtual stage
                if k == "F":
                    need = ("F", u - 1, i) if u > 0 else None
                else:
                    need = ("B", u + 1, i) if u < last else ("F", u, i)
                if need is not None and need not in done:
                    break
                start = max(free[d], done[need] if need else 0.0)
                free[d] = start + (t_forward if k == "F" else t_backward) / v
                done[(k, u, i)] = free[d]
                events.append(Event(d, k, i, start, free[d]))
                todo[d].pop(0)
                progressed = True
        if not progressed:
            raise RuntimeError("interleaved schedule deadlocks")
    return events


def timeline_bubble(events: list[Event]) -> float:
    """Idle share of a timeline: 1 - busy time / (stages x (last end - first start))."""
    stages = {e.stage for e in events}
    span = max(e.end for e in events) - min(e.start for e in events)
    busy = sum(e.end - e.start for e in events)
    return 1.0 - busy / (len(stages) * span)


class GPTStage(nn.Module):
    """Stage `stage` of `n_stage` of a GPT: its blocks (under their one-process names), with the
    embeddings on stage 0 and the final norm and head on the last stage (copies: the model
    passed in is not changed). forward: tokens (B, T) or hidden (B, T, C) -> hidden or logits."""

    def __init__(self, model: GPT, stage: int, n_stage: int):
        super().__init__()
        c = self.config = model.config
        check_pipeline(c, n_stage)
        self.stage, self.n_stage = stage, n_stage
        self.first, self.last = stage == 0, stage == n_stage - 1
        self.layers = stage_layers(c.n_layer, n_stage)[stage]
        self.blocks = nn.ModuleDict({str(i): copy.deepcopy(model.blocks[i]) for i in self.layers})
        self.rotary = copy.deepcopy(model.rotary)
        if self.first:
            self.tok_emb = copy.deepcopy(model.tok_emb)
            if c.positions == "learned":
                self.pos_emb = copy.deepcopy(model.pos_emb)
        if self.last:
            self.norm_f = copy.deepcopy(model.norm_f)
            self.lm_head = copy.deepcopy(model.lm_head)  # a tied head becomes its own copy
            if c.tie_embeddings and self.first:
                self.lm_head.weight = self.tok_emb.weight

    @property
    def tied_weight(self) -> nn.Parameter | None:
        """The copy of a tied embedding matrix this stage holds (first or last stage)."""
        if not self.config.tie_embeddings or self.first == self.last:
            return None
        return self.tok_emb.weight if self.first else self.lm_head.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.config
        T = x.shape[1]
        positions = torch.arange(T, device=x.device)
        if self.first:
            x = self.tok_emb(x)                                                 # (B, T, C)
            if c.positions == "learned":
                x = x + self.pos_emb(positions)
            elif c.positions == "sinusoidal":
                x = x + (c.init_std * 2 ** 0.5) * sinusoidal_at(positions, c.d_model).to(x.dtype)
        mask = build_attention_mask(c, T, T, x.device, None, None, positions, positions)
        rope = self.rotary.tables(positions) if self.rotary is not None else None
        for i in self.layers:
            x = self.blocks[str(i)](x, mask=mask, rope=rope).hidden
        return self.lm_head(self.norm_f(x)) if self.last else x                # (B, T, V)


class PipelineRunner:
    """Runs one training step's forwards and backwards of a `GPTStage` by a schedule.

    Args:
        module: this rank's stage.
        kind: "gpipe" or "1f1b".
        micro_batches: m.
        ranks: the global rank of each stage (default: stage s on rank s).
    """

    def __init__(self, module: GPTStage, kind: str, micro_batches: int,
                 ranks: list[int] | None = None):
        self.module, self.kind, self.micro_batches = module, kind, micro_batches
        if ranks is None and dist.is_initialized():  # one stage per rank of the whole world
            check_pipeline(module.config, module.n_stage, world_size=dist.get_world_size())
        self.ranks = ranks or list(range(module.n_stage))
        self.actions = schedule(kind, module.n_stage, module.stage, micro_batches)
        self.events: list[Event] = []

    def step(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor | None:
        """Forward and backward of the batch (B, T) by the schedule; gradients accumulate in
        the stage's parameters. Returns the loss (mean over micro-batches) on the last stage,
        None elsewhere; `events` holds this step's compute times (`time.perf_counter`, the
        system-wide monotonic clock on Linux, so the stages' events share one time axis)."""
        stage, m = self.module, self.micro_batches
        check_pipeline(stage.config, stage.n_stage, idx.shape[0], m)
        inputs, goals = idx.chunk(m), targets.chunk(m)
        shape = (idx.shape[0] // m, idx.shape[1], stage.config.d_model)
        prev = self.ranks[stage.stage - 1] if not stage.first else None
        nxt = self.ranks[stage.stage + 1] if not stage.last else None
        saved, losses, pending, self.events = {}, [], [], []
        for kind, i in self.actions:
            if kind == "F":
                if stage.first:
                    x = inputs[i]
                else:
                    x = torch.empty(shape)
                    dist.recv(x, prev)
                    x.requires_grad_(True)
                start = time.perf_counter()
                out = stage(x)
                if stage.last:
                    out = lm_loss(out, goals[i]) / m
                    losses.append(out.detach())
                saved[i] = (x, out)
                send = None if stage.last else (out.detach(), nxt)
            else:
                x, out = saved.pop(i)
                grad = None
                if not stage.last:
                    grad = torch.empty(shape)
                    dist.recv(grad, nxt)
                start = time.perf_counter()
                out.backward(grad)
                send = None if stage.first else (x.grad, prev)
            self.events.append(Event(stage.stage, kind, i, start, time.perf_counter()))
            if send is not None:  # after the timestamp: the neighbour may start at once
                pending.append(dist.isend(*send))
        for work in pending:
            work.wait()
        return torch.stack(losses).sum() if stage.last else None


def sync_tied_grads(module: GPTStage, ranks: list[int] | None = None) -> None:
    """Add the first and last stages' gradients of a tied embedding matrix, on both (every
    stage may call it; only those two exchange). A no-op for untied models or one stage."""
    w = module.tied_weight
    if w is None:
        return
    ranks = ranks or list(range(module.n_stage))
    other = ranks[-1] if module.first else ranks[0]
    theirs = torch.empty_like(w.grad)
    work = dist.isend(w.grad.contiguous(), other)
    dist.recv(theirs, other)
    work.wait()
    w.grad += theirs


def gather_pipeline_state_dict(module: GPTStage, grads: bool = False, group=None
                               ) -> dict[str, torch.Tensor]:
    """The one-process state dict (or parameter gradients) from every stage; every rank of
    `group` calls it and gets the whole dict (a tied head's gradient is left out, as
    `GPT.named_parameters` leaves it out)."""
    if grads:
        mine = {k: p.grad.detach().clone() for k, p in module.named_parameters()}
        if module.config.tie_embeddings:
            mine.pop("lm_head.weight", None)
    else:
        mine = {k: v.detach().clone() for k, v in module.state_dict().items()}
        if module.config.tie_embeddings and module.last:  # the copy equals stage 0's
            mine["tok_emb.weight"] = mine["lm_head.weight"]
    everyone: list = [None] * dist.get_world_size(group)
    dist.all_gather_object(everyone, mine, group=group)
    out: dict[str, torch.Tensor] = {}
    for part in everyone:
        out.update({k: v for k, v in part.items() if k not in out})
    return dict(sorted(out.items()))


def events_as_dicts(events: list[Event]) -> list[dict]:
    """The events as JSON-able dicts."""
    return [asdict(e) for e in events]
