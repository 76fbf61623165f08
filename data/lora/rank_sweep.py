"""Full fine-tuning vs LoRA at r = 1, 2, 4, 8, 64 and QLoRA, on the SFT tasks, at one budget.

    python data/lora/rank_sweep.py [--steps 250] [--out build/lora_sweep]

Every run is `minillm sft` from `data/checkpoints/shakespeare_byte` with the same data order,
steps, batch and schedule, then `--final-eval` (exact match per task on the test split, seen and
held-out phrasings, and nats/byte on the validation plays). The LoRA runs adapt all four linear
layers of every block (attn.qkv, attn.proj, mlp.fc, mlp.proj) with alpha = 2r (s = 2 at every
rank: the constant-scale choice, not rsLoRA's alpha/sqrt(r); under Adam it makes the first
update grow with r, chapter 14 section 7) at lr 3e-3, and train the three chat tokens' embedding rows;
full fine-tuning trains every weight at the SFT recipe's lr 1e-3. Two more runs at r = 8:
the fused attention projection attn.qkv alone (Table 5's question of which matrices), and
DoRA on all four. Each run's
`summary.json` (trainable parameters, optimizer-state bytes, seconds per step, scores) is
gathered into data/lora/rank_sweep.json with the exact command of each run.

    python data/lora/rank_sweep.py --heldout [--seeds 1337,1338,1339] [--only full,lora_r1]

re-trains full fine-tuning and LoRA r = 1, 2, 4, 8 and 64 (the same recipe, no --final-eval),
and the scale-controlled runs r = 1 and 64 at alpha = 16 (`scale_runs`: s = 16/r), from
three seeds (each seed its own data order and A initialisation, shared by every run of that
seed, so runs pair by seed), exports each model, and scores it with `score`: the mean
cross-entropy of the response tokens of the SFT *test* split (seen phrasings, every task,
1,334 examples minus held-out phrasings; nats per response token), and bits per byte on the
first 8,192 bytes of the validation plays (the slice the chapter's live runs use), the base
model by the same two scorers. Results go to data/lora/rank_sweep_heldout.json.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TARGETS = "attn.qkv,attn.proj,mlp.fc,mlp.proj"


def runs(steps: int) -> dict[str, list[str]]:
    lora = ["--lora-targets", TARGETS, "--lr", "3e-3"]
    out = {"full": ["--lr", "1e-3"]}
    for r in (1, 2, 4, 8, 64):
        out[f"lora_r{r}"] = ["--lora-r", str(r), "--lora-alpha", str(2 * r), *lora]
    out["qlora_r8"] = ["--lora-r", "8", "--lora-alpha", "16", *lora, "--qlora"]
    # which matrices (LoRA's Table 5): the attention input projection alone, at the same r
    out["lora_r8_qkv_only"] = ["--lora-r", "8", "--lora-alpha", "16", "--lora-targets",
                               "attn.qkv", "--lr", "3e-3"]
    out["dora_r8"] = ["--lora-r", "8", "--lora-alpha", "16", *lora, "--lora-dora"]
    return out


HELDOUT_RUNS = ("full", "lora_r1", "lora_r2", "lora_r4", "lora_r8", "lora_r64")


def scale_runs() -> dict[str, list[str]]:
    """The held-out sweep's scale-controlled runs: constant alpha = 16, so s = alpha / r falls
    as 1/r and the first Adam step of s*B@A stays flat in r (chapter 14 section 7), anchored
    at r = 8 (s = 2, the alpha = 2r run itself)."""
    lora = ["--lora-targets", TARGETS, "--lr", "3e-3"]
    return {f"lora_r{r}_alpha16": ["--lora-r", str(r), "--lora-alpha", "16", *lora]
            for r in (1, 64)}
EVAL_BYTES = 8_192


def score(export: Path | None, eval_bytes: int = EVAL_BYTES) -> dict:
    """The one scorer of the held-out sweep: response loss on the SFT test split (seen
    phrasings) and bits per byte on the first `eval_bytes` bytes of the validation plays.
    `export` is a `minillm sft --export-dir` folder (a full model or an adapter); None scores
    the chat-prepared base model."""
    import torch
    import torch.nn.functional as F

    from minillm.alignment.chat import ChatTemplate
    from minillm.alignment.recipe import load_model_and_tokenizer, prepare_chat_model
    from minillm.alignment.sft import IGNORE, pack_batch, pack_rows, tokenize_example
    from minillm.data import load_corpus
    from minillm.data.sft import load_sft
    from minillm.peft import load_adapter
    from minillm.training.evaluate import text_bits_per_byte

    base_dir = ROOT / "data" / "checkpoints" / "shakespeare_byte_d128"
    if export is not None and not (export / "adapter_config.json").exists():
        model, tok = load_model_and_tokenizer(export)
    else:
        model, tok = prepare_chat_model(*load_model_and_tokenizer(base_dir))
        if export is not None:
            load_adapter(model, export)
    model.eval()
    seq_len = model.config.context_length
    template = ChatTemplate()
    seqs = [tokenize_example(tok, template, e.prompt, e.response, seq_len)
            for e in load_sft("test", heldout=False)]
    rows = pack_rows([len(x) for x, _ in seqs], seq_len)
    nats, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(rows), 16):
            b = pack_batch(seqs, seq_len, rows=rows[i:i + 16])
            logits = model(b["input_ids"], attention_mask=b["attention_mask"],
                           position_ids=b["position_ids"]).logits
            labels = b["labels"]
            nats += F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE,
                                    reduction="sum").item()
            count += int((labels != IGNORE).sum())
    text = load_corpus("shakespeare", "validation")[:eval_bytes]
    return {"test_response_nats_per_token": nats / count, "test_response_tokens": count,
            "test_examples": len(seqs), "eval_bytes": eval_bytes,
            "val_bits_per_byte_slice": text_bits_per_byte(model, text, tok)}


TASKS = ("speaker", "upper", "reverse_words", "count_words", "modernise", "arithmetic")


def table(results: dict) -> str:
    """The README's markdown table, from rank_sweep.json."""
    head = ("| run | steps | trainable params | optimizer state | s/step | "
            + " | ".join(TASKS) + " | mean | held-out | val bits/byte |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for name, r in results["runs"].items():
        em, held = r["test_exact_match"], r["test_exact_match_heldout_phrasings"]
        lines.append(
            f"| {name} | {r['step']} | {r['trainable_params']:,} | {r['optimizer_state_bytes'] / 1e6:.2f} MB | "
            f"{r['seconds_per_step']:.3f} | "
            + " | ".join(f"{100 * em.get(t, 0):.0f}%" for t in TASKS)
            + f" | {100 * em['mean']:.1f}% | {100 * held['mean']:.1f}% | "
            f"{r['val_nats_per_byte'] / math.log(2):.3f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=250)
    parser.add_argument("--out", default="build/lora_sweep")
    parser.add_argument("--only", default=None, help="comma-separated run names")
    parser.add_argument("--suffix", default="", help="appended to the run names (e.g. _500)")
    parser.add_argument("--table", action="store_true", help="print the README table and stop")
    parser.add_argument("--heldout", action="store_true",
                        help="the held-out-loss sweep: seeds x HELDOUT_RUNS, scored by `score`")
    parser.add_argument("--seeds", default="1337,1338,1339")
    parser.add_argument("--results", default=None,
                        help="the held-out sweep's JSON (default data/lora/rank_sweep_heldout.json;"
                             " one per process when seeds run in parallel)")
    parser.add_argument("--merge", nargs="+", default=None,
                        help="merge these held-out JSON files into --results and stop")
    args = parser.parse_args()
    if args.merge:
        path = Path(args.results or ROOT / "data" / "lora" / "rank_sweep_heldout.json")
        merged = json.loads(path.read_text()) if path.exists() else {"runs": {}}
        for extra in args.merge:
            part = json.loads(Path(extra).read_text())
            merged.setdefault("base", part.get("base"))
            merged["runs"] |= part["runs"]
        path.write_text(json.dumps(merged, indent=1) + "\n")
        return 0
    if args.heldout:
        return heldout(args)
    common = ["--checkpoint", "data/checkpoints/shakespeare_byte_d128", "--max-steps", str(args.steps),
              "--batch-size", "8", "--text-rows", "0", "--warmup-steps", "25",
              "--min-lr", "1e-4", "--eval-steps", "0", "--log-interval", "25",
              "--seed", "1337", "--threads", "1", "--device", "cpu", "--final-eval"]
    results_path = ROOT / "data" / "lora" / "rank_sweep.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {"runs": {}}
    if args.table:
        print(table(results))
        held = results_path.with_name("rank_sweep_heldout.json")
        if held.exists():
            print("\n" + heldout_table(json.loads(held.read_text())))
        return 0
    chosen = runs(args.steps)
    if args.only:
        chosen = {k: v for k, v in chosen.items() if k in args.only.split(",")}
    for name, extra in chosen.items():
        name += args.suffix
        out_dir = Path(args.out) / name
        cmd = [sys.executable, "-m", "minillm", "sft", *common, "--output-dir", str(out_dir),
               *extra]
        start = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        summary = json.loads((ROOT / out_dir / "summary.json").read_text())
        summary["wall_seconds"] = time.perf_counter() - start
        summary["command"] = "python -m minillm sft " + " ".join(cmd[4:])
        results["runs"][name] = summary
        results_path.write_text(json.dumps(results, indent=1) + "\n")
        print(name, json.dumps({k: summary[k] for k in ("trainable_params", "seconds_per_step")}
                               | {"mean": summary["test_exact_match"]["mean"]}), flush=True)
    return 0


T975 = {2: 12.706, 3: 4.303, 4: 3.182, 5: 2.776}  # Student t, two-sided 95%, by sample size


def heldout_table(results: dict) -> str:
    """The README's table of the held-out sweep: mean ± 95% t-interval over seeds, and the
    paired (same-seed) difference from full fine-tuning."""
    import statistics

    by = {}
    for r in results["runs"].values():
        by.setdefault(r["name"], {})[r["seed"]] = r
    seeds = sorted(by["full"])

    def ci(xs):
        if len(xs) < 2:
            return f"{xs[0]:.4f}"
        return (f"{statistics.mean(xs):.4f} ± "
                f"{T975[len(xs)] * statistics.stdev(xs) / math.sqrt(len(xs)):.4f}")

    base = results["base"]
    lines = ["| run | r, α (s = α/r) | seeds | trainable params | test response loss (nats/token) | "
             "LoRA − full, same seed | val bits/byte (first 8,192 bytes) |",
             "|---|---|---|---|---|---|---|"]
    order = [*HELDOUT_RUNS, *scale_runs()]
    for name in sorted(by, key=lambda n: order.index(n) if n in order else len(order)):
        recs = by[name]
        lora = next(iter(recs.values())).get("lora")
        scale = "–" if lora is None else f"{lora['r']}, {lora['alpha']:g} ({lora['alpha'] / lora['r']:g})"
        ss = [s for s in seeds if s in recs]
        loss = [recs[s]["test_response_nats_per_token"] for s in ss]
        diff = ("–" if name == "full" else
                ci([recs[s]["test_response_nats_per_token"]
                    - by["full"][s]["test_response_nats_per_token"] for s in ss]))
        lines.append(f"| {name} | {scale} | {len(ss)} | {recs[ss[0]]['trainable_params']:,} | {ci(loss)} | "
                     f"{diff} | {ci([recs[s]['val_bits_per_byte_slice'] for s in ss])} |")
    lines.append(f"| base | – | – | – | {base['test_response_nats_per_token']:.4f} | – | "
                 f"{base['val_bits_per_byte_slice']:.4f} |")
    return "\n".join(lines)


def heldout(args) -> int:
    """Train (export, no --final-eval) and score each (seed, run); resumable: a scored pair in
    the JSON is skipped, an exported but unscored one is rescored without retraining."""
    path = Path(args.results or ROOT / "data" / "lora" / "rank_sweep_heldout.json")
    results = json.loads(path.read_text()) if path.exists() else {"runs": {}}
    if "base" not in results:
        results["base"] = score(None)
        path.write_text(json.dumps(results, indent=1) + "\n")
    every = runs(args.steps) | scale_runs()
    chosen = {k: every[k] for k in (*HELDOUT_RUNS, *scale_runs())}
    if args.only:  # in the order given
        chosen = {k: chosen[k] for k in args.only.split(",")}
    for seed in (int(s) for s in args.seeds.split(",")):
        for name, extra in chosen.items():
            key = f"{name}_s{seed}"
            if key in results["runs"]:
                continue
            out_dir, export = Path(args.out) / key, Path(args.out) / (key + "_export")
            common = ["--checkpoint", "data/checkpoints/shakespeare_byte_d128",
                      "--max-steps", str(args.steps), "--batch-size", "8", "--text-rows", "0",
                      "--warmup-steps", "25", "--min-lr", "1e-4", "--eval-steps", "0",
                      "--log-interval", "50", "--seed", str(seed), "--threads", "1",
                      "--device", "cpu", "--output-dir", str(out_dir),
                      "--export-dir", str(export)]
            cmd = [sys.executable, "-m", "minillm", "sft", *common, *extra]
            start = time.perf_counter()
            if not (ROOT / export).exists():
                subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
            train_wall = time.perf_counter() - start
            summary = json.loads((ROOT / out_dir / "summary.json").read_text())
            t = time.perf_counter()
            summary |= score(ROOT / export)
            summary |= {"name": name, "seed": seed, "train_wall_seconds": train_wall,
                        "score_seconds": time.perf_counter() - t,
                        "command": "python -m minillm sft " + " ".join(cmd[4:])}
            results["runs"][key] = summary
            path.write_text(json.dumps(results, indent=1) + "\n")
            print(key, f"{summary['test_response_nats_per_token']:.4f} nats/token",
                  f"{summary['val_bits_per_byte_slice']:.3f} bits/byte",
                  f"train {train_wall:.0f} s, score {summary['score_seconds']:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
