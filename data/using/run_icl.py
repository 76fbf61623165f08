"""Chapter 20's shipped in-context-learning run: the ICL score and the induction score of a
2-layer GPT over training on repeated random tokens, three seeds (`minillm.generation.in_context`).

    python data/using/run_icl.py [--steps 600] [--every 10] [--seeds 0 1 2]

Writes data/using/icl_runs.json.
"""

import argparse
import json
import time
from pathlib import Path

import torch

from minillm.generation.in_context import icl_run

HERE = Path(__file__).resolve().parent


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--every", type=int, default=10)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    a = p.parse_args()
    torch.set_num_threads(1)
    t0 = time.time()
    runs = [icl_run(a.steps, a.every, seed=s) for s in a.seeds]
    out = {"recipe": "python data/using/run_icl.py", "seconds": round(time.time() - t0, 1),
           "runs": runs}
    (HERE / "icl_runs.json").write_text(json.dumps(out) + "\n")
    print("wrote", HERE / "icl_runs.json", out["seconds"], "s")


if __name__ == "__main__":
    main()
