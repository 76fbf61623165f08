"""Self-consistency: sample several reasoning chains, read an answer off each, take the
majority (Wang et al. 2023, arXiv:2203.11171).

Chain-of-thought prompting decodes one chain greedily. Self-consistency samples k chains
r_i ~ p(r | prompt) instead, extracts each one's final answer a_i, and returns

    a* = argmax_a sum_i 1[a_i = a]

the answer most chains reach ("unweighted sum", the paper's simple majority, which it found
as good as weighting chains by their probability). Different wrong chains tend to disagree,
right ones agree, so the vote beats greedy decoding when the model is right more often than it
is wrong in any one way.

Choices: the k chains are decoded as one batch of k copies of the prompt with the course's
`generate` (any sampling options: temperature, top_k, top_p, ...); a chain ends at an eos
token; a chain whose answer cannot be extracted (the extractor returns None) does not vote;
ties go to the answer that came first in chain order (deterministic given the generator).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from minillm.generation.config import GenerationConfig
from minillm.generation.generate import generate

__all__ = ["SelfConsistencyResult", "majority_vote", "self_consistency"]


class _Tokenizer(Protocol):
    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


@dataclass
class SelfConsistencyResult:
    answer: Hashable | None                         # the majority answer (None: no chain had one)
    votes: dict[Hashable, int]                      # answer -> chains that reached it
    chains: list[str] = field(default_factory=list)  # each chain's text (after the prompt)
    answers: list[Hashable | None] = field(default_factory=list)  # each chain's answer


def majority_vote(answers: Sequence[Hashable | None]) -> tuple[Hashable | None, dict]:
    """The most common answer, ignoring None; a tie goes to the one that appears first.

    Args:
        answers: one answer per chain (None: the chain gave none).

    Returns:
        (winner or None when no answer was given, votes as {answer: count} in first-seen order).
    """
    votes = Counter(a for a in answers if a is not None)   # keeps first-seen order
    if not votes:
        return None, {}
    top = max(votes.values())
    winner = next(a for a in votes if votes[a] == top)
    return winner, dict(votes)


@torch.no_grad()
def self_consistency(
    model: nn.Module, prompt: str | Sequence[int] | torch.Tensor, k: int, *,
    tokenizer: _Tokenizer, extract: Callable[[str], Hashable | None],
    max_new_tokens: int = 64, generation_config: GenerationConfig | None = None,
    generator: torch.Generator | None = None, **kwargs: Any,
) -> SelfConsistencyResult:
    """Sample `k` chains for `prompt`, extract an answer from each and take the majority.

    Args:
        model: a causal LM of the course.
        prompt: text (encoded with `tokenizer`), or its token ids.
        k: chains to sample (>= 1).
        tokenizer: decodes the chains (and encodes a text prompt).
        extract: chain text -> answer, or None when the chain has none.
        max_new_tokens: the longest chain.
        generation_config: sampling options; keyword arguments override them. The default is
            `do_sample=True, temperature=1` (pass temperature, top_k, top_p, ... to change it).
        generator: a seeded generator: the same seed gives the same chains.
        **kwargs: `GenerationConfig` fields (eos_token_id ends a chain).

    Returns:
        `SelfConsistencyResult`: answer, votes, chains, per-chain answers.

    Raises:
        ValueError: k < 1, an empty prompt, or greedy decoding (k identical chains).
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k={k!r} must be a positive integer (the number of sampled chains)")
    config = (generation_config or GenerationConfig(do_sample=True)).update(
        max_new_tokens=max_new_tokens, **kwargs)
    if not config.sampling:
        raise ValueError("self-consistency votes over sampled chains; greedy decoding gives k "
                         "identical ones: pass do_sample=True and a temperature > 0")
    ids = tokenizer.encode(prompt) if isinstance(prompt, str) else prompt
    ids = torch.as_tensor(ids, dtype=torch.long).flatten()
    if ids.numel() == 0:
        raise ValueError("the prompt is empty: there is nothing to reason from")
    out = generate(model, ids[None].expand(k, -1), generation_config=config,
                   generator=generator)
    stops = set(config.stop_ids)
    chains = []
    for row in out[:, ids.numel():].tolist():
        cut = next((i for i, t in enumerate(row) if t in stops), len(row))
        chains.append(tokenizer.decode(row[:cut]))
    answers = [extract(c) for c in chains]
    answer, votes = majority_vote(answers)
    return SelfConsistencyResult(answer, votes, chains, answers)
