"""Emergence as a metric effect (Schaeffer, Miranda & Koyejo 2023, "Are Emergent Abilities of
Large Language Models a Mirage?", arXiv:2304.15004), on multi-digit addition.

A model family of growing size is scored on the same answers four ways:

- exact match: the whole L-token answer right (a discontinuous, all-or-nothing metric);
- token accuracy: the share of answer tokens right given the true ones before them;
- token log-likelihood: mean log p(answer token | prompt, true answer so far), in nats;
- edit distance: Levenshtein distance between the greedy answer and the true one (tokens).

Schaeffer et al.'s argument: if each token is right with probability p, independently, exact
match is about p^L, so a smooth rise of p (and of the log-likelihood) shows as a sudden jump of
exact match once p nears 1 — the "emergence" is in the metric, not the model. The continuous
metrics (log-likelihood, edit distance, token accuracy) should improve smoothly with size.

Greedy decoding and teacher-forced argmax agree on exact match (if every argmax given the true
prefix is right, greedy writes that prefix), so exact match is read from one teacher-forced
pass; the edit distance needs the greedy answer itself (`greedy_answers`).

`train_adder` is the family's training loop: a small GPT (`minillm.models.GPT`) trained with
AdamW and a cosine schedule on fresh random problems every step, loss on the answer tokens only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from minillm.data.arithmetic import VOCAB, AdditionProblem, addition_batch, addition_problems
from minillm.models import GPT, GPTConfig
from minillm.models.base import lm_loss
from minillm.optim import configure_optimizer, lr_at

__all__ = ["AdderConfig", "answer_metrics", "edit_distance", "greedy_answers", "train_adder"]


def edit_distance(a: list[int] | str, b: list[int] | str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions, each cost 1)."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


@dataclass
class AdderConfig:
    d_model: int = 32        # residual width
    n_layer: int = 2         # Transformer blocks
    n_head: int = 2          # attention heads (must divide d_model)
    digits: int = 4          # digits per operand
    steps: int = 1500        # optimizer steps
    batch_size: int = 64     # problems per step
    lr: float = 3e-3         # peak learning rate (warm-up 50 steps, cosine to lr / 10)
    seed: int = 0            # initial weights and the training problems

    def __post_init__(self) -> None:
        if self.d_model % self.n_head:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_head={self.n_head}")
        for name in ("d_model", "n_layer", "n_head", "digits", "steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if self.lr <= 0:
            raise ValueError(f"lr={self.lr} must be positive")

    def model_config(self) -> GPTConfig:
        return GPTConfig(vocab_size=len(VOCAB), context_length=3 * self.digits + 3,
                         d_model=self.d_model, n_layer=self.n_layer, n_head=self.n_head,
                         dropout=0.0)


def train_adder(config: AdderConfig, device: str | torch.device = "cpu") -> GPT:
    """Train one member of the family; returns the model (eval mode)."""
    torch.manual_seed(config.seed)
    model = GPT(config.model_config()).to(device)
    opt = configure_optimizer(model, config.lr, weight_decay=0.1)
    problems = addition_problems(config.steps * config.batch_size, config.digits, "train",
                                 seed=config.seed)
    model.train()
    for step in range(config.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, config.lr, 50, config.steps, config.lr / 10)
        x, y = addition_batch(problems[step * config.batch_size:(step + 1) * config.batch_size])
        loss = lm_loss(model(x.to(device)).logits, y.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    return model.eval()


@torch.no_grad()
def greedy_answers(model: torch.nn.Module, problems: list[AdditionProblem]) -> list[list[int]]:
    """Each problem's answer decoded greedily (L = digits + 1 tokens, no stop)."""
    device = next(model.parameters()).device
    x, _ = addition_batch(problems)
    n_answer = problems[0].digits + 1
    ids = x[:, :x.shape[1] - n_answer + 1].to(device)          # the prompt
    for _ in range(n_answer):
        nxt = model(ids).logits[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, nxt], 1)
    return ids[:, -n_answer:].tolist()


@torch.no_grad()
def answer_metrics(model: torch.nn.Module, problems: list[AdditionProblem],
                   batch_size: int = 500) -> dict[str, float]:
    """Exact match, token accuracy, token log-likelihood (nats) and edit distance (module
    docstring) over `problems`, with the standard error of each mean."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    n_answer = problems[0].digits + 1
    em, acc, ll, dist = [], [], [], []
    for b in range(0, len(problems), batch_size):
        chunk = problems[b:b + batch_size]
        x, y = addition_batch(chunk)
        logp = torch.log_softmax(model(x.to(device)).logits.double(), -1)[:, -n_answer:]
        target = y[:, -n_answer:].to(device)                          # (B, L)
        right = logp.argmax(-1) == target
        em += right.all(1).double().tolist()
        acc += right.double().mean(1).tolist()
        ll += logp.gather(-1, target[..., None])[..., 0].mean(1).tolist()
        greedy = greedy_answers(model, chunk)
        dist += [float(edit_distance(g, t)) for g, t in zip(greedy, target.tolist(), strict=True)]
    model.train(was_training)
    out = {}
    for name, values in (("exact_match", em), ("token_accuracy", acc), ("token_loglik", ll),
                         ("edit_distance", dist)):
        mu = sum(values) / len(values)
        var = sum((v - mu) ** 2 for v in values) / max(1, len(values) - 1)
        out[name], out[f"{name}_stderr"] = mu, math.sqrt(var / len(values))
    return out
