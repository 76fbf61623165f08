"""Reading a tokenizer back: from the dict a tokenizer.json holds, from a folder, or for a model
folder (checked against the model's vocabulary)."""

from __future__ import annotations

from pathlib import Path

from minillm.io import CheckpointError, read_json
from minillm.tokenizers.bpe import BPETokenizer, load_tokenizer
from minillm.tokenizers.byte import ByteTokenizer

__all__ = ["load_tokenizer_folder", "tokenizer_for_model", "tokenizer_from_dict"]


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
    d = read_json(folder / "tokenizer.json", "tokenizer.json", folder="tokenizer folder")
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
