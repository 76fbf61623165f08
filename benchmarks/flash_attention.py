"""Forward and forward+backward time and memory of the attention backends over the length.

    python benchmarks/flash_attention.py                        # CPU, fp32, T = 256..2048
    python benchmarks/flash_attention.py --gpu                  # CUDA, bf16, T = 1k..16k,
                                                                # d = 64 and 128, causal and not
    python benchmarks/flash_attention.py --dry-run              # every GPU row's code on the CPU,
                                                                # tiny shapes (flash_triton through
                                                                # TRITON_INTERPRET=1); numbers mean nothing

CPU: naive, sdpa and flash_torch, causal, d = 64 (flash_triton only runs on the CPU through the
interpreter, far too slow to time). Memory is what autograd saves for the backward
(saved_tensors_hooks, distinct storages): the quantity FlashAttention makes O(T). GPU: also
flash_triton, the peak allocated memory (torch.cuda.max_memory_allocated) and TFLOP/s of the
forward and of forward+backward with FlashAttention-2's count, fwd = 4·B·H·T²·d (halved when
causal), fwd+bwd = 3.5 × fwd, as % of --peak-tflops (default 989, the H100/H200 SXM dense bf16
datasheet figure). The issue's target: flash_triton within 0.8x of sdpa at T=16k, d=64, causal.
"""

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from minillm.kernels import get_attention  # noqa: E402


def saved_bytes(fn, q, k, v, causal: bool = True) -> int:
    storages = {}

    def pack(x):
        storages[x.untyped_storage().data_ptr()] = x.untyped_storage().nbytes()
        return x

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        out = fn(q, k, v, causal=causal)
    del out
    return sum(storages.values())


def time_fwd_bwd(fn, q, k, v, repeat: int, cuda: bool, causal: bool = True,
                 backward: bool = True) -> float:
    """Median seconds of one forward (+ backward)."""
    grad = torch.randn_like(q)
    times = []
    for i in range(repeat + 1):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        if backward:
            out = fn(q, k, v, causal=causal)
            out.backward(grad)
        else:
            with torch.no_grad():
                out = fn(q, k, v, causal=causal)
        if cuda:
            torch.cuda.synchronize()
        if i:  # the first run warms up (and autotunes on a GPU)
            times.append(time.perf_counter() - t0)
        q.grad = k.grad = v.grad = None
    return statistics.median(times)


def attention_flops(batch: int, heads: int, t: int, d: int, causal: bool,
                    backward: bool) -> float:
    """FlashAttention-2's count: fwd 4·B·H·T²·d (halved when causal), fwd+bwd 3.5 × fwd."""
    fwd = 4 * batch * heads * t * t * d * (0.5 if causal else 1.0)
    return 3.5 * fwd if backward else fwd


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--gpu", action="store_true", help="CUDA, bf16, adds flash_triton")
    p.add_argument("--dry-run", action="store_true",
                   help="the GPU table's code on the CPU with tiny shapes (a check, not a timing)")
    p.add_argument("--lengths", type=int, nargs="+")
    p.add_argument("--head-dims", type=int, nargs="+")
    p.add_argument("--causal", choices=("yes", "no", "both"), default=None)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--heads", type=int, default=None)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--peak-tflops", type=float, default=989.0)
    p.add_argument("--json", type=Path, help="also write the rows here")
    args = p.parse_args(argv)
    cuda, dry = args.gpu, args.dry_run
    if cuda and dry:
        raise SystemExit("--gpu and --dry-run exclude each other")
    if cuda and not torch.cuda.is_available():
        raise SystemExit("--gpu needs a CUDA device")
    if dry and os.environ.get("TRITON_INTERPRET") != "1":
        raise SystemExit("--dry-run runs flash_triton through Triton's interpreter: set "
                         "TRITON_INTERPRET=1")
    torch.set_num_threads(args.threads)
    device = "cuda" if cuda else "cpu"
    dtype = torch.bfloat16 if cuda else torch.float32
    wide = cuda or dry                              # the GPU table's shape of sweep
    lengths = args.lengths or ([1024, 2048, 4096, 8192, 16384] if cuda
                               else [32] if dry else [256, 512, 1024, 2048])
    head_dims = args.head_dims or ([64, 128] if cuda else [16, 32] if dry else [64])
    causal_modes = {"yes": [True], "no": [False], "both": [True, False],
                    None: [True, False] if wide else [True]}[args.causal]
    heads = args.heads or (16 if cuda else 1 if dry else 4)
    repeat = 1 if dry else args.repeat
    backends = ["naive", "sdpa", "flash_torch"] + (["flash_triton"] if wide else [])
    rows = []
    print(f"device={device} dtype={dtype} B={args.batch} H={heads} threads={args.threads} "
          f"torch={torch.__version__}" + ("  DRY RUN: tiny shapes, the numbers mean nothing"
                                          if dry else ""))
    print(f"{'T':>6} {'d':>4} {'causal':>6} {'backend':>13} {'fwd ms':>8} {'fwd+bwd ms':>11} "
          f"{'saved MiB':>10} {'peak MiB':>9} {'fwd TF/s':>9} {'f+b TF/s':>9} {'% peak':>7}")
    for d in head_dims:
        for causal in causal_modes:
            for t in lengths:
                for name in backends:
                    if name in ("naive", "flash_torch") and cuda and t > 8192:
                        continue  # naive's T² scores / flash_torch's Python loop: minutes at 16k
                    if name == "flash_torch" and cuda and t > 4096:
                        continue
                    fn = get_attention(name)
                    gen = torch.Generator(device=device).manual_seed(0)
                    q, k, v = (torch.randn(args.batch, heads, t, d, device=device,
                                           generator=gen, dtype=dtype).requires_grad_()
                               for _ in range(3))
                    saved = saved_bytes(fn, q, k, v, causal)
                    if cuda:
                        torch.cuda.reset_peak_memory_stats()
                    sec_f = time_fwd_bwd(fn, q, k, v, repeat, cuda, causal, backward=False)
                    sec = time_fwd_bwd(fn, q, k, v, repeat, cuda, causal)
                    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else float("nan")
                    row = dict(T=t, d=d, causal=causal, backend=name, fwd_ms=sec_f * 1e3,
                               ms=sec * 1e3, saved_mib=saved / 2**20, peak_mib=peak,
                               fwd_tflops=attention_flops(args.batch, heads, t, d, causal,
                                                          False) / sec_f / 1e12,
                               tflops=attention_flops(args.batch, heads, t, d, causal,
                                                      True) / sec / 1e12)
                    row["pct_peak"] = 100 * row["tflops"] / args.peak_tflops if cuda \
                        else float("nan")
                    rows.append(row)
                    print(f"{t:>6} {d:>4} {str(causal):>6} {name:>13} {row['fwd_ms']:>8.2f} "
                          f"{row['ms']:>11.2f} {row['saved_mib']:>10.2f} {peak:>9.0f} "
                          f"{row['fwd_tflops']:>9.3f} {row['tflops']:>9.3f} "
                          f"{row['pct_peak']:>7.1f}", flush=True)
                by = {r["backend"]: r for r in rows
                      if (r["T"], r["d"], r["causal"]) == (t, d, causal)}
                if "flash_torch" in by and "naive" in by:
                    print(f"{'':>6} flash_torch / naive: time "
                          f"{by['flash_torch']['ms'] / by['naive']['ms']:.2f}x, saved memory "
                          f"{by['flash_torch']['saved_mib'] / by['naive']['saved_mib']:.3f}x")
                if "flash_triton" in by:
                    print(f"{'':>6} flash_triton speed vs sdpa: fwd "
                          f"{by['sdpa']['fwd_ms'] / by['flash_triton']['fwd_ms']:.2f}x, fwd+bwd "
                          f"{by['sdpa']['ms'] / by['flash_triton']['ms']:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
