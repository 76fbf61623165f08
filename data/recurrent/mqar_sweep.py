"""Regenerate data/recurrent/mqar.json: the trained MQAR sweep chapter 18 plots (section 5).

Usage (from the repository root; one torch thread):
    python data/recurrent/mqar_sweep.py                       # the shipped sweep, writes mqar.json
    python data/recurrent/mqar_sweep.py --steps 20 --seeds 0 --widths 16 --out /tmp/m.json

Multi-query associative recall (Arora et al. 2023, "Zoology", arXiv:2312.04927;
`minillm.data.synthetic.mqar_batch`): `n_pairs` key-value pairs, then every key again, each
query asking for its value. Each model of `MODELS` (2 blocks, one head where there are heads)
is trained from scratch at every width in `--widths` and every number of pairs in `--pairs`,
`--steps` AdamW steps of `--batch` fresh sequences (`fit_synthetic`), one run per seed, and
scored with `recall_accuracy` on `TEST_SEQUENCES` held-out sequences (the same ones for every
model). Each record also holds the decoding state the model carries at the end of a sequence,
in numbers: `decoding_state_nbytes(config, 3 * n_pairs, bytes_per_number=1)` (the GPT's KV
cache for the 3 * n_pairs tokens; the recurrent models' fixed state).

Each model trains at every peak learning rate of its `LRS` entry (Zoology also sweeps the rate
and reports the best); the chapter keeps, for each (model, P, width), the rate with the best
mean accuracy over the seeds. The rates were chosen by probes at d_model 64, P = 4: the GPT
reached 100% at 1e-3 and stayed on the plateau at 3e-3 and 1e-2; Mamba stayed on it for 1,500
steps at 1e-3 and reached 86% in 3,000 steps at 3e-3; Mamba, the dearest by far, gets one rate.
Mamba trains with its token-by-token scan (`scan="recurrent"`: the same function as the chunked
scan, which the tests check, and 3 to 4 times cheaper on a CPU for these short sequences).

Runs go seed by seed (all of seed 0 first), and the JSON is rewritten after every run, so an
interrupted sweep keeps what it finished; `--resume` skips the runs already in `--out`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from minillm.data.synthetic import fit_synthetic, mqar_batch, recall_accuracy
from minillm.models import GPT, GPTConfig
from minillm.models.recurrent import (
    RWKV,
    LinearAttentionConfig,
    LinearAttentionLM,
    Mamba,
    MambaConfig,
    RWKVConfig,
    decoding_state_nbytes,
)

HERE = Path(__file__).resolve().parent
N_KEYS, N_VALUES = 32, 32            # vocabulary: 32 key ids, then 32 value ids
TEST_SEQUENCES, TEST_SEED = 512, 10_000
LRS = {"attention (GPT)": [1e-3, 3e-3], "linear attention": [1e-3, 3e-3], "Mamba": [3e-3],
       "RWKV-4": [1e-3, 3e-3]}
MODELS = {  # name -> (class, config class, config without vocab, context and width)
    "attention (GPT)": (GPT, GPTConfig, dict(n_layer=2, n_head=1, positions="rope")),
    "linear attention": (LinearAttentionLM, LinearAttentionConfig, dict(n_layer=2, n_head=1)),
    "Mamba": (Mamba, MambaConfig, dict(n_layer=2, d_state=16, scan="recurrent")),
    "RWKV-4": (RWKV, RWKVConfig, dict(n_layer=2)),
}


def build(name: str, d_model: int, n_pairs: int, seed: int) -> torch.nn.Module:
    """A fresh, seeded model of `MODELS[name]` at width `d_model` for sequences of n_pairs."""
    cls, cfg_cls, cfg = MODELS[name]
    torch.manual_seed(seed)
    return cls(cfg_cls(vocab_size=N_KEYS + N_VALUES, context_length=3 * n_pairs,
                       d_model=d_model, **cfg))


def run(name: str, d_model: int, n_pairs: int, seed: int, steps: int, batch: int,
        lr: float, weight_decay: float) -> dict:
    model = build(name, d_model, n_pairs, seed)
    g = torch.Generator().manual_seed(seed)
    cpu, wall = time.process_time(), time.perf_counter()
    losses = fit_synthetic(model, lambda _s: mqar_batch(batch, n_pairs, N_KEYS, N_VALUES,
                                                        generator=g), steps, lr=lr,
                          weight_decay=weight_decay)
    test = mqar_batch(TEST_SEQUENCES, n_pairs, N_KEYS, N_VALUES,
                      generator=torch.Generator().manual_seed(TEST_SEED))
    return {"model": name, "d_model": d_model, "n_pairs": n_pairs, "seed": seed, "lr": lr,
            "params": sum(p.numel() for p in model.parameters()),
            "state_numbers": decoding_state_nbytes(model.config, 3 * n_pairs, 1, 1),
            "accuracy": recall_accuracy(model, *test), "final_loss": sum(losses[-10:]) / 10,
            "cpu_seconds": time.process_time() - cpu, "wall_seconds": time.perf_counter() - wall}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["attention (GPT)", "linear attention", "Mamba"],
                   choices=list(MODELS))
    p.add_argument("--widths", type=int, nargs="+", default=[16, 32, 64])
    p.add_argument("--pairs", type=int, nargs="+", default=[4, 8])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, nargs="+", default=None,
                   help="peak learning rates for every model (default: each model's LRS entry)")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--resume", action="store_true", help="keep the runs already in --out")
    p.add_argument("--out", default=str(HERE / "mqar.json"))
    p.add_argument("--merge", nargs="+", default=[],
                   help="only merge these outputs of parallel invocations (e.g. one per --pairs) "
                        "into --out, then stop")
    args = p.parse_args()
    if args.merge:
        parts = [json.loads(Path(f).read_text()) for f in args.merge]
        out = parts[0]
        out["recipe"]["command"] = " && ".join(x["recipe"]["command"] for x in parts)
        out["recipe"]["task"]["pairs"] = sorted({P for x in parts for P in x["recipe"]["task"]["pairs"]})
        out["recipe"]["widths"] = sorted({d for x in parts for d in x["recipe"]["widths"]})
        out["recipe"]["seeds"] = sorted({s for x in parts for s in x["recipe"]["seeds"]})
        out["recipe"]["models"] = {n: m for x in parts for n, m in x["recipe"]["models"].items()}
        out["recipe"]["lrs"] = {n: v for x in parts for n, v in x["recipe"]["lrs"].items()}
        out["runs"] = [r for x in parts for r in x["runs"]]
        out["total_cpu_seconds"] = sum(r["cpu_seconds"] for r in out["runs"])
        out["total_wall_seconds"] = sum(r["wall_seconds"] for r in out["runs"])
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
        print(f"merged {len(out['runs'])} runs into {args.out}")
        return 0
    torch.set_num_threads(args.threads)
    out = {"recipe": {"command": "python data/recurrent/mqar_sweep.py " + " ".join(sys.argv[1:]),
                      "task": {"n_keys": N_KEYS, "n_values": N_VALUES, "pairs": args.pairs,
                               "test_sequences": TEST_SEQUENCES, "test_seed": TEST_SEED},
                      "models": {n: {"class": MODELS[n][0].__name__, "config": MODELS[n][2]}
                                 for n in args.models},
                      "widths": args.widths, "seeds": args.seeds, "steps": args.steps,
                      "batch": args.batch, "weight_decay": args.weight_decay,
                      "lrs": {n: args.lr or LRS[n] for n in args.models}},
           "machine": {"platform": platform.platform(), "processor": platform.processor(),
                       "cpus": os.cpu_count(), "torch": torch.__version__,
                       "threads": args.threads},
           "runs": []}
    done = set()
    if args.resume and Path(args.out).exists():
        old = json.loads(Path(args.out).read_text())
        out["runs"] = old["runs"]
        out["recipe"]["command"] = old["recipe"]["command"] + " ; --resume"
        done = {(r["model"], r["d_model"], r["n_pairs"], r["seed"], r["lr"]) for r in old["runs"]}
    for seed in args.seeds:
        for n_pairs in args.pairs:
            for name in args.models:
                for d, lr in ((d, lr) for d in args.widths for lr in args.lr or LRS[name]):
                    if (name, d, n_pairs, seed, lr) in done:
                        continue
                    r = run(name, d, n_pairs, seed, args.steps, args.batch, lr, args.weight_decay)
                    out["runs"].append(r)
                    out["total_cpu_seconds"] = sum(x["cpu_seconds"] for x in out["runs"])
                    out["total_wall_seconds"] = sum(x["wall_seconds"] for x in out["runs"])
                    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
                    print(f"{name:17s} d {d:3d}  P {n_pairs:2d}  seed {seed}  lr {lr:.0e}  state "
                          f"{r['state_numbers']:6,}  accuracy {r['accuracy']:.3f}  loss "
                          f"{r['final_loss']:.3f}  {r['cpu_seconds']:.1f} s CPU", flush=True)
    print(f"wrote {args.out} ({len(out['runs'])} runs, "
          f"{out.get('total_cpu_seconds', 0):.0f} s CPU)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
