"""Regenerate data/pretraining/lr_sweep.json: chapter 06's learning-rate sweep.

Usage (from the repository root; one torch thread):
    python data/pretraining/lr_sweep.py                                   # the shipped sweep
    python data/pretraining/lr_sweep.py --seeds 0 --steps 20 --out /tmp/lr.json   # a smoke run

The chapter's live model and recipe (`MODEL`: 2 blocks, d_model 64, 4 heads, context 64; batch
32, AdamW with weight decay 0.1, gradients clipped at 1, `--steps` steps with a linear warm-up
over the first tenth, then a cosine to a tenth of the peak) trained at each peak learning rate
of `--lrs` (default: the chapter's 5e-3 times 2^k, k = -3..3: seven points over 1.8 decades),
one run per seed. Each run is scored with `evaluate_loss` (nats per byte) on the first
`EVAL_BYTES` bytes of the validation plays, the slice the chapter scores its live run on, and
keeps its training curve (the trainer's logged loss every `LOG_EVERY` steps). The JSON is
rewritten after every run, so an interrupted sweep keeps what it finished.
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

from minillm.data import load_corpus
from minillm.models import GPT, GPTConfig
from minillm.tokenizers import ByteTokenizer
from minillm.training import TrainConfig, Trainer, evaluate_loss

HERE = Path(__file__).resolve().parent
MODEL = dict(context_length=64, d_model=64, n_layer=2, n_head=4)
BATCH, WEIGHT_DECAY, GRAD_CLIP, EVAL_BYTES, LOG_EVERY = 32, 0.1, 1.0, 50_000, 10
DEFAULT_LRS = [5e-3 * 2.0 ** k for k in range(-3, 4)]


def run(peak_lr: float, seed: int, steps: int, train_ids: torch.Tensor,
        val_ids: torch.Tensor) -> dict:
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=ByteTokenizer().vocab_size, **MODEL))
    cfg = TrainConfig(max_steps=steps, batch_size=BATCH, lr=peak_lr, min_lr=peak_lr / 10,
                      warmup_steps=steps // 10, weight_decay=WEIGHT_DECAY, grad_clip=GRAD_CLIP,
                      eval_interval=0, log_interval=LOG_EVERY, seed=seed, device="cpu",
                      progress=False)
    cpu = time.process_time()
    history = Trainer(model, train_ids, None, cfg).fit()
    cpu = time.process_time() - cpu
    return {"lr": peak_lr, "seed": seed, "steps": steps,
            "val_loss": evaluate_loss(model, val_ids, max_tokens=EVAL_BYTES),
            "curve_step": [h["step"] for h in history], "curve_loss": [h["loss"] for h in history],
            "cpu_seconds": cpu}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lrs", type=float, nargs="+", default=DEFAULT_LRS)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(HERE / "lr_sweep.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    tok = ByteTokenizer()
    train_ids = tok.encode_tensor(load_corpus("shakespeare", "train"))
    val_ids = tok.encode_tensor(load_corpus("shakespeare", "validation"))
    out = {"recipe": {"command": "python data/pretraining/lr_sweep.py " + " ".join(sys.argv[1:]),
                      "model": MODEL, "batch": BATCH, "weight_decay": WEIGHT_DECAY,
                      "grad_clip": GRAD_CLIP, "steps": args.steps, "warmup_steps": args.steps // 10,
                      "min_lr": "peak / 10", "lrs": args.lrs, "seeds": args.seeds,
                      "eval_bytes": EVAL_BYTES},
           "machine": {"platform": platform.platform(), "processor": platform.processor(),
                       "cpus": os.cpu_count(), "torch": torch.__version__,
                       "threads": args.threads},
           "runs": []}
    start = time.perf_counter()
    for seed in args.seeds:
        for peak_lr in args.lrs:
            r = run(peak_lr, seed, args.steps, train_ids, val_ids)
            out["runs"].append(r)
            out["total_wall_seconds"] = time.perf_counter() - start
            tmp = Path(args.out).with_suffix(".tmp")
            tmp.write_text(json.dumps(out, indent=1) + "\n")
            os.replace(tmp, args.out)
            print(f"seed {seed} lr {peak_lr:.2e}: {r['val_loss']:.4f} nats/byte "
                  f"({r['cpu_seconds']:.0f} s CPU)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
