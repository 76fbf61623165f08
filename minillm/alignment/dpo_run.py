"""DPO and relatives on the course's preference set, from the SFT checkpoint: the chapter 13 runs.

    python -m minillm.alignment.dpo_run --out data/dpo/runs.json \\
        --runs dpo:0.05 dpo:0.1 dpo:0.3 dpo:1.0 ipo:0.1 simpo:2.0

Each run starts from `data/checkpoints/shakespeare_sft` (the policy; a frozen copy is the
reference), trains with `preference_loss_fn(method, beta)` on `data/preference/train.jsonl`
through the course's `Trainer` (AdamW, constant learning rate after warm-up), and every
`--eval-every` steps samples one response per held-out prompt (`test.jsonl`'s prompts) at
temperature 1 to measure the gold reward, the KL to the reference and the response length
(`sample_stats`). At the end: the same on `--final-samples` samples per prompt, reward accuracy
and margin on the held-out pairs, and bits per byte on the validation plays (the course's metric
line). The SFT model itself is measured the same way, as step 0 of every run.
The reference log-probs of the pairs are computed once and shared by all runs.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from minillm.alignment.pairs import PairBatches, pair_batches, preference_loss_fn, sample_stats
from minillm.alignment.recipe import load_model_and_tokenizer
from minillm.data import load_corpus
from minillm.data.corpus import data_dir
from minillm.data.preference import load_preferences
from minillm.io import atomic_write_json
from minillm.training import TrainConfig, Trainer, text_bits_per_byte

__all__ = ["add_arguments", "heldout_pair_metrics", "main", "measure", "parse_run", "run", "run_one",
           "summary"]


def parse_run(spec: str) -> tuple[str, float]:
    """"dpo:0.1" -> ("dpo", 0.1)."""
    method, _, beta = spec.partition(":")
    try:
        return method, float(beta)
    except ValueError:
        raise ValueError(f"run {spec!r}: write METHOD:BETA, e.g. dpo:0.1") from None


@torch.no_grad()
def heldout_pair_metrics(model: nn.Module, batches: PairBatches, loss_fn) -> dict[str, float]:
    """Loss, reward accuracy and margin of `model` over every held-out pair, once."""
    model.eval()
    batches.start_eval()
    n = -(-len(batches.val) // batches.batch_size)
    totals: dict[str, float] = {}
    for _ in range(n):
        loss, metrics = loss_fn(model, batches.next_batch("val"))
        for k, v in {"loss": loss.item(), **metrics}.items():
            totals[k] = totals.get(k, 0.0) + v / n
    return totals


def measure(policy: nn.Module, reference: nn.Module, tok, prompts: Sequence[str], seeds: int,
            seed: int = 1000) -> dict:
    """Gold reward, KL and length over `seeds` samples per prompt: means and the standard errors
    of gold reward and KL (`*_se`); five example responses."""
    runs = [sample_stats(policy, reference, tok, prompts, seed=seed + s) for s in range(seeds)]
    out = {k: sum(r[k] for r in runs) / seeds for k in ("gold_reward", "kl", "length")}
    for key, per in (("gold_reward", "gold_rewards"), ("kl", "kls")):
        values = torch.tensor([v for r in runs for v in r[per]], dtype=torch.float64)
        out[f"{key}_se"] = (values.std() / len(values) ** 0.5).item()   # standard error
    out["example_responses"] = runs[0]["responses"][:5]
    return out


def run_one(method: str, beta: float, sft: nn.Module, tok, batches: PairBatches,
            prompts: Sequence[str], args: argparse.Namespace, val_text: str,
            initial_state: dict) -> dict:
    """Train one policy from the SFT model and measure it along the way; `initial_state` is
    the batches' state to start from (every run sees the same pairs in the same order)."""
    torch.manual_seed(args.seed)
    policy = copy.deepcopy(sft).requires_grad_(True)
    batches.load_state_dict(initial_state)
    loss_fn = preference_loss_fn(method, beta, gamma=args.simpo_gamma)
    cfg = TrainConfig(max_steps=args.eval_every, batch_size=batches.batch_size, lr=args.lr,
                      min_lr=args.lr, warmup_steps=args.warmup_steps, weight_decay=0.0,
                      grad_clip=1.0, eval_interval=0, log_interval=args.log_interval,
                      seed=args.seed, device="cpu", progress=False)
    trainer = Trainer(policy, config=cfg, batches=batches, loss_fn=loss_fn)
    curve = []
    start = time.perf_counter()
    while trainer.step < args.steps:
        trainer.config.max_steps = min(trainer.step + args.eval_every, args.steps)
        trainer.fit()                      # constant lr: fitting in chunks changes nothing
        stats = measure(policy, sft, tok, prompts, 1, seed=args.seed + trainer.step)
        curve.append({"step": trainer.step, **{k: stats[k] for k in ("gold_reward", "kl", "length")}})
        print(f"  {method} beta={beta} step {trainer.step}: gold {stats['gold_reward']:.3f} "
              f"kl {stats['kl']:.2f} len {stats['length']:.1f}", flush=True)
    train_s = time.perf_counter() - start
    final = measure(policy, sft, tok, prompts, args.final_samples)
    return {"method": method, "beta": beta, "steps": trainer.step, "train_seconds": train_s,
            "final": final, "heldout_pairs": heldout_pair_metrics(policy, batches, loss_fn),
            "val_bits_per_byte": text_bits_per_byte(policy.eval(), val_text, tok),
            "curve": curve, "history": trainer.history}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The recipe's options (shared by this module's `main` and `minillm dpo`)."""
    parser.add_argument("--checkpoint", default=str(data_dir() / "checkpoints/shakespeare_sft"))
    parser.add_argument("--runs", nargs="+", default=["dpo:0.1"], help="METHOD:BETA ...")
    parser.add_argument("--steps", type=int, default=250)
    parser.add_argument("--batch-size", type=int, default=8, help="pairs per step")
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--warmup-steps", type=int, default=10)
    parser.add_argument("--simpo-gamma", type=float, default=0.5)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--eval-prompts", type=int, default=200)
    parser.add_argument("--final-samples", type=int, default=2, help="samples per prompt")
    parser.add_argument("--log-interval", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", required=True, help="JSON file for the results")


def run(args: argparse.Namespace, command: str) -> dict:
    """Every run of `args.runs`, written to `args.out` as each finishes; returns the record."""
    torch.set_num_threads(args.threads)
    runs = [parse_run(r) for r in args.runs]
    sft, tok = load_model_and_tokenizer(args.checkpoint)
    sft.eval().requires_grad_(False)
    test_pairs = load_preferences("test")
    prompts = [p.prompt for p in test_pairs[:args.eval_prompts]]
    t0 = time.perf_counter()
    batches = pair_batches(tok, load_preferences("train"), test_pairs, args.batch_size,
                           sft.config.context_length, reference=sft,
                           mismatched=any(m == "kto" for m, _ in runs), seed=args.seed)
    initial_state = batches.state_dict()
    ref_seconds = time.perf_counter() - t0
    val_text = load_corpus("shakespeare", "validation")
    sft_stats = measure(sft, sft, tok, prompts, args.final_samples)
    result = {"command": command,
              "torch": torch.__version__, "reference_logps_seconds": ref_seconds,
              "sft": {"final": sft_stats,
                      "val_bits_per_byte": text_bits_per_byte(sft, val_text, tok)},
              "runs": []}
    print(f"SFT: gold {sft_stats['gold_reward']:.3f} len {sft_stats['length']:.1f}", flush=True)
    for method, beta in runs:
        result["runs"].append(run_one(method, beta, sft, tok, batches, prompts, args, val_text,
                                      initial_state))
        atomic_write_json(Path(args.out), result)   # a killed sweep keeps its finished runs
    return result


def summary(result: dict) -> str:
    """One line per run: method, beta, final gold reward, KL, length."""
    return "\n".join(f"{r['method']} beta={r['beta']}: gold {r['final']['gold_reward']:.3f} "
                     f"kl {r['final']['kl']:.2f} length {r['final']['length']:.1f}"
                     for r in result["runs"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    argv = list(sys.argv[1:] if argv is None else argv)
    result = run(parser.parse_args(argv), "python -m minillm.alignment.dpo_run " + " ".join(argv))
    print(summary(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
