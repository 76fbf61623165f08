"""Tokens for the n-gram models: the padding symbols and three ways to cut a text.

- `tokenize_words`: GPT-2-style lossless words (a word or punctuation mark carries its leading
  space; `"".join(tokenize_words(t)) == t`), for bits per byte;
- `tokenize_bytes`: UTF-8 byte values, the ids of `minillm.tokenizers.ByteTokenizer`;
- `ptb_sentences`: Mikolov's Penn-Treebank-like preprocessing, lossy, for perplexity tables.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable

import numpy as np

__all__ = ["BOS", "EOS", "TOKENIZERS", "UNK", "ptb_sentences", "token_bytes", "tokenize_bytes",
           "tokenize_words"]

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
BOS_ID, EOS_ID, UNK_ID = 0, 1, 2   # their ids in every model's vocabulary

# GPT-2-style lossless word split: a word or a punctuation mark carries its leading space, "\n"
# is its own token, other runs of spaces stay whole. "".join(tokenize_words(t)) == t.
_WORDS = re.compile(r"\n| ?\w+(?:'\w+)*| ?[^\w\s]|[^\S\n]+(?!\S)|[^\S\n]+")
_PTB_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)*")
_SENTENCE_END = re.compile(r"[.?!]+|\n[^\S\n]*\n")   # sentence punctuation or a blank line


def tokenize_words(text: str) -> list[str]:
    """Lossless word tokens: `tokenize_words("Hi, you.") == ["Hi", ",", " you", "."]`."""
    return _WORDS.findall(text)


def tokenize_bytes(text: str) -> list[int]:
    """UTF-8 byte values 0-255 (the same ids as `minillm.tokenizers.ByteTokenizer`)."""
    return list(text.encode("utf-8"))


TOKENIZERS: dict[str, Callable[[str], list]] = {"words": tokenize_words, "bytes": tokenize_bytes}


def ptb_sentences(text: str, unit: str = "line") -> list[list[str]]:
    """Penn-Treebank-like preprocessing (Mikolov's LM setup): lower-cased words without
    punctuation. Lossy: for perplexity, not bits per byte.

    unit="line": one sequence per non-empty line (a verse line, a speaker's name, a heading);
    unit="sentence": the PTB's unit, one sequence per sentence: the text is cut at ".", "?"
    and "!" and at blank lines, so a sentence runs across verse lines."""
    if unit == "line":
        chunks = text.lower().splitlines()
    elif unit == "sentence":
        chunks = _SENTENCE_END.split(text.lower())
    else:
        raise ValueError(f"unit={unit!r}: choose 'line' or 'sentence'")
    return [words for chunk in chunks if (words := _PTB_WORD.findall(chunk))]


def token_bytes(token: Hashable) -> bytes:
    """The bytes a token spells: bytes as they are, a byte id (0-255) as that byte, anything
    else as the UTF-8 of its `str`."""
    if isinstance(token, bytes):
        return token
    if isinstance(token, (int, np.integer)) and 0 <= token < 256:
        return bytes([int(token)])
    return str(token).encode("utf-8")
