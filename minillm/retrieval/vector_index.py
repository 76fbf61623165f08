"""Exact nearest-neighbour search over vectors: faiss when it is installed, torch otherwise.

For queries q and stored vectors x_1..x_N, the k nearest by

    "l2": d(q, x) = ||q - x||^2   (squared, as faiss's IndexFlatL2; smallest first)
    "ip": s(q, x) = q . x         (faiss's IndexFlatIP; largest first; cosine on unit vectors)

Both backends are exhaustive (no approximation), so they return the same neighbours up to
float rounding (tested): faiss (Johnson et al. 2017, arXiv:1702.08734) with a flat index, or a
chunked torch computation. For large stores, `nlist` > 0 asks faiss for an inverted-file index
(IVF, the coarse quantiser of Jégou et al. 2011): the vectors are split into `nlist` k-means
cells (faiss's k-means, its fixed default seed) and a query scans only the `nprobe` nearest
cells, so it costs about nprobe / nlist of the exact search and may miss true neighbours in
cells it does not scan (approximate; exact again when nprobe = nlist). faiss is an optional dependency (`pip install faiss-cpu`),
imported only when used; backend="auto" takes it when present and falls back to torch.
Ties go to the lower id in the torch backend.
"""

from __future__ import annotations

import torch

from minillm.retrieval.base import check_k

__all__ = ["VectorIndex", "exact_search", "import_faiss"]

METRICS = ("l2", "ip")
BACKENDS = ("auto", "faiss", "torch")


def import_faiss():
    """The faiss module, or an ImportError that says how to install it."""
    try:
        import faiss
    except ImportError as err:
        raise ImportError("the faiss backend needs faiss: pip install faiss-cpu (or pass "
                          "backend='torch' for the exact torch search)") from err
    return faiss


def exact_search(queries: torch.Tensor, vectors: torch.Tensor, k: int, metric: str = "l2",
                 chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """The k nearest of `vectors` (N, d) to each of `queries` (Q, d), in torch, exactly.

    Args:
        queries: (Q, d).
        vectors: (N, d).
        k: neighbours per query (<= N).
        metric: "l2" (squared distance, ascending) or "ip" (inner product, descending).
        chunk: queries per block (bounds the (chunk, N) score matrix).

    Returns:
        scores (Q, k) float32 and ids (Q, k) int64, best first.
    """
    vectors = vectors.float()
    sq_norms = vectors.pow(2).sum(-1)                                  # (N,)
    scores, ids = [], []
    for q in queries.float().split(chunk):
        if metric == "l2":   # ||q||^2 - 2 q.x + ||x||^2 ranks; the k kept are then exact
            _, top = (sq_norms[None] - 2 * q @ vectors.T).topk(k, dim=-1, largest=False)
            score = (q[:, None] - vectors[top]).pow(2).sum(-1)         # (c, k)
        else:
            score, top = (q @ vectors.T).topk(k, dim=-1)               # (c, k)
        # best first, equal scores by lower id: sort by id, then stably by score
        top, order = top.sort(dim=-1)
        score = score.gather(1, order)
        score, order = score.sort(dim=-1, stable=True, descending=metric == "ip")
        scores.append(score)
        ids.append(top.gather(1, order))
    return torch.cat(scores), torch.cat(ids)


class VectorIndex:
    """Exact k-nearest-neighbour search over fixed vectors.

    Args:
        vectors: (N, d) the stored vectors.
        metric: "l2" (squared Euclidean) or "ip" (inner product).
        backend: "faiss", "torch" or "auto" (faiss if installed).
        nlist: 0 for the exact flat index; > 0 for an IVF index of that many cells (faiss only).
        nprobe: cells an IVF search scans (1 <= nprobe <= nlist).
    """

    def __init__(self, vectors: torch.Tensor, metric: str = "l2", backend: str = "auto",
                 nlist: int = 0, nprobe: int = 1):
        if metric not in METRICS:
            raise ValueError(f"metric={metric!r} must be one of {METRICS}")
        if backend not in BACKENDS:
            raise ValueError(f"backend={backend!r} must be one of {BACKENDS}")
        if vectors.ndim != 2 or vectors.size(0) == 0:
            raise ValueError(f"vectors must be (N>=1, d), got shape {tuple(vectors.shape)}")
        if not torch.isfinite(vectors).all():
            raise ValueError("vectors hold NaN or inf: check the embedding function")
        if isinstance(nlist, bool) or not isinstance(nlist, int) or nlist < 0:
            raise ValueError(f"nlist={nlist!r} must be an integer >= 0 (0: exact flat index)")
        if nlist and not 1 <= nprobe <= nlist:
            raise ValueError(f"nprobe={nprobe!r} must be in [1, nlist={nlist}]")
        if nlist and backend == "torch":
            raise ValueError("an IVF index (nlist > 0) needs backend='faiss' (or 'auto')")
        if nlist > vectors.size(0):
            raise ValueError(f"nlist={nlist} exceeds the {vectors.size(0)} vectors: use fewer "
                             "cells")
        if backend == "auto":
            try:
                import_faiss()
                backend = "faiss"
            except ImportError:
                backend = "torch"
        self.metric, self.backend = metric, backend
        self.vectors = vectors.detach().float().cpu().contiguous()      # (N, d)
        self._faiss_index = None
        if backend == "faiss":
            faiss = import_faiss()
            d = self.vectors.size(1)
            flat = faiss.IndexFlatL2(d) if metric == "l2" else faiss.IndexFlatIP(d)
            if nlist:
                kind = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
                self._quantizer = flat               # the IVF index keeps a pointer to it
                ivf = faiss.IndexIVFFlat(flat, d, nlist, kind)
                ivf.train(self.vectors.numpy())
                ivf.nprobe = nprobe
                self._faiss_index = ivf
            else:
                self._faiss_index = flat
            self._faiss_index.add(self.vectors.numpy())
        self.nlist, self.nprobe = nlist, nprobe

    def __len__(self) -> int:
        return self.vectors.size(0)

    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The k nearest stored vectors of each query.

        Args:
            queries: (Q, d) (or (d,) for one).
            k: neighbours (at most len(self)).

        Returns:
            scores (Q, k) (squared distances ascending for "l2", inner products descending for
            "ip") and ids (Q, k) int64. An IVF search that finds fewer than k vectors in the
            cells it scans fills the rest with id 0 and score inf (l2) or -inf (ip).
        """
        check_k(k)
        if k > len(self):
            raise ValueError(f"k={k} exceeds the {len(self)} stored vectors: ask for fewer")
        queries = queries.detach().float().cpu().reshape(-1, self.vectors.size(1))
        if self._faiss_index is not None:
            scores, ids = self._faiss_index.search(queries.contiguous().numpy(), k)
            scores, ids = torch.from_numpy(scores), torch.from_numpy(ids).long()
            missing = ids < 0        # IVF: fewer than k vectors in the scanned cells
            if missing.any():
                worst = float("inf") if self.metric == "l2" else float("-inf")
                scores, ids = scores.masked_fill(missing, worst), ids.masked_fill(missing, 0)
            return scores, ids
        return exact_search(queries, self.vectors, k, self.metric)
