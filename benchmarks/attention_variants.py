"""Multi-head, grouped-query and multi-query attention at equal d_model (CPU).

For each variant: parameters, training throughput (forward + backward, tokens/s), decoding
throughput with the KV cache (greedy, tokens/s) and the KV cache's bytes per token, with ratios
to multi-head attention. GQA (Ainslie et al. 2023, arXiv:2305.13245) shares each key/value head
among n_head / n_kv_head query heads; MQA (Shazeer 2019, arXiv:1911.02150) shares one.
Runs alternate between variants; medians are reported.

    python benchmarks/attention_variants.py [--threads 2] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from minillm.generation import generate
from minillm.models import GPT, GPTConfig, kv_cache_nbytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--n-head", type=int, default=8)
    parser.add_argument("--n-layer", type=int, default=4)
    parser.add_argument("--context", type=int, default=512)
    parser.add_argument("--new-tokens", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    variants = {"MHA": args.n_head, "GQA": max(1, args.n_head // 4), "MQA": 1}
    models = {}
    for name, kv in variants.items():
        torch.manual_seed(0)
        models[name] = GPT(GPTConfig(vocab_size=257, context_length=args.context, d_model=args.d_model,
                                     n_layer=args.n_layer, n_head=args.n_head, n_kv_head=kv))
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 257, (4, 256), generator=g)
    prompt = torch.randint(0, 257, (1, 16), generator=g)
    train_times = {k: [] for k in models}
    decode_times = {k: [] for k in models}
    for _ in range(args.rounds):
        for name, m in models.items():
            m.train()
            start = time.perf_counter()
            loss = m(x[:, :-1], x[:, 1:]).loss
            loss.backward()
            m.zero_grad(set_to_none=True)
            train_times[name].append(time.perf_counter() - start)
            start = time.perf_counter()
            generate(m, prompt, args.new_tokens, do_sample=False)
            decode_times[name].append(time.perf_counter() - start)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; d_model {args.d_model}, "
          f"{args.n_head} query heads, {args.n_layer} layers; train batch 4 x 255, decode "
          f"{args.new_tokens} tokens after a 16-token prompt\n")
    print(f"{'variant':<8} {'kv heads':>8} {'params':>10} {'train tok/s':>12} {'decode tok/s':>13} "
          f"{'KV bytes/token (fp32)':>22} {'vs MHA: train / decode / KV':>30}")
    base = None
    for name, m in models.items():
        c = m.config
        train = x[:, 1:].numel() / statistics.median(train_times[name])
        decode = args.new_tokens / statistics.median(decode_times[name])
        kv = kv_cache_nbytes(c.n_layer, c.n_kv_head, c.head_dim, 1, 1, 4)
        base = base or (train, decode, kv)
        print(f"{name:<8} {c.n_kv_head:>8} {m.num_params():>10,} {train:>12,.0f} {decode:>13,.0f} "
              f"{kv:>22,} {train / base[0]:>12.2f} / {decode / base[1]:.2f} / {kv / base[2]:.3f}")


if __name__ == "__main__":
    main()
