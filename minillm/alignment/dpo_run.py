"""DPO and relatives on the course's preference set, from the SFT checkpoint: the chapter 13 runs.

    minillm dpo --output-dir data/dpo --run-name runs \\
        --runs dpo:0.05 dpo:0.1 dpo:0.3 dpo:1.0 ipo:0.1 simpo:2.0

A `DPOConfig` holds the options (validated; `minillm dpo` has one flag per field). Each run
starts from `data/checkpoints/shakespeare_sft_d128` (the policy; a frozen copy is the reference),
trains with `preference_loss_fn(method, beta)` on `data/preference/train.jsonl` through the
course's `Trainer` (AdamW, constant learning rate after warm-up), and every `eval_steps` steps
samples one response per held-out prompt (`test.jsonl`'s prompts) at temperature 1 to measure
the gold reward, the fluency-aware gold (`FluentGold`: the lexicon plus `fluent_weight` times
the mean log p per token under the base model `fluent_checkpoint`), the KL to the reference and
the response length (`sample_stats`), and the loss, reward accuracy and margin on the held-out
pairs (`heldout_pair_metrics`). At the end: the same on `final_samples` samples per prompt, and
bits per byte on the validation plays (the course's metric line). The SFT model itself is
measured the same way, as step 0 of every run.
The reference log-probs of the pairs are computed once and shared by all runs.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from minillm.alignment.pairs import PairBatches, pair_batches, preference_loss_fn, sample_stats
from minillm.alignment.recipe import load_model_and_tokenizer
from minillm.alignment.reward import FluentGold
from minillm.data import load_corpus
from minillm.data.corpus import data_dir
from minillm.data.preference import load_preferences
from minillm.io import atomic_write_json, check_writable
from minillm.training import TrainConfig, Trainer, text_bits_per_byte
from minillm.utils import check_finite_fields

__all__ = ["DPOConfig", "heldout_pair_metrics", "measure", "parse_run", "results_path", "run",
           "run_one", "summary"]


def parse_run(spec: str) -> tuple[str, float]:
    """"dpo:0.1" -> ("dpo", 0.1)."""
    method, _, beta = spec.partition(":")
    try:
        return method, float(beta)
    except ValueError:
        raise ValueError(f"run {spec!r}: write METHOD:BETA, e.g. dpo:0.1") from None


@dataclass
class DPOConfig:
    output_dir: str                # the results go to output_dir/run_name.json
    run_name: str = "runs"         # the results file's name, without .json
    checkpoint: str | None = None  # the SFT model, policy start and frozen reference
                                   # (None = data/checkpoints/shakespeare_sft_d128,
                                   # the model the preference pairs were sampled from)
    runs: list[str] = field(default_factory=lambda: ["dpo:0.1"])  # METHOD:BETA per run
                                   # (methods: dpo, ipo, kto, simpo, orpo), e.g. dpo:0.1 ipo:0.1
    max_steps: int = 250           # optimizer steps per run
    batch_size: int = 8            # preference pairs per step
    lr: float = 5e-5               # AdamW learning rate (constant after warm-up, no decay)
    warmup_steps: int = 10         # linear warm-up steps
    simpo_gamma: float = 0.5       # SimPO's target reward margin
    eval_steps: int = 50           # steps between gold reward / KL measurements on samples
    eval_prompts: int = 200        # held-out prompts sampled at each measurement
    final_samples: int = 2         # samples per prompt in the final measurement
    log_interval: int = 10         # steps between entries in each run's history
    seed: int = 0                  # seeds the pair order, dropout and the measurements' samples
    fluent_checkpoint: str | None = None  # the base model of the fluency-aware gold
                                   # (None = data/checkpoints/shakespeare_byte_d128, chapter 12's)
    fluent_weight: float = 1.0     # lambda of the fluency-aware gold (chapter 12's best-of-n: 1)
    threads: int = 1               # torch CPU threads (the shipped runs used 1)

    def __post_init__(self) -> None:
        check_finite_fields(self)
        if not self.output_dir:
            raise ValueError(f"output_dir={self.output_dir!r}: name a folder for the results")
        if not self.run_name or Path(self.run_name).name != self.run_name:
            raise ValueError(f"run_name={self.run_name!r} must be a file name (no folders): "
                             "the results go to output_dir/run_name.json")
        if not self.runs:
            raise ValueError("runs=[]: give at least one METHOD:BETA, e.g. dpo:0.1")
        for spec in self.runs:  # a bad method or beta fails now, not after the first run
            method, beta = parse_run(spec)
            try:
                preference_loss_fn(method, beta, gamma=self.simpo_gamma)
            except ValueError as error:
                raise ValueError(f"runs: {spec!r}: {error}") from None
        for name in ("max_steps", "batch_size", "eval_steps", "eval_prompts", "final_samples",
                     "log_interval", "threads"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}={getattr(self, name)} must be positive")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps={self.warmup_steps} must be >= 0")
        if self.fluent_weight < 0:
            raise ValueError(f"fluent_weight={self.fluent_weight} must be >= 0")
        if self.lr <= 0:
            raise ValueError(f"lr={self.lr} must be positive")


def results_path(config: DPOConfig) -> Path:
    """Where `run` writes the record: output_dir/run_name.json."""
    return Path(config.output_dir, f"{config.run_name}.json")


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
            seed: int = 1000, fluent: FluentGold | None = None) -> dict:
    """Gold reward, KL and length over `seeds` samples per prompt: means and the standard errors
    of gold reward and KL (`*_se`); five example responses. With a `fluent` scorer
    (`FluentGold`) also the fluency-aware gold of the same samples, `fluent_gold` and
    `fluent_gold_se`, and their mean log p per token under its base model (`fluency`)."""
    runs = [sample_stats(policy, reference, tok, prompts, seed=seed + s) for s in range(seeds)]
    out = {k: sum(r[k] for r in runs) / seeds for k in ("gold_reward", "kl", "length")}
    for key, per in (("gold_reward", "gold_rewards"), ("kl", "kls")):
        values = torch.tensor([v for r in runs for v in r[per]], dtype=torch.float64)
        out[f"{key}_se"] = (values.std() / len(values) ** 0.5).item()   # standard error
    if fluent is not None:
        lexicon, fluency = fluent.parts([t for r in runs for t in r["responses"]])
        scores = lexicon + fluent.fluency_weight * fluency
        out["fluent_gold"] = scores.mean().item()
        out["fluent_gold_se"] = (scores.std() / len(scores) ** 0.5).item()
        out["fluency"] = fluency.mean().item()
    out["example_responses"] = runs[0]["responses"][:5]
    return out


def run_one(method: str, beta: float, sft: nn.Module, tok, batches: PairBatches,
            prompts: Sequence[str], config: DPOConfig, val_text: str,
            initial_state: dict, fluent: FluentGold | None = None) -> dict:
    """Train one policy from the SFT model and measure it along the way; `initial_state` is
    the batches' state to start from (every run sees the same pairs in the same order).
    Each `curve` entry holds the step's sample measures (`measure`, one sample per prompt) and
    the held-out pair metrics (`heldout_pairs`, as `heldout_pair_metrics`)."""
    c = config
    torch.manual_seed(c.seed)
    policy = copy.deepcopy(sft).requires_grad_(True)
    batches.load_state_dict(initial_state)
    loss_fn = preference_loss_fn(method, beta, gamma=c.simpo_gamma)
    cfg = TrainConfig(max_steps=c.eval_steps, batch_size=batches.batch_size, lr=c.lr,
                      min_lr=c.lr, warmup_steps=c.warmup_steps, weight_decay=0.0,
                      grad_clip=1.0, eval_interval=0, log_interval=c.log_interval,
                      seed=c.seed, device="cpu", progress=False)
    trainer = Trainer(policy, config=cfg, batches=batches, loss_fn=loss_fn)
    curve = []
    start = time.perf_counter()
    while trainer.step < c.max_steps:
        trainer.config.max_steps = min(trainer.step + c.eval_steps, c.max_steps)
        trainer.fit()                      # constant lr: fitting in chunks changes nothing
        stats = measure(policy, sft, tok, prompts, 1, seed=c.seed + trainer.step, fluent=fluent)
        pairs = heldout_pair_metrics(policy, batches, loss_fn)
        curve.append({"step": trainer.step, **{k: v for k, v in stats.items()
                                               if k != "example_responses"},
                      "heldout_pairs": pairs})
        print(f"  {method} beta={beta} step {trainer.step}: gold {stats['gold_reward']:.3f} "
              f"kl {stats['kl']:.2f} len {stats['length']:.1f} held-out margin "
              f"{pairs['reward_margin']:.3f}", flush=True)
    train_s = time.perf_counter() - start
    # the final samples' seeds: 1000, 1001, ... for seed 0 (the shipped runs'), 1000 + 100 * seed on
    final = measure(policy, sft, tok, prompts, c.final_samples, seed=1000 + 100 * c.seed,
                    fluent=fluent)
    return {"method": method, "beta": beta, "seed": c.seed, "lr": c.lr, "steps": trainer.step,
            "train_seconds": train_s,
            "final": final, "heldout_pairs": heldout_pair_metrics(policy, batches, loss_fn),
            "val_bits_per_byte": text_bits_per_byte(policy.eval(), val_text, tok),
            "curve": curve, "history": trainer.history}


def run(config: DPOConfig, command: str) -> dict:
    """Every run of `config.runs`, written to `results_path(config)` as each finishes; returns
    the record (`command`: how it was started, kept in the record)."""
    c = config
    check_writable(c.output_dir, "output_dir")  # a bad path fails now, not after the first run
    torch.set_num_threads(c.threads)
    runs = [parse_run(r) for r in c.runs]
    sft, tok = load_model_and_tokenizer(c.checkpoint or data_dir() / "checkpoints/shakespeare_sft_d128")
    sft.eval().requires_grad_(False)
    test_pairs = load_preferences("test")
    prompts = [p.prompt for p in test_pairs[:c.eval_prompts]]
    t0 = time.perf_counter()
    batches = pair_batches(tok, load_preferences("train"), test_pairs, c.batch_size,
                           sft.config.context_length, reference=sft,
                           mismatched=any(m == "kto" for m, _ in runs), seed=c.seed)
    initial_state = batches.state_dict()
    ref_seconds = time.perf_counter() - t0
    val_text = load_corpus("shakespeare", "validation")
    base, base_tok = load_model_and_tokenizer(
        c.fluent_checkpoint or data_dir() / "checkpoints/shakespeare_byte_d128")
    fluent = FluentGold(base.eval().requires_grad_(False), base_tok, c.fluent_weight)
    sft_stats = measure(sft, sft, tok, prompts, c.final_samples, seed=1000 + 100 * c.seed,
                        fluent=fluent)
    result = {"command": command,
              "torch": torch.__version__, "reference_logps_seconds": ref_seconds,
              "seed": c.seed, "lr": c.lr, "fluent_weight": c.fluent_weight,
              "sft": {"final": sft_stats,
                      "val_bits_per_byte": text_bits_per_byte(sft, val_text, tok)},
              "runs": []}
    print(f"SFT: gold {sft_stats['gold_reward']:.3f} len {sft_stats['length']:.1f}", flush=True)
    for method, beta in runs:
        result["runs"].append(run_one(method, beta, sft, tok, batches, prompts, c, val_text,
                                      initial_state, fluent))
        atomic_write_json(results_path(c), result)   # a killed sweep keeps its finished runs
    return result


def summary(result: dict) -> str:
    """One line per run: method, beta, final gold reward, KL, length."""
    return "\n".join(f"{r['method']} beta={r['beta']}: gold {r['final']['gold_reward']:.3f} "
                     f"kl {r['final']['kl']:.2f} length {r['final']['length']:.1f}"
                     for r in result["runs"])


if __name__ == "__main__":  # the old entry point says where it went rather than do nothing
    raise SystemExit("python -m minillm.alignment.dpo_run is now `minillm dpo` (the same options; "
                     "--out FILE is --output-dir DIR --run-name NAME)")
