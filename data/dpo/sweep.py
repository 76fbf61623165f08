"""The learning-rate x seed sweep of chapter 13 (data/dpo/README.md, "The lr sweep").

    python data/dpo/sweep.py                    # every job below, in this order
    python data/dpo/sweep.py --only dpo:0.1     # one method

Each job is one `minillm dpo` run (`dpo_run.run_one`, the same options as
`minillm dpo --runs METHOD:BETA --lr LR --seed SEED --max-steps 150 --eval-steps 50
--eval-prompts 128 --final-samples 2`), written into data/dpo/sweep_lr{LR}_seed{SEED}.json as
soon as it ends (a killed sweep keeps its finished runs; a rerun skips them). One process loads
the SFT model, the base model of the fluency-aware gold and the reference log-probs of the pairs
once for all jobs, and measures the SFT model once (seed-0 samples; every file carries it).
Unlike `minillm dpo` with several runs, only KTO's batches carry the mismatched rows.
The jobs run in priority order: DPO at both learning rates and three seeds first, then the
relatives at lr 2e-5, then at 1e-4.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from minillm.alignment.dpo_run import DPOConfig, measure, parse_run, run_one
from minillm.alignment.pairs import PairBatches, pair_batches
from minillm.alignment.recipe import load_model_and_tokenizer
from minillm.alignment.reward import FluentGold
from minillm.data import load_corpus
from minillm.data.corpus import data_dir
from minillm.data.preference import load_preferences
from minillm.io import atomic_write_json
from minillm.training import text_bits_per_byte

OUT = Path(__file__).resolve().parent
LRS = ["2e-5", "1e-4"]
SEEDS = [0, 1, 2]
RELATIVES = ["ipo:1.0", "simpo:2.0", "kto:0.1", "orpo:0.1"]
JOBS = ([("dpo:0.1", lr, s) for lr in LRS for s in SEEDS]
        + [(m, lr, s) for lr in LRS for s in SEEDS for m in RELATIVES])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", nargs="*", help="METHOD:BETA specs to run (default: all)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    sft, tok = load_model_and_tokenizer(data_dir() / "checkpoints/shakespeare_sft_d128")
    sft.eval().requires_grad_(False)
    base, base_tok = load_model_and_tokenizer(data_dir() / "checkpoints/shakespeare_byte_d128")
    fluent = FluentGold(base.eval().requires_grad_(False), base_tok, 1.0)
    test_pairs = load_preferences("test")
    prompts = [p.prompt for p in test_pairs[:128]]
    val_text = load_corpus("shakespeare", "validation")
    encoded = {}          # mismatched -> (PairBatches of seed 0, seconds)
    sft_path = OUT / "sweep_sft.json"
    if sft_path.exists():
        sft_record = json.loads(sft_path.read_text())
    else:
        t0 = time.perf_counter()
        sft_record = {"final": measure(sft, sft, tok, prompts, 2, fluent=fluent),
                      "val_bits_per_byte": text_bits_per_byte(sft, val_text, tok)}
        sft_record["seconds"] = time.perf_counter() - t0
        atomic_write_json(sft_path, sft_record)
    print(f"SFT: gold {sft_record['final']['gold_reward']:.3f} fluent "
          f"{sft_record['final']['fluent_gold']:.3f}", flush=True)
    for spec, lr, seed in JOBS:
        if args.only and spec not in args.only:
            continue
        path = OUT / f"sweep_lr{lr}_seed{seed}.json"
        record = json.loads(path.read_text()) if path.exists() else {
            "command": "python data/dpo/sweep.py", "torch": torch.__version__, "lr": float(lr),
            "seed": seed, "fluent_weight": 1.0, "fluent_base": "shakespeare_byte_d128",
            "sft": sft_record, "runs": []}
        method, beta = parse_run(spec)
        if any((r["method"], r["beta"]) == (method, beta) for r in record["runs"]):
            continue                     # finished ("ipo:1.0" and a recorded beta of 1 match)
        kto = method == "kto"
        if kto not in encoded:
            t0 = time.perf_counter()
            b = pair_batches(tok, load_preferences("train"), test_pairs, 8,
                             sft.config.context_length, reference=sft, mismatched=kto)
            encoded[kto] = (b, time.perf_counter() - t0)
        b0, ref_s = encoded[kto]
        batches = PairBatches(b0.train, b0.val, 8, b0.ref_train, b0.ref_val, seed=seed)
        config = DPOConfig(output_dir=str(OUT), run_name=path.stem, runs=[spec],
                           max_steps=150, lr=float(lr), eval_steps=50, eval_prompts=128,
                           final_samples=2, seed=seed)
        t0 = time.perf_counter()
        print(f"{spec} lr {lr} seed {seed}", flush=True)
        out = run_one(method, beta, sft, tok, batches, prompts, config, val_text,
                      batches.state_dict(), fluent)
        out["wall_seconds"] = time.perf_counter() - t0
        out["reference_logps_seconds"] = ref_s
        record["runs"].append(out)
        atomic_write_json(path, record)
        f = out["final"]
        print(f"  done in {out['wall_seconds']:.0f} s: gold {f['gold_reward']:.3f} fluent "
              f"{f['fluent_gold']:.3f} kl {f['kl']:.2f}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
