"""`minillm distill`: a student trained from a teacher checkpoint on a shipped corpus.

    minillm distill --teacher shakespeare_byte --output-dir runs/kd --d-model 64 --n-layer 2 \\
        --loss kd --temperature 2 --alpha 0.5 --max-steps 300 --final-eval

A `DistillConfig` holds the distillation options (one flag per field); the student is a GPT
whose unset fields come from `--student-config` (a JSON of GPTConfig fields, or a folder with
config.json), else from the teacher's config (so `--d-model 64 --n-layer 2` makes a smaller
model of the teacher's architecture), and always the teacher's vocabulary: a student with
another vocab_size or tokenizer is refused (`check_vocabularies`). The losses
(`minillm.alignment.distill`):

- kd, reverse_kl, gjsd, feature: windows of the corpus, `distill_loss_fn` (alpha * CE +
  (1 - alpha) * the term); feature trains a `FeatureDistillStudent` (its projection in the
  checkpoints; `--export-dir` saves the bare student).
- seqkd: `teacher_samples` prompts of `prompt_length` tokens drawn from the corpus, continued by
  the teacher (greedy, or sampled with `--do-sample`) to the training window's length; the
  student trains on the continuations with the plain LM loss (`SequenceBatches`). Validation
  batches are held-out text windows either way. A resumed seqkd run decodes the same sequences
  again (the same prompts and decoding).

`run_folder.summary.json` gets the step, losses, parameter counts and, with `--final-eval`, the
student's and the teacher's bits per byte on the whole validation split (the course's scorer).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from minillm.alignment.distill import (
    FeatureDistillStudent,
    SequenceBatches,
    check_vocabularies,
    distill_loss_fn,
    sequence_rows,
    teacher_sequences,
)
from minillm.alignment.recipe import load_model_and_tokenizer
from minillm.data import load_corpus
from minillm.data.batching import TokenStreamBatches, sample_batch
from minillm.io import atomic_write_json, read_json
from minillm.models import GPT, GPTConfig
from minillm.tokenizers import load_tokenizer_folder
from minillm.training import TrainConfig, Trainer, lm_loss_fn, text_bits_per_byte
from minillm.utils import check_finite_fields, choose_device, seed_everything

__all__ = ["RUN_LOSSES", "DistillConfig", "Distillation", "build", "finish", "student_config"]

RUN_LOSSES = ("kd", "reverse_kl", "gjsd", "seqkd", "feature")


@dataclass
class DistillConfig:
    teacher: str                   # the teacher's checkpoint folder
    loss: str = "kd"               # kd (Hinton: T^2 KL(p||q)), reverse_kl (MiniLLM: T^2 KL(q||p)),
                                   # gjsd (GKD: T^2 JSD(beta)), seqkd (Kim & Rush: train on the
                                   # teacher's outputs), feature (hidden-state MSE via a projection)
    temperature: float = 1.0       # T softening both distributions (kd, reverse_kl, gjsd)
    alpha: float | None = None     # weight of the cross-entropy on the corpus; 1 - alpha the
                                   # distillation term's (None = 0.5; seqkd has no alpha)
    beta: float = 0.5              # gjsd: the teacher's weight in the mixture (trl's beta;
                                   # 0 = forward KL, 1 = reverse KL)
    student_config: str | None = None  # a JSON file of GPTConfig fields, or a folder with
                                   # config.json: the student's fields the options leave unset
                                   # (default: the teacher's config)
    tokenizer: str | None = None   # the student's tokenizer folder; it must be the teacher's
                                   # (default: the teacher's)
    teacher_samples: int = 512     # seqkd: teacher sequences to train on
    prompt_length: int = 16        # seqkd: corpus tokens that prompt each teacher sequence
    do_sample: bool = False        # seqkd: sample the teacher at temperature 1 (default greedy)

    def __post_init__(self) -> None:
        check_finite_fields(self)
        if not self.teacher:
            raise ValueError("teacher='': name the teacher's checkpoint folder")
        if self.loss not in RUN_LOSSES:
            raise ValueError(f"loss={self.loss!r}; choose one of {RUN_LOSSES}")
        if self.temperature <= 0:
            raise ValueError(f"temperature={self.temperature} must be positive")
        if self.loss == "seqkd" and self.alpha is not None:
            raise ValueError(f"alpha={self.alpha} with loss='seqkd': sequence-level KD trains on "
                             "the teacher's sequences alone; drop --alpha")
        if self.alpha is not None and not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha={self.alpha} must be in [0, 1] (the cross-entropy's weight)")
        if not 0.0 <= self.beta <= 1.0:
            raise ValueError(f"beta={self.beta} must be in [0, 1] (0: forward KL, 1: reverse KL)")
        for name in ("teacher_samples", "prompt_length"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}={getattr(self, name)} must be positive")


def student_config(teacher_config: GPTConfig, file: str | None, options: dict) -> GPTConfig:
    """The student's GPTConfig: the teacher's fields, then `file`'s (a JSON of GPTConfig fields
    or a folder with config.json), then `options` (the command line's, given ones only)."""
    fields = (teacher_config.to_dict() if isinstance(teacher_config, GPTConfig) else  # (a GPT
              {"vocab_size": teacher_config.vocab_size,                 # from an MLP / RNN LM)
               "context_length": teacher_config.context_length})
    if file is not None:
        path = Path(file)
        path = path / "config.json" if path.is_dir() else path
        fields.update(read_json(path, "--student-config"))
    fields.update(options)
    return GPTConfig.from_dict(fields)


@dataclass
class Distillation:
    """What `build` prepares and `finish` reads."""

    config: DistillConfig
    teacher: nn.Module
    student: GPT            # the model to keep (inside `trainer.model` for "feature")
    tokenizer: object
    trainer: Trainer
    val_text: str
    teacher_seconds: float  # seqkd: decoding the teacher's sequences


def _num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build(config: DistillConfig, student_options: dict, train_config: TrainConfig,
          corpus: str = "shakespeare", on_log=None) -> Distillation:
    """Load the teacher, build the student, the batches and the loss, and the Trainer.

    Args:
        config: the distillation options (`teacher` and `tokenizer` as folders).
        student_options: GPTConfig fields given on the command line.
        train_config: the Trainer's options.
        corpus: the shipped corpus to train on (its validation split validates).
        on_log: the Trainer's `on_log`.

    Raises:
        ValueError: a student whose vocabulary differs from the teacher's, a training window
            longer than the teacher's context, or a bad option (each naming the fix).
    """
    c = config
    teacher, tok = load_model_and_tokenizer(c.teacher)
    if c.tokenizer is not None:
        theirs = load_tokenizer_folder(c.tokenizer)
        check_vocabularies(tok.vocab_size, theirs.vocab_size, tok.to_dict(), theirs.to_dict())
    cfg = student_config(teacher.config, c.student_config, student_options)
    check_vocabularies(teacher.config.vocab_size, cfg.vocab_size)
    seq_len = train_config.seq_len or cfg.context_length
    if seq_len > teacher.config.context_length:
        raise ValueError(f"the training window ({seq_len} tokens) is longer than the teacher's "
                         f"context_length={teacher.config.context_length}: pass --seq-len or "
                         f"--context-length {teacher.config.context_length} or less")
    if c.loss == "feature" and not hasattr(teacher.config, "d_model"):
        raise ValueError("loss='feature' matches hidden states and needs a GPT teacher")
    train = tok.encode_tensor(load_corpus(corpus, "train"))
    val_text = load_corpus(corpus, "validation")
    val = tok.encode_tensor(val_text)
    seed_everything(train_config.seed)  # the student's initialisation
    student = GPT(cfg)
    model, batches, seconds = student, None, 0.0
    if c.loss == "seqkd":
        total = min(seq_len + 1, teacher.config.context_length)
        if c.prompt_length >= total - 1:
            raise ValueError(f"prompt_length={c.prompt_length} leaves no continuation in a "
                             f"{total}-token sequence: lower --prompt-length")
        gen = torch.Generator().manual_seed(train_config.seed + 3)
        prompts, _ = sample_batch(train, c.teacher_samples, c.prompt_length, gen)
        start = time.perf_counter()
        seqs = teacher_sequences(teacher.to(choose_device(train_config.device)), prompts,
                                 total - c.prompt_length, do_sample=c.do_sample,
                                 seed=train_config.seed)
        seconds = time.perf_counter() - start
        x, y = sequence_rows(seqs, c.prompt_length)
        batches = SequenceBatches(x, y, train_config.batch_size, train_config.seed, val=(
            TokenStreamBatches(train, val, train_config.batch_size, seq_len, train_config.seed)))
        loss_fn = lm_loss_fn
    else:
        if c.loss == "feature":
            model = FeatureDistillStudent(student, teacher.config.d_model)
        loss_fn = distill_loss_fn(teacher, c.loss, 0.5 if c.alpha is None else c.alpha,
                                  c.temperature, c.beta)
    trainer = Trainer(model, train, val, train_config, tokenizer=tok.to_dict(), batches=batches,
                      loss_fn=loss_fn, on_log=on_log)
    return Distillation(c, teacher, student, tok, trainer, val_text, seconds)


def finish(run: Distillation, final_eval: bool = False, export_dir: str | None = None,
           command: str = "") -> dict:
    """After `trainer.fit()`: the summary (written to the run folder's summary.json) and, with
    `export_dir`, the bare student saved there (config, weights, tokenizer, training record).

    Returns:
        {"step", "loss", "final_train_loss", "final_val_loss", "teacher_params",
        "student_params", "teacher_seconds", and with `final_eval` "val_bits_per_byte" and
        "teacher_val_bits_per_byte"}.
    """
    t = run.trainer
    c = run.config
    summary = {"step": t.step, "loss": c.loss,
               "final_train_loss": t.history[-1]["loss"] if t.history else None,
               "teacher_params": _num_params(run.teacher),
               "student_params": _num_params(run.student),
               "teacher_seconds": run.teacher_seconds}
    if t.history and "lm_loss" in t.history[-1]:
        summary["final_lm_loss"] = t.history[-1]["lm_loss"]
    if t.eval_history:
        summary["final_val_loss"] = t.eval_history[-1]["val_loss"]
    if final_eval:
        device = t.device
        summary["val_bits_per_byte"] = text_bits_per_byte(run.student.eval(), run.val_text,
                                                          run.tokenizer)
        summary["teacher_val_bits_per_byte"] = text_bits_per_byte(
            run.teacher.to(device).eval(), run.val_text, run.tokenizer)
    if t.config.out_dir is not None:
        atomic_write_json(Path(t.config.out_dir, "summary.json"), summary)
    if export_dir:
        record = {"command": command, "distill_config": asdict(c), "summary": summary,
                  "train_config": t.config.to_dict(), "history": t.history,
                  "eval_history": t.eval_history}
        run.student.save(export_dir, extra_files={"tokenizer.json": run.tokenizer.to_dict(),
                                                  "training.json": record})
    return summary
