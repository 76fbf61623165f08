"""Corpora and batching (the byte-level tokenizer lives in `minillm.tokenizers.byte` and is
re-exported here, where the early chapters import it from)."""

from minillm.data.batching import BatchSource, TokenStreamBatches, check_tokens, sample_batch
from minillm.data.corpus import CORPORA, SPLITS, data_dir, load_corpus
from minillm.tokenizers.byte import ByteTokenizer

__all__ = ["BatchSource", "ByteTokenizer", "CORPORA", "SPLITS", "TokenStreamBatches",
           "check_tokens", "data_dir", "load_corpus", "sample_batch"]
