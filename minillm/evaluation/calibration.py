"""Calibration: expected calibration error and a reliability diagram (Guo et al. 2017, "On
Calibration of Modern Neural Networks", arXiv:1706.04599; Kadavath et al. 2022, "Language
Models (Mostly) Know What They Know", arXiv:2207.05221), abstention at a confidence threshold,
and the standard error of an accuracy as lm-evaluation-harness reports it.

Predictions are grouped into M equal-width bins of confidence B_m = ((m-1)/M, m/M] (the first
bin includes 0); then

    ECE = sum_m |B_m| / n * |acc(B_m) - conf(B_m)|

with acc the share correct and conf the mean confidence in the bin. The reliability diagram
plots acc(B_m) against conf(B_m) (perfect calibration: the diagonal).

Standard error of a mean of per-item scores x (lm-eval's `mean_stderr`): the sample standard
deviation over sqrt(n); for 0/1 scores with accuracy p this is sqrt(p (1 - p) / (n - 1)).
`bootstrap_stderr` resamples items with replacement instead (any statistic).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["ReliabilityBin", "abstention_curve", "bootstrap_stderr", "expected_calibration_error",
           "mean_stderr", "reliability_bins"]


@dataclass(frozen=True)
class ReliabilityBin:
    """One bin of a reliability diagram."""

    lower: float       # confidence range (lower, upper]
    upper: float
    count: int         # predictions in the bin
    accuracy: float    # share correct (nan when empty)
    confidence: float  # mean confidence (nan when empty)


def _check(confidences: Sequence[float], correct: Sequence[bool | int]) -> None:
    if len(confidences) != len(correct):
        raise ValueError(f"confidences ({len(confidences)}) and correct ({len(correct)}) "
                         "differ in length")
    if not confidences:
        raise ValueError("no predictions: pass at least one confidence")
    bad = [c for c in confidences if not 0 <= c <= 1]
    if bad:
        raise ValueError(f"confidences must be probabilities in [0, 1]; got {bad[:3]}")


def reliability_bins(confidences: Sequence[float], correct: Sequence[bool | int],
                     n_bins: int = 10) -> list[ReliabilityBin]:
    """Equal-width confidence bins with their accuracy and mean confidence.

    Args:
        confidences: the model's probability for its answer, each in [0, 1].
        correct: whether each answer was right.
        n_bins: M, the number of bins over [0, 1].
    """
    if n_bins < 1:
        raise ValueError(f"n_bins={n_bins} must be >= 1")
    _check(confidences, correct)
    members: list[list[int]] = [[] for _ in range(n_bins)]
    for i, c in enumerate(confidences):
        members[max(0, math.ceil(c * n_bins) - 1)].append(i)   # (lower, upper]; 0 -> bin 0
    bins = []
    for m, idx in enumerate(members):
        acc = sum(bool(correct[i]) for i in idx) / len(idx) if idx else math.nan
        conf = sum(confidences[i] for i in idx) / len(idx) if idx else math.nan
        bins.append(ReliabilityBin(m / n_bins, (m + 1) / n_bins, len(idx), acc, conf))
    return bins


def expected_calibration_error(confidences: Sequence[float], correct: Sequence[bool | int],
                               n_bins: int = 10) -> float:
    """ECE = sum_m |B_m| / n |acc(B_m) - conf(B_m)| over equal-width bins."""
    bins = reliability_bins(confidences, correct, n_bins)
    n = len(confidences)
    return sum(b.count / n * abs(b.accuracy - b.confidence) for b in bins if b.count)


def abstention_curve(confidences: Sequence[float], correct: Sequence[bool | int],
                     thresholds: Sequence[float]) -> list[dict[str, float]]:
    """Answer only when confidence >= threshold ("I don't know" otherwise).

    Returns:
        Per threshold: coverage (share answered), accuracy on the answered (nan if none) and
        confident_wrong (share of all items answered wrongly).
    """
    _check(confidences, correct)
    n, rows = len(confidences), []
    for t in thresholds:
        answered = [bool(y) for c, y in zip(confidences, correct, strict=True) if c >= t]
        rows.append({"threshold": t, "coverage": len(answered) / n,
                     "accuracy": sum(answered) / len(answered) if answered else math.nan,
                     "confident_wrong": (len(answered) - sum(answered)) / n})
    return rows


def mean_stderr(scores: Sequence[float]) -> float:
    """Standard error of the mean: sample standard deviation / sqrt(n) (lm-eval's)."""
    n = len(scores)
    if n < 2:
        raise ValueError(f"a standard error needs at least 2 scores, got {n}")
    mu = sum(scores) / n
    return math.sqrt(sum((x - mu) ** 2 for x in scores) / (n - 1)) / math.sqrt(n)


def bootstrap_stderr(statistic: Callable[[Sequence[float]], float], scores: Sequence[float],
                     iters: int = 1000, seed: int = 0) -> float:
    """Standard deviation of `statistic` over `iters` resamples (with replacement) of the
    scores: the bootstrap standard error."""
    if iters < 2:
        raise ValueError(f"iters={iters} must be >= 2")
    if not scores:
        raise ValueError("scores is empty")
    rng = random.Random(seed)
    values = [statistic(rng.choices(scores, k=len(scores))) for _ in range(iters)]
    mu = sum(values) / iters
    return math.sqrt(sum((v - mu) ** 2 for v in values) / (iters - 1))
