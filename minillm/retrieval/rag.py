"""Retrieval-augmented answering over the plays, scored by likelihood (chapter 20).

RAG (Lewis et al. 2020, arXiv:2005.11401) retrieves passages for a question and conditions the
generator on them. The course's models are tiny byte LMs with a 256-byte context that cannot
follow a question, so the answer is chosen, not generated: each candidate answer is written
as the text the plays would contain, and the model picks the candidate under which the
question's text is most likely after the context (the retrieved passage, or nothing):

    answer = argmax_c  log p(text(c) | context + prefix(c))

Two question sets are made from a play's speeches (`Speech`, `minillm.data.sft.speeches`):

- **speaker**: the first line of a speech; candidates the true speaker and `n_candidates - 1`
  other frequent speakers of the play; prefix(c) = "NAME.\\n" and text = "line\\n" (the
  plays' own layout: which speaker's heading makes the line most likely);
- **continue**: the first line of a speech; candidates its second line and others drawn from
  other speeches; prefix = "first line\\n", text(c) = "candidate\\n".

The query for the retriever is the quoted line; the passages are the speeches themselves
("NAME.\\nline\\nline..."), cut to `max_chars`. Departures from RAG: no training of the
retriever or the generator, one passage (top-1) put in the prompt, and a multiple-choice
likelihood scorer instead of free generation.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["Question", "candidate_logprobs", "continue_questions", "passage_text",
           "speaker_questions"]


@dataclass(frozen=True)
class Question:
    query: str                  # what the retriever is given (a quoted line)
    prefixes: tuple[str, ...]   # put after the context, before the scored text, per candidate
    texts: tuple[str, ...]      # the scored text, per candidate
    answer: int                 # index of the right candidate
    source: int                 # index of the speech (passage) the line comes from


def passage_text(speech, max_chars: int = 120) -> str:
    """A speech as the plays lay it out ("NAME.\\nline\\n..."), cut to `max_chars`."""
    return (f"{speech.speaker}.\n" + "\n".join(speech.lines) + "\n")[:max_chars]


def _usable(line: str) -> bool:
    return 20 <= len(line) <= 60 and line.isascii()


def speaker_questions(speeches: Sequence, n: int, seed: int, n_candidates: int = 4,
                      top_speakers: int = 12) -> list[Question]:
    """`n` "who says this line?" questions, drawn by `random.Random(seed)`."""
    rng = random.Random(seed)
    freq = Counter(s.speaker for s in speeches)
    top = [name for name, _ in freq.most_common(top_speakers)]
    pool = [i for i, s in enumerate(speeches) if s.speaker in top and _usable(s.lines[0])]
    out = []
    for i in rng.sample(pool, n):
        s = speeches[i]
        others = rng.sample([t for t in top if t != s.speaker], n_candidates - 1)
        names = [s.speaker, *others]
        rng.shuffle(names)
        out.append(Question(s.lines[0], tuple(f"{name}.\n" for name in names),
                            (f"{s.lines[0]}\n",) * len(names), names.index(s.speaker), i))
    return out


def continue_questions(speeches: Sequence, n: int, seed: int,
                       n_candidates: int = 4) -> list[Question]:
    """`n` "what is the next line?" questions, drawn by `random.Random(seed)`."""
    rng = random.Random(seed)
    pool = [i for i, s in enumerate(speeches)
            if len(s.lines) >= 2 and _usable(s.lines[0]) and _usable(s.lines[1])]
    seconds = [speeches[i].lines[1] for i in pool]
    out = []
    for i in rng.sample(pool, n):
        s = speeches[i]
        others = rng.sample([x for x in seconds if x != s.lines[1]], n_candidates - 1)
        lines = [s.lines[1], *others]
        rng.shuffle(lines)
        out.append(Question(s.lines[0], (f"{s.lines[0]}\n",) * len(lines),
                            tuple(f"{x}\n" for x in lines), lines.index(s.lines[1]), i))
    return out


@torch.no_grad()
def candidate_logprobs(model: nn.Module, tokenizer, context: str, question: Question
                       ) -> list[float]:
    """log p(text_c | context + prefix_c) (nats, summed over the text's tokens) per candidate.

    The context is prefixed by <|endoftext|> and cut from the left so that the context, the
    longest prefix and text fit the model's window."""
    bos = tokenizer.eot_id
    ctx = tokenizer.encode(context)
    pre = [tokenizer.encode(p) for p in question.prefixes]
    cand = [tokenizer.encode(t) for t in question.texts]
    room = model.config.context_length - max(len(p) + len(c) for p, c in
                                             zip(pre, cand, strict=True)) - 1
    if room < 0:
        raise ValueError("a candidate is longer than the model's context")
    ctx = [bos] + (ctx[-room:] if room else [])
    rows = [ctx + p + c for p, c in zip(pre, cand, strict=True)]
    T = max(len(r) for r in rows)
    x = torch.full((len(rows), T), bos, dtype=torch.long)
    for i, r in enumerate(rows):
        x[i, :len(r)] = torch.tensor(r)
    logp = torch.log_softmax(model(x).logits.float(), -1)                # (N, T, V)
    out = []
    for i, c in enumerate(cand):
        start = len(ctx) + len(pre[i]) - 1
        pos = torch.arange(start, start + len(c))
        out.append(float(logp[i, pos, torch.tensor(c)].sum()))
    return out
