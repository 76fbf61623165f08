"""Multi-digit addition as a tiny language-modelling task (chapter 21's emergence family).

A problem is two zero-padded `digits`-digit numbers and their sum, written as one line of a
13-symbol alphabet:

    "0472+0918=" + "01390"[::-1] = "0472+0918=09310"      (digits=4, reverse=True)

The answer always has digits + 1 digits (zero-padded), so exact match of a problem means every
one of its L = digits + 1 answer tokens is right. By default the answer is written least
significant digit first (`reverse=True`): then each answer digit depends only on the operand
digits at its place and the carry from the digit just written, which small Transformers learn
far more easily than the carry chain read backwards (Lee et al. 2023, "Teaching Arithmetic to
Small Transformers", arXiv:2307.03381).

`addition_batch` makes (inputs, targets) for `minillm.models.base.lm_loss`: targets are -100 on
the prompt, so the model is trained (and scored) on the answer only. Problems are drawn from a
seeded `random.Random`; `split` keeps train and test disjoint (a problem belongs to the test
split when a hash of its operands says so).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

import torch

__all__ = ["VOCAB", "AdditionProblem", "addition_batch", "addition_problems", "decode",
           "encode"]

VOCAB = "0123456789+=\n"
_ID = {c: i for i, c in enumerate(VOCAB)}
IGNORE = -100


def encode(text: str) -> list[int]:
    """Ids of the characters of `text` (each in VOCAB)."""
    bad = sorted(set(text) - set(_ID))
    if bad:
        raise ValueError(f"characters {bad} are not in the arithmetic alphabet {VOCAB!r}")
    return [_ID[c] for c in text]


def decode(ids: list[int]) -> str:
    """The text of ids (each in [0, len(VOCAB)))."""
    return "".join(VOCAB[i] for i in ids)


@dataclass(frozen=True)
class AdditionProblem:
    a: int
    b: int
    digits: int
    reverse: bool = True

    @property
    def prompt(self) -> str:
        return f"{self.a:0{self.digits}d}+{self.b:0{self.digits}d}="

    @property
    def answer(self) -> str:
        s = f"{self.a + self.b:0{self.digits + 1}d}"
        return s[::-1] if self.reverse else s


def _split_of(a: int, b: int, test_fraction: float) -> str:
    h = int.from_bytes(hashlib.sha256(f"{a}+{b}".encode()).digest()[:4], "big")
    return "test" if h / 2**32 < test_fraction else "train"


def addition_problems(n: int, digits: int = 4, split: str = "train", seed: int = 0,
                      reverse: bool = True, test_fraction: float = 0.1) -> list[AdditionProblem]:
    """`n` random problems of the split (operands uniform in [0, 10**digits)).

    Args:
        n: problems to draw (repeats possible in the train split, none in the test split).
        digits: digits per operand (the answer has digits + 1).
        split: "train" or "test"; disjoint by a hash of the operands.
        seed: seeds the draw.
        reverse: write the answer least significant digit first.
        test_fraction: the share of all (a, b) pairs that belong to the test split.
    """
    if digits < 1:
        raise ValueError(f"digits={digits} must be >= 1")
    if split not in ("train", "test"):
        raise ValueError(f"split={split!r} must be 'train' or 'test'")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction={test_fraction} must be in (0, 1)")
    if split == "test" and n > test_fraction * 100 ** digits / 2:
        raise ValueError(f"n={n} is too many distinct test problems for digits={digits}")
    rng = random.Random(f"{seed}-{split}-{digits}")
    top = 10 ** digits
    out: list[AdditionProblem] = []
    seen: set[tuple[int, int]] = set()
    while len(out) < n:
        a, b = rng.randrange(top), rng.randrange(top)
        if _split_of(a, b, test_fraction) != split:
            continue
        if split == "test":
            if (a, b) in seen:
                continue
            seen.add((a, b))
        out.append(AdditionProblem(a, b, digits, reverse))
    return out


def addition_batch(problems: list[AdditionProblem]) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets), each (B, T): the line prompt + answer, targets -100 on the prompt.

    T = 3 * digits + 2 (the line without its last answer digit as input, shifted by one as
    target); the answer's L = digits + 1 tokens are the last L targets of each row.
    """
    rows = [encode(p.prompt + p.answer) for p in problems]
    if len({len(r) for r in rows}) != 1:
        raise ValueError("problems of one batch must have the same number of digits")
    ids = torch.tensor(rows)                                   # (B, T + 1)
    inputs, targets = ids[:, :-1], ids[:, 1:].clone()
    n_prompt = len(problems[0].prompt)
    targets[:, :n_prompt - 1] = IGNORE
    return inputs, targets
