"""Multi-digit addition as text, in three formats: the answer alone, a scratchpad, a tool call.

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
"""

from __future__ import annotations

import random
import re

__all__ = ["FORMATS", "answer_of", "completion", "problems", "prompt", "scratchpad",
           "training_batch"]

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
    import torch

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
