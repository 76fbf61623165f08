"""GRPO (minillm.alignment.grpo): group advantages with and without the std (Dr. GRPO), the
clipped surrogate + k3 KL by hand and against trl's GRPOTrainer loss, exact-match rewards, an
end-to-end step that raises the log-probability of the rewarded responses."""

import copy
import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch
from rl_checks import close, tiny_gpt

from minillm.alignment.chat import add_special_tokens
from minillm.alignment.grpo import (
    GRPOConfig,
    GRPOTrainer,
    exact_match_rewards,
    group_advantages,
    grpo_loss,
    pass_at_k,
)
from minillm.alignment.ppo import token_logprobs
from minillm.alignment.rollout import response_forward, sample_rollout
from minillm.data.sft import SFTExample
from minillm.tokenizers import ByteTokenizer

grpo_trainer = pytest.importorskip("trl.trainer.grpo_trainer")
trl_utils = pytest.importorskip("trl.trainer.utils")


# ---- advantages ------------------------------------------------------------------------------
def test_group_advantages_by_hand():
    r = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0])
    # group 1: mean 0.5, std (n - 1) sqrt(4 * 0.25 / 3); group 2: mean 0.75, std sqrt(0.75 / 3)
    s1, s2 = math.sqrt(1 / 3), math.sqrt(0.75 / 3)
    close(group_advantages(r, 4), [0.5 / (s1 + 1e-4), -0.5 / (s1 + 1e-4), -0.5 / (s1 + 1e-4),
                                   0.5 / (s1 + 1e-4), 0.25 / (s2 + 1e-4), 0.25 / (s2 + 1e-4),
                                   0.25 / (s2 + 1e-4), -0.75 / (s2 + 1e-4)], tol=1e-5)
    # Dr. GRPO: no std division
    close(group_advantages(r, 4, scale="none"), [0.5, -0.5, -0.5, 0.5, 0.25, 0.25, 0.25, -0.75])
    # a flat group carries no signal
    close(group_advantages(torch.ones(6), 3), torch.zeros(6))


def test_group_advantages_use_trls_std_convention():
    torch.manual_seed(0)
    r = torch.rand(12)
    groups = r.view(3, 4)
    std = trl_utils.nanstd(groups, dim=1).repeat_interleave(4)
    mean = groups.mean(1).repeat_interleave(4)
    close(group_advantages(r, 4), (r - mean) / (std + 1e-4), tol=1e-5)


def test_group_size_one_and_bad_values_are_errors():
    with pytest.raises(ValueError, match="group_size=1"):
        group_advantages(torch.ones(4), 1)
    with pytest.raises(ValueError, match="group_size=1"):
        GRPOConfig(group_size=1)
    with pytest.raises(ValueError, match="groups of 3"):
        group_advantages(torch.ones(4), 3)
    with pytest.raises(ValueError, match="scale"):
        group_advantages(torch.ones(4), 2, scale="batch")
    for field, value in (("clip_range", 0.0), ("beta", -0.1), ("loss_type", "ppo")):
        with pytest.raises(ValueError, match=field):
            GRPOConfig(**{field: value})


# ---- the loss ---------------------------------------------------------------------------------
def test_grpo_loss_by_hand():
    mask = torch.tensor([[1, 1], [1, 0]])
    lp = torch.full((2, 2), math.log(0.5))
    adv = torch.tensor([1.0, -0.5])
    # ratio 1, reference = policy: only the advantages count
    loss, stats = grpo_loss(lp, lp, lp, adv, mask, beta=0.1, loss_type="grpo")
    close(loss, -(1.0 + -0.5) / 2)            # per-response mean, then over responses
    close(stats["kl"], 0.0)
    close(grpo_loss(lp, lp, lp, adv, mask, loss_type="bnpo")[0], -(1 + 1 - 0.5) / 3)
    close(grpo_loss(lp, lp, lp, adv, mask, loss_type="dr_grpo", max_new_tokens=4)[0],
          -(1 + 1 - 0.5) / (2 * 4))
    # reference at 0.25: k3 = (0.25 / 0.5 - 1) - log(0.25 / 0.5)
    k3 = -0.5 + math.log(2)
    ref = torch.full((2, 2), math.log(0.25))
    loss, stats = grpo_loss(lp, lp, ref, adv, mask, beta=0.1, loss_type="grpo")
    close(loss, -((1.0 - 0.1 * k3) + (-0.5 - 0.1 * k3)) / 2)
    close(stats["kl"], k3)
    # clipping: ratio 1.5 with A > 0 is held at 1.2
    loss, stats = grpo_loss(torch.log(torch.tensor([[0.75]])), lp[:1, :1], lp[:1, :1],
                            torch.tensor([1.0]), torch.ones(1, 1), clip_range=0.2, beta=0.0)
    close(loss, -1.2)
    close(stats["clip_frac"], 1.0)


def _trl_grpo_loss(logp, old, ref, adv, mask, loss_type, beta, eps, max_len):
    """trl's GRPOTrainer._compute_loss with the trainer's state stubbed: the per-token log-probs
    it would compute are handed to it."""
    stub = SimpleNamespace(
        _get_per_token_logps_and_entropies=lambda *a, **k: (logp, torch.zeros_like(logp), None),
        top_entropy_quantile=1.0, off_policy_mask_threshold=None, importance_sampling_level="token",
        beta=beta, args=SimpleNamespace(use_bias_correction_kl=False, delta=None),
        loss_type=loss_type, epsilon_low=eps, epsilon_high=eps, use_vllm=False,
        model=SimpleNamespace(training=False), current_gradient_accumulation_steps=1,
        _entropy_bonus_enabled=False, aux_loss_enabled=False, max_completion_length=max_len,
        _metrics=defaultdict(lambda: defaultdict(list)),
        accelerator=SimpleNamespace(reduce=lambda t, reduction: t, gather=lambda t: t,
                                    gather_for_metrics=lambda t: t))
    b, t = logp.shape
    inputs = {"prompt_ids": torch.zeros(b, 1, dtype=torch.long),
              "prompt_mask": torch.ones(b, 1, dtype=torch.long),
              "completion_ids": torch.zeros(b, t, dtype=torch.long), "completion_mask": mask,
              "advantages": adv, "old_per_token_logps": old, "ref_per_token_logps": ref}
    return grpo_trainer.GRPOTrainer._compute_loss(stub, None, inputs)


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo"])
def test_grpo_loss_equals_trl(loss_type):
    torch.manual_seed(1)
    b, t = 6, 5
    logp = -torch.rand(b, t) * 3
    old = logp + torch.randn(b, t) * 0.3          # ratios both sides of the clip range
    ref = logp + torch.randn(b, t) * 0.5
    mask = (torch.arange(t) < torch.tensor([5, 3, 1, 4, 5, 2])[:, None]).long()
    adv = torch.randn(b)
    ours, _ = grpo_loss(logp, old, ref, adv, mask, clip_range=0.2, beta=0.04,
                        loss_type=loss_type, max_new_tokens=8)
    close(ours, _trl_grpo_loss(logp, old, ref, adv, mask, loss_type, 0.04, 0.2, 8), tol=1e-6)


def test_exact_match_rewards():
    close(exact_match_rewards(["7", " 12 ", "x"], ["7", "12", "y"]), [1.0, 1.0, 0.0])
    with pytest.raises(ValueError, match="2 answers for 1"):
        exact_match_rewards(["a", "b"], ["a"])


def test_pass_at_k_equals_counting_the_draws():
    # pass@k = the share of the C(n, k) ways to draw k of the n samples that hold a right one
    import itertools
    for n, c in [(5, 0), (5, 2), (8, 1), (8, 7), (6, 6)]:
        samples = [1] * c + [0] * (n - c)
        for k in range(1, n + 1):
            draws = list(itertools.combinations(samples, k))
            assert pass_at_k(n, c, k) == pytest.approx(sum(any(d) for d in draws) / len(draws))
    assert pass_at_k(8, 2, 1) == pytest.approx(2 / 8)  # pass@1 is the share right
    for bad in [(4, 5, 1), (4, -1, 1), (4, 2, 0), (4, 2, 5)]:
        with pytest.raises(ValueError, match="pass_at_k needs"):
            pass_at_k(*bad)


# ---- end to end ------------------------------------------------------------------------------
def test_grpo_step_raises_the_rewarded_responses(monkeypatch):
    tok = add_special_tokens(ByteTokenizer())
    policy = tiny_gpt(tok.vocab_size)
    examples = [SFTExample("upper", p, "x", "train", "p", 0, False) for p in ("Hi", "Lo")]
    cfg = GRPOConfig(prompts_per_step=2, group_size=4, minibatch_size=8, max_new_tokens=6,
                     lr=1e-2, beta=0.0, seed=0)
    trainer = GRPOTrainer(policy, copy.deepcopy(policy), tok, examples, cfg)
    # a stand-in verifier: responses starting with an even byte are "correct"
    seen = {}

    def fake_rewards(answers, references):
        del references
        r = torch.tensor([float(len(a) > 0 and ord(a[0]) % 2 == 0) for a in answers])
        seen["r"] = r
        return r
    monkeypatch.setattr("minillm.alignment.grpo.exact_match_rewards", fake_rewards)
    # replay the rollout the step will draw, to score its responses before and after
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(2, generator=g).tolist()
    rows = [i for i in order for _ in range(4)]
    ro = sample_rollout(policy, [trainer.prompts[i] for i in rows], 6, trainer.stop_id, g)
    mask = ro.response_mask.float()

    def seq_logp():
        with torch.no_grad():
            return (token_logprobs(response_forward(policy, ro)[0], ro.responses) * mask).sum(-1)
    before = seq_logp()
    log = trainer.step()
    assert log["reward"] == pytest.approx(float(seen["r"].mean()))
    adv = group_advantages(seen["r"], 4)
    assert adv.abs().sum() > 0, "the replayed rollout has no signal; change the seed"
    change = seq_logp() - before
    assert float((adv * change).sum()) > 0  # rewarded responses gained probability
    for key in ("reward", "kl", "clip_frac", "loss", "response_length", "solved_groups"):
        assert math.isfinite(log[key])
    # the lengths of rewarded and unrewarded responses, from the replayed rollout
    lengths, right = mask.sum(-1), seen["r"] > 0
    for kind, pick in (("right", right), ("wrong", ~right)):
        expected = float(lengths[pick].mean()) if pick.any() else None
        assert log[f"length_{kind}"] == (pytest.approx(expected) if expected is not None else None)


def test_flat_groups_leave_the_policy_where_it_is():
    # a random model answers no verifiable example exactly: every group is flat, every
    # advantage 0, and with beta = 0 nothing moves (the std division does not blow 0/0 up)
    tok = add_special_tokens(ByteTokenizer())
    policy = tiny_gpt(tok.vocab_size)
    examples = [SFTExample("arithmetic", "What is 2 + 3?", "5", "train", "arithmetic", 0, False),
                SFTExample("upper", "Upper-case: hi", "HI", "train", "p", 0, False)]
    trainer = GRPOTrainer(policy, copy.deepcopy(policy), tok, examples,
                          GRPOConfig(prompts_per_step=2, group_size=3, minibatch_size=6,
                                     max_new_tokens=4, lr=1e-2, beta=0.0))
    before = copy.deepcopy(policy.state_dict())
    log = trainer.step()
    assert log["reward"] == 0.0 and log["flat_groups"] == 1.0 and log["loss"] == 0.0
    for k, v in policy.state_dict().items():
        assert torch.equal(v, before[k]), k
    scores = trainer.evaluate(examples)
    assert set(scores) == {"arithmetic", "upper", "mean"} and scores["mean"] == 0.0
    sampled = trainer.evaluate_sampled(examples, n=3, max_new_tokens=4, batch_size=4)
    assert sampled == {"arithmetic": {"pass@1": 0.0, "pass@3": 0.0},
                       "upper": {"pass@1": 0.0, "pass@3": 0.0}}


def test_sampled_evaluation_counts_right_samples(monkeypatch):
    # a verifier that calls every other sample right: pass@1 is 1/2 and pass@2 is 1
    tok = add_special_tokens(ByteTokenizer())
    policy = tiny_gpt(tok.vocab_size)
    examples = [SFTExample("upper", p, "X", "test", "p", 0, False) for p in ("a", "b", "c")]
    trainer = GRPOTrainer(policy, copy.deepcopy(policy), tok, examples,
                          GRPOConfig(prompts_per_step=1, group_size=2, max_new_tokens=3))
    monkeypatch.setattr("minillm.alignment.grpo.exact_match_rewards",
                        lambda answers, refs: torch.tensor([float(i % 2) for i in
                                                            range(len(answers))]))
    out = trainer.evaluate_sampled(examples, n=2, batch_size=2)
    assert out == {"upper": {"pass@1": 0.5, "pass@2": 1.0}}
    with pytest.raises(ValueError, match="n=0"):
        trainer.evaluate_sampled(examples, n=0)
