"""Chapter 12's shipped runs: a reward model, PPO at several KL coefficients, GRPO.

    python data/rlhf/run_rlhf.py [--stage reward|ppo|grpo|all] [--ppo-steps N] [--grpo-steps N]

1. reward: the SFT checkpoint + a scalar head, trained on data/preference/train.jsonl with the
   Bradley-Terry loss through the Trainer; held-out accuracy, gold agreement and calibration on
   test.jsonl, and the same measures after training on the first 100, 250, 500 pairs
   (accuracy against the number of pairs). Writes reward_model/ and reward.json.
2. ppo: PPO from the SFT checkpoint against that reward model, on the preference prompts (train
   split), once per KL coefficient; proxy reward, gold reward and KL per step. Writes ppo.json.
3. grpo: GRPO from the SFT checkpoint on the verifiable tasks' training prompts (exact-match
   reward), one task per run; greedy exact match on every task and sampled exact match on the
   trained one, before and after. Writes grpo_<task>.json.

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
from minillm.io import atomic_write_json
from minillm.training import TrainConfig, Trainer

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SFT = ROOT / "data/checkpoints/shakespeare_sft_d128"
KL_COEFS = (0.0, 0.01, 0.03, 0.1)


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
    from minillm.alignment.dpo_run import measure

    rm = RewardModel.from_checkpoint(HERE / "reward_model")
    prompts = sorted({p.prompt for p in load_preferences("train")})
    # chapter 13's shared held-out prompts: the DPO runs are measured on the same 128
    heldout_prompts = [p.prompt for p in load_preferences("test")[:args.heldout_prompts]]
    out = HERE / args.ppo_out
    coefs = [float(b) for b in args.kl_coefs.split(",")]
    seeds = [int(s) for s in args.ppo_seeds.split(",")]
    for kl_coef in coefs:
        for seed in seeds:
            policy, tok = load_model_and_tokenizer(SFT)
            ref = copy.deepcopy(policy)
            cfg = PPOConfig(batch_size=16, minibatch_size=8, ppo_epochs=2, max_new_tokens=48,
                            lr=args.ppo_lr, kl_coef=kl_coef, seed=seed,
                            missing_eos_penalty=args.missing_eos_penalty,
                            normalize_reward=args.normalize_reward,
                            value_from_reward_model=args.value_from_reward_model)
            torch.manual_seed(seed)
            trainer = PPOTrainer(policy, ref, tok, prompts, reward_model_scorer(rm), cfg,
                                 gold_fn=gold_reward, reward_model=rm)
            start = time.perf_counter()
            for _ in range(args.ppo_steps):
                log = trainer.step()
                if log["step"] % 10 == 0:
                    print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v)
                                      for k, v in log.items()}), flush=True)
            seconds = time.perf_counter() - start
            record = {"kl_coef": kl_coef, "seed": seed, "config": cfg.__dict__,
                      "seconds": seconds, "history": trainer.history}
            if args.heldout_prompts:
                policy.eval()
                record["heldout"] = measure(policy, ref, tok, heldout_prompts, 2)
                record["heldout_prompts"] = len(heldout_prompts)
                folder = ROOT / "build/ppo_policies" / f"{out.stem}_b{kl_coef}_s{seed}"
                policy.save(folder, extra_files={"tokenizer.json": tok.to_dict()})
            # re-read before writing: runs at other (coefficient, seed), from earlier or
            # concurrent invocations, are kept, so several commands build one file
            runs = [r for r in json.loads(out.read_text())["runs"]
                    if (r["kl_coef"], r.get("seed", 0)) != (kl_coef, seed)] \
                if out.exists() else []
            runs.append(record)
            runs.sort(key=lambda r: (r["kl_coef"], r.get("seed", 0)))
            atomic_write_json(out, {"runs": runs})


def stage_grpo(args) -> None:
    policy, tok = load_model_and_tokenizer(SFT)
    ref = copy.deepcopy(policy)
    cfg = GRPOConfig(prompts_per_step=args.grpo_prompts, group_size=8, minibatch_size=32,
                     max_new_tokens=args.grpo_new_tokens, lr=args.grpo_lr, beta=args.grpo_beta,
                     scale=args.grpo_scale, seed=0)
    ctx = policy.config.context_length

    def fits(e) -> bool:
        return len(tok.encode(e.prompt)) + 8 + cfg.max_new_tokens <= ctx

    tasks = tuple(args.grpo_tasks.split(","))
    train = [e for e in load_sft("train") if e.task in tasks and fits(e)]
    heldout = None if args.grpo_test_heldout else False
    test = [e for t in VERIFIABLE_TASKS
            for e in load_sft("test", task=t, heldout=heldout)[:args.grpo_test_per_task]]
    trainer = GRPOTrainer(policy, ref, tok, train, cfg)
    trained_test = [e for e in test if e.task in tasks]
    before = trainer.evaluate(test)
    before_sampled = trainer.evaluate_sampled(trained_test, n=8)
    print(json.dumps({"before": before, "before_sampled": before_sampled}), flush=True)
    start = time.perf_counter()
    for _ in range(args.grpo_steps):
        log = trainer.step()
        if log["step"] % 10 == 0:
            print(json.dumps({k: round(v, 3) for k, v in log.items()}), flush=True)
    seconds = time.perf_counter() - start
    after = trainer.evaluate(test)
    after_sampled = trainer.evaluate_sampled(trained_test, n=8)
    print(json.dumps({"after": after, "after_sampled": after_sampled}), flush=True)
    out = args.grpo_out or f"grpo_{'_'.join(tasks)}.json"
    (HERE / out).write_text(json.dumps({
        "config": cfg.__dict__, "train_tasks": list(tasks), "train_prompts": len(train),
        "test_per_task": args.grpo_test_per_task, "test_heldout_included": args.grpo_test_heldout,
        "before": before, "after": after, "sampled_n": 8, "before_sampled": before_sampled,
        "after_sampled": after_sampled, "seconds": seconds,
        "history": trainer.history}, indent=1) + "\n")


STAGES = {"reward": stage_reward, "ppo": stage_ppo, "grpo": stage_grpo}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stage", default="all", choices=("reward", "ppo", "grpo", "all"))
    parser.add_argument("--ppo-steps", type=int, default=300)
    parser.add_argument("--ppo-lr", type=float, default=3e-5)
    parser.add_argument("--kl-coefs", default=",".join(map(str, KL_COEFS)),
                        help="comma-separated fixed KL coefficients, one PPO run each")
    parser.add_argument("--ppo-out", default="ppo.json")
    parser.add_argument("--ppo-seeds", default="0", help="comma-separated seeds, one run each")
    parser.add_argument("--heldout-prompts", type=int, default=0,
                        help="measure the final policy on this many held-out preference prompts "
                             "(chapter 13's 128; 0: skip) and keep it under build/ppo_policies/")
    parser.add_argument("--missing-eos-penalty", type=float, default=None,
                        help="Huang et al.: this score for responses cut at the cap (off by default)")
    parser.add_argument("--normalize-reward", action="store_true",
                        help="Huang et al.: standardise scores by SFT samples' mean and std")
    parser.add_argument("--value-from-reward-model", action="store_true",
                        help="Huang et al.: the critic is a copy of the reward model")
    parser.add_argument("--grpo-steps", type=int, default=120)
    parser.add_argument("--grpo-lr", type=float, default=1e-4)
    parser.add_argument("--grpo-tasks", default="count_words",
                        help="comma-separated tasks to train on (the shipped runs: one each)")
    parser.add_argument("--grpo-new-tokens", type=int, default=16)
    parser.add_argument("--grpo-prompts", type=int, default=16, help="prompts per GRPO step")
    parser.add_argument("--grpo-beta", type=float, default=0.04)
    parser.add_argument("--grpo-scale", default="group", choices=("group", "none"))
    parser.add_argument("--grpo-test-per-task", type=int, default=100)
    parser.add_argument("--grpo-test-heldout", action="store_true",
                        help="score held-out phrasings too (default: seen phrasings only)")
    parser.add_argument("--grpo-out", default="", help="default: grpo_<tasks>.json")
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
