"""Chapter 20's in-context-learning measurements: the task, the scores, a short run."""

import math

import torch

from minillm.generation.in_context import (
    icl_run,
    icl_score,
    induction_score,
    position_losses,
    repeated_tokens_batch,
    transition_step,
)
from minillm.models import GPT, GPTConfig


def test_the_second_half_repeats_the_first():
    x, y = repeated_tokens_batch(8, 5, 10, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (8, 9)
    seq = torch.cat([x, y[:, -1:]], 1)
    assert torch.equal(seq[:, :5], seq[:, 5:])
    assert torch.equal(x[:, 1:], y[:, :-1])


def test_icl_score_and_transition_step():
    assert icl_score(torch.tensor([4.0, 3.0, 1.0]), 0, 2) == -3.0
    assert transition_step([0, 10, 20, 30], [0.0, 0.1, 0.8, 1.0]) == 20      # rising
    assert transition_step([0, 10, 20, 30], [0.0, -0.2, -3.0, -4.0]) == 20   # falling


def test_induction_score_finds_a_head_that_attends_to_the_token_after_the_copy(monkeypatch):
    half = 6
    x, _ = repeated_tokens_batch(4, half, 16, torch.Generator().manual_seed(1))
    model = GPT(GPTConfig(vocab_size=16, context_length=2 * half, d_model=16, n_layer=2, n_head=2))
    T = x.size(1)
    perfect = torch.zeros(x.size(0), 2, T, T)
    for i in range(T):
        perfect[:, 1, i, i - half + 1 if i >= half else 0] = 1.0      # head 1: induction
        perfect[:, 0, i, i] = 1.0                                      # head 0: itself
    uniform = torch.full((x.size(0), 2, T, T), 1.0 / T)
    monkeypatch.setattr(model, "attention_weights", lambda inp: (None, [uniform, perfect]))
    score, where = induction_score(model, x, half)
    assert score == 1.0 and where == (1, 1)


def test_a_short_run_records_both_scores_and_learns_to_copy():
    torch.set_num_threads(1)
    rec = icl_run(steps=250, eval_every=50, seed=0, half=8, vocab_size=16, d_model=32,
                  batch_size=32, lr=3e-3, eval_batch=32)
    assert rec["step"] == [0, 50, 100, 150, 200, 250]
    assert len(rec["icl_score"]) == len(rec["induction_score"]) == 6
    assert abs(rec["icl_score"][0]) < 0.3                 # untrained: no gain from the context
    assert rec["icl_score"][-1] < -0.5 * math.log(16)     # trained: the repeat is copied
    assert rec["induction_score"][-1] > rec["induction_score"][0] + 0.2


def test_position_losses_are_the_per_position_cross_entropy():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=8, context_length=8, d_model=16, n_layer=1, n_head=2)).eval()
    x, y = repeated_tokens_batch(3, 4, 8)
    losses = position_losses(model, x, y)
    full = model(x, y).loss
    torch.testing.assert_close(losses.mean(), full, rtol=1e-5, atol=1e-5)
