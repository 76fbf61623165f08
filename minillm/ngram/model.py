"""Count-based n-gram language models with the classic smoothing family.

An order-N model predicts token w from the N-1 tokens before it, h. Every smoothed estimate
here is a recursion over orders n = N, N-1, ..., 1 that ends in the uniform distribution
P_0(w) = 1/|V| (V = the predictable vocabulary, everything but `<s>`):

    P_n(w | h) = alpha_n(h, w) + gamma_n(h) * P_{n-1}(w | h')      h' = h without its first token

    mle                alpha = c(hw)/c(h), gamma = 0   (the longest context seen in training)
    add_k              (c(hw) + k) / (c(h) + k|V|) at the highest order only (Laplace: k = 1)
    jelinek_mercer     alpha = lam_n c(hw)/c(h), gamma = 1 - lam_n, lam_n tuned by EM on held-out
    kneser_ney         alpha = max(c(hw) - D, 0)/c(h), gamma = D N1+(h.)/c(h), D = n1/(n1+2 n2)
    modified_kneser_ney  D(c) = D1, D2 or D3+ for c = 1, 2, >=3 (Chen & Goodman 1998, TR-10-98):
                       Y = n1/(n1+2n2), D1 = 1-2Y n2/n1, D2 = 2-3Y n3/n2, D3+ = 3-4Y n4/n3,
                       gamma = (D1 N1(h.) + D2 N2(h.) + D3+ N3+(h.)) / c(h)
    stupid_backoff     S = c(hw)/c(h) if c(hw) > 0 else 0.4 S(w | h')  (Brants et al. 2007;
                       NOT normalised: its "perplexity" is only a score)

An unseen context h (c(h) = 0) passes all its mass down: alpha = 0, gamma = 1. For (modified)
Kneser-Ney (Kneser & Ney 1995; Chen & Goodman 1998) the lower orders n < N count *continuation*
counts N1+(. h w), the number of distinct tokens seen before h w, instead of c(hw): "Francisco"
is frequent but follows only "San", so as a unigram it should be rare.

Counting is vectorised (`minillm.ngram.counts`: a suffix trie stored as sorted int64 keys), so
fitting and scoring are a few `np.unique` / `np.searchsorted` passes per order; the discounts
are pure functions (`minillm.ngram.discounts`), the tokenizers in `minillm.ngram.text`.

Departures and conventions (the same as KenLM's where it matters):
- each sequence is padded with N-1 `<s>` on the left and one `</s>` on the right; `</s>` is
  predicted, `<s>` never is (its probability is 0); a context never reaches back past the
  first `<s>` (levels whose context would hold "<s> <s>" are skipped), so near a sequence start
  the model is what single-`<s>` padding (SRILM, KenLM) gives, without discounting the same
  counts once per padded level;
- lower-order n-grams that start with `<s>` keep their raw count (they cannot be extended left);
- when a count-of-counts is zero (tiny corpora) a Chen & Goodman discount can be undefined or
  not positive: it falls back to Y (and Y to 0.5), so 0 < D_i <= i and every smoothed model
  gives every token but `<s>` a positive probability;
- the unigram level of Kneser-Ney is interpolated with the uniform distribution, so `<unk>` and
  every other token get non-zero probability;
- `bits_per_byte` charges each out-of-vocabulary token its spelling under a byte unigram model,
  so an open-vocabulary word model pays for every byte of the text.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from minillm.ngram.counts import NGramCounts, split_heldout, tune_jelinek_mercer, valid_levels
from minillm.ngram.discounts import absolute_discount, count_of_counts, kneser_ney_discounts
from minillm.ngram.text import (
    BOS,
    BOS_ID,
    EOS,
    EOS_ID,
    TOKENIZERS,
    UNK,
    UNK_ID,
    token_bytes,
)

__all__ = ["NGramConfig", "NGramLM", "SMOOTHINGS"]

SMOOTHINGS = ("mle", "add_k", "jelinek_mercer", "stupid_backoff", "kneser_ney",
              "modified_kneser_ney")


# ---- the model ---------------------------------------------------------------------------------
@dataclass
class NGramConfig:
    order: int = 3                         # N: predict from the N-1 previous tokens
    smoothing: str = "modified_kneser_ney"  # one of SMOOTHINGS
    k: float = 1.0                         # add_k pseudo-count (1 = Laplace)
    discount: float | None = None          # kneser_ney: fixed D instead of n1/(n1+2n2)
    backoff: float = 0.4                   # stupid_backoff factor
    min_count: int = 1                     # training tokens seen fewer times become <unk>
    max_vocab: int | None = None           # keep only the most frequent tokens (None = all)
    tokenizer: str | None = None           # "words" or "bytes": enables fit_text/bits_per_byte

    def __post_init__(self) -> None:
        if not isinstance(self.order, int) or self.order < 1:
            raise ValueError(f"order={self.order!r} must be an integer >= 1 (1 = unigram)")
        if self.smoothing not in SMOOTHINGS:
            raise ValueError(f"smoothing={self.smoothing!r} is unknown; choose one of {SMOOTHINGS}")
        if self.k <= 0:
            raise ValueError(f"k={self.k} must be positive (k=1 is Laplace smoothing)")
        if self.discount is not None and not 0 < self.discount <= 1:
            raise ValueError(f"discount={self.discount} must be in (0, 1] or None (estimated): "
                             "with 0, unseen tokens get probability 0")
        if self.discount is not None and self.smoothing != "kneser_ney":
            raise ValueError(f"discount={self.discount} applies to smoothing='kneser_ney' only "
                             f"({self.smoothing!r} estimates its own or has none): drop it")
        if not 0 < self.backoff <= 1:
            raise ValueError(f"backoff={self.backoff} must be in (0, 1]; Brants et al. use 0.4")
        if self.min_count < 1:
            raise ValueError(f"min_count={self.min_count} must be >= 1")
        if self.max_vocab is not None and self.max_vocab < 1:
            raise ValueError(f"max_vocab={self.max_vocab} must be positive or None")
        if self.tokenizer is not None and self.tokenizer not in TOKENIZERS:
            raise ValueError(f"tokenizer={self.tokenizer!r}; choose one of {list(TOKENIZERS)}")


class NGramLM:
    """An n-gram language model over any hashable tokens (words, bytes, BPE ids).

    >>> lm = NGramLM(2, "kneser_ney").fit([["a", "b"], ["a", "c"]])
    >>> round(float(lm.next_distribution(["a"]).sum()), 9)
    1.0
    """

    def __init__(self, order: int = 3, smoothing: str = "modified_kneser_ney", **kwargs):
        self.config = NGramConfig(order=order, smoothing=smoothing, **kwargs)
        self.vocab: list[Hashable] = []
        self.index: dict[Hashable, int] = {}
        self.lambdas: np.ndarray | None = None       # Jelinek-Mercer weights, level 1..N
        self.discounts: list[tuple[float, float, float]] = []  # per level 1..N (KN)

    @property
    def order(self) -> int:
        return self.config.order

    @property
    def vocab_size(self) -> int:
        """|vocab| including `<s>`, `</s>` and `<unk>`."""
        return len(self.vocab)

    # ---- fitting ---------------------------------------------------------------------------
    def fit(self, sequences: Iterable[Sequence[Hashable]],
            heldout: Iterable[Sequence[Hashable]] | None = None) -> NGramLM:
        """Count n-grams in `sequences` (each padded with `<s>`.. and `</s>`).

        Jelinek-Mercer tunes its weights on `heldout`; when none is given it holds out every
        10th sequence (the last one if there are fewer than 10; with a single sequence, its
        last tenth, scored in its real context), tunes, then recounts on everything.
        """
        sequences = [list(s) for s in sequences]
        if not any(sequences):
            raise ValueError("fit needs at least one non-empty sequence")
        counts = Counter(tok for s in sequences for tok in s)
        kept = [t for t, c in counts.most_common(self.config.max_vocab) if c >= self.config.min_count
                and t not in (BOS, EOS, UNK)]
        self.vocab = [BOS, EOS, UNK, *kept]
        self.index = {t: i for i, t in enumerate(self.vocab)}
        self._fit_spelling(counts)
        if self.config.smoothing == "jelinek_mercer":
            if heldout is None:
                train, held, skip = split_heldout(sequences)
                self._count(train)
                self._tune_lambdas(held, skip)
            else:
                heldout = [list(s) for s in heldout]
                if not any(heldout):
                    raise ValueError("heldout has no tokens to tune Jelinek-Mercer's weights on: "
                                     "pass non-empty sequences, or None to hold out part of "
                                     "the training data")
                self._count(sequences)
                self._tune_lambdas(heldout)
                return self
        self._count(sequences)
        return self

    def fit_text(self, text: str) -> NGramLM:
        """Fit on one document, split by the configured tokenizer."""
        return self.fit([self._tokenizer()(text)])

    def _tokenizer(self) -> Callable[[str], list]:
        if self.config.tokenizer is None:
            raise ValueError("this model has no tokenizer; build it with tokenizer='words' or "
                             "'bytes' to fit or score raw text")
        return TOKENIZERS[self.config.tokenizer]

    def _encode(self, sequences: list[list]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Padded id array, positions of predicted tokens, and which of those are `<unk>`."""
        pad, index = self.order - 1, self.index
        seg = np.fromiter((len(s) + pad + 1 for s in sequences), np.int64, len(sequences))
        ends = np.cumsum(seg)                                  # one past each segment's </s>
        ids = np.full(int(ends[-1]) if len(ends) else 0, BOS_ID, np.int64)
        body = np.ones(len(ids), bool)
        body[((ends - seg)[:, None] + np.arange(pad)).ravel()] = False   # the <s> padding
        ev = np.flatnonzero(body)
        body[ends - 1] = False                                 # the </s> positions
        flat = list(itertools.chain.from_iterable(sequences))
        ids[body] = np.fromiter(map(index.get, flat, itertools.repeat(UNK_ID)), np.int64, len(flat))
        ids[ends - 1] = EOS_ID
        return ids, ev, ids[ev] == UNK_ID

    def _count(self, sequences: list[list]) -> None:
        t, ev, _ = self._encode(sequences)
        kn = "kneser_ney" in self.config.smoothing
        self.counts = NGramCounts(t, ev, len(self.vocab), self.order, continuation=kn)
        self.discounts = []
        if kn:
            for n in range(1, self.order + 1):
                coc = count_of_counts(self.counts.level_counts[n])
                d = (kneser_ney_discounts(coc) if self.config.smoothing == "modified_kneser_ney"
                     else (self.config.discount,) * 3 if self.config.discount is not None
                     else (absolute_discount(coc),) * 3)
                self.discounts.append(d)

    def _fit_spelling(self, counts: Counter) -> None:
        """Byte unigram (add-one, with an end-of-token symbol) to spell OOV tokens."""
        data = b"".join(token_bytes(tok) * c for tok, c in counts.items())
        freq = np.ones(257)
        freq[:256] += np.bincount(np.frombuffer(data, np.uint8), minlength=256)
        freq[256] += sum(counts.values())
        self._spell_logp = np.log(freq / freq.sum())

    # ---- the recursion, vectorised over events -----------------------------------------------
    def _level(self, n: int, cid: np.ndarray, c: np.ndarray, seen: np.ndarray):
        """(alpha, gamma) of level n for counts c of (h, w) in contexts cid."""
        sm, safe = self.config.smoothing, np.maximum(cid, 0)
        total = np.where(seen, self.counts.ctx_total[n][safe], 1.0)
        if sm == "mle":
            return np.where(seen, c / total, 0.0), np.where(seen, 0.0, 1.0)
        if sm == "jelinek_mercer":
            lam = np.where(seen, self.lambdas[n - 1], 0.0)
            return lam * c / total, 1.0 - lam
        d = np.asarray(self.discounts[n - 1])
        dc = np.where(c >= 3, d[2], np.where(c == 2, d[1], d[0]))
        alpha = np.where(seen, np.maximum(c - dc, 0.0) / total, 0.0)
        nr = self.counts.ctx_nr[n][:, safe]
        gamma = np.where(seen, (d[0] * nr[0] + d[1] * nr[1] + d[2] * nr[2]) / total, 1.0)
        return alpha, gamma

    def _event_probs(self, t: np.ndarray, ev: np.ndarray, levels: int | None = None) -> np.ndarray:
        levels = self.order if levels is None else levels
        V, sm = len(self.vocab), self.config.smoothing
        ctx = self.counts.context_ids(t, ev, levels)
        top = valid_levels(t, ev, levels)
        w = t[ev]
        p = np.full(len(ev), 1.0 / (V - 1))
        for n in range(1, levels + 1):
            cid = ctx[n - 1]
            seen = cid >= 0
            c = self.counts.gram_count(n, cid, w)
            if sm == "add_k":
                total = self.counts.total(n, cid, 0.0)
                new = (c + self.config.k) / (total + self.config.k * (V - 1))
                p = np.where(n == top, new, p)
                continue
            if sm == "stupid_backoff":
                total = self.counts.total(n, cid, 1.0)
                new = np.where(c > 0, c / total, self.config.backoff * p)
            else:
                alpha, gamma = self._level(n, cid, c, seen)
                new = alpha + gamma * p
            p = np.where(n <= top, new, p)
        return np.where(w == BOS_ID, 0.0, p)

    def _tune_lambdas(self, heldout: list[list], skip: list[int] | None = None) -> None:
        """Jelinek-Mercer's weights by EM on held-out sequences; the first skip[i] tokens of
        sequence i are context only, not scored."""
        t, ev, _ = self._encode(heldout)
        if skip is not None:
            ev = ev[np.concatenate([np.arange(len(s) + 1) >= k for s, k in zip(heldout, skip,
                                                                              strict=True)])]
        self.lambdas = tune_jelinek_mercer(self.counts, t, ev)

    # ---- public queries -----------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not self.vocab:
            raise ValueError("the model is not fitted yet; call fit(sequences) first")

    def count(self, ngram: Sequence[Hashable]) -> int:
        """The count the model uses for `ngram` (h..., w) at order len(ngram): the raw count,
        or for (modified) Kneser-Ney below the highest order the continuation count N1+(. h w).
        """
        self._check_fitted()
        n = len(ngram)
        if not 1 <= n <= self.order:
            raise ValueError(f"an n-gram of length {n} is outside orders 1..{self.order}")
        ids = np.asarray([self.index.get(t, UNK_ID) for t in ngram], np.int64)
        cid = self.counts.context_ids(ids, np.asarray([n - 1]), n)[n - 1]
        return int(self.counts.gram_count(n, cid, ids[-1:])[0])

    def _context(self, context: Sequence[Hashable] | None) -> list[int]:
        context = [BOS] * (self.order - 1) if context is None else list(context)
        keep = context[len(context) - (self.order - 1):] if self.order > 1 else []
        return [self.index.get(tok, UNK_ID) for tok in keep]

    def num_ngrams(self, n: int) -> int:
        """How many distinct n-grams (h, w) of order n occurred in training."""
        self._check_fitted()
        if not 1 <= n <= self.order:
            raise ValueError(f"n={n} is outside orders 1..{self.order}")
        return int(np.count_nonzero(self.counts.counts[n])) if len(self.counts.gram_keys[n]) else 0

    def hit_rate(self, sequences: Iterable[Sequence[Hashable]]) -> np.ndarray:
        """For n = 1..N, the fraction of tokens in `sequences` whose n-gram (the token and its
        n-1 predecessors, not reaching past `<s>`) occurred in training."""
        self._check_fitted()
        t, ev, _ = self._encode([list(s) for s in sequences])
        ctx = self.counts.context_ids(t, ev, self.order)
        top = valid_levels(t, ev, self.order)
        rates = []
        for n in range(1, self.order + 1):
            full = top >= n
            hit = self.counts.gram_count(n, ctx[n - 1], t[ev]) > 0
            rates.append((hit & full).sum() / max(full.sum(), 1))
        return np.asarray(rates)

    def prob(self, token: Hashable, context: Sequence[Hashable] | None = None) -> float:
        """P(token | context). The context is taken literally (pass `<s>` tokens for a sequence
        start; None means a sequence start); only its last N-1 tokens matter."""
        self._check_fitted()
        ctx = self._context(context)
        t = np.asarray(ctx + [self.index.get(token, UNK_ID)], np.int64)
        return float(self._event_probs(t, np.asarray([len(ctx)]), len(ctx) + 1)[0])

    def next_distribution(self, context: Sequence[Hashable] | None = None) -> np.ndarray:
        """The full distribution over `self.vocab` (float64, shape (vocab_size,)) after context."""
        self._check_fitted()
        ctx, V, sm = self._context(context), len(self.vocab), self.config.smoothing
        t, ev = np.asarray(ctx + [0], np.int64), np.asarray([len(ctx)])
        levels = int(valid_levels(t, ev, len(ctx) + 1)[0])
        cids = self.counts.context_ids(t, ev, levels)
        p = np.full(V, 1.0 / (V - 1))
        p[BOS_ID] = 0.0
        for n in range(1, levels + 1):
            if sm == "add_k" and n < levels:
                continue
            cid = int(cids[n - 1][0])
            lo, hi = np.searchsorted(self.counts.gram_keys[n], [max(cid, 0) * V, (max(cid, 0) + 1) * V])
            if cid < 0:
                lo = hi = 0
            words, c = self.counts.gram_keys[n][lo:hi] % V, self.counts.counts[n][lo:hi].astype(np.float64)
            if sm == "add_k":
                total = self.counts.ctx_total[n][cid] if cid >= 0 else 0.0
                p = np.full(V, self.config.k / (total + self.config.k * (V - 1)))
                p[words] += c / (total + self.config.k * (V - 1))
            elif sm == "stupid_backoff":
                p = self.config.backoff * p
                if cid >= 0:
                    p[words] = c / self.counts.ctx_total[n][cid]
            else:
                seen = np.full(len(c), cid >= 0)
                alpha, _ = self._level(n, np.full(len(c), cid), c, seen)
                _, gamma = self._level(n, np.asarray([cid]), np.zeros(1), np.asarray([cid >= 0]))
                p = gamma[0] * p
                p[words] += alpha
            p[BOS_ID] = 0.0
        return p

    def log_probs(self, sequences: Iterable[Sequence[Hashable]]) -> np.ndarray:
        """Natural-log probability of every predicted token (each sequence's tokens + `</s>`)."""
        self._check_fitted()
        t, ev, _ = self._encode([list(s) for s in sequences])
        with np.errstate(divide="ignore"):
            return np.log(self._event_probs(t, ev))

    def perplexity(self, tokens: Sequence[Hashable] | Iterable[Sequence[Hashable]]) -> float:
        """exp(mean negative log-likelihood) over the tokens (+ `</s>`), `<unk>` counted as a
        token (the closed-vocabulary convention of the PTB numbers). Accepts one sequence or a
        list of sequences; a list of strings is one sequence of string tokens (words), so pass
        [list(s) for s in texts] for character sequences. inf when a token gets probability 0
        (MLE)."""
        return float(np.exp(-self.log_probs(_as_sequences(tokens)).mean()))

    def nll_bits(self, text: str) -> float:
        """-log2 P(text): the tokens of `text` (one sequence) + `</s>`, plus, for each token
        outside the vocabulary, its spelling under the byte unigram model."""
        tokens = self._tokenizer()(text)
        t, ev, oov = self._encode([tokens])
        with np.errstate(divide="ignore"):
            nats = -np.log(self._event_probs(t, ev)).sum()
        for tok in (tok for tok, o in zip(tokens, oov, strict=False) if o):
            b = np.frombuffer(token_bytes(tok), np.uint8)
            nats -= self._spell_logp[b].sum() + self._spell_logp[256]
        return float(nats / math.log(2))

    def bits_per_byte(self, text: str) -> float:
        """-log2 P(text) / (UTF-8 bytes of text): comparable across tokenizations."""
        n_bytes = len(text.encode("utf-8"))
        if n_bytes == 0:
            raise ValueError("text is empty: bits per byte needs at least one byte")
        return self.nll_bits(text) / n_bytes

    def sample(self, context: Sequence[Hashable] | None = None, n: int = 20,
               rng: np.random.Generator | int | None = None) -> list[Hashable]:
        """Draw n tokens after `context` (None = a sequence start). After `</s>` the context
        restarts with `<s>` padding. Returns the new tokens only."""
        rng = np.random.default_rng(rng)
        ctx = [BOS] * (self.order - 1) if context is None else list(context)
        out: list[Hashable] = []
        for _ in range(n):
            p = self.next_distribution(ctx)
            tok = self.vocab[int(rng.choice(len(p), p=p / p.sum()))]
            out.append(tok)
            ctx = [BOS] * (self.order - 1) if tok == EOS else ctx + [tok]
        return out


def _as_sequences(tokens) -> list[list]:
    tokens = list(tokens)
    if tokens and isinstance(tokens[0], (list, tuple, np.ndarray)):
        return [list(s) for s in tokens]
    return [tokens]
