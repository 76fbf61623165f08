"""Corpora and batching: the plays and their splits (`load_corpus`, `data_dir`), the batch
sources the trainer reads (`sample_batch`, `TokenStreamBatches`, the `BatchSource` protocol), and
a user's own text as token shards on disk (`prepare_shards`, `load_token_data`, `ShardBatches`).
Tokenizers live in `minillm.tokenizers`."""

from minillm.data.batching import (
    BatchSource,
    TokenStreamBatches,
    check_tokens,
    sample_batch,
    window_starts,
)
from minillm.data.corpus import CORPORA, SPLITS, data_dir, load_corpus
from minillm.data.shard_reader import ShardBatches, TokenData, load_token_data
from minillm.data.shards import PrepareConfig, prepare_shards, token_dtype

__all__ = ["BatchSource", "CORPORA", "PrepareConfig", "SPLITS", "ShardBatches", "TokenData",
           "TokenStreamBatches", "check_tokens", "data_dir", "load_corpus", "load_token_data",
           "prepare_shards", "sample_batch", "token_dtype", "window_starts"]
