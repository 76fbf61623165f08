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

from minillm.tokenizers.bpe import BPETokenizer, load_tokenizer, save_tokenizer
from minillm.tokenizers.byte import ByteTokenizer
from minillm.tokenizers.loading import (
           load_tokenizer_folder,
           tokenizer_for_model,
           tokenizer_from_dict,
)
from minillm.tokenizers.patterns import GPT2_PATTERN, GPT4_PATTERN
from minillm.tokenizers.trainer import train_bpe

__all__ = ["BPETokenizer", "ByteTokenizer", "GPT2_PATTERN", "GPT4_PATTERN", "load_tokenizer",
           "load_tokenizer_folder", "save_tokenizer", "tokenizer_for_model", "tokenizer_from_dict",
           "train_bpe"]
