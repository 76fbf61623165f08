"""Regex pre-tokenization: the split patterns of GPT-2 and GPT-4 (cl100k), and special tokens.

Byte-level BPE never merges across the boundaries of the chunks a regex cuts the text into
(Radford et al. 2019, "Language Models are Unsupervised Multitask Learners", section 2.2): GPT-2
saw BPE merge "dog", "dog." and "dog!" into separate tokens and prevented merges across
character categories. The text is first split into chunks (letters with an optional leading
space, digit runs, punctuation runs, whitespace) and BPE runs inside each chunk.

    GPT-2  : 's|'t|'re|'ve|'m|'ll|'d | ?letters | ?digits | ?other | trailing/plain whitespace
    cl100k : case-insensitive contractions, letters with one optional non-letter prefix,
             digits in groups of at most 3, punctuation plus trailing newlines, whitespace

Both are written with possessive quantifiers (`++`, `?+`) exactly as tiktoken ships them, so
they need the third-party `regex` module (Python's `re` has no `\\p{L}`).

Special tokens (e.g. "<|endoftext|>") are matched *before* the pattern: the text is cut at
each allowed special token, which becomes one id, and the pattern runs on the pieces between.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import regex

__all__ = ["GPT2_PATTERN", "GPT4_PATTERN", "PATTERNS", "resolve_pattern", "split_special",
           "special_regex"]

# tiktoken's r50k/gpt2 pattern: equivalent to the original release's, but faster.
GPT2_PATTERN = (
    r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
)
# tiktoken's cl100k_base pattern (GPT-3.5 / GPT-4).
GPT4_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
PATTERNS = {"gpt2": GPT2_PATTERN, "gpt4": GPT4_PATTERN, "cl100k": GPT4_PATTERN}


def resolve_pattern(pattern: str) -> str:
    """A pattern name ("gpt2", "gpt4", "cl100k") or a regex string -> the regex string.

    Raises:
        ValueError: the string is neither a known name nor a valid `regex` pattern.
    """
    if pattern in PATTERNS:
        return PATTERNS[pattern]
    try:
        regex.compile(pattern)
    except regex.error as e:
        raise ValueError(f"pattern={pattern!r} is neither one of {sorted(PATTERNS)} nor a valid "
                         f"regex ({e}); pass a name or a `regex`-module pattern") from e
    return pattern


def special_regex(specials: Iterable[str]) -> regex.Pattern | None:
    """One alternation of the escaped special tokens, longest first (so that the longer of two
    specials sharing a prefix wins); None if there are none."""
    specials = sorted(set(specials), key=lambda s: (-len(s), s))
    if "" in specials:
        raise ValueError("a special token is the empty string, which would match between every "
                         "two characters: remove it")
    if not specials:
        return None
    return regex.compile("|".join(regex.escape(s) for s in specials))


def split_special(text: str, special_re: regex.Pattern | None) -> Iterator[tuple[str, bool]]:
    """Yield (piece, is_special) in order: the specials matched by `special_re` and the
    ordinary text between them (empty pieces are skipped)."""
    if special_re is None:
        if text:
            yield text, False
        return
    pos = 0
    for m in special_re.finditer(text):
        if m.start() > pos:
            yield text[pos:m.start()], False
        yield m.group(), True
        pos = m.end()
    if pos < len(text):
        yield text[pos:], False
