"""Corpora, the byte-level tokenizer and the batch sampler."""

from minillm.data.batching import check_tokens, sample_batch
from minillm.data.corpus import CORPORA, SPLITS, data_dir, load_corpus
from minillm.data.tokenizer import ByteTokenizer

__all__ = ["ByteTokenizer", "CORPORA", "SPLITS", "check_tokens", "data_dir", "load_corpus",
           "sample_batch"]
