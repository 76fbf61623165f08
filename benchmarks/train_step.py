"""Training-step throughput: minillm's GPT against transformers' GPT2LMHeadModel.

Both models get the same configuration and the same weights (copied through minillm's GPT-2
interop), the same batches, the same AdamW settings and the same attention kernel (SDPA). One
training step = forward + backward + AdamW step. Runs alternate (minillm, HF, minillm, ...) so
that drifting machine load hits both equally; we report the median tokens/s of each and the
ratio minillm / HF (> 1 means minillm is faster).

    python benchmarks/train_step.py                      # CPU configurations
    python benchmarks/train_step.py --gpu                # + GPT-2 124M, bf16, torch.compile, MFU
    python benchmarks/train_step.py --dry-run            # the GPU row's code on the CPU: a tiny
                                                         # GPT, bf16 autocast, compiled with the
                                                         # "eager" backend (a check, not a timing)

MFU = achieved model FLOP/s / peak, with PaLM's (App. B) count of training FLOPs per token,
6N + 12 L T d (N: non-embedding parameters + the output projection). H100 SXM dense bf16 peak:
989 TFLOP/s.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from minillm.models import GPT, GPTConfig
from minillm.training import configure_optimizer

H100_BF16_PEAK = 989e12


def make_pair(config: GPTConfig, device: torch.device):
    import transformers

    torch.manual_seed(0)
    ours = GPT(config)
    hf_cfg = transformers.GPT2Config(**ours.hf_gpt2_config(), bos_token_id=0, eos_token_id=0)
    hf_cfg._attn_implementation = "sdpa"
    hf = transformers.GPT2LMHeadModel(hf_cfg)
    assert hf.config._attn_implementation == "sdpa"
    hf.load_state_dict(ours.to_hf_gpt2_state_dict(), strict=False)
    return ours.to(device), hf.to(device)


def step_fn(model, is_hf: bool, device: torch.device, dtype: torch.dtype | None):
    opt = configure_optimizer(model, lr=1e-4, device_type=device.type)

    def step(x, y):
        ctx = torch.autocast(device.type, dtype=dtype) if dtype else torch.autocast(device.type, enabled=False)
        with ctx:
            loss = model(input_ids=x, labels=x).loss if is_hf else model(x, y).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def bench(config: GPTConfig, batch_size: int, steps: int, rounds: int, device: torch.device,
          dtype: torch.dtype | None = None, compile: bool = False,
          compile_backend: str = "inductor") -> dict:
    ours, hf = make_pair(config, device)
    runners = {"minillm": ours, "transformers": hf}
    if compile:
        runners = {k: torch.compile(v, backend=compile_backend) for k, v in runners.items()}
    steps_fn = {k: step_fn(m, k == "transformers", device, dtype) for k, m in runners.items()}
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, config.vocab_size, (batch_size, config.context_length), generator=g).to(device)
    y = torch.roll(x, -1, 1)
    for fn in steps_fn.values():  # warm-up (and compilation)
        for _ in range(2):
            fn(x, y)
    times = {k: [] for k in steps_fn}
    for _ in range(rounds):
        for name, fn in steps_fn.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(steps):
                fn(x, y)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append((time.perf_counter() - start) / steps)
    tokens = batch_size * config.context_length
    out = {name: tokens / statistics.median(t) for name, t in times.items()}
    out["ratio"] = out["minillm"] / out["transformers"]
    c = config  # PaLM: 6N + 12 L T d (Kaplan's flops_per_token counts 6 L T d)
    out["flops_per_token"] = ours.flops_per_token() + 6 * c.n_layer * c.context_length * c.d_model
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gpu", action="store_true", help="also run GPT-2 124M in bf16 on CUDA")
    parser.add_argument("--dry-run", action="store_true",
                        help="only the GPU row's code, on the CPU with a tiny model")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads")
    cpu = torch.device("cpu")
    if args.dry_run:
        print("DRY RUN: a tiny GPT on the CPU through the GPU row's code; the numbers mean nothing")
        cfg = GPTConfig(vocab_size=64, context_length=32, d_model=32, n_layer=2, n_head=2)
        gpu_row(cfg, 2, steps=1, rounds=1, device=cpu, compile_backend="eager")
        return
    configs = [
        ("course base (d=128, L=6, T=256)", GPTConfig(vocab_size=257, context_length=256, d_model=128, n_layer=6, n_head=4), 16),
        ("wider (d=384, L=6, T=256)", GPTConfig(vocab_size=257, context_length=256, d_model=384, n_layer=6, n_head=6), 8),
    ]
    print(f"\n{'configuration':<34} {'device':<6} {'minillm tok/s':>14} {'HF tok/s':>10} {'ratio':>6}")
    for name, cfg, bs in configs:
        r = bench(cfg, bs, steps=3, rounds=args.rounds, device=cpu)
        print(f"{name:<34} {'cpu':<6} {r['minillm']:>14,.0f} {r['transformers']:>10,.0f} {r['ratio']:>6.2f}")
    if args.gpu:
        if not torch.cuda.is_available():
            raise SystemExit("--gpu asked for, but no CUDA device is visible")
        cfg = GPTConfig(vocab_size=50304, context_length=1024, d_model=768, n_layer=12, n_head=12)
        gpu_row(cfg, 16, steps=10, rounds=args.rounds, device=torch.device("cuda"))


def gpu_row(cfg: GPTConfig, batch: int, steps: int, rounds: int, device: torch.device,
            compile_backend: str = "inductor") -> dict:
    """GPT-2 124M (or the dry run's tiny GPT) in bf16 autocast, compiled: tokens/s, MFU."""
    r = bench(cfg, batch, steps=steps, rounds=rounds, device=device, dtype=torch.bfloat16,
              compile=True, compile_backend=compile_backend)
    mfu = r["minillm"] * r["flops_per_token"] / H100_BF16_PEAK
    name = "GPT-2 124M, bf16, compiled" if cfg.d_model == 768 else "tiny GPT, bf16, compiled"
    print(f"{name:<34} {device.type:<6} {r['minillm']:>14,.0f} "
          f"{r['transformers']:>10,.0f} {r['ratio']:>6.2f}   minillm MFU {mfu:.1%} "
          f"(of {H100_BF16_PEAK / 1e12:.0f} TFLOP/s)")
    return r


if __name__ == "__main__":
    main()
