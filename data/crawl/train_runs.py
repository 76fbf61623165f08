"""The shipped training runs of chapter 17: what cleaning does to a model, memorisation, mixture.

    OMP_NUM_THREADS=1 python data/crawl/train_runs.py [--steps 400] [--seeds 0 1 2]

1. The same small GPT (byte tokenizer), same steps and batch, trained on the raw crawl, the
   filtered crawl and the filtered + deduplicated crawl (`minillm.data.cleaning.pipeline`),
   each with every seed; bits per byte on the first VAL_BYTES of the validation plays
   (`text_bits_per_byte`).
2. Memorisation of each of those models: for the crawl's 7 planted passages (1 to 64 copies),
   the share of 50-byte windows reproduced by greedy decoding from the 64 bytes before them
   (`minillm.training.memorization.extraction_rate`), the model's bits per byte on each
   passage (a graded measure: how much better than fresh text it predicts a passage it has
   seen), and the share of 50-byte windows of unprompted samples found verbatim in the raw
   crawl (`verbatim_share`).
3. Mixture: the same model trained for `--mix-steps` on plays and pseudo-French/German/Latin
   text (`languages.foreign_text`, a seed the crawl does not use) at four foreign shares;
   loss in bits per byte on validation plays and on held-out foreign text.

4. Memorisation, focused: the crawl's 127 pages that carry a planted passage, boilerplate
   removed (by the labels), trained on as they are (a passage on 64 pages is then about a tenth
   of the text) or with every repeat after the first cut (`repeated_spans(keep_first=True)`),
   `--focus-steps` each, every seed; the same memorisation measures. (Parts 1-2 train too
   little for a model this small to memorise anything; this part gives the passages a larger
   share of the steps.) `--parts focus` (or `mixture`) reruns only that part into an existing file.

Writes data/crawl/runs.json (the settings, every run's numbers, the command, the time taken).
One thread, CPU: about 12 minutes of one core with the defaults (the settings are small because
the machine that made the shipped file was shared).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch

from minillm.data import load_corpus
from minillm.data.cleaning import (
    ByteNGramLangID,
    foreign_text,
    langid_training_set,
    load_crawl,
)
from minillm.data.cleaning.pipeline import STAGES, clean_crawl, join_pages, mixture_text
from minillm.data.cleaning.suffix_array import remove_spans, repeated_spans
from minillm.io import atomic_write_json
from minillm.models import GPT, GPTConfig
from minillm.tokenizers import ByteTokenizer
from minillm.training import TrainConfig, Trainer, text_bits_per_byte
from minillm.training.memorization import extraction_rate, sample_texts, verbatim_share
from minillm.utils import configure_threads

HERE = Path(__file__).resolve().parent
MODEL = {"context_length": 128, "d_model": 64, "n_layer": 2, "n_head": 4}
TRAIN = {"batch_size": 16, "lr": 3e-3, "min_lr": 3e-4, "warmup_steps": 50}
LANGID_BYTES = 200_000          # training-play bytes for the language identifier's "en"
FOREIGN_SEED = 4242             # the mixture's foreign text (the crawl's generator uses seed 0)
MIX_CHARS = 300_000             # characters of each mixture's training text
MIX_EVAL_BYTES = 20_000         # bytes of each validation text scored in the mixture runs
VAL_BYTES = 60_000              # the first bytes of the validation plays scored in part 1
MEMO = {"prompt_bytes": 64, "target_bytes": 50, "stride": 16}
SAMPLES = {"n": 16, "length": 300, "temperature": 1.0, "window": 50}


def passages(pages) -> dict[int, tuple[int, str]]:
    """passage id -> (copies in the crawl, its text)."""
    out = {}
    for p in pages:
        for s in p.spans:
            if s.label == "repeat":
                out.setdefault(int(s.ref), (p.copies, p.text[s.start:s.end]))
    return dict(sorted(out.items()))


def cleaned_corpora(pages) -> dict[str, str]:
    """The three training texts of `pipeline.STAGES`."""
    langid = ByteNGramLangID().fit(
        *langid_training_set(load_corpus("shakespeare", "train")[:LANGID_BYTES]))
    cleaned = clean_crawl(pages, langid)
    return {stage: join_pages(cleaned.texts(stage)) for stage in STAGES}


def train(text: str, steps: int, seed: int) -> tuple[GPT, float]:
    """A fresh model trained on `text` for `steps`; returns it and the seconds it took."""
    tok = ByteTokenizer()
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, **MODEL))
    cfg = TrainConfig(max_steps=steps, eval_interval=0, log_interval=steps, seed=seed,
                      device="cpu", progress=False, checkpoint_interval=0, **TRAIN)
    t = time.perf_counter()
    Trainer(model, tok.encode_tensor(text), None, cfg).fit()
    return model.eval(), time.perf_counter() - t


def focus_corpora(pages, min_length: int = 100) -> dict[str, str]:
    """The pages carrying a planted passage, without their boilerplate: as crawled
    ("repeated") and with every repeat after its first occurrence cut ("deduped")."""
    texts = []
    for p in pages:
        if p.passage >= 0:
            cut = sorted((s.start, s.end) for s in p.spans if s.label == "boilerplate")
            texts.append(remove_spans(p.text, cut))
    spans = repeated_spans(texts, min_length, keep_first=True)
    return {"repeated": join_pages(texts),
            "deduped": join_pages([remove_spans(t, s) for t, s in zip(texts, spans, strict=True)])}


def memorisation(model, planted: dict[int, tuple[int, str]]) -> dict[str, list[float]]:
    """The memorisation measures of one model on the planted passages (in passage order)."""
    memo = [extraction_rate(model, [text], **MEMO) for _, text in planted.values()]
    return {"extracted": [m["extracted"] for m in memo],
            "matched_bytes": [m["matched"] for m in memo],
            "windows": [m["windows"] for m in memo],
            "passage_bits_per_byte": [text_bits_per_byte(model, text)
                                      for _, text in planted.values()]}


def run_focus(result: dict, pages, planted, steps: int, seeds: list[int], out: str) -> None:
    """Part 4 of the module docstring, added to `result` under "focus"."""
    corpora = focus_corpora(pages)
    val = load_corpus("shakespeare", "validation")[:MIX_EVAL_BYTES]
    result["focus"] = {"steps": steps, "seeds": seeds, "eval_bytes": MIX_EVAL_BYTES,
                       "corpus_bytes": {k: len(t.encode("utf-8")) for k, t in corpora.items()},
                       "passage_copies": {k: [t.count(text) for _, text in planted.values()]
                                          for k, t in corpora.items()}, "runs": []}
    for name, text in corpora.items():
        for seed in seeds:
            model, seconds = train(text, steps, seed)
            run = {"corpus": name, "seed": seed, "seconds": seconds,
                   "val_bits_per_byte": text_bits_per_byte(model, val), **memorisation(model, planted)}
            result["focus"]["runs"].append(run)
            print(f"focus {name:8s} seed {seed}: passages "
                  f"{[round(b, 2) for b in run['passage_bits_per_byte']]} bits/byte, extracted "
                  f"{[round(e, 2) for e in run['extracted']]} ({seconds:.0f} s)", flush=True)
            atomic_write_json(out, result)


def run_mixture(result: dict, shares: list[float], steps: int, seeds: list[int], out: str) -> None:
    """Part 3 of the module docstring, written to `result["mixture"]`."""
    val = load_corpus("shakespeare", "validation")
    result["mixture"] = {"steps": steps, "chars": MIX_CHARS, "eval_bytes": MIX_EVAL_BYTES,
                         "runs": []}
    plays = load_corpus("shakespeare", "train")
    rng = random.Random(FOREIGN_SEED)
    langs = ("fr", "de", "la")
    foreign = "\n\n".join(foreign_text(langs[i % 3], 200, rng) for i in range(700))
    foreign_val = foreign[-MIX_EVAL_BYTES:]              # held out: never in a mixture
    foreign_train = foreign[:-MIX_EVAL_BYTES]
    for share in shares:
        for seed in seeds:
            text = mixture_text(plays, foreign_train, share, MIX_CHARS)
            model, seconds = train(text, steps, seed)
            run = {"foreign_share": share, "seed": seed, "seconds": seconds,
                   "plays_bits_per_byte": text_bits_per_byte(model, val[:MIX_EVAL_BYTES]),
                   "foreign_bits_per_byte": text_bits_per_byte(model, foreign_val)}
            result["mixture"]["runs"].append(run)
            print(f"mixture {share:.2f} seed {seed}: plays {run['plays_bits_per_byte']:.3f}, "
                  f"foreign {run['foreign_bits_per_byte']:.3f} ({seconds:.0f} s)", flush=True)
            atomic_write_json(out, result)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--mix-steps", type=int, default=150)
    parser.add_argument("--mix-shares", type=float, nargs="+", default=[0, 1 / 3, 2 / 3, 1])
    parser.add_argument("--focus-steps", type=int, default=300)
    parser.add_argument("--parts", choices=("all", "focus", "mixture"), default="all")
    parser.add_argument("--out", default=str(HERE / "runs.json"))
    args = parser.parse_args()
    configure_threads(1)
    start = time.perf_counter()
    pages = load_crawl()
    planted = passages(pages)
    if args.parts != "all":                  # rerun one part into an existing file
        result = json.loads(Path(args.out).read_text())
        t = time.perf_counter()
        if args.parts == "focus":
            run_focus(result, pages, planted, args.focus_steps, args.seeds, args.out)
        else:
            run_mixture(result, args.mix_shares, args.mix_steps, args.seeds, args.out)
        result["seconds"] = result.get("seconds", 0.0) + time.perf_counter() - t
        result["command"] += " && OMP_NUM_THREADS=1 python data/crawl/train_runs.py " + \
            " ".join(sys.argv[1:])
        atomic_write_json(args.out, result)
        return 0
    corpora = cleaned_corpora(pages)
    val = load_corpus("shakespeare", "validation")
    result = {"command": "OMP_NUM_THREADS=1 python data/crawl/train_runs.py " + " ".join(sys.argv[1:]),
              "model": MODEL, "train": {**TRAIN, "steps": args.steps}, "seeds": args.seeds, "val_bytes": VAL_BYTES,
              "memorisation": {**MEMO, "samples": SAMPLES},
              "corpus_bytes": {s: len(t.encode("utf-8")) for s, t in corpora.items()},
              "passage_copies": {s: [t.count(text) for _, text in planted.values()]
                                 for s, t in corpora.items()},
              "crawl_copies": [c for c, _ in planted.values()],
              "runs": []}
    for stage in STAGES:
        for seed in args.seeds:
            model, seconds = train(corpora[stage], args.steps, seed)
            bpb = text_bits_per_byte(model, val[:VAL_BYTES])
            samples = sample_texts(model, SAMPLES["n"], SAMPLES["length"], seed,
                                   SAMPLES["temperature"])
            run = {"stage": stage, "seed": seed, "val_bits_per_byte": bpb, "seconds": seconds,
                   **memorisation(model, planted),
                   "sample_verbatim_share": verbatim_share(samples, corpora["raw"],
                                                           SAMPLES["window"]),
                   "sample": samples[0][:200]}
            result["runs"].append(run)
            print(f"{stage:9s} seed {seed}: {bpb:.3f} bits/byte, extracted "
                  f"{[round(e, 2) for e in run['extracted']]}, samples verbatim "
                  f"{run['sample_verbatim_share']:.1%} ({seconds:.0f} s)", flush=True)
            atomic_write_json(args.out, result)
    run_focus(result, pages, planted, args.focus_steps, args.seeds, args.out)
    run_mixture(result, args.mix_shares, args.mix_steps, args.seeds, args.out)
    result["seconds"] = time.perf_counter() - start
    atomic_write_json(args.out, result)
    print(f"wrote {args.out} in {result['seconds'] / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
