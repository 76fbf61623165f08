"""REINFORCE, REINFORCE with a baseline, RLOO's leave-one-out advantage, and masked_normalize."""

import math

import pytest
import torch
from rl_checks import close

from minillm.alignment.grpo import grpo_loss
from minillm.alignment.ppo import masked_mean, masked_normalize
from minillm.alignment.reinforce import reinforce_advantages, reinforce_loss, rloo_advantages


def test_masked_normalize_is_a_masked_sum_over_a_constant():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    m = torch.tensor([[1, 1, 0], [1, 0, 0]])
    close(masked_normalize(x, m, 4.0), (1 + 2 + 4) / 4)
    close(masked_normalize(x, m, 3.0, dim=-1), [(1 + 2) / 3, 4 / 3])
    close(masked_normalize(x, m, 2.0, dim=0), [(1 + 4) / 2, 2 / 2, 0.0])
    # unlike the per-row mean, a token weighs the same in a short and a long row
    per_row = masked_mean(x, m, dim=-1)
    close(per_row, [1.5, 4.0])
    with pytest.raises(ValueError, match="constant=0"):
        masked_normalize(x, m, 0.0)


def test_all_masked_rows_give_zero_where_the_plain_formula_gives_nan():
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    m = torch.tensor([[1, 1], [0, 0]])
    plain = (x * m).sum(-1) / m.sum(-1)          # the 0/0 reference
    assert math.isnan(float(plain[1]))
    close(masked_mean(x, m, dim=-1), [1.5, 0.0])   # documented: 0, not NaN
    close(masked_normalize(x, m, 2.0, dim=-1), [1.5, 0.0])
    zero = torch.zeros_like(m)
    assert float(masked_mean(x, zero)) == 0.0 and float(masked_normalize(x, zero, 5.0)) == 0.0


def test_dr_grpo_loss_is_masked_normalize_of_the_per_token_loss():
    g = torch.Generator().manual_seed(0)
    lp = -torch.rand(4, 6, generator=g)
    m = torch.ones(4, 6)
    m[1, 3:] = 0
    adv = torch.randn(4, generator=g)
    loss, _ = grpo_loss(lp, lp, lp, adv, m, loss_type="dr_grpo", max_new_tokens=8)
    # policy = old = reference: the per-token loss is -A, so the sum over real tokens / (B * 8)
    close(loss, masked_normalize(-adv[:, None].expand(4, 6), m, 4 * 8))


def test_reinforce_advantages():
    r = torch.tensor([1.0, 0.0, 3.0, 2.0])
    close(reinforce_advantages(r), r)
    close(reinforce_advantages(r, "mean"), r - 1.5)
    close(reinforce_advantages(r, 0.5), r - 0.5)
    with pytest.raises(ValueError, match="baseline"):
        reinforce_advantages(r, "median")


def test_rloo_advantage_against_the_papers_formula():
    """Ahmadian et al. 2024 (arXiv:2402.14740), Eq. for RLOO: A_i = r_i - 1/(k-1) sum_{j != i} r_j,
    the k samples of a prompt contiguous. trl 1.16's RLOO trainer computes its advantage inline
    in `RLOOTrainer._generate_and_score_completions` (trl/trainer/rloo_trainer.py, lines
    1686-1690: rewards viewed as (-1, num_generations), baseline = (group sum - r) /
    (count - 1), advantage = r - baseline) and cannot be called alone, so the reference here is
    the formula, written as an explicit loop over i and j, with trl's layout."""
    g = torch.Generator().manual_seed(0)
    for k in (2, 3, 8):
        r = torch.randn(5 * k, generator=g, dtype=torch.float64)
        ref = torch.empty_like(r)
        for p in range(5):
            for i in range(k):
                others = [float(r[p * k + j]) for j in range(k) if j != i]
                ref[p * k + i] = r[p * k + i] - sum(others) / (k - 1)
        close(rloo_advantages(r, k), ref, 1e-12)
        # the closed form k/(k-1) (r_i - group mean), and zero mean per prompt
        grouped = r.view(-1, k)
        close(rloo_advantages(r, k), (k / (k - 1) * (grouped - grouped.mean(-1, keepdim=True))).view(-1))
        close(rloo_advantages(r, k).view(-1, k).sum(-1), torch.zeros(5))
    with pytest.raises(ValueError, match="k=1"):
        rloo_advantages(torch.ones(4), 1)
    with pytest.raises(ValueError, match="multiple"):
        rloo_advantages(torch.ones(5), 2)


def test_rloo_baseline_never_sees_its_own_reward():
    r = torch.tensor([1.0, 2.0, 3.0, 10.0, 20.0, 30.0])
    a = rloo_advantages(r, 3)
    r2 = r.clone()
    r2[0] = 100.0
    a2 = rloo_advantages(r2, 3)
    close(a2[0] - a[0], 99.0)          # its own reward enters with weight 1 ...
    close(a2[3:], a[3:])               # ... and another prompt's group is untouched


def test_reinforce_loss_gradient_is_autograd_of_the_formula():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 7, generator=g, requires_grad=True)
    tokens = torch.randint(7, (3, 5), generator=g)
    m = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.float)
    rewards = torch.tensor([1.0, -0.5, 2.0])
    adv = reinforce_advantages(rewards, "mean")
    logp = torch.log_softmax(logits, -1).gather(-1, tokens[..., None]).squeeze(-1)
    loss = reinforce_loss(logp, adv, m)
    (grad,) = torch.autograd.grad(loss, logits)
    # the formula by hand: -(1/N) sum_b sum_t A_b log pi(y_bt), N real tokens
    logits2 = logits.detach().clone().requires_grad_(True)
    lp2 = torch.log_softmax(logits2, -1)
    total = sum(-float(adv[b]) * lp2[b, t, tokens[b, t]] for b in range(3) for t in range(5) if m[b, t])
    (total / m.sum()).backward()
    close(loss, (total / m.sum()).detach())
    close(grad, logits2.grad)
    # per-token advantages broadcast the same way, and the advantage carries no gradient
    close(reinforce_loss(logp, adv[:, None].expand(3, 5), m), loss)
    adv_param = adv.clone().requires_grad_(True)
    assert not reinforce_loss(logp.detach(), adv_param, m).requires_grad


def test_reinforce_raises_the_probability_of_rewarded_samples():
    # a 4-armed bandit: REINFORCE with a baseline moves probability to the best arm
    torch.manual_seed(0)
    logits = torch.zeros(4, requires_grad=True)
    arm_reward = torch.tensor([0.0, 0.2, 1.0, 0.1])
    opt = torch.optim.SGD([logits], lr=0.5)
    for _ in range(200):
        probs = torch.softmax(logits, -1)
        arms = torch.multinomial(probs.detach(), 16, replacement=True)
        adv = reinforce_advantages(arm_reward[arms], "mean")
        logp = torch.log_softmax(logits, -1)[arms][:, None]
        opt.zero_grad()
        reinforce_loss(logp, adv, torch.ones(16, 1)).backward()
        opt.step()
    probs = torch.softmax(logits.detach(), -1)
    assert int(probs.argmax()) == 2 and float(probs[2]) > 0.8
