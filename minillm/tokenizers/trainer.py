"""Training byte-level BPE: the naive recount-every-merge loop and the incremental one.

Byte-pair encoding (Gage 1994; for subword units Sennrich et al. 2016, arXiv:1508.07909) starts
from the 256 byte values and repeats: count every adjacent pair of tokens, replace the most
frequent pair (a, b) by a new token t = bytes(a) + bytes(b), until the vocabulary has the
requested size. Byte-level (Radford et al. 2019) means the base alphabet is bytes, so every
string is representable and there is no unknown token.

    merge_k = argmax_{(a, b)} count_k(a, b)        ties -> the smallest (a, b)

**Tie-break** (stated and tested): among pairs with the highest count, the pair with the
smallest (left id, right id), compared as a tuple, wins. Both trainers use it, so their merges
are identical; in the tiny example "aaabdaaabac" after aa->256 the pairs (256, 97) "Za" and
(97, 98) "ab" both occur twice and (97, 98) wins, as in the classic worked example.

`train_bpe_naive` recounts all pairs of the whole corpus after every merge: O(N) per merge.
`train_bpe` is incremental (the way Hugging Face `tokenizers` and minbpe's successors do it):

1. pre-tokenize once into *unique* chunks with their counts (a 4.4 MB text has ~35k);
2. keep `pair_counts[(a, b)]` and an index `where[(a, b)]` = chunks that contain the pair;
3. a merge visits only the chunks in `where[(a, b)]`; at each occurrence x a b y it moves the
   chunk's count from (x, a), (a, b), (b, y) to (x, t), (t, y);
4. the best pair comes from a max-heap with lazy deletion: an entry may hold an *over*-estimate
   (counts of pairs without t only fall), so a popped entry whose count is stale is pushed back
   with the current count; pairs involving t, whose counts rise, are pushed after each merge.

Departure: if a merge's bytes already are a token (a, bc after ab, c), the pair is mapped onto
the existing id instead of a duplicate, so the vocabulary is a set of byte strings and fits
tiktoken's rank format (bytes -> rank). Both trainers do this.
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from itertools import pairwise

import regex

from minillm.tokenizers.patterns import resolve_pattern, special_regex, split_special

__all__ = ["apply_merges", "count_chunks", "get_pair_counts", "merge_pair", "naive_merge_step", "train_bpe",
           "train_bpe_naive"]

Pair = tuple[int, int]
Merge = tuple[Pair, int]


def get_pair_counts(ids: list[int], counts: dict[Pair, int] | None = None) -> dict[Pair, int]:
    """Count adjacent pairs of `ids`, adding to `counts` if given.

    >>> get_pair_counts([1, 2, 3, 1, 2])
    {(1, 2): 2, (2, 3): 1, (3, 1): 1}
    """
    counts = {} if counts is None else counts
    for pair in pairwise(ids):
        counts[pair] = counts.get(pair, 0) + 1
    return counts


def merge_pair(ids: list[int], pair: Pair, new_id: int) -> list[int]:
    """Replace every occurrence of `pair` in `ids`, scanning left to right, by `new_id`.

    >>> merge_pair([97, 97, 97, 98], (97, 97), 256)
    [256, 97, 98]
    """
    out, i, n = [], 0, len(ids)
    while i < n:
        if i + 1 < n and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def apply_merges(ids: list[int], merges: Sequence[Merge] | Mapping[Pair, tuple[int, int]],
                 ) -> list[int]:
    """Apply learned merges to `ids` in training order (what training did to this chunk).

    Args:
        merges: the list ((a, b), t) in order, or a dict (a, b) -> (position, t) built from
            it once (faster when applying to many chunks).

    >>> apply_merges(list(b"aaabdaaabac"), [((97, 97), 256), ((97, 98), 257), ((256, 257), 258)])
    [258, 100, 258, 97, 99]
    """
    order = merges if isinstance(merges, Mapping) else {
        pair: (k, t) for k, (pair, t) in enumerate(merges)}
    while len(ids) > 1:
        best = min(((order[p][0], p) for p in pairwise(ids) if p in order), default=None)
        if best is None:
            break
        pair = best[1]                        # the earliest-learned merge present
        ids = merge_pair(ids, pair, order[pair][1])
    return ids


def count_chunks(texts: str | Iterable[str], pattern: str = "gpt4",
                 special_tokens: Iterable[str] = ()) -> dict[bytes, int]:
    """Pre-tokenize once: the UTF-8 bytes of every unique chunk -> how often it occurs.

    Each string of `texts` is split on the special tokens first (they are never part of a
    chunk), then by `pattern`. Strings are split separately, so a chunk never spans two.
    """
    pat = regex.compile(resolve_pattern(pattern))
    sre = special_regex(special_tokens)
    counts: Counter[str] = Counter()
    for text in [texts] if isinstance(texts, str) else texts:
        for piece, is_special in split_special(text, sre):
            if not is_special:
                counts.update(pat.findall(piece))
    return {chunk.encode("utf-8"): n for chunk, n in counts.items()}


def _new_token(vocab: list[bytes], ranks: dict[bytes, int], pair: Pair) -> int:
    """The id of bytes(a) + bytes(b): an existing token's id, else a new one appended."""
    token_bytes = vocab[pair[0]] + vocab[pair[1]]
    token = ranks.get(token_bytes)
    if token is None:
        token = ranks[token_bytes] = len(vocab)
        vocab.append(token_bytes)
    return token


def train_bpe_naive(text: str, n_tokens: int, pattern: str = "gpt4",
                    ) -> tuple[list[Merge], dict[bytes, int]]:
    """The textbook trainer: recount every pair of every chunk after each merge.

    Returns (merges, ranks): merges[k] = ((a, b), t) in order; ranks maps token bytes -> id
    for all 256 bytes and every merged token. Stops early if no pair is left.
    """
    chunks = [list(c.encode("utf-8")) for c in regex.findall(resolve_pattern(pattern), text)]
    vocab = [bytes([i]) for i in range(256)]
    ranks = {b: i for i, b in enumerate(vocab)}
    merges: list[Merge] = []
    while len(vocab) < n_tokens:
        step = naive_merge_step(chunks, vocab, ranks)
        if step is None:
            break
        chunks, merge = step
        merges.append(merge)
    return merges, ranks


def naive_merge_step(chunks: list[list[int]], vocab: list[bytes], ranks: dict[bytes, int],
                     ) -> tuple[list[list[int]], Merge] | None:
    """One step of the naive trainer: count all pairs, merge the best one everywhere.

    Returns (new chunks, ((a, b), t)), or None if no chunk has two tokens; `vocab` and `ranks`
    gain the new token.
    """
    counts: dict[Pair, int] = {}
    for ids in chunks:
        get_pair_counts(ids, counts)
    if not counts:
        return None
    pair = min(counts, key=lambda p: (-counts[p], p))     # the tie-break
    token = _new_token(vocab, ranks, pair)
    return [merge_pair(ids, pair, token) for ids in chunks], (pair, token)


def train_bpe(chunk_counts: Mapping[bytes, int], n_tokens: int,
              visited: list[int] | None = None) -> tuple[list[Merge], dict[bytes, int]]:
    """Incremental BPE on unique chunks with counts (see the module docstring).

    Args:
        chunk_counts: chunk bytes -> count, e.g. from `count_chunks`.
        n_tokens: size of the vocabulary to reach (256 bytes + merges; specials not included).
        visited: if given, one entry per merge is appended: how many unique chunks that merge
            visited (the index `where[pair]`: every chunk that holds the pair, plus any that
            held it once and lost it to an earlier merge, which the index keeps).

    Returns:
        (merges, ranks) exactly as `train_bpe_naive` returns them for the same chunks.
    """
    vocab = [bytes([i]) for i in range(256)]
    ranks = {b: i for i, b in enumerate(vocab)}
    words = [list(chunk) for chunk in chunk_counts]
    freqs = list(chunk_counts.values())
    pair_counts: defaultdict[Pair, int] = defaultdict(int)
    where: defaultdict[Pair, set[int]] = defaultdict(set)
    for idx, (w, f) in enumerate(zip(words, freqs, strict=True)):
        for pair in pairwise(w):
            pair_counts[pair] += f
            where[pair].add(idx)
    heap = [(-c, a, b) for (a, b), c in pair_counts.items()]
    heapq.heapify(heap)
    merges: list[Merge] = []
    push, pop = heapq.heappush, heapq.heappop
    while len(vocab) < n_tokens and heap:
        neg, a, b = pop(heap)
        pair = (a, b)
        count = pair_counts.get(pair, 0)
        if count != -neg:                     # stale over-estimate: re-insert the true count
            if count > 0:
                push(heap, (-count, a, b))
            continue
        t = _new_token(vocab, ranks, pair)
        merges.append((pair, t))
        risen: set[Pair] = set()              # pairs (x, t), (t, y): their counts went up
        chunks = where.pop(pair)
        if visited is not None:
            visited.append(len(chunks))
        for idx in chunks:
            w = words[idx]
            n = len(w)
            f = freqs[idx]
            new: list[int] | None = None
            i = copied = 0                    # search from i; w[:copied] is already in new
            while i < n - 1:
                try:
                    j = w.index(a, i, n - 1)  # next a that has a right neighbour
                except ValueError:
                    break
                if w[j + 1] != b:
                    i = j + 1
                    continue
                if new is None:
                    new = []
                new.extend(w[copied:j])
                if new:                       # left neighbour x (may be a t made just before)
                    x = new[-1]
                    pair_counts[(x, a)] -= f
                    left = (x, t)
                    pair_counts[left] += f
                    where[left].add(idx)
                    risen.add(left)
                if j + 2 < n:                 # right neighbour y (from the old chunk)
                    y = w[j + 2]
                    pair_counts[(b, y)] -= f
                    right = (t, y)
                    pair_counts[right] += f
                    where[right].add(idx)
                    risen.add(right)
                new.append(t)
                i = copied = j + 2
            if new is not None:
                new.extend(w[copied:])
                words[idx] = new
        pair_counts.pop(pair, None)
        for p in risen:
            c = pair_counts[p]
            if c > 0:
                push(heap, (-c, p[0], p[1]))
    return merges, ranks
