"""kNN-LM: interpolate a language model with a nearest-neighbour lookup over a datastore of
its own hidden states (Khandelwal et al. 2020, "Generalization through Memorization",
arXiv:1911.00172).

Datastore: for every token t of a text, the key is the model's representation of the context
f(x_<t) and the value the token that followed it, w_t. At test time the context's
representation q = f(x) is compared with the keys, and the k nearest (squared L2 distance d)
vote for their next tokens:

    p_kNN(y | x) = sum_{i in kNN} 1[v_i = y] exp(-d(k_i, q) / T) / sum_{i in kNN} exp(-d(k_i, q) / T)
    p(y | x)     = λ p_kNN(y | x) + (1 - λ) p_LM(y | x)

computed in log space (log p = logsumexp(log λ + log p_kNN, log(1 - λ) + log p_LM)), so
λ = 0 gives the model's log-probabilities exactly and tokens no neighbour names get
log p_kNN = -inf. The paper reports Wikitext-103 perplexity 18.65 -> 16.12 with λ = 0.25,
k = 1024 and a datastore of the 103M training tokens.

Departures: the key is the model's final hidden state after the final norm (the input to the
output head; the paper uses the input to the last block's feed-forward layer, after its
layer norm); the temperature T (1 in the paper) is a parameter; the search is exact
(`VectorIndex`: a flat faiss index or torch) unless `nlist` asks for an IVF index (the paper's
is IVF with product-quantised keys; ours keeps the keys in float32).

The keys are computed with the windows of `minillm.training`'s `lm_nll_bits` (the text after
an <|endoftext|> token, windows of the context advancing by half of it, every token scored
once), and `knn_lm_bits_per_byte` scores a text with the same windows, so with λ = 0 it is
`text_bits_per_byte` (tested): the kNN-LM sits on the course's bits-per-byte line.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from minillm.data.batching import scoring_windows
from minillm.retrieval.vector_index import VectorIndex
from minillm.tokenizers.byte import ByteTokenizer

__all__ = ["Datastore", "build_datastore", "spaced_blocks", "interpolate_logprobs", "knn_lm_bits_per_byte",
           "knn_lm_logprobs", "knn_lm_nll_bits", "knn_logprobs", "window_states"]


@torch.no_grad()
def window_states(model: nn.Module, token_ids: Sequence[int] | torch.Tensor, bos_id: int,
                  context_length: int | None = None, stride: int | None = None,
                  batch_size: int = 32) -> Iterator[tuple[torch.Tensor, torch.Tensor,
                                                          torch.Tensor]]:
    """Every prediction of `token_ids` (after `bos_id`) once: yields blocks of (final hidden
    states (n, C) float32, log-probabilities (n, V) float32, targets (n,)), on the CPU.

    Args:
        model: a course LM whose forward returns `logits` and `hidden_states`.
        token_ids: the text's tokens.
        bos_id: put in front, so the first token is predicted too.
        context_length: window length (default the model's).
        stride: how far each window advances (default half the window).
        batch_size: windows per forward.
    """
    T = context_length or model.config.context_length
    S = stride or max(1, T // 2)
    seq = torch.cat([torch.tensor([bos_id]), torch.as_tensor(token_ids, dtype=torch.long)])
    if seq.numel() < 2:
        raise ValueError("token_ids is empty: there is nothing to predict")
    jobs = scoring_windows(seq.numel() - 1, T, S)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    groups: dict[int, list] = {}
    for job in jobs:                        # windows of one length share a forward
        groups.setdefault(job[1] - job[0], []).append(job)
    try:
        for length, group in groups.items():
            for b in range(0, len(group), batch_size):
                chunk = group[b:b + batch_size]
                x = torch.stack([seq[s:e] for s, e, _ in chunk]).to(device)    # (B, length)
                out = model(x)
                keep = torch.arange(length)[None] >= torch.tensor([k for *_, k in chunk])[:, None]
                y = torch.stack([seq[s + 1:e + 1] for s, e, _ in chunk])
                yield (out.hidden_states.float().cpu()[keep],
                       torch.log_softmax(out.logits.float(), -1).cpu()[keep], y[keep])
    finally:
        model.train(was_training)


def spaced_blocks(text: str, n_blocks: int, block_chars: int) -> str:
    """`n_blocks` pieces of `block_chars` characters taken at even intervals through `text`,
    joined: a deterministic sample of a long text for a datastore too small to hold all of it.

    >>> spaced_blocks("aaaabbbbccccdddd", 2, 3)
    'aaaccc'
    """
    if n_blocks < 1 or block_chars < 1:
        raise ValueError(f"n_blocks={n_blocks} and block_chars={block_chars} must be >= 1")
    if n_blocks * block_chars > len(text):
        raise ValueError(f"{n_blocks} blocks of {block_chars} characters exceed the text's "
                         f"{len(text)}: take fewer or shorter blocks")
    step = len(text) // n_blocks
    return "".join(text[i * step:i * step + block_chars] for i in range(n_blocks))


@dataclass
class Datastore:
    keys: torch.Tensor       # (N, C) context representations
    values: torch.Tensor     # (N,) the token that followed each
    index: VectorIndex       # squared-L2 search over the keys
    vocab_size: int

    def __len__(self) -> int:
        return self.values.numel()


def build_datastore(model: nn.Module, token_ids: Sequence[int] | torch.Tensor, bos_id: int,
                    context_length: int | None = None, stride: int | None = None,
                    batch_size: int = 32, backend: str = "auto", nlist: int = 0,
                    nprobe: int = 1) -> Datastore:
    """The (final hidden state -> next token) pairs of a token stream under `model`.

    Args:
        model: the LM whose hidden states are the keys.
        token_ids: the text (e.g. the training split's tokens).
        bos_id: the start token put in front (as in scoring).
        context_length, stride, batch_size: the windows (see `window_states`).
        backend: the search backend ("auto", "faiss", "torch").
        nlist, nprobe: 0 for exact search; else an approximate IVF index of `nlist` cells of
            which a query scans `nprobe` (see `VectorIndex`).

    Returns:
        A `Datastore`.
    """
    keys, values = [], []
    for hidden, _, targets in window_states(model, token_ids, bos_id, context_length, stride,
                                            batch_size):
        keys.append(hidden)
        values.append(targets)
    keys_t = torch.cat(keys)
    return Datastore(keys_t, torch.cat(values), VectorIndex(keys_t, "l2", backend, nlist, nprobe),
                     model.config.vocab_size)


def knn_logprobs(distances: torch.Tensor, neighbour_tokens: torch.Tensor, vocab_size: int,
                 temperature: float = 1.0) -> torch.Tensor:
    """log p_kNN over the vocabulary from k neighbours' distances and next tokens.

    Args:
        distances: (N, k) squared L2 distances.
        neighbour_tokens: (N, k) the neighbours' next tokens.
        vocab_size: V.
        temperature: T in exp(-d / T).

    Returns:
        (N, V) log-probabilities; -inf for tokens no neighbour names.
    """
    w = -distances.double() / temperature                                   # (N, k)
    top = w.amax(-1, keepdim=True)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))  # a row with no neighbour
    mass = torch.zeros(w.size(0), vocab_size, dtype=torch.float64).scatter_add_(
        1, neighbour_tokens.long(), (w - top).exp())                        # (N, V)
    total = mass.sum(-1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
    return (mass.log() - total.log()).float()   # all -inf where no neighbour was found


def interpolate_logprobs(lm_logprobs: torch.Tensor, knn: torch.Tensor, lam: float
                         ) -> torch.Tensor:
    """log(λ p_kNN + (1 - λ) p_LM), in log space (λ = 0 returns lm_logprobs exactly)."""
    lam_t = torch.tensor(float(lam), dtype=torch.float64)
    both = torch.stack([knn.double() + lam_t.log(), lm_logprobs.double() + torch.log1p(-lam_t)])
    return torch.logsumexp(both, dim=0).to(lm_logprobs.dtype)


def _check(k: int, temperature: float, lam: float, datastore: Datastore) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k={k!r} must be a positive integer (neighbours per query)")
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature={temperature!r} must be a positive number")
    if not 0 <= lam <= 1:
        raise ValueError(f"lam={lam!r} must be in [0, 1] (the kNN weight; the paper uses 0.25)")
    return min(k, len(datastore))


def knn_lm_logprobs(lm_logprobs: torch.Tensor, hidden: torch.Tensor, datastore: Datastore, *,
                    k: int = 16, temperature: float = 1.0, lam: float = 0.25) -> torch.Tensor:
    """The kNN-LM's next-token log-probabilities.

    Args:
        lm_logprobs: (N, V) the model's log-probabilities at N positions.
        hidden: (N, C) its final hidden states there (the queries).
        datastore: from `build_datastore` (with the same model).
        k: neighbours (capped at the datastore's size; the paper: 1024).
        temperature: T in exp(-d / T).
        lam: λ, the kNN weight (the paper: 0.25).

    Returns:
        (N, V) log p = log(λ p_kNN + (1 - λ) p_LM).
    """
    k = _check(k, temperature, lam, datastore)
    if lm_logprobs.size(-1) != datastore.vocab_size:
        raise ValueError(f"the model's vocabulary ({lm_logprobs.size(-1)}) differs from the "
                         f"datastore's ({datastore.vocab_size}): build it with the same model")
    distances, ids = datastore.index.search(hidden, k)
    knn = knn_logprobs(distances, datastore.values[ids], datastore.vocab_size, temperature)
    return interpolate_logprobs(lm_logprobs.float().cpu(), knn, lam)


def knn_lm_nll_bits(model: nn.Module, token_ids: Sequence[int] | torch.Tensor, bos_id: int,
                    datastore: Datastore, *, k: int = 16, temperature: float = 1.0,
                    lam: float = 0.25, context_length: int | None = None,
                    stride: int | None = None, batch_size: int = 32) -> float:
    """-log2 P(tokens) under the kNN-LM, every token scored once (the windows of
    `lm_nll_bits`). Arguments as `knn_lm_logprobs` and `window_states`.

    Returns:
        The total negative log-likelihood in bits.
    """
    _check(k, temperature, lam, datastore)
    total = 0.0
    for hidden, logprobs, targets in window_states(model, token_ids, bos_id, context_length,
                                                   stride, batch_size):
        logp = knn_lm_logprobs(logprobs, hidden, datastore, k=k, temperature=temperature,
                               lam=lam)
        total -= logp.gather(-1, targets[:, None]).sum().item()
    return total / math.log(2)


def knn_lm_bits_per_byte(model: nn.Module, text: str, datastore: Datastore, tokenizer=None,
                         **kwargs) -> float:
    """Bits per UTF-8 byte of `text` under the kNN-LM: the course's metric line (with λ = 0 it
    equals `minillm.training.text_bits_per_byte`).

    Args:
        model: the LM the datastore was built with.
        text: the text to score (not empty).
        datastore: from `build_datastore`.
        tokenizer: default `ByteTokenizer()`; its <|endoftext|> id starts the text.
        **kwargs: k, temperature, lam, context_length, stride, batch_size.

    Returns:
        Bits per byte.
    """
    n_bytes = len(text.encode("utf-8"))
    if n_bytes == 0:
        raise ValueError("text is empty: there is nothing to score")
    tokenizer = tokenizer or ByteTokenizer()
    if tokenizer.eot_id is None:
        raise ValueError("scoring needs a start token: the tokenizer has no <|endoftext|>")
    return knn_lm_nll_bits(model, tokenizer.encode(text), tokenizer.eot_id, datastore,
                           **kwargs) / n_bytes
