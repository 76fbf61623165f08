"""Multi-digit addition as a language-modelling task, in two shapes.

**Text formats (chapter 20).** `problems`, `prompt`, `completion`, `answer_of`,
`training_batch`: byte-level problems answered directly, through a scratchpad or through a
calculator call.

**Fixed-width adders (chapter 21).** `AdditionProblem`, `addition_problems`, `addition_batch`,
`encode`, `decode`: zero-padded operands on a 13-symbol alphabet, for the emergence family.

## Text formats

Chapter 20 trains a small byte model on these to compare answering directly with writing out
the intermediate steps first (a scratchpad, Nye et al. 2021, arXiv:2112.00114; chain of
thought, Wei et al. 2022, arXiv:2201.11903) and with calling a calculator (Toolformer, Schick et
al. 2023, arXiv:2302.04761). For 57 + 68:

    direct:      "D:57+68="  -> "125\\n"
    scratchpad:  "S:57+68="  -> "7+8+0=15,5+6+1=12,>125\\n"   one step per column, units first:
                                                             digit + digit + carry = column sum
    tool call:   "T:57+68="  -> "<calc>57+68</calc>=125\\n"   "=125" is what the tool answers

A scratchpad step is "a+b+c=s": the column's digits (0 where a number has run out), the carry
c from the column before, and their sum s, whose last digit is the answer's digit and whose
tens digit the next carry; ">" then gives the answer. The prefix letter says which format is
asked, so one model can learn all three. `problems` draws operands with exactly `n_digits`
digits (a leading digit of 0 only for one-digit numbers) from `random.Random(seed)`, so a set
is the same on every machine. `answer_of` reads the answer off any format's completion (None
when there is none).

## Fixed-width adders

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
import re
from dataclasses import dataclass

import torch

__all__ = ["EOT", "FORMATS", "VOCAB", "AdditionProblem", "addition_batch", "addition_problems",
           "answer_of", "completion", "decode", "encode", "problems", "prompt", "scratchpad",
           "training_batch"]

# ---- text formats (chapter 20) --------------------------------------------------------

FORMATS = {"direct": "D", "scratchpad": "S", "tool": "T"}


def problems(n: int, n_digits: int, seed: int) -> list[tuple[int, int]]:
    """`n` pairs (a, b) of `n_digits`-digit numbers, drawn by `random.Random(seed)`.

    >>> problems(2, 2, seed=0)
    [(59, 63), (15, 43)]
    """
    if n < 0 or n_digits < 1:
        raise ValueError(f"n={n} must be >= 0 and n_digits={n_digits} >= 1")
    rng = random.Random(seed)
    lo, hi = (0 if n_digits == 1 else 10 ** (n_digits - 1)), 10 ** n_digits - 1
    return [(rng.randint(lo, hi), rng.randint(lo, hi)) for _ in range(n)]


def scratchpad(a: int, b: int) -> str:
    """The column-by-column working of a + b, units first.

    >>> scratchpad(57, 68)
    '7+8+0=15,5+6+1=12,'
    """
    if a < 0 or b < 0:
        raise ValueError(f"a={a}, b={b}: the scratchpad adds non-negative integers")
    da, db = str(a)[::-1], str(b)[::-1]
    steps, carry = [], 0
    for i in range(max(len(da), len(db))):
        x = int(da[i]) if i < len(da) else 0
        y = int(db[i]) if i < len(db) else 0
        s = x + y + carry
        steps.append(f"{x}+{y}+{carry}={s},")
        carry = s // 10
    return "".join(steps)


def prompt(a: int, b: int, fmt: str) -> str:
    """What the model is given: "D:57+68=" (the format's letter, the sum, "=")."""
    if fmt not in FORMATS:
        raise ValueError(f"fmt={fmt!r} must be one of {sorted(FORMATS)}")
    return f"{FORMATS[fmt]}:{a}+{b}="


def completion(a: int, b: int, fmt: str) -> str:
    """What the model should write after the prompt (ending with a newline).

    >>> completion(57, 68, "scratchpad")
    '7+8+0=15,5+6+1=12,>125\\n'
    >>> completion(57, 68, "tool")
    '<calc>57+68</calc>=125\\n'
    """
    if fmt == "direct":
        return f"{a + b}\n"
    if fmt == "scratchpad":
        return f"{scratchpad(a, b)}>{a + b}\n"
    if fmt == "tool":
        return f"<calc>{a}+{b}</calc>={a + b}\n"
    raise ValueError(f"fmt={fmt!r} must be one of {sorted(FORMATS)}")


_ANSWER = {"direct": re.compile(r"^(\d+)\n"), "scratchpad": re.compile(r">(\d+)\n"),
           "tool": re.compile(r"</calc>=(\d+)\n")}


def answer_of(text: str, fmt: str) -> int | None:
    """The answer a completion gives (None when it gives none in the format's shape).

    >>> answer_of("7+8+0=15,5+6+1=12,>125\\n", "scratchpad")
    125
    """
    if fmt not in _ANSWER:
        raise ValueError(f"fmt={fmt!r} must be one of {sorted(FORMATS)}")
    m = _ANSWER[fmt].search(text)
    return int(m.group(1)) if m else None


def training_batch(batch_size: int, max_digits: int, seed: int,
                   formats: tuple[str, ...] = tuple(FORMATS), length: int | None = None,
                   min_digits: int = 1):
    """A batch of byte-encoded problems for `minillm.data.synthetic.fit_synthetic`: inputs
    (B, T) and targets (B, T), the loss only on the completions (targets = -100 on the prompt
    and the padding).

    Each row draws a digit count uniformly in [min_digits, max_digits] and a format uniformly
    from `formats`; text is bytes (the byte tokenizer's ids), padded with <|endoftext|> (256),
    which also ends each completion's target. `length` (default: the longest row) fixes T.
    """
    rng = random.Random(seed)
    rows = []
    for _ in range(batch_size):
        d = rng.randint(min_digits, max_digits)
        a, b = problems(1, d, seed=rng.randrange(2**31))[0]
        fmt = rng.choice(formats)
        p = list(prompt(a, b, fmt).encode())
        c = list(completion(a, b, fmt).encode()) + [EOT]
        rows.append((p, c))
    T = length or max(len(p) + len(c) for p, c in rows) - 1
    inputs = torch.full((batch_size, T), EOT, dtype=torch.long)
    targets = torch.full((batch_size, T), -100, dtype=torch.long)
    for i, (p, c) in enumerate(rows):
        seq = (p + c)[:T + 1]
        inputs[i, :len(seq) - 1] = torch.tensor(seq[:-1])
        targets[i, len(p) - 1:len(seq) - 1] = torch.tensor(seq[len(p):])
    return inputs, targets


EOT = 256   # the byte tokenizer's <|endoftext|>


# ---- fixed-width adders (chapter 21) --------------------------------------------------

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
