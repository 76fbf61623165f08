"""`BPETokenizer`: byte-level BPE with regex pre-tokenization, special tokens and tiktoken files.

A tokenizer is three things, exactly as in tiktoken: `ranks` (token bytes -> id, the 256
single bytes included), a split `pattern`, and `special_tokens` (string -> id). Encoding a text:

1. cut the text at allowed special tokens (each becomes its id);
2. split every other piece with the pattern into chunks (see `minillm.tokenizers.patterns`);
3. BPE each chunk: start from its bytes and repeatedly join the adjacent pair whose
   *concatenation* has the lowest rank (the leftmost such pair if it occurs twice), until no
   adjacent concatenation is a token.  A chunk that is itself a token is one id at once.

Step 3 is tiktoken's rule (Radford et al. 2019 BPE as OpenAI ships it), not "apply the training
merges in order": the two agree except where a token can be built from two different splits, and
using tiktoken's rule is what makes ids identical to tiktoken's for any rank file (tested on
cl100k). Decoding joins token bytes and decodes UTF-8 once, with `errors="replace"` by default,
so no id sequence makes it raise unless `errors="strict"`.

Training (`BPETokenizer.train`) is `minillm.tokenizers.trainer.train_bpe`; the vocabulary size
counts the 256 bytes, the merges *and* the special tokens (as in Hugging Face `tokenizers`).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import regex

from minillm.io import CheckpointError, atomic_write_json, read_json
from minillm.tokenizers import tiktoken_bridge
from minillm.tokenizers.byte import check_special_tokens, check_tokenizer_dict
from minillm.tokenizers.patterns import resolve_pattern, special_regex, split_special
from minillm.tokenizers.tiktoken_bridge import (
    CONFIG_FILE,
    RANKS_FILE,
    dump_ranks,
    encoding_parts,
    load_tiktoken_ranks,
    parse_ranks,
    save_tiktoken_ranks,
)
from minillm.tokenizers.trainer import Merge, count_chunks, train_bpe

__all__ = ["BPETokenizer", "bpe_chunk", "bpe_chunk_naive", "from_tiktoken", "load_tokenizer", "recover_merges",
           "save_tokenizer", "to_tiktoken"]

_NON_SPACE = regex.compile(r"\S")


def bpe_chunk(piece: bytes, ranks: dict[bytes, int], max_rank: int | None = None) -> list[bytes]:
    """Split one chunk into tokens by tiktoken's rule (lowest-rank adjacent concatenation first).

    The rule, done naively, rescans every adjacent pair after each merge: O(n^2) for a chunk of
    n bytes (a run of 20,000 spaces is one chunk). Here the candidate pairs sit in a heap keyed
    by (rank, start offset), so the next merge is the lowest rank and, on a tie, the leftmost,
    as in the rescan; the parts are a linked list over byte offsets (`end[start]`,
    `prev[start]`). A merge turns (a, b) into ab and pushes the two pairs ab now forms with
    its neighbours; heap entries whose parts have since changed are skipped when popped. Each
    merge costs O(log n), the chunk O(n log n), and the tokens are exactly the rescan's.

    Args:
        piece: the chunk's bytes (every single byte must be in `ranks`).
        ranks: token bytes -> rank.
        max_rank: if given, only tokens with rank < max_rank may be formed (used to recover
            the merge that made a token).
    Returns:
        The tokens' bytes, left to right.
    """
    n = len(piece)
    if n < 2:
        return [piece] if n else []
    limit = max_rank if max_rank is not None else float("inf")
    end = list(range(1, n + 1))      # end[s]: where the part starting at byte s ends
    prev = list(range(-1, n - 1))    # prev[s]: start of the part before it (-1: none)
    alive = [True] * n               # whether a part starts at byte s
    heap = []                        # (rank of the pair's concatenation, left start, right end)
    for s in range(n - 1):
        r = ranks.get(piece[s:s + 2])
        if r is not None and r < limit:
            heap.append((r, s, s + 2))
    heapq.heapify(heap)
    while heap:
        _, s, e = heapq.heappop(heap)
        m = end[s] if alive[s] else -1
        if m < 0 or m >= n or not alive[m] or end[m] != e:
            continue  # stale: one of the two parts was merged into something else since
        alive[m] = False             # join (s, m) and (m, e) into (s, e)
        end[s] = e
        if e < n:
            prev[e] = s
            r = ranks.get(piece[s:end[e]])
            if r is not None and r < limit:
                heapq.heappush(heap, (r, s, end[e]))
        p = prev[s]
        if p >= 0:
            r = ranks.get(piece[p:e])
            if r is not None and r < limit:
                heapq.heappush(heap, (r, p, e))
    parts, s = [], 0
    while s < n:
        parts.append(piece[s:end[s]])
        s = end[s]
    return parts


def bpe_chunk_naive(piece: bytes, ranks: dict[bytes, int],
                    max_rank: int | None = None) -> list[bytes]:
    """`bpe_chunk` by rescanning every pair after each merge: O(n^2), the rule as written.
    Kept as the reference the fast version is tested against."""
    parts = [piece[i:i + 1] for i in range(len(piece))]
    while len(parts) > 1:
        best, best_i = None, -1
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and (best is None or r < best):
                best, best_i = r, i
        if best is None or (max_rank is not None and best >= max_rank):
            break
        parts[best_i:best_i + 2] = [parts[best_i] + parts[best_i + 1]]
    return parts


def recover_merges(ranks: dict[bytes, int]) -> list[Merge]:
    """The merges ((a, b), t) behind a rank table, in rank order (minbpe's trick).

    Token t's pair is found by BPE-ing its bytes with only the tokens ranked below t: that
    stops at two parts, the pair that made t. (If it does not, the split into two lower-ranked
    tokens with the smallest larger rank is used.)
    """
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) < 2:
            continue
        parts = bpe_chunk(token, ranks, max_rank=rank)
        if len(parts) != 2:
            splits = [(token[:k], token[k:]) for k in range(1, len(token))
                      if ranks.get(token[:k], rank) < rank and ranks.get(token[k:], rank) < rank]
            if not splits:
                raise ValueError(f"token {token!r} (rank {rank}) is not two lower-ranked tokens")
            parts = list(min(splits, key=lambda s: (max(ranks[s[0]], ranks[s[1]]), s)))
        merges.append(((ranks[parts[0]], ranks[parts[1]]), rank))
    return merges


class BPETokenizer:
    """Byte-level BPE tokenizer; see the module docstring.

    >>> tok = BPETokenizer.train("aaabdaaabac", vocab_size=259, special_tokens=(), pattern=".+")
    >>> tok.encode("aaabdaaabac")
    [258, 100, 258, 97, 99]
    >>> tok.decode([258, 100])
    'aaabd'
    """

    def __init__(self, ranks: dict[bytes, int], pattern: str = "gpt4",
                 special_tokens: dict[str, int] | None = None,
                 merges: Sequence[Merge] | None = None, name: str = "minillm-bpe"):
        missing = [b for b in range(256) if bytes([b]) not in ranks]
        if missing:
            raise ValueError(f"ranks lacks {len(missing)} of the 256 single bytes (e.g. "
                             f"{bytes([missing[0]])!r}); a byte-level BPE needs all of them")
        self.ranks = dict(ranks)
        self.special_tokens = dict(special_tokens or {})
        self.pattern = resolve_pattern(pattern)
        self.name = name
        self._decoder = {i: b for b, i in self.ranks.items()}
        if len(self._decoder) != len(self.ranks):
            raise ValueError("ranks maps two tokens to the same id; ids must be unique")
        clash = set(self.special_tokens.values()) & set(self._decoder)
        if clash or len(set(self.special_tokens.values())) != len(self.special_tokens):
            raise ValueError(f"special token ids {sorted(self.special_tokens.values())} repeat "
                             "or reuse ordinary token ids; give each special its own id")
        check_special_tokens(list(self.special_tokens))
        for s, i in self.special_tokens.items():
            self._decoder[i] = s.encode("utf-8")
        self._merges = list(merges) if merges is not None else None
        self._pat = regex.compile(self.pattern)
        self._special_res: dict[frozenset[str], regex.Pattern | None] = {}
        self._cache: dict[str, list[int]] = {}

    # ----------------------------------------------------------------------------- training
    @classmethod
    def train(cls, texts: str | Iterable[str], vocab_size: int,
              special_tokens: Sequence[str] = ("<|endoftext|>",), pattern: str = "gpt4",
              name: str = "minillm-bpe") -> BPETokenizer:
        """Train on a string or an iterator of strings (each pre-tokenized on its own).

        Args:
            texts: the training text(s). Special tokens in them are cut out, never merged.
            vocab_size: 256 bytes + merges + len(special_tokens).
            special_tokens: strings that get the ids after the merges, in this order.
            pattern: "gpt2", "gpt4"/"cl100k" or a `regex` pattern.
        """
        special_tokens = check_special_tokens(special_tokens)
        if vocab_size < 256 + len(special_tokens):
            raise ValueError(f"vocab_size={vocab_size} is below 256 bytes + "
                             f"{len(special_tokens)} special tokens; raise it")
        chunks = count_chunks(texts, pattern, special_tokens)
        merges, ranks = train_bpe(chunks, vocab_size - len(special_tokens))
        specials = {s: len(ranks) + k for k, s in enumerate(special_tokens)}
        return cls(ranks, pattern, specials, merges=merges, name=name)

    # ----------------------------------------------------------------------------- properties
    @property
    def vocab_size(self) -> int:
        """Largest id + 1 (tiktoken's `n_vocab`)."""
        return max(self._decoder) + 1

    @property
    def eot_id(self) -> int | None:
        return self.special_tokens.get("<|endoftext|>")

    @property
    def merges(self) -> list[Merge]:
        """((a, b), t) in the order they were learned (recovered from the ranks if loaded)."""
        if self._merges is None:
            self._merges = recover_merges(self.ranks)
        return self._merges

    def id_to_bytes(self, token: int) -> bytes:
        try:
            return self._decoder[int(token)]
        except KeyError:
            raise ValueError(f"token id {token} is not in this tokenizer's vocabulary "
                             f"(vocab_size {self.vocab_size})") from None

    # ----------------------------------------------------------------------------- encoding
    def _special_re(self, allowed_special: str | Iterable[str]) -> regex.Pattern | None:
        allowed = frozenset(self.special_tokens if allowed_special == "all" else
                            [allowed_special] if isinstance(allowed_special, str)
                            else allowed_special)
        if allowed not in self._special_res:
            unknown = allowed - set(self.special_tokens)
            if unknown:
                raise ValueError(f"allowed_special names unknown special tokens {sorted(unknown)}")
            self._special_res[allowed] = special_regex(allowed)
        return self._special_res[allowed]

    def _encode_chunk(self, chunk: str) -> list[int]:
        ids = self._cache.get(chunk)
        if ids is None:
            piece = chunk.encode("utf-8")
            token = self.ranks.get(piece)
            ids = [token] if token is not None else [
                self.ranks[p] for p in bpe_chunk(piece, self.ranks)]
            if len(self._cache) >= 200_000:       # bound the memory of the chunk cache
                self._cache.clear()
            self._cache[chunk] = ids
        return ids

    def encode(self, text: str, allowed_special: str | Iterable[str] = ()) -> list[int]:
        """Token ids of `text`.

        Args:
            allowed_special: "all" or the special tokens to recognise; the others are encoded
                as ordinary text (tiktoken's `disallowed_special=()` behaviour).
        """
        ids: list[int] = []
        encode_chunk = self._encode_chunk
        for piece, is_special in split_special(text, self._special_re(allowed_special)):
            if is_special:
                ids.append(self.special_tokens[piece])
                continue
            for chunk in self._pat.findall(piece):
                ids.extend(encode_chunk(chunk))
        return ids

    def encode_batch(self, texts: Iterable[str],
                     allowed_special: str | Iterable[str] = ()) -> list[list[int]]:
        """`encode` for each text (pure Python: one thread, the GIL would not let more help)."""
        return [self.encode(t, allowed_special) for t in texts]

    def encode_iterable(self, texts: Iterable[str], allowed_special: str | Iterable[str] = (),
                        buffer_chars: int = 1 << 16) -> Iterator[int]:
        """Stream the ids of "".join(texts) (e.g. an open file, line by line) in bounded memory.

        Text is buffered until `buffer_chars` and cut at the last newline that has a
        non-whitespace character on both sides and lies inside no special token. With the GPT-2
        and cl100k patterns no chunk crosses such a cut, so the ids equal `encode` of the whole
        text (tested). Memory is bounded by `buffer_chars` plus the longest stretch without
        such a newline.
        """
        sre = self._special_re(allowed_special)
        longest = max((len(s) for s in self.special_tokens), default=1)
        parts: list[str] = []
        size = 0
        for text in texts:
            parts.append(text)
            size += len(text)
            if size < buffer_chars:
                continue
            buf = "".join(parts)
            cut = _safe_cut(buf, sre, longest)
            if cut > 0:
                yield from self.encode(buf[:cut], allowed_special)
                buf = buf[cut:]
            parts, size = [buf], len(buf)
        yield from self.encode("".join(parts), allowed_special)

    def encode_tensor(self, text: str):
        """`encode` as a 1-D int64 torch tensor (no special tokens)."""
        import torch

        return torch.tensor(self.encode(text), dtype=torch.long)

    # ----------------------------------------------------------------------------- decoding
    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        return b"".join(self.id_to_bytes(i) for i in ids)

    def decode(self, ids: Iterable[int], errors: str = "replace") -> str:
        """Text of `ids`; bytes that are not valid UTF-8 become U+FFFD unless errors="strict".

        Raises:
            ValueError: an id outside the vocabulary.
            UnicodeDecodeError: only with errors="strict".
        """
        return self.decode_bytes(ids).decode("utf-8", errors=errors)

    # ----------------------------------------------------------------------------- files
    def to_dict(self) -> dict:
        """Everything in one JSON-able dict (for a checkpoint's tokenizer.json)."""
        return {"type": "bpe", "name": self.name, "pattern": self.pattern,
                "special_tokens": self.special_tokens, "ranks": dump_ranks(self.ranks)}

    @classmethod
    def from_dict(cls, d: dict) -> BPETokenizer:
        """The tokenizer `to_dict` wrote, ranks inline (ValueError for another type's dict)."""
        check_tokenizer_dict(d, "bpe")
        return cls(parse_ranks(d["ranks"]), d["pattern"], d.get("special_tokens", {}),
                   name=d.get("name", "minillm-bpe"))

    def save(self, folder: str | Path) -> Path:
        """Write folder/tokenizer.tiktoken (tiktoken's rank file) and folder/tokenizer.json,
        each atomically; returns the folder."""
        folder = Path(folder)
        save_tiktoken_ranks(self.ranks, folder / RANKS_FILE)
        atomic_write_json(folder / CONFIG_FILE, {
            "type": "bpe", "name": self.name, "pattern": self.pattern,
            "special_tokens": self.special_tokens, "ranks_file": RANKS_FILE,
            "n_ranks": len(self.ranks)})
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> BPETokenizer:
        """Read a folder written by `save`.

        Raises:
            CheckpointError: a file is missing or corrupt, or the folder holds another kind of
                tokenizer.
        """
        folder = Path(folder)
        config_path = folder / CONFIG_FILE
        config = read_json(config_path, "tokenizer.json (is this a saved BPE tokenizer?)")
        if config.get("type") != "bpe":
            raise CheckpointError(f"{config_path} has type {config.get('type')!r}, not 'bpe'")
        ranks_path = folder / config.get("ranks_file", RANKS_FILE)
        ranks = load_tiktoken_ranks(ranks_path)
        if "n_ranks" in config and len(ranks) != config["n_ranks"]:
            raise CheckpointError(f"{ranks_path} has {len(ranks)} tokens, the JSON says "
                                  f"{config['n_ranks']}; the folder is corrupt, save it again")
        return cls(ranks, config["pattern"], config.get("special_tokens", {}),
                   name=config.get("name", "minillm-bpe"))

    def to_tiktoken(self):
        """A `tiktoken.Encoding` with the same ranks, pattern and specials (fast encoding)."""
        return tiktoken_bridge.to_tiktoken(self)

    @classmethod
    def from_tiktoken(cls, encoding) -> BPETokenizer:
        """Load any `tiktoken.Encoding` (e.g. cl100k_base) into minillm's own encoder, with
        identical ids (merges recovered lazily)."""
        ranks, pattern, special, name = encoding_parts(encoding)
        return cls(ranks, pattern, special, name=name)

    def __repr__(self) -> str:
        return (f"BPETokenizer(name={self.name!r}, vocab_size={self.vocab_size}, "
                f"specials={list(self.special_tokens)})")


def _safe_cut(buf: str, sre: regex.Pattern | None, longest: int) -> int:
    """Index just after the last newline with non-space on both sides that is inside no special
    token match; 0 if there is none."""
    end = len(buf) - 1
    while True:
        p = buf.rfind("\n", 1, end)
        if p < 0:
            return 0
        end = p
        if not (_NON_SPACE.match(buf, p - 1) and _NON_SPACE.match(buf, p + 1)):
            continue
        if sre is not None:
            lo = max(0, p + 1 - longest)
            if any(m.start() < p + 1 < m.end() for m in sre.finditer(buf, lo, p + longest)):
                continue
        return p + 1


def save_tokenizer(tokenizer: BPETokenizer, folder: str | Path) -> Path:
    """`tokenizer.save(folder)`: the rank file and tokenizer.json; returns the folder."""
    return tokenizer.save(folder)


def load_tokenizer(folder: str | Path) -> BPETokenizer:
    """`BPETokenizer.load(folder)`."""
    return BPETokenizer.load(folder)


def to_tiktoken(tokenizer: BPETokenizer, name: str | None = None):
    """A `tiktoken.Encoding` giving the tokenizer's ids (see `tiktoken_bridge.to_tiktoken`)."""
    return tiktoken_bridge.to_tiktoken(tokenizer, name)


def from_tiktoken(encoding) -> BPETokenizer:
    """`BPETokenizer.from_tiktoken(encoding)`."""
    return BPETokenizer.from_tiktoken(encoding)
