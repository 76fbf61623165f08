"""Chapter 12's ladder below PPO: REINFORCE, REINFORCE with a baseline, RLOO on PPO's footing.

    OMP_NUM_THREADS=1 python data/rlhf/ladder.py [--estimators reinforce,mean,rloo] [--seeds 0]
        [--steps 300] [--kl-coef 0.03] [--heldout-prompts 128] [--out data/rlhf/ladder.json]

For each estimator and seed: the policy and the frozen reference start from
data/checkpoints/shakespeare_sft_d128; the reward is data/rlhf/reward_model's score
(`reward_model_scorer`), the prompts are the sorted distinct prompts of the preference train
split, the gold reward (`minillm.data.preference.gold_reward`) is logged and never trained on.
`minillm.alignment.reinforce.ReinforceTrainer` takes `--steps` steps of 16 responses (4 prompts
x k = 4 samples), 48 new tokens, lr 3e-5, the k1 KL summed over each response folded into its
reward with beta = `--kl-coef` (PPO's reward and KL budget in ppo.json: 16 responses per
rollout, the same reward model, prompts, lr and token cap). Then the policy is measured on the
first 128 held-out prompts with `minillm.alignment.dpo_run.measure(..., 2)` (chapter 13's
shared held-out prompts, as run_rlhf.py's PPO stage does; key "heldout").

Writes `--out` as {"runs": [{"estimator", "seed", "kl_coef", "config", "seconds", "history",
"heldout", "heldout_prompts"}]}; the file is re-read before each write, so runs at other
(estimator, seed, kl_coef) from earlier or concurrent invocations are kept and several commands
build one file. Everything runs on the CPU with one thread (torch.set_num_threads(1)), seeded.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

from minillm.alignment.dpo_run import measure
from minillm.alignment.ppo_trainer import reward_model_scorer
from minillm.alignment.recipe import load_model_and_tokenizer
from minillm.alignment.reinforce import ESTIMATORS, ReinforceConfig, ReinforceTrainer
from minillm.alignment.reward import RewardModel
from minillm.data.preference import gold_reward, load_preferences
from minillm.io import atomic_write_json

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SFT = ROOT / "data/checkpoints/shakespeare_sft_d128"


def _key(run: dict) -> tuple:
    return run["estimator"], run["seed"], run["kl_coef"]


def run_one(estimator: str, seed: int, args, rm, prompts, heldout_prompts) -> dict:
    policy, tok = load_model_and_tokenizer(SFT)
    ref = copy.deepcopy(policy)
    cfg = ReinforceConfig(prompts_per_step=4, samples_per_prompt=4, max_new_tokens=48,
                          lr=args.lr, kl_coef=args.kl_coef, estimator=estimator, seed=seed,
                          missing_eos_penalty=args.missing_eos_penalty)
    torch.manual_seed(seed)
    trainer = ReinforceTrainer(policy, ref, tok, prompts, reward_model_scorer(rm), cfg,
                               gold_fn=gold_reward)
    start = time.perf_counter()
    for _ in range(args.steps):
        log = trainer.step()
        if log["step"] % args.log_every == 0:
            print(json.dumps({"estimator": estimator, "seed": seed,
                              **{k: (round(v, 3) if isinstance(v, float) else v)
                                 for k, v in log.items()}}), flush=True)
    seconds = time.perf_counter() - start
    record = {"estimator": estimator, "seed": seed, "kl_coef": args.kl_coef,
              "config": cfg.__dict__, "seconds": seconds, "history": trainer.history}
    if heldout_prompts:
        policy.eval()
        record["heldout"] = measure(policy, ref, tok, heldout_prompts, 2)
        record["heldout_prompts"] = len(heldout_prompts)
    return record


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--estimators", default=",".join(ESTIMATORS),
                        help=f"comma-separated, from {ESTIMATORS}")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds, one run each")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--kl-coef", type=float, default=0.03)
    parser.add_argument("--lr", type=float, default=3e-5)
    parser.add_argument("--missing-eos-penalty", type=float, default=None)
    parser.add_argument("--heldout-prompts", type=int, default=128,
                        help="first N held-out preference prompts to measure on (0: skip)")
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--out", default=str(HERE / "ladder.json"))
    args = parser.parse_args()
    estimators = args.estimators.split(",")
    bad = [e for e in estimators if e not in ESTIMATORS]
    if bad:
        parser.error(f"--estimators {bad}: choose from {ESTIMATORS}")
    seeds = [int(s) for s in args.seeds.split(",")]
    torch.set_num_threads(1)
    rm = RewardModel.from_checkpoint(HERE / "reward_model")
    prompts = sorted({p.prompt for p in load_preferences("train")})
    heldout_prompts = [p.prompt for p in load_preferences("test")[:args.heldout_prompts]]
    out = Path(args.out)
    for estimator in estimators:
        for seed in seeds:
            record = run_one(estimator, seed, args, rm, prompts, heldout_prompts)
            # re-read before writing: runs of other invocations are kept
            runs = [r for r in json.loads(out.read_text())["runs"] if _key(r) != _key(record)] \
                if out.exists() else []
            runs.append(record)
            runs.sort(key=lambda r: (ESTIMATORS.index(r["estimator"]), r["kl_coef"], r["seed"]))
            atomic_write_json(out, {"runs": runs})
            print(json.dumps({"estimator": estimator, "seed": seed,
                              "seconds": round(record["seconds"], 1),
                              "heldout": {k: v for k, v in record.get("heldout", {}).items()
                                          if k != "example_responses"}}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
