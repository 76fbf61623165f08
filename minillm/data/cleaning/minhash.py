"""Near-duplicate detection with MinHash and LSH banding (Broder 1997, "On the resemblance and
containment of documents"; Leskovec, Rajaraman & Ullman, *Mining of Massive Datasets*, ch. 3).

A document becomes a set S of shingles (word n-grams). For a random permutation π of hash
values, P[min π(S) = min π(T)] = |S ∩ T| / |S ∪ T| = J(S, T), so the share of equal entries of
two signatures of `num_perm` minima estimates the Jaccard similarity. The permutations are
affine maps of a 32-bit hash h(s) of each shingle (SHA-1's first four bytes, little-endian):

    scheme "affine32" (default):  π_k(s) = a_k · fmix32(h(s)) + b_k  mod 2^32,  a_k odd
    scheme "legacy":              π_k(s) = ((a_k · h(s) + b_k) mod 2^64  mod (2^61 − 1))
                                           mod 2^32

fmix32 is MurmurHash3's finaliser (a fixed bijection that spreads structured inputs). With the
same seed the (a_k, b_k) are drawn from numpy's `RandomState(seed)` exactly as `datasketch`
draws them, so `minhash_signature` equals `datasketch.MinHash(num_perm, seed).hashvalues` for
the same shingle bytes (tests check both schemes). The legacy product a·h wraps modulo 2^64 in
uint64 before the prime modulus, as datasketch's does: kept for equality, a departure from the
textbook universal hash.

LSH: cut the signature into b bands of r rows; two documents are a candidate pair when some
band is equal in both, with probability 1 − (1 − J^r)^b, an S-curve with its step near
(1/b)^(1/r). `lsh_params` picks (b, r), b·r ≤ num_perm, minimising the weighted areas of false
positives ∫_0^t (1 − (1 − s^r)^b) ds and false negatives ∫_t^1 (1 − s^r)^b ds, as datasketch's
`MinHashLSH` does (integrated here with Gauss-Legendre quadrature, exact for these polynomials).
"""

from __future__ import annotations

import hashlib
import itertools
from collections import defaultdict
from collections.abc import Iterable, Sequence

import numpy as np

__all__ = ["SCHEMES", "candidate_pairs", "estimated_jaccard", "jaccard", "lsh_params",
           "minhash_signature", "minhash_signatures", "near_duplicates", "permutations",
           "sha1_hash32", "shingles"]

SCHEMES = ("affine32", "legacy")
MERSENNE_61 = (1 << 61) - 1
MAX_HASH = (1 << 32) - 1


def shingles(text: str, n: int = 5) -> set[bytes]:
    """The set of word n-grams of `text` (words split on whitespace, joined by one space), as
    UTF-8 bytes; a text of fewer than n words is one shingle of all its words."""
    if n < 1:
        raise ValueError(f"n={n} must be >= 1 (words per shingle)")
    words = text.split()
    if len(words) < n:
        return {" ".join(words).encode("utf-8")} if words else set()
    return {" ".join(words[i:i + n]).encode("utf-8") for i in range(len(words) - n + 1)}


def jaccard(a: set, b: set) -> float:
    """|a ∩ b| / |a ∪ b| (1.0 for two empty sets)."""
    return len(a & b) / len(a | b) if a or b else 1.0


def sha1_hash32(data: bytes) -> int:
    """The first four bytes of SHA-1(data) as a little-endian unsigned integer."""
    return int.from_bytes(hashlib.sha1(data).digest()[:4], "little")


def permutations(num_perm: int = 128, seed: int = 1, scheme: str = "affine32",
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The (a, b) of the num_perm affine permutations, drawn from `RandomState(seed)`.

    Returns:
        (a, b), each (num_perm,): uint32 for "affine32" (a odd), uint64 for "legacy"
        (1 <= a < 2^61 − 1, 0 <= b < 2^61 − 1, drawn in pairs).

    Raises:
        ValueError: num_perm < 1 or an unknown scheme.
    """
    if num_perm < 1:
        raise ValueError(f"num_perm={num_perm} must be >= 1")
    if scheme not in SCHEMES:
        raise ValueError(f"scheme={scheme!r} is unknown; choose one of {SCHEMES}")
    gen = np.random.RandomState(seed)
    if scheme == "affine32":
        a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
        b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
        return a, b
    prime = np.uint64(MERSENNE_61)
    pairs = [(gen.randint(1, prime, dtype=np.uint64), gen.randint(0, prime, dtype=np.uint64))
             for _ in range(num_perm)]
    return (np.array([p[0] for p in pairs], dtype=np.uint64),
            np.array([p[1] for p in pairs], dtype=np.uint64))


def _fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finaliser, element-wise on uint32 (products wrap mod 2^32)."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def minhash_signature(items: Iterable[bytes], num_perm: int = 128, seed: int = 1,
                      scheme: str = "affine32",
                      perms: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """The MinHash signature of a set of byte strings.

    Args:
        items: the shingles (bytes); an empty set gives the all-(2^32 − 1) signature.
        num_perm: signature length.
        seed: the permutations' seed (datasketch's default is 1).
        scheme: "affine32" (datasketch >= 2.0's default) or "legacy" (before 2.0).
        perms: precomputed `permutations(num_perm, seed, scheme)`, to skip redrawing them.

    Returns:
        (num_perm,) uint32 ("affine32") or uint64 ("legacy"): min over items of π_k(item).
    """
    a, b = perms if perms is not None else permutations(num_perm, seed, scheme)
    items = list(items)
    if scheme == "affine32":
        if not items:
            return np.full(len(a), MAX_HASH, dtype=np.uint32)
        h = _fmix32(np.array([sha1_hash32(x) for x in items], dtype=np.uint32))
        return (h[:, None] * a[None, :] + b[None, :]).min(axis=0)  # (S, P) -> (P,), mod 2^32
    if scheme not in SCHEMES:
        raise ValueError(f"scheme={scheme!r} is unknown; choose one of {SCHEMES}")
    if not items:
        return np.full(len(a), MAX_HASH, dtype=np.uint64)
    h = np.array([sha1_hash32(x) for x in items], dtype=np.uint64)
    phv = (h[:, None] * a[None, :] + b[None, :]) % np.uint64(MERSENNE_61)  # product wraps 2^64
    return (phv & np.uint64(MAX_HASH)).min(axis=0)


def minhash_signatures(sets: Sequence[Iterable[bytes]], num_perm: int = 128, seed: int = 1,
                       scheme: str = "affine32") -> np.ndarray:
    """(N, num_perm) signatures of N shingle sets, sharing one draw of the permutations."""
    perms = permutations(num_perm, seed, scheme)
    return np.stack([minhash_signature(s, num_perm, seed, scheme, perms) for s in sets])


def estimated_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
    """The share of equal signature entries, an unbiased estimate of J."""
    if sig_a.shape != sig_b.shape:
        raise ValueError(f"signatures of shapes {sig_a.shape} and {sig_b.shape}: use the same "
                         "num_perm")
    return float((sig_a == sig_b).mean())


def lsh_params(threshold: float, num_perm: int = 128, weights: tuple[float, float] = (0.5, 0.5),
               ) -> tuple[int, int]:
    """(b, r) minimising fp_weight · FP area + fn_weight · FN area (see the module docstring).

    Raises:
        ValueError: threshold outside [0, 1], num_perm < 2, or weights not summing to 1.
    """
    if not 0 <= threshold <= 1:
        raise ValueError(f"threshold={threshold} must be in [0, 1]")
    if num_perm < 2:
        raise ValueError(f"num_perm={num_perm} must be >= 2")
    if abs(sum(weights) - 1) > 1e-12 or min(weights) < 0:
        raise ValueError(f"weights={weights} must be two non-negative numbers summing to 1")
    x, w = np.polynomial.legendre.leggauss(num_perm // 2 + 2)  # exact to degree num_perm + 3
    s_fp = threshold / 2 * (x + 1)                   # nodes on [0, t]
    s_fn = threshold + (1 - threshold) / 2 * (x + 1)  # nodes on [t, 1]
    best, opt = float("inf"), (0, 0)
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            fp = threshold / 2 * np.dot(w, 1 - (1 - s_fp ** r) ** b)
            fn = (1 - threshold) / 2 * np.dot(w, (1 - s_fn ** r) ** b)
            error = fp * weights[0] + fn * weights[1]
            if error < best:
                best, opt = error, (b, r)
    return opt


def candidate_pairs(signatures: np.ndarray, b: int, r: int) -> set[tuple[int, int]]:
    """The pairs (i, j), i < j, whose signatures agree on all r rows of at least one of the
    b bands (rows [k·r, (k+1)·r) for band k).

    Raises:
        ValueError: b·r exceeds the signature length.
    """
    n, num_perm = signatures.shape
    if b < 1 or r < 1 or b * r > num_perm:
        raise ValueError(f"b={b}, r={r}: need b, r >= 1 and b*r <= num_perm={num_perm}")
    pairs: set[tuple[int, int]] = set()
    for k in range(b):
        buckets: dict[bytes, list[int]] = defaultdict(list)
        band = np.ascontiguousarray(signatures[:, k * r:(k + 1) * r])
        for i in range(n):
            buckets[band[i].tobytes()].append(i)
        for members in buckets.values():
            pairs.update(itertools.combinations(members, 2))
    return pairs


def near_duplicates(texts: Sequence[str], threshold: float = 0.8, num_perm: int = 128,
                    n: int = 5, seed: int = 1, verify: bool = True) -> list[bool]:
    """Per text, True when it is a near duplicate of an earlier text (drop it).

    Candidate pairs come from LSH with `lsh_params(threshold, num_perm)`; with `verify`, a
    pair counts only when its estimated Jaccard similarity is >= threshold. Pairs link texts
    into clusters (union-find); every member after a cluster's first is flagged.
    """
    sigs = minhash_signatures([shingles(t, n) for t in texts], num_perm, seed)
    b, r = lsh_params(threshold, num_perm)
    parent = list(range(len(texts)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in sorted(candidate_pairs(sigs, b, r)):
        if not verify or estimated_jaccard(sigs[i], sigs[j]) >= threshold:
            ri, rj = root(i), root(j)
            parent[max(ri, rj)] = min(ri, rj)  # the earliest text is the root
    return [root(i) != i for i in range(len(texts))]
