"""Regenerate the instruction set in data/sft/ (deterministic: the same files every time).

    python data/sft/make_sft_data.py            # writes train/validation/test.jsonl here
    python data/sft/make_sft_data.py --check    # regenerates in memory and compares
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

from minillm.data.sft import build_sft_dataset, write_sft_dataset

HERE = Path(__file__).resolve().parent
PER_TASK = {"train": 1500, "validation": 100, "test": 100}
SEED = 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="compare with the shipped files")
    args = parser.parse_args()
    examples = build_sft_dataset(PER_TASK, seed=SEED)
    out = Path(tempfile.mkdtemp()) if args.check else HERE
    counts = write_sft_dataset(examples, out)
    digests = {s: hashlib.sha256((out / f"{s}.jsonl").read_bytes()).hexdigest() for s in counts}
    if args.check:
        shipped = json.loads((HERE / "manifest.json").read_text())["sha256"]
        same = shipped == digests
        print("identical to the shipped files" if same else "DIFFERENT from the shipped files")
        return 0 if same else 1
    manifest = {"per_task": PER_TASK, "seed": SEED, "examples": counts, "sha256": digests}
    (HERE / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(json.dumps(counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
