"""Score the base model on the whole test split; write data/sft/base_scores.json.

    python data/sft/score_base.py [--base data/checkpoints/shakespeare_byte] [--shots 2]

Exact match per verifiable task, on the seen and on the held-out phrasings, for the base model
prompted in plain text, zero-shot and `--shots`-shot (demonstrations of the same task from the
training split: `minillm.alignment.recipe.score_plain`), and its bits per byte on the whole
validation plays. The SFT model's scores on the same examples are in its own
`data/checkpoints/shakespeare_sft/training.json` (`minillm sft --final-eval`: `score_chat`,
zero-shot through the chat template). Greedy decoding on the CPU with one thread: a rerun with
the same torch gives the same file. Chapter 11 plots both beside its own live evaluation.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from minillm.alignment.recipe import load_model_and_tokenizer, score_plain
from minillm.alignment.sft import exact_match_by_task
from minillm.data import load_corpus
from minillm.data.sft import VERIFIABLE_TASKS, load_sft
from minillm.training import text_bits_per_byte

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base", default=str(ROOT / "data/checkpoints/shakespeare_byte"))
    parser.add_argument("--shots", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(HERE / "base_scores.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    base, tok = load_model_and_tokenizer(args.base)
    train = load_sft("train")
    scores: dict[str, dict] = {}
    for held in (False, True):
        test = [e for e in load_sft("test", heldout=held) if e.task in VERIFIABLE_TASKS]
        scores["heldout_phrasings" if held else "seen_phrasings"] = {
            "0shot": exact_match_by_task(*score_plain(base, tok, test)),
            f"{args.shots}shot": exact_match_by_task(*score_plain(
                base, tok, test, demos=train, shots=args.shots, seed=args.seed)),
            "examples": len(test),
        }
    record = {"base": Path(args.base).name, "shots": args.shots, "seed": args.seed,
              "torch": torch.__version__, "exact_match": scores,
              "validation_bits_per_byte": text_bits_per_byte(
                  base, load_corpus("shakespeare", "validation"), tok),
              "seconds": round(time.perf_counter() - t0)}
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
