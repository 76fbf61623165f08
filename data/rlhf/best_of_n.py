"""Best-of-n over-optimisation (Gao et al. 2022, arXiv:2210.10760): chapter 12's primary curve.

    python data/rlhf/best_of_n.py [--prompts 64] [--samples 64] [--fluency-weight 1.0]

For each of `--prompts` held-out preference prompts (data/preference/test.jsonl, the first
distinct ones), sample `--samples` responses from the SFT checkpoint (temperature 1, up to 48
new tokens, the PPO runs' cap), and score each with
- the proxy: the shipped reward model (data/rlhf/reward_model);
- the lexicon gold scorer `gold_reward` (the one the shipped PPO runs logged);
- the fluency-aware gold scorer `FluentGold`: lexicon + lambda * mean log p per token under the
  base model data/checkpoints/shakespeare_byte_d128 (lambda = --fluency-weight).
Then for n = 1, 2, 4, ..., N: the expected proxy, gold and length of the proxy's best-of-n pick
(the unbiased estimator over the N samples, `minillm.alignment.best_of_n`), KL_bon = log n -
(n - 1)/n, and Gao et al.'s form d (alpha - beta d) fitted to each gold's gain over n = 1.
Writes data/rlhf/best_of_n.json (the per-sample scores too, so the chapter recomputes the curves).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from minillm.alignment.best_of_n import best_of_n_expectation, best_of_n_kl, fit_bon_form
from minillm.alignment.chat import ChatTemplate
from minillm.alignment.ppo_trainer import reward_model_scorer
from minillm.alignment.recipe import load_model_and_tokenizer
from minillm.alignment.reward import FluentGold, RewardModel
from minillm.alignment.rollout import decode_responses, sample_rollout
from minillm.data.preference import load_preferences

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SFT = ROOT / "data/checkpoints/shakespeare_sft_d128"
BASE = ROOT / "data/checkpoints/shakespeare_byte_d128"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--samples", type=int, default=64, help="N samples per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--fluency-weight", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="best_of_n.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    sft, tok = load_model_and_tokenizer(SFT)
    base, base_tok = load_model_and_tokenizer(BASE)
    rm = RewardModel.from_checkpoint(HERE / "reward_model").eval()
    sft.eval()
    template = ChatTemplate()
    stop_id = template.stop_id(tok)
    scorer = reward_model_scorer(rm)
    gold = FluentGold(base, base_tok, args.fluency_weight)
    prompts = list(dict.fromkeys(p.prompt for p in load_preferences("test")))[:args.prompts]
    g = torch.Generator().manual_seed(args.seed)
    cols = {k: [] for k in ("proxy", "lexicon", "fluency", "length", "ended")}
    examples = []
    for i, prompt in enumerate(prompts):
        ids = template.encode(tok, prompt)[0]
        roll = sample_rollout(sft, [ids] * args.samples, args.max_new_tokens, stop_id, g)
        texts = decode_responses(tok, roll, stop_id)
        lexicon, fluency = gold.parts(texts)
        ended = ((roll.responses == stop_id) & roll.response_mask.bool()).any(-1)
        cols["proxy"].append(scorer(roll, texts).tolist())
        cols["lexicon"].append(lexicon.tolist())
        cols["fluency"].append(fluency.tolist())
        cols["length"].append(roll.response_mask.sum(-1).tolist())
        cols["ended"].append(ended.long().tolist())
        best = int(np.argmax(cols["proxy"][-1]))
        examples.append({"prompt": prompt, "first": texts[0], "proxy_best": texts[best]})
        if (i + 1) % 8 == 0:
            print(f"{i + 1}/{len(prompts)} prompts, {time.perf_counter() - start:.0f} s", flush=True)
    sample_s = time.perf_counter() - start
    arr = {k: np.array(v, dtype=np.float64) for k, v in cols.items()}
    arr["gold_fluent"] = arr["lexicon"] + args.fluency_weight * arr["fluency"]
    ns = [2 ** k for k in range(int(np.log2(args.samples)) + 1)]
    curves = {"n": ns, "kl": [best_of_n_kl(n) for n in ns]}
    keys = ("proxy", "lexicon", "fluency", "gold_fluent", "length", "ended")
    per_prompt = {k: np.stack([best_of_n_expectation(arr["proxy"], arr[k], n) for n in ns], 1)
                  for k in keys}                                   # (P, len(ns))
    for k in keys:
        curves[k] = per_prompt[k].mean(0).tolist()
        curves[k + "_se"] = (per_prompt[k].std(0, ddof=1) / np.sqrt(len(prompts))).tolist()
    d = np.sqrt(curves["kl"])
    fits = {}
    for k in ("lexicon", "gold_fluent", "proxy"):
        gain = np.array(curves[k]) - curves[k][0]
        alpha, beta, peak = fit_bon_form(d, gain)
        fits[k] = {"alpha": alpha, "beta": beta, "peak_d": peak,
                   "peak_n_measured": ns[int(np.argmax(curves[k]))]}
    out = {
        "recipe": " ".join(["python data/rlhf/best_of_n.py", *sys.argv[1:]]),
        "machine": f"course VM, 2 shared CPU cores, one torch thread ({platform.processor() or platform.machine()})",
        "policy": "data/checkpoints/shakespeare_sft_d128", "proxy": "data/rlhf/reward_model",
        "gold_base": "data/checkpoints/shakespeare_byte_d128", "fluency_weight": args.fluency_weight,
        "prompts": len(prompts), "samples": args.samples, "max_new_tokens": args.max_new_tokens,
        "temperature": 1.0, "seed": args.seed, "sample_and_score_seconds": sample_s,
        "curves": curves, "fits": fits, "examples": examples[:8],
        "scores": {k: [[round(x, 5) for x in row] for row in cols[k]] for k in cols},
        "seconds": time.perf_counter() - start,
    }
    (HERE / args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({"fits": fits, "gold_fluent": [round(x, 3) for x in curves["gold_fluent"]],
                      "lexicon": [round(x, 3) for x in curves["lexicon"]],
                      "proxy": [round(x, 3) for x in curves["proxy"]], "s": round(out["seconds"])}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
