"""Exact-substring deduplication with a suffix array (Lee et al. 2022, "Deduplicating Training
Data Makes Language Models Better", arXiv:2107.06499, §4.1 "ExactSubstr").

Concatenate the documents into one sequence S (each followed by a separator that occurs
nowhere else), sort all its suffixes (the suffix array SA), and compute the longest common
prefix of each pair of neighbours in that order:

    LCP[i] = |lcp(S[SA[i]:], S[SA[i+1]:])|

Every substring that occurs twice is a common prefix of two suffixes, and the longest match of
any suffix is with one of its neighbours in SA; so the spans [SA[i], SA[i] + LCP[i]) and
[SA[i+1], SA[i+1] + LCP[i]) for every LCP[i] >= k cover exactly the positions that lie in some
repeated substring of length >= k. Lee et al. remove those spans (k = 50 tokens); the unique
separators keep a match from crossing a document boundary.

Construction is prefix doubling (Manber & Myers 1993): rank_j[p] ranks the substring of length
2^j at p (cut at the end of S); sorting the pairs (rank_j[p], rank_j[p + 2^j]) gives rank_{j+1},
until all ranks differ (the pair packed into one int64 key, rank · (n + 1) + second, so one
argsort per level). O(n log² n) with numpy's sorts. Keeping every rank_j gives the LCP of
two suffixes by binary lifting, for all neighbours at once: from the top level down, extend the
match by 2^j where rank_j agrees at both current ends.

Departures: characters (Unicode code points), not GPT-2 tokens, so spans index Python strings;
repeats inside one document count too (as in Lee et al.); in memory, for a few megabytes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["lcp_array", "remove_spans", "repeated_spans", "suffix_array", "suffix_array_levels"]

_SEPARATOR_BASE = 0x110000  # above every code point: document i ends with _SEPARATOR_BASE + i


def suffix_array_levels(seq: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """The suffix array of `seq` and the rank arrays of every doubling level.

    Args:
        seq: (n,) integers.

    Returns:
        (sa, ranks): sa (n,) int64, the start of the i-th smallest suffix; ranks[j] (n,) int32,
        the rank of seq[p : p + 2^j] among all such substrings (equal substrings, equal ranks).
    """
    seq = np.asarray(seq)
    n = len(seq)
    if n == 0:
        return np.zeros(0, np.int64), [np.zeros(0, np.int32)]
    rank = np.unique(seq, return_inverse=True)[1].astype(np.int64).reshape(-1)
    ranks, k = [rank.astype(np.int32)], 1
    sa = np.argsort(rank, kind="stable")
    while rank.max() < n - 1:
        second = np.zeros(n, np.int64)
        second[:n - k] = rank[k:] + 1                   # rank of the next 2^j characters (+1;
        key = rank * (n + 1) + second                   # 0 = past the end): one int64 sort key
        sa = np.argsort(key)                            # sort by (rank, second)
        sorted_key = key[sa]
        new_group = np.concatenate([[0], sorted_key[1:] != sorted_key[:-1]])
        rank = np.empty(n, np.int64)
        rank[sa] = np.cumsum(new_group)
        ranks.append(rank.astype(np.int32))
        k *= 2
    return sa.astype(np.int64), ranks


def suffix_array(seq: np.ndarray) -> np.ndarray:
    """(n,) int64: the starts of the suffixes of `seq` in lexicographic order (a suffix that
    is a prefix of another comes first)."""
    return suffix_array_levels(seq)[0]


def lcp_array(sa: np.ndarray, ranks: list[np.ndarray]) -> np.ndarray:
    """(n - 1,) int64: LCP[i] = length of the common prefix of suffixes sa[i] and sa[i + 1],
    by binary lifting over the doubling levels of `suffix_array_levels`."""
    n = len(sa)
    if n < 2:
        return np.zeros(0, np.int64)
    a, b = sa[:-1], sa[1:]
    h = np.zeros(n - 1, np.int64)
    for j in range(len(ranks) - 1, -1, -1):
        pa, pb = a + h, b + h
        ok = (pa < n) & (pb < n)
        pa, pb = np.minimum(pa, n - 1), np.minimum(pb, n - 1)
        same = ok & (ranks[j][pa] == ranks[j][pb])      # the next 2^j characters agree
        h += same.astype(np.int64) << j
    return h


def repeated_spans(texts: Sequence[str], min_length: int = 50, keep_first: bool = False,
                   ) -> list[list[tuple[int, int]]]:
    """Per text, the merged spans that lie inside a substring of >= `min_length` characters
    occurring at least twice in the collection (in one text or across texts).

    With `keep_first`, only the *later* occurrences are covered: a position is covered when it
    lies in a window of `min_length` characters that also starts at an earlier position of the
    collection (texts in order). Removing these spans keeps one copy of every repeated
    substring, its first. (A maximal run of SA neighbours with LCP >= k shares its first k
    characters; every member of a run but the one that starts earliest covers [start, start+k).)

    Args:
        texts: the documents.
        min_length: k, the shortest repeat that counts (Lee et al. use 50 tokens).
        keep_first: leave each repeated substring's first occurrence uncovered.

    Returns:
        For each text, sorted disjoint (start, end) character spans.

    Raises:
        ValueError: min_length < 1.
    """
    if min_length < 1:
        raise ValueError(f"min_length={min_length} must be >= 1")
    parts, starts, pos = [], [], 0
    for i, t in enumerate(texts):
        starts.append(pos)
        parts.append(np.fromiter(map(ord, t), np.int64, len(t)))
        parts.append(np.array([_SEPARATOR_BASE + i], np.int64))
        pos += len(t) + 1
    if not parts:
        return []
    seq = np.concatenate(parts)
    sa, ranks = suffix_array_levels(seq)
    lcp = lcp_array(sa, ranks)
    linked = lcp >= min_length                           # (n - 1,) neighbours i, i+1 share k
    cover = np.zeros(len(seq) + 1, np.int64)             # +1 at a span's start, -1 at its end
    if keep_first:
        member = np.zeros(len(seq), bool)                # in some run of linked neighbours
        member[:-1] |= linked
        member[1:] |= linked
        opens = member & ~np.concatenate([[False], linked])  # first member of its run
        run = np.cumsum(opens) - 1                       # run id (valid for members)
        idx = np.flatnonzero(member)
        starts_in = sa[idx]
        earliest = np.full(int(run[idx].max()) + 1 if len(idx) else 0, len(seq), np.int64)
        np.minimum.at(earliest, run[idx], starts_in)
        later = starts_in[starts_in != earliest[run[idx]]]
        np.add.at(cover, later, 1)
        np.add.at(cover, later + min_length, -1)
    else:
        hit = np.flatnonzero(linked)
        for first in (sa[hit], sa[hit + 1]):
            np.add.at(cover, first, 1)
            np.add.at(cover, first + lcp[hit], -1)
    covered = np.cumsum(cover[:-1]) > 0
    out = []
    for start, t in zip(starts, texts, strict=True):
        mask = np.concatenate([[False], covered[start:start + len(t)], [False]])
        edges = np.flatnonzero(mask[1:] != mask[:-1])   # alternating span starts and ends
        out.append([(int(s), int(e)) for s, e in zip(edges[::2], edges[1::2], strict=True)])
    return out


def remove_spans(text: str, spans: Sequence[tuple[int, int]]) -> str:
    """`text` without the given sorted, disjoint spans."""
    keep, last = [], 0
    for s, e in spans:
        keep.append(text[last:s])
        last = e
    keep.append(text[last:])
    return "".join(keep)
