"""Regenerate the preference set in data/preference/ from the SFT checkpoint.

    python data/preference/make_preference_data.py [--checkpoint data/checkpoints/shakespeare_sft_d128]
    python data/preference/make_preference_data.py --checkpoint data/checkpoints/shakespeare_sft \
        --out-dir data/preference/shakespeare_sft

Prompts: first lines of speeches ("Continue this speech: ..."), from the training plays for
train.jsonl and from the test plays for test.jsonl. Two continuations per prompt are sampled
from the SFT model (temperature 1, seeded); the gold reward is the sentiment lexicon of
minillm.data.preference; a pair whose two continuations have equal gold rewards (a coin-flip
label, no preference) has its second continuation resampled up to RESAMPLE_TIES times and is
dropped if still tied, and prompts are drawn until N_PAIRS untied pairs exist; labels are drawn
from Bradley-Terry with beta = BETA. Sampling runs
on the CPU with one thread, so a rerun on the same torch version gives the same files.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import torch

from minillm.alignment.recipe import load_model_and_tokenizer, sample_chat
from minillm.data.preference import build_preference_pairs, preference_prompts, write_preferences
from minillm.data.sft import play_texts, speeches

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
N_PAIRS = {"train": 1000, "test": 200}
BETA = 4.0
SEED = 0
RESAMPLE_TIES = 4


def first_lines(split: str) -> list[tuple[str, str]]:
    out = []
    for play, text in play_texts(split).items():
        for s in speeches(play, text):
            line = s.lines[0]
            if 10 <= len(line) <= 50 and line.isascii() and "[" not in line:
                out.append((line, play))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoint", default=str(ROOT / "data/checkpoints/shakespeare_sft_d128"))
    parser.add_argument("--out-dir", default=str(HERE),
                        help="where train.jsonl, test.jsonl and manifest.json go (default: "
                             "data/preference/, the set chapters 12-13 read)")
    parser.add_argument("--train-pairs", type=int, default=N_PAIRS["train"],
                        help="untied training pairs to make (chapter 12's reward-model data "
                             "scaling uses 8,000 in build/)")
    parser.add_argument("--splits", nargs="+", default=list(N_PAIRS), choices=tuple(N_PAIRS))
    args = parser.parse_args()
    sizes = {split: args.train_pairs if split == "train" else n
             for split, n in N_PAIRS.items() if split in args.splits}
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    model, tok = load_model_and_tokenizer(args.checkpoint)
    counter = {"seed": SEED}

    def sample(prompts: list[str]) -> list[str]:  # a fresh seed per call: the two samples differ
        counter["seed"] += 1
        return sample_chat(model, tok, prompts, temperature=1.0, seed=counter["seed"])

    digests, stats = {}, {}
    train_lines = {line for line, _ in first_lines("train")}
    for split, n in sizes.items():
        lines = first_lines(split)
        if split != "train":  # a line common to several plays ("I will, my lord.") stays in train
            lines = [(line, play) for line, play in lines if line not in train_lines]
        prompts = preference_prompts(lines, None, seed=SEED)  # all lines, shuffled
        pairs = build_preference_pairs(prompts, sample, split, beta=BETA, seed=SEED, n=n,
                                       resample_ties=RESAMPLE_TIES)
        path = out / f"{split}.jsonl"
        write_preferences(pairs, path)
        digests[split] = hashlib.sha256(path.read_bytes()).hexdigest()
        agree = sum(p.gold_chosen > p.gold_rejected for p in pairs)
        ties = sum(p.gold_chosen == p.gold_rejected for p in pairs)
        used = prompts.index((pairs[-1].prompt, pairs[-1].play)) + 1
        stats[split] = {"pairs": len(pairs), "prompts_tried": used,
                        "tied_pairs_dropped": used - len(pairs),
                        "label_agrees_with_gold": agree,
                        "gold_ties": ties,
                        "mean_gold_reward": sum(p.gold_chosen + p.gold_rejected
                                                for p in pairs) / (2 * len(pairs))}
    manifest = {"checkpoint": Path(args.checkpoint).name, "beta": BETA, "seed": SEED,
                "resample_ties": RESAMPLE_TIES,
                "torch": torch.__version__, "stats": stats, "sha256": digests}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(json.dumps(stats, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
