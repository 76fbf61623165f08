"""Logits processors: each alone, against its Hugging Face counterpart, and its properties."""

import pytest
import torch
from hf_reference import lazy_module
from hypothesis import given, settings
from hypothesis import strategies as st

from minillm.generation.processors import (
    MinP,
    NoRepeatNGram,
    RepetitionPenalty,
    Temperature,
    TopK,
    TopP,
    Typical,
    apply_processors,
    build_processors,
)

lp = lazy_module("transformers.generation.logits_process")


def _inputs(seed=0, b=4, v=30, t=12):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, v, (b, t), generator=g), torch.randn(b, v, generator=g) * 3


@pytest.mark.parametrize("ours, theirs", [
    (Temperature(0.7), lambda: lp.TemperatureLogitsWarper(0.7)),
    (TopK(5), lambda: lp.TopKLogitsWarper(5)),
    (TopK(3, min_tokens_to_keep=6), lambda: lp.TopKLogitsWarper(3, min_tokens_to_keep=6)),
    (TopP(0.8), lambda: lp.TopPLogitsWarper(0.8)),
    (TopP(0.3, min_tokens_to_keep=2), lambda: lp.TopPLogitsWarper(0.3, min_tokens_to_keep=2)),
    (MinP(0.1), lambda: lp.MinPLogitsWarper(0.1)),
    (Typical(0.7), lambda: lp.TypicalLogitsWarper(0.7)),
    (RepetitionPenalty(1.3), lambda: lp.RepetitionPenaltyLogitsProcessor(1.3)),
    (RepetitionPenalty(1.3, torch.tensor([0, 3, 12, 5])),
     lambda: lp.RepetitionPenaltyLogitsProcessor(1.3, torch.tensor([0, 3, 12, 5]))),
    (NoRepeatNGram(2), lambda: lp.NoRepeatNGramLogitsProcessor(2)),
    (NoRepeatNGram(1), lambda: lp.NoRepeatNGramLogitsProcessor(1)),
])
@pytest.mark.parametrize("seed", [0, 1])
def test_same_processed_distribution_as_hugging_face(ours, theirs, seed):
    ids, scores = _inputs(seed)
    ids[:, -3:] = ids[:, 2:5]  # plant a repeated trigram so the n-gram ban has work
    expected = theirs()(ids, scores.clone())
    got = ours(ids, scores.clone())
    assert torch.equal(torch.isinf(got), torch.isinf(expected))
    torch.testing.assert_close(got.softmax(-1), expected.softmax(-1))


def test_top_k_keeps_exactly_the_k_largest():
    s = torch.tensor([[0.0, 5.0, 1.0, 4.0, -2.0]])
    assert torch.isfinite(TopK(2)(None, s)).nonzero()[:, 1].tolist() == [1, 3]


def test_top_p_keeps_the_smallest_nucleus():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    kept = torch.isfinite(TopP(0.8)(None, probs.log())).squeeze(0).tolist()
    assert kept == [True, True, False, False]  # 0.5 + 0.3 >= 0.8


def test_no_repeat_ngram_bans_the_completion():
    ids = torch.tensor([[1, 2, 3, 1, 2]])  # "1 2" was followed by 3: 3 is banned now
    out = NoRepeatNGram(3)(ids, torch.zeros(1, 5))
    assert torch.isinf(out).nonzero()[:, 1].tolist() == [3]


def test_repetition_penalty_lowers_seen_tokens():
    s = torch.tensor([[2.0, -2.0, 1.0]])
    out = RepetitionPenalty(2.0)(torch.tensor([[0, 1]]), s)
    assert out.tolist() == [[1.0, -4.0, 1.0]]


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.05, 1.0), st.integers(1, 10), st.floats(0.0, 1.0))
def test_warpers_keep_the_argmax_and_top_p_mass(seed, p, k, m):
    _, scores = _inputs(seed, b=3, v=20)
    best = scores.argmax(-1, keepdim=True)
    # (not Typical: the most likely token can be atypical, and be dropped, by design)
    for proc in (TopP(p), TopK(k), MinP(m)):
        out = proc(None, scores)
        assert torch.isfinite(out.gather(1, best)).all()
    kept = torch.isfinite(TopP(p)(None, scores))
    assert (scores.softmax(-1) * kept).sum(-1).min() >= p - 1e-5


def test_bad_arguments_name_the_field():
    for make, match in [(lambda: TopP(0.0), "top_p=0.0"), (lambda: TopP(1.5), "top_p=1.5"),
                        (lambda: Temperature(0.0), "temperature=0.0"),
                        (lambda: TopK(0), "top_k=0"), (lambda: MinP(2.0), "min_p=2.0"),
                        (lambda: Typical(0.0), "typical_p=0.0"),
                        (lambda: RepetitionPenalty(0.0), "repetition_penalty=0.0"),
                        (lambda: NoRepeatNGram(0), "no_repeat_ngram_size=0")]:
        with pytest.raises(ValueError, match=match):
            make()
    with pytest.raises(ValueError, match="top_p=1.5"):
        build_processors(True, top_p=1.5)


def test_build_processors_order_and_greedy():
    procs = build_processors(True, temperature=0.5, top_k=4, top_p=0.9, repetition_penalty=1.2)
    assert [type(p).__name__ for p in procs] == ["RepetitionPenalty", "Temperature", "TopK", "TopP"]
    assert [type(p).__name__ for p in build_processors(False, temperature=0.5, top_k=4)] == []
    ids, scores = _inputs()
    assert torch.equal(apply_processors([], ids, scores), scores)
