"""Recipe for chapter 19's task distillation: the SFT model's six tasks taught to a 7x smaller student.

    PYTHONPATH=. OMP_NUM_THREADS=1 python data/distill/sft_tasks.py

Teacher: `data/checkpoints/shakespeare_sft` (the base GPT d192 x 6 after chapter 11's SFT; its
chat template and tokens). Student: `data/distill/student_kd` (d96 x 3, the seed-0 kd student of
`train_students.py`), given the chat template's three tokens the way the SFT recipe gives them
(`prepare_chat_model`: new rows at the mean embedding) and its learned position table grown from
128 to 256 rows (rows 128-255 start as copies of rows 0-127), so the longest prompts fit.

Training data: the first `PER_TASK` training examples of each of the six verifiable tasks of
`data/sft/` (the SFT model saw all of them), the same examples for every arm. Three arms, the same
steps, optimizer and schedule; for a given seed the same order of examples (the seed sets the
shuffle; the initial weights are the base student's, the same for every seed):

- sft: the plain SFT loss (response tokens only, packed rows) on the data set's answers — the
  baseline: the student fine-tuned on the SFT data alone;
- seqkd: the same prompts with the *teacher's* greedy answers as the responses (Kim & Rush's
  sequence-level KD; "API distillation": training on a provider's outputs);
- kd: token-level soft targets on the data set's answers, alpha * CE + (1 - alpha) * T^2
  KL(p_T || q_T) over the response tokens, the teacher reading the same packed rows
  (`distill_loss_fn`).

Every student (and the teacher) is scored by `score_chat` (greedy, stop at <|end|>) on the test
split's seen phrasings of the six tasks, exact match per task, as chapter 11 scores the SFT
model; "agreement" is the share of test prompts where the student's answer equals the teacher's.
Writes `sft_tasks.json` next to this file after every run (a rerun skips the runs already there;
delete it to start again). See README.md for the run time.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import torch

from minillm.alignment.distill import check_vocabularies, distill_loss_fn
from minillm.alignment.recipe import (
    load_model_and_tokenizer,
    prepare_chat_model,
    score_chat,
    sft_batches,
)
from minillm.alignment.sft import exact_match_by_task, sft_loss_fn
from minillm.data.sft import VERIFIABLE_TASKS, load_sft
from minillm.io import atomic_write_json, read_json
from minillm.models import GPT, GPTConfig
from minillm.training import TrainConfig, Trainer
from minillm.utils import seed_everything

HERE = Path(__file__).resolve().parent
TEACHER = HERE.parent / "checkpoints" / "shakespeare_sft"
STUDENT = HERE / "student_kd"
CONTEXT = 256                 # the SFT recipe's row length (the longest example: 217 tokens)
PER_TASK = 400                # training examples per task (the first ones of train.jsonl)
STEPS, BATCH, LR = 400, 8, 2e-3
ALPHA, T = 0.5, 1.0           # the kd arm: weight of the cross-entropy, temperature
METHODS = ("sft", "seqkd", "kd")
SEEDS = (0, 1, 2)


def train_examples(per_task: int = PER_TASK) -> list:
    out = []
    for task in VERIFIABLE_TASKS:
        out += load_sft("train", task=task)[:per_task]
    return out


def test_examples() -> list:
    return [e for e in load_sft("test", heldout=False) if e.task in VERIFIABLE_TASKS]


def chat_student(device: str = "cpu"):
    """The base student with the chat tokens and a 256-row position table; its tokenizer."""
    base, base_tok = load_model_and_tokenizer(STUDENT, device)
    base, tok = prepare_chat_model(base, base_tok)
    cfg = GPTConfig.from_dict({**base.config.to_dict(), "context_length": CONTEXT})
    student = GPT(cfg).to(device)
    state = base.state_dict()
    old = state["pos_emb.weight"]
    reps = -(-CONTEXT // old.size(0))
    state["pos_emb.weight"] = old.repeat(reps, 1)[:CONTEXT].clone()
    student.load_state_dict(state)
    return student, tok


def train(method: str, seed: int, examples: list, teacher_answers: list[str] | None,
          teacher, steps: int = STEPS, device: str = "cpu"):
    """One arm: the trained student (eval mode), its tokenizer and its loss history."""
    seed_everything(seed)
    student, tok = chat_student(device)
    if method == "seqkd":
        examples = [dataclasses.replace(e, response=a)
                    for e, a in zip(examples, teacher_answers, strict=True)]
    batches = sft_batches(tok, examples, None, batch_size=BATCH, seq_len=CONTEXT, seed=seed)
    loss_fn = distill_loss_fn(teacher, "kd", ALPHA, T) if method == "kd" else sft_loss_fn
    cfg = TrainConfig(max_steps=steps, batch_size=BATCH, seq_len=CONTEXT, lr=LR, min_lr=LR / 10,
                      warmup_steps=20, eval_interval=0, log_interval=20, checkpoint_interval=0,
                      device=device, progress=False, seed=seed)
    trainer = Trainer(student, config=cfg, tokenizer=tok.to_dict(), batches=batches,
                      loss_fn=loss_fn)
    trainer.fit()
    return student.eval(), tok, trainer.history


def agreement(tasks, answers, other) -> dict[str, float]:
    """Per task (and "mean" over tasks): share of prompts where the two answers are equal."""
    return exact_match_by_task(tasks, answers, other)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(HERE / "sft_tasks.json"))
    parser.add_argument("--steps", type=int, default=STEPS, help="(a smoke test: fewer)")
    parser.add_argument("--per-task", type=int, default=PER_TASK)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS,
                        help="only these arms (to run arms in parallel processes, each with its "
                             "own --out holding a copy of the teacher's answers, then merge)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    teacher, ttok = load_model_and_tokenizer(TEACHER)
    teacher.eval()
    examples, test = train_examples(args.per_task), test_examples()
    results = read_json(out, "sft_tasks.json") if out.exists() else {
        "command": "PYTHONPATH=. OMP_NUM_THREADS=1 python data/distill/sft_tasks.py"
                   + ("" if args.steps == STEPS else f" --steps {args.steps}")
                   + ("" if args.per_task == PER_TASK else f" --per-task {args.per_task}"),
        "teacher": "data/checkpoints/shakespeare_sft", "student_base": "data/distill/student_kd",
        "steps": args.steps, "batch_size": BATCH, "seq_len": CONTEXT, "lr": LR,
        "alpha": ALPHA, "T": T, "per_task": args.per_task, "train_examples": len(examples),
        "test_examples": len(test), "runs": {}, "test_answers": {}}
    tasks = [e.task for e in test]
    refs = [e.response for e in test]
    if "teacher_exact_match" not in results:
        start = time.perf_counter()
        _, answers, _ = score_chat(teacher, ttok, test)
        results["teacher_exact_match"] = exact_match_by_task(tasks, answers, refs)
        results["test_answers"]["teacher"] = answers
        results["teacher_params"] = sum(p.numel() for p in teacher.parameters())
        results["teacher_test_seconds"] = time.perf_counter() - start
        atomic_write_json(out, results)
    if "teacher_train_answers" not in results:
        start = time.perf_counter()
        _, answers, _ = score_chat(teacher, ttok, examples)
        results["teacher_train_answers"] = answers
        results["teacher_train_exact_match"] = exact_match_by_task(
            [e.task for e in examples], answers, [e.response for e in examples])
        results["teacher_train_seconds"] = time.perf_counter() - start
        atomic_write_json(out, results)
    for seed in args.seeds:
        for method in args.methods:
            key = f"{method}_s{seed}"
            if key in results["runs"]:
                continue
            start = time.perf_counter()
            student, tok, history = train(method, seed, examples,
                                          results["teacher_train_answers"], teacher, args.steps)
            if "student_params" not in results:
                check_vocabularies(teacher.config.vocab_size, student.config.vocab_size,
                                   ttok.to_dict(), tok.to_dict())
                results["student_params"] = sum(p.numel() for p in student.parameters())
            train_seconds = time.perf_counter() - start
            _, answers, _ = score_chat(student, tok, test)
            record = {"method": method, "seed": seed,
                      "exact_match": exact_match_by_task(tasks, answers, refs),
                      "agreement_with_teacher": agreement(tasks, answers,
                                                          results["test_answers"]["teacher"]),
                      "history": [{k: h[k] for k in ("step", "loss", "lm_loss") if k in h}
                                  for h in history],
                      "train_seconds": train_seconds, "seconds": time.perf_counter() - start}
            results["runs"][key] = record
            if seed == SEEDS[0]:
                results["test_answers"][key] = answers
            atomic_write_json(out, results)
            print(f"{key}: exact match {record['exact_match']['mean']:.3f}, "
                  f"{record['seconds']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
