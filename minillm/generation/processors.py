"""Logits processors: small functions of (tokens so far, next-token scores) -> new scores.

Each one is a callable `p(input_ids (B, T), scores (B, V)) -> scores (B, V)`; removed tokens get
the score -inf, so a softmax afterwards gives them probability 0. Decoding composes them in
Hugging Face's order (penalties first, then the sampling "warpers"):

    repetition penalty -> no-repeat-n-gram -> temperature -> top-k -> top-p -> min-p -> typical

| processor | rule (p = softmax(scores)) | paper |
|---|---|---|
| `RepetitionPenalty(θ)` | s_i <- s_i / θ if s_i > 0 else s_i * θ, for tokens already seen | Keskar et al. 2019, CTRL, arXiv:1909.05858 |
| `NoRepeatNGram(n)` | forbid a token that would complete an n-gram already present | Paulus et al. 2017, arXiv:1705.04304 |
| `Temperature(τ)` | s <- s / τ | Ackley, Hinton & Sejnowski 1985 |
| `TopK(k)` | keep the k highest scores | Fan et al. 2018, arXiv:1805.04833 |
| `TopP(p)` | keep the smallest set of top tokens with total probability >= p | Holtzman et al. 2019, arXiv:1904.09751 |
| `MinP(m)` | keep tokens with p_i >= m * max_j p_j | Nguyen et al. 2024, arXiv:2407.01082 |
| `Typical(m)` | keep tokens whose surprisal -log p_i is closest to the entropy H(p), up to mass m | Meister et al. 2022, arXiv:2202.00666 |

Departures: none in the arithmetic; each class gives the same scores as its counterpart in
`transformers.generation.logits_process` (tested). Ties at a top-k / top-p boundary are kept,
as there. Arguments are validated when the processor is built (ValueError naming the field).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

__all__ = ["LogitsProcessor", "MinP", "NoRepeatNGram", "RepetitionPenalty", "Temperature",
           "TopK", "TopP", "Typical", "apply_processors", "build_processors"]

LogitsProcessor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
NEG_INF = float("-inf")


def _check_keep(min_tokens_to_keep: int) -> None:
    if not isinstance(min_tokens_to_keep, int) or min_tokens_to_keep < 1:
        raise ValueError(f"min_tokens_to_keep={min_tokens_to_keep!r} must be a positive integer")


@dataclass(frozen=True)
class RepetitionPenalty:
    """Divide positive (multiply negative) scores of already-seen tokens by `penalty` > 0;
    penalty > 1 discourages repeats, 1 does nothing.

    `prompt_ignore_length` (P,): per prompt, how many leading columns to ignore, i.e. its left
    padding (as Hugging Face builds it from the attention mask), so a pad id is not penalised.
    With beams the rows are the P prompts' beams in order, B = P * num_beams."""

    penalty: float
    prompt_ignore_length: torch.Tensor | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not self.penalty > 0:
            raise ValueError(f"repetition_penalty={self.penalty} must be > 0 (1.0 = no penalty)")

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        B, V = scores.shape
        if self.prompt_ignore_length is not None:  # pads -> id V, a column dropped below
            skip = self.prompt_ignore_length.to(input_ids.device)
            skip = skip.repeat_interleave(B // skip.numel())                        # (B,)
            cols = torch.arange(input_ids.size(1), device=input_ids.device)
            input_ids = input_ids.masked_fill(cols < skip[:, None], V)
        seen = torch.zeros(B, V + 1, dtype=torch.bool, device=scores.device)
        seen = seen.scatter(1, input_ids, True)[:, :V]                              # (B, V)
        penalised = torch.where(scores < 0, scores * self.penalty, scores / self.penalty)
        return torch.where(seen, penalised, scores)


@dataclass(frozen=True)
class NoRepeatNGram:
    """Ban any token that would repeat an n-gram of the context: if the last n-1 tokens occurred
    before, followed by w, then w is banned now."""

    ngram_size: int

    def __post_init__(self) -> None:
        if not isinstance(self.ngram_size, int) or self.ngram_size < 1:
            raise ValueError(f"no_repeat_ngram_size={self.ngram_size!r} must be a positive integer")

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        n = self.ngram_size
        if input_ids.size(1) < n:
            return scores
        grams = input_ids.unfold(1, n, 1)                     # (B, T - n + 1, n) every n-gram
        prefix = input_ids[:, input_ids.size(1) - (n - 1):]   # (B, n - 1) the last n-1 tokens
        hit = (grams[:, :, :-1] == prefix[:, None, :]).all(-1)  # (B, T - n + 1)
        banned = torch.zeros_like(scores, dtype=torch.bool)
        rows = torch.arange(scores.size(0), device=scores.device)[:, None].expand_as(hit)
        banned[rows[hit], grams[:, :, -1][hit]] = True
        return scores.masked_fill(banned, NEG_INF)


@dataclass(frozen=True)
class Temperature:
    """Divide scores by τ > 0: τ < 1 sharpens the distribution, τ > 1 flattens it."""

    temperature: float

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"temperature={self.temperature} must be > 0 when sampling; "
                             "for the most likely token use greedy decoding (do_sample=False)")

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return scores / self.temperature


@dataclass(frozen=True)
class TopK:
    """Keep the `top_k` highest scores (and every token tied with the k-th)."""

    top_k: int
    min_tokens_to_keep: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.top_k, int) or self.top_k <= 0:
            raise ValueError(f"top_k={self.top_k!r} must be a positive integer or None")
        _check_keep(self.min_tokens_to_keep)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        k = min(max(self.top_k, self.min_tokens_to_keep), scores.size(-1))
        kth = torch.topk(scores, k, dim=-1).values[..., -1:]  # (B, 1)
        return scores.masked_fill(scores < kth, NEG_INF)


@dataclass(frozen=True)
class TopP:
    """Nucleus: sort tokens by probability and keep the smallest prefix whose mass is >= top_p.

    Computed from the bottom: a token is dropped when the total mass of it and everything less
    likely is <= 1 - top_p (Hugging Face's formulation; it keeps the boundary token)."""

    top_p: float
    min_tokens_to_keep: int = 1

    def __post_init__(self) -> None:
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p={self.top_p} must be in (0, 1] (1.0 = keep every token)")
        _check_keep(self.min_tokens_to_keep)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        sorted_scores, order = torch.sort(scores, descending=False)     # least likely first
        mass_below = sorted_scores.softmax(dim=-1).cumsum(dim=-1)       # (B, V)
        drop = mass_below <= 1 - self.top_p
        drop[..., -self.min_tokens_to_keep:] = False
        return scores.masked_fill(drop.scatter(1, order, drop), NEG_INF)


@dataclass(frozen=True)
class MinP:
    """Keep tokens at least `min_p` times as likely as the most likely one."""

    min_p: float
    min_tokens_to_keep: int = 1

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_p <= 1.0:
            raise ValueError(f"min_p={self.min_p} must be in [0, 1]")
        _check_keep(self.min_tokens_to_keep)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        probs = scores.softmax(dim=-1)
        drop = probs < self.min_p * probs.amax(dim=-1, keepdim=True)
        k = min(self.min_tokens_to_keep, probs.size(-1))
        drop.scatter_(-1, torch.topk(probs, k, dim=-1).indices, False)
        return scores.masked_fill(drop, NEG_INF)


@dataclass(frozen=True)
class Typical:
    """Locally typical sampling: rank tokens by |-log p_i - H(p)| and keep the best-ranked ones
    until their probability mass reaches `mass`."""

    mass: float
    min_tokens_to_keep: int = 1

    def __post_init__(self) -> None:
        if not 0.0 < self.mass <= 1.0:
            raise ValueError(f"typical_p={self.mass} must be in (0, 1]")
        _check_keep(self.min_tokens_to_keep)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        logp = scores.log_softmax(dim=-1)
        entropy = -(logp * logp.exp()).nansum(-1, keepdim=True)        # H(p), (B, 1)
        distance, order = torch.sort((-logp - entropy).abs(), dim=-1)  # most typical first
        mass = scores.gather(-1, order).softmax(dim=-1).cumsum(dim=-1)
        last = (mass < self.mass).sum(dim=1).clamp_(max=scores.size(-1) - 1)  # (B,)
        drop = distance > distance.gather(1, last[:, None])
        drop[..., : self.min_tokens_to_keep] = False
        return scores.masked_fill(drop.scatter(1, order, drop), NEG_INF)


def apply_processors(processors: Sequence[LogitsProcessor], input_ids: torch.Tensor,
                     scores: torch.Tensor) -> torch.Tensor:
    """Run `processors` in order on (B, V) scores."""
    for p in processors:
        scores = p(input_ids, scores)
    return scores


def build_processors(
    do_sample: bool, temperature: float = 1.0, top_k: int | None = None,
    top_p: float | None = None, min_p: float | None = None, typical_p: float | None = None,
    repetition_penalty: float | None = None, no_repeat_ngram_size: int | None = None,
    min_tokens_to_keep: int = 1, attention_mask: torch.Tensor | None = None,
) -> list[LogitsProcessor]:
    """The processors `generate` applies, in Hugging Face's order. The sampling warpers
    (temperature, top-k/p, min-p, typical) are used only when `do_sample` is True. The
    repetition penalty skips the left padding that `attention_mask` (B, T) marks with 0s."""
    procs: list[LogitsProcessor] = []
    if repetition_penalty is not None and repetition_penalty != 1.0:
        pads = None
        if attention_mask is not None and not bool(attention_mask.all()):
            pads = (attention_mask != 0).int().argmax(dim=1)  # first real column per row
        procs.append(RepetitionPenalty(repetition_penalty, pads))
    if no_repeat_ngram_size:
        procs.append(NoRepeatNGram(no_repeat_ngram_size))
    if not do_sample:
        return procs
    if temperature != 1.0:
        procs.append(Temperature(temperature))
    if top_k is not None:
        procs.append(TopK(top_k, min_tokens_to_keep))
    if top_p is not None and TopP(top_p).top_p < 1.0:  # building it validates top_p
        procs.append(TopP(top_p, min_tokens_to_keep))
    if min_p is not None:
        procs.append(MinP(min_p, min_tokens_to_keep))
    if typical_p is not None and Typical(typical_p).mass < 1.0:
        procs.append(Typical(typical_p, min_tokens_to_keep))
    return procs
