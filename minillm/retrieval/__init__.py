"""Retrieval: find the documents or memories a model should read (chapter 20).

    >>> from minillm.retrieval import BM25
    >>> BM25(["the cat sat", "a dog barked"]).search("cat", k=1)
    [(0, 0.2543659378201634)]

Modules, lowest first: `base` (the `Retriever` protocol, `word_tokens`), `bm25` (sparse word
matching, equal to `bm25s`), `vector_index` (exact nearest neighbours: faiss or torch),
`dense` (embedding retrieval), `knn_lm` (Khandelwal et al.'s nearest-neighbour language model
over a datastore of hidden states, and its bits per byte).
"""

from minillm.retrieval.base import Retriever, word_tokens
from minillm.retrieval.bm25 import BM25, BM25Config, bm25_idf
from minillm.retrieval.dense import DenseRetriever, mean_pooled_embedder
from minillm.retrieval.knn_lm import (
    Datastore,
    build_datastore,
    interpolate_logprobs,
    knn_lm_bits_per_byte,
    knn_lm_logprobs,
    knn_lm_nll_bits,
    knn_logprobs,
    spaced_blocks,
    window_states,
)
from minillm.retrieval.vector_index import VectorIndex, exact_search, import_faiss

__all__ = ["BM25", "BM25Config", "Datastore", "DenseRetriever", "Retriever", "VectorIndex",
           "bm25_idf", "build_datastore", "exact_search", "import_faiss",
           "interpolate_logprobs", "knn_lm_bits_per_byte", "knn_lm_logprobs",
           "knn_lm_nll_bits", "knn_logprobs", "mean_pooled_embedder", "spaced_blocks",
           "window_states",
           "word_tokens"]
