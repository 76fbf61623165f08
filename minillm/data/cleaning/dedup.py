"""Exact deduplication: drop a document whose normalised text hashes like an earlier one's.

The cheapest dedup stage of every pipeline (e.g. RefinedWeb, Penedo et al. 2023,
arXiv:2306.01116; Lee et al. 2022, arXiv:2107.06499, §4 use exact matching beside MinHash).
Normalisation decides what "the same" means; here:

    normalize(d) = collapse every whitespace run to one space, strip, lower-case (NFKC first)
    key(d) = SHA-1(normalize(d) as UTF-8)

so a copy that differs only in trailing blank lines or capitals is caught. The first occurrence
in crawl order is kept.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Sequence

__all__ = ["exact_duplicates", "normalize_text", "text_key"]

_SPACE = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """NFKC, whitespace runs -> one space, stripped, lower-cased."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text)).strip().lower()


def text_key(text: str, normalize: bool = True) -> str:
    """The SHA-1 hex digest of the (normalised) text's UTF-8 bytes."""
    return hashlib.sha1((normalize_text(text) if normalize else text).encode("utf-8")).hexdigest()


def exact_duplicates(texts: Sequence[str], normalize: bool = True) -> list[bool]:
    """Per text, True when an earlier text has the same key (drop it; keep the first).

    Args:
        texts: documents in order.
        normalize: compare normalised texts (default) or the raw strings.
    """
    seen: set[str] = set()
    out = []
    for t in texts:
        k = text_key(t, normalize)
        out.append(k in seen)
        seen.add(k)
    return out
