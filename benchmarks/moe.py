"""MoE layer speed: minillm's vectorised MoE (E=8, k=2) against a dense MLP of equal active
parameters, the per-token teaching loop, and transformers' MixtralSparseMoeBlock on the same
weights; then the all-to-all time per step of expert parallelism over 2 gloo processes.

    .venv/bin/python benchmarks/moe.py [--threads 1] [--tokens 2048] [--d-model 256]
    python benchmarks/moe.py --device cuda --tokens 16384 --d-model 1024 --d-ff 2048 --skip-a2a
    python benchmarks/moe.py --dry-run        # the CUDA rows' code on the CPU, tiny (a check)

On CUDA the layers run in bf16 and the MoE is timed with both dispatch paths: "grouped" (grouped
GEMMs, no host sync: the default there) and "loop" (one matmul per expert after a host sync).

Forward + backward tokens/s (best of --repeats). The dense MLP is a SwiGLU of width 2 * d_ff
(k = 2 experts of width d_ff are active per token). Prints a table and the ratios; not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

from minillm.models.mlp import SwiGLU  # noqa: E402
from minillm.models.moe import MoE, moe_reference  # noqa: E402

EP_CHECK = Path(__file__).resolve().parents[1] / "scripts/distributed/expert_parallel_check.py"


def tokens_per_s(fn, x, repeats: int, backward: bool = True) -> float:
    best = float("inf")
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    for _ in range(repeats + 1):
        xi = x.detach().requires_grad_(backward)
        sync()
        t = time.perf_counter()
        y = fn(xi)
        if backward:
            y.float().sum().backward()
        sync()
        best = min(best, time.perf_counter() - t)
    return x.shape[0] * x.shape[1] / best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--tokens", type=int, default=2048)
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--d-ff", type=int, default=512)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--skip-a2a", action="store_true")
    p.add_argument("--device", default="cpu", help="cpu (float32) or cuda (bfloat16)")
    p.add_argument("--dry-run", action="store_true",
                   help="tiny shapes on the CPU through every row's code, both dispatch paths")
    a = p.parse_args()
    if a.dry_run:
        a.tokens, a.d_model, a.d_ff, a.repeats, a.skip_a2a, a.device = 512, 32, 64, 1, True, "cpu"
        print("DRY RUN: tiny shapes on the CPU; the numbers mean nothing")
    dev = torch.device(a.device)
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    E, k, d, f = 8, 2, a.d_model, a.d_ff
    moe = MoE(d, E, f, top_k=k)
    dense = SwiGLU(d, k * f)
    x = torch.randn(a.tokens // 256, 256, d)
    import transformers
    from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock

    hf = MixtralSparseMoeBlock(transformers.MixtralConfig(
        hidden_size=d, intermediate_size=f, num_local_experts=E, num_experts_per_tok=k))
    with torch.no_grad():
        hf.gate.weight.copy_(moe.router)
        hf.experts.gate_up_proj.copy_(torch.cat([moe.experts.w_in, moe.experts.w_up], 1))
        hf.experts.down_proj.copy_(moe.experts.w_out)
        torch.testing.assert_close(hf(x.clone()), moe(x).hidden, atol=1e-5, rtol=1e-4)
    moe, dense, hf, x = (m.to(dev, dtype) for m in (moe, dense, hf, x))
    layer = lambda z: moe(z).hidden  # noqa: E731 - the layer returns an MLPOutput
    rows = {}
    if dev.type == "cuda" or a.dry_run:
        for impl in ("grouped", "loop"):
            moe.impl = impl
            rows[f"minillm MoE, {impl} dispatch"] = tokens_per_s(layer, x, a.repeats)
        moe.impl = None
        print(f"  dispatch on {dev.type} by default: {moe.dispatch_impl(x)}")
    rows |= {
        "minillm MoE (E=8, k=2)": tokens_per_s(layer, x, a.repeats),
        "dense SwiGLU, equal active params": tokens_per_s(dense, x, a.repeats),
        "transformers MixtralSparseMoeBlock": tokens_per_s(hf, x, a.repeats),
        "per-token teaching loop (forward only)": tokens_per_s(
            lambda z: moe_reference(moe, z), x[:1, :64], 0, backward=False),
    }
    rows["minillm MoE forward only"] = tokens_per_s(layer, x, a.repeats, backward=False)
    print(f"{a.tokens} tokens, d_model={d}, d_ff={f}, {dev.type} {dtype}, threads={a.threads}, "
          "forward+backward")
    for name, v in rows.items():
        print(f"  {name:42s} {v:12,.0f} tokens/s")
    m = rows["minillm MoE (E=8, k=2)"]
    print(f"  MoE / dense      {m / rows['dense SwiGLU, equal active params']:.2f}x  (target >= 0.6x)")
    print(f"  MoE / Mixtral    {m / rows['transformers MixtralSparseMoeBlock']:.2f}x  (target >= 1.0x)")
    print(f"  MoE fwd / loop   {rows['minillm MoE forward only'] / rows['per-token teaching loop (forward only)']:.0f}x")
    if a.skip_a2a:
        return
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench.json"
        subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                        "--nproc_per_node=2", str(EP_CHECK), "--bench", str(out), "--n-expert",
                        "8", "--top-k", "2", "--d-model", str(d), "--d-ff", str(f), "--batch",
                        str(a.tokens // 2 // 256), "--seq", "256", "--steps", "10"], check=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True)
        res = json.loads(out.read_text())
    for r in res:
        print(f"  expert parallel, 2 gloo processes, rank {r['rank']}: step {r['step_ms']:.1f} ms, "
              f"all-to-all {r['all_to_all_ms']:.1f} ms ({r['tokens_per_rank']} tokens/rank)")


if __name__ == "__main__":
    main()
