"""Tuning a smoothing's free parameter on held-out text: add-k's pseudo-count k.

Laplace's k = 1 is a fixed guess; for a vocabulary of 10k words it hands most of a rare
context's mass to words never seen there. Chen & Goodman (1998, TR-10-98, §2.1 and §4.1) tune
every method's parameters on held-out data before comparing them; this does it for add-k:
fit the counts once (they do not depend on k), look up each held-out token's c(hw) and c(h) at
its highest order once, then the held-out perplexity of any k is one vectorised formula,

    P(w | h) = (c(hw) + k) / (c(h) + k |V|)      (|V| = the predictable vocabulary),

evaluated on a logarithmic grid and refined around the best. The held-out text must not be
the text the model is finally scored on.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence

import numpy as np

from minillm.ngram.counts import valid_levels
from minillm.ngram.model import NGramLM

__all__ = ["tune_add_k"]


def tune_add_k(sequences: Iterable[Sequence[Hashable]], heldout: Iterable[Sequence[Hashable]],
               order: int, k_min: float = 1e-4, k_max: float = 1.0, per_decade: int = 4,
               **kwargs) -> tuple[NGramLM, dict[float, float]]:
    """Fit an add-k model and choose k by held-out perplexity.

    Args:
        sequences: the training sequences.
        heldout: sequences to tune k on (not the test text).
        order: the n-gram order.
        k_min, k_max: the range of k searched (log grid, `per_decade` points per decade, then
            a finer grid between the best point's neighbours).
        **kwargs: other `NGramConfig` fields (max_vocab, min_count, ...).

    Returns:
        (the model with the best k set, {k: held-out perplexity} for every k tried).
    """
    if not 0 < k_min < k_max:
        raise ValueError(f"k_min={k_min}, k_max={k_max}: need 0 < k_min < k_max")
    if per_decade < 1:
        raise ValueError(f"per_decade={per_decade} must be >= 1")
    heldout = [list(s) for s in heldout]
    if not any(heldout):
        raise ValueError("heldout has no tokens to tune k on: pass non-empty sequences")
    lm = NGramLM(order, "add_k", **kwargs).fit(sequences)
    t, ev, _ = lm._encode(heldout)
    ctx = lm.counts.context_ids(t, ev, order)
    top = valid_levels(t, ev, order)                 # each token's highest usable order
    c, total = np.zeros(len(ev)), np.zeros(len(ev))
    for n in range(1, order + 1):
        at = top == n
        c[at] = lm.counts.gram_count(n, ctx[n - 1][at], t[ev][at])
        total[at] = lm.counts.total(n, ctx[n - 1][at], 0.0)
    n_pred = lm.vocab_size - 1                       # every token but <s>
    curve: dict[float, float] = {}

    def score(ks: np.ndarray) -> None:
        for k in map(float, ks):
            if k not in curve:
                curve[k] = float(np.exp(-np.log((c + k) / (total + k * n_pred)).mean()))

    decades = np.log10(k_max) - np.log10(k_min)
    coarse = np.logspace(np.log10(k_min), np.log10(k_max), int(round(decades * per_decade)) + 1)
    score(coarse)
    i = int(np.argmin([curve[float(k)] for k in coarse]))
    lo, hi = coarse[max(i - 1, 0)], coarse[min(i + 1, len(coarse) - 1)]
    score(np.logspace(np.log10(lo), np.log10(hi), 9))
    lm.config.k = min(curve, key=curve.get)
    return lm, dict(sorted(curve.items()))
