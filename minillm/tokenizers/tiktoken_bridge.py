"""Files and interop in tiktoken's format.

A tiktoken rank file has one line per token, `base64(token bytes) rank`, in rank order; that
is all `tiktoken.load.load_tiktoken_bpe` reads. The pattern and special tokens are not in it,
so `save_tokenizer` writes a small JSON beside it:

    folder/tokenizer.tiktoken    base64 token, space, rank      (one line per token)
    folder/tokenizer.json        {"type": "bpe", "name", "pattern", "special_tokens",
                                  "ranks_file": "tokenizer.tiktoken", "n_ranks"}

`to_tiktoken` hands the same three things to `tiktoken.Encoding` (Rust, fast), and
`from_tiktoken` reads them back out of any encoding, e.g. cl100k_base; minillm then recovers
the merges from the ranks when asked (`BPETokenizer.merges`).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

from minillm.io import atomic_write_bytes, atomic_write_json
from minillm.tokenizers.bpe import BPETokenizer

__all__ = ["RANKS_FILE", "CONFIG_FILE", "dump_ranks", "parse_ranks", "save_tiktoken_ranks",
           "load_tiktoken_ranks", "save_tokenizer", "load_tokenizer", "to_tiktoken",
           "from_tiktoken"]

RANKS_FILE = "tokenizer.tiktoken"
CONFIG_FILE = "tokenizer.json"


def dump_ranks(ranks: dict[bytes, int]) -> str:
    """Rank table -> the text of a tiktoken rank file."""
    return "".join(f"{base64.b64encode(tok).decode('ascii')} {rank}\n"
                   for tok, rank in sorted(ranks.items(), key=lambda kv: kv[1]))


def parse_ranks(text: str) -> dict[bytes, int]:
    """The text of a tiktoken rank file -> rank table (blank lines ignored)."""
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
    atomic_write_bytes(path, dump_ranks(ranks).encode("ascii"))


def load_tiktoken_ranks(path: str | Path) -> dict[bytes, int]:
    return parse_ranks(Path(path).read_text(encoding="ascii"))


def save_tokenizer(tokenizer: BPETokenizer, folder: str | Path) -> Path:
    """Write the rank file and the JSON (atomically, each) into `folder`; return the folder."""
    folder = Path(folder)
    save_tiktoken_ranks(tokenizer.ranks, folder / RANKS_FILE)
    atomic_write_json(folder / CONFIG_FILE, {
        "type": "bpe", "name": tokenizer.name, "pattern": tokenizer.pattern,
        "special_tokens": tokenizer.special_tokens, "ranks_file": RANKS_FILE,
        "n_ranks": len(tokenizer.ranks)})
    return folder


def load_tokenizer(folder: str | Path) -> BPETokenizer:
    """Read a folder written by `save_tokenizer`."""
    folder = Path(folder)
    config_path = folder / CONFIG_FILE
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} is missing; is {folder} a saved BPE tokenizer?")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if config.get("type") != "bpe":
        raise ValueError(f"{config_path} has type {config.get('type')!r}, not 'bpe'")
    ranks = load_tiktoken_ranks(folder / config.get("ranks_file", RANKS_FILE))
    if "n_ranks" in config and len(ranks) != config["n_ranks"]:
        raise ValueError(f"{folder / RANKS_FILE} has {len(ranks)} tokens, the JSON says "
                         f"{config['n_ranks']}; the folder is corrupt, save it again")
    return BPETokenizer(ranks, config["pattern"], config.get("special_tokens", {}),
                        name=config.get("name", "minillm-bpe"))


def to_tiktoken(tokenizer: BPETokenizer, name: str | None = None):
    """A `tiktoken.Encoding` with the tokenizer's ranks, pattern and special tokens."""
    import tiktoken

    return tiktoken.Encoding(name=name or tokenizer.name, pat_str=tokenizer.pattern,
                             mergeable_ranks=dict(tokenizer.ranks),
                             special_tokens=dict(tokenizer.special_tokens))


def from_tiktoken(encoding) -> BPETokenizer:
    """Any `tiktoken.Encoding` -> `BPETokenizer` with identical ids (merges recovered lazily).

    Reads tiktoken's `_mergeable_ranks`, `_pat_str` and `_special_tokens` (the constructor's
    arguments, which tiktoken keeps under these names).
    """
    return BPETokenizer(encoding._mergeable_ranks, encoding._pat_str,
                        dict(encoding._special_tokens), name=encoding.name)
