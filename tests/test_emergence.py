"""minillm.data.arithmetic (the addition task) and minillm.evaluation.emergence (its metrics and
training loop, chapter 21)."""

from __future__ import annotations

import random

import pytest
import torch

from minillm.data.arithmetic import (
    VOCAB,
    AdditionProblem,
    addition_batch,
    addition_problems,
    decode,
    encode,
)
from minillm.evaluation.emergence import (
    AdderConfig,
    answer_metrics,
    edit_distance,
    greedy_answers,
    train_adder,
)
from minillm.models import GPT


def test_problem_text_and_reversed_answer():
    p = AdditionProblem(472, 918, 4)
    assert p.prompt == "0472+0918="
    assert p.answer == "01390"[::-1]
    assert AdditionProblem(472, 918, 4, reverse=False).answer == "01390"
    assert decode(encode(p.prompt + p.answer)) == "0472+0918=09310"
    with pytest.raises(ValueError, match="alphabet"):
        encode("1-2")


def test_splits_are_disjoint_and_seeded():
    train = addition_problems(3000, 3, "train", seed=0)
    test = addition_problems(300, 3, "test", seed=0)
    assert not {(p.a, p.b) for p in train} & {(p.a, p.b) for p in test}
    assert len({(p.a, p.b) for p in test}) == 300                 # no repeats in the test split
    assert addition_problems(50, 3, "train", seed=1) == addition_problems(50, 3, "train", seed=1)
    assert addition_problems(50, 3, "train", seed=1) != addition_problems(50, 3, "train", seed=2)
    assert all(p.a + p.b == int(p.answer[::-1]) for p in test)
    with pytest.raises(ValueError, match="split"):
        addition_problems(3, 3, "valid")


def test_batch_scores_the_answer_only():
    probs = addition_problems(5, 4, "test")
    x, y = addition_batch(probs)
    assert x.shape == y.shape == (5, 3 * 4 + 2)
    for p, xr, yr in zip(probs, x.tolist(), y.tolist(), strict=True):
        line = encode(p.prompt + p.answer)
        assert xr == line[:-1]
        # targets: -100 until the "=", then the answer's 5 digits
        assert yr[:len(p.prompt) - 1] == [-100] * (len(p.prompt) - 1)
        assert yr[len(p.prompt) - 1:] == encode(p.answer)


def test_edit_distance_matches_nltk():
    nltk = pytest.importorskip("nltk")
    rng = random.Random(0)
    for _ in range(200):
        a = "".join(rng.choice("0123") for _ in range(rng.randrange(0, 7)))
        b = "".join(rng.choice("0123") for _ in range(rng.randrange(0, 7)))
        assert edit_distance(a, b) == nltk.edit_distance(a, b)
        assert edit_distance(list(map(int, a)), list(map(int, b))) == nltk.edit_distance(a, b)


class Oracle(torch.nn.Module):
    """A 'model' that puts probability q on the right next answer digit (given the true
    prefix), the rest spread evenly — and so knows each answer exactly when q > 1/13."""

    def __init__(self, q: float):
        super().__init__()
        self.q = q
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        B, T = x.shape
        rows = x.tolist()
        logits = torch.full((B, T, len(VOCAB)), 0.0)
        for r, ids in enumerate(rows):
            text = decode(ids)
            a, rest = text.split("+")
            b = rest.split("=")[0]
            answer = f"{int(a) + int(b):0{len(a) + 1}d}"[::-1]
            start = text.index("=")
            p_other = (1 - self.q) / (len(VOCAB) - 1)
            for t in range(start, T):
                k = t - start
                if k < len(answer):
                    logits[r, t] = torch.log(torch.full((len(VOCAB),), p_other))
                    logits[r, t, VOCAB.index(answer[k])] = torch.log(torch.tensor(self.q))

        class Out:
            pass

        out = Out()
        out.logits = logits
        return out


def test_metrics_on_a_known_model():
    probs = addition_problems(20, 3, "test")
    m = answer_metrics(Oracle(0.9), probs)
    assert m["exact_match"] == 1.0 and m["token_accuracy"] == 1.0 and m["edit_distance"] == 0
    assert m["token_loglik"] == pytest.approx(torch.log(torch.tensor(0.9)).item(), abs=1e-6)
    assert [decode(g) for g in greedy_answers(Oracle(0.9), probs)] == [p.answer for p in probs]
    assert answer_metrics(Oracle(0.05), probs)["exact_match"] < 1


def test_training_learns_and_greedy_agrees_with_teacher_forcing():
    torch.manual_seed(0)
    probs = addition_problems(200, 2, "test")
    untrained = answer_metrics(GPT(AdderConfig(digits=2).model_config()), probs)
    model = train_adder(AdderConfig(d_model=32, digits=2, steps=300, seed=0))
    m = answer_metrics(model, probs)
    assert m["token_loglik"] > untrained["token_loglik"] + 0.5
    assert m["edit_distance"] < untrained["edit_distance"]
    # exact match by greedy decoding == all teacher-forced argmax right (module docstring)
    greedy = greedy_answers(model, probs)
    greedy_em = sum(decode(g) == p.answer for g, p in zip(greedy, probs, strict=True)) / len(probs)
    assert greedy_em == pytest.approx(m["exact_match"])
    with pytest.raises(ValueError, match="divisible"):
        AdderConfig(d_model=10, n_head=4)
