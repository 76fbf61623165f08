"""Chapter 12's shipped runs: a reward model, PPO at several KL coefficients, GRPO.

    python data/rlhf/run_rlhf.py [--stage reward|reward_scaling|ppo|grpo|all] [--ppo-steps N] ...

1. reward: the SFT checkpoint + a scalar head, trained on data/preference/train.jsonl with the
   Bradley-Terry loss through the Trainer; held-out accuracy, gold agreement and calibration on
   test.jsonl, and the same measures after training on the first 100, 250, 500 pairs
   (accuracy against the number of pairs). Writes reward_model/ and reward.json.
2. ppo: PPO from the SFT checkpoint against that reward model, on the preference prompts (train
   split), once per KL coefficient; proxy reward, gold reward and KL per step. Writes ppo.json.
3. grpo: GRPO from the SFT checkpoint on the verifiable tasks' training prompts (exact-match
   reward), one task per run; greedy exact match on every task and sampled exact match on the
   trained one, before and after, and the greedy answers' length per task. Writes
   grpo_<task>.json (--grpo-out: another name; --grpo-loss-type dr_grpo --grpo-scale none:
   Dr. GRPO).
4. reward_scaling (not part of "all"): reward models on the first 1,000 ... 8,000 pairs of a
   larger preference set (--reward-pairs-dir), one epoch each, measured on the shipped test
   pairs. Writes reward_scaling.json.

PPO takes --ppo-seeds, Huang et al.'s three options (--missing-eos-penalty, --normalize-reward,
--value-from-reward-model) and --heldout-prompts (the final policy measured on chapter 13's
held-out prompts, and kept under build/ppo_policies/).

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
from minillm.alignment.recipe import load_model_and_tokenizer, score_chat
from minillm.alignment.reward import (
    PreferenceBatches,
    RewardModel,
    encode_pairs,
    evaluate_reward_model,
    reward_loss_fn,
)
from minillm.alignment.sft import exact_match_by_task
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


def stage_reward_scaling(args) -> None:
    """Reward models on more pairs: the first n of a larger set (`--reward-pairs-dir`, made by
    data/preference/make_preference_data.py --train-pairs N --splits train), one epoch each,
    measured on the shipped held-out pairs. Writes reward_scaling.json."""
    _, tok = load_model_and_tokenizer(SFT)
    train = load_preferences("train", args.reward_pairs_dir)
    test = load_preferences("test")
    shipped_prompts = {p.prompt for p in test}
    if any(p.prompt in shipped_prompts for p in train):
        raise ValueError(f"{args.reward_pairs_dir}/train.jsonl shares prompts with the test pairs")
    sizes = [int(n) for n in args.reward_sizes.split(",")]
    if max(sizes) > len(train):
        raise ValueError(f"--reward-sizes asks for {max(sizes)} pairs; {args.reward_pairs_dir} has "
                         f"{len(train)}: make more with --train-pairs")
    out = HERE / "reward_scaling.json"
    results = {"pairs_file": str(args.reward_pairs_dir), "epochs": args.reward_epochs,
               "test_pairs": len(test), "label_agrees_with_gold": {}, "by_pairs": []}
    for n in sizes:
        results["label_agrees_with_gold"][n] = sum(p.gold_chosen > p.gold_rejected
                                                   for p in train[:n]) / n
        steps = max(20, args.reward_epochs * n // 16)
        rm, _, seconds = train_reward_model(train[:n], test, tok, steps)
        row = {"n_pairs": n, "steps": steps, "seconds": seconds,
               "test": evaluate_reward_model(rm, tok, test)}
        results["by_pairs"].append(row)
        print(json.dumps({"n_pairs": n, "test_accuracy": row["test"]["accuracy"],
                          "gold_agreement": row["test"]["gold_agreement"],
                          "s": round(seconds, 1)}), flush=True)
        atomic_write_json(out, results)


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


def stage_ppo_heldout(args) -> None:
    """Chapter 13's frontier needs PPO on its shared held-out prompts with the fluency-aware gold:
    every run of --ppo-out whose final policy is under build/ppo_policies/ (kept by
    --heldout-prompts) is measured again on the first --heldout-prompts test prompts, 2 samples
    each, with FluentGold (base shakespeare_byte_d128, lambda 1: chapter 12's best-of-n).
    Writes ppo_heldout.json."""
    from minillm.alignment.dpo_run import measure
    from minillm.alignment.reward import FluentGold

    base, base_tok = load_model_and_tokenizer(ROOT / "data/checkpoints/shakespeare_byte_d128")
    fluent = FluentGold(base.eval().requires_grad_(False), base_tok, 1.0)
    ref, tok = load_model_and_tokenizer(SFT)
    ref.eval()
    prompts = [p.prompt for p in load_preferences("test")[:args.heldout_prompts or 128]]
    src = HERE / args.ppo_out
    runs = []
    for r in json.loads(src.read_text())["runs"]:
        folder = ROOT / "build/ppo_policies" / f"{src.stem}_b{r['kl_coef']}_s{r.get('seed', 0)}"
        if not folder.is_dir():
            print(f"skipped: no policy at {folder}", flush=True)
            continue
        policy, _ = load_model_and_tokenizer(folder)
        options = {k: r["config"][k] for k in ("missing_eos_penalty", "normalize_reward",
                                               "value_from_reward_model")}
        runs.append({"kl_coef": r["kl_coef"], "seed": r.get("seed", 0), "options": options,
                     "source": src.name, "steps": len(r["history"]),
                     "heldout": measure(policy.eval(), ref, tok, prompts, 2, fluent=fluent),
                     "heldout_prompts": len(prompts)})
        print(json.dumps({k: runs[-1]["heldout"][k] for k in ("gold_reward", "fluent_gold", "kl")}),
              flush=True)
    atomic_write_json(HERE / "ppo_heldout.json", {"runs": runs})


def stage_grpo(args) -> None:
    policy, tok = load_model_and_tokenizer(SFT)
    ref = copy.deepcopy(policy)
    cfg = GRPOConfig(prompts_per_step=args.grpo_prompts, group_size=8, minibatch_size=32,
                     max_new_tokens=args.grpo_new_tokens, lr=args.grpo_lr, beta=args.grpo_beta,
                     scale=args.grpo_scale, loss_type=args.grpo_loss_type, seed=args.grpo_seed)
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

    def greedy(examples) -> tuple[dict, dict, dict]:
        """Exact match per task (as trainer.evaluate), mean answer length in tokens per task,
        and two answers per task."""
        task_of, answers, refs = score_chat(policy, tok, examples, trainer.template)
        lengths, shown = {}, {}
        for t, a in zip(task_of, answers, strict=True):
            lengths.setdefault(t, []).append(len(tok.encode(a)))
            shown.setdefault(t, [])
            if len(shown[t]) < 2:
                shown[t].append(a)
        return (exact_match_by_task(task_of, answers, refs),
                {t: sum(v) / len(v) for t, v in lengths.items()}, shown)

    before, before_len, before_shown = greedy(test)
    before_sampled = trainer.evaluate_sampled(trained_test, n=8)
    print(json.dumps({"before": before, "before_sampled": before_sampled}), flush=True)
    start = time.perf_counter()
    for _ in range(args.grpo_steps):
        log = trainer.step()
        if log["step"] % 10 == 0:
            print(json.dumps({k: round(v, 3) for k, v in log.items()}), flush=True)
    seconds = time.perf_counter() - start
    after, after_len, after_shown = greedy(test)
    after_sampled = trainer.evaluate_sampled(trained_test, n=8)
    print(json.dumps({"after": after, "after_sampled": after_sampled}), flush=True)
    out = args.grpo_out or f"grpo_{'_'.join(tasks)}.json"
    (HERE / out).write_text(json.dumps({
        "config": cfg.__dict__, "train_tasks": list(tasks), "train_prompts": len(train),
        "test_per_task": args.grpo_test_per_task, "test_heldout_included": args.grpo_test_heldout,
        "before": before, "after": after, "before_length": before_len, "after_length": after_len,
        "before_answers": before_shown, "after_answers": after_shown, "sampled_n": 8, "before_sampled": before_sampled,
        "after_sampled": after_sampled, "seconds": seconds,
        "history": trainer.history}, indent=1) + "\n")


STAGES = {"reward": stage_reward, "reward_scaling": stage_reward_scaling, "ppo": stage_ppo,
          "ppo_heldout": stage_ppo_heldout, "grpo": stage_grpo}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stage", default="all",
                        choices=(*STAGES, "all"))
    parser.add_argument("--reward-pairs-dir", default=str(ROOT / "build/preference_8k"))
    parser.add_argument("--reward-sizes", default="1000,2000,4000,8000")
    parser.add_argument("--reward-epochs", type=int, default=1)
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
    parser.add_argument("--grpo-loss-type", default="grpo", choices=("grpo", "dr_grpo", "bnpo"))
    parser.add_argument("--grpo-seed", type=int, default=0)
    parser.add_argument("--grpo-test-per-task", type=int, default=100)
    parser.add_argument("--grpo-test-heldout", action="store_true",
                        help="score held-out phrasings too (default: seen phrasings only)")
    parser.add_argument("--grpo-out", default="", help="default: grpo_<tasks>.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    for stage in STAGES:
        if args.stage == stage or (args.stage == "all" and stage in ("reward", "ppo", "grpo")):
            start = time.perf_counter()
            STAGES[stage](args)
            print(f"{stage}: {time.perf_counter() - start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
