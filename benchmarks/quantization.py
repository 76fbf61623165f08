"""Quantized inference: matmul and whole-model decoding speed, bytes per scheme, GPTQ time.

    .venv/bin/python benchmarks/quantization.py [--threads 2] [--device cpu] [--new-tokens 128]
    python benchmarks/quantization.py --dry-run     # every step, tiny (the small matmul only,
                                                    # 4 new bytes, 2,000 eval bytes): a check

1. One linear layer (K=512 -> N=2048, and K=N=4096 for a 7B-shaped projection) at M = 1 token
   (decoding) and M = 256 tokens (prefill): fp32 `F.linear`; W8A8 (per-token int8 activations,
   int8 weights, `torch._int_mm` where it runs, else exact int32 arithmetic); weight-only int4
   (packed, dequantized on the fly each call). Outputs are checked against fp32.
2. The course checkpoint (data/checkpoints/shakespeare_byte) decodes `--new-tokens` bytes
   greedily with the KV cache, for fp32, w8a8, llm.int8, rtn4-g128 and nf4: tokens/s, bytes of
   the checkpoint each scheme writes (model.safetensors on disk), and held-out bits per byte.
3. GPTQ (4-bit, group 128) time per layer on 16 calibration windows of 256 bytes.

Prints tables; not a test.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

from minillm.data import data_dir, load_corpus  # noqa: E402
from minillm.generation import generate  # noqa: E402
from minillm.models import GPT  # noqa: E402
from minillm.quantization import (  # noqa: E402
    Int8Linear,
    WeightOnlyLinear,
    quantize_model,
    save_quantized,
)
from minillm.quantization.int8 import int_mm_available  # noqa: E402
from minillm.tokenizers import ByteTokenizer  # noqa: E402
from minillm.training import evaluate_loss  # noqa: E402


def best_time(fn, repeats: int, sync=lambda: None) -> float:
    fn()
    sync()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t)
    return best


def matmuls(args, dev, sync) -> None:
    print(f"\n## matmul (device {dev}, torch._int_mm available: {int_mm_available(dev)})")
    print("| K x N | M | fp32 ms | W8A8 int8 ms | int4 weight-only ms | W8A8 / fp32 | int4 / fp32 "
          "| max rel. err W8A8 | int4 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    torch.manual_seed(0)
    for k, n in ((512, 2048),) if args.dry_run else ((512, 2048), (4096, 4096)):
        lin = torch.nn.Linear(k, n).to(dev)
        w8 = Int8Linear.from_linear(lin).to(dev)
        w4 = WeightOnlyLinear.from_linear(lin, 4, 128).to(dev)
        for m in (1, 256):
            x = torch.randn(m, k, device=dev)
            with torch.no_grad():
                ref = lin(x)
                t32 = best_time(lambda x=x, lin=lin: F.linear(x, lin.weight, lin.bias),
                                args.repeats, sync)
                t8 = best_time(lambda x=x, w8=w8: w8(x), args.repeats, sync)
                t4 = best_time(lambda x=x, w4=w4: w4(x), args.repeats, sync)
                rel = lambda y, ref=ref: ((y - ref).norm() / ref.norm()).item()
                print(f"| {k} x {n} | {m} | {1e3 * t32:.3f} | {1e3 * t8:.3f} | {1e3 * t4:.3f} | "
                      f"{t8 / t32:.2f}x | {t4 / t32:.2f}x | {rel(w8(x)):.4f} | {rel(w4(x)):.4f} |")


def models(args, dev, sync) -> None:
    ckpt = data_dir() / "checkpoints" / "shakespeare_byte"
    tok = ByteTokenizer()
    train = tok.encode_tensor(load_corpus("shakespeare", "train"))
    val = tok.encode_tensor(load_corpus("shakespeare", "validation"))[: args.eval_bytes + 1]
    calib = torch.stack([train[i * 997: i * 997 + 256] for i in range(16)])
    prompt = val[:32][None].to(dev)
    print(f"\n## course model, {args.new_tokens} new bytes, greedy, KV cache (device {dev})")
    print("| scheme | bytes on disk | vs fp32 | held-out bits/byte | tokens/s | vs fp32 |")
    print("|---|---:|---:|---:|---:|---:|")
    base_tps = base_size = None
    d = GPT.from_checkpoint(ckpt).config.d_model
    g = 128 if d % 128 == 0 else 64  # the group must divide the rows (d192 since 4cd8725: g64)
    for scheme in ("fp32", "w8a8", "llm.int8", f"rtn4-g{g}", "nf4", f"gptq4-g{g}"):
        model = GPT.from_checkpoint(ckpt).eval()
        with tempfile.TemporaryDirectory() as d:
            if scheme == "fp32":
                model.save(Path(d) / "m")
            else:
                try:
                    quantize_model(model, scheme, calibration=calib)
                except ValueError as e:  # NF4's double quantization needs whole 256-block groups
                    print(f"| {scheme} | skipped: {e} | | | | |")
                    continue
                save_quantized(model, Path(d) / "m")
            size = os.path.getsize(Path(d) / "m" / "model.safetensors")
        model.to(dev)
        bpb = evaluate_loss(model, val.to(dev)) / math.log(2)
        t = best_time(lambda m=model: generate(m, prompt, args.new_tokens, do_sample=False),
                      args.repeats, sync)
        tps = args.new_tokens / t
        base_tps, base_size = base_tps or tps, base_size or size
        print(f"| {scheme} | {size:,} | {size / base_size:.2f} | {bpb:.4f} | {tps:.1f} | "
              f"{tps / base_tps:.2f}x |")
        if scheme.startswith("gptq4"):
            times = model.quantization_times
            print(f"\nGPTQ 4-bit g{g}: {len(times)} layers in {sum(times.values()):.2f} s; per "
                  "layer (s): " + ", ".join(f"{k.replace('blocks.', 'b')} {v:.3f}"
                                            for k, v in list(times.items())[:4]) + ", ...")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--eval-bytes", type=int, default=20_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU (a check)")
    args = p.parse_args()
    if args.dry_run:
        args.device, args.new_tokens, args.eval_bytes, args.repeats = "cpu", 4, 2000, 1
        print("DRY RUN: tiny sizes on the CPU; the numbers mean nothing")
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    print(f"torch {torch.__version__}, {args.threads} threads, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}")
    try:
        model_name = [line for line in subprocess.run(["lscpu"], capture_output=True, text=True)
                      .stdout.splitlines() if "Model name" in line]
        print(model_name[0].strip() if model_name else "")
    except OSError:
        pass
    matmuls(args, dev, sync)
    models(args, dev, sync)


if __name__ == "__main__":
    main()
