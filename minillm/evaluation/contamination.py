"""Test-set contamination: 13-gram overlap (GPT-3, Brown et al. 2020, arXiv:2005.14165,
Appendix C; PaLM, Chowdhery et al. 2022, arXiv:2204.02311, Section 8) and Min-K% Prob
membership detection (Shi et al. 2024, arXiv:2310.16789).

Overlap. Text is normalised (lower case, punctuation dropped, split on whitespace) and cut into
n-grams of n = 13 words; a test item is *dirty* when any of its n-grams occurs in the training
data, and the contamination of a set is its share of dirty items. Departure: an item shorter
than n words is compared whole (GPT-3 used the item's own length as n for short items).

Min-K% Prob. A text seen in training has few very unlikely tokens; score it by the mean of its
k% lowest token log-probabilities:

    MinK%(x) = (1 / |S|) sum_{i in S} log p(x_i | x_<i),  S = the ceil(k |x|) lowest

(higher = more likely a member). `roc_auc` measures detection: the probability that a random
member scores above a random non-member (ties count one half).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence

__all__ = ["contamination_rate", "dirty_items", "min_k_prob", "ngrams", "normalise",
           "roc_auc"]

_WORD = re.compile(r"[^\w\s]")


def normalise(text: str) -> list[str]:
    """Lower-cased words with punctuation removed."""
    return _WORD.sub(" ", text.lower()).split()


def ngrams(words: Sequence[str], n: int = 13) -> set[tuple[str, ...]]:
    """The set of n-word windows of `words` (the whole of it when shorter than n)."""
    if n < 1:
        raise ValueError(f"n={n} must be >= 1")
    if len(words) < n:
        return {tuple(words)} if words else set()
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def dirty_items(test_items: Sequence[str], training_texts: Iterable[str],
                n: int = 13) -> list[bool]:
    """For each test item, whether any of its n-grams (normalised words) occurs in training.

    The training n-grams are kept as hashes of their joined words (one int each, so a corpus
    of millions of words fits in memory); an item shorter than n words is looked up whole, as a
    word-bounded substring of each normalised training text.

    Args:
        test_items: the evaluation set's texts.
        training_texts: the training documents.
        n: the n-gram length (13 as in GPT-3 and PaLM).

    Returns:
        One flag per test item.
    """
    items = [normalise(t) for t in test_items]
    short = {i for i, w in enumerate(items) if 0 < len(w) < n}
    flags = [False] * len(items)
    seen: set[int] = set()
    for text in training_texts:
        words = normalise(text)
        seen.update(hash(" ".join(words[i:i + n])) for i in range(len(words) - n + 1))
        if short:
            joined = f" {' '.join(words)} "
            for i in short:
                if not flags[i] and f" {' '.join(items[i])} " in joined:
                    flags[i] = True
    for i, words in enumerate(items):
        if i not in short and words:
            flags[i] = any(hash(" ".join(words[j:j + n])) in seen
                           for j in range(len(words) - n + 1))
    return flags


def contamination_rate(test_items: Sequence[str], training_texts: Iterable[str],
                       n: int = 13) -> float:
    """The share of dirty test items (`dirty_items`)."""
    if not test_items:
        raise ValueError("test_items is empty: there is no rate to compute")
    flags = dirty_items(test_items, training_texts, n)
    return sum(flags) / len(flags)


def min_k_prob(token_logprobs: Sequence[float], k: float = 0.2) -> float:
    """Mean of the ceil(k * len) lowest token log-probabilities (Min-K% Prob).

    Args:
        token_logprobs: log p(x_i | x_<i) of each token of the text.
        k: the fraction kept, in (0, 1] (Shi et al. use 0.2).

    Returns:
        The score (higher: more likely seen in training).
    """
    if not 0 < k <= 1:
        raise ValueError(f"k={k} must be in (0, 1] (a fraction, e.g. 0.2 for 20%)")
    if len(token_logprobs) == 0:
        raise ValueError("token_logprobs is empty: a text needs at least one token")
    m = math.ceil(k * len(token_logprobs))
    return sum(sorted(token_logprobs)[:m]) / m


def roc_auc(scores: Sequence[float], labels: Sequence[int | bool]) -> float:
    """Area under the ROC curve: P(score of a positive > score of a negative), ties one half
    (the Mann-Whitney U statistic over n_pos * n_neg pairs).

    Args:
        scores: higher means "positive" (e.g. a member of the training set).
        labels: 1/True for positives, 0/False for negatives.
    """
    if len(scores) != len(labels):
        raise ValueError(f"scores ({len(scores)}) and labels ({len(labels)}) differ in length")
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    if not pos or not neg:
        raise ValueError("roc_auc needs at least one positive and one negative label")
    # rank-sum form: average ranks over ties, O(n log n)
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    ranks = [0.0] * len(scores)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        for t in range(i, j + 1):
            ranks[order[t]] = (i + j) / 2 + 1
        i = j + 1
    rank_sum = sum(r for r, y in zip(ranks, labels, strict=True) if y)
    return (rank_sum - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg))
