"""Regenerate data/scaling/: the scaling sweep of chapter 07 (tiny byte-level GPTs on Shakespeare).

Usage (from the repository root; about 10-20 minutes on one CPU core):
    python data/scaling/run_sweep.py                  # resumes: finished points are skipped
    python data/scaling/run_sweep.py --fresh          # start over

Writes sweep.jsonl (one record per finished run, appended as it finishes), sweep.csv (the same
records as a table), sweep_config.json (recipe, machine, torch version) beside this script.
The recipe is `minillm.scaling.sweep.default_sweep_config()`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from minillm.scaling.sweep import default_sweep_config, plan_sweep, run_sweep, write_csv

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fresh", action="store_true", help="delete earlier results first")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = HERE / "sweep.jsonl"
    if args.fresh and out.exists():
        out.unlink()
    config = default_sweep_config()
    print(f"{len(plan_sweep(config))} runs planned; command: python "
          f"{' '.join(['data/scaling/run_sweep.py', *sys.argv[1:]])}", flush=True)
    start = time.perf_counter()
    records = run_sweep(config, out, device=args.device)
    write_csv(records, HERE / "sweep.csv")
    print(f"{len(records)} runs in {time.perf_counter() - start:.0f} s -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
