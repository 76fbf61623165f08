"""Recipe: test-set contamination on purpose -> data/evaluation/contamination.json (chapter 21).

    nice -n 15 env OMP_NUM_THREADS=1 MINILLM_NUM_THREADS=1 python data/evaluation/contamination.py

The eval set is `shakespeare_play_mc` (which of four held-out plays a speech is from; the base
model never saw these plays). Per seed, half of each play's items become *members*. Two
fine-tunes of the byte-level base model (data/checkpoints/shakespeare_byte_d128) run the same
`STEPS` AdamW steps from the same weights:

- clean: every row a random window of the training plays;
- contaminated: `MEMBER_ROWS` of each batch's `BATCH` rows are member items written out with
  their answer, as the task renders them ("<speech>\\nThis speech is from the play: <title>"),
  the others as clean.

Measured for each model: the task's accuracy on members and on non-members (acc, by the
continuation log-likelihood, as lm-eval scores it: `minillm.evaluation.lm_eval_backend.
continuation_logprobs`), and two detectors of membership: 13-gram overlap of each item with the
fine-tuning data (needs the data), and Min-K% Prob (k = 20%) of the speech under the model (needs
only the model), each as a ROC AUC over members vs non-members.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from pathlib import Path

import torch

from minillm.data import data_dir, load_corpus
from minillm.evaluation.contamination import dirty_items, min_k_prob, roc_auc
from minillm.evaluation.lm_eval_backend import continuation_logprobs
from minillm.io import atomic_write_json
from minillm.models import load_model
from minillm.models.base import lm_loss
from minillm.tokenizers import tokenizer_for_model

HERE = Path(__file__).resolve().parent
OUT = HERE / "contamination.json"
BASE = data_dir() / "checkpoints" / "shakespeare_byte_d128"
STEPS = 600
BATCH = 8          # rows per step
MEMBER_ROWS = 6    # of which member items (contaminated runs)
LR = 2e-3
SEEDS = [0, 1, 2]
K = 0.2


def load_items() -> list[dict]:
    path = data_dir() / "eval_tasks" / "play_mc.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def prompt_of(item: dict) -> str:
    return f"{item['speech']}\nThis speech is from the play:"


def rendered(item: dict) -> str:
    """The item with its answer, as the task's context + " " + gold choice."""
    return f"{prompt_of(item)} {item['choices'][item['gold']]}"


def split_members(items: list[dict], seed: int) -> list[bool]:
    """Half of each play's items are members (seeded)."""
    rng = random.Random(seed)
    flags = [False] * len(items)
    for play in sorted({it["play"] for it in items}):
        idx = [i for i, it in enumerate(items) if it["play"] == play]
        for i in rng.sample(idx, len(idx) // 2):
            flags[i] = True
    return flags


def load_base():
    model = load_model(BASE, map_location="cpu")
    return model, tokenizer_for_model(BASE, model.config.vocab_size)


def finetune(model, tok, member_texts: list[str], train_text: str, steps: int = STEPS,
             batch: int = BATCH, lr: float = LR, seed: int = 0) -> list[float]:
    """AdamW steps on rows of training text, MEMBER_ROWS of each batch replaced by member texts
    when `member_texts` is non-empty; rows are <|endoftext|> + text, padded (targets -100)."""
    ctx = model.config.context_length
    g = random.Random(seed)
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    losses = []
    for _ in range(steps):
        n_member = min(MEMBER_ROWS, batch) if member_texts else 0
        texts = [g.choice(member_texts) for _ in range(n_member)]
        while len(texts) < batch:
            s = g.randrange(len(train_text) - 400)
            texts.append(train_text[s:s + 300])
        rows = [([tok.eot_id] + tok.encode(t))[:ctx + 1] for t in texts]
        width = max(len(r) for r in rows) - 1
        x = torch.full((batch, width), tok.eot_id)
        y = torch.full((batch, width), -100)
        for i, r in enumerate(rows):
            x[i, :len(r) - 1] = torch.tensor(r[:-1])
            y[i, :len(r) - 1] = torch.tensor(r[1:])
        loss = lm_loss(model(x).logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
    return losses


@torch.no_grad()
def score(model, tok, items: list[dict]) -> dict[str, list]:
    """Per item: correct (acc by log-likelihood), the model's probability of the gold choice
    among the four (softmax of their log-likelihoods), and Min-K% Prob of the speech."""
    model.eval()
    pairs, owner = [], []
    for n, it in enumerate(items):
        ctx = tok.encode(prompt_of(it))
        for choice in it["choices"]:
            pairs.append((ctx, tok.encode(" " + choice)))
            owner.append(n)
    ll = [s for s, _ in continuation_logprobs(model, pairs, model.config.context_length, 32)]
    correct, p_gold, mink = [], [], []
    for n, it in enumerate(items):
        mine = torch.tensor([v for v, o in zip(ll, owner, strict=True) if o == n],
                            dtype=torch.float64)
        correct.append(bool(int(mine.argmax()) == it["gold"]))
        p_gold.append(float(torch.softmax(mine, 0)[it["gold"]]))
        ids = [tok.eot_id] + tok.encode(it["speech"])
        logp = torch.log_softmax(model(torch.tensor([ids[:-1]])).logits[0].double(), -1)
        token_lp = logp.gather(-1, torch.tensor(ids[1:])[:, None])[:, 0].tolist()
        mink.append(min_k_prob(token_lp, K))
    return {"correct": correct, "p_gold": p_gold, "min_k": mink}


def summarise(scores: dict[str, list], members: list[bool]) -> dict[str, float]:
    def acc(flag: bool) -> float:
        sel = [c for c, m in zip(scores["correct"], members, strict=True) if m == flag]
        return sum(sel) / len(sel)

    return {"acc_members": acc(True), "acc_nonmembers": acc(False),
            "min_k_auc": roc_auc(scores["min_k"], members)}


def run(seed: int, steps: int = STEPS) -> dict:
    items = load_items()
    members = split_members(items, seed)
    member_texts = [rendered(it) for it, m in zip(items, members, strict=True) if m]
    train_text = load_corpus("shakespeare", "train")
    out: dict = {"seed": seed, "steps": steps, "members": members}
    for name, texts in (("clean", []), ("contaminated", member_texts)):
        model, tok = load_base()
        t0 = time.perf_counter()
        losses = finetune(model, tok, texts, train_text, steps, seed=seed)
        scores = score(model, tok, items)
        # the fine-tuning data's 13-gram overlap with each item (the member texts are in the
        # contaminated model's data verbatim; the clean one saw training plays only)
        flags = dirty_items([rendered(it) for it in items], texts)
        out[name] = {**summarise(scores, members), **scores, "dirty": flags,
                     "overlap_auc": roc_auc([float(f) for f in flags], members)
                     if any(flags) else 0.5,
                     "final_loss": sum(losses[-10:]) / 10,
                     "seconds": round(time.perf_counter() - t0, 1)}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--steps", type=int, default=STEPS)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    shipped = json.loads(out.read_text()) if out.is_file() else {"runs": {}}
    if shipped.get("steps", args.steps) != args.steps:
        raise SystemExit(f"{out} holds runs of {shipped['steps']} steps: give another --out for "
                         f"{args.steps} steps")
    shipped.update({"base": "shakespeare_byte_d128", "steps": args.steps, "batch": BATCH, "lr": LR,
                    "k": K, "machine": f"{platform.machine()} CPU, 1 thread, shared 2-core VM",
                    "torch": torch.__version__})
    base_model, tok = load_base()
    shipped["base_scores"] = score(base_model, tok, load_items())
    for seed in SEEDS:
        key = f"s{seed}"
        if key in shipped["runs"]:
            continue
        shipped["runs"][key] = r = run(seed, args.steps)
        print(f"{key}: clean {r['clean']['acc_members']:.2f}/{r['clean']['acc_nonmembers']:.2f}"
              f", contaminated {r['contaminated']['acc_members']:.2f}/"
              f"{r['contaminated']['acc_nonmembers']:.2f}, Min-K AUC "
              f"{r['contaminated']['min_k_auc']:.2f}", flush=True)
        atomic_write_json(out, shipped)
    return 0


if __name__ == "__main__":
    sys.exit(main())
