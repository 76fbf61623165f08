"""Discounts for absolute-discounting and (modified) Kneser-Ney smoothing, as pure functions.

Counts-of-counts n_r (how many n-grams occur exactly r times) give Ney et al.'s (1994) single
discount and Chen & Goodman's (1998, TR-10-98) three:

    Y = n1 / (n1 + 2 n2)
    D1 = 1 - 2 Y n2 / n1,   D2 = 2 - 3 Y n3 / n2,   D3+ = 3 - 4 Y n4 / n3

Departure: on tiny corpora a count-of-counts can be zero, leaving a D undefined or not
positive; it falls back to Y (and Y to 0.5), so 0 < D_i <= i always.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["absolute_discount", "count_of_counts", "kneser_ney_discounts"]


def count_of_counts(counts: np.ndarray, max_count: int = 4) -> np.ndarray:
    """n_r = how many n-grams occur exactly r times, for r = 1..max_count (index r-1).

    Args:
        counts: the n-grams' counts.
        max_count: the largest r.

    Returns:
        (max_count,) int64 array.
    """
    counts = np.asarray(counts, dtype=np.int64)
    return np.bincount(np.clip(counts, 0, max_count + 1), minlength=max_count + 2)[1:max_count + 1]


def absolute_discount(n: Sequence[int]) -> float:
    """Ney et al. (1994) single discount D = n1 / (n1 + 2 n2); 0.5 when that is undefined or
    0 (no singletons, only in toy corpora).

    Args:
        n: counts-of-counts (n1, n2, ...).

    Returns:
        D in (0, 1].
    """
    n1, n2 = float(n[0]), float(n[1])
    return n1 / (n1 + 2 * n2) if n1 > 0 else 0.5


def kneser_ney_discounts(n: Sequence[int]) -> tuple[float, float, float]:
    """Chen & Goodman's (D1, D2, D3+) from counts-of-counts n = (n1, n2, n3, n4).

    D_i = i - (i+1) Y n_{i+1} / n_i with Y = n1 / (n1 + 2 n2). Where the formula is undefined
    (n_i = 0) or not positive (toy corpora), D_i = Y instead, so 0 < D_i <= i always: the
    discounted counts stay >= 0 and every context keeps some mass for lower orders.

    Args:
        n: counts-of-counts (n1, n2, n3, n4).

    Returns:
        (D1, D2, D3+).
    """
    n1, n2, n3, n4 = (float(x) for x in n[:4])
    y = absolute_discount(n)
    out = []
    for i, (ni, nnext) in enumerate(((n1, n2), (n2, n3), (n3, n4)), start=1):
        d = i - (i + 1) * y * nnext / ni if ni > 0 else y
        out.append(d if d > 0 else y)
    return out[0], out[1], out[2]
