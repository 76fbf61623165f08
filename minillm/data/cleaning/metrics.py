"""Scoring a filter against the crawl's labels: precision, recall and F1 of its decisions.

A filter *flags* items (pages to drop, spans to scrub); the crawl knows which items are truly
bad (`crawl.quality_labels`, `crawl.duplicate_labels`, the PII spans). With TP = flagged and bad,
FP = flagged but good, FN = bad but not flagged:

    precision = TP / (TP + FP)      recall = TP / (TP + FN)      F1 = 2 P R / (P + R)

A ratio with a zero denominator is reported as 0.0 (nothing flagged has no precision to claim),
as scikit-learn's `zero_division=0` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["FilterScore", "score_filter"]


@dataclass(frozen=True)
class FilterScore:
    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def score_filter(flagged: Sequence[bool], truth: Sequence[bool]) -> FilterScore:
    """Count a filter's hits and misses.

    Args:
        flagged: per item, True when the filter drops (or marks) it.
        truth: per item, True when it should be dropped.

    Returns:
        The confusion counts, with `precision`, `recall` and `f1` as properties.

    Raises:
        ValueError: the two sequences differ in length.
    """
    if len(flagged) != len(truth):
        raise ValueError(f"flagged has {len(flagged)} items and truth {len(truth)}; score the "
                         "same items in the same order")
    tp = sum(bool(f) and bool(t) for f, t in zip(flagged, truth, strict=True))
    fp = sum(bool(f) and not t for f, t in zip(flagged, truth, strict=True))
    fn = sum(bool(t) and not f for f, t in zip(flagged, truth, strict=True))
    return FilterScore(tp, fp, fn, len(truth) - tp - fp - fn)
