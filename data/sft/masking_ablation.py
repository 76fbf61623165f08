"""Chapter 11's SFT ablations at a length that can separate the arms: the loss mask, and
paraphrase augmentation.

    OMP_NUM_THREADS=1 python data/sft/masking_ablation.py [--steps 400] [--seeds 1 2 3]
    OMP_NUM_THREADS=1 python data/sft/masking_ablation.py --arms "12 phrasings" \
        --out phrasing_ablation.json

Six runs of `minillm sft` from data/checkpoints/shakespeare_byte on every task of data/sft/:
the loss on the response only (the default) against the loss on every token
(`--train-on-prompt`), three seeds each, the shipped SFT recipe otherwise (batch 12, no plain
text rows so the arms differ only in the mask, lr 1e-3 -> 1e-4 cosine, 50 warm-up steps) but
`--steps` steps. Each run ends with `--final-eval`: exact match on the test split's seen and
held-out phrasings. Writes data/sft/masking_ablation.json; a finished run (its training.json
exists) is not rerun, so the script resumes after an interruption.

The arm "12 phrasings" is the response-only arm on a paraphrase-augmented train split: the same
inputs and responses, each prompt worded by one of the four seen phrasings or eight more
(`build_sft_dataset(extra_phrasings=8)`, written to the work folder; validation and test are the
shipped files' exactly, the held-out phrasing still unseen). Its control is masking_ablation.json's
"response only" arm (same seeds, steps and recipe).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
ARMS = {"response only": [], "all tokens": ["--train-on-prompt"], "12 phrasings": []}
EXTRA = {"12 phrasings": 8}   # arms trained on build_sft_dataset(extra_phrasings=N)


def augmented_data(folder: Path, extra: int) -> Path:
    """The instruction set of data/sft/ with `extra` more train phrasings, written to `folder`."""
    from minillm.data.sft import build_sft_dataset, write_sft_dataset

    sys.path.insert(0, str(HERE))
    from make_sft_data import PER_TASK, SEED

    if not (folder / "train.jsonl").is_file():
        write_sft_dataset(build_sft_dataset(PER_TASK, seed=SEED, extra_phrasings=extra), folder)
    return folder


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--arms", nargs="+", default=["response only", "all tokens"],
                        choices=tuple(ARMS))
    parser.add_argument("--out", default="masking_ablation.json", help="file name in data/sft/")
    parser.add_argument("--work-dir", default=str(ROOT / "build" / "masking_ablation"))
    args = parser.parse_args()
    work = Path(args.work_dir)
    runs = []
    for seed in args.seeds:
        for arm in args.arms:
            flags = list(ARMS[arm])
            if arm in EXTRA:
                data = augmented_data(work / f"data_extra{EXTRA[arm]}", EXTRA[arm])
                flags += ["--data", str(data)]
            tag = {"response only": "response", "all tokens": "prompt"}.get(arm, arm.replace(" ", "_"))
            out = work / f"{tag}_s{seed}"
            record = out / "export" / "training.json"
            if not record.is_file():
                cmd = [sys.executable, "-m", "minillm", "sft",
                       "--checkpoint", str(ROOT / "data/checkpoints/shakespeare_byte"),
                       "--output-dir", str(out / "run"), "--export-dir", str(out / "export"),
                       "--max-steps", str(args.steps), "--batch-size", "12", "--text-rows", "0",
                       "--lr", "1e-3", "--min-lr", "1e-4", "--warmup-steps", "50",
                       "--eval-steps", str(args.steps), "--eval-batches", "5",
                       "--checkpoint-interval", "100", "--log-steps", "50",
                       "--seed", str(seed), "--threads", "1", "--device", "cpu",
                       "--final-eval", "--resume", *flags]
                subprocess.run(cmd, check=True)
            summary = json.loads(record.read_text())["summary"]
            runs.append({"arm": arm, "seed": seed, "steps": summary["step"],
                         "final_val_loss": summary["final_val_loss"],
                         "test_exact_match": summary["test_exact_match"],
                         "test_exact_match_heldout_phrasings":
                             summary["test_exact_match_heldout_phrasings"],
                         "seconds": summary["train_seconds"]})
            print(arm, seed, summary["test_exact_match"]["mean"], flush=True)
    seeds = " ".join(map(str, args.seeds))
    recipe = f"python data/sft/masking_ablation.py --steps {args.steps} --seeds {seeds}"
    if args.out != "masking_ablation.json":
        recipe += " --arms " + " ".join(f'"{a}"' for a in args.arms) + f" --out {args.out}"
    result = {"recipe": recipe, "start": "data/checkpoints/shakespeare_byte", "runs": runs}
    (HERE / args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
