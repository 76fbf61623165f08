"""Draw a shipped checkpoint's training curve and write its samples, next to its weights.

Usage (from the repository root):
    python data/checkpoints/describe_checkpoint.py data/checkpoints/shakespeare_byte

Writes into the folder:
- `training_curve.png`: the training loss (per logged step) and the held-out estimates
  (`eval_history`) in bits per token against the training tokens, from `training.json`, with
  the whole-split score of `summary.val_bits_per_byte` as a dashed line for a byte-level model;
- `samples.md`: continuations of fixed prompts (greedy, and sampled at temperature 0.8 with
  fixed seeds), one torch thread, so a rerun on the same torch build gives the same text.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

from minillm.alignment.recipe import load_model_and_tokenizer
from minillm.course.plotting import COLORS, figure, finish
from minillm.generation import generate
from minillm.io import read_json

PROMPTS = ("ROMEO.\n", "First Citizen.\nBefore we proceed any further, hear me speak.\n\n",
           "KING HENRY.\n")
NEW_TOKENS = 300


def draw_curve(folder: Path) -> Path:
    record = read_json(folder / "training.json", "training.json")
    bits = 1 / math.log(2)
    fig, ax = figure(width=7.5, height=3.6)
    hist = record["history"]
    tokens_per_step = hist[-1]["tokens"] / hist[-1]["step"]
    ax.plot([h["tokens"] for h in hist], [h["loss"] * bits for h in hist], color=COLORS["baseline"],
            alpha=0.6, label="training batch")
    ev = record.get("eval_history") or []
    if ev:
        ax.plot([e["step"] * tokens_per_step for e in ev], [e["val_loss"] * bits for e in ev], "o-",
                color=COLORS["ours"], label="held-out estimate (random windows)")
    whole = record.get("summary", {}).get("val_bits_per_byte")
    per_byte = read_json(folder / "tokenizer.json", "tokenizer.json").get("type") == "byte"
    if whole is not None and per_byte:             # a byte's bits are a token's bits
        ax.axhline(whole, ls="--", color=COLORS["highlight"],
                   label=f"whole validation split: {whole:.3f}")
    ax.set_xscale("log")
    finish(ax, x="training tokens (bytes or tokens seen)", y="loss (bits per token)",
           title=f"{folder.name}: training curve")
    path = folder / "training_curve.png"
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path


def write_samples(folder: Path) -> Path:
    torch.set_num_threads(1)
    model, tok = load_model_and_tokenizer(folder)
    model.eval()
    out = [f"# {folder.name}: samples\n",
           f"Each prompt continued for {NEW_TOKENS} tokens by `describe_checkpoint.py` "
           f"(torch {torch.__version__}, one thread): greedy, then sampled at temperature 0.8 "
           "with seed 0.\n"]
    for prompt in PROMPTS:
        ids = torch.tensor([tok.encode(prompt)])
        greedy = generate(model, ids, NEW_TOKENS, do_sample=False)[0, ids.shape[1]:].tolist()
        sampled = generate(model, ids, NEW_TOKENS, do_sample=True, temperature=0.8,
                           generator=torch.Generator().manual_seed(0))[0, ids.shape[1]:].tolist()
        for how, new in (("greedy", greedy), ("temperature 0.8, seed 0", sampled)):
            out.append(f"\n## {prompt.splitlines()[0]!r}, {how}\n\n```\n{prompt}"
                       f"{tok.decode(new)}\n```\n")
    path = folder / "samples.md"
    path.write_text("".join(out))
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", type=Path)
    args = p.parse_args(argv)
    print("drew", draw_curve(args.folder))
    print("wrote", write_samples(args.folder))
    return 0


if __name__ == "__main__":
    sys.exit(main())
