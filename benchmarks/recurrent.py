"""Chapter 18's recurrent LMs beside the GPT, and beside transformers on the same weights.

    .venv/bin/python benchmarks/recurrent.py [--threads 1] [--d-model 128] [--contexts 64 256 1024]

1. Training: tokens/s of a training step (forward, backward, AdamW) on (batch, seq) windows
   for the GPT, linear attention, RWKV and Mamba at the same d_model and depth.
2. Decoding vs context: after a prompt of T tokens, tokens/s of greedy one-token steps
   (GPT with its KV cache, the others with their state) and the bytes decoding holds (fp32):
   the KV cache grows with T, the states do not.
3. minillm vs transformers on the same weights (RWKV, Mamba; CPU slow path): a forward over
   (batch, seq) and greedy generate, with the logits and tokens checked equal.
4. Scoring without gradients (what `text_bits_per_byte` and the lineage table do): RWKV's and
   Mamba's chunked parallel form against the token loop (`scan="chunked"` vs `"recurrent"`;
   `"auto"` picks the loop here), same weights, logits checked equal.

Prints tables and ratios; not a test.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

# benchmarks/ holds scripts named like packages (tokenizers.py): keep it off the import path
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

from minillm.generation import generate  # noqa: E402
from minillm.generation.state import DecodeState  # noqa: E402
from minillm.models import GPT, GPTConfig  # noqa: E402
from minillm.models.convert import from_hf_mamba, from_hf_rwkv  # noqa: E402
from minillm.models.recurrent import (  # noqa: E402
    RWKV,
    LinearAttentionConfig,
    LinearAttentionLM,
    Mamba,
    MambaConfig,
    RWKVConfig,
    decoding_state_nbytes,
)


def timed(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def models(args, context: int) -> dict[str, torch.nn.Module]:
    d, n = args.d_model, args.n_layer
    common = dict(vocab_size=257, context_length=context, d_model=d, n_layer=n)
    torch.manual_seed(0)
    return {"GPT": GPT(GPTConfig(**common, n_head=args.n_head)),
            "linear attention": LinearAttentionLM(LinearAttentionConfig(**common,
                                                                        n_head=args.n_head)),
            "RWKV-4": RWKV(RWKVConfig(**common)),
            "Mamba": Mamba(MambaConfig(**common))}


def training(args) -> None:
    B, T = args.batch, args.seq
    print(f"\n1. training step, batch {B} x {T} tokens, d_model={args.d_model}, "
          f"n_layer={args.n_layer}, {torch.get_num_threads()} thread(s)")
    print(f"{'model':<18}{'params (M)':>11}{'tokens/s':>11}{'vs GPT':>8}")
    x = torch.randint(0, 257, (B, T + 1), generator=torch.Generator().manual_seed(0))
    base = None
    for name, model in models(args, T).items():
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step(model=model, opt=opt):
            loss = model(x[:, :-1], x[:, 1:]).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        step()  # warm-up
        t, _ = timed(step, args.repeats)
        tps = B * T / t
        base = base or tps
        print(f"{name:<18}{model.num_params() / 1e6:>11.3f}{tps:>11.0f}{tps / base:>7.2f}x")


def decoding(args) -> None:
    n = args.new_tokens
    print(f"\n2. decoding {n} tokens greedily after a prompt of T tokens (batch 1): tokens/s "
          "and decoding memory (fp32)")
    print(f"{'model':<18}" + "".join(f"{'T=' + str(T):>11}" for T in args.contexts)
          + "   state / KV bytes at each T")
    rows = {}
    for name, model in models(args, max(args.contexts) + n).items():
        model.eval()
        speeds, sizes = [], []
        for T in args.contexts:
            x = torch.randint(0, 257, (1, T), generator=torch.Generator().manual_seed(T))

            def run(model=model, x=x, T=T):
                state = DecodeState(model, x, None, T + n)
                logits = state.next_logits()            # prefill, not timed
                t = time.perf_counter()
                for _ in range(n):
                    state.append(logits[:, -1].argmax(-1))
                    logits = state.next_logits()
                return time.perf_counter() - t

            with torch.no_grad():
                t = min(run() for _ in range(args.repeats))
            speeds.append(n / t)
            sizes.append(decoding_state_nbytes(model.config, T + n, 1, 4))
        rows[name] = speeds
        print(f"{name:<18}" + "".join(f"{s:>11.0f}" for s in speeds) + "   "
              + " ".join(f"{b / 1024:.0f}K" for b in sizes))
    last = args.contexts[-1]
    print("at T=" + str(last) + ": " + ", ".join(
        f"{name} {rows[name][-1] / rows['GPT'][-1]:.2f}x GPT" for name in rows if name != "GPT"))


def versus_hf(args) -> None:
    import transformers

    B, T, n = args.batch, args.seq, args.new_tokens
    d, L = args.d_model, args.n_layer
    torch.manual_seed(0)
    pairs = []
    hf = transformers.RwkvForCausalLM(transformers.RwkvConfig(
        vocab_size=257, context_length=T, hidden_size=d, num_hidden_layers=L,
        bos_token_id=0, eos_token_id=0)).eval()
    pairs.append(("RWKV-4", hf, from_hf_rwkv(hf)))
    hf = transformers.MambaForCausalLM(transformers.MambaConfig(
        vocab_size=257, hidden_size=d, num_hidden_layers=L, bos_token_id=0, eos_token_id=0,
        pad_token_id=0)).eval()
    pairs.append(("Mamba", hf, from_hf_mamba(hf, context_length=T)))
    x = torch.randint(1, 257, (B, T), generator=torch.Generator().manual_seed(0))
    p = x[:1, :16]
    print(f"\n3. minillm vs transformers on the same weights: forward over {B} x {T}, greedy "
          f"generate of {n} tokens after 16 (batch 1)")
    print(f"{'model':<10}{'impl':<14}{'fwd tok/s':>11}{'gen tok/s':>11}")
    for name, hf, ours in pairs:
        with torch.no_grad():
            t_hf, ref = timed(lambda hf=hf: hf(x).logits, args.repeats)
            t_us, got = timed(lambda ours=ours: ours(x).logits, args.repeats)
            err = (ref - got).abs().max().item()
            g_hf, a = timed(lambda hf=hf: hf.generate(
                p, attention_mask=torch.ones_like(p), do_sample=False, max_new_tokens=n,
                eos_token_id=None, pad_token_id=0), args.repeats)
        g_us, b = timed(lambda ours=ours: generate(ours, p, n, do_sample=False), args.repeats)
        assert torch.equal(a, b), f"{name}: greedy tokens differ"
        print(f"{name:<10}{'transformers':<14}{B * T / t_hf:>11.0f}{n / g_hf:>11.0f}")
        print(f"{'':<10}{'minillm':<14}{B * T / t_us:>11.0f}{n / g_us:>11.0f}   "
              f"ratio {t_hf / t_us:.2f}x / {g_hf / g_us:.2f}x; max |logit diff| {err:.1e}, "
              "tokens identical")


def scoring(args) -> None:
    B, T = args.batch, args.seq
    print(f"\n4. a forward without gradients, batch {B} x {T}: chunked scan vs the token loop")
    print(f"{'model':<10}{'chunked tokens/s':>18}{'loop tokens/s':>15}{'loop / chunked':>16}")
    x = torch.randint(0, 257, (B, T), generator=torch.Generator().manual_seed(0))
    for name, model in list(models(args, T).items())[2:]:
        model.eval()
        out = {}
        for scan in ("chunked", "recurrent"):
            model.config.scan = scan
            with torch.no_grad():
                model(x)  # warm-up
                out[scan] = timed(lambda model=model: model(x).logits, args.repeats)
        torch.testing.assert_close(out["chunked"][1], out["recurrent"][1], rtol=1e-4, atol=1e-4)
        chunked, loop = B * T / out["chunked"][0], B * T / out["recurrent"][0]
        print(f"{name:<10}{chunked:>18.0f}{loop:>15.0f}{loop / chunked:>15.1f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--n-layer", type=int, default=2)
    ap.add_argument("--n-head", type=int, default=4)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--contexts", type=int, nargs="+", default=[64, 256, 1024])
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--skip-hf", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    training(args)
    decoding(args)
    scoring(args)
    if not args.skip_hf:
        versus_hf(args)


if __name__ == "__main__":
    main()
