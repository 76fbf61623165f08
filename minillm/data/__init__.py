"""Corpora and batching: the plays and their splits (`load_corpus`, `data_dir`), and the batch
sources the trainer reads (`sample_batch`, `TokenStreamBatches`, the `BatchSource` protocol).
Tokenizers live in `minillm.tokenizers`."""

from minillm.data.batching import BatchSource, TokenStreamBatches, check_tokens, sample_batch
from minillm.data.corpus import CORPORA, SPLITS, data_dir, load_corpus

__all__ = ["BatchSource", "CORPORA", "SPLITS", "TokenStreamBatches", "check_tokens", "data_dir",
           "load_corpus", "sample_batch"]
