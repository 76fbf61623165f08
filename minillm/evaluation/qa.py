"""Answers with a confidence, and questions about the plays asked closed-book, open-book and
with retrieval (chapter 21: calibration and hallucination; Kadavath et al. 2022, "Language
Models (Mostly) Know What They Know", arXiv:2207.05221; retrieval as in Lewis et al. 2020,
"Retrieval-Augmented Generation", arXiv:2005.11401).

Confidence of an answer y to a prompt x is the model's probability of writing exactly y and
then stopping:

    conf(y | x) = P(y, <stop> | x) = exp( sum_i log p(y_i | x, y_<i) + log p(<stop> | x, y) )

(the greedy answer, scored by `minillm.evaluation.lm_eval_backend.continuation_logprobs`).

The speaker questions ("who says this line?") come in three settings:
- open book: the two speeches around the line are in the prompt (the SFT task's own format);
- closed book: the line alone — the model must recall a play it never saw, so any name it
  gives is a guess; a confident guess is a hallucination;
- retrieval: the `k` speeches BM25 (`minillm.retrieval.BM25`) finds for the line among the
  plays' speeches stand in for the passage, in the same format.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace

import torch

from minillm.evaluation.lm_eval_backend import MiniLLMLM, continuation_logprobs
from minillm.retrieval import BM25

__all__ = ["SpeechIndex", "answers_with_confidence", "speaker_prompt"]

SPEAKER_PHRASING = "Name the speaker of \"{line}\".\n{text}"   # SFT phrasing 1 (seen)


def speaker_prompt(line: str, passage: str | None) -> str:
    """The SFT speaker question; closed book (passage None) drops the speeches."""
    if passage is None:
        return f"Name the speaker of \"{line}\"."
    return SPEAKER_PHRASING.format(line=line, text=passage)


class SpeechIndex:
    """BM25 over speeches written "NAME. first line" (the passage format of the SFT task)."""

    def __init__(self, speeches: Sequence[str]):
        if not speeches:
            raise ValueError("no speeches to index")
        self.speeches = list(speeches)
        self.bm25 = BM25(self.speeches)

    def passage(self, query: str, k: int = 2) -> str:
        """The k best speeches for `query`, one per line, best first."""
        return "\n".join(self.speeches[i] for i, _ in self.bm25.search(query, k))


@torch.no_grad()
def answers_with_confidence(lm: MiniLLMLM, prompts: Sequence[str], stop: str = "<|end|>",
                            max_gen_toks: int = 16,
                            template: str = "<|user|>{prompt}<|end|><|assistant|>"
                            ) -> list[tuple[str, float]]:
    """Greedy answers in the chat template and conf = P(answer, stop | prompt) for each."""
    contexts = [template.format(prompt=p) for p in prompts]
    requests = [SimpleNamespace(args=(c, {"until": [stop], "max_gen_toks": max_gen_toks,
                                          "do_sample": False})) for c in contexts]
    answers = lm.generate_until(requests)
    pairs = [(lm.tok_encode(c), lm.tok_encode(a + stop)) for c, a in zip(contexts, answers,
                                                                           strict=True)]
    scores = continuation_logprobs(lm.model, pairs, lm.max_length, lm.batch_size)
    return [(a.strip(), float(torch.tensor(s, dtype=torch.float64).exp()))
            for a, (s, _) in zip(answers, scores, strict=True)]
