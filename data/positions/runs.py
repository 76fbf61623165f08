"""Chapter 05's shipped runs: the position schemes over seeds, and the rest of the design space.

Usage (from the repository root; one torch thread):
    python data/positions/runs.py                      # both parts, writes data/positions/runs.json
    python data/positions/runs.py --seeds 0 --steps 20 --design-steps 20 --out /tmp/p.json

1. `schemes`: the chapter's extrapolation experiment at its default settings (`SMALL`: 2 blocks,
   d_model 64, 4 heads, 300 AdamW steps of 32 windows of 64 bytes, lr 3e-3 -> 3e-4 cosine after
   30 warm-up steps), one run per position scheme and seed, each scored with `evaluate_loss`
   (nats per byte) on the first 16,384 validation bytes at 1, 2, 4 and 8 times the training
   length (the learned table only at 1x).
2. `design`: RoPE models of the same shape, LayerNorm or RMSNorm crossed with a GELU MLP (width
   4d = 256) or SwiGLU (width 170 = 8d/3 rounded down: its three matrices hold 32,640 weights
   against GELU's 32,768), trained `--design-steps` steps, scored at the training length in bits
   per byte.
3. `amplitude`: the sinusoidal scheme of part 1 at larger amplitudes (`GPTConfig.sinusoid_scale`
   in `AMPLITUDES`: the package scales the sinusoids to the rms of a fresh learned table, init_std
   = 0.02; about 35 times that is Vaswani et al.'s rms 1/sqrt(2)), same recipe and scoring as part
   1 (scale 1 is part 1's sinusoidal run).
4. `full`: part 1 at the chapter's `full=True` settings (`FULL`: 4 blocks, d_model 128, 4 times
   the steps), seed 0 only (`--full-seeds`).

A part not named in --parts is kept from --out.
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

HERE = Path(__file__).resolve().parent
SMALL = dict(d_model=64, n_layer=2, n_head=4)
TRAIN_LEN, FACTORS, EVAL_TOKENS = 64, [1, 2, 4, 8], 16_384
SCHEMES = ["none", "learned", "sinusoidal", "rope", "alibi"]
AMPLITUDES = [3.0, 10.0, 35.0]
PARTS = ["schemes", "design", "amplitude", "full"]
FULL = dict(d_model=128, n_layer=4, n_head=4)
DESIGN = {"LayerNorm + GELU": dict(norm="layernorm", mlp="gelu"),
          "RMSNorm + GELU": dict(norm="rmsnorm", mlp="gelu"),
          "LayerNorm + SwiGLU": dict(norm="layernorm", mlp="swiglu", d_ff=170),
          "RMSNorm + SwiGLU": dict(norm="rmsnorm", mlp="swiglu", d_ff=170)}


def train(config: GPTConfig, steps: int, seed: int, train_ids: torch.Tensor) -> GPT:
    torch.manual_seed(seed)
    model = GPT(config)
    cfg = TrainConfig(max_steps=steps, batch_size=32, seq_len=TRAIN_LEN, lr=3e-3, min_lr=3e-4,
                      warmup_steps=steps // 10, eval_interval=0, seed=seed, device="cpu",
                      progress=False)
    Trainer(model, train_ids, None, cfg).fit()
    return model.eval()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parts", nargs="+", default=PARTS, choices=PARTS)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--design-steps", type=int, default=1000)
    p.add_argument("--full-seeds", type=int, nargs="+", default=[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(HERE / "runs.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    tok = ByteTokenizer()
    train_ids = tok.encode_tensor(load_corpus("shakespeare", "train"))
    val_ids = tok.encode_tensor(load_corpus("shakespeare", "validation"))[: EVAL_TOKENS + 1]
    lengths = [TRAIN_LEN * f for f in FACTORS]
    out = {"recipe": {"command": "python data/positions/runs.py " + " ".join(sys.argv[1:]),
                      "model": SMALL, "train_len": TRAIN_LEN, "factors": FACTORS,
                      "eval_tokens": EVAL_TOKENS, "steps": args.steps,
                      "design_steps": args.design_steps, "seeds": args.seeds,
                      "design": DESIGN, "amplitudes": AMPLITUDES,
                      "full": {"model": FULL, "steps": 4 * args.steps, "seeds": args.full_seeds}},
           "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                       "torch": torch.__version__, "threads": args.threads},
           "schemes": [], "design": [], "amplitude": [], "full": []}
    old = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else {}
    for part in PARTS:
        if part not in args.parts and part in old:
            out[part] = old[part]           # kept, with the command that made it
            out["recipe"]["command_" + part] = old["recipe"].get("command_" + part,
                                                                 old["recipe"]["command"])
            for key in {"amplitude": ["amplitudes"], "full": ["full"]}.get(part, []):
                if key in old["recipe"]:
                    out["recipe"][key] = old["recipe"][key]
        elif part in args.parts:
            out["recipe"]["command_" + part] = out["recipe"]["command"]
    start = time.perf_counter()
    for seed in args.seeds:
        for scheme in SCHEMES if "schemes" in args.parts else ():
            ctx = TRAIN_LEN if scheme == "learned" else max(lengths)
            model = train(GPTConfig(vocab_size=tok.vocab_size, context_length=ctx,
                                    positions=scheme, **SMALL), args.steps, seed, train_ids)
            losses = [evaluate_loss(model, val_ids, context_length=L) if L <= ctx else None
                      for L in lengths]
            out["schemes"].append({"scheme": scheme, "seed": seed, "loss": losses})
            print(f"seed {seed} {scheme:11s} " + " ".join(f"{v:.3f}" if v else "-" for v in losses),
                  flush=True)
        for name, over in DESIGN.items() if "design" in args.parts else ():
            model = train(GPTConfig(vocab_size=tok.vocab_size, context_length=TRAIN_LEN,
                                    positions="rope", **SMALL, **over),
                          args.design_steps, seed, train_ids)
            bpb = evaluate_loss(model, val_ids, context_length=TRAIN_LEN) / math.log(2)
            out["design"].append({"variant": name, "seed": seed, "bpb": bpb,
                                  "params": sum(q.numel() for q in model.parameters())})
            print(f"seed {seed} {name:20s} {bpb:.4f} bits/byte", flush=True)
        for scale in AMPLITUDES if "amplitude" in args.parts else ():
            model = train(GPTConfig(vocab_size=tok.vocab_size, context_length=max(lengths),
                                    positions="sinusoidal", sinusoid_scale=scale, **SMALL),
                          args.steps, seed, train_ids)
            losses = [evaluate_loss(model, val_ids, context_length=L) for L in lengths]
            out["amplitude"].append({"scale": scale, "seed": seed, "loss": losses})
            print(f"seed {seed} sinusoidal x{scale:<5g} " + " ".join(f"{v:.3f}" for v in losses),
                  flush=True)
        for _ in [0] if "full" in args.parts and seed in args.full_seeds else ():
            for scheme in SCHEMES:
                ctx = TRAIN_LEN if scheme == "learned" else max(lengths)
                model = train(GPTConfig(vocab_size=tok.vocab_size, context_length=ctx,
                                        positions=scheme, **FULL), 4 * args.steps, seed, train_ids)
                losses = [evaluate_loss(model, val_ids, context_length=L) if L <= ctx else None
                          for L in lengths]
                out["full"].append({"scheme": scheme, "seed": seed, "loss": losses})
                print(f"full seed {seed} {scheme:11s} "
                      + " ".join(f"{v:.3f}" if v else "-" for v in losses), flush=True)
        out["seconds"] = time.perf_counter() - start
        tmp = Path(args.out).with_suffix(".tmp")
        tmp.write_text(json.dumps(out, indent=1))
        os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
