"""Regenerate data/scaling/bootstrap.json: 500 bootstrap refits of chapter 07's Approach-3 fit.

Usage (from the repository root; about 7 minutes of one free CPU core, resumable):
    python data/scaling/bootstrap.py             # continues where an earlier run stopped
    python data/scaling/bootstrap.py --fresh     # start over
    python data/scaling/bootstrap.py --fresh --workers 2   # the same refits on 2 processes

It does what `fit_chinchilla(N, D, loss, n_refine=20, n_bootstrap=500, bootstrap_refine=2,
seed=0)` does on the sweep's runs (in `plan_sweep` order, as the chapter loads them), one
resample at a time, and writes the refits as it goes, so an interrupted run resumes. The k-th
resample draws the same run indices as the k-th resample of `fit_chinchilla` (one
`numpy.random.default_rng(seed)` stream): the chapter re-fits the first few live and checks
they equal the stored ones. With `--workers k` the resamples are drawn in the same order by
the main process and refitted by k single-threaded processes: the same refits, sooner.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import time
from pathlib import Path

import numpy as np
import torch

from minillm.scaling.fits import DEFAULT_GRID, _fit_once, _grid
from minillm.scaling.sweep import SweepConfig, load_sweep, plan_sweep

HERE = Path(__file__).resolve().parent
OUT = HERE / "bootstrap.json"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fresh", action="store_true", help="delete earlier results first")
    parser.add_argument("--n-bootstrap", type=int, default=500)
    parser.add_argument("--save-every", type=int, default=10)
    parser.add_argument("--workers", type=int, default=1, help="processes (one thread each)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    meta = json.loads((HERE / "sweep_config.json").read_text())
    plan = plan_sweep(SweepConfig(**meta["config"]))
    by_name = {r["name"]: r for r in load_sweep(HERE / "sweep.jsonl")}
    records = [by_name[s.name] for s in plan]
    n, d, y = (np.array([r[k] for r in records], dtype=float)
               for k in ("n_params", "tokens", "val_loss"))
    settings = {"n_refine": 20, "bootstrap_refine": 2, "delta": 1e-3, "seed": 0,
                "runs": [r["name"] for r in records]}
    done = json.loads(OUT.read_text()) if OUT.exists() and not args.fresh else None
    if done is not None and done["settings"] != settings:
        raise SystemExit("bootstrap.json was made with other settings or runs: use --fresh")
    samples = [] if done is None else done["samples"]
    seconds = 0.0 if done is None else done["seconds"]
    log_n, log_d, log_y = (torch.tensor(np.log(v), dtype=torch.float64) for v in (n, d, y))
    starts = _grid(DEFAULT_GRID)
    params, _, theta = _fit_once(log_n, log_d, log_y, starts, 1e-3, settings["n_refine"])
    rng = np.random.default_rng(settings["seed"])
    for _ in range(len(samples)):                     # replay the draws already used
        rng.integers(0, len(n), len(n))
    start = time.perf_counter()
    draws = [rng.integers(0, len(n), len(n)) for _ in range(args.n_bootstrap - len(samples))]
    jobs = [(log_n, log_d, log_y, starts, settings["bootstrap_refine"], theta, idx)
            for idx in draws]
    with multiprocessing.get_context("fork").Pool(args.workers) as pool:
        for p in pool.imap(refit, jobs):              # in draw order
            samples.append(p)
            if len(samples) % args.save_every == 0 or len(samples) == args.n_bootstrap:
                write(settings, params, samples, seconds + time.perf_counter() - start)
                print(f"{len(samples)} resamples, {seconds + time.perf_counter() - start:.0f} s",
                      flush=True)
    return 0


def refit(job) -> list[float]:
    """One resample's refit (in a worker process, one torch thread)."""
    log_n, log_d, log_y, starts, n_refine, theta, idx = job
    torch.set_num_threads(1)
    idx = torch.as_tensor(idx)
    p, _, _ = _fit_once(log_n[idx], log_d[idx], log_y[idx], starts, 1e-3, n_refine,
                        extra_start=theta)
    return p.tolist()


def write(settings, params, samples, seconds) -> None:
    record = {"settings": settings, "fit": dict(zip(("E", "A", "B", "alpha", "beta"),
                                                    params.tolist(), strict=True)),
              "columns": ["E", "A", "B", "alpha", "beta"], "samples": samples,
              "seconds": round(seconds, 1), "machine": f"{platform.machine()} "
              f"{platform.processor() or ''}".strip(), "torch": torch.__version__,
              "threads": torch.get_num_threads()}
    tmp = OUT.with_suffix(".tmp")
    tmp.write_text(json.dumps(record) + "\n")
    tmp.replace(OUT)


if __name__ == "__main__":
    raise SystemExit(main())
