"""`minillm.generation.self_consistency`: k sampled chains, answers extracted, majority vote."""

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from minillm.generation import generate
from minillm.generation.self_consistency import majority_vote, self_consistency
from minillm.models.base import LMOutput
from minillm.tokenizers import ByteTokenizer

TOK = ByteTokenizer()
ANSWERS = {"A": 0.5, "B": 0.3, "C": 0.2}


@dataclass
class _Config:
    vocab_size: int = 257
    context_length: int = 64


class AnswerLM(nn.Module):
    """After a '?' it answers A, B or C with the probabilities of ANSWERS, then stops (eot)."""

    def __init__(self):
        super().__init__()
        self.config = _Config()
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, idx, targets=None, **kwargs):
        logits = torch.full((*idx.shape, 257), -1e4)
        logits[..., TOK.eot_id] = 0.0
        asked = idx == ord("?")
        for answer, p in ANSWERS.items():
            logits[..., ord(answer)] = torch.where(asked, torch.tensor(p).log(), -1e4)
        logits[..., TOK.eot_id] = torch.where(asked, -1e4, 0.0)
        return LMOutput(logits)


def _run(seed, k=300, extract=lambda text: text.strip() or None, **kw):
    return self_consistency(AnswerLM(), "Which one?", k, tokenizer=TOK, extract=extract,
                            max_new_tokens=4, eos_token_id=TOK.eot_id,
                            generator=torch.Generator().manual_seed(seed), **kw)


def test_the_majority_of_a_known_answer_distribution_is_found():
    result = _run(0)
    assert result.answer == "A"
    assert sum(result.votes.values()) == 300 and set(result.votes) == set(ANSWERS)
    for answer, p in ANSWERS.items():   # each share within 4 binomial standard deviations
        sd = (p * (1 - p) / 300) ** 0.5
        assert abs(result.votes[answer] / 300 - p) < 4 * sd, (answer, result.votes)
    assert result.chains == result.answers      # one-letter chains, eot cut off
    assert result.votes == {a: result.answers.count(a) for a in result.votes}


def test_seeds_reproduce_and_differ():
    a, b, c = _run(1, k=40), _run(1, k=40), _run(2, k=40)
    assert a.chains == b.chains and a.votes == b.votes
    assert a.chains != c.chains


def test_chains_without_an_answer_do_not_vote():
    result = _run(0, extract=lambda text: None if text == "C" else text)
    assert "C" not in result.votes and None in result.answers
    assert sum(result.votes.values()) == 300 - result.answers.count(None)
    assert _run(0, k=5, extract=lambda text: None).answer is None


def test_majority_vote_breaks_ties_by_first_appearance():
    assert majority_vote(["b", "a", "a", "b", None]) == ("b", {"b": 2, "a": 2})
    assert majority_vote(["a", "b", "b"]) == ("b", {"a": 1, "b": 2})
    assert majority_vote([None, None]) == (None, {})
    assert majority_vote([3, 4, 4]) == (4, {3: 1, 4: 2})


def test_chains_are_the_course_samplers_draws(tiny_model):
    # same generator, same options: the chains are generate's rows, cut at the eos token
    prompt = [1, 2, 3]
    kw = dict(max_new_tokens=6, temperature=0.9, top_k=10, eos_token_id=5)
    result = self_consistency(tiny_model, prompt, 4, tokenizer=_Ids(), extract=lambda t: t[:1],
                              generator=torch.Generator().manual_seed(7), **kw)
    rows = generate(tiny_model, torch.tensor([prompt] * 4), do_sample=True,
                    generator=torch.Generator().manual_seed(7), **kw)[:, 3:].tolist()
    expected = [r[:r.index(5)] if 5 in r else r for r in rows]
    assert [[int(t) for t in c.split(",") if t] for c in result.chains] == expected


class _Ids:
    """A 'tokenizer' whose text is the ids joined by commas (for a 61-token tiny model)."""

    def encode(self, text):
        return [int(t) for t in text.split(",") if t]

    def decode(self, ids):
        return ",".join(str(i) for i in ids)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="k=0"):
        _run(0, k=0)
    with pytest.raises(ValueError, match="greedy"):
        _run(0, k=3, do_sample=False)
    with pytest.raises(ValueError, match="empty"):
        self_consistency(AnswerLM(), "", 2, tokenizer=TOK, extract=str)
