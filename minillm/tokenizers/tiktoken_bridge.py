"""Files and interop in tiktoken's format.

A tiktoken rank file has one line per token, `base64(token bytes) rank`, in rank order; that
is all `tiktoken.load.load_tiktoken_bpe` reads. The pattern and special tokens are not in it,
so `save_tokenizer` writes a small JSON beside it:

    folder/tokenizer.tiktoken    base64 token, space, rank      (one line per token)
    folder/tokenizer.json        {"type": "bpe", "name", "pattern", "special_tokens",
                                  "ranks_file": "tokenizer.tiktoken", "n_ranks"}

`to_tiktoken` hands the same three things to `tiktoken.Encoding` (Rust, fast), and
`encoding_parts` reads them back out of any encoding, e.g. cl100k_base; minillm then recovers
the merges from the ranks when asked (`BPETokenizer.merges`).

This module knows formats only, never `BPETokenizer` (it sits below `bpe`, which uses it: no
import cycle): `to_tiktoken` takes anything with `ranks`, `pattern`, `special_tokens` and `name`.
The folder functions `save_tokenizer` / `load_tokenizer` and `from_tiktoken` live in `bpe`.
"""

from __future__ import annotations

import base64
from pathlib import Path

from minillm.io import CheckpointError, atomic_write_bytes

__all__ = ["RANKS_FILE", "CONFIG_FILE", "dump_ranks", "encoding_parts", "parse_ranks",
           "save_tiktoken_ranks", "load_tiktoken_ranks", "to_tiktoken"]

RANKS_FILE = "tokenizer.tiktoken"
CONFIG_FILE = "tokenizer.json"


def dump_ranks(ranks: dict[bytes, int]) -> str:
    """Rank table -> the text of a tiktoken rank file.

    Args:
        ranks: token bytes -> id.

    Returns:
        One `base64 rank` line per token, in rank order.
    """
    return "".join(f"{base64.b64encode(tok).decode('ascii')} {rank}\n"
                   for tok, rank in sorted(ranks.items(), key=lambda kv: kv[1]))


def parse_ranks(text: str) -> dict[bytes, int]:
    """The text of a tiktoken rank file -> rank table (blank lines ignored).

    Args:
        text: the file's text.

    Returns:
        token bytes -> id.

    Raises:
        ValueError: a line is not `base64 rank` (its number is named).
    """
    ranks = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token, validate=True)] = int(rank)
        except ValueError as e:
            raise ValueError(f"line {n} of the rank file is not 'base64 rank': {line[:60]!r}"
                             ) from e
    return ranks


def save_tiktoken_ranks(ranks: dict[bytes, int], path: str | Path) -> None:
    """Write a tiktoken rank file atomically.

    Args:
        ranks: token bytes -> id.
        path: the file to write.
    """
    atomic_write_bytes(path, dump_ranks(ranks).encode("ascii"))


def load_tiktoken_ranks(path: str | Path) -> dict[bytes, int]:
    """Read a tiktoken rank file.

    Args:
        path: the file.

    Returns:
        token bytes -> id.

    Raises:
        CheckpointError: the file is missing or not a rank file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: a BPE tokenizer folder needs its rank file")
    try:
        return parse_ranks(path.read_text(encoding="ascii"))
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is corrupt ({e}); save the tokenizer again") from e


def to_tiktoken(tokenizer, name: str | None = None):
    """A `tiktoken.Encoding` with the tokenizer's ranks, pattern and special tokens.

    Args:
        tokenizer: a `BPETokenizer` (anything with ranks, pattern, special_tokens, name).
        name: the encoding's name (default: the tokenizer's).

    Returns:
        A `tiktoken.Encoding` giving the same ids.
    """
    import tiktoken

    return tiktoken.Encoding(name=name or tokenizer.name, pat_str=tokenizer.pattern,
                             mergeable_ranks=dict(tokenizer.ranks),
                             special_tokens=dict(tokenizer.special_tokens))


def encoding_parts(encoding) -> tuple[dict[bytes, int], str, dict[str, int], str]:
    """What a `tiktoken.Encoding` is made of: (ranks, pattern, special_tokens, name).

    Reads tiktoken's `_mergeable_ranks`, `_pat_str` and `_special_tokens` (the constructor's
    arguments, which tiktoken keeps under these names).
    """
    return (encoding._mergeable_ranks, encoding._pat_str, dict(encoding._special_tokens),
            encoding.name)
