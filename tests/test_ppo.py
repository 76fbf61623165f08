"""PPO (minillm.alignment.ppo, .rollout, .ppo_trainer): every piece on hand-computed values,
against trl where it ships the function, then a tiny end-to-end step and an exact resume."""

import copy
import math

import pytest
import torch
from rl_checks import check_resume, close, tiny_gpt

from minillm.alignment.chat import add_special_tokens
from minillm.alignment.ppo import (
    AdaptiveKLController,
    FixedKLController,
    entropy_from_logits,
    explained_variance,
    gae_advantages,
    kl_penalty,
    masked_mean,
    masked_var,
    masked_whiten,
    ppo_policy_loss,
    ppo_value_loss,
    rewards_with_kl,
    token_logprobs,
)
from minillm.alignment.ppo_trainer import PPOConfig, PPOTrainer
from minillm.alignment.rollout import response_forward, response_mask, sample_rollout
from minillm.data.preference import gold_reward
from minillm.models import GPT
from minillm.tokenizers import ByteTokenizer

trl_utils = pytest.importorskip("trl.trainer.utils")


# ---- masked statistics -----------------------------------------------------------------------
X = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
M = torch.tensor([[1, 1, 0], [1, 0, 0]])


def test_masked_mean_and_var_by_hand():
    # real values 1, 2, 4: mean 7/3; squared deviations 16/9 + 1/9 + 25/9 = 42/9
    close(masked_mean(X, M), 7 / 3)
    close(masked_mean(X, M, dim=1), [1.5, 4.0])
    close(masked_var(X, M), (42 / 9) / 2)
    close(masked_var(X, M, unbiased=False), (42 / 9) / 3)
    white = masked_whiten(X, M, eps=0.0)
    close(white, torch.tensor([[1 - 7 / 3, 2 - 7 / 3, 0], [4 - 7 / 3, 0, 0]]) / math.sqrt(21 / 9))
    close(masked_whiten(X, M, shift_mean=False, eps=0.0)[0, 0], (1 - 7 / 3) / math.sqrt(21 / 9) + 7 / 3)


def test_masked_whiten_ignores_padding():
    torch.manual_seed(0)
    lengths = [5, 2, 7]
    real = [torch.randn(n) for n in lengths]
    padded = torch.full((3, 7), 1e6)  # padding holds garbage that must not count
    mask = torch.zeros(3, 7, dtype=torch.long)
    for i, r in enumerate(real):
        padded[i, :len(r)], mask[i, :len(r)] = r, 1
    flat = torch.cat(real)[None]
    ones = torch.ones_like(flat, dtype=torch.long)
    close(masked_mean(padded, mask), masked_mean(flat, ones))
    white = masked_whiten(padded, mask)
    close(white[mask.bool()], masked_whiten(flat, ones)[0])
    close(white[~mask.bool()], torch.zeros(int((mask == 0).sum())))
    # and the plain formula on the real values
    v = torch.cat(real)
    close(white[mask.bool()], (v - v.mean()) / torch.sqrt(v.var() + 1e-8), tol=1e-5)


# ---- log-probs, entropy, KL ---------------------------------------------------------------------
def test_token_logprobs_and_entropy_by_hand_and_against_trl():
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25], [0.1, 0.2, 0.7]]))
    close(token_logprobs(logits, torch.tensor([0, 2])), [math.log(0.5), math.log(0.7)])
    close(entropy_from_logits(logits), [-(0.5 * math.log(0.5) + 0.5 * math.log(0.25)),
                                        -(0.1 * math.log(0.1) + 0.2 * math.log(0.2)
                                          + 0.7 * math.log(0.7))])
    torch.manual_seed(2)
    big, tokens = torch.randn(3, 5, 11) * 3, torch.randint(0, 11, (3, 5))
    close(token_logprobs(big, tokens), trl_utils.selective_log_softmax(big, tokens), tol=1e-5)
    close(entropy_from_logits(big), trl_utils.entropy_from_logits(big), tol=1e-5)


def test_kl_estimators_by_hand_and_unbiased():
    # pi = 0.5, pi_ref = 0.25: l = log 2; k1 = log 2, k3 = (0.5 - 1) - log 0.5
    lp, ref = torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)])
    close(kl_penalty(lp, ref, "k1"), math.log(2))
    close(kl_penalty(lp, ref, "k3"), -0.5 + math.log(2))
    # both are unbiased: their expectation under pi over the whole vocabulary is KL(pi || ref)
    p = torch.tensor([0.5, 0.3, 0.2])
    q = torch.tensor([0.2, 0.2, 0.6])
    kl = float((p * (p / q).log()).sum())
    for est in ("k1", "k3"):
        close((p * kl_penalty(p.log(), q.log(), est)).sum(), kl)
    assert bool((kl_penalty(p.log(), q.log(), "k3") >= 0).all())  # k3 is never negative
    assert bool((kl_penalty(p.log(), q.log(), "k1") < 0).any())   # k1 can be
    with pytest.raises(ValueError, match="estimator"):
        kl_penalty(lp, ref, "k2")


def test_rewards_with_kl_puts_the_score_on_the_last_token():
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 9.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    r = rewards_with_kl(torch.tensor([1.0, 2.0]), kl, mask, kl_coef=0.5)
    close(r, [[-0.05, -0.1, -0.15 + 1.0], [-0.2, -0.25 + 2.0, 0.0]])
    with pytest.raises(ValueError, match="kl_coef=-0.1"):
        rewards_with_kl(torch.tensor([1.0, 2.0]), kl, mask, kl_coef=-0.1)


# ---- GAE -----------------------------------------------------------------------------------
def test_gae_by_hand():
    # gamma 0.9, lambda 0.8: delta_2 = 1 - 0.7; delta_1 = 0.9 * 0.7 - 0.6; delta_0 = 0.9 * 0.6 - 0.5
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 5.0]])
    values = torch.tensor([[0.5, 0.6, 0.7], [0.5, 0.7, 9.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])  # row 1 ends at t = 1: V after it is 0
    adv, ret = gae_advantages(rewards, values, mask, gamma=0.9, lam=0.8)
    a2 = 0.3
    a1 = 0.03 + 0.72 * a2
    a0 = 0.04 + 0.72 * a1
    b1 = 1.0 - 0.7
    b0 = (0.9 * 0.7 - 0.5) + 0.72 * b1
    close(adv, [[a0, a1, a2], [b0, b1, 0.0]])
    close(ret, [[a0 + 0.5, a1 + 0.6, a2 + 0.7], [b0 + 0.5, b1 + 0.7, 0.0]])


def test_gae_limits():
    torch.manual_seed(3)
    rewards, values = torch.randn(2, 5), torch.randn(2, 5)
    mask = torch.ones(2, 5, dtype=torch.long)
    # lambda = 1, gamma = 1: advantage = reward-to-go - V (Monte-Carlo)
    adv, _ = gae_advantages(rewards, values, mask, gamma=1.0, lam=1.0)
    close(adv, rewards.flip(-1).cumsum(-1).flip(-1) - values, tol=1e-5)
    # lambda = 0: one-step TD error
    adv, _ = gae_advantages(rewards, values, mask, gamma=0.9, lam=0.0)
    nxt = torch.cat([values[:, 1:], torch.zeros(2, 1)], dim=1)
    close(adv, rewards + 0.9 * nxt - values, tol=1e-6)
    with pytest.raises(ValueError, match="lam=1.5"):
        gae_advantages(rewards, values, mask, lam=1.5)


# ---- losses ------------------------------------------------------------------------------------
def test_clipped_policy_loss_by_hand():
    ratios = torch.tensor([[1.5, 0.5, 1.1]])
    old = torch.zeros(1, 3)
    adv = torch.tensor([[1.0, 1.0, -1.0]])
    mask = torch.ones(1, 3)
    loss, stats = ppo_policy_loss(ratios.log(), old, adv, mask, clip_range=0.2)
    # min(1.5, 1.2) = 1.2; min(0.5, 0.8) = 0.5; min(-1.1, -1.1) = -1.1
    close(loss, -(1.2 + 0.5 - 1.1) / 3)
    close(stats["clip_frac"], 2 / 3)
    close(stats["approx_kl"], sum((r - 1) - math.log(r) for r in (1.5, 0.5, 1.1)) / 3)
    # padding does not count
    loss_pad, _ = ppo_policy_loss(torch.cat([ratios.log(), torch.tensor([[5.0]])], 1),
                                  torch.zeros(1, 4), torch.cat([adv, torch.tensor([[7.0]])], 1),
                                  torch.tensor([[1, 1, 1, 0]]), 0.2)
    close(loss_pad, loss)
    for bad in (0.0, -0.1):
        with pytest.raises(ValueError, match=f"clip_range={bad}"):
            ppo_policy_loss(ratios.log(), old, adv, mask, clip_range=bad)


def test_clipped_value_loss_by_hand():
    values, old, returns = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.5, 1.5]]), \
        torch.tensor([[2.0, 1.0]])
    loss, frac = ppo_value_loss(values, old, returns, torch.ones(1, 2), clip_range_value=0.2)
    # clipped values 0.7, 1.7: errors (1, 1) unclipped, (1.69, 0.49) clipped; max 1.69, 1
    close(loss, 0.5 * (1.69 + 1.0) / 2)
    close(frac, 0.5)
    with pytest.raises(ValueError, match="clip_range_value=0"):
        ppo_value_loss(values, old, returns, torch.ones(1, 2), 0)


def test_explained_variance_by_hand():
    returns, mask = torch.tensor([[1.0, 2.0, 3.0]]), torch.ones(1, 3)
    close(explained_variance(returns, returns, mask), 1.0)
    close(explained_variance(torch.full((1, 3), 2.0), returns, mask), 0.0)
    close(explained_variance(torch.tensor([[1.0, 2.0, 4.0]]), returns, mask), 1 - (2 / 9) / (2 / 3))


def test_kl_controllers():
    ctl = AdaptiveKLController(0.1, target=6.0, horizon=10_000)
    ctl.update(9.0, 16)        # KL/target - 1 = 0.5, clipped to 0.2
    close(ctl.value, 0.1 * (1 + 0.2 * 16 / 10_000))
    before = ctl.value
    ctl.update(6.6, 100)       # error 0.1
    close(ctl.value, before * (1 + 0.1 * 100 / 10_000))
    before = ctl.value
    ctl.update(0.0, 50)        # error -1, clipped to -0.2
    close(ctl.value, before * (1 - 0.2 * 50 / 10_000))
    fixed = FixedKLController(0.3)
    fixed.update(100.0, 16)
    assert fixed.value == 0.3
    for kwargs, field in ((dict(value=-1.0, target=1.0), "kl_coef"),
                          (dict(value=0.1, target=0.0), "kl_target"),
                          (dict(value=0.1, target=1.0, horizon=0), "kl_horizon")):
        with pytest.raises(ValueError, match=field):
            AdaptiveKLController(**kwargs)


@pytest.mark.parametrize("field,value", [("kl_coef", -0.01), ("clip_range", 0.0),
                                         ("clip_range", -1.0), ("clip_range_value", 0.0),
                                         ("minibatch_size", 64), ("gamma", 1.2),
                                         ("kl_estimator", "k9"), ("lr", 0.0)])
def test_bad_ppo_config_is_a_clear_error(field, value):
    with pytest.raises(ValueError, match=field):
        PPOConfig(**{field: value})


# ---- rollouts -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tok():
    return add_special_tokens(ByteTokenizer())


def test_response_mask_ends_at_the_first_stop():
    r = torch.tensor([[5, 7, 9, 9], [5, 5, 5, 5], [9, 9, 9, 9]])
    assert response_mask(r, 9).tolist() == [[1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]]


def test_rollout_logprobs_match_each_row_scored_alone(tok):
    model = tiny_gpt(tok.vocab_size)
    prompts = [tok.encode("hi"), tok.encode("a longer prompt"), tok.encode("mid one")]
    stop = tok.special_tokens["<|end|>"]
    g = torch.Generator().manual_seed(0)
    ro = sample_rollout(model, prompts, 10, stop, generator=g, temperature=0.7)
    assert ro.sequences.shape == (3, ro.prompt_length + ro.responses.size(1))
    logits, = response_forward(model, ro, temperature=0.7)
    logp = token_logprobs(logits, ro.responses)
    for i, p in enumerate(prompts):
        n = int(ro.response_mask[i].sum())
        alone = torch.tensor([list(p) + ro.responses[i, :n].tolist()])
        ref = torch.log_softmax(model(alone).logits[0, len(p) - 1:-1] / 0.7, -1)
        close(logp[i, :n], ref.gather(-1, alone[0, len(p):, None])[:, 0], tol=1e-5)
    # the same seed gives the same rollout
    again = sample_rollout(model, prompts, 10, stop, torch.Generator().manual_seed(0), 0.7)
    assert torch.equal(again.sequences, ro.sequences)
    with pytest.raises(ValueError, match="context_length=64"):
        sample_rollout(model, prompts, 60, stop, g)


# ---- end to end ------------------------------------------------------------------------------
PROMPTS = ["Continue: to be", "Say something sweet", "What is love?", "Speak of death",
           "Continue this speech: Friends,", "Good morrow"]


def byte_reward(rollout, texts):  # a stand-in proxy: the mean token id of the response
    del texts
    mask = rollout.response_mask.float()
    return (rollout.responses.float() * mask).sum(-1) / mask.sum(-1) / 64.0


def make_trainer(tok, **kw):
    policy = tiny_gpt(tok.vocab_size)
    cfg = PPOConfig(**(dict(batch_size=4, minibatch_size=2, ppo_epochs=2, max_new_tokens=12,
                            lr=3e-3, kl_coef=0.05, adaptive_kl=True, kl_target=1.0,
                            kl_horizon=100, seed=0) | kw))
    return PPOTrainer(policy, copy.deepcopy(policy), tok, PROMPTS, byte_reward, cfg,
                      gold_fn=gold_reward)


METRICS = ("proxy_reward", "gold_reward", "kl", "kl_coef", "clip_frac", "approx_kl",
           "explained_variance", "response_length", "entropy", "policy_loss", "value_loss")


def test_ppo_step_changes_the_policy_and_logs_every_metric(tok):
    trainer = make_trainer(tok)
    before = copy.deepcopy(trainer.policy.state_dict())
    logs = [trainer.step(), trainer.step()]
    for log in logs:
        for key in METRICS:
            assert key in log and math.isfinite(log[key]), key
    assert logs[0]["kl"] == pytest.approx(0.0, abs=1e-5)   # the first rollout is the reference's
    assert logs[1]["kl"] > 0
    assert logs[0]["approx_kl"] > 0 and 0 <= logs[0]["clip_frac"] <= 1
    assert 1 <= logs[0]["response_length"] <= 12
    moved = max((trainer.policy.state_dict()[k] - v).abs().max().item() for k, v in before.items())
    assert moved > 1e-4
    assert any(p.abs().sum() > 0 for p in trainer.value_head.parameters())  # the critic learned
    assert logs[1]["kl_coef"] != logs[0]["kl_coef"]  # the adaptive controller moved beta
    for p in trainer.ref.parameters():  # the reference stays frozen
        assert not p.requires_grad


def test_ppo_resume_reproduces_the_uninterrupted_run(tok, tmp_path):
    straight, resumed = check_resume(lambda: make_trainer(tok), tmp_path / "run")
    torch.testing.assert_close(resumed.value_head.linear.weight, straight.value_head.linear.weight,
                               atol=0, rtol=0)
    # the checkpoint's policy is an ordinary GPT folder
    GPT.from_checkpoint(tmp_path / "run")
    with pytest.raises(ValueError, match="kl_coef"):
        make_trainer(tok, kl_coef=0.2).resume(tmp_path / "run")
