"""Decoding speed: KV cache vs none, minillm vs transformers, speculative decoding.

    .venv/bin/python benchmarks/generate.py [--threads 1] [--new-tokens 512] [--draft-steps 300]

1. A GPT-2-shaped model (random weights, context 1024) decodes `--new-tokens` tokens greedily
   from a 16-token prompt: minillm with and without its KV cache, and transformers'
   `GPT2LMHeadModel.generate` on the same weights (with its cache). The tokens are checked equal.
2. Speculative decoding on the course checkpoint (data/checkpoints/shakespeare_byte; a random
   model if it is absent) with a 1-layer draft trained here for `--draft-steps` steps: tokens/s
   of the target alone vs with the draft, and the draft's acceptance rate (greedy and sampling).

Prints a table and the ratios; not a test.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

# benchmarks/ holds scripts named like packages (tokenizers.py): keep it off the import path
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

from minillm.data import data_dir, load_corpus  # noqa: E402
from minillm.generation import generate  # noqa: E402
from minillm.generation.speculative import speculative_generate  # noqa: E402
from minillm.models import GPT, GPTConfig  # noqa: E402
from minillm.tokenizers import ByteTokenizer  # noqa: E402
from minillm.training import TrainConfig, Trainer  # noqa: E402


def timed(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def cache_and_hf(args) -> list[tuple[str, float]]:
    import transformers

    torch.manual_seed(0)
    ours = GPT(GPTConfig(vocab_size=257, context_length=1024, d_model=args.d_model,
                         n_layer=args.n_layer, n_head=args.n_head)).eval()
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        **ours.hf_gpt2_config(), bos_token_id=None, eos_token_id=None)).eval()
    hf.load_state_dict(ours.to_hf_gpt2_state_dict(), strict=False)
    x = torch.randint(0, 256, (1, 16), generator=torch.Generator().manual_seed(0))
    n = args.new_tokens
    rows = []
    t_cache, a = timed(lambda: generate(ours, x, n, do_sample=False), args.repeats)
    t_none, b = timed(lambda: generate(ours, x, n, do_sample=False, use_cache=False), 1)
    with torch.no_grad():
        t_hf, c = timed(lambda: hf.generate(x, attention_mask=torch.ones_like(x),
                                            max_new_tokens=n, do_sample=False,
                                            pad_token_id=256), args.repeats)
    assert torch.equal(a, b) and torch.equal(a, c), "cached, uncached and HF tokens differ"
    params = ours.num_params() / 1e6
    print(f"\nmodel: d_model={args.d_model} n_layer={args.n_layer} n_head={args.n_head} "
          f"({params:.2f}M non-embedding params), prompt 16, {n} new tokens, greedy, "
          f"{torch.get_num_threads()} thread(s); tokens identical in all three")
    print(f"{'decoder':<34}{'seconds':>10}{'tokens/s':>12}")
    for name, t in [("minillm, KV cache", t_cache), ("minillm, no cache", t_none),
                    ("transformers generate (cache)", t_hf)]:
        print(f"{name:<34}{t:>10.2f}{n / t:>12.1f}")
        rows.append((name, n / t))
    print(f"KV cache speed-up: {t_none / t_cache:.1f}x   minillm / transformers: "
          f"{t_hf / t_cache:.2f}x")
    return rows


def speculative(args) -> None:
    tok = ByteTokenizer()
    path = data_dir() / "checkpoints" / "shakespeare_byte"
    if (path / "model.safetensors").exists():
        target, what = GPT.from_checkpoint(path).eval(), "course checkpoint shakespeare_byte"
    else:
        torch.manual_seed(0)
        target, what = GPT(GPTConfig()).eval(), "random GPT (checkpoint absent)"
    text = load_corpus("shakespeare", "train")
    tokens = torch.tensor(tok.encode(text), dtype=torch.long)
    torch.manual_seed(0)
    draft = GPT(GPTConfig(vocab_size=target.config.vocab_size, d_model=64, n_layer=1, n_head=2,
                          context_length=target.config.context_length))
    t0 = time.perf_counter()
    Trainer(draft, tokens, config=TrainConfig(
        max_steps=args.draft_steps, batch_size=16, lr=3e-3, min_lr=3e-4, warmup_steps=20,
        eval_interval=0, device="cpu", progress=False)).fit()
    t_train = time.perf_counter() - t0
    draft.eval()
    prompt = torch.tensor([tok.encode(text[1000:1032])])
    n = min(200, target.config.context_length - prompt.size(1))
    print(f"\nspeculative decoding: target {what} ({target.num_params() / 1e6:.2f}M), draft "
          f"1 layer d_model 64 ({draft.num_params() / 1e6:.3f}M) trained {args.draft_steps} "
          f"steps in {t_train:.0f} s; {n} new tokens")
    print(f"{'mode':<10}{'gamma':>6}{'target tok/s':>14}{'spec tok/s':>12}{'speed-up':>10}"
          f"{'acceptance':>12}")
    for do_sample in (False, True):
        def target_only(do_sample=do_sample):
            return generate(target, prompt, n, do_sample=do_sample,
                            generator=torch.Generator().manual_seed(0))

        def spec(gamma, do_sample=do_sample):
            return speculative_generate(target, draft, prompt, n, do_sample=do_sample,
                                        num_assistant_tokens=gamma, return_stats=True,
                                        generator=torch.Generator().manual_seed(0))

        t_target, ref = timed(target_only, args.repeats)
        for gamma in (2, 4, 6):
            t_spec, (out, stats) = timed(lambda g=gamma: spec(g), args.repeats)
            if not do_sample:
                assert torch.equal(out, ref), "speculative greedy differs from greedy"
            print(f"{'sample' if do_sample else 'greedy':<10}{gamma:>6}{n / t_target:>14.1f}"
                  f"{n / t_spec:>12.1f}{t_target / t_spec:>9.2f}x"
                  f"{stats['acceptance_rate']:>12.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--new-tokens", type=int, default=512)
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--n-layer", type=int, default=4)
    ap.add_argument("--n-head", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--draft-steps", type=int, default=300)
    ap.add_argument("--skip-speculative", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cache_and_hf(args)
    if not args.skip_speculative:
        speculative(args)


if __name__ == "__main__":
    main()
