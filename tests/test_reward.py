"""Reward model (minillm.alignment.reward): Bradley-Terry loss by hand and against trl's reward
trainer, last-real-token pooling, accuracy / gold agreement / calibration by hand, training
through the Trainer, save and load."""

import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch
from rl_checks import close, tiny_gpt

from minillm.alignment.chat import add_special_tokens
from minillm.alignment.reward import (
    PreferenceBatches,
    RewardModel,
    bradley_terry_loss,
    calibration_bins,
    encode_pairs,
    evaluate_reward_model,
    gold_agreement,
    pair_accuracy,
    reward_loss_fn,
)
from minillm.data.preference import PreferencePair, gold_reward
from minillm.tokenizers import ByteTokenizer
from minillm.training import TrainConfig, Trainer, latest_checkpoint

reward_trainer = pytest.importorskip("trl.trainer.reward_trainer")


def log_sigmoid(x):
    return -math.log1p(math.exp(-x))


def test_bradley_terry_loss_by_hand():
    chosen, rejected = torch.tensor([2.0, 0.0]), torch.tensor([1.0, 1.0])
    close(bradley_terry_loss(chosen, rejected), -(log_sigmoid(1.0) + log_sigmoid(-1.0)) / 2)
    close(bradley_terry_loss(chosen, rejected, margin=0.5),
          -(log_sigmoid(0.5) + log_sigmoid(-1.5)) / 2)
    close(bradley_terry_loss(chosen, rejected, margin=torch.tensor([1.0, -1.0])),
          -(log_sigmoid(0.0) + log_sigmoid(0.0)) / 2)


def _trl_reward_loss(rewards: torch.Tensor, margin=None) -> torch.Tensor:
    """trl's RewardTrainer.compute_loss on (chosen; rejected) rewards, with the trainer's state
    stubbed (its model returns the given rewards as logits)."""
    stub = SimpleNamespace(
        model=SimpleNamespace(training=False), args=SimpleNamespace(center_rewards_coefficient=None),
        accelerator=SimpleNamespace(gather=lambda t: t, gather_for_metrics=lambda t: t),
        _metrics=defaultdict(lambda: defaultdict(list)), _total_train_tokens=0, _tp_size=1)
    inputs = {"input_ids": torch.zeros(rewards.numel(), 1, dtype=torch.long),
              "attention_mask": torch.ones(rewards.numel(), 1, dtype=torch.long)}
    if margin is not None:
        inputs["margin"] = margin

    def model(**kw):
        return SimpleNamespace(logits=rewards[:, None])
    return reward_trainer.RewardTrainer.compute_loss(stub, model, inputs)


def test_bradley_terry_loss_equals_trl():
    torch.manual_seed(0)
    chosen, rejected = torch.randn(8) * 2, torch.randn(8) * 2
    close(bradley_terry_loss(chosen, rejected), _trl_reward_loss(torch.cat([chosen, rejected])))
    margin = torch.rand(8)
    close(bradley_terry_loss(chosen, rejected, margin),
          _trl_reward_loss(torch.cat([chosen, rejected]), margin))


def test_accuracy_and_gold_agreement_by_hand():
    rc, rr = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0.0, 3.0, 1.0])
    gc, gr = torch.tensor([0.5, 0.1, -1.0]), torch.tensor([0.0, 0.2, 0.0])
    assert pair_accuracy(rc, rr) == pytest.approx(2 / 3)
    # model orders (+, -, +), gold orders (+, -, -): 2 of 3 agree
    assert gold_agreement(rc, rr, gc, gr) == pytest.approx(2 / 3)
    # gold ties are left out
    assert gold_agreement(rc, rr, torch.tensor([0.5, 0.2, -1.0]), gr) == pytest.approx(1 / 2)
    with pytest.raises(ValueError, match="tied"):
        gold_agreement(rc, rr, gr, gr)


def test_calibration_bins_by_hand():
    probs = torch.tensor([0.05, 0.15, 0.12, 0.95])
    outcomes = torch.tensor([0, 1, 0, 1])
    bins, ece = calibration_bins(probs, outcomes, n_bins=10)
    assert [b["count"] for b in bins] == [1, 2, 1]
    close([b["predicted"] for b in bins], [0.05, 0.135, 0.95])
    close([b["observed"] for b in bins], [0.0, 0.5, 1.0])
    close(ece, 0.25 * 0.05 + 0.5 * 0.365 + 0.25 * 0.05)
    with pytest.raises(ValueError, match="n_bins=0"):
        calibration_bins(probs, outcomes, 0)


# ---- the model -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tok():
    return add_special_tokens(ByteTokenizer())


def test_reward_is_read_at_the_last_real_token(tok):
    rm = RewardModel.from_sft(tiny_gpt(tok.vocab_size)).eval()
    a, b = tok.encode("short one"), tok.encode("a longer sequence here")
    alone = [rm(torch.tensor([x])).item() for x in (a, b)]
    t = len(b)
    right = torch.full((2, t), 7)
    right[0, :len(a)], right[1] = torch.tensor(a), torch.tensor(b)
    mask_r = (torch.arange(t) < torch.tensor([[len(a)], [t]])).long()
    close(rm(right, mask_r), alone, tol=1e-5)
    right[0, len(a):] = 99  # other padding ids change nothing
    close(rm(right, mask_r), alone, tol=1e-5)
    left = torch.full((2, t), 7)
    left[0, t - len(a):], left[1] = torch.tensor(a), torch.tensor(b)
    close(rm(left, mask_r.flip(-1)), alone, tol=1e-5)
    # the trunk is the SFT model's, unchanged
    gpt = tiny_gpt(tok.vocab_size)
    for k, v in gpt.state_dict().items():
        assert torch.equal(rm.backbone.state_dict()[k], v)


def pairs(n, seed=0):
    """Pairs whose chosen side is cheerful and rejected side grim (by the gold lexicon)."""
    g = torch.Generator().manual_seed(seed)
    good, bad, filler = ["love", "joy", "sweet"], ["death", "woe", "blood"], ["the", "and", "my"]
    out = []
    for _ in range(n):
        def words(pool):
            return " ".join(pool[int(i)] if k % 2 else filler[int(i)]
                            for k, i in enumerate(torch.randint(0, 3, (4,), generator=g)))
        c, r = words(good), words(bad)
        out.append(PreferencePair("Say it:", c, r, gold_reward(c), gold_reward(r), 0.9, "x", "train"))
    return out


def test_training_through_the_trainer_learns_and_checkpoints(tok, tmp_path):
    rm = RewardModel.from_sft(tiny_gpt(tok.vocab_size))
    train, test = pairs(64, seed=0), pairs(32, seed=1)
    before = evaluate_reward_model(rm, tok, test)
    batches = PreferenceBatches(encode_pairs(tok, train, 64), encode_pairs(tok, test, 64), 8)
    cfg = TrainConfig(max_steps=30, batch_size=8, lr=3e-3, min_lr=3e-4, warmup_steps=3,
                      weight_decay=0.0, eval_interval=30, eval_batches=2, log_interval=10,
                      device="cpu", progress=False, out_dir=str(tmp_path / "rm"))
    trainer = Trainer(rm, config=cfg, batches=batches, loss_fn=reward_loss_fn)
    history = trainer.fit()
    after = evaluate_reward_model(rm, tok, test)
    assert before["accuracy"] < 0.9
    assert after["accuracy"] == 1.0 and after["gold_agreement"] == 1.0
    assert after["loss"] < before["loss"]
    assert {"rm_loss", "accuracy", "margin"} <= set(history[-1])
    assert trainer.eval_history[-1]["val_loss"] == pytest.approx(
        float(bradley_terry_loss(*_scores(rm, tok, test[:16]))), rel=1e-4)  # 2 batches of 8
    # the Trainer's checkpoint loads back as a reward model with the same rewards
    again = RewardModel.from_checkpoint(latest_checkpoint(tmp_path / "rm"))
    close(torch.cat(_scores(again, tok, test)), torch.cat(_scores(rm, tok, test)), tol=1e-6)
    rm.save(tmp_path / "plain")
    close(torch.cat(_scores(RewardModel.from_checkpoint(tmp_path / "plain"), tok, test)),
          torch.cat(_scores(rm, tok, test)), tol=1e-6)


def _scores(rm, tok, ps):
    from minillm.alignment.reward import score_pairs
    return score_pairs(rm, encode_pairs(tok, ps, 64))


def test_preference_batches_resume_and_errors(tok):
    enc = encode_pairs(tok, pairs(10), 64)
    a = PreferenceBatches(enc, enc[:3], batch_size=4, seed=3)
    a.next_batch()
    state = a.state_dict()
    b = PreferenceBatches(enc, enc[:3], batch_size=4, seed=99)
    b.load_state_dict(state)
    for _ in range(3):
        x, y = a.next_batch(), b.next_batch()
        assert torch.equal(x["input_ids"], y["input_ids"])
    batch = a.next_batch("val")
    assert batch["input_ids"].size(0) == 8  # 4 chosen rows then 4 rejected rows
    with pytest.raises(ValueError, match="batch_size=0"):
        PreferenceBatches(enc, None, 0)
    with pytest.raises(ValueError, match="context_length=8"):
        encode_pairs(tok, pairs(1), 8)
