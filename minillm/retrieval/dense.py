"""Dense retrieval: embed the documents once, embed the query, return the nearest documents
(Karpukhin et al. 2020, DPR, arXiv:2004.04906; as the retriever of RAG, Lewis et al. 2020,
arXiv:2005.11401).

    score(q, d) = sim(E(q), E(d))      sim: cosine (default), inner product, or -||.||^2

DPR trains two BERT encoders for this; here E is any function texts -> (n, d) vectors, for
instance `mean_pooled_embedder(model, tokenizer)`: the mean of a course model's final hidden
states over the text's tokens (an untrained-for-retrieval embedding: a baseline, not DPR).
Search is exact (`VectorIndex`: faiss when installed, torch otherwise).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from minillm.retrieval.base import check_k
from minillm.retrieval.vector_index import VectorIndex

__all__ = ["DenseRetriever", "mean_pooled_embedder"]

SIMILARITIES = ("cosine", "ip", "l2")


def mean_pooled_embedder(model: nn.Module, tokenizer, max_tokens: int | None = None
                         ) -> Callable[[Sequence[str]], torch.Tensor]:
    """texts -> (n, d_model): each text's final hidden states (after the final norm) averaged
    over its tokens; a text longer than the model's context keeps its first tokens.

    Args:
        model: a course model whose forward returns `hidden_states`.
        tokenizer: with `encode(text) -> ids`.
        max_tokens: tokens kept per text (default the model's context length).

    Returns:
        The embedding function (runs in eval mode, without gradients).
    """
    limit = max_tokens or model.config.context_length

    @torch.no_grad()
    def embed(texts: Sequence[str]) -> torch.Tensor:
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        try:
            out = []
            for text in texts:
                ids = tokenizer.encode(text)[:limit]
                if not ids:
                    raise ValueError(f"text {text!r} has no tokens: nothing to embed")
                hidden = model(torch.tensor([ids], device=device)).hidden_states  # (1, T, C)
                out.append(hidden[0].float().mean(0))
            return torch.stack(out).cpu()
        finally:
            model.train(was_training)

    return embed


class DenseRetriever:
    """Nearest documents by embedding.

    Args:
        documents: the texts to search.
        embed: texts -> (n, d) float vectors.
        similarity: "cosine" (unit vectors, inner product), "ip", or "l2" (score = minus the
            squared distance, so higher is better as for every retriever).
        backend: "faiss", "torch" or "auto" (see `VectorIndex`).
    """

    def __init__(self, documents: Sequence[str], embed: Callable[[Sequence[str]], torch.Tensor],
                 similarity: str = "cosine", backend: str = "auto"):
        if similarity not in SIMILARITIES:
            raise ValueError(f"similarity={similarity!r} must be one of {SIMILARITIES}")
        if len(documents) == 0:
            raise ValueError("documents is empty: give at least one document to index")
        self.documents, self.embed, self.similarity = list(documents), embed, similarity
        vectors = self._vectors(list(documents))
        if vectors.size(0) != len(documents):
            raise ValueError(f"embed returned {vectors.size(0)} vectors for {len(documents)} "
                             "documents: it must return one row per text")
        self.index = VectorIndex(vectors, "l2" if similarity == "l2" else "ip", backend)

    def _vectors(self, texts: list[str]) -> torch.Tensor:
        v = torch.as_tensor(self.embed(texts)).float()
        if v.ndim != 2:
            raise ValueError(f"embed must return (n, d) vectors, got shape {tuple(v.shape)}")
        if self.similarity == "cosine":
            v = v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return v

    def search(self, query: str, k: int) -> list[tuple[int, float]]:
        """The k documents most similar to `query`, best first.

        Args:
            query: a text (embedded with `embed`).
            k: how many (at most the number of documents).

        Returns:
            [(doc_id, score), ...].
        """
        check_k(k)
        scores, ids = self.index.search(self._vectors([query]), min(k, len(self.index)))
        sign = -1.0 if self.similarity == "l2" else 1.0
        return [(int(i), sign * float(s)) for s, i in zip(scores[0], ids[0], strict=True)]
