"""Leviathan et al.'s cost model for speculative decoding (minillm.generation.speculative)."""

import pytest
import torch

from minillm.generation.speculative import (
    alpha_from_tokens_per_call,
    expected_tokens_per_call,
    predicted_speedup,
)


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.75, 1.0])
@pytest.mark.parametrize("gamma", [1, 3, 6])
def test_expected_tokens_is_the_mean_of_the_simulated_step(alpha, gamma):
    # independent acceptances, the step stops at the first rejection and adds one token
    g = torch.Generator().manual_seed(0)
    accepted = torch.rand(200_000, gamma, generator=g) < alpha
    simulated = (accepted.long().cumprod(1).sum(1) + 1).float().mean().item()
    assert abs(simulated - expected_tokens_per_call(alpha, gamma)) < 0.02
    if alpha < 1:
        closed = (1 - alpha ** (gamma + 1)) / (1 - alpha)
        assert expected_tokens_per_call(alpha, gamma) == pytest.approx(closed)


def test_speedup_formula_and_the_alpha_above_c_rule():
    assert predicted_speedup(0.6, 3, 0.1) == pytest.approx((1 - 0.6 ** 4) / (0.4 * 1.3))
    assert predicted_speedup(0.5, 2, 0.0) == pytest.approx(1.75)  # a free draft: E tokens
    # gamma = 1: (1 + alpha) / (1 + c), a win iff alpha > c
    for alpha, c in [(0.4, 0.3), (0.3, 0.4), (0.8, 0.05)]:
        assert (predicted_speedup(alpha, 1, c) > 1) == (alpha > c)
    with pytest.raises(ValueError, match="c="):
        predicted_speedup(0.5, 2, -0.1)


@pytest.mark.parametrize("gamma", [1, 2, 5])
def test_alpha_from_tokens_per_call_inverts_the_expectation(gamma):
    for alpha in (0.05, 0.37, 0.9):
        m = expected_tokens_per_call(alpha, gamma)
        assert alpha_from_tokens_per_call(m, gamma) == pytest.approx(alpha, abs=1e-9)
    assert alpha_from_tokens_per_call(1.0, gamma) == 0.0
    assert alpha_from_tokens_per_call(gamma + 1, gamma) == 1.0
    assert alpha_from_tokens_per_call(1.4, 1) == pytest.approx(0.4)  # gamma 1: accepted/drafted
