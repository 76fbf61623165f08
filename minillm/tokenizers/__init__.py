"""Byte-level BPE: the trainer (naive and incremental), the encoder, and tiktoken interop.

    >>> from minillm.tokenizers import BPETokenizer
    >>> tok = BPETokenizer.train(text, vocab_size=2048)            # GPT-4 split pattern
    >>> tok.decode(tok.encode("To be, or not to be")) == "To be, or not to be"
    True
    >>> enc = tok.to_tiktoken()                                    # same ids, Rust speed

Modules, lowest first: `byte` (`ByteTokenizer`, the course's default: one token per byte),
`patterns` (GPT-2 / cl100k split regexes, special tokens), `trainer` (counting, merging,
`train_bpe_naive`, incremental `train_bpe`), `tiktoken_bridge` (rank files, tiktoken's
`Encoding`), `bpe` (`BPETokenizer`, its folders). Needs the `regex` module.
"""

from __future__ import annotations

from pathlib import Path

from minillm.io import CheckpointError, read_json
from minillm.tokenizers.bpe import (
    BPETokenizer,
    bpe_chunk,
    from_tiktoken,
    load_tokenizer,
    recover_merges,
    save_tokenizer,
    to_tiktoken,
)
from minillm.tokenizers.byte import ByteTokenizer, check_special_tokens
from minillm.tokenizers.patterns import GPT2_PATTERN, GPT4_PATTERN, PATTERNS, resolve_pattern
from minillm.tokenizers.tiktoken_bridge import load_tiktoken_ranks, save_tiktoken_ranks
from minillm.tokenizers.trainer import (
    apply_merges,
    count_chunks,
    get_pair_counts,
    merge_pair,
    naive_merge_step,
    train_bpe,
    train_bpe_naive,
)


def tokenizer_from_dict(d: dict, folder: str | Path | None = None) -> ByteTokenizer | BPETokenizer:
    """The tokenizer a tokenizer.json describes: {"type": "byte"} or {"type": "bpe"}.

    Args:
        d: the JSON's contents. A BPE's ranks are inline ("ranks", as `to_dict` writes them
            into checkpoints) or in a tiktoken file beside the JSON ("ranks_file", as
            `BPETokenizer.save` writes them).
        folder: the folder holding the JSON, needed for a "ranks_file".

    Returns:
        A `ByteTokenizer` or a `BPETokenizer`.

    Raises:
        ValueError: an unknown type, or a "ranks_file" without `folder`.
    """
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


def load_tokenizer_folder(folder: str | Path) -> ByteTokenizer | BPETokenizer:
    """The tokenizer saved in `folder`/tokenizer.json (a checkpoint or a tokenizer folder).

    Raises:
        CheckpointError: tokenizer.json is missing or corrupt, or describes no tokenizer.
    """
    folder = Path(folder)
    d = read_json(folder / "tokenizer.json", "tokenizer.json")
    try:
        return tokenizer_from_dict(d, folder)
    except (ValueError, KeyError) as e:
        raise CheckpointError(f"{folder / 'tokenizer.json'} does not describe a tokenizer "
                              f"({e}); save the tokenizer again") from e


def tokenizer_for_model(folder: str | Path, vocab_size: int) -> ByteTokenizer | BPETokenizer:
    """The tokenizer of a model folder, checked against the model's `vocab_size`.

    A folder without tokenizer.json gets a `ByteTokenizer` (the course's checkpoints were
    byte-level before they carried one), but only if the model's vocabulary is a byte
    tokenizer's: a BPE model whose tokenizer.json went missing would otherwise generate ids
    no byte tokenizer can decode.

    Raises:
        CheckpointError: the tokenizer found (or the byte fallback) has another vocabulary size
            than the model, or tokenizer.json is corrupt.
    """
    folder = Path(folder)
    path = folder / "tokenizer.json"
    if path.exists():
        tokenizer = load_tokenizer_folder(folder)
        if tokenizer.vocab_size != vocab_size:
            raise CheckpointError(
                f"{path} has {tokenizer.vocab_size} tokens but the model in {folder} has "
                f"vocab_size={vocab_size}: it is not this model's tokenizer; put the one the "
                "model was trained with there")
        return tokenizer
    tokenizer = ByteTokenizer()
    if tokenizer.vocab_size != vocab_size:
        raise CheckpointError(
            f"{folder} has no tokenizer.json and its model's vocab_size={vocab_size} is not a "
            f"byte tokenizer's ({tokenizer.vocab_size}); save the model's tokenizer there "
            "(tokenizer.save(folder))")
    return tokenizer


__all__ = ["BPETokenizer", "ByteTokenizer", "GPT2_PATTERN", "GPT4_PATTERN", "PATTERNS",
           "apply_merges", "bpe_chunk", "check_special_tokens", "count_chunks", "from_tiktoken",
           "get_pair_counts", "load_tiktoken_ranks", "load_tokenizer", "load_tokenizer_folder",
           "merge_pair", "naive_merge_step", "recover_merges", "resolve_pattern",
           "save_tiktoken_ranks", "save_tokenizer", "to_tiktoken", "tokenizer_for_model",
           "tokenizer_from_dict", "train_bpe", "train_bpe_naive"]
