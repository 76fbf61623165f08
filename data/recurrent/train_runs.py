"""Regenerate data/recurrent/runs.json: the runs chapter 18 plots.

Usage (from the repository root; one torch thread):
    python data/recurrent/train_runs.py                         # everything, writes runs.json
    python data/recurrent/train_runs.py --steps 20 --seeds 0 --copy-steps 20 --out /tmp/r.json

1. `lm`: a byte-level GPT, causal linear attention, RWKV-4 and Mamba (`MODELS`: the same
   width, about the same number of weights, Mamba one block deeper because its blocks have no
   MLP) trained on the training plays with the same recipe (`train_config`): `--steps` AdamW
   steps of 8 windows of 64 bytes, one run per seed. Each is scored with
   `minillm.training.text_bits_per_byte` on the first `--eval-bytes` bytes of the validation
   plays (the course's scorer, windows of the context length advancing by half a window),
   and its trainer's held-out estimates every `--eval-interval` steps are kept as a curve.
2. `copying`: the selective-copying task (`minillm.data.synthetic.selective_copying_batch`)
   for a Mamba with input-dependent Delta, B, C and the same model with them fixed
   (`selective=False`, an LTI SSM), `--copy-steps` steps per seed, accuracy on 512 held-out
   sequences.
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
from minillm.data.synthetic import fit_synthetic, recall_accuracy, selective_copying_batch
from minillm.models import GPT, GPTConfig
from minillm.models.recurrent import (
    RWKV,
    LinearAttentionConfig,
    LinearAttentionLM,
    Mamba,
    MambaConfig,
    RWKVConfig,
)
from minillm.tokenizers import ByteTokenizer
from minillm.training import TrainConfig, Trainer, text_bits_per_byte

HERE = Path(__file__).resolve().parent

COMMON = dict(vocab_size=257, context_length=64, d_model=64)
MODELS = {  # name -> (class, config class, config): about 120k weights each
    "GPT": (GPT, GPTConfig, dict(COMMON, n_layer=2, n_head=4)),
    "linear attention": (LinearAttentionLM, LinearAttentionConfig, dict(COMMON, n_layer=2,
                                                                        n_head=4)),
    "RWKV-4": (RWKV, RWKVConfig, dict(COMMON, n_layer=2, d_ff=192)),
    "Mamba": (Mamba, MambaConfig, dict(COMMON, n_layer=3)),
}
COPY = dict(length=64, n_data=4, n_symbols=8)     # the task, in miniature (the paper: 4096, 16, 16)
COPY_MODEL = dict(vocab_size=2 + COPY["n_symbols"], context_length=COPY["length"] + COPY["n_data"],
                  d_model=32, d_state=8, n_layer=2,
                  scan="recurrent")   # the token loop: the chunked scan's function, cheaper on a CPU
COPY_BATCH, COPY_LR = 32, 3e-3     # at 1e-2, 800 steps: one seed of three left the plateau


def build(name: str, seed: int, **overrides) -> torch.nn.Module:
    """A fresh model of `MODELS[name]` (seeded)."""
    cls, cfg_cls, cfg = MODELS[name]
    torch.manual_seed(seed)
    return cls(cfg_cls(**{**cfg, **overrides}))


def train_config(steps: int, seed: int) -> TrainConfig:
    return TrainConfig(max_steps=steps, batch_size=8, lr=3e-3, min_lr=3e-4,
                       warmup_steps=min(20, steps // 10), eval_batches=8, log_interval=10,
                       eval_interval=0, seed=seed, device="cpu", progress=False)


def lm_run(name: str, seed: int, steps: int, eval_interval: int, eval_text: str,
           train_ids: torch.Tensor, val_ids: torch.Tensor) -> dict:
    model = build(name, seed)
    cfg = train_config(steps, seed)
    cfg.eval_interval = eval_interval
    trainer = Trainer(model, train_ids, val_ids, cfg)
    t = time.perf_counter()
    trainer.fit()
    seconds = time.perf_counter() - t
    model.eval()
    return {"name": name, "seed": seed, "params": sum(p.numel() for p in model.parameters()),
            "flops_per_token": model.flops_per_token(), "train_seconds": seconds,
            "eval_bpb": text_bits_per_byte(model, eval_text),
            "curve_step": [e["step"] for e in trainer.eval_history],
            "curve_val_bpb": [e["val_loss"] / 0.6931471805599453 for e in trainer.eval_history]}


def copy_run(selective: bool, seed: int, steps: int) -> dict:
    torch.manual_seed(seed)
    model = Mamba(MambaConfig(**COPY_MODEL, selective=selective))
    g = torch.Generator().manual_seed(seed)
    t, cpu = time.perf_counter(), time.process_time()
    losses = fit_synthetic(model, lambda _s: selective_copying_batch(COPY_BATCH, **COPY,
                                                                     generator=g),
                           steps, lr=COPY_LR)
    cpu = time.process_time() - cpu
    test = selective_copying_batch(512, **COPY, generator=torch.Generator().manual_seed(10_000))
    return {"selective": selective, "seed": seed, "train_seconds": time.perf_counter() - t,
            "cpu_seconds": cpu,
            "accuracy": recall_accuracy(model, *test), "final_loss": sum(losses[-10:]) / 10}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parts", nargs="+", default=["lm", "copying"], choices=["lm", "copying"],
                   help="which runs (the other part is kept from --out if it exists)")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--eval-interval", type=int, default=50)
    p.add_argument("--eval-bytes", type=int, default=32_768)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--copy-steps", type=int, default=4000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(HERE / "runs.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    tok = ByteTokenizer()
    train_ids = tok.encode_tensor(load_corpus("shakespeare", "train"))
    val_text = load_corpus("shakespeare", "validation")
    val_ids = tok.encode_tensor(val_text)
    eval_text = val_text.encode("utf-8")[:args.eval_bytes].decode("utf-8", errors="ignore")
    out = {"recipe": {"command": "python data/recurrent/train_runs.py " + " ".join(sys.argv[1:]),
                      "models": {n: {"class": c.__name__, "config": cfg}
                                 for n, (c, _, cfg) in MODELS.items()},
                      "train": train_config(args.steps, 0).to_dict(),
                      "eval_interval": args.eval_interval, "eval_bytes": len(eval_text.encode()),
                      "copy": {"task": COPY, "model": COPY_MODEL, "batch": COPY_BATCH,
                               "lr": COPY_LR, "steps": args.copy_steps}},
           "machine": {"platform": platform.platform(), "processor": platform.processor(),
                       "cpus": os.cpu_count(), "torch": torch.__version__,
                       "threads": args.threads},
           "lm": [], "copying": []}
    old = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else {}
    for part in ("lm", "copying"):
        if part not in args.parts and part in old:
            out[part] = old[part]                       # kept, with the settings it ran under
            out["recipe"]["command_" + part] = old["recipe"].get("command_" + part)
            for key in (("train", "eval_interval", "eval_bytes") if part == "lm" else ("copy",)):
                out["recipe"][key] = old["recipe"][key]
        else:
            out["recipe"]["command_" + part] = out["recipe"]["command"]
    start = time.perf_counter()
    for seed in args.seeds:
        for name in MODELS if "lm" in args.parts else ():
            r = lm_run(name, seed, args.steps, args.eval_interval, eval_text, train_ids, val_ids)
            out["lm"].append(r)
            print(f"{name:18s} seed {seed}  {r['params']:,} weights  {r['eval_bpb']:.3f} bits/byte"
                  f"  {r['train_seconds']:.0f} s", flush=True)
        for selective in (True, False) if "copying" in args.parts else ():
            r = copy_run(selective, seed, args.copy_steps)
            out["copying"].append(r)
            Path(args.out).write_text(json.dumps(out, indent=1) + "\n")   # keep what is done
            print(f"copying {'selective' if selective else 'LTI':9s} seed {seed}  "
                  f"accuracy {r['accuracy']:.3f}  {r['train_seconds']:.0f} s", flush=True)
    out["total_seconds"] = time.perf_counter() - start
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out} ({out['total_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
