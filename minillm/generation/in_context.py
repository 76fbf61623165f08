"""In-context learning and induction heads, measured over training (Olsson et al. 2022,
"In-context Learning and Induction Heads", arXiv:2209.11895).

Olsson et al. define the **in-context learning score** as the loss at a late token of the
context minus the loss at an early one (500th minus 50th token in their models): how much a
model gains from having read more of its context. Over training it falls abruptly, in a
"phase change", at the same point where **induction heads** form: heads that attend from the
current token to the token *after* an earlier occurrence of it ("prefix matching") and copy it.

Here, in miniature: sequences of `half` random tokens followed by the same tokens again
(`repeated_tokens_batch`). In the first half nothing can be predicted (loss log V); in the
second every token can be copied from the first. So

    icl_score = loss(late position, in the repeat) - loss(early position, first half)

in nats, near 0 before the model can copy and near -log V after; and

    induction_score = max over heads of the attention weight from position i of the repeat to
                      position i - half + 1 (the token after the previous occurrence)

averaged over the repeat's positions. `icl_run` trains a small GPT and records both every
`eval_every` steps. Departures: a synthetic task rather than text (its phase change is sharp
and cheap), a GPT with its MLPs (the course's model has no attention-only option), the
prefix-matching score on this task's exact repeats (Olsson et al. use random repeated tokens
too for their head scores).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from minillm.models import GPT, GPTConfig

__all__ = ["icl_run", "icl_score", "induction_score", "position_losses", "repeated_tokens_batch",
           "transition_step"]


def repeated_tokens_batch(batch_size: int, half: int, vocab_size: int,
                          generator: torch.Generator | None = None
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets) of shape (B, 2·half - 1): `half` uniform random tokens, then the same
    again; targets are the inputs shifted by one."""
    first = torch.randint(0, vocab_size, (batch_size, half), generator=generator)
    seq = torch.cat([first, first], dim=1)                                  # (B, 2·half)
    return seq[:, :-1], seq[:, 1:]


@torch.no_grad()
def position_losses(model, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy (nats) at every position, over the batch: (T,)."""
    logits = model(inputs).logits.float()
    return F.cross_entropy(logits.transpose(1, 2), targets, reduction="none").mean(0)


def icl_score(losses: torch.Tensor, early: int, late: int) -> float:
    """loss[late] - loss[early] (nats): negative when the later context helps."""
    return float(losses[late] - losses[early])


@torch.no_grad()
def induction_score(model, inputs: torch.Tensor, half: int) -> tuple[float, tuple[int, int]]:
    """The highest mean prefix-matching weight of any head, and its (layer, head).

    For a query at position i >= half of the repeat (its token first seen at i - half), the
    induction target is key i - half + 1, the token that followed the earlier occurrence."""
    _, att = model.attention_weights(inputs)              # per layer: (B, H, T, T)
    q = torch.arange(half, inputs.size(1))
    best, where = -1.0, (0, 0)
    for layer, a in enumerate(att):
        score = a[:, :, q, q - half + 1].mean((0, 2))                      # (H,)
        h = int(score.argmax())
        if float(score[h]) > best:
            best, where = float(score[h]), (layer, h)
    return best, where


def icl_run(steps: int, eval_every: int, seed: int = 0, half: int = 24, vocab_size: int = 64,
            d_model: int = 64, n_layer: int = 2, n_head: int = 4, batch_size: int = 32,
            lr: float = 1e-3, eval_batch: int = 128) -> dict:
    """Train a small GPT on `repeated_tokens_batch` and record, every `eval_every` steps, the
    ICL score (loss at position 2·half - 2 minus position 1, nats) and the induction score.

    Returns:
        {"step": [...], "icl_score": [...], "induction_score": [...], "head": [[layer, head]],
         "late_loss": [...], "early_loss": [...], plus the settings}.
    """
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed + 1)
    ge = torch.Generator().manual_seed(10_000 + seed)
    x_eval, y_eval = repeated_tokens_batch(eval_batch, half, vocab_size, ge)
    model = GPT(GPTConfig(vocab_size=vocab_size, context_length=2 * half, d_model=d_model,
                          n_layer=n_layer, n_head=n_head, dropout=0.0))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    early, late = 1, 2 * half - 2
    rec: dict = {"step": [], "icl_score": [], "induction_score": [], "head": [],
                 "early_loss": [], "late_loss": []}
    for step in range(steps + 1):
        if step % eval_every == 0:
            model.eval()
            losses = position_losses(model, x_eval, y_eval)
            ind, head = induction_score(model, x_eval, half)
            model.train()
            rec["step"].append(step)
            rec["icl_score"].append(icl_score(losses, early, late))
            rec["induction_score"].append(ind)
            rec["head"].append(list(head))
            rec["early_loss"].append(float(losses[early]))
            rec["late_loss"].append(float(losses[late]))
        if step == steps:
            break
        x, y = repeated_tokens_batch(batch_size, half, vocab_size, g)
        loss = model(x, y).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    rec.update(steps=steps, eval_every=eval_every, seed=seed, half=half, vocab_size=vocab_size,
               d_model=d_model, n_layer=n_layer, n_head=n_head, batch_size=batch_size, lr=lr,
               uniform_loss=math.log(vocab_size))
    return rec


def transition_step(steps: list[int], values: list[float]) -> int:
    """The first step at which `values` has gone half way from its first to its last value
    (the middle of a phase change)."""
    start, end = values[0], values[-1]
    mid = (start + end) / 2
    rising = end > start
    for s, v in zip(steps, values, strict=True):
        if (v >= mid) if rising else (v <= mid):
            return s
    return steps[-1]
