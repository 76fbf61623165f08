"""The course's preference set: pairs of continuations labelled by a known gold scorer.

Chapters 12-13 (reward models, PPO, DPO) need preferences whose *true* reward is known, so
that what alignment achieves can be measured, not guessed. Rafailov et al. (DPO,
arXiv:2305.18290, §6.1) do this with "controlled sentiment generation": prompts are the
starts of movie reviews, continuations are sampled from the SFT model, and a sentiment
classifier is the gold reward. Here, in miniature:

- prompts: the first line of a speech (train plays for training pairs, test plays for
  evaluation prompts), given to the SFT model as a "continue this speech" instruction;
- two continuations per prompt, sampled from the SFT model (the caller passes the sampler, so
  this module stays below the model layer);
- gold reward: a small sentiment lexicon, r(y) = (#positive - #negative words) / sqrt(#words),
  which rewards cheerful continuations ("love", "joy", "sweet") over grim ones ("death",
  "blood", "woe");
- labels: the Bradley-Terry model of preference (Bradley & Terry 1952; Christiano et al. 2017,
  arXiv:1706.03741), P(a > b) = sigmoid(beta (r(a) - r(b))), *sampled*, so the labels are noisy
  in the way human labels are and the reward model has a real likelihood to fit.

The gold scorer stays available (`gold_reward`) to score what a tuned policy writes.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from minillm.data.corpus import data_dir
from minillm.data.jsonl import read_jsonl

__all__ = ["NEGATIVE_WORDS", "POSITIVE_WORDS", "PreferencePair", "bradley_terry_probability",
           "build_preference_pairs", "gold_reward", "load_preferences", "preference_prompts",
           "write_preferences"]

POSITIVE_WORDS = frozenset("""
love loves loved lov'd loving lovely joy joys joyful happy happiness merry mirth sweet sweetest
fair fairest good gentle kind kindness dear dearest grace gracious honour honest noble bless
blessed blest smile smiles laugh delight delights glad gladly hope peace pleasure pretty
beauty beauteous friend friends true truth thanks heaven heavenly rich wealth comfort bright
brave best better wise virtue virtuous music song sing gold welcome worthy
""".split())
NEGATIVE_WORDS = frozenset("""
death dead die dies died dying kill killed murder blood bloody grief grieve woe woes sorrow
sad tears weep hate hatred foul vile villain wicked evil curse cursed damned hell fear fears
sick poison pain plague wretch wretched traitor false shame grave tomb war wars enemy enemies
cruel black dark night base despair fool mad beggar poor wrong sin sins revenge ill
""".split())
_WORD_RE = re.compile(r"[a-z']+")


def gold_reward(text: str) -> float:
    """The gold sentiment score: (#positive - #negative lexicon words) / sqrt(#words).

    >>> gold_reward("O sweet love, what joy!")
    1.3416407864998738
    >>> gold_reward("")
    0.0
    """
    words = _WORD_RE.findall(text.lower())
    if not words:
        return 0.0
    pos = sum(w in POSITIVE_WORDS for w in words)
    neg = sum(w in NEGATIVE_WORDS for w in words)
    return (pos - neg) / math.sqrt(len(words))


def bradley_terry_probability(r_a: float, r_b: float, beta: float) -> float:
    """P(a preferred to b) = sigmoid(beta * (r_a - r_b))."""
    return 1.0 / (1.0 + math.exp(-beta * (r_a - r_b)))


@dataclass(frozen=True)
class PreferencePair:
    """One labelled comparison: `chosen` was preferred to `rejected` by the noisy labeller."""

    prompt: str               # the instruction given to the policy
    chosen: str
    rejected: str
    gold_chosen: float        # gold rewards, for measuring (not for training a reward model)
    gold_rejected: float
    p_chosen: float           # the Bradley-Terry probability the label was drawn with
    play: str
    split: str


def preference_prompts(speech_lines: Sequence[tuple[str, str]], n: int | None, seed: int,
                       template: str = "Continue this speech: {line}") -> list[tuple[str, str]]:
    """Pick `n` distinct (instruction, play) prompts from (first line, play) pairs, in a seeded
    random order (n=None: all of them, shuffled)."""
    if n is None:
        n = len(set(speech_lines))
    if n <= 0:
        raise ValueError(f"n={n} must be positive")
    pool = sorted(set(speech_lines))
    if len(pool) < n:
        raise ValueError(f"asked for {n} prompts but only {len(pool)} distinct lines exist")
    rng = random.Random(seed)
    return [(template.format(line=line), play) for line, play in rng.sample(pool, n)]


def build_preference_pairs(
    prompts: Sequence[tuple[str, str]], sample: Callable[[list[str]], list[str]], split: str,
    beta: float = 4.0, seed: int = 0, batch_size: int = 64, n: int | None = None,
    resample_ties: int = 0,
) -> list[PreferencePair]:
    """Sample two continuations per prompt and label them with Bradley-Terry noise.

    A pair whose two continuations have *equal* gold rewards (most often: no lexicon word in
    either) carries no preference, only a coin flip; with `resample_ties` > 0 its second
    continuation is sampled again, up to that many times, and a pair still tied is dropped.

    Args:
        prompts: (instruction, play) pairs, in the order they are used.
        sample: maps a list of instructions to one sampled response each (called once per
            batch for each side, then once per resampling round on the tied prompts).
        split: recorded on every pair.
        beta: Bradley-Terry inverse temperature on the gold reward difference; larger means
            cleaner labels (beta -> inf: always the higher gold reward).
        seed: seeds the label draws.
        batch_size: instructions per call to `sample`.
        n: stop after `n` pairs (None: one pair per prompt, ties dropped if resampled); an
            error when the prompts run out first.
        resample_ties: resampling rounds for tied pairs (0: keep ties, labelled by a coin flip).
    """
    if beta <= 0:
        raise ValueError(f"beta={beta} must be positive (it scales the reward difference)")
    if resample_ties < 0:
        raise ValueError(f"resample_ties={resample_ties} must be >= 0")
    rng = random.Random(seed)
    pairs: list[PreferencePair] = []
    for start in range(0, len(prompts), batch_size):
        if n is not None and len(pairs) >= n:
            break
        chunk = list(prompts[start:start + batch_size])
        texts = [p for p, _ in chunk]
        first, second = sample(texts), sample(texts)
        if len(first) != len(texts) or len(second) != len(texts):
            raise ValueError("sample() must return one response per instruction")
        for _ in range(resample_ties):
            tied = [i for i in range(len(texts)) if gold_reward(first[i]) == gold_reward(second[i])]
            if not tied:
                break
            again = sample([texts[i] for i in tied])
            if len(again) != len(tied):
                raise ValueError("sample() must return one response per instruction")
            for i, b in zip(tied, again, strict=True):
                second[i] = b
        for (prompt, play), a, b in zip(chunk, first, second, strict=True):
            ra, rb = gold_reward(a), gold_reward(b)
            if resample_ties and ra == rb:
                continue  # still tied: no preference to learn from
            if n is not None and len(pairs) >= n:
                break
            p = bradley_terry_probability(ra, rb, beta)
            a_wins = rng.random() < p
            chosen, rejected = (a, b) if a_wins else (b, a)
            rc, rr = (ra, rb) if a_wins else (rb, ra)
            pairs.append(PreferencePair(prompt, chosen, rejected, rc, rr,
                                        p if a_wins else 1 - p, play, split))
    if n is not None and len(pairs) < n:
        raise ValueError(f"only {len(pairs)} of n={n} {split} pairs have unequal gold rewards "
                         f"after {resample_ties} resampling rounds over {len(prompts)} prompts: "
                         "give more prompts or more rounds")
    return pairs


def write_preferences(pairs: Sequence[PreferencePair], path: str | Path) -> None:
    """One JSON object per line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(asdict(p), ensure_ascii=False) + "\n" for p in pairs),
                    encoding="utf-8")


def load_preferences(split: str = "train", folder: str | Path | None = None
                     ) -> list[PreferencePair]:
    """Read data/preference/{split}.jsonl (`read_jsonl`: a bad line is a one-line error)."""
    path = Path(folder or data_dir() / "preference") / f"{split}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; regenerate it with "
                                "`python data/preference/make_preference_data.py`")
    return read_jsonl(path, PreferencePair)
