"""Counting n-grams, vectorised: a suffix trie stored as sorted int64 keys.

Every context is an id made by extending a shorter context one token to the left, so a level-n
context is the key `parent_id * |V| + token` of its level-(n-1) parent, and an n-gram (h, w) is
the key `id(h) * |V| + w`. Fitting is one `np.unique` per order; scoring is one
`np.searchsorted` per order (`context_ids`, `gram_count`).

For (modified) Kneser-Ney the lower orders n < N hold *continuation* counts N1+(. h w), the
number of distinct tokens seen before h w (Kneser & Ney 1995), except for n-grams that start
with `<s>`, which cannot be extended to the left and keep their raw counts.

`tune_jelinek_mercer` fits the interpolation weights of Jelinek & Mercer (1980) by EM on
held-out data, from the same counts.

Input convention (made by `NGramLM._encode`): `t` is the padded id array of all sequences,
`ev` the positions of the predicted tokens in it.
"""

from __future__ import annotations

import numpy as np

from minillm.ngram.text import BOS_ID

__all__ = ["NGramCounts", "lookup", "split_heldout", "tune_jelinek_mercer", "valid_levels"]


def lookup(keys: np.ndarray, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of each query in sorted `keys` and whether it is there."""
    if len(keys) == 0:
        return np.zeros(len(query), np.int64), np.zeros(len(query), bool)
    idx = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
    return idx, keys[idx] == query


def valid_levels(t: np.ndarray, ev: np.ndarray, levels: int) -> np.ndarray:
    """Highest level whose context does not reach back past the first `<s>` (a level-n
    context is redundant when its second token is already `<s>`)."""
    top = np.full(len(ev), levels)
    for n in range(levels, 2, -1):
        top = np.where(t[ev - (n - 2)] == BOS_ID, n - 1, top)
    return top


class NGramCounts:
    """The counts of every order 1..N of one corpus.

    Args:
        t: padded ids; ev: positions of the predicted tokens (see the module docstring).
        vocab_size: |V|, `<s>`, `</s>` and `<unk>` included.
        order: N.
        continuation: replace lower-order counts by continuation counts (Kneser-Ney).

    Attributes (lists indexed by order n, entry 0 unused):
        ctx_keys[n]: sorted keys of the level-n contexts (n >= 2).
        gram_keys[n], counts[n]: sorted n-gram keys and the count used for each.
        ctx_total[n]: per context, the sum of its n-grams' counts.
        ctx_nr[n]: (3, contexts) how many of its n-grams have count 1, 2 and >= 3.
    """

    def __init__(self, t: np.ndarray, ev: np.ndarray, vocab_size: int, order: int,
                 continuation: bool):
        V, N = vocab_size, order
        self.vocab_size, self.order = V, N
        self.ctx_keys: list = [None, None]
        parent, first = [None, None], [None, None]
        ctx = np.zeros(len(ev), np.int64)
        self.gram_keys: list = [None]
        raw: list = [None]
        for n in range(1, N + 1):
            if n >= 3:  # a context never reaches back past the first <s>: drop "<s> <s> ..."
                keep = t[ev - (n - 2)] != BOS_ID
                ev, ctx = ev[keep], ctx[keep]
            if n >= 2:  # extend each event's context one token to the left
                key = ctx * V + t[ev - (n - 1)]
                uniq, ctx = np.unique(key, return_inverse=True)
                self.ctx_keys.append(uniq)
                parent.append(uniq // V)
                first.append(uniq % V)
            g_uniq, g_cnt = np.unique(ctx * V + t[ev], return_counts=True)
            self.gram_keys.append(g_uniq)
            raw.append(g_cnt)
        counts = list(raw)
        if continuation:  # continuation counts N1+(. h w) for the lower orders
            for n in range(1, N):
                upper = self.gram_keys[n + 1]
                suffix = parent[n + 1][upper // V] * V + upper % V
                cont = np.bincount(np.searchsorted(self.gram_keys[n], suffix),
                                   minlength=len(self.gram_keys[n]))
                if n >= 2:  # n-grams starting with <s> cannot be extended: keep raw counts
                    starts = first[n][self.gram_keys[n] // V] == BOS_ID
                    cont = np.where(starts, raw[n], cont)
                counts[n] = cont
        self.counts = [c if c is None or len(c) else np.zeros(1, np.int64) for c in counts]
        self.ctx_total: list = [None]
        self.ctx_nr: list = [None]
        for n in range(1, N + 1):
            c, cid = counts[n], self.gram_keys[n] // V
            n_ctx = 1 if n == 1 else max(len(self.ctx_keys[n]), 1)   # >= 1 row: safe lookups
            self.ctx_total.append(np.bincount(cid, weights=c, minlength=n_ctx))
            self.ctx_nr.append(np.stack([np.bincount(cid, weights=(c == 1), minlength=n_ctx),
                                         np.bincount(cid, weights=(c == 2), minlength=n_ctx),
                                         np.bincount(cid, weights=(c >= 3), minlength=n_ctx)]))
        self.level_counts = counts  # the counts each level's discounts are estimated from

    def context_ids(self, t: np.ndarray, ev: np.ndarray, levels: int) -> list[np.ndarray]:
        """For each level n = 1..levels, the id of each event's context (-1 = unseen)."""
        V = self.vocab_size
        ids = [np.zeros(len(ev), np.int64)]
        for n in range(2, levels + 1):
            prev = ids[-1]
            idx, ok = lookup(self.ctx_keys[n], np.maximum(prev, 0) * V + t[ev - (n - 1)])
            ids.append(np.where(ok & (prev >= 0), idx, -1))
        return ids

    def gram_count(self, n: int, cid: np.ndarray, w: np.ndarray) -> np.ndarray:
        """Counts of (context cid, token w) at level n; 0 where unseen (cid = -1 or no n-gram)."""
        idx, ok = lookup(self.gram_keys[n], np.maximum(cid, 0) * self.vocab_size + w)
        return np.where(ok & (cid >= 0), self.counts[n][idx], 0).astype(np.float64)

    def total(self, n: int, cid: np.ndarray, unseen: float) -> np.ndarray:
        """c(h) at level n for contexts cid, `unseen` where cid = -1."""
        return np.where(cid >= 0, self.ctx_total[n][np.maximum(cid, 0)], unseen)


def tune_jelinek_mercer(counts: NGramCounts, t: np.ndarray, ev: np.ndarray,
                        max_iter: int = 1000) -> np.ndarray:
    """EM for the nested (stick-breaking) mixture weights lam_1..lam_N on held-out events.

    P(w | h) = lam_N P_ML,N + (1 - lam_N)(lam_{N-1} P_ML,N-1 + (1 - lam_{N-1})(... P_0)),
    where a level whose context was never seen passes all its weight down.

    Args:
        counts: the training counts.
        t, ev: the held-out ids and the positions to score.
        max_iter: EM iterations at most (it stops when the likelihood is flat).

    Returns:
        (N,) weights lam_1..lam_N in (0, 1).
    """
    V, N = counts.vocab_size, counts.order
    ctx = counts.context_ids(t, ev, N)
    ml, seen = [], []
    for n in range(1, N + 1):
        cid = ctx[n - 1]
        s = cid >= 0
        c = counts.gram_count(n, cid, t[ev])
        ml.append(np.where(s, c / counts.total(n, cid, 1.0), 0))
        seen.append(s)
    lam, last = np.full(N, 0.5), -np.inf
    for _ in range(max_iter):  # EM: each step raises the held-out likelihood; stop when flat
        # weight of component n (0 = uniform): lam_n * prod over seen higher levels (1 - lam_m)
        reach = np.ones(len(ev))
        weights = [None] * (N + 1)
        for n in range(N, 0, -1):
            ln = np.where(seen[n - 1], lam[n - 1], 0.0)
            weights[n] = reach * ln
            reach = reach * (1 - ln)
        weights[0] = reach
        comp = [weights[0] / (V - 1)] + [weights[n] * ml[n - 1] for n in range(1, N + 1)]
        total = np.maximum(sum(comp), 1e-300)
        ll = np.log(total).sum()
        if ll - last < 1e-7 * len(ev):
            break
        last = ll
        resp = [x / total for x in comp]
        below = resp[0].copy()
        for n in range(1, N + 1):
            below += resp[n]
            s = seen[n - 1]
            denom = below[s].sum()
            lam[n - 1] = resp[n][s].sum() / denom if denom > 0 else 0.0
        lam = np.clip(lam, 1e-6, 1 - 1e-6)
    return lam


def split_heldout(sequences: list[list]) -> tuple[list[list], list[list], list[int]]:
    """Jelinek-Mercer's default held-out data: (training sequences, held-out sequences,
    tokens of each held-out one not to score).

    Whole sequences are held out when there are several, so each held-out token keeps its real
    context; one sequence is cut, and its last tenth is scored after the first nine tenths."""
    if len(sequences) >= 2:
        held = set(range(9, len(sequences), 10)) or {len(sequences) - 1}
        return ([s for i, s in enumerate(sequences) if i not in held],
                [s for i, s in enumerate(sequences) if i in held], [0] * len(held))
    (s,) = sequences
    if len(s) < 2:  # nothing to spare: tune on the training data itself (overfits toward MLE)
        return sequences, sequences, [0]
    cut = len(s) - max(1, len(s) // 10)
    return [s[:cut]], [s], [cut]
