"""Speculative decoding: a small draft model proposes, the large target model verifies.

(Leviathan, Kalman & Matias 2023, arXiv:2211.17192; Chen et al. 2023, arXiv:2302.01318.)
The draft samples γ tokens d_1..d_γ from its distributions q_i; the target scores all of them in
ONE forward, giving p_1..p_{γ+1}. Token d_i is accepted with probability

    min(1, p_i(d_i) / q_i(d_i))

and at the first rejection the token is resampled from the residual

    p'(x) = max(0, p_i(x) - q_i(x)) / sum_y max(0, p_i(y) - q_i(y));

if all γ are accepted a bonus token is drawn from p_{γ+1}. Each emitted token is then distributed
*exactly* as the target's p (Leviathan et al., Theorem 3.5; tested statistically), while the
target runs once per 1 + (accepted) tokens instead of once per token. With greedy decoding the
rule reduces to "accept while the draft's argmax equals the target's".

The cost model (Leviathan et al., §3): if each draft token is accepted with probability
α independently, one target call yields E = (1 - α^(γ+1)) / (1 - α) tokens
(`expected_tokens_per_call`), and if a draft step costs c target steps and the target checks γ + 1
tokens in the time of one, the wall-clock speed-up over the target alone is

    S(α, γ, c) = (1 - α^(γ+1)) / ((1 - α)(γc + 1))                    (`predicted_speedup`)

At γ = 1 it is (1 + α) / (1 + c): a win iff α > c. `alpha_from_tokens_per_call` inverts E to read
the α a run behaved as if it had (at γ = 1 it is accepted / drafted).

Departures / notes: batch size 1 (rows would accept different numbers of tokens); a fixed γ =
`num_assistant_tokens` (Hugging Face adapts it); both models see the same logits processors, so
"the target's distribution" means the processed one (temperature, top-k, ...).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from minillm.generation.config import eos_ids
from minillm.generation.processors import LogitsProcessor, apply_processors
from minillm.generation.state import DecodeState, draw

__all__ = ["alpha_from_tokens_per_call", "expected_tokens_per_call", "predicted_speedup",
           "speculative_generate", "verify_draft"]


def verify_draft(draft_tokens: torch.Tensor, q: torch.Tensor, p: torch.Tensor,
                 generator: torch.Generator | None = None) -> tuple[int, int]:
    """Leviathan et al.'s accept/resample rule for one sequence.

    Args:
        draft_tokens: (γ,) tokens the draft sampled.
        q: (γ, V) the draft's probabilities they were sampled from.
        p: (γ + 1, V) the target's probabilities at the same positions (and one more).

    Returns:
        (number of accepted draft tokens n, the token that follows them).
    """
    gamma = draft_tokens.numel()
    r = torch.rand(gamma, generator=generator, device=generator.device if generator else "cpu")
    idx = torch.arange(gamma)
    ratio = (p[idx, draft_tokens] / q[idx, draft_tokens]).cpu()   # (γ,)
    for i in range(gamma):
        if r[i] >= ratio[i]:                                      # rejected
            residual = (p[i] - q[i]).clamp(min=0)
            # p == q up to rounding: a rejection had probability ~0; p itself is then the answer
            total = residual.sum()
            return i, _sample(residual / total if total > 0 else p[i], generator)
    return gamma, _sample(p[gamma], generator)


def expected_tokens_per_call(alpha: float, gamma: int) -> float:
    """E[tokens per target call] = sum_{i=0}^{γ} α^i = (1 - α^(γ+1)) / (1 - α) (γ + 1 at α = 1)."""
    if not 0.0 <= alpha <= 1.0 or gamma < 0:
        raise ValueError(f"alpha={alpha} must be in [0, 1] and gamma={gamma} >= 0")
    return float(sum(alpha ** i for i in range(gamma + 1)))


def predicted_speedup(alpha: float, gamma: int, c: float) -> float:
    """Leviathan et al.'s wall-clock speed-up (1 - α^(γ+1)) / ((1 - α)(γc + 1)), where c is the
    cost of one draft step in target steps (the target's γ+1-token check costs one step)."""
    if c < 0:
        raise ValueError(f"c={c} (draft step / target step) must be >= 0")
    return expected_tokens_per_call(alpha, gamma) / (gamma * c + 1)


def alpha_from_tokens_per_call(tokens_per_call: float, gamma: int) -> float:
    """The α at which `expected_tokens_per_call(α, γ)` equals the measured tokens per target
    call (bisection; it is increasing in α). Clipped to [0, 1]."""
    if gamma < 1:
        raise ValueError(f"gamma={gamma} must be >= 1")
    lo, hi = 0.0, 1.0
    if tokens_per_call <= 1.0:
        return 0.0
    if tokens_per_call >= gamma + 1:
        return 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if expected_tokens_per_call(mid, gamma) < tokens_per_call else (lo, mid)
    return (lo + hi) / 2


def _sample(probs: torch.Tensor, generator: torch.Generator | None) -> int:
    return int(draw(probs, generator))


@torch.no_grad()
def speculative_generate(
    model: nn.Module, assistant_model: nn.Module, input_ids: torch.Tensor,
    max_new_tokens: int, processors: Sequence[LogitsProcessor] = (), do_sample: bool = False,
    num_assistant_tokens: int = 5, generator: torch.Generator | None = None,
    eos_token_id: int | Sequence[int] | None = None, return_stats: bool = False,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor | tuple[torch.Tensor, dict]:
    """Generate from `model` (the target) with `assistant_model` (the draft) proposing
    `num_assistant_tokens` tokens per target forward. input_ids: (1, T), left-padded if
    `attention_mask` (1, T) has 0s.

    Returns:
        (1, T + n) ids, and with `return_stats` a dict with `drafted`, `accepted` (draft tokens),
        `target_calls` and `acceptance_rate` = accepted / drafted.
    """
    if input_ids.size(0) != 1:
        raise ValueError(f"speculative decoding takes one sequence, got batch {input_ids.size(0)}")
    if num_assistant_tokens < 1:
        raise ValueError(f"num_assistant_tokens={num_assistant_tokens} must be >= 1")
    if assistant_model.config.vocab_size != model.config.vocab_size:
        raise ValueError("the draft and target models must share a vocabulary: vocab_size "
                         f"{assistant_model.config.vocab_size} != {model.config.vocab_size}")
    T = input_ids.size(1)
    if T + max_new_tokens > assistant_model.config.context_length:
        raise ValueError(f"prompt + max_new_tokens = {T + max_new_tokens} exceeds the draft's "
                         f"context_length={assistant_model.config.context_length}")
    eos = set(eos_ids(eos_token_id))
    target = DecodeState(model, input_ids, attention_mask, T + max_new_tokens)
    draft = DecodeState(assistant_model, input_ids, attention_mask, T + max_new_tokens)
    stats = {"drafted": 0, "accepted": 0, "target_calls": 0}

    def probs(logits: torch.Tensor, seq: torch.Tensor) -> torch.Tensor:
        scores = apply_processors(processors, seq, logits.float()[None])[0]
        return scores.softmax(-1) if do_sample else torch.nn.functional.one_hot(
            scores.argmax(-1), scores.size(-1)).float()

    while target.length - T < max_new_tokens:
        length = target.length
        gamma = min(num_assistant_tokens, T + max_new_tokens - length - 1)
        qs, tokens = [], []
        for _ in range(gamma):  # the draft proposes, one token at a time
            q = probs(draft.next_logits()[0, -1], draft.seq)
            tok = _sample(q, generator) if do_sample else int(q.argmax())
            qs.append(q)
            tokens.append(tok)
            draft.append(torch.tensor([tok]))
        target.append(torch.tensor(tokens, dtype=torch.long))
        logits = target.next_logits()[0, -(gamma + 1):]        # (γ + 1, V): one forward
        stats["target_calls"] += 1
        p = torch.stack([probs(logits[i], target.seq[:, : length + i])
                         for i in range(gamma + 1)])
        drafted = torch.tensor(tokens, dtype=torch.long, device=p.device)
        if do_sample:
            n, nxt = verify_draft(drafted, torch.stack(qs) if qs else p[:0], p, generator)
        else:  # greedy: accept while the argmaxes agree, then take the target's
            agree = (p[:gamma].argmax(-1) == drafted).long().cumprod(0)
            n = int(agree.sum())
            nxt = int(p[n].argmax())
        stats["drafted"] += gamma
        stats["accepted"] += n
        new = tokens[:n] + [nxt]
        stop = next((i for i, t in enumerate(new) if t in eos), None)
        if stop is not None:
            new = new[: stop + 1]
        for state in (target, draft):
            state.crop(length + min(n, len(new)))
            state.append(torch.tensor(new[n:] if len(new) > n else [], dtype=torch.long))
        if stop is not None:
            break
    out = target.seq
    if not return_stats:
        return out
    stats["acceptance_rate"] = stats["accepted"] / max(stats["drafted"], 1)
    return out, stats
