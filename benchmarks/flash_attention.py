"""Forward+backward time and memory of the attention backends over the sequence length.

    python benchmarks/flash_attention.py                        # CPU, fp32, T = 256..2048
    python benchmarks/flash_attention.py --gpu                  # CUDA, bf16, T = 1k..16k

CPU: naive, sdpa and flash_torch (flash_triton only runs on the CPU through the interpreter,
far too slow to time). Memory is what autograd saves for the backward (saved_tensors_hooks,
distinct storages): the quantity FlashAttention makes O(T). GPU: also flash_triton, the peak
allocated memory (torch.cuda.max_memory_allocated) and TFLOP/s with FlashAttention-2's count,
fwd = 4·B·H·T²·d (halved when causal), fwd+bwd = 3.5 × fwd, as % of --peak-tflops (default
989, the H100/H200 SXM dense bf16 datasheet figure). The issue's target: flash_triton within
0.8x of sdpa at T=16k, d=64, causal.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from minillm.kernels import get_attention  # noqa: E402


def saved_bytes(fn, q, k, v) -> int:
    storages = {}

    def pack(x):
        storages[x.untyped_storage().data_ptr()] = x.untyped_storage().nbytes()
        return x

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        out = fn(q, k, v, causal=True)
    del out
    return sum(storages.values())


def time_fwd_bwd(fn, q, k, v, repeat: int, cuda: bool) -> float:
    """Median seconds of one forward + backward."""
    grad = torch.randn_like(q)
    times = []
    for i in range(repeat + 1):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn(q, k, v, causal=True)
        out.backward(grad)
        if cuda:
            torch.cuda.synchronize()
        if i:  # the first run warms up (and autotunes on a GPU)
            times.append(time.perf_counter() - t0)
        q.grad = k.grad = v.grad = None
    return statistics.median(times)


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--gpu", action="store_true", help="CUDA, bf16, adds flash_triton")
    p.add_argument("--lengths", type=int, nargs="+")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--heads", type=int, default=None)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--peak-tflops", type=float, default=989.0)
    p.add_argument("--json", type=Path, help="also write the rows here")
    args = p.parse_args(argv)
    cuda = args.gpu
    if cuda and not torch.cuda.is_available():
        raise SystemExit("--gpu needs a CUDA device")
    torch.set_num_threads(args.threads)
    device = "cuda" if cuda else "cpu"
    dtype = torch.bfloat16 if cuda else torch.float32
    lengths = args.lengths or ([1024, 2048, 4096, 8192, 16384] if cuda else [256, 512, 1024, 2048])
    heads = args.heads or (16 if cuda else 4)
    backends = ["naive", "sdpa", "flash_torch"] + (["flash_triton"] if cuda else [])
    rows = []
    print(f"device={device} dtype={dtype} B={args.batch} H={heads} d={args.head_dim} causal "
          f"threads={args.threads} torch={torch.__version__}")
    print(f"{'T':>6} {'backend':>13} {'fwd+bwd ms':>11} {'saved MiB':>10} "
          f"{'peak MiB':>9} {'TFLOP/s':>8} {'% peak':>7}")
    for t in lengths:
        for name in backends:
            if name in ("naive", "flash_torch") and cuda and t > 8192:
                continue  # naive's T² scores / flash_torch's Python loop: minutes at 16k
            fn = get_attention(name)
            gen = torch.Generator(device=device).manual_seed(0)
            q, k, v = (torch.randn(args.batch, heads, t, args.head_dim, device=device,
                                   generator=gen, dtype=dtype).requires_grad_()
                       for _ in range(3))
            saved = saved_bytes(fn, q, k, v)
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            sec = time_fwd_bwd(fn, q, k, v, args.repeat, cuda)
            peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else float("nan")
            flops = 3.5 * 4 * args.batch * heads * t * t * args.head_dim * 0.5
            row = dict(T=t, backend=name, ms=sec * 1e3, saved_mib=saved / 2**20, peak_mib=peak,
                       tflops=flops / sec / 1e12)
            row["pct_peak"] = 100 * row["tflops"] / args.peak_tflops if cuda else float("nan")
            rows.append(row)
            print(f"{t:>6} {name:>13} {row['ms']:>11.1f} {row['saved_mib']:>10.2f} "
                  f"{peak:>9.0f} {row['tflops']:>8.3f} {row['pct_peak']:>7.1f}", flush=True)
        by = {r["backend"]: r for r in rows if r["T"] == t}
        if "flash_torch" in by:
            print(f"{'':>6} flash_torch / naive: time {by['flash_torch']['ms'] / by['naive']['ms']:.2f}x, "
                  f"saved memory {by['flash_torch']['saved_mib'] / by['naive']['saved_mib']:.3f}x")
        if "flash_triton" in by:
            print(f"{'':>6} flash_triton speed vs sdpa: {by['sdpa']['ms'] / by['flash_triton']['ms']:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
