"""Byte-level BPE: the trainer (naive and incremental), the encoder, and tiktoken interop.

    >>> from minillm.tokenizers import BPETokenizer
    >>> tok = BPETokenizer.train(text, vocab_size=2048)            # GPT-4 split pattern
    >>> tok.decode(tok.encode("To be, or not to be")) == "To be, or not to be"
    True
    >>> enc = tok.to_tiktoken()                                    # same ids, Rust speed

Modules: `patterns` (GPT-2 / cl100k split regexes, special tokens), `trainer` (counting,
merging, `train_bpe_naive`, incremental `train_bpe`), `bpe` (`BPETokenizer`), and
`tiktoken_bridge` (rank files, `to_tiktoken`, `from_tiktoken`). Needs the `regex` module.
"""

from __future__ import annotations

from pathlib import Path

from minillm.tokenizers.bpe import BPETokenizer, bpe_chunk, recover_merges
from minillm.tokenizers.patterns import GPT2_PATTERN, GPT4_PATTERN, PATTERNS, resolve_pattern
from minillm.tokenizers.tiktoken_bridge import (
    from_tiktoken,
    load_tiktoken_ranks,
    load_tokenizer,
    save_tiktoken_ranks,
    save_tokenizer,
    to_tiktoken,
)
from minillm.tokenizers.trainer import (
    apply_merges,
    count_chunks,
    get_pair_counts,
    merge_pair,
    naive_merge_step,
    train_bpe,
    train_bpe_naive,
)


def tokenizer_from_dict(d: dict, folder: str | Path | None = None):
    """The tokenizer a tokenizer.json describes: {"type": "byte"} or {"type": "bpe"}. A BPE's
    ranks are inline ("ranks", as `to_dict` writes them into checkpoints) or in a tiktoken file
    beside the JSON ("ranks_file", as `BPETokenizer.save` writes them): then pass `folder`."""
    from minillm.data.tokenizer import ByteTokenizer

    kind = d.get("type")
    if kind == "bpe" and "ranks" not in d and "ranks_file" in d:
        if folder is None:
            raise ValueError(f"this tokenizer.json keeps its ranks in {d['ranks_file']!r} beside "
                             "it: pass folder= (or use BPETokenizer.load(folder))")
        return load_tokenizer(folder)
    if kind == "bpe":
        return BPETokenizer.from_dict(d)
    if kind == "byte":
        return ByteTokenizer.from_dict(d)
    raise ValueError(f"tokenizer type {kind!r} is unknown; expected 'byte' or 'bpe'")


__all__ = ["BPETokenizer", "tokenizer_from_dict", "GPT2_PATTERN", "GPT4_PATTERN", "PATTERNS", "apply_merges", "bpe_chunk",
           "count_chunks", "from_tiktoken", "get_pair_counts", "load_tiktoken_ranks",
           "load_tokenizer", "merge_pair", "naive_merge_step", "recover_merges", "resolve_pattern",
           "save_tiktoken_ranks", "save_tokenizer", "to_tiktoken", "train_bpe",
           "train_bpe_naive"]
