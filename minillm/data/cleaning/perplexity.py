"""The perplexity filter: keep the documents a language model of good text finds likely
(CCNet, Wenzek et al. 2019, arXiv:1911.00359, §3.3).

CCNet trains a 5-gram Kneser-Ney model on Wikipedia, scores every paragraph of the crawl, and
splits each language into head / middle / tail thirds by perplexity (the 33rd and 66th
percentiles of a sample). Here the "quality model" is any scorer `bits_per_byte(text) -> float`
(chapter 01's Kneser-Ney model fitted on the training plays, in the course); perplexity per
byte is 2^bits_per_byte, a monotone map, so thresholds on either give the same decisions:

    keep(d) = bits_per_byte(d) <= τ,      τ = the q-quantile of the scores (q = kept share)

The data layer may not import the n-gram models, so the scorer is passed in.

Departures: whole documents are scored, not paragraphs; one language.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["ccnet_buckets", "perplexity_keep", "perplexity_scores", "threshold_for_share"]


def perplexity_scores(texts: Sequence[str], bits_per_byte: Callable[[str], float]) -> np.ndarray:
    """Score each text with the quality model.

    Args:
        texts: the documents (none empty).
        bits_per_byte: the model's bits per UTF-8 byte of a text.

    Returns:
        (N,) float64 bits per byte.

    Raises:
        ValueError: an empty text (it has no bytes to score).
    """
    for i, t in enumerate(texts):
        if not t:
            raise ValueError(f"texts[{i}] is empty; drop empty documents before scoring")
    return np.array([float(bits_per_byte(t)) for t in texts], dtype=np.float64)


def threshold_for_share(scores: np.ndarray, keep_share: float) -> float:
    """The bits/byte threshold that keeps about `keep_share` of the documents (the lowest).

    Raises:
        ValueError: keep_share outside (0, 1] or no scores.
    """
    if not 0 < keep_share <= 1:
        raise ValueError(f"keep_share={keep_share} must be in (0, 1]")
    if len(scores) == 0:
        raise ValueError("scores is empty: score some documents first")
    return float(np.quantile(np.asarray(scores, dtype=np.float64), keep_share))


def perplexity_keep(scores: np.ndarray, threshold: float) -> np.ndarray:
    """(N,) bool: True where the score is at most `threshold` bits per byte."""
    return np.asarray(scores) <= threshold


def ccnet_buckets(scores: np.ndarray, quantiles: tuple[float, float] = (1 / 3, 2 / 3),
                  ) -> list[str]:
    """CCNet's head / middle / tail split at two quantiles of the scores.

    Raises:
        ValueError: quantiles not increasing within (0, 1).
    """
    lo_q, hi_q = quantiles
    if not 0 < lo_q < hi_q < 1:
        raise ValueError(f"quantiles={quantiles} must satisfy 0 < low < high < 1")
    scores = np.asarray(scores, dtype=np.float64)
    lo, hi = np.quantile(scores, [lo_q, hi_q])
    return ["head" if s <= lo else "middle" if s <= hi else "tail" for s in scores]
