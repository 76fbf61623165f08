"""Benchmark minillm's Kneser-Ney n-gram models against NLTK's `KneserNeyInterpolated`.

    python benchmarks/ngram.py                      # order 3, 8000 train lines, 300 test lines
    python benchmarks/ngram.py --order 4 --train-lines 4000

1. Same data, same order, same events: PTB-style Shakespeare lines (`ptb_sentences`), words
   seen once in the training subset replaced by `<unk>` in both training and test text (NLTK's
   bottom level has no uniform floor, so a word it never saw would get probability 0). Both
   libraries count the same padded sequences (N-1 `<s>`, one `</s>`) and score the same
   predictions: every word of every test line and its `</s>`.
2. NLTK scans every higher-order n-gram for each continuation count it needs, so it can only
   score a subset; minillm is timed on that subset and then on the full splits.

Definitional differences (see docs/benchmarks/ngram.md): NLTK uses one fixed discount (0.1)
for every order, ends its recursion at the continuation unigram (no uniform floor), computes a
lower order's backoff weight from raw counts over a continuation total, and counts the
pseudo n-grams "<s> <s> ..." that minillm skips. `kneser_ney(D=0.1)` is minillm's closest match.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time
from collections import Counter

from minillm.data import load_corpus
from minillm.ngram import BOS, EOS, UNK, NGramLM, ptb_sentences


def prepare(train_lines: int, test_lines: int):
    train = ptb_sentences(load_corpus("shakespeare", "train"))[:train_lines]
    test = ptb_sentences(load_corpus("shakespeare", "validation"))[:test_lines]
    counts = Counter(w for s in train for w in s)
    keep = {w for w, c in counts.items() if c >= 2}
    train = [[w if w in keep else UNK for w in s] for s in train]
    test = [[w if w in keep else UNK for w in s] for s in test]
    return train, test


def nltk_run(train, test, order: int, discount: float):
    from nltk.lm import KneserNeyInterpolated
    from nltk.util import everygrams

    def pad(s):
        return [BOS] * (order - 1) + s + [EOS]

    start = time.perf_counter()
    lm = KneserNeyInterpolated(order, discount=discount)
    lm.fit([everygrams(pad(s), max_len=order) for s in train], [w for s in train for w in pad(s)])
    fit_s = time.perf_counter() - start
    events = [tuple(p[i - order + 1:i + 1]) for s in test
              for p in [pad(s)] for i in range(order - 1, len(p))]
    start = time.perf_counter()
    logs = [lm.logscore(g[-1], g[:-1]) for g in events]      # log2
    score_s = time.perf_counter() - start
    return 2 ** (-sum(logs) / len(logs)), fit_s, score_s, len(events)


def minillm_run(train, test, order: int, smoothing: str, **kwargs):
    start = time.perf_counter()
    lm = NGramLM(order, smoothing, **kwargs).fit(train)
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    logp = lm.log_probs(test)
    score_s = time.perf_counter() - start
    return math.exp(-logp.mean()), fit_s, score_s, len(logp)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--order", type=int, default=3)
    ap.add_argument("--train-lines", type=int, default=8000)
    ap.add_argument("--test-lines", type=int, default=300)
    ap.add_argument("--discount", type=float, default=0.1, help="NLTK's fixed discount")
    ap.add_argument("--skip-full", action="store_true", help="skip the full-corpus timing")
    args = ap.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"python {platform.python_version()}")
    train, test = prepare(args.train_lines, args.test_lines)
    print(f"subset: {len(train)} train lines ({sum(map(len, train)):,} words), {len(test)} test "
          f"lines; order {args.order}; words seen once -> <unk>\n")
    rows = [("NLTK KneserNeyInterpolated (D=0.1)",
             *nltk_run(train, test, args.order, args.discount))]
    for name, sm, kw in [("minillm kneser_ney (D=0.1)", "kneser_ney", {"discount": args.discount}),
                         ("minillm kneser_ney (D estimated)", "kneser_ney", {}),
                         ("minillm modified_kneser_ney", "modified_kneser_ney", {})]:
        rows.append((name, *minillm_run(train, test, args.order, sm, **kw)))
    print(f"{'model':36s} {'perplexity':>10s} {'fit s':>8s} {'score s':>9s} {'events':>7s}")
    for name, ppl, fit_s, score_s, n in rows:
        print(f"{name:36s} {ppl:10.2f} {fit_s:8.3f} {score_s:9.3f} {n:7d}")
    nl, mi = rows[0], rows[1]
    print(f"\nspeed ratio NLTK / minillm (same model family, D=0.1): fit {nl[2] / mi[2]:.0f}x, "
          f"score {nl[3] / mi[3]:.0f}x, total {(nl[2] + nl[3]) / (mi[2] + mi[3]):.0f}x")
    print(f"perplexity ratio NLTK / minillm (D=0.1): {nl[1] / mi[1]:.3f}")
    if args.skip_full:
        return
    full_train = ptb_sentences(load_corpus("shakespeare", "train"))
    full_valid = ptb_sentences(load_corpus("shakespeare", "validation"))
    print("\nminillm alone, full splits (10k vocabulary):")
    for order in (3, 5):
        ppl, fit_s, score_s, n = minillm_run(full_train, full_valid, order, "modified_kneser_ney",
                                             max_vocab=10_000)
        print(f"  {order}-gram modified KN: perplexity {ppl:.1f}, fit {fit_s:.2f} s on "
              f"{sum(map(len, full_train)):,} words, score {score_s:.2f} s on {n:,} events")
    from minillm.ngram import tokenize_words

    text = load_corpus("shakespeare", "train")
    start = time.perf_counter()
    lm = NGramLM(5, "modified_kneser_ney", tokenizer="words").fit_text(text)
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    bpb = lm.bits_per_byte(load_corpus("shakespeare", "validation"))
    print(f"  5-gram modified KN, lossless word tokens ({len(tokenize_words(text)):,} tokens): "
          f"fit {fit_s:.2f} s, validation {bpb:.3f} bits/byte in {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
