"""Where RLHF's time goes on the course model: decoding, rollouts, a PPO step, a GRPO step.

    .venv/bin/python benchmarks/rlhf.py [--threads 1] [--new-tokens 48] [--steps 4]

On the SFT checkpoint (data/checkpoints/shakespeare_sft_d128) and the shipped reward model
(data/rlhf/reward_model), with chapter 12's configuration:

1. Decoding, as `benchmarks/generate.py` measures it: one prompt, greedy, KV cache.
2. Rollouts: `sample_rollout` on batches of 1, 16 and 64 chat prompts (left-padded, KV cache,
   temperature 1), beside transformers' `GPT2LMHeadModel.generate` on the same weights and the
   same left-padded batch (sampling, stopping at the same end token). Greedy decoding of the
   padded batch is checked equal between the two first, so the two loops do the same work.
   Tokens/s count batch x decoding steps run (rows that ended early still cost a step).
3. A PPO step (batch 16, 2 epochs of mini-batches of 8) split into the rollout, the scoring
   forwards (policy + value head, reference, reward model) and the updates.
4. A GRPO step (8 prompts x G = 8) split into the rollout and the rest.

Prints tables and ratios; not a test.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

# benchmarks/ holds scripts named like packages (tokenizers.py): keep it off the import path
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

from minillm.alignment.chat import ChatTemplate  # noqa: E402
from minillm.alignment.grpo import GRPOConfig, GRPOTrainer  # noqa: E402
from minillm.alignment.ppo_trainer import (  # noqa: E402
    PPOConfig,
    PPOTrainer,
    reward_model_scorer,
)
from minillm.alignment.recipe import load_model_and_tokenizer  # noqa: E402
from minillm.alignment.reward import RewardModel  # noqa: E402
from minillm.alignment.rollout import response_forward, sample_rollout  # noqa: E402
from minillm.data import data_dir  # noqa: E402
from minillm.data.preference import load_preferences  # noqa: E402
from minillm.data.sft import load_sft  # noqa: E402
from minillm.generation import generate, left_pad  # noqa: E402


def best_of(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def to_hf(model):
    import transformers

    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        **model.hf_gpt2_config(), bos_token_id=None, eos_token_id=None)).eval()
    hf.load_state_dict(model.to_hf_gpt2_state_dict(), strict=False)
    return hf


def rollouts(policy, prompts, stop_id, args) -> float:
    """Tokens/s of decoding and of rollouts; returns the batch-16 rollout tokens/s."""
    hf = to_hf(policy)
    n = args.new_tokens
    one = torch.tensor([prompts[0]])
    t_dec, _ = best_of(lambda: generate(policy, one, n, do_sample=False), args.repeats)
    decode_tps = n / t_dec

    ids, mask = left_pad(prompts[:16], pad_token_id=stop_id)
    ours = generate(policy, ids, n, do_sample=False, attention_mask=mask, pad_token_id=stop_id)
    with torch.no_grad():
        theirs = hf.generate(ids, attention_mask=mask, max_new_tokens=n, do_sample=False,
                             pad_token_id=stop_id)
    assert torch.equal(ours, theirs), "greedy decoding of the padded batch differs from HF's"

    print(f"\ndecoding and rollouts: {n} new tokens, {torch.get_num_threads()} thread(s); "
          "greedy padded batch of 16 identical to transformers'")
    print(f"{'loop':<22}{'minillm tok/s':>15}{'HF tok/s':>11}{'minillm/HF':>12}"
          f"{'vs decode':>11}")
    print(f"{'decode, 1 prompt':<22}{decode_tps:>15.0f}")
    at16 = 0.0
    for b in (1, 16, 64):
        batch = [prompts[i % len(prompts)] for i in range(b)]
        ids, mask = left_pad(batch, pad_token_id=stop_id)

        def ours(batch=batch):
            return sample_rollout(policy, batch, n, stop_id, torch.Generator().manual_seed(0))

        def theirs(ids=ids, mask=mask):
            with torch.no_grad():
                return hf.generate(ids, attention_mask=mask, max_new_tokens=n, do_sample=True,
                                   top_k=0, eos_token_id=stop_id, pad_token_id=stop_id)

        # both stop when every row has ended: count the decoding steps each actually ran
        t_ours, roll = best_of(ours, args.repeats)
        t_hf, out = best_of(theirs, args.repeats)
        tps = b * roll.responses.size(1) / t_ours
        tps_hf = b * (out.size(1) - ids.size(1)) / t_hf
        at16 = tps if b == 16 else at16
        print(f"{f'rollout, batch {b}':<22}{tps:>15.0f}{tps_hf:>11.0f}{tps / tps_hf:>11.2f}x"
              f"{tps / decode_tps:>10.1f}x")
    return at16


def ppo_step(policy, tok, rm, prompts, args) -> None:
    ref = copy.deepcopy(policy)
    cfg = PPOConfig(batch_size=16, minibatch_size=8, ppo_epochs=2, max_new_tokens=args.new_tokens,
                    lr=3e-5, kl_coef=0.01, seed=0)
    trainer = PPOTrainer(policy, ref, tok, prompts, reward_model_scorer(rm), cfg)
    trainer.step()  # warm-up
    logs = [trainer.step() for _ in range(args.steps)]
    # the scoring forwards alone, on the last step's rollout shape
    rollout = sample_rollout(policy, [trainer.prompts[i] for i in range(16)], args.new_tokens,
                             trainer.stop_id, torch.Generator().manual_seed(0))

    def scoring():
        with torch.no_grad():
            trainer.evaluate_forward(rollout)
            response_forward(ref, rollout)
            rm(rollout.sequences, attention_mask=rollout.attention_mask)

    t_score, _ = best_of(scoring, args.repeats)
    step = statistics.median(h["step_s"] for h in logs)
    roll = statistics.median(h["rollout_s"] for h in logs)
    tokens = statistics.median(h["response_length"] for h in logs) * cfg.batch_size
    update = step - roll - t_score
    print(f"\nPPO step (batch {cfg.batch_size}, {cfg.ppo_epochs} epochs x mini-batches of "
          f"{cfg.minibatch_size}, {args.new_tokens} new tokens), median of {args.steps} steps")
    print(f"{'part':<44}{'seconds':>9}{'share':>8}")
    for name, t in [("rollout (sampling, KV cache)", roll),
                    ("scoring (policy+value, reference, reward)", t_score),
                    ("updates (4 forward+backward+AdamW)", update), ("whole step", step)]:
        print(f"{name:<44}{t:>9.3f}{t / step:>7.0%}")
    print(f"rollout: {tokens / roll:.0f} real response tokens/s ({tokens:.0f} per step); "
          f"PPO: {tokens / step:.0f} response tokens trained per second")


def grpo_step(policy, tok, args) -> None:
    ref = copy.deepcopy(policy)
    cfg = GRPOConfig(prompts_per_step=8, group_size=8, minibatch_size=32, max_new_tokens=32,
                     lr=2e-5, seed=0)
    ctx = policy.config.context_length
    train = [e for e in load_sft("train") if e.task != "continue"
             and len(tok.encode(e.prompt)) + 8 + cfg.max_new_tokens <= ctx]
    trainer = GRPOTrainer(policy, ref, tok, train, cfg)
    trainer.step()
    logs = [trainer.step() for _ in range(args.steps)]
    step = statistics.median(h["step_s"] for h in logs)
    roll = statistics.median(h["rollout_s"] for h in logs)
    print(f"\nGRPO step (8 prompts x G=8, 32 new tokens, 2 mini-batches of 32), median of "
          f"{args.steps} steps: {step:.3f} s, rollout {roll:.3f} s ({roll / step:.0%}), "
          f"the rest (reference and policy forwards, updates) {step - roll:.3f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--new-tokens", type=int, default=48)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    sft = data_dir() / "checkpoints" / "shakespeare_sft_d128"
    policy, tok = load_model_and_tokenizer(sft)
    policy.eval()
    template = ChatTemplate()
    stop_id = template.stop_id(tok)
    texts = sorted({p.prompt for p in load_preferences("train")})
    prompts = [template.encode(tok, p)[0] for p in texts]
    print(f"model: {sft.name}, {policy.num_params() / 1e6:.2f}M non-embedding parameters, "
          f"context {policy.config.context_length}")
    rollouts(policy, prompts, stop_id, args)
    rm = RewardModel.from_checkpoint(data_dir() / "rlhf" / "reward_model").eval()
    ppo_step(copy.deepcopy(policy), tok, rm, texts, args)
    grpo_step(copy.deepcopy(policy), tok, args)


if __name__ == "__main__":
    main()
