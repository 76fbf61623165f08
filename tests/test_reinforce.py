"""REINFORCE, REINFORCE with a baseline, RLOO's leave-one-out advantage, and masked_normalize;
the ReinforceTrainer: one replayed step against a by-hand loss, gradient and AdamW update per
estimator (RLOO also against trl's recipe), the logged metrics, resume, bad configs."""

import copy
import math

import pytest
import torch
from rl_checks import RecordingReward, check_resume, close, tiny_gpt

import minillm.alignment.reinforce as reinforce_mod
from minillm.alignment.chat import add_special_tokens
from minillm.alignment.grpo import grpo_loss
from minillm.alignment.ppo import masked_mean, masked_normalize
from minillm.alignment.reinforce import (
    ReinforceConfig,
    ReinforceTrainer,
    estimator_advantages,
    reinforce_advantages,
    reinforce_loss,
    rloo_advantages,
)
from minillm.alignment.rollout import sample_rollout
from minillm.data.preference import gold_reward
from minillm.models import GPT
from minillm.tokenizers import ByteTokenizer


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


# ---- the trainer: one replayed step, by hand ---------------------------------------------------
PROMPTS = ["Continue: to be", "Say something sweet", "What is love?", "Speak of death",
           "Good morrow"]


@pytest.fixture(scope="module")
def tok():
    return add_special_tokens(ByteTokenizer())


def make_trainer(tok, reward=None, **kw):
    policy = tiny_gpt(tok.vocab_size, seed=0)
    ref = tiny_gpt(tok.vocab_size, seed=1)  # another model: the KL is not 0 at step 1
    cfg = ReinforceConfig(**(dict(prompts_per_step=2, samples_per_prompt=3, max_new_tokens=8,
                                  temperature=0.9, lr=1e-3, kl_coef=0.1, seed=3) | kw))
    return ReinforceTrainer(policy, ref, tok, PROMPTS, reward or RecordingReward(), cfg,
                            gold_fn=gold_reward)


def _trl_rloo_advantages(scores, kl, beta, k):
    """trl 1.16's RLOO recipe as its source documents it (rloo_trainer.py,
    _generate_and_score_completions, lines 1664-1690): rewards -= beta * kl with kl the k1 sum
    over the completion mask; then per prompt baseline = (group sum - r) / (k - 1) and
    advantage = r - baseline (normalize_advantages off, its default)."""
    rewards = scores - beta * kl
    grouped = rewards.view(-1, k)
    baseline = (grouped.sum(-1, keepdim=True) - grouped) / (k - 1)
    return (grouped - baseline).view(-1)


@pytest.mark.parametrize("estimator,penalty,grad_clip",
                         [("reinforce", None, 0.0), ("mean", None, 0.0), ("rloo", None, 0.0),
                          ("rloo", -1.0, 0.05)])
def test_one_step_equals_the_loss_by_hand(tok, monkeypatch, estimator, penalty, grad_clip):
    reward = RecordingReward()
    trainer = make_trainer(tok, reward, estimator=estimator, missing_eos_penalty=penalty,
                           grad_clip=grad_clip)
    c, k = trainer.config, trainer.config.samples_per_prompt
    seen = {}
    real_loss = reinforce_mod.reinforce_loss

    def spy(logp, adv, mask):
        seen["adv"] = adv.detach().clone()
        return real_loss(logp, adv, mask)
    monkeypatch.setattr(reinforce_mod, "reinforce_loss", spy)
    policy0 = copy.deepcopy(trainer.policy)
    # replay the rollout: the first prompts of the seeded stream, each k times, same generator
    g = torch.Generator().manual_seed(c.seed)
    chosen = torch.randperm(len(PROMPTS), generator=g).tolist()[:c.prompts_per_step]
    rows = [i for i in chosen for _ in range(k)]
    ro = sample_rollout(policy0, [trainer.prompts[i] for i in rows], c.max_new_tokens,
                        trainer.stop_id, g, c.temperature)
    log = trainer.step()
    assert torch.equal(reward.calls[0][0].sequences, ro.sequences)  # the replay is the step's rollout

    # by hand: each response scored alone (its prompt, no padding), up to and including the stop
    stop, logps, ref_logps, texts, ended = trainer.stop_id, [], [], [], []
    for b, i in enumerate(rows):
        resp = ro.responses[b].tolist()
        n = resp.index(stop) + 1 if stop in resp else len(resp)
        ended.append(stop in resp)
        texts.append(tok.decode(resp[:n - 1] if ended[-1] else resp[:n]).strip())
        prompt = trainer.prompts[i]
        seq = torch.tensor([list(prompt) + resp[:n]])
        for model, out in ((policy0, logps), (trainer.ref, ref_logps)):
            lp = torch.log_softmax(model(seq).logits[0, len(prompt) - 1:-1] / c.temperature, -1)
            out.append(lp.gather(-1, seq[0, len(prompt):, None])[:, 0])
    n_tokens = sum(len(lp) for lp in logps)
    kl = torch.stack([(lp - rp).sum() for lp, rp in zip(logps, ref_logps, strict=True)]).detach()
    raw = torch.tensor([ro.responses[b, :len(lp)].float().mean() / 64.0
                        for b, lp in enumerate(logps)])
    score = raw if penalty is None else torch.where(torch.tensor(ended), raw,
                                                    torch.tensor(penalty))
    r = score - c.kl_coef * kl
    if estimator == "reinforce":
        adv = r
    elif estimator == "mean":
        adv = r - r.mean()
    else:  # leave-one-out, an explicit loop
        adv = torch.tensor([float(r[b]) - sum(float(r[j]) for j in range(len(rows))
                                              if j // k == b // k and j != b) / (k - 1)
                            for b in range(len(rows))])
    # (a) the logged numbers
    assert log["kl"] == pytest.approx(float(kl.mean()), abs=1e-5)
    assert abs(log["kl"]) > 1e-2  # policy and reference differ: the check has teeth
    assert log["proxy_reward"] == pytest.approx(float(raw.mean()), abs=1e-6)
    assert log["reward"] == pytest.approx(float(r.mean()), abs=1e-5)
    assert log["gold_reward"] == pytest.approx(sum(gold_reward(t) for t in texts) / len(texts))
    assert log["sample"] == texts[0]
    assert log["response_length"] == pytest.approx(n_tokens / len(rows))
    assert log["ended_share"] == pytest.approx(sum(ended) / len(rows))
    close(seen["adv"], adv, tol=1e-5)
    if estimator == "rloo":  # (c) trl's RLOO advantage from the same scores and KL
        close(seen["adv"], _trl_rloo_advantages(score, kl, c.kl_coef, k), tol=1e-5)
    # (b) the gradient: -sum_i A_i sum_t log pi(y_it) / #tokens, then clipping, then AdamW
    hand = copy.deepcopy(policy0).train()
    total = 0.0
    for b, i in enumerate(rows):
        prompt = trainer.prompts[i]
        seq = torch.tensor([list(prompt) + ro.responses[b, :len(logps[b])].tolist()])
        lp = torch.log_softmax(hand(seq).logits[0, len(prompt) - 1:-1] / c.temperature, -1)
        total = total - float(adv[b]) * lp.gather(-1, seq[0, len(prompt):, None]).sum()
    loss = total / n_tokens
    loss.backward()
    assert log["loss"] == pytest.approx(float(loss.detach()), abs=1e-5)
    norm = torch.sqrt(sum((p.grad ** 2).sum() for p in hand.parameters()))
    assert log["grad_norm"] == pytest.approx(float(norm), rel=1e-4)
    scale = min(1.0, grad_clip / (float(norm) + 1e-6)) if grad_clip else 1.0
    if grad_clip:
        assert scale < 1  # the clip acted
    for (name, p), q in zip(hand.named_parameters(), trainer.policy.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad * scale, atol=1e-6, rtol=1e-4, msg=name)
        p.grad.mul_(scale)
    torch.optim.AdamW(hand.parameters(), lr=c.lr, weight_decay=0.0).step()
    # AdamW's first step is lr * g / (|g| + eps): where |g| is at float noise (e.g. the key
    # bias, whose gradient is 0 in exact arithmetic) that ratio is noise too, so skip those
    compared = 0
    for (name, p), q in zip(hand.named_parameters(), trainer.policy.parameters(), strict=True):
        sure = p.grad.abs() > 1e-6
        torch.testing.assert_close(q[sure], p[sure], atol=1e-6, rtol=1e-5, msg=name)
        compared += int(sure.sum())
    assert compared > 0.5 * sum(p.numel() for p in hand.parameters())
    assert max(float((q - p).detach().abs().max()) for q, p in
               zip(trainer.policy.parameters(), policy0.parameters(), strict=True)) > 0.5 * c.lr
    for p in trainer.ref.parameters():  # the reference stays frozen
        assert not p.requires_grad and p.grad is None


def test_resume_reproduces_the_uninterrupted_run(tok, tmp_path):
    straight, _ = check_resume(lambda: make_trainer(tok), tmp_path / "run")
    assert len(straight.history) == 3 and straight.history[2]["kl"] != straight.history[0]["kl"]
    GPT.from_checkpoint(tmp_path / "run")  # the policy is an ordinary GPT folder
    with pytest.raises(ValueError, match="estimator"):
        make_trainer(tok, estimator="mean").resume(tmp_path / "run")


@pytest.mark.parametrize("field,value", [
    ("prompts_per_step", 0), ("samples_per_prompt", 0), ("max_new_tokens", 0), ("lr", 0.0),
    ("temperature", -1.0), ("kl_coef", -0.1), ("grad_clip", -1.0), ("estimator", "ppo")])
def test_bad_config_is_a_clear_error(field, value):
    with pytest.raises(ValueError, match=field):
        ReinforceConfig(**{field: value})


def test_rloo_needs_two_samples_per_prompt():
    with pytest.raises(ValueError, match="samples_per_prompt=1"):
        ReinforceConfig(estimator="rloo", samples_per_prompt=1)
    ReinforceConfig(estimator="reinforce", samples_per_prompt=1)  # plain REINFORCE is fine
    with pytest.raises(ValueError, match="estimator"):
        estimator_advantages(torch.ones(4), "median", 2)
