"""Recipe for chapter 19's shipped distillation runs: one small student, five ways to train it.

    PYTHONPATH=. OMP_NUM_THREADS=1 python data/distill/train_students.py

Teacher: the course's base GPT `data/checkpoints/shakespeare_byte` (d192 x 6). Student: a GPT of
the same architecture, d96 x 3 (3 heads), context 128. Every run takes the same number of
optimizer steps (batch 4 x 128 bytes; for a given seed the same initial weights and the same
windows of the training plays in the same order; seqkd trains on teacher samples instead):

- scratch: cross-entropy only;
- kd: Hinton et al.'s soft targets, alpha * CE + (1 - alpha) * T^2 KL(p_T || q_T);
- reverse_kl: the same with KL(q_T || p_T) (MiniLLM's direction, teacher-forced);
- seqkd: the plain LM loss on 128 sampled teacher continuations of 16-byte prompts (Kim & Rush),
  through `minillm.alignment.distill_run.build` (the `minillm distill` command's code);
- feature: alpha * CE + (1 - alpha) * MSE of the projected final hidden states (DistilBERT-style).

The token-level runs use the package's `distill_loss_fn` with a teacher whose outputs are
remembered per batch (`CachedTeacher`): one seed's runs read the same batches, so the teacher
runs once per batch, not once per run. Seeds 0, 1, 2 of each (the seed sets the student's
initialisation and the batches), and a temperature sweep of kd at seed 0. Each student is scored
with `text_bits_per_byte` on the first `EVAL_BYTES` bytes of the validation plays, the seed-0 kd
student also on the whole validation split (and saved, about 1.5 MB, as `student_kd/`). The
main runs' students are sampled (16 prompts, 112 new bytes, temperature 1) for the diversity
numbers.

Writes `results.json` next to this file after every run (a rerun skips the runs already there;
delete it to start again). The long comparison of chapter 19 is the same recipe with more bytes
and no sweep, into its own file (which does not replace `student_kd/`):

    PYTHONPATH=. OMP_NUM_THREADS=1 python data/distill/train_students.py \
        --out data/distill/results_long.json --steps 400 --batch-size 8 --no-sweep

See README.md for the run times.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import time
from collections import Counter
from pathlib import Path

import torch
from torch import nn

from minillm.alignment.distill import FeatureDistillStudent, distill_loss_fn
from minillm.alignment.distill_run import DistillConfig, build
from minillm.alignment.recipe import load_model_and_tokenizer
from minillm.data import load_corpus
from minillm.generation import generate
from minillm.io import atomic_write_json
from minillm.models import GPT, GPTConfig
from minillm.tokenizers import load_tokenizer_folder
from minillm.training import TrainConfig, Trainer, lm_loss_fn, text_bits_per_byte
from minillm.utils import seed_everything

HERE = Path(__file__).resolve().parent
TEACHER = HERE.parent / "checkpoints" / "shakespeare_byte"
STUDENT = {"d_model": 96, "n_layer": 3, "n_head": 3, "n_kv_head": 3, "d_ff": 384,
           "context_length": 128}
STEPS, BATCH, SEQ_LEN, LR = 120, 4, 128, 3e-3
ALPHA = 0.1            # the cross-entropy's weight in kd / reverse_kl (Hinton: a low weight)
FEATURE_ALPHA = 0.5    # feature distillation keeps half the cross-entropy
MAIN_T = 1.0           # kd / reverse_kl temperature of the main comparison
SWEEP_T = (2.0, 4.0)   # further kd temperatures (seed 0); T = 1 is the main run
SEEDS = (0, 1, 2)
EVAL_BYTES = 10_000    # validation bytes scored for every run
N_PROMPTS, PROMPT_BYTES, NEW_BYTES = 16, 16, 112


def runs(sweep: bool = True) -> list[dict]:
    """Every run, in order. With `sweep` (the shipped short comparison) seed by seed, the kd
    temperature sweep beside seed 0; without it (the long comparison) scratch and kd for every
    seed first, then the other methods, so that an interrupted rerun has the headline pair."""
    def main_runs(seed: int, methods: tuple[str, ...]) -> list[dict]:
        spec = {"scratch": {}, "kd": {"T": MAIN_T, "alpha": ALPHA},
                "reverse_kl": {"T": MAIN_T, "alpha": ALPHA}, "seqkd": {},
                "feature": {"alpha": FEATURE_ALPHA}}
        return [{"method": m, "seed": seed, **spec[m]} for m in methods]

    out = []
    if not sweep:
        for methods in (("scratch", "kd"), ("feature", "reverse_kl", "seqkd")):
            for seed in SEEDS:
                out += main_runs(seed, methods)
        return out
    for seed in SEEDS:
        out += main_runs(seed, ("scratch", "kd", "reverse_kl", "seqkd", "feature"))
        if seed == 0:  # (beside seed 0's other runs: they share its teacher outputs)
            out += [{"method": "kd", "seed": 0, "T": t, "alpha": ALPHA} for t in SWEEP_T]
    return out


def name(run: dict) -> str:
    t = f"_T{run['T']:g}" if "T" in run else ""
    return f"{run['method']}{t}_s{run['seed']}"


def train_config(seed: int, steps: int, batch_size: int, device: str) -> TrainConfig:
    return TrainConfig(max_steps=steps, batch_size=batch_size, seq_len=SEQ_LEN, lr=LR,
                       min_lr=LR / 10, warmup_steps=15, eval_interval=0, log_interval=10,
                       checkpoint_interval=0, device=device, progress=False, seed=seed)


class CachedTeacher(nn.Module):
    """The teacher, its outputs remembered by input: the token-level runs of one seed read the
    same batches, so the teacher runs once per batch rather than once per run (the same weights
    on the same input in eval mode give the same output; a new input is simply computed)."""

    def __init__(self, teacher: nn.Module):
        super().__init__()
        self.teacher, self.config, self.cache = teacher, teacher.config, {}

    def forward(self, idx: torch.Tensor, **kwargs):
        k = (tuple(idx.shape), hashlib.sha1(idx.cpu().numpy().tobytes()).hexdigest())
        if k not in self.cache:
            self.cache[k] = self.teacher(idx, **kwargs)
        return self.cache[k]


_TEACHERS: dict[str, CachedTeacher] = {}


def cached_teacher(device: str, seed: int) -> CachedTeacher:
    """One cached teacher per device, its cache emptied when the seed (the batches) changes."""
    if device not in _TEACHERS:
        _TEACHERS[device] = CachedTeacher(load_model_and_tokenizer(TEACHER, device)[0])
    t = _TEACHERS[device]
    if getattr(t, "seed", None) != seed:
        t.cache, t.seed = {}, seed
    return t


def train(run: dict, steps: int = STEPS, batch_size: int = BATCH, device: str = "cpu"
          ) -> tuple[GPT, list[dict], float]:
    """The trained student, its loss history and the teacher's decoding time (seqkd).

    run: {"method": scratch | kd | reverse_kl | seqkd | feature, "seed", and "T" / "alpha"}
    (chapter 19's live runs call this with fewer steps). seqkd goes through
    `distill_run.build` (the `minillm distill` command's code); the token-level runs build the
    same Trainer with the cached teacher in `distill_loss_fn`."""
    cfg = train_config(run["seed"], steps, batch_size, device)
    method = run["method"]
    if method == "seqkd":
        d = build(DistillConfig(teacher=str(TEACHER), loss="seqkd", teacher_samples=128,
                                prompt_length=16, do_sample=True), dict(STUDENT), cfg)
        d.trainer.fit()
        return d.student, d.trainer.history, d.teacher_seconds
    teacher = cached_teacher(device, run["seed"])
    tok = load_tokenizer_folder(TEACHER)
    seed_everything(cfg.seed)  # the student's initialisation, as `build` seeds it
    student = GPT(GPTConfig.from_dict({**teacher.config.to_dict(), **STUDENT}))
    model, loss_fn = student, lm_loss_fn
    if method != "scratch":
        if method == "feature":
            model = FeatureDistillStudent(student, teacher.config.d_model)
        loss_fn = distill_loss_fn(teacher, method, run["alpha"], run.get("T", 1.0))
    trainer = Trainer(model, tok.encode_tensor(load_corpus("shakespeare", "train")),
                      tok.encode_tensor(load_corpus("shakespeare", "validation")), cfg,
                      tokenizer=tok.to_dict(), loss_fn=loss_fn)
    trainer.fit()
    return student, trainer.history, 0.0


@torch.no_grad()
def sample_stats(model: torch.nn.Module, tok, val_text: str, seed: int = 0) -> dict:
    """Sample 112 bytes after each of 16 validation prompts; distinct n-grams, byte entropy of
    the samples, and the model's mean predictive entropy along them."""
    model.eval()
    starts = [i * (len(val_text) // N_PROMPTS) for i in range(N_PROMPTS)]
    prompts = torch.tensor([tok.encode(val_text[s:s + PROMPT_BYTES]) for s in starts])
    g = torch.Generator().manual_seed(seed)
    seqs = generate(model, prompts, NEW_BYTES, do_sample=True, temperature=1.0, generator=g)
    logits = model(seqs[:, :-1]).logits[:, PROMPT_BYTES - 1:]            # predicting the new ones
    logp = torch.log_softmax(logits.float(), -1)
    pred_entropy = -(logp.exp() * logp).sum(-1).mean().item() / math.log(2)
    new = seqs[:, PROMPT_BYTES:].tolist()
    stats = {"predictive_entropy_bits": pred_entropy}
    for n in (1, 2, 4, 8):
        grams = [tuple(row[i:i + n]) for row in new for i in range(len(row) - n + 1)]
        stats[f"distinct_{n}"] = len(set(grams)) / len(grams)
    counts = Counter(b for row in new for b in row)
    total = sum(counts.values())
    stats["byte_entropy_bits"] = -sum(c / total * math.log2(c / total) for c in counts.values())
    stats["samples"] = [tok.decode(row) for row in new[:3]]
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(HERE / "results.json"))
    parser.add_argument("--steps", type=int, default=STEPS,
                        help="optimizer steps of every run (a smoke test: fewer)")
    parser.add_argument("--batch-size", type=int, default=BATCH, help="windows of 128 bytes per step")
    parser.add_argument("--no-sweep", action="store_true",
                        help="skip the temperature sweep (the long comparison: results_long.json)")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS),
                        help="only these seeds (to run seeds in parallel processes, each with "
                             "its own --out, then merge the 'runs')")
    args = parser.parse_args()
    default = HERE / "results.json"
    torch.set_num_threads(1)
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {
        "command": "PYTHONPATH=. OMP_NUM_THREADS=1 python data/distill/train_students.py"
                   + ("" if out == default else " " + " ".join(
                       [f"--out data/distill/{out.name}", f"--steps {args.steps}",
                        f"--batch-size {args.batch_size}"] + ["--no-sweep"] * args.no_sweep)),
        "teacher": "data/checkpoints/shakespeare_byte", "student": STUDENT, "steps": args.steps,
        "batch_size": args.batch_size, "seq_len": SEQ_LEN, "lr": LR, "eval_bytes": EVAL_BYTES,
        "runs": {}}
    teacher, tok = load_model_and_tokenizer(TEACHER)
    teacher.eval()
    val_text = load_corpus("shakespeare", "validation")
    if "teacher_eval_bpb" not in results:
        start = time.perf_counter()
        results["teacher_params"] = sum(p.numel() for p in teacher.parameters())
        results["teacher_eval_bpb"] = text_bits_per_byte(teacher, val_text[:EVAL_BYTES], tok)
        results["teacher_samples"] = sample_stats(teacher, tok, val_text)
        results["teacher_seconds"] = time.perf_counter() - start
        atomic_write_json(out, results)
    if (results["steps"], results["batch_size"]) != (args.steps, args.batch_size):
        raise SystemExit(f"{out} holds runs of {results['steps']} steps x {results['batch_size']}: "
                         "give the same --steps / --batch-size, or another --out")
    for run in [r for r in runs(sweep=not args.no_sweep) if r["seed"] in args.seeds]:
        key = name(run)
        if key in results["runs"]:
            continue
        start = time.perf_counter()
        student, history, teacher_seconds = train(run, args.steps, args.batch_size)
        student.eval()
        record = {**run, "history": [{k: h[k] for k in ("step", "loss", "lm_loss") if k in h}
                                     for h in history],
                  "student_params": sum(p.numel() for p in student.parameters()),
                  "teacher_decode_seconds": teacher_seconds,
                  "train_seconds": time.perf_counter() - start,
                  "eval_bpb": text_bits_per_byte(student, val_text[:EVAL_BYTES], tok)}
        if run.get("T", MAIN_T) == MAIN_T:  # the main runs' samples, every seed
            record["sample_stats"] = sample_stats(student, tok, val_text)
        if key == f"kd_T{MAIN_T:g}_s0":
            record["whole_val_bpb"] = text_bits_per_byte(student, val_text, tok)
        if key == f"kd_T{MAIN_T:g}_s0" and out == default:  # (the chapter's shipped student)
            student.save(HERE / f"student_{run['method']}",
                         extra_files={"tokenizer.json": tok.to_dict(),
                                      "training.json": {"recipe": results["command"], **record}})
        record["seconds"] = time.perf_counter() - start
        results["runs"][key] = record
        atomic_write_json(out, results)
        print(f"{key}: {record['eval_bpb']:.4f} bits/byte, {record['seconds']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
