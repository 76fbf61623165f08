"""Regenerate data/moe/: the longer MoE runs that chapter 08 plots (byte-level GPTs on Shakespeare).

Usage (from the repository root; one torch thread):
    python data/moe/run_moe.py                      # every run of RUNS, writes runs.json
    python data/moe/run_moe.py --steps 300 --out /tmp/moe.json --only dense switch_e8
    python data/moe/run_moe.py --save-checkpoint    # also write switch_e8/ (the routed model)
    python data/moe/run_moe.py --only dense_x8 --update   # add or redo some runs in runs.json

Every run is the same two-layer byte-level GPT (`BASE`) trained with the same data stream, seed
and schedule (`train_config`); only its feed-forward layers differ (`RUNS`). `tracked_fit`
records the held-out estimate (validation plays, the same 8 windows of 64 bytes every time),
the training seconds and the router's load per expert every `--eval-interval` steps; at the end
each model is scored on the first `--eval-bytes` bytes of the validation plays
(`evaluate_loss`, bits per byte).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import torch

from minillm.data import load_corpus
from minillm.models import GPT, GPTConfig
from minillm.tokenizers import ByteTokenizer
from minillm.training import TrainConfig, Trainer, evaluate_loss
from minillm.training.tracked import tracked_fit

HERE = Path(__file__).resolve().parent

# the dense model; every MoE run replaces both MLPs by a MoE layer
BASE = dict(context_length=64, d_model=64, n_layer=2, n_head=4, d_ff=256)
SWITCH = dict(n_expert=8, top_k=1, capacity_factor=1.25)      # Switch: k = 1, experts of width d_ff
RUNS = {
    "dense": {},                                                        # 1 MLP of width 256
    "switch_e8": SWITCH,                                                # equal active params and FLOPs
    "switch_e8_no_balance": {**SWITCH, "moe_balance_coef": 0.0},        # balance loss off
    "switch_e8_cf1.0": {**SWITCH, "capacity_factor": 1.0},
    "switch_e8_cf2.0": {**SWITCH, "capacity_factor": 2.0},
    "switch_e8_no_cap": {**SWITCH, "capacity_factor": None},           # nothing dropped
    "top2_e8_half": dict(n_expert=8, top_k=2, expert_d_ff=128, capacity_factor=1.25),  # GShard-style
    "dense_x8": {"d_ff": 8 * 256},                                      # as many parameters as switch_e8
}


def train_config(steps: int, seed: int) -> TrainConfig:
    return TrainConfig(max_steps=steps, batch_size=16, lr=3e-3, min_lr=3e-4,
                       warmup_steps=min(50, steps // 10), eval_batches=8, log_interval=10,
                       eval_interval=0, seed=seed, device="cpu", progress=False)


def run(name: str, steps: int, eval_interval: int, eval_bytes: int, seed: int,
        train_ids: torch.Tensor, val_ids: torch.Tensor) -> tuple[dict, GPT]:
    torch.manual_seed(seed)
    config = GPTConfig(**{**BASE, **RUNS[name]})
    model = GPT(config)
    trainer = Trainer(model, train_ids, val_ids, train_config(steps, seed))
    curves = tracked_fit(trainer, eval_interval)
    bpb = evaluate_loss(model, val_ids, max_tokens=eval_bytes) / math.log(2)
    record = {"name": name, "overrides": RUNS[name], "params": model.num_params(),
              "active_params": model.num_active_params(),
              "flops_per_token": model.flops_per_token(), "eval_bpb": bpb, **curves}
    return record, model


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--eval-interval", type=int, default=100)
    p.add_argument("--eval-bytes", type=int, default=65_536)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--only", nargs="*", default=None, help=f"a subset of {list(RUNS)}")
    p.add_argument("--out", default=str(HERE / "runs.json"))
    p.add_argument("--update", action="store_true",
                   help="keep the other runs already in --out (replace those run again)")
    p.add_argument("--save-checkpoint", action="store_true",
                   help="write the trained switch_e8 model to data/moe/switch_e8/")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    names = args.only or list(RUNS)
    unknown = sorted(set(names) - set(RUNS))
    if unknown:
        p.error(f"unknown runs {unknown}; choose from {list(RUNS)}")
    tok = ByteTokenizer()
    train_ids = tok.encode_tensor(load_corpus("shakespeare", "train"))
    val_ids = tok.encode_tensor(load_corpus("shakespeare", "validation"))
    command = "python data/moe/run_moe.py " + " ".join(sys.argv[1:])
    out = {"recipe": {"base": BASE, "train": train_config(args.steps, args.seed).to_dict(),
                      "eval_interval": args.eval_interval, "eval_bytes": args.eval_bytes},
           "machine": {"platform": platform.platform(), "processor": platform.processor(),
                       "cpus": os.cpu_count(), "torch": torch.__version__,
                       "threads": args.threads},
           "runs": []}
    start = time.perf_counter()
    for name in names:
        record, model = run(name, args.steps, args.eval_interval, args.eval_bytes, args.seed,
                            train_ids, val_ids)
        out["runs"].append({**record, "command": command})
        print(f"{name:22s} {record['eval_bpb']:.3f} bits/byte  {record['seconds'][-1]:.0f} s",
              flush=True)
        if args.save_checkpoint and name == "switch_e8":
            model.save(HERE / "switch_e8", extra_files={"run.json": {
                "recipe": out["recipe"], "command": command, "eval_bpb": record["eval_bpb"]}})
        write(out, Path(args.out), args.update)      # after every run: a crash keeps the rest
    print(f"{len(names)} runs in {time.perf_counter() - start:.0f} s", flush=True)
    return 0


def write(out: dict, path: Path, update: bool) -> None:
    """Write `out` to `path` atomically; with `update`, keep the runs of `path` not in `out`."""
    out = dict(out)
    if update and path.exists():
        old = json.loads(path.read_text())
        if old["recipe"] != out["recipe"]:
            raise SystemExit(f"{path} holds runs of another recipe; drop --update")
        mine = {r["name"] for r in out["runs"]}
        out["runs"] = [r for r in old["runs"] if r["name"] not in mine] + out["runs"]
    order = list(RUNS)
    out["runs"] = sorted(out["runs"], key=lambda r: order.index(r["name"]) if r["name"] in order
                         else len(order))
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(out, indent=None, separators=(",", ":")))
    os.replace(tmp, path)


if __name__ == "__main__":
    raise SystemExit(main())
