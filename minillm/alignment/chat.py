"""The chat template, its special tokens, and growing a model's vocabulary to hold them.

An instruction-tuned model reads a conversation in a fixed *format*: role markers it never
confused with text, and an end-of-turn token that tells decoding where to stop (InstructGPT,
arXiv:2203.02155; the ChatML-style markers most chat models use). minillm's default:

    <|user|>{prompt}<|end|><|assistant|>{response}<|end|>

The three markers are *new special tokens*: appended to the tokenizer's vocabulary (byte: ids
257, 258, ... after <|endoftext|>; BPE: after its largest id) and to the model's embedding and
output head. New rows start at the mean of the existing embeddings (Hewitt 2021, "Initializing
new word embeddings"): the new tokens then look like an average token, and since no existing
row changes, the logits of the old tokens are exactly what they were (tested).

The user's text and the response are encoded *without* special tokens, so a prompt that
contains "<|end|>" as text cannot end its turn early (prompt injection in miniature); only the
template's own markers become special ids. Decoding the ids gives the text back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from minillm.tokenizers import BPETokenizer, ByteTokenizer

__all__ = ["CHAT_TOKENS", "ChatTemplate", "add_special_tokens", "resize_token_embeddings"]

CHAT_TOKENS = ("<|user|>", "<|assistant|>", "<|end|>")
_FIELD_RE = re.compile(r"\{(\w*)\}")


@dataclass(frozen=True)
class ChatTemplate:
    """A one-turn chat format with a `{prompt}` and a `{response}` field.

    Args:
        format: the text around the two fields; the special tokens in it must be in
            `special_tokens`.
        special_tokens: the markers the template uses.
        stop: the token that ends the response (decoding stops there).
    """

    format: str = "<|user|>{prompt}<|end|><|assistant|>{response}<|end|>"
    special_tokens: tuple[str, ...] = CHAT_TOKENS
    stop: str = "<|end|>"

    def __post_init__(self) -> None:
        fields = _FIELD_RE.findall(self.format)
        if fields != ["prompt", "response"]:
            raise ValueError(f"ChatTemplate format {self.format!r} has fields {fields}; it needs "
                             "exactly '{prompt}' then '{response}' (a template without a "
                             "response has nothing to train on)")
        if self.stop not in self.special_tokens:
            raise ValueError(f"stop={self.stop!r} is not one of special_tokens "
                             f"{list(self.special_tokens)}")
        if not self.format.split("{response}")[1].startswith(self.stop):
            raise ValueError(f"ChatTemplate format {self.format!r}: the response must be followed "
                             f"by the stop token {self.stop!r}, or decoding never ends")

    @property
    def pieces(self) -> tuple[str, str, str]:
        """(before the prompt, between prompt and response, after the response)."""
        head, rest = self.format.split("{prompt}")
        middle, tail = rest.split("{response}")
        return head, middle, tail

    def render(self, prompt: str, response: str | None = None) -> str:
        """The conversation as text; with response=None, the prompt part that decoding extends."""
        head, middle, tail = self.pieces
        text = head + prompt + middle
        return text if response is None else text + response + tail

    def parse(self, text: str) -> tuple[str, str]:
        """(prompt, response) of a rendered conversation; inverse of `render`."""
        head, middle, tail = self.pieces
        if not (text.startswith(head) and text.endswith(tail) and middle in text[len(head):]):
            raise ValueError(f"text does not follow the template {self.format!r}: {text[:80]!r}")
        body = text[len(head):len(text) - len(tail)]
        prompt, response = body.split(middle, 1)
        return prompt, response

    def _check(self, tokenizer) -> None:
        missing = [t for t in self.special_tokens if t not in tokenizer.special_tokens]
        if missing:
            raise ValueError(f"the tokenizer has no special tokens {missing} (it has "
                             f"{list(tokenizer.special_tokens)}): add them with "
                             "add_special_tokens(tokenizer, CHAT_TOKENS) and grow the model with "
                             "resize_token_embeddings")

    def encode(self, tokenizer, prompt: str, response: str | None = None
               ) -> tuple[list[int], int]:
        """Token ids of the conversation and how many of them are the prompt part.

        Returns:
            (ids, n_prompt): ids[:n_prompt] is `render(prompt)`; the rest is the response and
            the template's tail (the stop token).
        """
        self._check(tokenizer)
        head, middle, tail = self.pieces
        marks = list(self.special_tokens)

        def special(text: str) -> list[int]:  # the template's own text: markers are special
            return tokenizer.encode(text, allowed_special=marks)

        ids = special(head) + tokenizer.encode(prompt) + special(middle)
        n_prompt = len(ids)
        if response is not None:
            if not response:
                raise ValueError(f"the response to {prompt[:40]!r} is empty: an SFT example "
                                 "needs a response to train on")
            ids += tokenizer.encode(response) + special(tail)
        return ids, n_prompt

    def stop_id(self, tokenizer) -> int:
        self._check(tokenizer)
        return tokenizer.special_tokens[self.stop]


def add_special_tokens(tokenizer, tokens=CHAT_TOKENS):
    """A copy of `tokenizer` with `tokens` appended as new special tokens (ids after the
    current largest); tokens it already has keep their ids.

    Args:
        tokenizer: a `ByteTokenizer` or `BPETokenizer`.
        tokens: the new special tokens.
    Returns:
        A new tokenizer of the same type.
    """
    new = [t for t in dict.fromkeys(tokens) if t not in tokenizer.special_tokens]
    if isinstance(tokenizer, ByteTokenizer):
        return ByteTokenizer(special_tokens=list(tokenizer.special_tokens) + new)
    if isinstance(tokenizer, BPETokenizer):
        start = tokenizer.vocab_size
        specials = dict(tokenizer.special_tokens) | {t: start + i for i, t in enumerate(new)}
        return BPETokenizer(tokenizer.ranks, tokenizer.pattern, specials, name=tokenizer.name)
    raise ValueError(f"add_special_tokens supports ByteTokenizer and BPETokenizer, not "
                     f"{type(tokenizer).__name__}")


@torch.no_grad()
def resize_token_embeddings(model: nn.Module, vocab_size: int) -> nn.Module:
    """Grow the model's token embedding and output head to `vocab_size` rows, in place.

    New embedding rows (and, for an untied head, new head rows) are the mean of the existing
    ones; existing rows are copied unchanged, so old tokens' logits do not move.

    Args:
        model: a GPT.
        vocab_size: the new size (>= the current one).
    Returns:
        The same model, with `model.config.vocab_size` updated.
    """
    old = model.config.vocab_size
    if vocab_size < old:
        raise ValueError(f"vocab_size={vocab_size} is below the model's {old}: shrinking would "
                         "drop tokens the model knows")
    if vocab_size == old:
        return model

    def grown(weight: torch.Tensor) -> nn.Parameter:
        mean = weight.mean(dim=0, keepdim=True)
        return nn.Parameter(torch.cat([weight, mean.expand(vocab_size - old, -1)], dim=0))

    emb = model.tok_emb
    model.tok_emb = nn.Embedding(vocab_size, emb.embedding_dim, device=emb.weight.device,
                                 dtype=emb.weight.dtype)
    model.tok_emb.weight = grown(emb.weight)
    head = model.lm_head
    model.lm_head = nn.Linear(head.in_features, vocab_size, bias=False,
                              device=head.weight.device, dtype=head.weight.dtype)
    if model.config.tie_embeddings:
        model.lm_head.weight = model.tok_emb.weight
    else:
        model.lm_head.weight = grown(head.weight)
    model.config.vocab_size = vocab_size
    return model
