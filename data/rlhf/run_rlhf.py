"""Chapter 12's shipped runs: a reward model, PPO at several KL coefficients, GRPO.

    python data/rlhf/run_rlhf.py [--stage reward|ppo|grpo|all] [--ppo-steps N] [--grpo-steps N]

1. reward: the SFT checkpoint + a scalar head, trained on data/preference/train.jsonl with the
   Bradley-Terry loss through the Trainer; held-out accuracy, gold agreement and calibration on
   test.jsonl, and the same measures after training on the first 100, 250, 500 pairs
   (accuracy against the number of pairs). Writes reward_model/ and reward.json.
2. ppo: PPO from the SFT checkpoint against that reward model, on the preference prompts (train
   split), once per KL coefficient; proxy reward, gold reward and KL per step. Writes ppo.json.
3. grpo: GRPO from the SFT checkpoint on the verifiable tasks' training prompts (exact-match
   reward); greedy exact match on the test split before and after. Writes grpo.json.

Everything runs on the CPU with one thread (torch.set_num_threads(1)), seeded.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

from minillm.alignment.grpo import GRPOConfig, GRPOTrainer
from minillm.alignment.ppo_trainer import PPOConfig, PPOTrainer, reward_model_scorer
from minillm.alignment.recipe import load_model_and_tokenizer
from minillm.alignment.reward import (
    PreferenceBatches,
    RewardModel,
    encode_pairs,
    evaluate_reward_model,
    reward_loss_fn,
)
from minillm.data.preference import gold_reward, load_preferences
from minillm.data.sft import VERIFIABLE_TASKS, load_sft
from minillm.training import TrainConfig, Trainer

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SFT = ROOT / "data/checkpoints/shakespeare_sft"
KL_COEFS = (0.01, 0.1)


def train_reward_model(pairs, test, tok, steps: int, seed: int = 0, out: Path | None = None):
    base, _ = load_model_and_tokenizer(SFT)
    rm = RewardModel.from_sft(base, seed=seed)
    ctx = rm.config.context_length
    batches = PreferenceBatches(encode_pairs(tok, pairs, ctx), encode_pairs(tok, test, ctx),
                                batch_size=16, seed=seed)
    cfg = TrainConfig(max_steps=steps, batch_size=16, lr=1e-4, min_lr=1e-5, warmup_steps=10,
                      weight_decay=0.0, eval_interval=0, log_interval=10, device="cpu",
                      progress=False, seed=seed)
    start = time.perf_counter()
    history = Trainer(rm, config=cfg, batches=batches, loss_fn=reward_loss_fn).fit()
    seconds = time.perf_counter() - start
    if out is not None:
        rm.save(out, extra_files={"tokenizer.json": json.loads((SFT / "tokenizer.json").read_text())})
    return rm, history, seconds


def stage_reward(args) -> None:
    _, tok = load_model_and_tokenizer(SFT)
    train, test = load_preferences("train"), load_preferences("test")
    results = {"train_pairs": len(train), "test_pairs": len(test), "by_pairs": []}
    base, _ = load_model_and_tokenizer(SFT)
    untrained = RewardModel.from_sft(base, seed=0)
    results["untrained"] = evaluate_reward_model(untrained, tok, test)
    for n in (100, 250, 500, len(train)):
        steps = max(20, 3 * n // 16)  # three epochs of 16-pair batches
        out = HERE / "reward_model" if n == len(train) else None
        rm, history, seconds = train_reward_model(train[:n], test, tok, steps, out=out)
        row = {"n_pairs": n, "steps": steps, "seconds": seconds,
               "test": evaluate_reward_model(rm, tok, test),
               "train": {k: v for k, v in evaluate_reward_model(rm, tok, train[:n]).items()
                         if k != "calibration"}}
        if n == len(train):
            row["history"] = history
        results["by_pairs"].append(row)
        print(json.dumps({"n_pairs": n, "test_accuracy": row["test"]["accuracy"],
                          "gold_agreement": row["test"]["gold_agreement"],
                          "ece": row["test"]["ece"], "s": round(seconds, 1)}), flush=True)
    (HERE / "reward.json").write_text(json.dumps(results, indent=1) + "\n")


def stage_ppo(args) -> None:
    rm = RewardModel.from_checkpoint(HERE / "reward_model")
    prompts = sorted({p.prompt for p in load_preferences("train")})
    runs = []
    for kl_coef in KL_COEFS:
        policy, tok = load_model_and_tokenizer(SFT)
        ref = copy.deepcopy(policy)
        cfg = PPOConfig(batch_size=16, minibatch_size=8, ppo_epochs=2, max_new_tokens=48,
                        lr=args.ppo_lr, kl_coef=kl_coef, seed=0)
        trainer = PPOTrainer(policy, ref, tok, prompts, reward_model_scorer(rm), cfg,
                             gold_fn=gold_reward)
        start = time.perf_counter()
        for _ in range(args.ppo_steps):
            log = trainer.step()
            if log["step"] % 10 == 0:
                print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v)
                                  for k, v in log.items()}), flush=True)
        runs.append({"kl_coef": kl_coef, "config": cfg.__dict__,
                     "seconds": time.perf_counter() - start, "history": trainer.history})
        (HERE / "ppo.json").write_text(json.dumps({"runs": runs}, indent=1) + "\n")


def stage_grpo(args) -> None:
    policy, tok = load_model_and_tokenizer(SFT)
    ref = copy.deepcopy(policy)
    cfg = GRPOConfig(prompts_per_step=8, group_size=8, minibatch_size=32, max_new_tokens=32,
                     lr=args.grpo_lr, beta=0.04, seed=0)
    ctx = policy.config.context_length

    def fits(e) -> bool:
        return len(tok.encode(e.prompt)) + 8 + cfg.max_new_tokens <= ctx

    tasks = tuple(args.grpo_tasks.split(",")) if args.grpo_tasks else VERIFIABLE_TASKS
    train = [e for e in load_sft("train") if e.task in tasks and fits(e)]
    test = [e for t in VERIFIABLE_TASKS for e in load_sft("test", task=t, heldout=False)[:50]]
    trainer = GRPOTrainer(policy, ref, tok, train, cfg)
    before = trainer.evaluate(test)
    print(json.dumps({"before": before}), flush=True)
    start = time.perf_counter()
    for _ in range(args.grpo_steps):
        log = trainer.step()
        if log["step"] % 10 == 0:
            print(json.dumps({k: round(v, 3) for k, v in log.items()}), flush=True)
    seconds = time.perf_counter() - start
    after = trainer.evaluate(test)
    print(json.dumps({"after": after}), flush=True)
    (HERE / args.grpo_out).write_text(json.dumps({
        "config": cfg.__dict__, "train_tasks": list(tasks), "train_prompts": len(train), "test_per_task": 50,
        "before": before, "after": after, "seconds": seconds,
        "history": trainer.history}, indent=1) + "\n")


STAGES = {"reward": stage_reward, "ppo": stage_ppo, "grpo": stage_grpo}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stage", default="all", choices=("reward", "ppo", "grpo", "all"))
    parser.add_argument("--ppo-steps", type=int, default=60)
    parser.add_argument("--ppo-lr", type=float, default=3e-5)
    parser.add_argument("--grpo-steps", type=int, default=40)
    parser.add_argument("--grpo-lr", type=float, default=2e-5)
    parser.add_argument("--grpo-tasks", default="", help="comma-separated (default: all six)")
    parser.add_argument("--grpo-out", default="grpo.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    for stage in ("reward", "ppo", "grpo"):
        if args.stage in (stage, "all"):
            start = time.perf_counter()
            STAGES[stage](args)
            print(f"{stage}: {time.perf_counter() - start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
