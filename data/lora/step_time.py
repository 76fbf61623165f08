"""Seconds per SFT training step, full fine-tuning vs LoRA vs QLoRA, measured interleaved.

    PYTHONPATH=. python data/lora/step_time.py [--rounds 15]

The sweep's `seconds_per_step` moves with the load of a shared machine (full fine-tuning took
0.50 s/step in the 250-step run and 0.24 in the 500-step one), so this measures every variant in one process
on the same batches, round-robin (one step of each variant per round), and reports the median
per variant: a change in load hits all of them alike. One thread, float32, the base checkpoint
with the chat tokens, a batch of 8 packed rows of 256 tokens, AdamW as the Trainer builds it.
Writes data/lora/step_time.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch

from minillm.alignment import sft_loss_fn
from minillm.alignment.recipe import load_model_and_tokenizer, prepare_chat_model, sft_batches
from minillm.data.sft import load_sft
from minillm.optim import configure_optimizer
from minillm.peft import LoraConfig, apply_lora, apply_qlora, trainable_parameters

ROOT = Path(__file__).resolve().parents[2]
TARGETS = ["attn.qkv", "attn.proj", "mlp.fc", "mlp.proj"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    base, base_tok = load_model_and_tokenizer(ROOT / "data/checkpoints/shakespeare_byte_d128")
    base, tok = prepare_chat_model(base, base_tok)
    new_tokens = list(range(base_tok.vocab_size, tok.vocab_size))
    variants = {"full": copy.deepcopy(base)}
    for r in (1, 8, 64):
        variants[f"lora_r{r}"] = apply_lora(copy.deepcopy(base), LoraConfig(
            r=r, alpha=2 * r, target_modules=TARGETS, trainable_token_indices=new_tokens))
    variants["qlora_r8"] = apply_qlora(copy.deepcopy(base), LoraConfig(
        r=8, alpha=16, target_modules=TARGETS, trainable_token_indices=new_tokens))
    optimizers = {k: configure_optimizer(m, lr=1e-4) for k, m in variants.items()}
    batches = sft_batches(tok, load_sft("train")[:400], None, 8, 256)
    data = [batches.next_batch() for _ in range(args.rounds + 2)]
    times: dict[str, list[float]] = {k: [] for k in variants}
    for i, batch in enumerate(data):
        for name, model in variants.items():
            model.train()
            start = time.perf_counter()
            loss, _ = sft_loss_fn(model, batch)
            loss.backward()
            optimizers[name].step()
            optimizers[name].zero_grad(set_to_none=True)
            if i >= 2:  # two warm-up rounds
                times[name].append(time.perf_counter() - start)
    result = {name: {"median_seconds_per_step": statistics.median(t),
                     "min_seconds_per_step": min(t),
                     "trainable_params": trainable_parameters(variants[name])}
              for name, t in times.items()}
    result["setup"] = {"rounds": args.rounds, "batch": "8 packed rows x 256 tokens",
                       "threads": 1, "torch": torch.__version__}
    (ROOT / "data/lora/step_time.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
