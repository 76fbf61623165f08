"""Gopher's quality rules: cheap statistics of a document that flag text no one wrote for a
reader (Rae et al. 2021, arXiv:2112.11446, appendix A.1.1, "MassiveWeb" quality filter).

A document is removed when any rule fires (the thresholds are the paper's):

    rule                 fires when
    word_count           the document has < 50 or > 100,000 words
    mean_word_length     the mean word length is outside [3, 10] characters
    symbol_ratio         (# "#" + # ellipses "..." / "…") / words > 0.1
    bullet_lines         > 90% of lines start with a bullet ("•", "*", "-", "‣", "·")
    ellipsis_lines       > 30% of lines end with an ellipsis
    alphabetic_words     < 80% of words contain at least one alphabetic character
    stop_words           fewer than 2 of the: be, to, of, and, that, have, with
    duplicate_lines      > 30% of lines repeat an earlier line of the document (the
                         repetition rules, A.1.1)
    top_ngram            the most frequent word 2-gram covers > 20% of the characters
                         (3-gram: 18%, 4-gram: 16%)

Words are runs of non-space characters (the paper does not fix a tokenizer; a word's length is
its number of characters, punctuation included). `gopher_rules` returns the rules that fired;
an empty list keeps the document.

Departures: the paper's duplicate-paragraph rules and the duplicate 5- to 10-gram fractions
are left out (the duplicate-line and top n-gram rules cover the crawl's spam); "stop words"
counts distinct words, case-insensitively, as the paper's list is lower-case; a duplicate line
is a copy of an earlier line (its first occurrence is not counted).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

__all__ = ["GOPHER_RULES", "STOP_WORDS", "GopherConfig", "gopher_keep", "gopher_rules",
           "gopher_stats"]

GOPHER_RULES = ("word_count", "mean_word_length", "symbol_ratio", "bullet_lines",
                "ellipsis_lines", "alphabetic_words", "stop_words", "duplicate_lines",
                "top_ngram")
STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")
BULLETS = ("•", "*", "-", "‣", "·", "●", "◦")
ELLIPSES = ("...", "…")


@dataclass
class GopherConfig:
    min_words: int = 50
    max_words: int = 100_000
    min_mean_word_length: float = 3.0
    max_mean_word_length: float = 10.0
    max_symbol_ratio: float = 0.1
    max_bullet_lines: float = 0.9
    max_ellipsis_lines: float = 0.3
    min_alphabetic_words: float = 0.8
    min_stop_words: int = 2
    max_duplicate_lines: float = 0.3
    max_top_ngram: dict[int, float] = field(default_factory=lambda: {2: 0.20, 3: 0.18, 4: 0.16})

    def __post_init__(self) -> None:
        if not 0 <= self.min_words <= self.max_words:
            raise ValueError(f"min_words={self.min_words}, max_words={self.max_words}: need "
                             "0 <= min_words <= max_words")
        if not 0 < self.min_mean_word_length <= self.max_mean_word_length:
            raise ValueError(f"min_mean_word_length={self.min_mean_word_length} and "
                             f"max_mean_word_length={self.max_mean_word_length} need "
                             "0 < min <= max")
        for name in ("max_bullet_lines", "max_ellipsis_lines", "min_alphabetic_words",
                     "max_duplicate_lines"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name}={getattr(self, name)} is a share: put it in [0, 1]")
        for n, share in self.max_top_ngram.items():
            if n < 1 or not 0 <= share <= 1:
                raise ValueError(f"max_top_ngram={self.max_top_ngram}: keys are n >= 1, values "
                                 "shares in [0, 1]")


def gopher_stats(text: str) -> dict[str, float]:
    """The statistics the rules threshold (see the module docstring).

    Returns:
        {"words", "mean_word_length", "symbol_ratio", "bullet_lines", "ellipsis_lines",
        "alphabetic_words", "stop_words", "duplicate_lines", "top_2gram", "top_3gram",
        "top_4gram"}; shares are in [0, 1]; on a text without words, word statistics are 0.
    """
    words = text.split()
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    n_words, n_lines = len(words), max(len(lines), 1)
    symbols = text.count("#") + sum(text.count(e) for e in ELLIPSES)
    lower = {w.lower().strip(".,;:!?'\"()[]") for w in words}
    line_counts = Counter(lines)
    stats = {
        "words": n_words,
        "mean_word_length": sum(map(len, words)) / n_words if n_words else 0.0,
        "symbol_ratio": symbols / n_words if n_words else 0.0,
        "bullet_lines": sum(line.startswith(BULLETS) for line in lines) / n_lines,
        "ellipsis_lines": sum(line.endswith(ELLIPSES) for line in lines) / n_lines,
        "alphabetic_words": (sum(any(c.isalpha() for c in w) for w in words) / n_words
                             if n_words else 0.0),
        "stop_words": sum(w in lower for w in STOP_WORDS),
        "duplicate_lines": sum(c - 1 for c in line_counts.values()) / n_lines,
    }
    chars = sum(map(len, words))
    for n in (2, 3, 4):
        grams = Counter(tuple(words[i:i + n]) for i in range(n_words - n + 1))
        if grams and chars:
            gram, count = grams.most_common(1)[0]
            stats[f"top_{n}gram"] = count * sum(map(len, gram)) / chars
        else:
            stats[f"top_{n}gram"] = 0.0
    return stats


def gopher_rules(text: str, config: GopherConfig | None = None) -> list[str]:
    """The Gopher rules that `text` breaks, in `GOPHER_RULES` order (empty: keep it).

    Args:
        text: one document.
        config: the thresholds (default: the paper's).

    Returns:
        Names from `GOPHER_RULES`.
    """
    c = config or GopherConfig()
    s = gopher_stats(text)
    fired = {
        "word_count": not c.min_words <= s["words"] <= c.max_words,
        "mean_word_length": not (c.min_mean_word_length <= s["mean_word_length"]
                                 <= c.max_mean_word_length),
        "symbol_ratio": s["symbol_ratio"] > c.max_symbol_ratio,
        "bullet_lines": s["bullet_lines"] > c.max_bullet_lines,
        "ellipsis_lines": s["ellipsis_lines"] > c.max_ellipsis_lines,
        "alphabetic_words": s["alphabetic_words"] < c.min_alphabetic_words,
        "stop_words": s["stop_words"] < c.min_stop_words,
        "duplicate_lines": s["duplicate_lines"] > c.max_duplicate_lines,
        "top_ngram": any(s[f"top_{n}gram"] > share for n, share in c.max_top_ngram.items()
                         if n in (2, 3, 4)),
    }
    return [rule for rule in GOPHER_RULES if fired[rule]]


def gopher_keep(text: str, config: GopherConfig | None = None) -> bool:
    """True when no Gopher rule fires on `text`."""
    return not gopher_rules(text, config)
