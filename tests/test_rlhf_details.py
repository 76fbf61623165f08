"""Huang et al.'s PPO details (missing-EOS penalty, reward normalisation, critic from the reward
model), the fluency-aware gold scorer, and the best-of-n estimator."""

import copy
import itertools
import math

import numpy as np
import pytest
import torch
from rl_checks import RecordingReward, close, tiny_gpt

import minillm.alignment.ppo_trainer as ppo_trainer
from minillm.alignment.best_of_n import (
    best_of_n_expectation,
    best_of_n_kl,
    best_of_n_weights,
    fit_bon_form,
)
from minillm.alignment.chat import ChatTemplate, add_special_tokens
from minillm.alignment.ppo_trainer import PPOConfig, PPOTrainer, ValueModel
from minillm.alignment.reward import FluentGold, RewardModel, mean_token_logprob
from minillm.alignment.rollout import Rollout
from minillm.data.preference import gold_reward
from minillm.tokenizers import ByteTokenizer

PROMPTS = ["Continue: to be", "Say something sweet", "What is love?", "Speak of death",
           "Continue this speech: Friends,", "Good morrow"]


@pytest.fixture(scope="module")
def tok():
    return add_special_tokens(ByteTokenizer())


def make(tok, reward_fn, reward_model=None, **kw):
    policy = tiny_gpt(tok.vocab_size)
    cfg = PPOConfig(**(dict(batch_size=4, minibatch_size=2, ppo_epochs=1, max_new_tokens=10,
                            lr=3e-3, kl_coef=0.05, seed=0) | kw))
    return PPOTrainer(policy, copy.deepcopy(policy), tok, PROMPTS, reward_fn, cfg,
                      gold_fn=gold_reward, reward_model=reward_model)


@pytest.fixture
def trained_scores(monkeypatch):
    """The scores each PPO step hands to rewards_with_kl (what PPO trains on)."""
    seen = []
    real = ppo_trainer.rewards_with_kl

    def spy(scores, kl, mask, kl_coef):
        seen.append(scores.clone())
        return real(scores, kl, mask, kl_coef)

    monkeypatch.setattr(ppo_trainer, "rewards_with_kl", spy)
    return seen


def test_defaults_are_off():
    c = PPOConfig()
    assert c.missing_eos_penalty is None and not c.normalize_reward and not c.value_from_reward_model


def test_missing_eos_penalty_replaces_the_score_of_cut_responses(tok):
    stop = ChatTemplate().stop_id(tok)
    trainer = make(tok, RecordingReward(), missing_eos_penalty=-1.0)
    responses = torch.tensor([[5, 6, stop, stop], [5, 6, 7, 8], [stop, stop, stop, stop]])
    resp_mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]])
    roll = Rollout(torch.cat([torch.full((3, 2), 7), responses], 1),
                   torch.cat([torch.ones(3, 2, dtype=torch.long), resp_mask], 1), resp_mask, 2)
    close(trainer.shape_scores(torch.tensor([0.3, 0.9, -0.2]), roll), [0.3, -1.0, -0.2])
    close(make(tok, RecordingReward()).shape_scores(torch.tensor([0.3, 0.9, -0.2]), roll),
          [0.3, 0.9, -0.2])  # off: untouched


def test_missing_eos_penalty_end_to_end(tok, trained_scores):
    reward = RecordingReward()
    trainer = make(tok, reward, missing_eos_penalty=-1.0, max_new_tokens=6)
    stop = trainer.stop_id
    for _ in range(3):
        log = trainer.step()
        roll, raw = reward.calls[-1]
        ended = ((roll.responses == stop) & roll.response_mask.bool()).any(-1)
        close(trained_scores[-1], torch.where(ended, raw, torch.tensor(-1.0)))
        assert log["ended_share"] == pytest.approx(float(ended.float().mean()))
        close(log["proxy_reward"], raw.mean())  # the log keeps the raw score
    # a random tiny model rarely says <|end|> within 6 tokens: the penalty did act
    assert any(float(s.min()) == -1.0 for s in trained_scores)


def test_reward_normalisation_uses_sft_samples_and_leaves_rollouts_alone(tok, trained_scores):
    reward = RecordingReward()
    trainer = make(tok, reward, normalize_reward=True, reward_norm_samples=10)
    initial = copy.deepcopy(trainer.policy.state_dict())
    trainer.step()
    # 10 SFT samples in batches of 4 (three calls), then the step's own rollout
    assert [len(s) for _, s in reward.calls] == [4, 4, 2, 4]
    measured = torch.cat([s for _, s in reward.calls[:3]])
    mean, std = trainer.reward_stats
    close(mean, measured.mean())
    close(std, measured.std())
    close(trained_scores[0], (reward.calls[3][1] - measured.mean()) / measured.std(), 1e-5)
    # measured on the initial policy; a second trainer measures the same numbers
    other = make(tok, RecordingReward(), normalize_reward=True, reward_norm_samples=10)
    assert all(torch.equal(v, other.policy.state_dict()[k]) for k, v in initial.items())
    assert other.measure_reward_stats() == pytest.approx(trainer.reward_stats)
    # the rollouts are those of a run without normalisation
    plain_reward = RecordingReward()
    make(tok, plain_reward).step()
    assert torch.equal(plain_reward.calls[0][0].sequences, reward.calls[3][0].sequences)
    with pytest.raises(ValueError, match="reward_norm_samples"):
        PPOConfig(normalize_reward=True, reward_norm_samples=1)


def _rm(tok):
    torch.manual_seed(1)
    return RewardModel.from_sft(tiny_gpt(tok.vocab_size, seed=1), seed=1).eval()


def test_value_model_starts_as_the_reward_models_score_of_each_prefix(tok):
    rm = _rm(tok)
    reward = RecordingReward()
    trainer = make(tok, reward, reward_model=rm, value_from_reward_model=True)
    assert isinstance(trainer.value_head, ValueModel)
    trainer.policy.eval()
    prompts = [trainer.prompts[i] for i in range(4)]
    roll = ppo_trainer.sample_rollout(trainer.policy, prompts, 6, trainer.stop_id, torch.Generator().manual_seed(0))
    with torch.no_grad():
        _, values = trainer.evaluate_forward(roll)
        p = roll.prompt_length
        for t in range(roll.responses.size(1)):
            # V_t reads the state before response token t: the prefix ending at position p - 1 + t
            expect = rm(roll.sequences[:, :p + t], attention_mask=roll.attention_mask[:, :p + t])
            close(values[:, t], expect, 1e-5)
    # the critic trains its own copy: the reward model does not move
    before = copy.deepcopy(rm.state_dict())
    trainer.step()
    assert all(torch.equal(v, rm.state_dict()[k]) for k, v in before.items())
    moved = max((a - b).abs().max().item() for a, b in zip(trainer.value_head.head.parameters(),
                                                         rm.head.parameters(), strict=True))
    assert moved > 0
    with pytest.raises(ValueError, match="reward_model"):
        make(tok, reward, value_from_reward_model=True)


def test_value_model_is_rescaled_with_normalised_rewards(tok):
    rm = _rm(tok)
    trainer = make(tok, RecordingReward(), reward_model=rm, value_from_reward_model=True,
                   normalize_reward=True, reward_norm_samples=8)
    mean, std = trainer.measure_reward_stats()
    prompts = [trainer.prompts[i] for i in range(4)]
    roll = ppo_trainer.sample_rollout(trainer.policy, prompts, 5, trainer.stop_id, torch.Generator().manual_seed(0))
    with torch.no_grad():
        _, values = trainer.evaluate_forward(roll)
        p = roll.prompt_length
        expect = rm(roll.sequences[:, :p + 2], attention_mask=roll.attention_mask[:, :p + 2])
    close(values[:, 2], (expect - mean) / std, 1e-5)


def test_resume_with_every_detail_on_reproduces_the_run(tok, tmp_path):
    kw = dict(missing_eos_penalty=-1.0, normalize_reward=True, reward_norm_samples=8,
              value_from_reward_model=True)
    straight = make(tok, RecordingReward(), reward_model=_rm(tok), **kw)
    straight.fit(3)
    first = make(tok, RecordingReward(), reward_model=_rm(tok), **kw)
    first.fit(2, checkpoint=tmp_path / "run")
    resumed = make(tok, RecordingReward(), reward_model=_rm(tok), **kw)
    resumed.resume(tmp_path / "run")
    assert resumed.reward_stats == pytest.approx(straight.reward_stats)
    resumed.fit(1)
    for k, v in straight.value_head.state_dict().items():
        torch.testing.assert_close(resumed.value_head.state_dict()[k], v, atol=0, rtol=0)
    strip = [{k: v for k, v in h.items() if not k.endswith("_s")} for h in straight.history]
    assert [{k: v for k, v in h.items() if not k.endswith("_s")} for h in resumed.history] == strip


# ---- the fluency-aware gold scorer -------------------------------------------------------
def test_fluent_gold_is_the_lexicon_plus_the_base_models_mean_logprob():
    tok = ByteTokenizer()
    base = tiny_gpt(tok.vocab_size, seed=3)
    gold = FluentGold(base, tok, fluency_weight=0.7)
    texts = ["O sweet love, what joy!", "h h h", "", "I hate this"]
    got = gold.score(texts)
    for text, g in zip(texts, got.tolist(), strict=True):
        if text:
            ids = torch.tensor([tok.encode("\n" + text)])
            with torch.no_grad():
                logp = torch.log_softmax(base(ids).logits[0, :-1].double(), -1)
            n_ctx = len(tok.encode("\n"))
            targets = ids[0, 1:]
            per = logp[torch.arange(len(targets)), targets][n_ctx - 1:]
            fluency = float(per.mean())
        else:
            fluency = -math.log(base.config.vocab_size)  # documented floor for an empty text
        assert g == pytest.approx(gold_reward(text) + 0.7 * fluency, abs=1e-5)
        assert gold(text) == pytest.approx(g, abs=1e-5)  # alone vs padded in a batch
    # batching and padding change nothing
    close(mean_token_logprob(base, tok, texts, batch_size=1), mean_token_logprob(base, tok, texts), 1e-5)
    # weight 0 is the lexicon scorer
    close(FluentGold(base, tok, 0.0).score(texts), [gold_reward(t) for t in texts])
    with pytest.raises(ValueError, match="fluency_weight"):
        FluentGold(base, tok, -1.0)


# ---- best-of-n ---------------------------------------------------------------------------
def test_best_of_n_expectation_equals_enumerating_every_subset():
    rng = np.random.default_rng(0)
    proxy = rng.normal(size=(3, 7))
    gold = rng.normal(size=(3, 7))
    for n in range(1, 8):
        brute = np.array([np.mean([gold[p, max(s, key=lambda i: proxy[p, i])]
                                   for s in itertools.combinations(range(7), n)]) for p in range(3)])
        np.testing.assert_allclose(best_of_n_expectation(proxy, gold, n), brute, atol=1e-12)
        assert best_of_n_weights(7, n).sum() == pytest.approx(1.0)
    np.testing.assert_allclose(best_of_n_expectation(proxy, gold, 1), gold.mean(1))
    np.testing.assert_allclose(best_of_n_expectation(proxy, proxy, 7), proxy.max(1))
    # several value arrays at once
    both = best_of_n_expectation(proxy, np.stack([gold, proxy]), 3)
    np.testing.assert_allclose(both[0], best_of_n_expectation(proxy, gold, 3))
    with pytest.raises(ValueError):
        best_of_n_weights(7, 8)


def test_best_of_n_kl_formula_and_a_monte_carlo_check():
    assert best_of_n_kl(1) == 0.0
    assert best_of_n_kl(4) == pytest.approx(math.log(4) - 3 / 4)
    # exact KL of best-of-n over a fine discretisation of a continuous score: the pick of rank
    # u in [0, 1] has density n u^(n-1), so KL = E[log(n u^(n-1))] = log n - (n - 1)/n
    u = (np.arange(200_000) + 0.5) / 200_000
    for n in (2, 8, 64):
        log_dens = math.log(n) + (n - 1) * np.log(u)
        assert float(np.mean(np.exp(log_dens) * log_dens)) == pytest.approx(best_of_n_kl(n), abs=1e-3)
    with pytest.raises(ValueError):
        best_of_n_kl(0)


def test_fit_bon_form_recovers_its_parameters():
    d = np.sqrt([best_of_n_kl(2 ** k) for k in range(8)])
    alpha, beta, peak = fit_bon_form(d, d * (0.5 - 0.3 * d))
    assert (alpha, beta) == pytest.approx((0.5, 0.3))
    assert peak == pytest.approx(0.5 / 0.6)
    assert fit_bon_form(d, d * (0.5 + 0.1 * d))[2] == math.inf      # never bends down
    assert fit_bon_form(d, d * (-0.2 - 0.1 * d))[2] == 0.0          # only falls
