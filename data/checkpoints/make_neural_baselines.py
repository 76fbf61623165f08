"""Train chapter 02's MLP and LSTM language models at the base GPT's data budget and ship them.

Usage (from the repository root; one torch thread each, so two can run side by side):
    OMP_NUM_THREADS=1 python data/checkpoints/make_neural_baselines.py lstm
    OMP_NUM_THREADS=1 python data/checkpoints/make_neural_baselines.py mlp
    ... lstm --max-steps 20 --output-dir /tmp/lstm --export-dir /tmp/lstm_export   # a smoke run

Chapter 02 trains both models live for 250 steps ("watch it train"); that is too short to rank
architectures, so its ranking reads these checkpoints instead. Each is trained with the budget
of the base GPT (`shakespeare_byte/training.json`): the same number of training bytes (steps ×
batch × window, read from that file unless `--max-steps` is given), the same AdamW settings,
warm-up and cosine schedule shape, seed and data stream (`Trainer`'s random windows of the
training plays). Only the architecture and the peak learning rate differ: the shapes are
chapter 02's (`SHAPES`), with the window raised to the GPT's 256 bytes, and the peak learning
rate is chapter 02's for each model.

The run checkpoints to `--output-dir` every 100 steps and resumes from there (`--resume` is on:
re-run the same command after a kill). At the end it writes `--export-dir` as a checkpoint
folder (`config.json`, `model.safetensors`, `tokenizer.json`, `training.json` with the command,
the loss history and the cumulative tokens, and the whole validation split's bits per byte by
`text_bits_per_byte`) that `minillm.models.load_model` reads.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

from minillm.data import data_dir, load_corpus
from minillm.io import read_json
from minillm.models.neural import MLPLM, RNNLM, MLPLMConfig, RNNLMConfig
from minillm.tokenizers import ByteTokenizer
from minillm.training import TrainConfig, Trainer, text_bits_per_byte

SHAPES = {  # chapter 02's models, with the GPT's training window
    "mlp": (MLPLM, MLPLMConfig(context_length=256, n_context=16, d_embed=32, d_hidden=512,
                               direct=True), 1e-2),
    "lstm": (RNNLM, RNNLMConfig(context_length=256, cell="lstm", d_embed=64, d_hidden=256), 1e-2),
}


def base_budget() -> tuple[int, int, dict]:
    """(training bytes, batch size, train config) of the shipped base GPT."""
    record = read_json(data_dir() / "checkpoints" / "shakespeare_byte" / "training.json",
                       "the base GPT's training record")
    cfg = record["train_config"]
    window = cfg.get("seq_len") or 256
    return cfg["max_steps"] * cfg["batch_size"] * window * cfg.get("grad_accum_steps", 1), \
        cfg["batch_size"], cfg


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", choices=sorted(SHAPES))
    p.add_argument("--max-steps", type=int, default=None,
                   help="optimizer steps (default: the base GPT's training bytes / bytes per step)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="windows per step (default: the base GPT's)")
    p.add_argument("--output-dir", default=None, help="checkpoints (default build/<model>)")
    p.add_argument("--export-dir", default=None,
                   help="the shipped folder (default data/checkpoints/shakespeare_<model>)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    cls, config, lr = SHAPES[args.model]
    budget_bytes, batch_size, base = base_budget()
    batch_size = args.batch_size or batch_size
    steps = args.max_steps or budget_bytes // (batch_size * config.context_length)
    out = Path(args.output_dir or f"build/{args.model}")
    export = Path(args.export_dir or data_dir() / "checkpoints" / f"shakespeare_{args.model}")
    warmup = round(base["warmup_steps"] * steps / base["max_steps"])
    train_cfg = TrainConfig(max_steps=steps, batch_size=batch_size, lr=lr, min_lr=lr / 10,
                            warmup_steps=warmup, weight_decay=base["weight_decay"],
                            grad_clip=base["grad_clip"], eval_interval=0, log_interval=50,
                            checkpoint_interval=100, out_dir=str(out), seed=base["seed"],
                            device="cpu", progress=False)
    torch.manual_seed(base["seed"])
    model = cls(config)
    tok = ByteTokenizer()
    trainer = Trainer(model, tok.encode_tensor(load_corpus("shakespeare", "train")), None,
                      train_cfg, tokenizer=tok.to_dict())
    if trainer.resume():
        print(f"resumed from step {trainer.step}", flush=True)
    start = time.perf_counter()
    trainer.fit()
    seconds = time.perf_counter() - start
    last = trainer.history[-1]
    print(f"{args.model}: {model.num_params():,} parameters, {trainer.step} steps, "
          f"last loss {last['loss'] / math.log(2):.3f} bits/byte, {seconds:.0f} s", flush=True)
    bits = text_bits_per_byte(model.eval(), load_corpus("shakespeare", "validation"), tok)
    print(f"whole validation split: {bits:.4f} bits/byte", flush=True)
    record = {"command": "python data/checkpoints/make_neural_baselines.py "
                         + " ".join(sys.argv[1:] if argv is None else argv),
              "budget": f"{budget_bytes:,} training bytes, as shakespeare_byte",
              "summary": {"step": trainer.step, "val_bits_per_byte": bits,
                          "val_nats_per_byte": bits * math.log(2)},
              "train_seconds_last_session": seconds, "train_config": train_cfg.to_dict(),
              "torch": torch.__version__, "history": trainer.history}
    model.save(export, extra_files={"tokenizer.json": tok.to_dict(), "training.json": record})
    print(f"wrote {export}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
