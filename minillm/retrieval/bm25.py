"""BM25: rank documents by the query words they contain, weighted by rarity and saturated by
repetition (Robertson & Zaragoza 2009, "The Probabilistic Relevance Framework: BM25 and
Beyond"; the variants as compared by Kamphuis et al. 2020, ECIR, "Which BM25 Do You Mean?").

    score(D, Q) = sum_{q in Q} idf(q) * tf(q, D) / (tf(q, D) + k1 (1 - b + b |D| / avgdl))

tf(q, D) is how often q occurs in D, |D| the document's length in tokens, avgdl the mean
length; k1 sets how fast repetition saturates, b how much long documents are discounted. The
`method` picks the idf and whether the (k1 + 1) factor of the original is kept:

| method | idf(q) | tf factor |
|---|---|---|
| "lucene" (default) | log(1 + (N - df + 0.5) / (df + 0.5)) | as above (Lucene >= 8) |
| "robertson" | log((N - df + 0.5) / (df + 0.5)), floored at 0 | as above |
| "atire" | log(N / df) | times (k1 + 1) |

N is the number of documents and df(q) how many contain q. Dropping (k1 + 1) scales every
score by one constant, so rankings do not change. These are the definitions of `bm25s`
(same names, k1=1.5, b=0.75 by default), and the scores equal its scores (tested). A query
word counts once per occurrence in the query; words not in any document add nothing.
Tokenisation: `word_tokens` (bm25s's pattern, without stop words or stemming), or any
callable, or pre-tokenised documents and queries (lists of strings).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from minillm.retrieval.base import check_k, word_tokens

__all__ = ["BM25", "BM25Config", "bm25_idf"]

METHODS = ("lucene", "robertson", "atire")


@dataclass(frozen=True)
class BM25Config:
    k1: float = 1.5            # term-frequency saturation (0: presence only)
    b: float = 0.75            # length normalisation (0: none, 1: full)
    method: str = "lucene"     # "lucene", "robertson" or "atire" (see the module docstring)

    def __post_init__(self) -> None:
        if not (isinstance(self.k1, int | float) and math.isfinite(self.k1) and self.k1 >= 0):
            raise ValueError(f"k1={self.k1!r} must be a finite number >= 0 (typically 1.2-2)")
        if not (isinstance(self.b, int | float) and 0 <= self.b <= 1):
            raise ValueError(f"b={self.b!r} must be in [0, 1] (typically 0.75)")
        if self.method not in METHODS:
            raise ValueError(f"method={self.method!r} must be one of {METHODS}")


def bm25_idf(df: int, n_docs: int, method: str = "lucene") -> float:
    """The inverse document frequency of a word in `df` of `n_docs` documents.

    Args:
        df: documents that contain the word (>= 1).
        n_docs: documents in the collection.
        method: "lucene", "robertson" (floored at 0) or "atire".

    Returns:
        idf in nats.
    """
    if method == "lucene":
        return math.log(1 + (n_docs - df + 0.5) / (df + 0.5))
    if method == "robertson":
        return math.log(max(1.0, (n_docs - df + 0.5) / (df + 0.5)))
    if method == "atire":
        return math.log(n_docs / df)
    raise ValueError(f"method={method!r} must be one of {METHODS}")


class BM25:
    """A BM25 index over a fixed list of documents.

    Args:
        documents: texts, or lists of tokens (already tokenised).
        config: k1, b and the variant (default `BM25Config()`).
        tokenize: text -> tokens, for texts and text queries (default `word_tokens`).
    """

    def __init__(self, documents: Sequence[str | Sequence[str]], config: BM25Config | None = None,
                 tokenize: Callable[[str], list[str]] = word_tokens):
        self.config = config or BM25Config()
        self.tokenize = tokenize
        docs = [self._tokens(d) for d in documents]
        if not docs:
            raise ValueError("documents is empty: give at least one document to index")
        lengths = np.array([len(d) for d in docs], dtype=np.float64)
        if lengths.sum() == 0:
            raise ValueError("every document is empty after tokenisation: nothing to index")
        self.n_docs = len(docs)
        k1, b = self.config.k1, self.config.b
        norm = k1 * (1 - b + b * lengths / lengths.mean())          # (N,) per document
        postings: dict[str, list[tuple[int, int]]] = {}
        for i, doc in enumerate(docs):
            for word, tf in Counter(doc).items():
                postings.setdefault(word, []).append((i, tf))
        # eager index (as bm25s): word -> (documents containing it, their score for it)
        self.index: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        scale = k1 + 1 if self.config.method == "atire" else 1.0
        for word, hits in postings.items():
            ids = np.array([i for i, _ in hits], dtype=np.int64)
            tf = np.array([t for _, t in hits], dtype=np.float64)
            idf = bm25_idf(len(hits), self.n_docs, self.config.method)
            self.index[word] = (ids, idf * scale * tf / (tf + norm[ids]))

    def _tokens(self, text: str | Sequence[str]) -> list[str]:
        if isinstance(text, str):
            return self.tokenize(text)
        if not all(isinstance(t, str) for t in text):
            raise ValueError("a pre-tokenised document or query must be a list of strings")
        return list(text)

    def scores(self, query: str | Sequence[str]) -> np.ndarray:
        """BM25 score of every document for `query`, (N,) float64.

        Args:
            query: text (tokenised like the documents) or a list of tokens.
        """
        out = np.zeros(self.n_docs, dtype=np.float64)
        for word in self._tokens(query):
            if word in self.index:
                ids, contribution = self.index[word]
                out[ids] += contribution
        return out

    def search(self, query: str | Sequence[str], k: int) -> list[tuple[int, float]]:
        """The k highest-scoring documents (fewer if the collection is smaller), best first,
        ties to the lower id.

        Args:
            query: text or a list of tokens.
            k: how many.

        Returns:
            [(doc_id, score), ...].
        """
        check_k(k)
        scores = self.scores(query)
        order = np.lexsort((np.arange(self.n_docs), -scores))[:k]
        return [(int(i), float(scores[i])) for i in order]
