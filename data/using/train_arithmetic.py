"""Chapter 20's arithmetic model: a small byte GPT trained on addition in three formats.

One model learns, from the prefix letter, to answer directly ("D:57+68=125"), to write a
column-by-column scratchpad first ("S:57+68=7+8+0=15,5+6+1=12,>125") and to call the
calculator ("T:57+68=<calc>57+68</calc>=125"), on 1- to MAX_DIGITS-digit operands, the loss on the
completion only. Writes data/using/arithmetic/ (config.json, model.safetensors, run.json
with the loss curve and greedy accuracy per format and digit count).

    python data/using/train_arithmetic.py [--steps 5000] [--out data/using/arithmetic]
"""

import argparse
import json
import time
from pathlib import Path

import torch

from minillm.data.arithmetic import problems, training_batch
from minillm.data.synthetic import fit_synthetic
from minillm.generation.arithmetic import solve_greedy
from minillm.models import GPT, GPTConfig

HERE = Path(__file__).resolve().parent


def config() -> GPTConfig:
    return GPTConfig(vocab_size=257, context_length=80, d_model=64, n_layer=2, n_head=4,
                     d_ff=256, dropout=0.0)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--max-digits", type=int, default=4)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(HERE / "arithmetic"))
    a = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(a.seed)
    model = GPT(config())
    t0 = time.time()
    losses = fit_synthetic(model, lambda s: training_batch(a.batch, a.max_digits,
                                                           seed=1000 * a.seed + s),
                           a.steps, lr=a.lr)
    train_s = time.time() - t0
    acc = {}
    for fmt in ("direct", "scratchpad", "tool"):
        acc[fmt] = {d: sum(solve_greedy(model, problems(100, d, seed=10_000 + d), fmt)) / 100
                    for d in range(1, a.max_digits + 2)}
    out = Path(a.out)
    model.save(out)
    run = {"steps": a.steps, "batch": a.batch, "max_digits": a.max_digits, "lr": a.lr,
           "seed": a.seed, "train_seconds": round(train_s, 1),
           "loss": [round(x, 4) for x in losses[::10]], "greedy_accuracy": acc}
    (out / "run.json").write_text(json.dumps(run, indent=1) + "\n")
    print(json.dumps({"train_seconds": run["train_seconds"], "accuracy": acc}))


if __name__ == "__main__":
    main()
