"""Solving `minillm.data.arithmetic`'s addition problems with a byte model: greedy decoding,
a majority vote over sampled scratchpads (`self_consistency`), or with the calculator tool
(`generate_with_tools`). Chapter 20's accuracy-vs-digits, accuracy-vs-k and tool comparisons.

Every function takes a list of (a, b) pairs and returns per-problem correctness (booleans), so
the chapter can average them and put error bars on them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from minillm.data.arithmetic import EOT, answer_of, prompt
from minillm.generation.generate import generate
from minillm.generation.self_consistency import self_consistency
from minillm.generation.tools import generate_with_tools
from minillm.tokenizers.byte import ByteTokenizer

__all__ = ["solve_greedy", "solve_vote", "solve_with_tool"]

_TOK = ByteTokenizer()


def _text(row: list[int]) -> str:
    cut = row.index(EOT) if EOT in row else len(row)
    return bytes(row[:cut]).decode("utf-8", errors="replace") + ("\n" if EOT in row else "")


@torch.no_grad()
def solve_greedy(model: nn.Module, pairs: Sequence[tuple[int, int]], fmt: str,
                 max_new_tokens: int = 80, batch_size: int = 64) -> list[bool]:
    """Greedy completions of the prompts (grouped by length into batches); True where the
    answer read off the completion is a + b.

    A completion ends at <|endoftext|> (256), which the training batches put after the newline;
    `answer_of` needs the newline, so an unfinished completion counts as wrong."""
    model.eval()
    by_len: dict[int, list[int]] = {}
    prompts = [list(prompt(a, b, fmt).encode()) for a, b in pairs]
    for i, p in enumerate(prompts):
        by_len.setdefault(len(p), []).append(i)
    right = [False] * len(pairs)
    for idx in by_len.values():
        for s in range(0, len(idx), batch_size):
            chunk = idx[s:s + batch_size]
            x = torch.tensor([prompts[i] for i in chunk])
            out = generate(model, x, max_new_tokens=max_new_tokens, eos_token_id=EOT)
            for i, row in zip(chunk, out[:, x.size(1):].tolist(), strict=True):
                a, b = pairs[i]
                right[i] = answer_of(_text(row), fmt) == a + b
    return right


@torch.no_grad()
def solve_vote(model: nn.Module, pairs: Sequence[tuple[int, int]], k: int, seed: int,
               temperature: float = 1.0, fmt: str = "scratchpad",
               max_new_tokens: int = 80) -> list[bool]:
    """Self-consistency: k sampled completions per problem, the majority answer (ties to the
    first chain's); True where it is a + b. One seeded generator for the whole list."""
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    right = []
    for a, b in pairs:
        res = self_consistency(model, prompt(a, b, fmt), k, tokenizer=_TOK,
                               extract=lambda t: answer_of(t, fmt),
                               max_new_tokens=max_new_tokens, generator=gen,
                               temperature=temperature, eos_token_id=EOT)
        right.append(res.answer == a + b)
    return right


@torch.no_grad()
def solve_with_tool(model: nn.Module, pairs: Sequence[tuple[int, int]], use_tool: bool = True,
                    max_new_tokens: int = 60) -> list[bool]:
    """The tool format ("T:a+b="), greedy. With the tool, decoding pauses at </calc> and the
    calculator's "=result" is spliced in; without it, the model writes the result itself."""
    model.eval()
    if not use_tool:
        return solve_greedy(model, pairs, "tool", max_new_tokens)
    right = []
    for a, b in pairs:
        x = torch.tensor([list(prompt(a, b, "tool").encode())])
        out = generate_with_tools(model, x, _TOK, max_new_tokens, eos_token_id=EOT)
        right.append(answer_of(_text(out.ids[0, x.size(1):].tolist()), "tool") == a + b)
    return right
