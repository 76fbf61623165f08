"""A model as judge (Zheng et al. 2023, "Judging LLM-as-a-Judge with MT-Bench and Chatbot
Arena", arXiv:2306.05685), in miniature: chapter 12's reward model judges pairs of answers,
and its verdicts are checked against the gold scorer for agreement, position bias and length
(verbosity) bias.

A scalar reward model r(x, y) judges a pair *pointwise*: it prefers a over b when
r(x, a) > r(x, b), which cannot depend on the order the two are shown in. To give it a
position, `pairwise_prompt` puts both answers in one prompt ("Answer 1: ... Answer 2: ...") and
the judge's verdict is the reply it rewards more, "Answer 1" or "Answer 2" (`pairwise_verdicts`)
— a pairwise judge built from the same model, out of its training distribution, whose position
bias can be measured by asking again with the answers swapped.

Measures (`judge_report`), over pairs whose gold scores differ:
- agreement: P(judge's choice = gold's choice);
- consistency: P(the same answer wins in both orders), and of the inconsistent pairs, the share
  that went to the answer shown first (position bias: 1/2 = none);
- length bias: P(judge picks the longer answer) beside P(gold picks it), and agreement split by
  whether gold's winner is the longer or the shorter answer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["judge_report", "pairwise_prompt", "share_with_stderr"]


def pairwise_prompt(prompt: str, first: str, second: str) -> str:
    """The instruction and both answers, as one prompt a judge reads."""
    return (f"{prompt}\nWhich answer is better?\nAnswer 1: {first}\nAnswer 2: {second}")


def share_with_stderr(flags: Sequence[bool]) -> tuple[float, float]:
    """(share of True, its standard error sqrt(p (1 - p) / (n - 1)))."""
    n = len(flags)
    if n < 2:
        raise ValueError(f"a share with a standard error needs >= 2 items, got {n}")
    p = sum(map(bool, flags)) / n
    return p, math.sqrt(p * (1 - p) / (n - 1))


def judge_report(first_wins: Sequence[bool], first_wins_swapped: Sequence[bool] | None,
                 gold_a: Sequence[float], gold_b: Sequence[float], len_a: Sequence[int],
                 len_b: Sequence[int]) -> dict[str, tuple[float, float] | int]:
    """Agreement, position and length bias of a judge over pairs (a, b).

    Args:
        first_wins: the judge's verdict with a shown first: True = a wins.
        first_wins_swapped: its verdict with b shown first: True = b wins (None: a pointwise
            judge asked once).
        gold_a, gold_b: gold scores; pairs with equal gold scores are left out.
        len_a, len_b: lengths of the answers (e.g. words); pairs of equal length are left out
            of the length measures.

    Returns:
        Each measure as (share, standard error), and "pairs" (how many were judged).
    """
    keep = [i for i in range(len(first_wins)) if gold_a[i] != gold_b[i]]
    gold_a_wins = {i: gold_a[i] > gold_b[i] for i in keep}
    out: dict[str, tuple[float, float] | int] = {"pairs": len(keep)}
    out["agreement"] = share_with_stderr([first_wins[i] == gold_a_wins[i] for i in keep])
    if first_wins_swapped is not None:
        # swapped order: "first" is b, so a wins there when not first_wins_swapped
        out["agreement_swapped"] = share_with_stderr(
            [(not first_wins_swapped[i]) == gold_a_wins[i] for i in keep])
        consistent = [first_wins[i] != first_wins_swapped[i] for i in keep]
        out["consistency"] = share_with_stderr(consistent)
        inconsistent = [i for i, c in zip(keep, consistent, strict=True) if not c]
        # inconsistent: the same *position* won twice; which one?
        if len(inconsistent) >= 2:
            out["inconsistent_to_first"] = share_with_stderr(
                [first_wins[i] for i in inconsistent])
    sized = [i for i in keep if len_a[i] != len_b[i]]
    if len(sized) >= 2:
        longer_a = {i: len_a[i] > len_b[i] for i in sized}
        out["judge_picks_longer"] = share_with_stderr(
            [first_wins[i] == longer_a[i] for i in sized])
        out["gold_picks_longer"] = share_with_stderr(
            [gold_a_wins[i] == longer_a[i] for i in sized])
        for name, want in (("agreement_gold_longer", True), ("agreement_gold_shorter", False)):
            sel = [i for i in sized if (gold_a_wins[i] == longer_a[i]) == want]
            if len(sel) >= 2:
                out[name] = share_with_stderr([first_wins[i] == gold_a_wins[i] for i in sel])
    return out
