"""Full fine-tuning vs LoRA at r = 1, 2, 4, 8, 64 and QLoRA, on the SFT tasks, at one budget.

    python data/lora/rank_sweep.py [--steps 250] [--out build/lora_sweep]

Every run is `minillm sft` from `data/checkpoints/shakespeare_byte` with the same data order,
steps, batch and schedule, then `--final-eval` (exact match per task on the test split, seen and
held-out phrasings, and nats/byte on the validation plays). The LoRA runs adapt all four linear
layers of every block (attn.qkv, attn.proj, mlp.fc, mlp.proj) with alpha = 2r (s = 2 at every
rank, so that rank alone changes) at lr 3e-3, and train the three chat tokens' embedding rows;
full fine-tuning trains every weight at the SFT recipe's lr 1e-3. Two more runs at r = 8:
the fused attention projection attn.qkv alone (Table 5's question of which matrices), and
DoRA on all four. Each run's
`summary.json` (trainable parameters, optimizer-state bytes, seconds per step, scores) is
gathered into data/lora/rank_sweep.json with the exact command of each run.
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
    args = parser.parse_args()
    common = ["--checkpoint", "data/checkpoints/shakespeare_byte_d128", "--max-steps", str(args.steps),
              "--batch-size", "8", "--text-rows", "0", "--warmup-steps", "25",
              "--min-lr", "1e-4", "--eval-steps", "0", "--log-interval", "25",
              "--seed", "1337", "--threads", "1", "--device", "cpu", "--final-eval"]
    results_path = ROOT / "data" / "lora" / "rank_sweep.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {"runs": {}}
    if args.table:
        print(table(results))
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


if __name__ == "__main__":
    raise SystemExit(main())
