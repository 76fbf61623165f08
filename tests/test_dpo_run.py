"""The chapter 13 runner (`minillm.alignment.dpo_run`): what its curves and measures record."""

import pytest
import torch

from minillm.alignment.chat import add_special_tokens
from minillm.alignment.dpo_run import DPOConfig, heldout_pair_metrics, measure, run_one
from minillm.alignment.pairs import pair_batches, preference_loss_fn, sample_stats
from minillm.alignment.reward import FluentGold
from minillm.data.preference import PreferencePair
from minillm.models import GPT, GPTConfig
from minillm.tokenizers import ByteTokenizer

PROMPTS = ["Continue: love", "Continue: woe", "Continue: x"]


def tiny_pairs(n, split):
    words = ["love", "joy", "sweet", "death", "woe", "blood"]
    return [PreferencePair(f"Continue this speech: line {i}", f"{words[i % 3]} and light",
                           f"{words[3 + i % 3]} and night", 1.0, -1.0, 0.9, "p", split)
            for i in range(n)]


def tiny_gpt(tok, seed):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=tok.vocab_size, context_length=96, d_model=16, n_layer=1,
                         n_head=2))


@pytest.fixture(scope="module")
def setup():
    tok = add_special_tokens(ByteTokenizer())
    sft = tiny_gpt(tok, 0).eval().requires_grad_(False)
    fluent = FluentGold(tiny_gpt(tok, 1).eval(), tok, fluency_weight=0.7)
    return tok, sft, fluent


def train(setup, method, max_steps):
    tok, sft, fluent = setup
    batches = pair_batches(tok, tiny_pairs(16, "train"), tiny_pairs(10, "test"), 4, 96,
                           reference=sft, mismatched=method == "kto", seed=0)
    config = DPOConfig(output_dir="unused", runs=[f"{method}:0.1"], max_steps=max_steps,
                       batch_size=4, lr=3e-3, warmup_steps=0, eval_steps=2, eval_prompts=3,
                       final_samples=1, log_interval=1)
    return run_one(method, 0.1, sft, tok, batches, PROMPTS, config, "to be or not",
                   batches.state_dict(), fluent), batches


@pytest.mark.parametrize("method", ["dpo", "kto"])
def test_curve_entries_carry_the_heldout_pair_metrics_of_their_step(setup, method):
    four, batches = train(setup, method, 4)
    two, _ = train(setup, method, 2)
    assert [e["step"] for e in four["curve"]] == [2, 4]
    keys = {"loss", "reward_accuracy", "reward_margin"}
    for entry in four["curve"]:
        assert keys <= set(entry["heldout_pairs"])
    # step 2 of the long run is the short run's end; step 4 is the long run's end
    assert four["curve"][0]["heldout_pairs"] == two["heldout_pairs"]
    assert four["curve"][1]["heldout_pairs"] == four["heldout_pairs"]
    # and the end's numbers are what a direct call on a policy in that state gives
    tok, sft, _ = setup
    assert four["heldout_pairs"]["loss"] != two["heldout_pairs"]["loss"]   # training moved it
    direct = heldout_pair_metrics(sft, batches, preference_loss_fn(method, 0.1))
    assert abs(direct["reward_margin"]) < 1e-6       # the reference itself: no margin
    assert abs(direct["loss"] - torch.log(torch.tensor(2.0)).item()) < 1e-5 or method == "kto"
    # each curve entry also has the fluency-aware gold of its samples
    assert all("fluent_gold" in e and "fluent_gold_se" in e for e in four["curve"])
    assert "fluent_gold" in four["final"]


def test_measure_fluent_gold_is_fluentgold_score_of_the_same_samples(setup):
    tok, sft, fluent = setup
    policy = tiny_gpt(tok, 3)
    plain = measure(policy, sft, tok, PROMPTS, 2)
    out = measure(policy, sft, tok, PROMPTS, 2, fluent=fluent)
    assert "fluent_gold" not in plain                # the old keys, and only those, without it
    for key in plain:
        assert out[key] == plain[key]
    texts = [t for s in (0, 1) for t in sample_stats(policy, sft, tok, PROMPTS,
                                                      seed=1000 + s)["responses"]]
    scores = fluent.score(texts)
    assert abs(out["fluent_gold"] - scores.mean().item()) < 1e-12
    assert abs(out["fluent_gold_se"] - (scores.std() / len(texts) ** 0.5).item()) < 1e-12
    lexicon, fluency = fluent.parts(texts)
    assert abs(out["fluency"] - fluency.mean().item()) < 1e-12
    # the fluency term is there: the same samples scored with lambda = 0 give the lexicon gold
    zero = measure(policy, sft, tok, PROMPTS, 2, fluent=FluentGold(fluent.base, tok, 0.0))
    assert abs(zero["fluent_gold"] - out["gold_reward"]) < 1e-12


def test_fluent_weight_must_not_be_negative():
    with pytest.raises(ValueError, match="fluent_weight=-1.0 must be >= 0"):
        DPOConfig(output_dir="out", fluent_weight=-1.0)
