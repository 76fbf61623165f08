"""DPO and relatives (minillm.alignment.dpo, .pairs): parity with trl, ln 2 at the start, the
gradient's direction, convergence to the analytic optimum, the Trainer plumbing, bad inputs.

trl's losses are read from its trainers' own loss code: `DPOTrainer._compute_loss` (sigmoid,
IPO, hinge; IPO in both forms: trl's per-token one directly, eq. 17 on summed log-ratios by
giving trl sequences whose whole response log-prob sits on one completion token) and `KTOTrainer._compute_loss` run on a stand-in `self` whose "model" returns the per-token
log-probs we give it (so trl sums them itself); `CPOTrainer.cpo_loss` (SimPO; its "sigmoid"
with label smoothing is conservative DPO when fed log-ratios) and `ORPOTrainer.odds_ratio_loss`
are called directly. `CPOTrainer.get_batch_logps` checks `sequence_logps`.
"""

import math
import re
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from minillm.alignment import (
    ChatTemplate,
    PairBatches,
    dpo_loss,
    hinge_loss,
    ipo_loss,
    kto_loss,
    orpo_loss,
    preference_loss_fn,
    simpo_loss,
)
from minillm.alignment.chat import add_special_tokens
from minillm.alignment.dpo import sequence_logps
from minillm.alignment.pairs import pair_batches, reference_logps, sample_stats, tokenize_pair
from minillm.alignment.recipe import load_model_and_tokenizer
from minillm.data.preference import PreferencePair, load_preferences
from minillm.models import GPT, GPTConfig
from minillm.models.base import LMOutput
from minillm.tokenizers import ByteTokenizer
from minillm.training import TrainConfig, Trainer

trl = pytest.importorskip("trl")
accelerate = pytest.importorskip("accelerate")
from trl.experimental.cpo import CPOTrainer  # noqa: E402
from trl.experimental.orpo import ORPOTrainer  # noqa: E402

SFT = Path(__file__).resolve().parents[1] / "data/checkpoints/shakespeare_sft_d128"


@pytest.fixture(scope="module")
def accelerator():
    return accelerate.Accelerator(cpu=True)


def logps_batch(seed, b=6, t=9):
    """Per-token log-probs (2B, T-1) of B pairs, a completion mask (2B, T) with prompts of
    different lengths, and the summed/mean sequence log-probs they imply."""
    g = torch.Generator().manual_seed(seed)
    per_token = -torch.rand(2 * b, t - 1, generator=g, dtype=torch.float64) * 3
    mask = torch.zeros(2 * b, t, dtype=torch.long)
    for i in range(2 * b):
        start = int(torch.randint(1, 4, (1,), generator=g))
        stop = int(torch.randint(start + 1, t + 1, (1,), generator=g))
        mask[i, start:stop] = 1
    per_token = per_token * mask[:, 1:]
    summed = per_token.sum(1)
    n = mask.sum(1)
    ref = summed + torch.randn(2 * b, generator=g, dtype=torch.float64)
    return per_token, mask, summed, n, ref


def trl_self(accelerator, **fields):
    """A stand-in for a trl trainer: the attributes its loss code reads."""
    base = dict(accelerator=accelerator, model=SimpleNamespace(training=True),
                aux_loss_enabled=False, ld_alpha=None, precompute_ref_logps=True,
                f_divergence_type="reverse_kl", loss_weights=[1.0], use_weighting=False,
                label_smoothing=0.0, _metrics={"train": defaultdict(list)},
                _total_train_tokens=0, _tp_size=1, calculate_KL=True,
                desirable_weight=1.0, undesirable_weight=1.0, alpha=0.0, simpo_gamma=0.5)
    return SimpleNamespace(**(base | fields))


def stand_in_model(per_token):
    def model(**kwargs):
        z = torch.zeros_like(per_token)
        return SimpleNamespace(log_probs=per_token, entropy=z, mean_logits=z,
                               is_top1=z.bool())
    return model


def trl_dpo(accelerator, loss_type, beta, per_token, mask, ref):
    from trl import DPOTrainer
    me = trl_self(accelerator, loss_types=[loss_type], beta=beta)
    b = per_token.size(0) // 2
    inputs = {"input_ids": torch.zeros_like(mask), "attention_mask": torch.ones_like(mask),
              "completion_mask": mask, "ref_chosen_logps": ref[:b], "ref_rejected_logps": ref[b:]}
    loss = DPOTrainer._compute_loss(me, stand_in_model(per_token), inputs, False)
    return loss, me._metrics["train"]


# ---- parity with trl -------------------------------------------------------------------
@pytest.mark.parametrize("beta", [0.05, 0.1, 0.5, 2.0])
def test_dpo_matches_trl(accelerator, beta):
    per_token, mask, summed, _, ref = logps_batch(int(beta * 100))
    b = summed.size(0) // 2
    ours = dpo_loss(summed[:b], summed[b:], ref[:b], ref[b:], beta)
    theirs, metrics = trl_dpo(accelerator, "sigmoid", beta, per_token, mask, ref)
    torch.testing.assert_close(ours.loss, theirs, atol=1e-6, rtol=0)
    assert abs(ours.chosen_rewards.mean().item() - metrics["rewards/chosen"][0]) < 1e-6
    assert abs(ours.rejected_rewards.mean().item() - metrics["rewards/rejected"][0]) < 1e-6
    margin = (ours.chosen_rewards - ours.rejected_rewards).mean().item()
    assert abs(margin - metrics["rewards/margins"][0]) < 1e-6
    won = (ours.chosen_rewards > ours.rejected_rewards).double().mean().item()
    assert abs(won - metrics["rewards/accuracies"][0]) < 1e-6


@pytest.mark.parametrize("beta,eps", [(0.1, 0.1), (0.3, 0.25), (1.0, 0.4)])
def test_conservative_dpo_matches_trl(accelerator, beta, eps):
    """trl 1.16's DPO 'sigmoid' ignores label smoothing; its CPO 'sigmoid' loss applies it to
    whatever log-prob difference it is given: given DPO's log-ratios it is conservative DPO."""
    _, _, summed, _, ref = logps_batch(7)
    b = summed.size(0) // 2
    ours = dpo_loss(summed[:b], summed[b:], ref[:b], ref[b:], beta, label_smoothing=eps)
    me = trl_self(accelerator, loss_type="sigmoid", beta=beta, label_smoothing=eps)
    theirs, _, _ = CPOTrainer.cpo_loss(me, summed[:b] - ref[:b], summed[b:] - ref[b:])
    torch.testing.assert_close(ours.losses, theirs, atol=1e-6, rtol=0)
    plain = dpo_loss(summed[:b], summed[b:], ref[:b], ref[b:], beta)
    assert not torch.allclose(ours.losses, plain.losses)   # smoothing does something


@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_ipo_matches_trl(accelerator, beta):
    per_token, mask, summed, n, ref = logps_batch(3)
    b = summed.size(0) // 2
    ours = ipo_loss(summed[:b], summed[b:], ref[:b], ref[b:], beta, n[:b], n[b:])
    theirs, metrics = trl_dpo(accelerator, "ipo", beta, per_token, mask, ref)
    torch.testing.assert_close(ours.loss, theirs, atol=1e-6, rtol=0)
    assert abs(ours.chosen_rewards.mean().item() - metrics["rewards/chosen"][0]) < 1e-6


@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_ipo_eq17_on_summed_log_ratios_matches_trl(accelerator, beta):
    """Eq. 17 as written is trl's formula on responses of one token each: collapse every
    response's summed log-prob onto a single completion token and trl's per-token mean is the
    sum. On the real (multi-token) batch the two forms differ."""
    per_token, mask, summed, n, ref = logps_batch(19)
    b = summed.size(0) // 2
    one_token = torch.zeros_like(per_token)
    one_token[:, 0] = summed
    one_mask = torch.zeros_like(mask)
    one_mask[:, 1] = 1                      # the completion is position 1: per-token index 0
    ours = ipo_loss(summed[:b], summed[b:], ref[:b], ref[b:], beta)
    theirs, metrics = trl_dpo(accelerator, "ipo", beta, one_token, one_mask, ref)
    torch.testing.assert_close(ours.loss, theirs, atol=1e-6, rtol=0)
    assert abs(ours.chosen_rewards.mean().item() - metrics["rewards/chosen"][0]) < 1e-6
    per_token_form = ipo_loss(summed[:b], summed[b:], ref[:b], ref[b:], beta, n[:b], n[b:])
    assert (n > 1).any() and abs(per_token_form.loss.item() - ours.loss.item()) > 1e-2
    with pytest.raises(ValueError, match="both chosen_tokens and rejected_tokens"):
        ipo_loss(summed[:b], summed[b:], ref[:b], ref[b:], beta, n[:b], None)


@pytest.mark.parametrize("beta", [0.05, 0.1, 0.5, 2.0])
def test_hinge_matches_trl(accelerator, beta):
    per_token, mask, summed, _, ref = logps_batch(23 + int(beta * 100))
    b = summed.size(0) // 2
    ours = hinge_loss(summed[:b], summed[b:], ref[:b], ref[b:], beta)
    theirs, metrics = trl_dpo(accelerator, "hinge", beta, per_token, mask, ref)
    torch.testing.assert_close(ours.loss, theirs, atol=1e-6, rtol=0)
    assert abs(ours.chosen_rewards.mean().item() - metrics["rewards/chosen"][0]) < 1e-6
    assert abs(ours.rejected_rewards.mean().item() - metrics["rewards/rejected"][0]) < 1e-6
    # a pair whose margin is past 1/beta costs nothing and pulls nothing
    x = torch.tensor([0.0], requires_grad=True)
    zero = torch.zeros(1)
    past = hinge_loss(x + 1.5 / beta, zero, zero, zero, beta)
    past.loss.backward()
    assert past.loss.item() == 0 and x.grad.item() == 0


@pytest.mark.parametrize("beta,weights,labelling", [
    (0.1, (1.0, 1.0), "mixed"), (0.5, (1.0, 1.33), "mixed"),
    (0.3, (1.0, 1.33), "undesirable"), (0.3, (0.8, 1.0), "desirable")])
def test_kto_matches_trl(accelerator, beta, weights, labelling):
    """Both of KTO's branches: a mixed batch, and batches of only undesirable (the rejected
    examples' loss w_u (1 - sigmoid(beta (z - r)))) or only desirable examples."""
    from trl import KTOTrainer
    per_token, mask, summed, _, ref = logps_batch(11)
    g = torch.Generator().manual_seed(5)
    labels = {"mixed": torch.rand(summed.size(0), generator=g) < 0.5,
              "undesirable": torch.zeros(summed.size(0), dtype=torch.bool),
              "desirable": torch.ones(summed.size(0), dtype=torch.bool)}[labelling]
    kl_per_token = per_token.roll(1, 0)
    kl_summed, kl_ref = kl_per_token.sum(1), kl_per_token.sum(1) - 0.3  # estimate z = 0.3
    calls = iter([kl_per_token, per_token])  # trl asks for the KL rows first

    def model(**kwargs):
        lp = next(calls)
        z = torch.zeros_like(lp)
        return SimpleNamespace(log_probs=lp, entropy=z, mean_logits=z, is_top1=z.bool())

    me = trl_self(accelerator, loss_type="kto", beta=beta, desirable_weight=weights[0],
                  undesirable_weight=weights[1])
    me._compute_kl_logps = lambda model, batch: KTOTrainer._compute_kl_logps(me, model, batch)
    inputs = {"input_ids": torch.zeros_like(mask), "attention_mask": torch.ones_like(mask),
              "completion_mask": mask, "label": labels, "ref_logps": ref,
              "ref_KL_logps": kl_ref, "KL_input_ids": torch.zeros_like(mask),
              "KL_attention_mask": torch.ones_like(mask), "KL_completion_mask": mask}
    theirs = KTOTrainer._compute_loss(me, model, inputs, False)
    ours = kto_loss(summed, ref, labels, kl_summed, kl_ref, beta, *weights)
    torch.testing.assert_close(ours.loss, theirs, atol=1e-6, rtol=0)
    m = me._metrics["train"]
    assert abs(m["kl"][0] - 0.3) < 1e-6
    if labels.any():
        assert abs(ours.chosen_rewards.mean().item() - m["rewards/chosen"][0]) < 1e-6
    if not labels.all():
        assert abs(ours.rejected_rewards.mean().item() - m["rewards/rejected"][0]) < 1e-6
    if labelling == "undesirable":   # the undesirable branch, written out
        r = (summed - ref).float()
        by_hand = weights[1] * (1 - torch.sigmoid(beta * (0.3 - r)))
        torch.testing.assert_close(ours.losses.float(), by_hand, atol=1e-6, rtol=0)


@pytest.mark.parametrize("beta,gamma,eps", [(2.0, 0.5, 0.0), (2.5, 1.0, 0.0), (1.0, 0.3, 0.2)])
def test_simpo_matches_trl(accelerator, beta, gamma, eps):
    _, _, summed, n, _ = logps_batch(13)
    mean = summed / n
    b = mean.size(0) // 2
    ours = simpo_loss(mean[:b], mean[b:], beta, gamma, eps)
    me = trl_self(accelerator, loss_type="simpo", beta=beta, simpo_gamma=gamma,
                  label_smoothing=eps)
    theirs, chosen, rejected = CPOTrainer.cpo_loss(me, mean[:b], mean[b:])
    torch.testing.assert_close(ours.losses, theirs, atol=1e-6, rtol=0)
    torch.testing.assert_close(ours.chosen_rewards, chosen, atol=1e-6, rtol=0)
    torch.testing.assert_close(ours.rejected_rewards, rejected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("beta", [0.1, 0.25, 1.0])
def test_orpo_matches_trl(accelerator, beta):
    _, _, summed, n, _ = logps_batch(17)
    mean = (summed / n).float()
    mean[0] = -0.01   # both branches of log(1 - exp(x)) (the switch is at -ln 2)
    b = mean.size(0) // 2
    nll = -mean[:b].mean()
    ours = orpo_loss(mean[:b], mean[b:], nll, beta)
    me = trl_self(accelerator, beta=beta)
    losses, chosen, rejected, _, _ = ORPOTrainer.odds_ratio_loss(me, mean[:b], mean[b:])
    torch.testing.assert_close(ours.loss, nll - losses.mean(), atol=1e-6, rtol=0)
    torch.testing.assert_close(ours.chosen_rewards, chosen, atol=1e-6, rtol=0)
    torch.testing.assert_close(ours.rejected_rewards, rejected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_sequence_logps_matches_trl(reduction):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 7, 11, generator=g)
    tokens = torch.randint(0, 11, (3, 7), generator=g)
    trl_labels = tokens.clone()                     # trl: unshifted labels, -100 on the prompt
    trl_labels[0, :3], trl_labels[1, :2], trl_labels[2, :5] = -100, -100, -100
    ours_labels = torch.cat([trl_labels[:, 1:], torch.full((3, 1), -100)], 1)  # ours: shifted
    theirs = CPOTrainer.get_batch_logps(logits, trl_labels, average_log_prob=reduction == "mean")
    ours, n = sequence_logps(logits, ours_labels, reduction)
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)
    assert n.tolist() == [4, 5, 2]


# ---- the real SFT checkpoint: ln 2 at the start ----------------------------------------
@pytest.fixture(scope="module")
def sft():
    torch.manual_seed(0)
    return load_model_and_tokenizer(SFT)


def test_first_step_loss_is_ln2_on_the_sft_checkpoint(sft):
    model, tok = sft
    pairs = load_preferences("train")[:8]
    batches = pair_batches(tok, pairs, None, 8, model.config.context_length, reference=model)
    batch = batches.next_batch()
    with torch.no_grad():
        for method in ("dpo", "ipo"):
            loss, metrics = preference_loss_fn(method, beta=0.1)(model, batch)
            expected = math.log(2) if method == "dpo" else (1 / (2 * 0.1)) ** 2
            assert abs(loss.item() - expected) < 1e-6, method
            assert metrics["reward_margin"] == pytest.approx(0.0, abs=1e-5)
        # the loss function sums the response log-probs (not a per-token mean): equal to
        # dpo_loss on independently computed sums under a perturbed "policy"
        logits = model(batch["input_ids"]).logits
        summed = sequence_logps(logits * 1.1, batch["labels"])[0]
        mean = sequence_logps(logits * 1.1, batch["labels"], "mean")[0]

        def policy(ids, attention_mask=None):
            return LMOutput(model(ids, attention_mask=attention_mask).logits * 1.1)
        loss, _ = preference_loss_fn("dpo", beta=0.1)(policy, batch)
        ref = batch["ref_logps"]
        expected = dpo_loss(summed[:8], summed[8:], ref[:8], ref[8:], 0.1).loss
        assert abs(loss.item() - expected.item()) < 1e-6
        per_token = dpo_loss(mean[:8], mean[8:], ref[:8], ref[8:], 0.1).loss
        assert abs(loss.item() - per_token.item()) > 1e-3


# ---- the gradient's direction, by hand -------------------------------------------------
def test_dpo_gradient_direction_by_hand():
    """Three responses, logits theta; chosen y_w = 0, rejected y_l = 1. The DPO gradient is
    -beta * sigmoid(r_l - r_w) * (grad log pi(y_w) - grad log pi(y_l)), with
    grad_theta log pi(y) = onehot(y) - pi: a descent step raises theta_w and lowers theta_l."""
    beta = 0.5
    theta = torch.tensor([0.2, 0.9, -0.4], requires_grad=True)
    ref = torch.log_softmax(torch.tensor([0.0, 0.3, 0.1]), 0)
    logp = torch.log_softmax(theta, 0)
    out = dpo_loss(logp[:1], logp[1:2], ref[:1], ref[1:2], beta)
    out.loss.backward()
    pi = torch.softmax(theta.detach(), 0)
    r_w, r_l = out.chosen_rewards.item(), out.rejected_rewards.item()
    weight = 1 / (1 + math.exp(-(r_l - r_w)))
    expected = -beta * weight * ((torch.eye(3)[0] - pi) - (torch.eye(3)[1] - pi))
    torch.testing.assert_close(theta.grad, expected, atol=1e-7, rtol=0)
    assert theta.grad[0] < 0 < theta.grad[1] and theta.grad[2] == 0
    # here the implicit rewards order the pair wrongly (r_w < r_l): weight > 1/2; the same
    # responses with the labels swapped are ordered rightly and pull less hard
    assert r_w < r_l and weight > 0.5
    theta2 = theta.detach().clone().requires_grad_(True)
    logp2 = torch.log_softmax(theta2, 0)
    dpo_loss(logp2[1:2], logp2[:1], ref[1:2], ref[:1], beta).loss.backward()
    assert theta2.grad.norm() < theta.grad.norm()
    torch.testing.assert_close(theta2.grad.norm() / theta.grad.norm(),
                               torch.tensor((1 - weight) / weight), atol=1e-6, rtol=0)


# ---- convergence to the analytic optimum ------------------------------------------------
def test_categorical_policy_converges_to_the_rlhf_optimum():
    """With Bradley-Terry preferences from a reward r on every pair of K responses, the
    expected DPO loss is minimised by pi* = pi_ref exp(r / beta) / Z."""
    k, beta = 6, 0.5
    g = torch.Generator().manual_seed(0)
    r = torch.randn(k, generator=g, dtype=torch.float64)
    ref = torch.log_softmax(torch.randn(k, generator=g, dtype=torch.float64), 0)
    a, b = torch.triu_indices(k, k, 1)
    p_ab = torch.sigmoid(r[a] - r[b])                 # P(a preferred to b)
    theta = ref.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([theta], lr=1, max_iter=200, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-12, tolerance_change=1e-14)

    def closure():
        opt.zero_grad()
        logp = torch.log_softmax(theta, 0)
        fwd = dpo_loss(logp[a], logp[b], ref[a], ref[b], beta).losses
        bwd = dpo_loss(logp[b], logp[a], ref[b], ref[a], beta).losses
        loss = (p_ab * fwd + (1 - p_ab) * bwd).mean()
        loss.backward()
        return loss
    for _ in range(3):
        opt.step(closure)
    pi = torch.softmax(theta.detach(), 0)
    pi_star = torch.softmax(ref + r / beta, 0)
    assert (pi - pi_star).abs().max() < 1e-6
    assert (torch.softmax(ref, 0) - pi_star).abs().max() > 0.05   # it had somewhere to go


# ---- bad inputs ------------------------------------------------------------------------
@pytest.mark.parametrize("fn", [
    lambda x: dpo_loss(x, x, x, x, beta=0.0),
    lambda x: dpo_loss(x, x, x, x, beta=-1.0),
    lambda x: ipo_loss(x, x, x, x, beta=0.0),
    lambda x: hinge_loss(x, x, x, x, beta=0.0),
    lambda x: kto_loss(x, x, x > 0, x, x, beta=-0.1),
    lambda x: simpo_loss(x, x, beta=0.0),
    lambda x: orpo_loss(x, x, x.sum(), beta=0.0),
    lambda x: preference_loss_fn("dpo", beta=0.0),
])
def test_nonpositive_beta_raises(fn):
    with pytest.raises(ValueError, match="beta"):
        fn(torch.full((2,), -1.0))


def test_other_bad_inputs_raise():
    x = torch.full((2,), -1.0)
    with pytest.raises(ValueError, match="label_smoothing"):
        dpo_loss(x, x, x, x, 0.1, label_smoothing=0.5)
    with pytest.raises(ValueError, match="gamma"):
        simpo_loss(x, x, 2.0, gamma=-1.0)
    with pytest.raises(ValueError, match="shape"):
        dpo_loss(x, x[:1], x, x, 0.1)
    with pytest.raises(ValueError, match="reduction"):
        sequence_logps(torch.zeros(1, 2, 3), torch.zeros(1, 2, dtype=torch.long), "max")
    with pytest.raises(ValueError, match="method"):
        preference_loss_fn("ppo")
    with pytest.raises(ValueError, match="mean log-probs < 0"):
        orpo_loss(torch.zeros(2), x, x.sum(), 0.1)


def test_identical_pair_and_too_long_response_raise():
    tok = add_special_tokens(ByteTokenizer())
    t = ChatTemplate()
    with pytest.raises(ValueError, match="identical chosen and rejected"):
        tokenize_pair(tok, t, "Continue this speech: Hark!", "A horse!", " A horse! ", 256)
    with pytest.raises(ValueError, match="context_length"):
        tokenize_pair(tok, t, "Continue:", "x" * 300, "y", 256)
    # and the loss itself, for the record: identical responses give ln 2 and zero gradient
    theta = torch.tensor([-2.0], requires_grad=True)
    out = dpo_loss(theta, theta, torch.tensor([-1.0]), torch.tensor([-1.0]), 0.1)
    out.loss.backward()
    assert abs(out.loss.item() - math.log(2)) < 1e-7 and theta.grad.item() == 0


def test_methods_needing_a_reference_say_so():
    tok = add_special_tokens(ByteTokenizer())
    pairs = [PreferencePair("Say:", "yes", "no", 1.0, 0.0, 0.5, "p", "train")]
    batch = pair_batches(tok, pairs, None, 1, 64).next_batch()
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, context_length=64, d_model=16, n_layer=1,
                          n_head=2))
    with pytest.raises(ValueError, match="reference"):
        preference_loss_fn("dpo")(model, batch)
    loss, _ = preference_loss_fn("simpo")(model, batch)   # reference-free: fine
    assert torch.isfinite(loss)
    with pytest.raises(ValueError, match="mismatched=True"):
        preference_loss_fn("kto")(model, batch)
    # batches built with KTO's mismatched rows serve the paired losses unchanged
    reference = GPT(GPTConfig(**vars(model.config)))
    plain = pair_batches(tok, pairs * 2, None, 2, 64, reference=reference).next_batch()
    extra = pair_batches(tok, pairs * 2, None, 2, 64, reference=reference,
                         mismatched=True).next_batch()
    assert extra["input_ids"].size(0) == 6 and int(extra["sequences_per_pair"]) == 3
    with torch.no_grad():
        a, _ = preference_loss_fn("dpo")(model, plain)
        b, _ = preference_loss_fn("dpo")(model, extra)
    torch.testing.assert_close(a, b)


# ---- the Trainer plumbing --------------------------------------------------------------
def tiny_pairs(n=24):
    words = ["love", "joy", "sweet", "death", "woe", "blood"]
    return [PreferencePair(f"Continue this speech: line {i}", f"{words[i % 3]} and light",
                           f"{words[3 + i % 3]} and night", 1.0, -1.0, 0.9, "p", "train")
            for i in range(n)]


@pytest.mark.parametrize("method", ["dpo", "ipo", "ipo_sum", "hinge", "kto", "simpo", "orpo"])
def test_training_through_the_trainer_raises_reward_accuracy(method):
    tok = add_special_tokens(ByteTokenizer())
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, context_length=64, d_model=32, n_layer=1,
                          n_head=2))
    reference = GPT(GPTConfig(**vars(model.config)))
    reference.load_state_dict(model.state_dict())
    pairs = tiny_pairs()
    batches = pair_batches(tok, pairs, pairs[:8], 8, 64, reference=reference,
                           mismatched=method == "kto")
    cfg = TrainConfig(max_steps=30, lr=3e-3, min_lr=3e-4, warmup_steps=0, eval_interval=30,
                      eval_batches=1, log_interval=10, device="cpu", progress=False)
    trainer = Trainer(model, config=cfg, batches=batches,
                      loss_fn=preference_loss_fn(method, beta=0.1 if method != "simpo" else 2.0))
    history = trainer.fit()
    assert history[-1]["reward_accuracy"] == 1.0
    assert history[-1]["reward_margin"] > history[0]["reward_margin"]
    # (the hinge can reach exactly 0: every pair past its margin 1/beta)
    assert history[-1]["loss"] < history[0]["loss"] or history[-1]["loss"] == 0.0
    # the reference log-probs were cached once and are the reference model's
    ref = reference_logps(reference, [batches.train[0][0], batches.train[0][1]])
    torch.testing.assert_close(batches.ref_train[0, :2], ref)


def test_pair_batches_layout_and_resume():
    tok = add_special_tokens(ByteTokenizer())
    a = pair_batches(tok, tiny_pairs(), None, 4, 64, seed=3)
    first = a.next_batch()
    assert first["input_ids"].shape[0] == 8
    chosen = tok.decode([t for t in first["labels"][0].tolist() if t >= 0])
    rejected = tok.decode([t for t in first["labels"][4].tolist() if t >= 0])
    assert "light" in chosen and "night" in rejected
    state = a.state_dict()
    b = PairBatches(a.train, None, 4, seed=99)
    b.load_state_dict(state)
    torch.testing.assert_close(a.next_batch()["input_ids"], b.next_batch()["input_ids"])
    with pytest.raises(ValueError, match="ref_train"):
        PairBatches(a.train, None, 4, ref_train=torch.zeros(3, 2))


def test_sample_stats_kl_is_zero_for_the_reference_itself():
    tok = add_special_tokens(ByteTokenizer())
    torch.manual_seed(1)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, context_length=96, d_model=16, n_layer=1,
                          n_head=2))
    stats = sample_stats(model, model, tok, ["Continue: a", "Continue: bb"], max_new_tokens=8)
    assert stats["kl"] == 0.0 and len(stats["responses"]) == 2
    assert 1 <= stats["length"] <= 8


def test_run_specs_parse_and_bad_ones_say_how():
    from minillm.alignment.dpo_run import parse_run
    assert parse_run("simpo:2.5") == ("simpo", 2.5)
    with pytest.raises(ValueError, match="METHOD:BETA"):
        parse_run("dpo")


@pytest.mark.parametrize("kwargs,message", [
    ({"runs": ["dpo"]}, "write METHOD:BETA"),
    ({"runs": ["sft:0.1"]}, "runs: 'sft:0.1': method='sft'; choose one of"),
    ({"runs": []}, "runs=[]: give at least one METHOD:BETA"),
    ({"eval_steps": 0}, "eval_steps=0 must be positive"),
    ({"lr": float("nan")}, "lr=nan must be a finite number"),
    ({"run_name": "a/b"}, "run_name='a/b' must be a file name"),
])
def test_dpo_config_errors_name_the_field_the_value_and_the_fix(kwargs, message):
    from minillm.alignment import DPOConfig
    with pytest.raises(ValueError, match=re.escape(message)):
        DPOConfig(output_dir="out", **kwargs)


def test_measure_reports_standard_errors():
    from minillm.alignment.dpo_run import measure
    tok = add_special_tokens(ByteTokenizer())
    torch.manual_seed(2)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, context_length=96, d_model=16, n_layer=1,
                          n_head=2))
    out = measure(model, model, tok, ["Continue: love", "Continue: woe", "Continue: x"], 2)
    golds = [g for s in (0, 1) for g in sample_stats(model, model, tok, ["Continue: love",
             "Continue: woe", "Continue: x"], seed=1000 + s)["gold_rewards"]]
    expected = torch.tensor(golds, dtype=torch.float64)
    assert abs(out["gold_reward"] - expected.mean().item()) < 1e-12
    assert abs(out["gold_reward_se"] - (expected.std() / 6 ** 0.5).item()) < 1e-12
    assert out["kl"] == 0.0 and out["kl_se"] == 0.0
