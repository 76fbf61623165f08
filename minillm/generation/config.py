"""`GenerationConfig`: every decoding choice in one validated dataclass (Hugging Face's names).

`generate(model, ids, max_new_tokens=20, do_sample=False, num_beams=4, ...)` builds one of these
from its keyword arguments (or takes `generation_config=`), so each argument is checked once,
here, with an error that names it. The config also decides what the arguments mean together:

- `sampling`: `do_sample`, or when `do_sample=None` "sample unless temperature == 0", except in
  beam and contrastive search, which are deterministic (minillm's default before this config;
  pass `do_sample=False` for Hugging Face's greedy default);
- `contrastive`: `penalty_alpha > 0` with `top_k > 1` (and one beam);
- `stop_ids` / `pad_id`: the eos ids as a list, and what finished rows are padded with
  (`pad_token_id`, else the first eos id, else 0), the same for every strategy.

Departures from `transformers.GenerationConfig`: `top_k=0` is an error (not "no top-k"); no
`max_length` (only `max_new_tokens`); invalid values raise instead of warning.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from minillm.generation.processors import (
    LogitsProcessor,
    MinP,
    NoRepeatNGram,
    RepetitionPenalty,
    TopK,
    TopP,
    Typical,
    build_processors,
)
from minillm.utils import check_finite_fields, config_from_dict

__all__ = ["GenerationConfig", "eos_ids", "pad_id"]


def eos_ids(eos_token_id: Any) -> list[int]:
    """Stop ids as a list of ints from None, an int (Python, NumPy or a 0-d tensor) or a
    sequence/tensor of them; None or an empty list means no stop token.

    Raises:
        ValueError: the values are not integers.
    """
    if eos_token_id is None:
        return []
    values = torch.as_tensor(eos_token_id).flatten()
    if values.numel() == 0:
        return []
    if values.is_floating_point() or values.is_complex() or values.dtype == torch.bool:
        raise ValueError(f"eos_token_id={eos_token_id!r} must be token ids (integers)")
    return [int(v) for v in values.tolist()]


def pad_id(pad_token_id: int | None, stops: Sequence[int]) -> int:
    """What finished rows are filled with: `pad_token_id`, else the first stop id, else 0."""
    if pad_token_id is not None:
        return int(pad_token_id)
    return int(stops[0]) if stops else 0


@dataclass
class GenerationConfig:
    max_new_tokens: int = 20                  # tokens to add (fewer if every row stops)
    do_sample: bool | None = None             # sample / argmax; None: sample iff temperature > 0
    temperature: float = 1.0                  # 0 means greedy
    top_k: int | None = None                  # keep the k most likely tokens
    top_p: float | None = None                # nucleus: smallest set with mass >= top_p
    min_p: float | None = None                # keep tokens >= min_p * the most likely one
    typical_p: float | None = None            # locally typical sampling mass
    repetition_penalty: float | None = None   # CTRL's penalty on seen tokens (1 = none)
    no_repeat_ngram_size: int | None = None   # ban repeating n-grams of this size
    num_beams: int = 1                        # > 1: beam search
    length_penalty: float = 1.0               # beams: score = sum log p / length ** this
    early_stopping: bool | str = False        # beams: True, False or "never"
    penalty_alpha: float | None = None        # contrastive search's α (with top_k > 1)
    num_assistant_tokens: int = 5             # speculative decoding: draft tokens per step
    eos_token_id: int | Sequence[int] | None = None  # stop id(s)
    pad_token_id: int | None = None           # fills finished rows (default: first eos id)
    use_cache: bool = True                    # KV cache (same tokens either way, faster)

    def __post_init__(self) -> None:
        check_finite_fields(self)
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int) \
                or self.max_new_tokens < 0:
            raise ValueError(f"max_new_tokens={self.max_new_tokens!r} must be a non-negative "
                             "integer")
        if self.temperature < 0:
            raise ValueError(f"temperature={self.temperature} must be >= 0 (0 means greedy)")
        if self.do_sample not in (None, True, False):
            raise ValueError(f"do_sample={self.do_sample!r} must be True, False or None")
        # the processors validate their own arguments (one check, one message per field)
        for cls, value in ((TopK, self.top_k), (TopP, self.top_p), (MinP, self.min_p),
                           (Typical, self.typical_p), (RepetitionPenalty, self.repetition_penalty),
                           (NoRepeatNGram, self.no_repeat_ngram_size or None)):
            if value is not None:
                cls(value)
        if self.penalty_alpha is not None and not 0 <= self.penalty_alpha <= 1:
            raise ValueError(f"penalty_alpha={self.penalty_alpha} must be in [0, 1]")
        if not isinstance(self.num_beams, int) or self.num_beams < 1:
            raise ValueError(f"num_beams={self.num_beams} must be >= 1")
        if self.early_stopping not in (True, False, "never"):
            raise ValueError(f"early_stopping={self.early_stopping!r} must be True, False or "
                             "'never'")
        if not isinstance(self.num_assistant_tokens, int) or self.num_assistant_tokens < 1:
            raise ValueError(f"num_assistant_tokens={self.num_assistant_tokens} must be >= 1")
        self.eos_token_id = tuple(eos_ids(self.eos_token_id))
        if self.pad_token_id is not None and not isinstance(self.pad_token_id, int):
            raise ValueError(f"pad_token_id={self.pad_token_id!r} must be a token id or None")
        if self.sampling and self.temperature == 0:
            raise ValueError(f"temperature={self.temperature} must be > 0 when sampling "
                             "(do_sample=False or temperature=0 gives greedy decoding)")
        if self.sampling and self.num_beams > 1:
            raise ValueError("beam sampling is not supported: pass do_sample=False with "
                             "num_beams > 1")
        if self.sampling and self.contrastive:
            raise ValueError("contrastive search (penalty_alpha > 0) is deterministic: "
                             "pass do_sample=False")

    # ---- what the arguments mean together -------------------------------------------------
    @property
    def contrastive(self) -> bool:
        """Contrastive search: penalty_alpha > 0 with top_k > 1, one beam."""
        return (self.penalty_alpha is not None and self.penalty_alpha > 0
                and (self.top_k or 0) > 1 and self.num_beams == 1)

    @property
    def sampling(self) -> bool:
        """Whether tokens are sampled (`do_sample` resolved, see the module docstring)."""
        if self.do_sample is not None:
            return self.do_sample
        return self.temperature != 0 and self.num_beams == 1 and not self.contrastive

    @property
    def stop_ids(self) -> list[int]:
        """The eos ids (empty: no stop token)."""
        return list(self.eos_token_id)

    @property
    def pad_id(self) -> int:
        """What finished rows are padded with."""
        return pad_id(self.pad_token_id, self.eos_token_id)

    def processors(self, attention_mask: torch.Tensor | None = None) -> list[LogitsProcessor]:
        """The logits processors of this config, in Hugging Face's order (penalties, then the
        sampling warpers when sampling; contrastive search uses top_k for its candidates).

        Args:
            attention_mask: (B, T) the prompt's padding mask, so that the repetition penalty
                skips left padding.
        """
        return build_processors(
            self.sampling, temperature=self.temperature,
            top_k=None if self.contrastive else self.top_k, top_p=self.top_p, min_p=self.min_p,
            typical_p=self.typical_p, repetition_penalty=self.repetition_penalty,
            no_repeat_ngram_size=self.no_repeat_ngram_size, attention_mask=attention_mask)

    # ---- building ---------------------------------------------------------------------------
    def update(self, **kwargs: Any) -> GenerationConfig:
        """A copy with the given fields changed (validated again).

        Raises:
            ValueError: a keyword is not a field (the unknown ones are named).
        """
        known = {f.name for f in dataclasses.fields(self)}
        unknown = set(kwargs) - known
        if unknown:
            raise ValueError(f"unknown generation arguments {sorted(unknown)}; known: "
                             f"{sorted(known)}")
        return dataclasses.replace(self, **kwargs)

    def to_dict(self) -> dict:
        """The fields as a JSON-able dict."""
        d = dataclasses.asdict(self)
        d["eos_token_id"] = list(self.eos_token_id)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> GenerationConfig:
        """Read a config back; unknown fields are an error naming them."""
        return config_from_dict(cls, d, "generation config")
