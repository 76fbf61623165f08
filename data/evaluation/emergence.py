"""Recipe: a family of GPTs of growing width trained on 4-digit addition, each scored by exact
match, token accuracy, token log-likelihood and edit distance -> data/evaluation/emergence.json
(chapter 21, Schaeffer et al. 2023; `minillm.evaluation.emergence`).

    nice -n 15 env OMP_NUM_THREADS=1 MINILLM_NUM_THREADS=1 python data/evaluation/emergence.py

Every member: 2 blocks, 2 heads, d_model in `WIDTHS`, the same `STEPS` AdamW steps of 64 fresh
problems (peak lr 3e-3, cosine), seeds `SEEDS`; scored on the same 1,000 test problems (a split
disjoint from training). Results are written after each run (a killed run keeps what it
finished; a rerun skips runs already in the file).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from minillm.data.arithmetic import addition_problems
from minillm.evaluation.emergence import AdderConfig, answer_metrics, train_adder
from minillm.io import atomic_write_json

HERE = Path(__file__).resolve().parent
OUT = HERE / "emergence.json"
WIDTHS = [8, 16, 24, 32, 48]
SEEDS = [0, 1, 2]
STEPS = 3000
DIGITS = 4
N_TEST = 1000


def run(width: int, seed: int, steps: int = STEPS) -> dict:
    config = AdderConfig(d_model=width, n_layer=2, n_head=2, digits=DIGITS, steps=steps,
                         seed=seed)
    t0 = time.perf_counter()
    model = train_adder(config)
    seconds = time.perf_counter() - t0
    metrics = answer_metrics(model, addition_problems(N_TEST, DIGITS, "test"))
    return {"d_model": width, "seed": seed, "steps": steps,
            "parameters": sum(p.numel() for p in model.parameters()),
            "train_seconds": round(seconds, 1), **metrics}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    shipped = json.loads(out.read_text()) if out.is_file() else {"runs": {}}
    shipped.update({"widths": WIDTHS, "seeds": SEEDS, "steps": STEPS, "digits": DIGITS,
                    "n_test": N_TEST, "machine": f"{platform.machine()} CPU, 1 thread, shared "
                    "2-core VM", "torch": torch.__version__})
    for seed in SEEDS:              # every width at one seed before the next seed
        for width in WIDTHS:
            key = f"d{width}_s{seed}"
            if key in shipped["runs"]:
                continue
            shipped["runs"][key] = run(width, seed)
            r = shipped["runs"][key]
            print(f"{key}: {r['parameters']} params, EM {r['exact_match']:.3f}, token acc "
                  f"{r['token_accuracy']:.3f}, {r['train_seconds']:.0f} s", flush=True)
            atomic_write_json(out, shipped)
    return 0


if __name__ == "__main__":
    sys.exit(main())
