"""Train and export the four architectures of chapter 18 that the lineage table scores.

Usage (from the repository root; one torch thread per process):
    python data/recurrent/train_checkpoints.py gpt linear rwkv    # one after the other
    python data/recurrent/train_checkpoints.py mamba              # (in a second process)
    python data/recurrent/train_checkpoints.py gpt --steps 20 --export-root /tmp/r   # a smoke run

Each model has d_model 128 and about 1.2M weights besides the embedding (`MODELS`: GPT and
linear attention 6 blocks; RWKV-4 6 blocks with a 448-wide channel mix; Mamba 10 blocks, its
blocks having no MLP), and all train with one recipe (`train_config`): AdamW steps of
16 windows of 128 bytes of the training plays, lr 2e-3 with 50 warm-up steps and cosine decay
to 2e-4, weight decay 0.1, clipping at 1.0, seed 1337. Checkpoints go to
build/recurrent/<name> every 100 steps (a killed run resumes there); the trained model is
exported to data/checkpoints/recurrent_<name> with its tokenizer and a training.json
(command, summary, train config, history) that `minillm.course.lineage` reads.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from minillm.data import load_corpus
from minillm.models import GPT, GPTConfig
from minillm.models.recurrent import (
    RWKV,
    LinearAttentionConfig,
    LinearAttentionLM,
    Mamba,
    MambaConfig,
    RWKVConfig,
)
from minillm.tokenizers import ByteTokenizer
from minillm.training import TrainConfig, Trainer, text_bits_per_byte

ROOT = Path(__file__).resolve().parents[2]
COMMON = dict(vocab_size=257, context_length=128, d_model=128)
MODELS = {  # name -> (class, config): about 1.2M weights besides the embedding each
    "gpt": (GPT, GPTConfig(**COMMON, n_layer=6, n_head=4)),
    "linear": (LinearAttentionLM, LinearAttentionConfig(**COMMON, n_layer=6, n_head=4)),
    "rwkv": (RWKV, RWKVConfig(**COMMON, n_layer=6, d_ff=448)),
    "mamba": (Mamba, MambaConfig(**COMMON, n_layer=10)),
}


def train_config(steps: int, out_dir: Path) -> TrainConfig:
    return TrainConfig(max_steps=steps, batch_size=16, lr=2e-3, min_lr=2e-4, warmup_steps=50,
                       weight_decay=0.1, grad_clip=1.0, eval_interval=100, eval_batches=10,
                       log_interval=25, checkpoint_interval=100, out_dir=str(out_dir),
                       seed=1337, device="cpu", progress=False)


def run(name: str, steps: int, export_root: Path, build_root: Path) -> dict:
    cls, cfg = MODELS[name]
    torch.manual_seed(1337)
    model = cls(cfg)
    tok = ByteTokenizer()
    train_ids = tok.encode_tensor(load_corpus("shakespeare", "train"))
    val_text = load_corpus("shakespeare", "validation")
    trainer = Trainer(model, train_ids, tok.encode_tensor(val_text),
                      train_config(steps, build_root / name))
    trainer.resume()  # from build/recurrent/<name>'s latest checkpoint, if any
    t = time.perf_counter()
    trainer.fit()
    seconds = time.perf_counter() - t
    model.eval()
    bpb = text_bits_per_byte(model, val_text, tok)
    summary = {"step": trainer.step, "final_train_loss": trainer.history[-1]["loss"],
               "params": sum(p.numel() for p in model.parameters()),
               "val_bits_per_byte": bpb, "seconds_this_invocation": seconds}
    record = {"command": "python data/recurrent/train_checkpoints.py " + " ".join(sys.argv[1:]),
              "summary": summary, "train_config": trainer.config.to_dict(),
              "history": trainer.history, "eval_history": trainer.eval_history}
    model.save(export_root / f"recurrent_{name}",
               extra_files={"tokenizer.json": tok.to_dict(), "training.json": record})
    print(f"{name}: {bpb:.4f} bits/byte, {seconds / 60:.1f} min", flush=True)
    return summary


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+", choices=list(MODELS))
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--export-root", default=str(ROOT / "data" / "checkpoints"))
    p.add_argument("--build-root", default=str(ROOT / "build" / "recurrent"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    for name in args.models:
        run(name, args.steps, Path(args.export_root), Path(args.build_root))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
