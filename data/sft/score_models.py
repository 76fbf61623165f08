"""Score the base and the SFT model on the whole test split; write data/sft/scores.json.

    python data/sft/score_models.py [--base data/checkpoints/shakespeare_byte]
                                    [--sft data/checkpoints/shakespeare_sft] [--shots 2]

Exact match per verifiable task, on the seen and on the held-out phrasings, for the base model
prompted in plain text (zero-shot and `--shots`-shot, demonstrations of the same task from the
training split: `minillm.alignment.recipe.score_plain`) and for the SFT model through its chat
template, zero-shot (`score_chat`); and bits per byte of both on the whole validation plays.
Greedy decoding on the CPU with one thread: a rerun with the same torch gives the same file.
Chapter 11 plots this file beside its own live, smaller evaluation.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

from minillm.alignment import exact_match_by_task
from minillm.alignment.recipe import load_model_and_tokenizer, score_chat, score_plain
from minillm.data import load_corpus
from minillm.data.sft import VERIFIABLE_TASKS, load_sft
from minillm.training import evaluate_loss

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base", default=str(ROOT / "data/checkpoints/shakespeare_byte"))
    parser.add_argument("--sft", default=str(ROOT / "data/checkpoints/shakespeare_sft"))
    parser.add_argument("--shots", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(HERE / "scores.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    base, base_tok = load_model_and_tokenizer(args.base)
    sft, sft_tok = load_model_and_tokenizer(args.sft)
    train = load_sft("train")
    scores: dict[str, dict] = {}
    for held in (False, True):
        test = [e for e in load_sft("test", heldout=held) if e.task in VERIFIABLE_TASKS]
        key = "heldout_phrasings" if held else "seen_phrasings"
        scores[key] = {
            "base_0shot": exact_match_by_task(*score_plain(base, base_tok, test)),
            f"base_{args.shots}shot": exact_match_by_task(*score_plain(
                base, base_tok, test, demos=train, shots=args.shots, seed=args.seed)),
            "sft": exact_match_by_task(*score_chat(sft, sft_tok, test)),
            "examples": len(test),
        }
    val = load_corpus("shakespeare", "validation")
    bpb = {name: evaluate_loss(model, tok.encode_tensor(val)) / math.log(2)
           for name, model, tok in (("base", base, base_tok), ("sft", sft, sft_tok))}
    record = {"base": Path(args.base).name, "sft": Path(args.sft).name, "shots": args.shots,
              "seed": args.seed, "torch": torch.__version__, "exact_match": scores,
              "validation_bits_per_byte": bpb, "seconds": round(time.perf_counter() - t0)}
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    for key, table in scores.items():
        print(key)
        for t in VERIFIABLE_TASKS + ("mean",):
            print(f"  {t:14s} " + "  ".join(f"{name} {table[name][t]:6.1%}"
                                            for name in table if name != "examples"))
    print("validation bits/byte:", {k: round(v, 3) for k, v in bpb.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
