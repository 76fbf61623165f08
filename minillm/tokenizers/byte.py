"""The byte-level tokenizer: every UTF-8 byte is a token (ids 0-255), plus special tokens.

It is the course's default until chapter 04 trains a BPE: no vocabulary to learn, no unknown
token, and one token per byte, so a loss in nats per token *is* nats per byte.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import torch

__all__ = ["ByteTokenizer", "check_special_tokens", "check_tokenizer_dict"]


def check_special_tokens(special_tokens: str | Sequence[str]) -> tuple[str, ...]:
    """The special tokens as a tuple (one string alone counts as one token), refusing
    duplicates and the empty string (it would match between every two characters)."""
    tokens = (special_tokens,) if isinstance(special_tokens, str) else tuple(special_tokens)
    if len(set(tokens)) != len(tokens):
        raise ValueError(f"special_tokens={list(tokens)} has duplicates")
    if "" in tokens:
        raise ValueError("special_tokens holds the empty string, which would match between "
                         "every two characters: remove it")
    return tokens


class ByteTokenizer:
    """Byte ids 0-255, then one id per special token in the order given.

    >>> tok = ByteTokenizer(special_tokens=["<|endoftext|>"])
    >>> tok.encode("hi<|endoftext|>", allowed_special="all")
    [104, 105, 256]
    >>> tok.decode([104, 105, 256])
    'hi<|endoftext|>'
    """

    def __init__(self, special_tokens: Sequence[str] = ("<|endoftext|>",)):
        special_tokens = check_special_tokens(special_tokens)
        self.special_tokens = {tok: 256 + i for i, tok in enumerate(special_tokens)}
        self.inverse_special = {i: tok for tok, i in self.special_tokens.items()}

    @property
    def vocab_size(self) -> int:
        """256 bytes + the special tokens."""
        return 256 + len(self.special_tokens)

    @property
    def eot_id(self) -> int | None:
        """The id of <|endoftext|>, or None without it."""
        return self.special_tokens.get("<|endoftext|>")

    def encode(self, text: str, allowed_special: str | Iterable[str] = ()) -> list[int]:
        """UTF-8 bytes of `text`; special tokens are matched only if `allowed_special` names
        them (or is "all"), otherwise they are encoded as their plain bytes."""
        allowed = (set(self.special_tokens) if allowed_special == "all" else {allowed_special}
                   if isinstance(allowed_special, str) else set(allowed_special))
        unknown = allowed - set(self.special_tokens)
        if unknown:
            raise ValueError(f"allowed_special names unknown special tokens {sorted(unknown)}")
        if not allowed:
            return list(text.encode("utf-8"))
        # longest first, so that a special token that contains another one wins
        pattern = "(" + "|".join(re.escape(t) for t in sorted(allowed, key=len, reverse=True)) + ")"
        ids: list[int] = []
        for i, piece in enumerate(re.split(pattern, text)):
            # re.split with one group alternates: text, special, text, special, ...
            ids.extend([self.special_tokens[piece]] if i % 2 else piece.encode("utf-8"))
        return ids

    def encode_tensor(self, text: str) -> torch.Tensor:
        """Encode a large text fast as a 1-D int64 tensor (no special tokens)."""
        data = bytearray(text.encode("utf-8"))
        if not data:
            return torch.empty(0, dtype=torch.long)
        return torch.frombuffer(data, dtype=torch.uint8).to(torch.long)

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The bytes `ids` stand for (a special token as its UTF-8), as `BPETokenizer`'s."""
        out = bytearray()
        for i in ids:
            i = int(i)
            if i < 256:
                out.append(i)
            elif i in self.inverse_special:
                out += self.inverse_special[i].encode("utf-8")
            else:
                raise ValueError(f"token id {i} is outside this tokenizer's vocabulary "
                                 f"(size {self.vocab_size})")
        return bytes(out)

    def decode(self, ids: Iterable[int], errors: str = "replace") -> str:
        """Bytes back to text; invalid UTF-8 becomes U+FFFD unless `errors="strict"`."""
        out: list[str] = []
        buf = bytearray()
        for i in ids:
            i = int(i)
            if i < 256:
                buf.append(i)
                continue
            if i not in self.inverse_special:
                raise ValueError(f"token id {i} is outside this tokenizer's vocabulary "
                                 f"(size {self.vocab_size})")
            out.append(buf.decode("utf-8", errors=errors))
            buf.clear()
            out.append(self.inverse_special[i])
        out.append(buf.decode("utf-8", errors=errors))
        return "".join(out)

    def to_dict(self) -> dict:
        """{"type": "byte", "special_tokens": [...]} (a checkpoint's tokenizer.json)."""
        return {"type": "byte", "special_tokens": list(self.special_tokens)}

    @classmethod
    def from_dict(cls, d: dict) -> ByteTokenizer:
        """The tokenizer `to_dict` wrote (ValueError for another type's dict)."""
        return cls(special_tokens=check_tokenizer_dict(d, "byte").get("special_tokens", ()))


def check_tokenizer_dict(d: dict, kind: str) -> dict:
    """`d`, if it is the `to_dict` of a tokenizer of type `kind` ("byte" or "bpe").

    Raises:
        ValueError: a dict of another type.
    """
    if d.get("type") != kind:
        raise ValueError(f"tokenizer type {d.get('type')!r} is not {kind!r}")
    return d
