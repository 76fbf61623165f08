"""What every retriever shares: `search(query, k) -> [(doc_id, score), ...]`, best first.

A retriever ranks the documents of a fixed collection for a query. BM25 (`bm25`) scores word
overlap; a dense retriever (`dense`) compares embeddings. Both answer the same call, so a RAG
loop takes either:

    for doc_id, score in retriever.search("who says 'to be or not to be'?", k=3): ...

Scores are "higher is better" for every retriever (a distance is returned negated), and ties
go to the lower document id, so a ranking is deterministic.
"""

from __future__ import annotations

import re
from typing import Protocol, runtime_checkable

__all__ = ["Retriever", "word_tokens"]

# the pattern of scikit-learn's CountVectorizer and bm25s: words of two or more word characters
_WORD = re.compile(r"(?u)\b\w\w+\b")


@runtime_checkable
class Retriever(Protocol):
    def search(self, query, k: int) -> list[tuple[int, float]]:
        """The k best documents for `query`: (doc_id, score) pairs, highest score first."""
        ...


def word_tokens(text: str) -> list[str]:
    """Lower-cased words of two or more characters (`\\b\\w\\w+\\b`): bm25s's default
    tokenisation without its stop-word list and stemmer.

    >>> word_tokens("To be, or not to be: I am.")
    ['to', 'be', 'or', 'not', 'to', 'be', 'am']
    """
    return _WORD.findall(text.lower())


def check_k(k: int) -> int:
    """`k` if it is a positive integer, else ValueError."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k={k!r} must be a positive integer (how many results)")
    return k
